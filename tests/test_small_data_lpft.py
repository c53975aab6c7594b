"""LP-FT for small training sets: the rule that chooses the head-only warm-up, and real runs
that show what it does to the weights (body frozen, BatchNorm statistics kept)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from astrotransfer.config import TrainConfig, load_config
from astrotransfer.engine.training.dispatch import train
from astrotransfer.engine.training.small_data import (FINETUNE_LR_SCALE, SMALL_SET, apply_lp_ft,
                                                      probe_epochs_for)
from astrotransfer.errors import UserError
from conftest import TINY_BACKBONE, error_lines, run_cli, tiny_run_copy


@pytest.mark.parametrize("cfg,n_train,pretrained,expected", [
    (dict(epochs=34), 240, True, 17),                       # the 300-object case: half
    (dict(epochs=35), 240, True, 17),                       # rounded down
    (dict(epochs=3), SMALL_SET - 1, True, 1),
    (dict(epochs=3), SMALL_SET, True, 0),                   # large sets: plain fine-tune
    (dict(epochs=3), 3800, True, 0),                        # the full GZ1 train split
    (dict(epochs=34), 240, False, 0),                       # random init: nothing to probe
    (dict(epochs=1), 240, True, 0),                         # no epoch left to fine-tune
    (dict(epochs=34, stages=[{"train": "head", "epochs": 2}, {"train": "all", "epochs": None}]),
     240, True, 0),                                          # the user's own schedule wins
    (dict(epochs=34, trainer="deepspeed"), 240, True, 0),   # that trainer has no stages
    (dict(epochs=34, adapt="dann"), 240, True, 0),          # adaptation: not measured
    (dict(epochs=34, target="des.zarr"), 240, True, 0),     # nor with a target survey
    (dict(epochs=34, probe_epochs=0), 240, True, 0),        # switched off
    (dict(epochs=6, probe_epochs=2), 3800, True, 2),        # asked for on a large set
    (dict(epochs=6, probe_epochs=2), 240, False, 2),        # asked for without weights
    (dict(epochs=4, probe_epochs=9), 240, True, 3),         # at least one epoch fine-tunes
])
def test_probe_epochs_rule(cfg, n_train, pretrained, expected):
    assert probe_epochs_for(TrainConfig(**cfg), n_train, pretrained) == expected


def test_apply_writes_the_schedule_once_and_records_it():
    cfg = TrainConfig(epochs=34, lr=2e-3)
    assert apply_lp_ft(cfg, 240)
    assert cfg.stages == [{"train": "head", "epochs": 17},
                          {"train": "all", "epochs": None, "lr": 2e-3 * FINETUNE_LR_SCALE}]
    assert cfg.keep_bn_stats and cfg.probe_epochs == 17
    assert not apply_lp_ft(cfg, 240)  # a seed job's next member: the schedule stands
    assert len(cfg.stages) == 2
    large = TrainConfig(epochs=3)
    assert not apply_lp_ft(large, 3800)
    assert (large.stages, large.keep_bn_stats, large.probe_epochs) == ([], False, 0)


def test_negative_probe_epochs_is_a_one_line_error(tmp_path):
    with pytest.raises(UserError, match=r"--probe-epochs must be >= 0"):
        load_config(None, {"probe_epochs": -1})
    proc = run_cli("train", "--source", tmp_path / "none.zarr", "--out", tmp_path / "run",
                   "--probe-epochs", "-1")
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0 and len(lines) == 1 and "--probe-epochs" in lines[0], lines
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------ real runs


def _tiny(source: Path, out: Path, **kw) -> Path:
    opts = dict(backbone=TINY_BACKBONE, pretrained="none", batch_size=16, epochs=2, seed=0,
                device="cpu", augment="none")
    train(TrainConfig(source=str(source), out=str(out), **{**opts, **kw}))
    return out


def _bn_stats(state: dict) -> dict:
    return {k: v for k, v in state.items() if k.endswith(("running_mean", "running_var"))}


def test_probe_stage_trains_the_head_alone_and_bn_statistics_stay(sim_pair, tmp_path):
    """Random init (running mean 0, var 1) makes a kept statistic exact to check; a plain
    fine-tune of the same data moves them, so the check can fail."""
    lpft = _tiny(sim_pair[0], tmp_path / "lpft", probe_epochs=1)
    plain = _tiny(sim_pair[0], tmp_path / "plain", probe_epochs=0)
    recs = [json.loads(x) for x in (lpft / "metrics.jsonl").read_text().splitlines()]
    assert [r["train"] for r in recs] == ["head", "all"]
    assert recs[1]["lr"] == pytest.approx(1e-3 * FINETUNE_LR_SCALE)
    cfg = yaml.safe_load((lpft / "config.yaml").read_text())
    assert cfg["keep_bn_stats"] is True and cfg["probe_epochs"] == 1
    kept = _bn_stats(torch.load(lpft / "last.pt", weights_only=True)["model"])
    moved = _bn_stats(torch.load(plain / "last.pt", weights_only=True)["model"])
    assert kept and all(torch.equal(v, torch.zeros_like(v) if k.endswith("mean")
                                    else torch.ones_like(v)) for k, v in kept.items())
    assert any(not torch.equal(v, torch.zeros_like(v))
               for k, v in moved.items() if k.endswith("mean"))


def test_small_set_from_pretrained_weights_gets_lp_ft_by_default(sim_pair, tiny_run_master,
                                                                 tmp_path):
    """Weights from an earlier run count as pretrained: the automatic rule applies to the
    sim store's 57 training objects with no option given."""
    base = tiny_run_copy(tiny_run_master, tmp_path / "base")
    run = _tiny(sim_pair[0], tmp_path / "warm", pretrained=str(base), epochs=4)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["probe_epochs"] == 2 and cfg["keep_bn_stats"] is True
    assert [s["train"] for s in cfg["stages"]] == ["head", "all"]
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["train"] for r in recs] == ["head", "head", "all", "all"]


# ------------------------------------------------------------------ the study's ECE spread


def test_study_ece_matches_evaluate_and_its_floor_is_the_calibrated_models(tmp_path):
    """tools/recipe_small.py restates evaluate's ECE (tools use the public API only): both
    must agree, and labels drawn from the probabilities themselves give a small floor."""
    import sys

    import numpy as np

    from astrotransfer.engine.evaluation.calibration import log_probs
    from astrotransfer.engine.evaluation.metrics import (apply_temperature,
                                                         expected_calibration_error)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from recipe_small import at_temperature, ece_spread, top_label_ece

    rng = np.random.default_rng(1)
    probs = rng.dirichlet([0.7, 0.7, 0.7], size=190)
    y = rng.integers(0, 3, 190)
    assert top_label_ece(y, probs) == pytest.approx(expected_calibration_error(y, probs))
    assert at_temperature(probs, 2.3) == pytest.approx(apply_temperature(log_probs(probs), 2.3))
    sp = ece_spread(probs, y, 2.3, n_boot=200)
    assert sp["boot_p16"] <= sp["ece"] <= sp["boot_p84"] + 0.02
    calibrated = (rng.random((190, 1)) > at_temperature(probs, 2.3).cumsum(1)).sum(1)
    floor = ece_spread(probs, calibrated, 2.3, n_boot=200)
    assert 0.0 < floor["floor_mean"] < 0.1 and floor["ece"] < sp["ece"]
