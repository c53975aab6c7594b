"""Transfer-learning features: stages, schedule, balancing, augmentation, seeds, recursive
training, few-shot study, kill -9 resume, and one-line errors before any training."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from astrotransfer.config import TrainConfig, load_config
from astrotransfer.engine.data import build_augment
from astrotransfer.engine.training.stages import (apply_stage, freeze_frozen_batchnorm, param_groups,
                                         parse_stages, trainable_names)
from astrotransfer.engine.training.dispatch import train
from astrotransfer.errors import UserError
from astrotransfer.plugins.trainers import class_weights, epoch_order
from astrotransfer.store import CutoutStore
from conftest import TINY_BACKBONE, error_lines, make_sim_store, run_cli

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # 2 shared cores: threads would only fight


def _tiny(**kw) -> TrainConfig:
    base = dict(backbone=TINY_BACKBONE, pretrained="none", batch_size=16, epochs=1, seed=0)
    return TrainConfig(**{**base, **kw})


def _records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


# ------------------------------------------------------------------ config and stage rules


def test_cli_shorthands_expand_to_the_canonical_config():
    cfg = load_config(None, {"adapt": "dann+fisher=0.02+entropy", "augment": "flip,zoom",
                             "stages": "head=1,top:0.5=2@1e-4,all_but_stem=3"})
    assert (cfg.adapt, cfg.fisher, cfg.entropy) == ("dann", 0.02, 0.05)
    assert cfg.augment == ["flip", "zoom"]
    assert cfg.stages == [{"train": "head", "epochs": 1}, {"train": "top:0.5", "epochs": 2,
                                                           "lr": 1e-4},
                          {"train": "all_but_stem", "epochs": 3}]
    assert cfg.epochs == 6  # no --epochs: the sum of the stages
    assert load_config(None, {"augment": "none"}).augment == []
    stretched = load_config(None, {"stages": "head=1,all", "epochs": 4})
    assert stretched.epochs == 4 and stretched.stages[-1] == {"train": "all", "epochs": None}


@pytest.mark.parametrize("overrides,match", [
    ({"adapt": "mmd+fisher+foo"}, r"unknown regulariser 'foo'.*fisher, entropy"),
    ({"stages": "head=1,middle=2"}, r"unknown stage rule 'middle'"),
    ({"stages": "top:1.5=1,all=1"}, r"top:F needs 0 < F < 1"),
    ({"stages": "head=2,all=1", "epochs": 2}, r"leaving none of --epochs 2"),
    ({"optimizer": "sgd"}, r"unknown --optimizer 'sgd'; choose from adamw, adam"),
    ({"balance": "oversample"}, r"unknown --balance 'oversample'"),
    ({"recursive": 1}, r"--recursive pseudo-labels the target survey; pass --target"),
])
def test_bad_options_are_one_line_user_errors(overrides, match):
    with pytest.raises(UserError, match=match) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["resnet18", "legacy_xception", "vgg19_bn", TINY_BACKBONE])
def test_stage_rules_follow_timm_parameter_groups(name):
    model = timm.create_model(name, num_classes=2, in_chans=5)
    groups = param_groups(model)
    everything = {n for n, _ in model.named_parameters()}
    head = {f"{n}" for n in groups[-1]}
    assert head and all(n in everything for n in head)
    assert {p for n, p in model.named_parameters() if n in head} == \
        set(model.get_classifier().parameters())
    assert trainable_names(model, "head") == head
    assert trainable_names(model, "all") == everything
    assert trainable_names(model, "all_but_stem") == everything - set(groups[0])
    half, one = trainable_names(model, "top:0.5"), trainable_names(model, "top:1")
    assert head < one < half < trainable_names(model, "all_but_stem")
    assert set(groups[-2]) <= one  # the last block is the first to unfreeze


def test_prefix_rule_and_a_prefix_matching_nothing():
    model = timm.create_model("resnet18", num_classes=2)
    names = trainable_names(model, "prefix:layer4+layer3.1")
    assert any(n.startswith("layer4.") for n in names) and "fc.weight" in names
    assert not any(n.startswith(("layer1.", "layer2.", "layer3.0")) for n in names)
    with pytest.raises(UserError, match=r"matches no parameter.*layer4"):
        trainable_names(model, "prefix:blocks")


def test_frozen_batchnorm_stays_in_eval_mode():
    model = timm.create_model("resnet18", num_classes=2)
    apply_stage(model, "head")
    model.train()
    freeze_frozen_batchnorm(model)
    assert not model.bn1.training and not model.layer4[1].bn2.training
    apply_stage(model, "all_but_stem")
    model.train()
    freeze_frozen_batchnorm(model)
    assert not model.bn1.training and model.layer4[1].bn2.training


def test_parse_stages_from_yaml_list():
    assert parse_stages([{"epochs": 1, "train": "head"}, {"train": "all"}]) == \
        [{"train": "head", "epochs": 1}, {"train": "all", "epochs": None}]
    with pytest.raises(UserError, match=r"stage 1 \('head'\) of --stages needs epochs"):
        parse_stages([{"train": "head"}, {"train": "all", "epochs": 1}])


# ------------------------------------------------------------------ balance, augmentation


def test_class_weights_and_balanced_sampler():
    y = torch.tensor([0] * 90 + [1] * 10)
    w = class_weights(y, 3)
    assert w[0] * 90 == pytest.approx(w[1] * 10) and w[2] == 0
    order = epoch_order(y, "sampler", torch.Generator().manual_seed(0))
    assert len(order) == 100 and 0.3 < (y[order] == 1).float().mean() < 0.7
    perm = epoch_order(y, "none", torch.Generator().manual_seed(0))
    assert sorted(perm.tolist()) == list(range(100))


@pytest.mark.parametrize("name", ["flip", "rot90", "rotate", "rotate45", "shift", "zoom"])
def test_augmentations_work_on_five_band_tensors(name):
    torch.manual_seed(0)
    x = torch.rand(5, 24, 24)
    aug = build_augment([name])
    outs = [aug(x) for _ in range(8)]
    assert all(o.shape == x.shape and o.dtype == x.dtype for o in outs)
    assert any(not torch.equal(o, x) for o in outs)
    if name in ("flip", "rot90"):  # exact pixel permutations: band values are kept
        assert all(torch.equal(o.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
                   for o in outs)


# ------------------------------------------------------------------ training end to end


@pytest.mark.parametrize("backbone,stages", [
    ("resnet18", "head=1,top:0.5"), ("legacy_xception", "head=1,all_but_stem"),
    ("vgg19_bn", "")])
def test_seed_architectures_train_end_to_end(sim_pair, tmp_path, backbone, stages):
    src, tgt = sim_pair
    cfg = load_config(None, dict(source=str(src), target=str(tgt), out=str(tmp_path / "r"),
                                 backbone=backbone, pretrained="none", batch_size=32,
                                 epochs=2, stages=stages or None, adapt="coral"))
    run = train(cfg)
    recs = _records(run.path)
    assert [r["epoch"] for r in recs] == [1, 2]
    assert all(np.isfinite(r["train_loss"]) and r["adapt_loss"] > 0 for r in recs)
    if stages:
        assert [r["train"] for r in recs] == ["head", stages.split(",")[1]]


def test_head_stage_changes_only_the_head(sim_pair, tmp_path):
    src, _ = sim_pair
    cfg = _tiny(source=str(src), out=str(tmp_path / "r"), stages=[{"train": "head", "epochs": 1}],
                augment=[])
    train(cfg)
    torch.manual_seed(0)  # the init prepare() draws for seed 0
    init = timm.create_model(TINY_BACKBONE, num_classes=2, in_chans=3,
                             drop_rate=cfg.drop_rate).state_dict()
    after = torch.load(tmp_path / "r" / "last.pt", weights_only=True)["model"]
    changed = {k for k in init if not torch.equal(init[k], after[k])}
    assert changed == {"classifier.weight", "classifier.bias"}  # BN statistics included


def test_adapt_with_fisher_and_entropy_through_the_cli(sim_pair, tmp_path):
    src, tgt = sim_pair
    out = tmp_path / "mmd"
    proc = run_cli("train", "--source", src, "--target", tgt, "--out", out, "--backbone",
                   TINY_BACKBONE, "--pretrained", "none", "--epochs", "2", "--batch-size", "16",
                   "--adapt", "mmd", "--fisher", "0.01", "--entropy", "0.05", "--balance",
                   "weights", "--optimizer", "adam", "--early-stop", "3", "--warmup-epochs",
                   "1", "--clip-grad", "1.0", "--grad-accum", "2", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    recs = _records(out)
    assert [r["epoch"] for r in recs] == [1, 2]
    assert recs[0]["lr"] < 1e-3 == pytest.approx(recs[1]["lr"])  # warm-up, then the full lr
    import yaml
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert (cfg["adapt"], cfg["fisher"], cfg["entropy"], cfg["optimizer"]) == \
        ("mmd", 0.01, 0.05, "adam")


def _scripted_val_losses(monkeypatch, losses):
    """Make the trainer see these validation losses, epoch after epoch."""
    from astrotransfer.plugins import trainers
    it = iter(losses)
    monkeypatch.setattr(trainers, "evaluate_tensors", lambda *a, **k: (next(it), 0.5))


def test_early_stopping_ends_a_stage_then_the_run_and_resume_keeps_it_stopped(
        sim_pair, tmp_path, monkeypatch):
    src, _ = sim_pair
    out = tmp_path / "es"
    # stage 1 (head, 3 epochs) stops after 2 bad epochs; stage 2 then stops after 2 more
    _scripted_val_losses(monkeypatch, [1.0, 1.1, 1.2, 0.9, 0.95, 0.96, 0.5, 0.4])
    cfg = _tiny(source=str(src), out=str(out), epochs=10, early_stop=2, scheduler="none",
                stages=[{"train": "head", "epochs": 3}, {"train": "all", "epochs": None}])
    train(cfg)
    recs = _records(out)
    assert [r["stage"] for r in recs] == [1, 1, 1, 2, 2, 2]
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["epoch"] == 3 and best["val_loss"] == 0.9  # epoch index 3 is epoch 4
    train(_tiny(source=str(src), out=str(out), epochs=10, early_stop=2, scheduler="none",
                stages=cfg.stages), resume=True)
    assert len(_records(out)) == 6


def test_plateau_lowers_the_lr_and_warmup_ramps_it(sim_pair, tmp_path, monkeypatch):
    src, _ = sim_pair
    _scripted_val_losses(monkeypatch, [1.0, 1.0, 1.0, 1.0])
    train(_tiny(source=str(src), out=str(tmp_path / "p"), epochs=4, lr_patience=1,
                lr_factor=0.5, warmup_epochs=1, batch_size=8, scheduler="plateau"))
    lrs = [r["lr"] for r in _records(tmp_path / "p")]
    # patience 1: the second epoch without improvement (epoch 3) lowers the lr for epoch 4
    assert lrs[0] < 1e-3 and lrs[1:] == pytest.approx([1e-3, 1e-3, 5e-4])


def test_cosine_schedule_warms_up_then_decays_to_zero_with_layerwise_lrs(sim_pair, tmp_path):
    from astrotransfer.engine.training.optim import layerwise_groups

    src, _ = sim_pair
    train(_tiny(source=str(src), out=str(tmp_path / "c"), epochs=4, batch_size=8,
                warmup_epochs=1, scheduler="cosine"))
    lrs = [r["lr"] for r in _records(tmp_path / "c")]
    assert lrs[0] < 1e-3 and lrs[1] == pytest.approx(1e-3, rel=0.2)
    assert lrs[1] > lrs[2] > lrs[3] > 0 and lrs[3] < 0.3e-3
    import timm
    groups = layerwise_groups(timm.create_model(TINY_BACKBONE, num_classes=2), 1e-4, 0.5)
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales[-1] == 1.0 and scales[0] == pytest.approx(0.5 ** (len(scales) - 1))
    assert all(g["weight_decay"] == 0 for g in groups if all(p.ndim == 1 for p in g["params"]))


def test_epochs_follow_the_training_set_size(sim_pair, tmp_path):
    """Left unset, --epochs gives every run at least --min-steps optimizer steps."""
    src, _ = sim_pair
    cfg = _tiny(source=str(src), out=str(tmp_path / "auto"), epochs=None, min_steps=20,
                batch_size=16)
    train(cfg)
    import yaml

    from astrotransfer.engine.data import labelled
    from astrotransfer.store import CutoutStore

    store = CutoutStore.open(src)
    n_train = len(labelled(store.indices("train"), store.column("label")))
    saved = yaml.safe_load((tmp_path / "auto" / "config.yaml").read_text())
    steps_per_epoch = -(-n_train // 16)
    want = max(3, -(-20 // steps_per_epoch))
    assert saved["epochs"] == len(_records(tmp_path / "auto")) == want


# ------------------------------------------------------------------ multi-run jobs


def test_seed_ensemble_layout(sim_pair, tmp_path):
    src, tgt = sim_pair
    out = tmp_path / "ens"
    proc = run_cli("train", "--source", src, "--target", tgt, "--out", out, "--backbone",
                   TINY_BACKBONE, "--pretrained", "none", "--epochs", "1", "--seeds", "2",
                   "--seed", "5", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "seeds.json").read_text()) == {"seeds": [5, 6],
                                                            "runs": ["seed_5", "seed_6"]}
    import yaml
    for s in (5, 6):
        run = out / f"seed_{s}"
        assert (run / "best.pt").exists() and (run / "run.json").exists()
        assert yaml.safe_load((run / "config.yaml").read_text())["seed"] == s
    a, b = (torch.load(out / f"seed_{s}" / "last.pt", weights_only=True)["model"] for s in (5, 6))
    assert not torch.equal(a["classifier.weight"], b["classifier.weight"])
    again = run_cli("train", "--source", src, "--out", out, "--resume", env=ONE_THREAD)
    assert again.returncode == 0, again.stderr  # finished members are left as they are
    assert len(_records(out / "seed_5")) == 1


def test_recursive_rounds_add_confident_target_pseudo_labels(sim_pair, tmp_path):
    src, tgt = sim_pair
    out = tmp_path / "rec"
    train(_tiny(source=str(src), target=str(tgt), out=str(out), recursive=2, pseudo_top=4))
    rounds = [json.loads(x) for x in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert all(r["target_test_accuracy"] is not None and r["n_target_test"] > 0 for r in rounds)
    assert rounds[0]["n_pseudo"] == 0 and 0 < rounds[1]["n_pseudo"] <= 8
    assert rounds[2]["n_pseudo"] > rounds[1]["n_pseudo"]
    store = CutoutStore.open(tgt)
    pseudo = json.loads((out / "pseudo_2.json").read_text())
    assert set(pseudo["rows"]) <= set(store.indices("train").tolist())  # never the test split
    truth = store.column("label")[pseudo["rows"]]
    assert rounds[2]["pseudo_label_accuracy"] == pytest.approx(
        float((truth == np.array(pseudo["labels"])).mean()))
    info = json.loads((out / "round_2" / "run.json").read_text())
    assert "round_1/best.pt" in info["pretrained"]
    n0 = torch.load(out / "round_0" / "last.pt", weights_only=True)["history"]
    assert len(n0) == 1


def test_few_shot_study_writes_table_plot_and_json(sim_pair, tmp_path):
    src, tgt = sim_pair
    out = tmp_path / "fs"
    proc = run_cli("study", "few-shot", "--source", src, "--target", tgt, "--out", out,
                   "--n", "0,10", "--epochs", "1", "--backbone", TINY_BACKBONE,
                   "--pretrained", "none", env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "few_shot.json").read_text())
    assert [r["n"] for r in result["rows"]] == [0, 10]
    assert all(0 <= r["accuracy"] <= 1 for r in result["rows"])
    assert (out / "few_shot.png").stat().st_size > 1000
    assert "| 10 |" in (out / "few_shot.md").read_text()
    cfg = json.loads((out / "n_10" / "run.json").read_text())
    assert cfg["target"] is not None
    too_many = run_cli("study", "few-shot", "--source", src, "--target", tgt, "--out",
                       tmp_path / "fs2", "--n", "5000", "--backbone", TINY_BACKBONE)
    assert too_many.returncode == 1 and "exceeds the" in too_many.stderr


# ------------------------------------------------------------------ errors before training


def _errors(stderr: str) -> list[str]:
    """The error itself: info lines (band mapping, weights) may precede it, no traceback."""
    assert "Traceback" not in stderr
    lines = error_lines(stderr)
    assert lines and lines[-1].startswith("error: "), stderr
    return [ln for ln in lines if ln.startswith("error")]


@pytest.mark.parametrize("args,match", [
    (["--backbone", "resnet181"], "unknown backbone 'resnet181'"),
    (["--adapt", "mmdd"], "unknown adapter 'mmdd'"),
    (["--adapt", "mmd+fisherr"], "unknown regulariser 'fisherr'"),
    (["--augment", "flip,mirror"], "unknown augmentation 'mirror'"),
    (["--stages", "head=1,bottom"], "unknown stage rule 'bottom'"),
    (["--stages", "head=1,prefix:nothing_here=1"], "matches no parameter"),
    (["--seeds", "2", "--backbone", "resnet181"], "unknown backbone 'resnet181'"),
])
def test_unknown_names_fail_in_one_line_before_training(sim_pair, tmp_path, args, match):
    src, tgt = sim_pair
    out = tmp_path / "bad"
    proc = run_cli("train", "--source", src, "--target", tgt, "--out", out, "--backbone",
                   TINY_BACKBONE, "--pretrained", "none", *args, env=ONE_THREAD)
    errors = _errors(proc.stderr)
    assert proc.returncode == 1
    assert len(errors) == 1 and match in errors[0], proc.stderr
    assert "epoch" not in proc.stderr and not out.exists()


def test_target_with_unmappable_bands_fails_before_training(sim_pair, tmp_path):
    src, tgt = sim_pair  # sdss g,r,i and des g,r,i,z: des -> sdss lacks z
    out = tmp_path / "bad"
    proc = run_cli("train", "--source", tgt, "--target", src, "--out", out, "--backbone",
                   TINY_BACKBONE, "--pretrained", "none", "--adapt", "mmd", env=ONE_THREAD)
    errors = _errors(proc.stderr)
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "missing z" in errors[0] and "epoch" not in proc.stderr and not out.exists()


# ------------------------------------------------------------------ kill -9 and resume


@pytest.fixture(scope="module")
def kill_store(tmp_path_factory):
    return make_sim_store(tmp_path_factory.mktemp("kill") / "sdss.zarr", "sdss", n=240)


def _train_args(store: Path, out: Path) -> list[str]:
    # stages, plateau with patience 0 (the lr changes), a balanced sampler and random
    # augmentation: every piece of state that resume must restore is in play
    return ["train", "--source", str(store), "--out", str(out), "--backbone", TINY_BACKBONE,
            "--pretrained", "none", "--batch-size", "8", "--stages", "head=1,top:0.5=1,all",
            "--epochs", "5", "--lr-patience", "0", "--balance", "sampler", "--augment",
            "flip,rotate45,zoom", "--seed", "7"]


def test_kill_9_mid_epoch_then_resume_matches_an_uninterrupted_run(kill_store, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **ONE_THREAD}
    full, part = tmp_path / "full", tmp_path / "part"
    done = run_cli(*_train_args(kill_store, full), env=ONE_THREAD)
    assert done.returncode == 0, done.stderr
    want = _records(full)
    epoch_s = max(r["seconds"] for r in want)

    proc = subprocess.Popen([sys.executable, "-m", "astrotransfer.cli",
                             *_train_args(kill_store, part)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if (part / "metrics.jsonl").exists() and len(_records(part)) >= 2:
            break
        time.sleep(0.05)
    time.sleep(epoch_s / 2)  # well inside epoch 3
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(_records(part))
    assert 2 <= killed_at < 5

    resumed = run_cli("train", "--source", kill_store, "--out", part, "--resume", env=ONE_THREAD)
    assert resumed.returncode == 0, resumed.stderr
    got = _records(part)
    assert [r["epoch"] for r in got] == [1, 2, 3, 4, 5]  # none skipped, none repeated
    for a, b in zip(want, got):
        assert (a["stage"], a["lr"]) == (b["stage"], b["lr"])
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-3, abs=1e-4)
        assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-3, abs=1e-4)
        assert b["val_acc"] == pytest.approx(a["val_acc"], abs=1e-6)
    fa = torch.load(full / "last.pt", weights_only=True)["model"]
    fb = torch.load(part / "last.pt", weights_only=True)["model"]
    assert all(torch.allclose(fa[k].float(), fb[k].float(), rtol=1e-3, atol=1e-5) for k in fa)
