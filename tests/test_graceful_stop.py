"""SIGTERM (and SIGINT) at seeded points during ingest, train and predict, then the same
command again: the cluster's way of ending a job, handled gracefully (issue 16, item 1).

The machinery is test_kill_resume's, with SIGTERM in place of SIGKILL: each job is stopped
three times at seeded random thresholds of its own progress plus a random delay; every
stop must end the process by itself within STOP_BOUND_S, with exit code 75 and one
`stopped:` line saying what was kept, and the final run must equal an uninterrupted one
(same ids, pixels, epoch losses, weights, catalog). Train is stopped inside epochs, so the
mid-epoch checkpoint and its exact continuation are what is checked there.
"""
from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from astrotransfer.store import CutoutStore, check_store
from conftest import TINY_BACKBONE, run_cli
from test_kill_resume import (N_OBJ, STOP_BOUND_S, committed, epochs_done, ingest_args,
                              kill_at, kill_chain, parts, records, ref_store, train_store,
                              trained_run)

__all__ = ["ref_store", "train_store", "trained_run"]  # module fixtures reused from there


def _same_store(a_path: Path, b_path: Path) -> None:
    a, b = CutoutStore.open(a_path), CutoutStore.open(b_path)
    ia, ib = np.argsort(a.column("object_id")), np.argsort(b.column("object_id"))
    for col in ("object_id", "split", "label", "ra", "dec", "flags"):
        np.testing.assert_array_equal(a.column(col)[ia], b.column(col)[ib], err_msg=col)
    np.testing.assert_array_equal(a.read_images(ia), b.read_images(ib))


@pytest.mark.slow
def test_ingest_sigterm_three_times_equals_uninterrupted(ref_store, tmp_path):
    out = tmp_path / "s.zarr"
    partial = out.with_name("s.zarr.partial")
    stops: list = []
    seen = kill_chain(lambda i: ingest_args(out), lambda: committed(partial), 12, 90,
                      "ingest-term", sig=signal.SIGTERM, stops=stops)
    assert not out.exists() and seen[-1] < N_OBJ, seen
    assert all("committed objects" in msg and str(partial) in msg for _, msg in stops), stops
    final = run_cli(*ingest_args(out))
    assert final.returncode == 0, final.stderr
    assert f"resumed after {seen[-1]} done" in final.stderr
    assert check_store(out)["unique_ids"] == N_OBJ
    _same_store(out, ref_store)
    print(f"ingest SIGTERM at {seen} rows; exits {[round(t, 2) for t, _ in stops]} s "
          f"after the signal (bound {STOP_BOUND_S} s); resumed store equals reference")


@pytest.mark.slow
def test_ingest_sigint_stops_cleanly_too(ref_store, tmp_path):
    out = tmp_path / "s.zarr"
    stops: list = []
    kill_at(ingest_args(out), lambda: committed(out.with_name("s.zarr.partial")), 48, 0.2,
            sig=signal.SIGINT, stops=stops)
    assert "stopped by SIGINT" in stops[0][1]
    assert run_cli(*ingest_args(out)).returncode == 0
    _same_store(out, ref_store)


EPOCHS = 7


def train_args(src: Path, out: Path, *extra) -> list:
    # batch 4: 12 optimizer steps per epoch, so the stops land inside epochs
    return ["train", "--source", src, "--out", out, "--backbone", TINY_BACKBONE,
            "--pretrained", "none", "--epochs", EPOCHS, "--batch-size", 4, "--seed", 7,
            "--device", "cpu", *extra]


@pytest.mark.slow
def test_train_sigterm_mid_epoch_resumes_to_the_same_run(train_store, tmp_path):
    import torch

    ref = tmp_path / "ref"
    assert run_cli(*train_args(train_store, ref)).returncode == 0
    out = tmp_path / "run"
    stops: list = []
    seen = kill_chain(lambda i: train_args(train_store, out, *(("--resume",) if i else ())),
                      lambda: epochs_done(out), 1, 1, "train-term", sig=signal.SIGTERM,
                      stops=stops)
    mid = [msg for _, msg in stops if "after step" in msg]
    assert mid, f"no stop landed inside an epoch: {stops}"
    assert "partial" in torch.load(out / "last.pt", weights_only=True) or seen[-1] < EPOCHS
    final = run_cli(*train_args(train_store, out, "--resume"))
    assert final.returncode == 0, final.stderr
    a, b = records(out), records(ref)
    assert [r["epoch"] for r in a] == list(range(1, EPOCHS + 1))
    for ra, rb in zip(a, b):
        for key in ("train_loss", "val_loss", "train_acc", "val_acc", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (ra["epoch"], key)
    for name in ("best.pt", "last.pt"):
        wa = torch.load(out / name, weights_only=True)
        wb = torch.load(ref / name, weights_only=True)
        assert wa["epoch"] == wb["epoch"] and "partial" not in wa
        for k, v in wb["model"].items():
            torch.testing.assert_close(wa["model"][k], v, rtol=1e-4, atol=1e-5)
    print(f"train SIGTERM after {seen} epochs ({len(mid)} mid-epoch: "
          f"{[m.split('train ')[1].split(';')[0] for m in mid]}); exits "
          f"{[round(t, 2) for t, _ in stops]} s after the signal; run equals reference")


@pytest.mark.slow
def test_predict_sigterm_three_times_gives_the_identical_catalog(trained_run, ref_store,
                                                                  tmp_path):
    def args(out):
        return ["predict", trained_run, "--data", ref_store, "--out", out, "--batch-size", 4]

    ref = tmp_path / "ref.parquet"
    assert run_cli(*args(ref)).returncode == 0
    out = tmp_path / "cat.parquet"
    stops: list = []
    seen = kill_chain(lambda i: args(out), lambda: parts(out), 2, 25, "predict-term",
                      sig=signal.SIGTERM, stops=stops)
    assert not out.exists() and seen[-1] < N_OBJ // 4, seen
    final = run_cli(*args(out))
    assert final.returncode == 0, final.stderr
    assert f"resumed after {seen[-1]} chunks" in final.stdout
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(ref), check_exact=True)
    print(f"predict SIGTERM after {seen} parts; exits {[round(t, 2) for t, _ in stops]} s "
          f"after the signal; catalog identical to reference")
