"""The engine end to end on tiny sim stores: train, evaluate, predict, embed, resume."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from astropy.table import Table

from astrotransfer.config import TrainConfig
from astrotransfer.engine.training.dispatch import train
from astrotransfer.store import CutoutStore
from conftest import TINY_BACKBONE, run_cli, tiny_run_copy


@pytest.fixture(scope="module")
def run_dir(transfer_run_master, tmp_path_factory):
    return tiny_run_copy(transfer_run_master, tmp_path_factory.mktemp("runs") / "ft")


def test_run_directory_contents(run_dir):
    for name in ("config.yaml", "run.json", "metrics.jsonl", "best.pt", "last.pt"):
        assert (run_dir / name).exists(), name
    epochs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [1, 2]
    ckpt = torch.load(run_dir / "best.pt", weights_only=True)  # plain tensors only
    assert "model" in ckpt and isinstance(next(iter(ckpt["model"].values())), torch.Tensor)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["bands"] == ["g", "r", "i"] and info["class_names"] == ["elliptical", "spiral"]


def test_evaluate_writes_metrics(run_dir, sim_pair):
    proc = run_cli("evaluate", run_dir, "--data", sim_pair[1], "--split", "test")
    assert proc.returncode == 0, proc.stderr
    m = json.loads((run_dir / "metrics.json").read_text())
    assert {"accuracy", "recall", "confusion", "n"} <= set(m)
    assert np.array(m["confusion"]).sum() == m["n"] > 0
    assert set(m["recall"]) == {"elliptical", "spiral"}


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".fits"])
def test_predict_catalog_formats(run_dir, sim_pair, tmp_path, suffix):
    src = CutoutStore.open(sim_pair[0])
    out = tmp_path / f"cat{suffix}"
    proc = run_cli("predict", run_dir, "--data", sim_pair[0], "--out", out, "--batch-size", 20)
    assert proc.returncode == 0, proc.stderr
    table = Table.read(out).to_pandas() if suffix == ".fits" else (
        pd.read_csv(out) if suffix == ".csv" else pd.read_parquet(out))
    assert list(table.columns) == ["object_id", "ra", "dec", "p_elliptical", "p_spiral",
                                   "pred", "entropy"]
    assert len(table) == src.n and table["object_id"].is_unique
    np.testing.assert_allclose(table["p_elliptical"] + table["p_spiral"], 1, atol=1e-5)
    assert not (tmp_path / f"cat{suffix}.partial").exists()
    again = run_cli("predict", run_dir, "--data", sim_pair[0], "--out", out)
    assert again.returncode != 0 and "--overwrite" in again.stderr


def test_embed_into_store(run_dir, sim_pair, tmp_path):
    import shutil
    store_copy = tmp_path / "copy.zarr"
    shutil.copytree(sim_pair[1], store_copy)
    proc = run_cli("embed", run_dir, "--data", store_copy)
    assert proc.returncode == 0, proc.stderr
    run_id = json.loads((run_dir / "run.json").read_text())["run_id"]
    store = CutoutStore.open(store_copy)
    emb = np.asarray(store.group[f"runs/{run_id}/embeddings"][:])
    assert emb.shape[0] == store.n and emb.shape[1] > 0 and np.isfinite(emb).all()


def test_resume_continues_where_it_stopped(sim_pair, tmp_path):
    src, _ = sim_pair
    # plateau: a cosine schedule's length is the run's epochs, so a 2-epoch run is no
    # stand-in for a 3-epoch one killed after epoch 2 (test_kill_resume kills for real)
    common = dict(source=str(src), backbone=TINY_BACKBONE, pretrained="none", batch_size=16,
                  seed=3, scheduler="plateau")
    full = tmp_path / "full"
    train(TrainConfig(out=str(full), epochs=3, **common))
    part = tmp_path / "part"
    train(TrainConfig(out=str(part), epochs=2, **common))  # as if killed after epoch 2
    train(TrainConfig(out=str(part), epochs=3, **common), resume=True)
    a = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (part / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in b] == [1, 2, 3]
    for ra, rb in zip(a, b):
        assert ra["train_loss"] == pytest.approx(rb["train_loss"], rel=1e-4)
        assert ra["val_loss"] == pytest.approx(rb["val_loss"], rel=1e-4)


def test_tta_averages_the_dihedral_views_and_is_rotation_invariant(run_dir, sim_pair):
    from astrotransfer.engine.inference.streaming import load_run_model
    from astrotransfer.engine.models import classify, dihedral_views, features

    model, info, _ = load_run_model(run_dir, tta=8)
    x = torch.from_numpy(CutoutStore.open(sim_pair[0]).read_images(np.arange(6)))
    with torch.no_grad():
        p = torch.softmax(classify(model, features(model, x)), 1)
        p_rot = torch.softmax(classify(model, features(model, torch.rot90(x, 1, (-2, -1)))), 1)
        plain, _, _ = load_run_model(run_dir, tta=1)
        views = dihedral_views(x, 8)
        mean_feats = features(plain, views).view(8, len(x), -1).mean(0)
    torch.testing.assert_close(p, p_rot, atol=1e-5, rtol=1e-4)  # D4-averaged: invariant
    torch.testing.assert_close(features(model, x), mean_feats, atol=1e-5, rtol=1e-4)
    with pytest.raises(Exception, match="--tta must be one of"):
        load_run_model(run_dir, tta=3)


def test_evaluate_and_predict_take_tta(run_dir, sim_pair, tmp_path):
    proc = run_cli("evaluate", run_dir, "--data", sim_pair[1], "--split", "test", "--tta", 8)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run_dir / "metrics.json").read_text())["tta"] == 8
    out = tmp_path / "cat.csv"
    proc = run_cli("predict", run_dir, "--data", sim_pair[1], "--out", out, "--tta", 4)
    assert proc.returncode == 0, proc.stderr
    assert len(pd.read_csv(out)) == CutoutStore.open(sim_pair[1]).n
    bad = run_cli("predict", run_dir, "--data", sim_pair[1], "--out", tmp_path / "b.csv",
                  "--tta", 3)
    assert bad.returncode != 0 and "--tta must be one of" in bad.stderr
    assert "Traceback" not in bad.stderr and not (tmp_path / "b.csv").exists()
