"""Predict throughput: the whole pipeline (store → catalog) against a bare timm forward pass.

Usage: python tools/bench_predict.py [--n 3000] [--size 64] [--backbone tf_efficientnet_lite0]
                                     [--batch-size 256] [--threads 2] [--format parquet]

Both sides use the same model, batch size and torch thread count in one process, so the
ratio (pipeline images/s ÷ bare images/s) isolates what the pipeline adds: zarr reads,
band selection, resize, softmax, Parquet parts and the final merge. Target: ≥ 0.9 on CPU.
The sim store is rendered once (GalSim) and reused; the model is untrained, since speed
does not depend on the weights. Not a test: run it when the machine is otherwise idle.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def make_run(path: Path, work: Path, size: int, backbone: str) -> Path:
    """A run of `backbone` from random weights, one epoch on a 64-object store of the same
    cutout size: the weights do not matter for throughput, only the network does."""
    import astrotransfer as at

    shutil.rmtree(path, ignore_errors=True)
    small = sim_store(work / f"sim_sdss_64_{size}.zarr", 64, size)
    at.train(source=small, out=path, backbone=backbone, pretrained="none", epochs=1,
             batch_size=32, device="cpu")
    return path


def sim_store(path: Path, n: int, size: int) -> Path:
    if path.exists():
        return path
    import astrotransfer as at

    return at.ingest("sim", path, instrument="sdss", n=n, seed=0, size=size).path


@torch.no_grad()
def bare(model, n: int, batch_size: int, shape: tuple[int, ...]) -> float:
    """Seconds for n images through model(x) on tensors already in memory."""
    x = torch.randn(batch_size, *shape)
    last = torch.randn(n % batch_size or batch_size, *shape)
    full = n // batch_size if n % batch_size else n // batch_size - 1
    t0 = time.perf_counter()
    for _ in range(full):
        model(x)
    model(last)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--format", default="parquet", choices=("parquet", "fits", "csv"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "at_bench")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import astrotransfer as at

    args.work.mkdir(parents=True, exist_ok=True)
    store = sim_store(args.work / f"sim_sdss_{args.n}_{args.size}.zarr", args.n, args.size)
    run = args.work / f"run_{args.backbone}"
    if run.exists():
        shutil.rmtree(run)
    make_run(run, args.work, args.size, args.backbone)
    loaded = at.load_run(run)
    model = loaded.model
    shape = at.open_store(store).image_shape
    n = at.open_store(store).n
    bare(model, 2 * args.batch_size, args.batch_size, shape)  # warm-up: allocator, kernels
    t_bare, t_pipe, c_bare, c_pipe = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both sides alike
        c0 = time.process_time()
        t_bare.append(bare(model, n, args.batch_size, shape))
        c_bare.append(time.process_time() - c0)
        out = args.work / f"bench.{args.format}"
        t0, c0 = time.perf_counter(), time.process_time()
        loaded.predict(store, out=out, batch_size=args.batch_size, overwrite=True)
        t_pipe.append(time.perf_counter() - t0)
        c_pipe.append(time.process_time() - c0)
    b, p = statistics.median(t_bare), statistics.median(t_pipe)
    cb, cp = statistics.median(c_bare), statistics.median(c_pipe)
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[0]
    res = {"n": n, "image_shape": list(shape), "backbone": args.backbone,
           "batch_size": args.batch_size, "threads": args.threads, "format": args.format,
           "bare_images_per_s": n / b, "pipeline_images_per_s": n / p, "ratio": b / p,
           "cpu_ratio": cb / cp, "bare_seconds": t_bare, "pipeline_seconds": t_pipe,
           "bare_cpu_seconds": c_bare, "pipeline_cpu_seconds": c_pipe, "load_1min": load}
    print(f"{n} objects {shape}, {args.backbone}, batch {args.batch_size}, "
          f"{args.threads} threads, catalog .{args.format}, median of {args.repeats}")
    print(f"  bare timm forward : {n / b:8.1f} images/s  ({b:.2f} s)")
    print(f"  predict pipeline  : {n / p:8.1f} images/s  ({p:.2f} s, model load and merge "
          f"included)")
    print(f"  ratio pipeline/bare = {b / p:.3f}  (target >= 0.9)")
    print(f"  CPU-time ratio      = {cb / cp:.3f}  (all threads; less sensitive to other "
          f"load, which was {load} at the end)")
    (args.work / "bench_predict.json").write_text(json.dumps(res, indent=2))
    print(f"  details in {args.work / 'bench_predict.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
