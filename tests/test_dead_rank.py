"""A dead or frozen rank never hangs the job (issue 16, item 3): real gloo ranks on this CPU.

The two ranks are started directly with the RANK/WORLD_SIZE/MASTER_* environment a cluster
launcher sets (DeepSpeed's local launcher would itself kill the survivor, which hides the
multi-node case where nothing does). One rank is then killed (`kill -9`: its connections
close) or frozen (SIGSTOP: a hung node, nothing closes); the survivor must exit by itself
within the documented bound, ASTROTRANSFER_RANK_TIMEOUT (set to RANK_TIMEOUT here) plus
start-up slack, with one `error:` line, and `launch --num-procs 2 ... --resume` (or the
same predict) must then finish the job.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_BACKBONE, error_lines, run_cli, train_tiny
from test_kill_resume import train_store

__all__ = ["train_store"]

RANK_TIMEOUT = 10
BOUND_S = RANK_TIMEOUT + 20  # the timeout, the watchdog's poll and process exit under load
EPOCHS = 12


def free_tcp_port() -> int:
    """A TCP port free on 127.0.0.1 now, for the process group's MASTER_PORT."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(args, tmp_path: Path) -> list[subprocess.Popen]:
    port = free_tcp_port()
    procs = []
    for rank in (0, 1):
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
               "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "ASTROTRANSFER_RANK_TIMEOUT": str(RANK_TIMEOUT)}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "astrotransfer.cli", *map(str, args)], env=env,
            stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"rank{rank}.err", "w")))
    return procs


def wait_until(cond, procs, timeout=300) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert all(p.poll() is None for p in procs), "a rank ended before the test's kill"
        assert time.time() < deadline, "no progress"
        time.sleep(0.02)


def survivor_exit(survivor: subprocess.Popen, tmp_path: Path,
                  says=("rank 0", "--resume")) -> tuple[float, str]:
    sent = time.time()
    try:
        rc = survivor.wait(timeout=BOUND_S)
    except subprocess.TimeoutExpired:
        survivor.kill()
        pytest.fail(f"the surviving rank still ran {BOUND_S} s after its peer died")
    took = time.time() - sent
    err = (tmp_path / "rank0.err").read_text()
    lines = [ln for ln in error_lines(err) if ln.startswith("error")]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, (rc, err[-1500:])
    assert all(w in lines[0] for w in says), lines[0]
    return took, lines[0]


def train_args(src, out, *extra):
    return ["train", "--source", src, "--out", out, "--backbone", TINY_BACKBONE,
            "--pretrained", "none", "--epochs", EPOCHS, "--batch-size", 8, "--seed", 5,
            "--trainer", "deepspeed", "--augment", "none", *extra]


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["kill", "freeze"])
def test_survivor_of_a_dead_rank_exits_in_bound_and_resume_works(train_store, tmp_path, how):
    out = tmp_path / "run"
    procs = start_ranks(train_args(train_store, out), tmp_path)
    try:
        wait_until(lambda: (out / "metrics.jsonl").exists()
                   and len(records(out)) >= 1, procs)
        time.sleep(0.3)  # mid-epoch
        os.kill(procs[1].pid, signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        took, line = survivor_exit(procs[0], tmp_path)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    before = records(out)
    assert 1 <= len(before) < EPOCHS
    print(f"{how}: survivor exited {took:.1f} s after its peer (bound {BOUND_S} s): {line}")
    if how == "freeze":
        return  # the kill case covers the resume
    env = {"ASTROTRANSFER_RANK_TIMEOUT": str(RANK_TIMEOUT)}
    proc = run_cli("launch", "--num-procs", "2", "--", *train_args(train_store, out, "--resume"),
                   env=env, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = records(out)
    assert [r["epoch"] for r in after] == list(range(1, EPOCHS + 1))
    assert after[:len(before)] == before  # the epochs before the death are kept as they were


@pytest.mark.slow
def test_sharded_predict_survives_a_dead_rank(train_store, tmp_path):
    run = train_tiny(train_store, tmp_path / "tiny")
    ref = tmp_path / "ref.parquet"
    assert run_cli("predict", run, "--data", train_store, "--out", ref).returncode == 0
    out = tmp_path / "cat.parquet"
    args = ["predict", run, "--data", train_store, "--out", out, "--batch-size", 1]
    partial = out.with_name("cat.parquet.partial")
    procs = start_ranks(args, tmp_path)
    try:
        wait_until(lambda: len([p for p in partial.glob("part-*.parquet")
                                if int(p.stem.split("-")[1]) % 2]) >= 3, procs)
        os.kill(procs[1].pid, signal.SIGKILL)
        took, line = survivor_exit(procs[0], tmp_path, ("rank 1", "same command again"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    assert "rank 1" in line and not out.exists()
    print(f"predict: rank 0 exited {took:.1f} s after rank 1's death: {line}")
    proc = run_cli("launch", "--num-procs", "2", "--", *args, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_parquet(out), pd.read_parquet(ref), check_exact=False,
                                  rtol=0, atol=1e-6)
