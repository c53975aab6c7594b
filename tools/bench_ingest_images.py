"""`ingest images` against its physical limit and against the old code, side by side.

    nice -n 10 .venv/bin/python tools/bench_ingest_images.py [--n 2400] [--rounds 2]
        [--baseline 8e841d7] [--json out.json]

Three measurements per round, round-robin in one run so machine load hits them alike, on
the first --n GZ1 SDSS JPEGs read in place (423 px, crop 212, 64 px output):

- `old`: `astrotransfer ingest images` of the --baseline commit (exported with `git archive`
  to a temporary folder and run from there), one process as it always was, with torch's
  default threads (as users run it) and again with OMP_NUM_THREADS=1 (`old_omp1`: its
  torch resize is much faster single-threaded on a loaded 2-core machine);
- `new`: this tree's `astrotransfer ingest images`, default workers (one per core);
- `bare`: the same number of processes doing nothing but open → draft → decode → resize
  each file (`multiprocessing.Pool.imap_unordered`), no scaling, no store, no catalog:
  what decoding alone allows on this machine.

Ingest rates are the command's own timing (its "ingested N objects (S s)" line: catalog
reading, worker start, decoding and committing, without the interpreter's start-up); the bare
loop is timed around the pool's work likewise (pool start included).
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import emit, machine  # noqa: E402

CROP, SIZE = 212, 64
MAP = "0=elliptical,1=spiral,2=spiral,3=spiral"


def bare_decode(path: str) -> None:
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        left, top = (w - CROP) // 2, (h - CROP) // 2
        im.draft(None, (math.ceil(w * SIZE / CROP), math.ceil(h * SIZE / CROP)))
        s = im.size[0] / w
        im.load()
        im.resize((SIZE, SIZE), Image.Resampling.BILINEAR,
                  box=(left * s, top * s, (left + CROP) * s, (top + CROP) * s))


def bare_loop(files: list[str], processes: int) -> float:
    t0 = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for _ in pool.imap_unordered(bare_decode, files, chunksize=16):
            pass
    return time.perf_counter() - t0


def export_baseline(commit: str, into: Path) -> Path:
    """The baseline's source as an importable `astrotransfer` package under `into`, laid
    out as pyproject.toml maps it (core/ is the package, plugins/ and surveys/ its parts)."""
    src = into / "src"
    src.mkdir(parents=True)
    archive = into / "src.tar"
    subprocess.run(["git", "-C", str(ROOT), "archive", "-o", str(archive), commit],
                   check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(src, filter="data")
    pkg = into / "path" / "astrotransfer"
    shutil.copytree(src / "core", pkg)
    for part in ("plugins", "surveys"):
        shutil.copytree(src / part, pkg / part)
    return into / "path"


def ingest_cli(pythonpath: Path | None, images: Path, catalog: Path, out: Path,
               *extra: str, threads: str | None = None) -> tuple[int, float]:
    env = dict(os.environ)
    env.pop("OMP_NUM_THREADS", None)  # as a user runs it, unless `threads` says otherwise
    if threads:
        env["OMP_NUM_THREADS"] = threads
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [sys.executable, "-m", "astrotransfer", "ingest", "images", "--images", str(images),
           "--catalog", str(catalog), "--label-column", "gz1_class", "--label-map", MAP,
           "--drop-unmapped", "--crop", str(CROP), "--size", str(SIZE), "--out", str(out),
           *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out.parent)
    text = proc.stdout + proc.stderr
    m = re.search(r"ingested (\d+) objects into .*?\(([\d.]+) s", text.replace("\n", " "))
    if proc.returncode or not m:
        raise SystemExit(f"ingest failed ({proc.returncode}):\n{text[-2000:]}")
    return int(m.group(1)), float(m.group(2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2400, help="catalog rows (GZ1 files) to ingest")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--baseline", default="8e841d7", help="commit of the old ingest")
    ap.add_argument("--gz1", type=Path, default=ROOT.parent / "shared" / "data" / "gz1_sdss")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not args.gz1.exists():
        raise SystemExit(f"{args.gz1} is absent: this benchmark needs the real GZ1 JPEGs")
    processes = len(os.sched_getaffinity(0))
    result = {"benchmark": "ingest images vs bare decode", "machine": machine(),
              "n_catalog_rows": args.n, "crop": CROP, "size": SIZE, "processes": processes,
              "baseline": args.baseline, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-images-") as tmp:
        tmp = Path(tmp)
        lines = (args.gz1 / "labels.csv").read_text().splitlines()[: args.n + 1]
        catalog = tmp / "labels.csv"
        catalog.write_text("\n".join(lines) + "\n")
        ids = [ln.split(",")[0] for ln in lines[1:]]
        files = [str(args.gz1 / "images" / f"{i}.jpeg") for i in ids]
        files = [f for f in files if os.path.exists(f)]
        old_src = export_baseline(args.baseline, tmp / "baseline")
        for r in range(args.rounds):
            row = {}
            n, s = ingest_cli(old_src, args.gz1 / "images", catalog, tmp / f"old{r}.zarr")
            row["old"] = {"objects": n, "seconds": s, "objects_per_s": round(n / s, 1)}
            n, s = ingest_cli(old_src, args.gz1 / "images", catalog, tmp / f"old1t{r}.zarr",
                              threads="1")
            row["old_omp1"] = {"objects": n, "seconds": s, "objects_per_s": round(n / s, 1)}
            n, s = ingest_cli(None, args.gz1 / "images", catalog, tmp / f"new{r}.zarr")
            row["new"] = {"objects": n, "seconds": s, "objects_per_s": round(n / s, 1)}
            s = bare_loop(files, processes)
            row["bare"] = {"objects": len(files), "seconds": round(s, 3),
                           "objects_per_s": round(len(files) / s, 1)}
            row["new_vs_bare"] = round(row["new"]["objects_per_s"] / row["bare"]["objects_per_s"], 3)
            for k in ("old", "old_omp1"):
                row[f"new_vs_{k}"] = round(row["new"]["objects_per_s"] / row[k]["objects_per_s"], 2)
            result["rounds"].append(row)
            print(row, file=sys.stderr)
    emit(result, args.json)


if __name__ == "__main__":
    main()
