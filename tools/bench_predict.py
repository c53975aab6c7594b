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
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def make_run(path: Path, store_path: Path, backbone: str) -> Path:
    """A run directory with untrained weights, built like `train` builds one."""
    from astrotransfer.engine.models import build_model
    from astrotransfer.engine.runs import RunDir, save_checkpoint
    from astrotransfer.store import CutoutStore

    store = CutoutStore.open(store_path)
    run = RunDir(path)
    path.mkdir(parents=True, exist_ok=True)
    model, provenance = build_model(backbone, in_chans=len(store.bands),
                                    num_classes=len(store.class_names), pretrained="none")
    run.write_info({"run_id": f"bench-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}",
                    "backbone": backbone, "in_chans": len(store.bands),
                    "num_classes": len(store.class_names), "class_names": store.class_names,
                    "bands": store.bands, "image_size": store.image_shape[-1],
                    "drop_rate": 0.0, "pretrained": provenance})
    save_checkpoint(run.best, {"model": model.state_dict(), "epoch": 0})
    return path


def sim_store(path: Path, n: int, size: int) -> Path:
    if path.exists():
        return path
    from astrotransfer.ingest import run_ingest
    from astrotransfer.registry import get_registry

    src = get_registry().get("survey", "sim").open(instrument="sdss", n=n, seed=0, size=size)
    run_ingest(src, path)
    return path


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

    from astrotransfer.engine.inference.streaming import load_run_model
    from astrotransfer.engine.inference.catalog import predict_catalog
    from astrotransfer.store import CutoutStore

    args.work.mkdir(parents=True, exist_ok=True)
    store = sim_store(args.work / f"sim_sdss_{args.n}_{args.size}.zarr", args.n, args.size)
    run = args.work / f"run_{args.backbone}"
    if run.exists():
        shutil.rmtree(run)
    make_run(run, store, args.backbone)
    model, info, _ = load_run_model(run)
    shape = CutoutStore.open(store).image_shape
    n = CutoutStore.open(store).n
    bare(model, 2 * args.batch_size, args.batch_size, shape)  # warm-up: allocator, kernels
    t_bare, t_pipe, c_bare, c_pipe = [], [], [], []
    for _ in range(args.repeats):  # interleaved, so load changes hit both sides alike
        c0 = time.process_time()
        t_bare.append(bare(model, n, args.batch_size, shape))
        c_bare.append(time.process_time() - c0)
        out = args.work / f"bench.{args.format}"
        t0, c0 = time.perf_counter(), time.process_time()
        predict_catalog(run, store, out, batch_size=args.batch_size, overwrite=True)
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
