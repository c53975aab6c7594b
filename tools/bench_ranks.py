"""One rank against two under `astrotransfer launch`, side by side: training images/s at
the same global batch, and sharded prediction objects/s.

    .venv/bin/python tools/bench_ranks.py [--n 600] [--backbone tf_efficientnet_lite0]
                                          [--ranks 1,2] [--repeats 1] [--json out.json]

Each rank gets --threads threads (1 by default: with one thread per rank, R ranks use R
cores, and a multi-threaded rank no longer stalls whenever another process on a shared
machine takes a core). On a small CPU this is a functional check of the data-parallel path
and of its overheads (process start-up, gloo all-reduce), not a scaling result. Training speed comes from the epochs
after the first; prediction is timed as the whole launch (start-up included) and, for
reference, as an in-process single-rank `predict_catalog` call.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import emit, machine, n_labelled, sim_store  # noqa: E402

THREADS = 0  # threads per rank; 0: launch's default, cores / ranks


def launch(ranks: int, *command: str) -> float:
    cmd = [sys.executable, "-m", "astrotransfer.cli", "launch", "--num-procs", str(ranks),
           "--no-scale-lr", "--", *map(str, command)]
    t0 = time.perf_counter()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if THREADS:
        env["OMP_NUM_THREADS"] = str(THREADS)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def train_row(ranks: int, src: Path, tgt: Path, out: Path, args) -> dict:
    per_rank = args.global_batch // ranks
    wall = launch(ranks, "train", "--source", src, "--target", tgt, "--out", out,
                  "--adapt", args.adapt, "--trainer", "deepspeed", "--backbone", args.backbone,
                  "--pretrained", "none",
                  "--epochs", args.epochs, "--batch-size", per_rank)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    timed = recs[1:] or recs
    seconds = sum(r["seconds"] for r in timed)
    n_train = args.n_train
    return {"what": "train", "ranks": ranks, "per_rank_batch": per_rank,
            "global_batch": per_rank * ranks, "adapt": args.adapt, "epoch_seconds":
            round(seconds / len(timed), 2), "images_per_s": round(n_train * len(timed) / seconds, 1),
            "wall_s": round(wall, 1), "final_train_loss": round(recs[-1]["train_loss"], 4)}


def predict_row(ranks: int, run: Path, data: Path, out: Path, n: int, batch: int) -> dict:
    wall = launch(ranks, "predict", run, "--data", data, "--out", out, "--batch-size", batch)
    return {"what": "predict (whole launch)", "ranks": ranks, "n": n, "wall_s": round(wall, 1),
            "objects_per_s": round(n / wall, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--adapt", default="mmd")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--global-batch", type=int, default=32)
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1,
                    help="threads per rank (0: cores/ranks); 1 keeps a shared machine fair")
    ap.add_argument("--json")
    args = ap.parse_args()
    global THREADS
    THREADS = args.threads
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    import astrotransfer as at

    result = {"benchmark": "ranks", "machine": machine(), "args": vars(args), "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-ranks-") as tmp:
        tmp = Path(tmp)
        src = sim_store(tmp / "sdss.zarr", "sdss", n=args.n, size=args.size)
        tgt = sim_store(tmp / "des.zarr", "des", n=args.n, size=args.size, seed=1)
        args.n_train = n_labelled(src)
        n_target = at.open_store(tgt).n
        for rep in range(args.repeats):
            for r in map(int, args.ranks.split(",")):
                run = tmp / f"run{r}-{rep}"
                result["rows"].append(train_row(r, src, tgt, run, args))
                result["rows"].append(predict_row(r, run, tgt, tmp / f"cat{r}-{rep}.parquet",
                                                  n_target, 64))
            t0 = time.perf_counter()
            at.load_run(run).predict(tgt, out=tmp / f"inproc-{rep}.parquet", batch_size=64)
            wall = time.perf_counter() - t0
            result["rows"].append({"what": "predict (in process, no launcher)", "ranks": 1,
                                   "n": n_target, "wall_s": round(wall, 1),
                                   "objects_per_s": round(n_target / wall, 1)})
    emit(result, args.json)


if __name__ == "__main__":
    main()
