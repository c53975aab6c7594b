"""The whole GPU benchmark: ingest → train a Khan-sized run → predict 1M cutouts, one table.

    tools/bench_gpu.sh                      # on a GPU machine: the full sizes below
    tools/bench_gpu.sh --device cpu --smoke # anywhere: tiny sizes, the same code path

Steps, each timed through the public API:
1. ingest: the first --n-ingest GZ1 SDSS JPEGs (../shared/data/gz1_sdss, read in place) at
   64 px with one decode worker per core; without the real data, a simulated SDSS store;
2. train: `tf_efficientnet_lite0` from random init (no download), --epochs over the
   ingested training split at --train-batch, channels-last, on --device (Khan et al. 2019
   trained on ~4k GZ1 galaxies; this is that size of job);
3. predict: a --n-predict-row store (float16) made by repeating the ingested cutouts
   (built untimed through `CutoutStore.create/commit`), predicted by the trained run with
   --precision (bf16 autocast by default on a GPU), --predict-batch objects per chunk, reader
   thread ahead of the model, pinned host batches and asynchronous copies to the device.

Prints one Markdown table (step, objects, seconds, objects/s) and writes --json.
Sizes default to the GPU run; --smoke sets tiny ones for the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import SHARED_DATA, machine  # noqa: E402

GZ1 = SHARED_DATA / "gz1_sdss"
MAP = "0=elliptical,1=spiral,2=spiral,3=spiral"


def step_ingest(out: Path, n: int, size: int, data: Path) -> tuple[Path, int]:
    import astrotransfer as at

    if (data / "labels.csv").exists():
        lines = (data / "labels.csv").read_text().splitlines()[: n + 1]
        catalog = out.parent / "labels.csv"
        catalog.write_text("\n".join(lines) + "\n")
        store = at.ingest("images", out, images=data / "images", catalog=catalog,
                          label_column="gz1_class", label_map=MAP, drop_unmapped=True,
                          crop=212, size=size, survey_name="sdss-gz1")
    else:
        store = at.ingest("sim", out, instrument="sdss", n=n, size=size, seed=0)
    return out, store.n


def step_predict_store(src: Path, out: Path, n: int) -> Path:
    """`n` rows repeating `src`'s cutouts, float16, written in big batches (untimed)."""
    import numpy as np

    import astrotransfer as at

    source = at.open_store(src)
    images = source.read_images(np.arange(source.n)).astype(np.float16)
    attrs = {k: v for k, v in source.attrs.items()
             if k not in ("n_committed", "n_skipped", "complete", "store_version")}
    store = at.CutoutStore.create(out, attrs, source.image_shape, dtype="float16")
    batch = max(1, min(n, 65536))
    for start in range(0, n, batch):
        k = min(batch, n - start)
        idx = np.arange(start, start + k) % source.n
        store.commit({"images": images[idx], "object_id": np.char.add("r", np.arange(start, start + k).astype(str)),
                      "ra": np.zeros(k), "dec": np.zeros(k), "label": np.full(k, -1, np.int32),
                      "split": np.full(k, "test"), "flags": np.zeros(k, np.int32)})
    store.group.attrs["complete"] = True
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda or cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (test suite, CPU)")
    ap.add_argument("--n-ingest", type=int, default=4800)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--train-batch", type=int, default=256)
    ap.add_argument("--n-predict", type=int, default=1_000_000)
    ap.add_argument("--predict-batch", type=int, default=4096)
    ap.add_argument("--precision", default=None, help="predict precision [bf16 on cuda]")
    ap.add_argument("--gz1", type=Path, default=GZ1)
    ap.add_argument("--work", type=Path, default=None, help="scratch folder [a temporary one]")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.smoke:
        args.n_ingest, args.size, args.epochs = 48, 32, 1
        args.backbone, args.train_batch = "test_efficientnet", 16
        args.n_predict, args.predict_batch = 500, 128
    import torch

    import astrotransfer as at

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: --device cuda but no GPU is visible; run on a GPU "
                         "machine, or use --device cpu --smoke for the CPU smoke test")
    precision = args.precision or ("bf16" if args.device.startswith("cuda") else "fp32")
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    result = {"benchmark": "gpu path", "machine": machine(), "device": args.device,
              "smoke": args.smoke, "precision": precision, "rows": rows}
    if args.device.startswith("cuda"):
        result["machine"]["gpu"] = torch.cuda.get_device_name(0)
    try:
        t0 = time.perf_counter()
        store, n = step_ingest(work / "ingest.zarr", args.n_ingest, args.size, args.gz1)
        rows.append({"step": "ingest images (decode workers)", "n": n,
                     "seconds": time.perf_counter() - t0})
        t0 = time.perf_counter()
        run = at.train(source=store, out=work / "run", backbone=args.backbone,
                       pretrained="none", epochs=args.epochs, batch_size=args.train_batch,
                       device=args.device, channels_last=True)
        n_train = len(at.open_store(store).indices("train")) * args.epochs
        rows.append({"step": f"train {args.backbone}, {args.epochs} epochs", "n": n_train,
                     "seconds": time.perf_counter() - t0})
        big = step_predict_store(store, work / "predict.zarr", args.n_predict)
        t0 = time.perf_counter()
        res = run.predict(big, work / "predict.parquet", batch_size=args.predict_batch,
                          precision=precision, device=args.device)
        rows.append({"step": f"predict ({precision})", "n": res["n"],
                     "seconds": time.perf_counter() - t0})
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        r["seconds"] = round(r["seconds"], 2)
        r["per_s"] = round(r["n"] / max(r["seconds"], 1e-9), 1)
    result["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    print(f"\n{result['machine'].get('gpu') or result['machine']['cpu']} — device "
          f"{args.device}{' (smoke sizes)' if args.smoke else ''}")
    print("| step | objects | seconds | objects/s |\n|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['step']} | {r['n']} | {r['seconds']} | {r['per_s']} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
