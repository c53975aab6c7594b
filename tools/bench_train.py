"""Training throughput (source images/s) per adaptation method, and the deepspeed trainer's
overhead over the standard one, measured side by side in one run.

    .venv/bin/python tools/bench_train.py [--n 600] [--backbone tf_efficientnet_lite0]
                                          [--epochs 3] [--json out.json]

Each configuration trains on the same simulated SDSS -> DES pair; the configurations run
round-robin (--repeats rounds, median reported), so a change in machine load hits all of
them alike. One torch thread by default: on a shared machine, multi-threaded kernels stall
whenever another process takes a core, and the numbers stop meaning anything. Speed
is taken from the epochs after the first (the first pays for allocator and thread warm-up).
Adapters also push a target batch through the backbone, so their cost per source image is
about twice fine-tuning's; DANN adds its discriminator.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import emit, machine, n_labelled, sim_store  # noqa: E402

CONFIGS = [("finetune", "standard"), ("finetune", "deepspeed"), ("mmd", "standard"),
           ("coral", "standard"), ("dann", "standard"), ("mmd", "deepspeed")]


def run_one(src: Path, tgt: Path, out: Path, adapt: str, trainer: str, args) -> dict:
    import astrotransfer as at

    shutil.rmtree(out, ignore_errors=True)
    at.train(source=src, target=tgt, out=out, adapt=adapt, trainer=trainer,
             backbone=args.backbone, pretrained="none", epochs=args.epochs,
             batch_size=args.batch_size, seed=0)
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    info = json.loads((out / "run.json").read_text())
    n_train = n_labelled(src)
    timed = recs[1:] or recs
    seconds = sum(r["seconds"] for r in timed)
    return {"adapt": adapt, "trainer": trainer, "n_train": n_train, "epochs_timed": len(timed),
            "seconds": round(seconds, 2), "images_per_s": round(n_train * len(timed) / seconds, 1),
            "backbone": info["backbone"], "image_size": info["image_size"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=600, help="objects per simulated survey")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 keeps numbers stable on a shared machine")
    ap.add_argument("--json")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    torch.set_num_threads(args.threads)

    result = {"benchmark": "train", "machine": machine(), "args": vars(args), "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        tmp = Path(tmp)
        src = sim_store(tmp / "sdss.zarr", "sdss", n=args.n, size=args.size)
        tgt = sim_store(tmp / "des.zarr", "des", n=args.n, size=args.size, seed=1)
        for _ in range(args.repeats):
            for adapt, trainer in CONFIGS:
                result["rows"].append(run_one(src, tgt, tmp / "run", adapt, trainer, args))
    result["summary"] = summarise(result["rows"])
    emit(result, args.json)


def summarise(rows: list[dict]) -> list[dict]:
    """Median images/s per configuration, and its ratio to standard fine-tuning."""
    import statistics

    out = []
    for adapt, trainer in CONFIGS:
        speeds = [r["images_per_s"] for r in rows if (r["adapt"], r["trainer"]) == (adapt, trainer)]
        out.append({"adapt": adapt, "trainer": trainer, "images_per_s_median":
                    round(statistics.median(speeds), 1), "runs": speeds})
    base = out[0]["images_per_s_median"]
    for row in out:
        row["relative_to_finetune_standard"] = round(row["images_per_s_median"] / base, 3)
    return out


if __name__ == "__main__":
    main()
