"""Peak memory of `predict` against catalog size: it must not grow with the number of objects.

Usage: python tools/predict_memory.py [--sizes 1000,100000] [--format fits] [--image-size 32]

Runs `astrotransfer predict` under `/usr/bin/time -v` (Debian package `time`) on stores of
each size and reports the peak resident set size. Pass: the largest store's peak is within
10% of the smallest's.

Rendering 100k GalSim stamps takes long, and memory behaviour does not depend on pixel
content, so the stores are written straight through CutoutStore.create/commit from a bank
of 64 real sim renders, each copy randomly rotated, flipped and re-noised: valid images
at the scale of a real run, not a real survey. The model is the untrained tiny
`test_efficientnet` (weights do not change memory either).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_predict import make_run  # noqa: E402

TIME = Path("/usr/bin/time")


def synthetic_store(path: Path, n: int, size: int, seed: int = 0) -> Path:
    """n objects of 3-band sim galaxies, written in batches (never all in memory)."""
    import astrotransfer as at
    from astrotransfer import CutoutStore

    if path.exists() and CutoutStore.open(path).attrs.get("complete"):
        return path
    shutil.rmtree(path, ignore_errors=True)
    seed_store = path.with_name(f"{path.stem}_bank.zarr")
    shutil.rmtree(seed_store, ignore_errors=True)
    sim = at.ingest("sim", seed_store, instrument="sdss", n=64, seed=seed, size=size)
    bank = sim.read_images(np.arange(sim.n))
    labels = sim.column("label").astype(np.int32)
    attrs = {"survey": "synthetic-memory-test", "bands": sim.bands, "pixel_scale": 0.396,
             "class_names": sim.class_names, "normalization": "asinh (sim bank)",
             "provenance": {"note": "64 sim renders, rotated/flipped/re-noised copies"}}
    store = CutoutStore.create(path, attrs, (3, size, size))
    rng = np.random.default_rng(seed)
    step = 4096
    for start in range(0, n, step):
        k = min(step, n - start)
        pick = rng.integers(0, len(bank), k)
        imgs = np.rot90(bank[pick], k=int(rng.integers(4)), axes=(2, 3))
        if rng.random() < 0.5:
            imgs = imgs[..., ::-1]
        imgs = imgs + rng.normal(0, 0.01, imgs.shape).astype(np.float32)
        ids = np.array([f"mem{i:08d}" for i in range(start, start + k)])
        store.commit({"images": imgs, "object_id": ids,
                      "ra": 150 + rng.random(k), "dec": 2 + rng.random(k),
                      "label": labels[pick], "flags": np.zeros(k, np.int32),
                      "split": rng.choice(["train", "val", "test"], k, p=[0.8, 0.1, 0.1])})
    store.group.attrs["complete"] = True
    return path


def peak_rss_mb(cmd: list[str], env: dict) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a command, from GNU time's -v report."""
    proc = subprocess.run([str(TIME), "-v", *cmd], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", proc.stderr)
    h, m, s = (float(g) if g else 0.0 for g in wall.groups())
    return int(rss.group(1)) / 1024, h * 3600 + m * 60 + s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="1000,100000")
    ap.add_argument("--format", default="fits", choices=("fits", "parquet", "csv"))
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "at_memory")
    args = ap.parse_args()
    if not TIME.exists():
        raise SystemExit(f"{TIME} is missing: install the Debian package `time` "
                         f"(apt-get install time)")
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    print("stores: synthetic (64 GalSim sim renders, copied with random rot90/flip/noise "
          "through CutoutStore.create/commit; pixel content does not affect memory)")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    base, _ = peak_rss_mb([sys.executable, "-c", "import torch, timm, zarr, pyarrow, astropy.io."
                           "fits, astrotransfer.cli, astrotransfer.engine.inference.catalog"], env)
    print(f"  baseline (imports only): peak RSS {base:7.1f} MB")
    results = []
    run = None
    for n in sizes:
        store = synthetic_store(args.work / f"mem_{n}_{args.image_size}.zarr", n,
                                args.image_size)
        if run is None:
            run = make_run(args.work / "run_tiny", args.work, args.image_size,
                           "test_efficientnet")
        out = args.work / f"cat_{n}.{args.format}"
        out.unlink(missing_ok=True)
        cmd = [sys.executable, "-m", "astrotransfer.cli", "predict", str(run), "--data",
               str(store), "--out", str(out), "--batch-size", str(args.batch_size)]
        rss, wall = peak_rss_mb(cmd, env)
        results.append({"n": n, "peak_rss_mb": round(rss, 1), "above_imports_mb": round(
            rss - base, 1), "seconds": wall, "catalog_mb": round(out.stat().st_size / 2**20, 1)})
        print(f"  {n:>8} objects: peak RSS {rss:7.1f} MB ({rss - base:+.1f} MB over the "
              f"imports), {wall:6.1f} s, catalog {results[-1]['catalog_mb']} MB")
    growth = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"] - 1
    verdict = "PASS" if growth <= 0.10 else "FAIL"
    print(f"peak RSS growth {results[0]['n']} -> {results[-1]['n']} objects: {growth:+.1%} "
          f"({verdict}: must stay within 10%)")
    (args.work / "predict_memory.json").write_text(json.dumps(
        {"format": args.format, "batch_size": args.batch_size, "imports_rss_mb": base,
         "results": results,
         "growth": growth, "verdict": verdict}, indent=2))
    if verdict == "FAIL":
        sys.exit(1)


if __name__ == "__main__":
    main()
