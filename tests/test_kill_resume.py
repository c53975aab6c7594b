"""`kill -9` at random points during ingest, train and predict, then the same command again.

Each test kills one job three times, at seeded random thresholds of its own progress
(committed store rows, finished epochs in metrics.jsonl, catalog parts written) plus a
random delay, so kills land between and inside batches; every restart is itself killed at
the next threshold, and the last one runs to the end. The result must equal an uninterrupted
run of the same command with the same seed: the same ids once each, the same pixels, the
same epoch losses (the trainer reseeds every epoch) and identical predictions.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import zarr

from astrotransfer.store import CutoutStore, check_store
from conftest import TINY_BACKBONE, run_cli, train_tiny

SEED = 20240611
N_KILLS = 3


def _cmd(args) -> list[str]:
    return [sys.executable, "-m", "astrotransfer.cli", *map(str, args)]


STOP_BOUND_S = 30.0  # a SIGTERM'd command must have exited within this (issue 16)
EXIT_STOPPED = 75


def kill_at(args, progress: Callable[[], int], threshold: int, delay: float,
            timeout: float = 300, sig: int = signal.SIGKILL,
            stops: list | None = None) -> int:
    """Start the command, wait until progress() >= threshold, wait up to `delay`, send it
    `sig` (SIGKILL by default).

    With another signal (SIGTERM) the command must then exit by itself within STOP_BOUND_S
    with EXIT_STOPPED and a one-line `stopped:` message; (seconds, message) go to `stops`.
    Returns the progress seen at the kill; fails if the command ended on its own first.
    """
    proc = subprocess.Popen(_cmd(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + timeout
    try:
        while progress() < threshold:
            if proc.poll() is not None:
                pytest.fail(f"{' '.join(map(str, args[:2]))} ended (exit {proc.returncode}) "
                            f"before reaching {threshold}: {proc.stderr.read().decode()[-800:]}")
            if time.time() > deadline:
                pytest.fail(f"no progress to {threshold} within {timeout} s")
            time.sleep(0.01)
        # The random delay never runs past the next unit of progress, so the kill lands
        # inside the unit after the threshold however fast the machine is.
        reached, until = progress(), time.time() + delay
        while time.time() < until and progress() == reached and proc.poll() is None:
            time.sleep(0.005)
        assert proc.poll() is None, f"finished before the kill at {threshold} (+{delay:.2f} s)"
        os.kill(proc.pid, sig)
        if sig != signal.SIGKILL:
            sent = time.time()
            try:
                rc = proc.wait(timeout=STOP_BOUND_S)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{args[0]} still running {STOP_BOUND_S} s after {sig.name}")
            err = proc.stderr.read().decode()
            lines = [ln for ln in err.splitlines() if ln.startswith("stopped:")]
            assert rc == EXIT_STOPPED and len(lines) == 1, (rc, err[-800:])
            assert "Traceback" not in err, err[-800:]
            if stops is not None:
                stops.append((time.time() - sent, lines[0]))
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stderr.close()
    return progress()


def kill_chain(args_for: Callable[[int], list], progress: Callable[[], int], lo: int, hi: int,
               salt: str, sig: int = signal.SIGKILL, stops: list | None = None) -> list[int]:
    """Kill N_KILLS times; each run (after the first, a restart) is killed once it has made
    a seeded random lo..hi units of progress beyond where the previous one was killed, plus a
    random delay of up to 0.4 s. Returns the progress at each kill."""
    rng = random.Random(f"{SEED}-{salt}")
    seen: list[int] = []
    for i in range(N_KILLS):
        start = seen[-1] if seen else 0
        threshold, delay = start + rng.randint(lo, hi), rng.uniform(0.0, 0.4)
        seen.append(kill_at(args_for(i), progress, threshold, delay, sig=sig, stops=stops))
        assert seen[-1] > start, f"kill {i + 1} made no progress ({seen})"
    return seen


# ------------------------------------------------------------------------------ ingest

N_OBJ = 360


def ingest_args(out: Path) -> list:
    return ["ingest", "sim", "--instrument", "sdss", "--n", N_OBJ, "--seed", "3", "--size", 32,
            "--batch-size", 12, "--out", out]


def committed(partial: Path) -> int:
    try:
        return int(zarr.open_group(str(partial), mode="r").attrs.get("n_committed", 0))
    except Exception:
        return 0


@pytest.fixture(scope="module")
def ref_store(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "ref.zarr"
    assert run_cli(*ingest_args(out)).returncode == 0
    return out


@pytest.mark.slow
def test_ingest_killed_three_times_equals_uninterrupted(ref_store, tmp_path):
    out = tmp_path / "s.zarr"
    partial = out.with_name("s.zarr.partial")
    seen = kill_chain(lambda i: ingest_args(out), lambda: committed(partial), 12, 90, "ingest")
    assert not out.exists() and partial.exists() and seen[-1] < N_OBJ, seen
    final = run_cli(*ingest_args(out))
    assert final.returncode == 0, final.stderr
    assert f"resumed after {seen[-1]} done" in final.stderr
    assert not partial.exists()
    report = check_store(out)
    assert report["n"] == N_OBJ and report["unique_ids"] == N_OBJ
    a, b = CutoutStore.open(out), CutoutStore.open(ref_store)
    ia, ib = np.argsort(a.column("object_id")), np.argsort(b.column("object_id"))
    for col in ("object_id", "split", "label", "ra", "dec", "flags"):
        np.testing.assert_array_equal(a.column(col)[ia], b.column(col)[ib], err_msg=col)
    np.testing.assert_array_equal(a.read_images(ia), b.read_images(ib))
    print(f"ingest killed at {seen} committed rows of {N_OBJ}; resumed store equals reference")


# ------------------------------------------------------------------------------ train

EPOCHS = 8


@pytest.fixture(scope="module")
def train_store(tmp_path_factory) -> Path:
    from conftest import make_sim_store
    return make_sim_store(tmp_path_factory.mktemp("tr") / "src.zarr", "sdss", n=80, size=32,
                          seed=5)


def train_args(src: Path, out: Path, *extra) -> list:
    return ["train", "--source", src, "--out", out, "--backbone", TINY_BACKBONE,
            "--pretrained", "none", "--epochs", EPOCHS, "--batch-size", 16, "--seed", 7,
            "--device", "cpu", *extra]


def epochs_done(run: Path) -> int:
    try:
        return len((run / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_train_killed_three_times_resumes_to_the_same_run(train_store, tmp_path):
    ref = tmp_path / "ref"
    assert run_cli(*train_args(train_store, ref)).returncode == 0
    out = tmp_path / "run"
    seen = kill_chain(lambda i: train_args(train_store, out, *(("--resume",) if i else ())),
                      lambda: epochs_done(out), 1, 2, "train")
    assert (out / "last.pt").exists() and seen[-1] < EPOCHS, seen
    final = run_cli(*train_args(train_store, out, "--resume"))
    assert final.returncode == 0, final.stderr
    a, b = records(out), records(ref)
    assert [r["epoch"] for r in a] == list(range(1, EPOCHS + 1))
    for ra, rb in zip(a, b):
        for key in ("train_loss", "val_loss", "train_acc", "val_acc", "lr"):
            assert ra[key] == pytest.approx(rb[key], rel=1e-4, abs=1e-6), (ra["epoch"], key)
    import torch
    wa = torch.load(out / "best.pt", weights_only=True)
    wb = torch.load(ref / "best.pt", weights_only=True)
    assert wa["epoch"] == wb["epoch"]
    for k, v in wb["model"].items():
        torch.testing.assert_close(wa["model"][k], v, rtol=1e-4, atol=1e-5)
    print(f"train killed after {seen} finished epochs of {EPOCHS}; losses match the reference")


# ------------------------------------------------------------------------------ predict


@pytest.fixture(scope="module")
def trained_run(train_store, tmp_path_factory) -> Path:
    return train_tiny(train_store, tmp_path_factory.mktemp("pr") / "run", seed=1,
                      image_size=96)


def parts(out: Path) -> int:
    return len(list(out.with_name(out.name + ".partial").glob("part-*.parquet")))


@pytest.mark.slow
def test_predict_killed_three_times_gives_the_identical_catalog(trained_run, ref_store,
                                                                  tmp_path):
    def args(out):
        return ["predict", trained_run, "--data", ref_store, "--out", out, "--batch-size", 4]

    ref = tmp_path / "ref.parquet"
    assert run_cli(*args(ref)).returncode == 0
    out = tmp_path / "cat.parquet"
    n_chunks = N_OBJ // 4
    seen = kill_chain(lambda i: args(out), lambda: parts(out), 2, 25, "predict")
    assert not out.exists() and seen[-1] < n_chunks, seen
    final = run_cli(*args(out))
    assert final.returncode == 0, final.stderr
    assert f"resumed after {seen[-1]} chunks" in final.stdout
    assert not out.with_name(out.name + ".partial").exists()
    a, b = pd.read_parquet(out), pd.read_parquet(ref)
    assert a["object_id"].is_unique and len(a) == N_OBJ
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    print(f"predict killed after {seen} of {n_chunks} parts; catalog identical to reference")
