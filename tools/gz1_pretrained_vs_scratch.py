"""Real GZ1 (elliptical vs spiral) at 96 px: ImageNet-pretrained vs scratch, equal budget.

Usage: python tools/gz1_pretrained_vs_scratch.py [--epochs 3] [--out /tmp/gz1_cmp]
Reads ../shared/data/gz1_sdss in place; prints and writes a small JSON/Markdown table.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import SHARED_DATA  # noqa: E402
GZ1 = SHARED_DATA / "gz1_sdss"


def cli(*args) -> None:
    subprocess.run([sys.executable, "-m", "astrotransfer.cli", *map(str, args)], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("/tmp/gz1_cmp"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "gz1_96.zarr"
    if not store.exists():
        cli("ingest", "images", "--images", GZ1 / "images", "--catalog", GZ1 / "labels.csv",
            "--id-column", "objid", "--label-column", "gz1_class",
            "--label-map", "0=elliptical,1=spiral,2=spiral,3=spiral", "--drop-unmapped",
            "--crop", 212, "--size", 96, "--survey-name", "sdss-gz1", "--out", store)
    results = {}
    for pretrained in ("auto", "none"):
        run = args.out / f"run_{pretrained}_{args.epochs}ep"
        t0 = time.perf_counter()
        if not (run / "best.pt").exists():
            cli("train", "--source", store, "--out", run, "--pretrained", pretrained,
                "--epochs", args.epochs, "--image-size", 96, "--batch-size", 32, "--seed", 0)
        minutes = (time.perf_counter() - t0) / 60
        cli("evaluate", run, "--data", store, "--split", "test")
        m = json.loads((run / "metrics.json").read_text())
        results[pretrained] = {"accuracy": m["accuracy"], "n_test": m["n"],
                               "recall": m["recall"], "train_minutes": round(minutes, 1)}
    (args.out / "gz1_pretrained_vs_scratch.json").write_text(json.dumps(results, indent=2))
    for k, v in results.items():
        print(f"{'pretrained' if k == 'auto' else 'scratch':>10}: test acc {v['accuracy']:.3f} "
              f"(n={v['n_test']}), recall {v['recall']}, train {v['train_minutes']} min")


if __name__ == "__main__":
    main()
