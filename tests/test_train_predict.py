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
    common = dict(source=str(src), backbone=TINY_BACKBONE, pretrained="none", batch_size=16, seed=3)
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
