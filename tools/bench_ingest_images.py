"""`ingest images` against its physical limit and against the old code, side by side.

    nice -n 10 .venv/bin/python tools/bench_ingest_images.py [--n 40000] [--rounds 3]
        [--old-n 1200] [--baseline 8e841d7] [--json out.json]

Measurements per round, interleaved in one run so machine load hits them alike (the order
of `new` and `bare` alternates from round to round), 423 px GZ1 SDSS JPEGs read in place,
crop 212, 64 px output:

- `bare`: the same number of processes as the ingest's decode workers doing nothing but
  `bare_decode` on each file (`multiprocessing.Pool.imap_unordered`): the very Pillow calls
  of the ingest's `stamp_decode.decode_resized` (open, draft, decode, crop+resize, the
  pixels as an array; tests/test_ingest_reference.py checks they give the same array), and
  no scaling, no store, no catalog: what decoding alone allows here;
- `new`: this tree's `astrotransfer ingest images`, default workers (one per core);
- `old`: `astrotransfer ingest images` of the --baseline commit (exported with `git archive`
  to a temporary folder and run from there) on the first --old-n rows, with torch's default
  threads (as users ran it) and again with OMP_NUM_THREADS=1 (`old_omp1`). Its cost per
  object is constant, and all --n rows would take many minutes.

GZ1 has 4,800 stamps; --n beyond that lists each file again under new ids (`<id>_<k>`,
symbolic links in a temporary folder, the pixels still read in place), so that each side
runs for 20 s or more and start-up costs (pool and worker start, store creation) weigh
little. Ingest rates are the command's own timing (its "ingested N objects (S s)" line:
catalog handling, worker start, decoding and committing, without the interpreter's
start-up); the bare loop is timed around the pool's work likewise (pool start included).
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import SHARED_DATA, add_round, emit_rounds, machine  # noqa: E402

CROP, SIZE = 212, 64
MAP = "0=elliptical,1=spiral,2=spiral,3=spiral"


def bare_decode(path: str, crop: int = CROP, size: int = SIZE) -> np.ndarray:
    """`stamp_decode.decode_resized`'s calls, written out (tools use the public API only)."""
    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
        left, top = (w - crop) // 2, (h - crop) // 2
        box = (left, top, left + crop, top + crop)
        if im.format == "JPEG" and crop >= 2 * size:
            im.draft(None, (math.ceil(w * size / crop), math.ceil(h * size / crop)))
            sx, sy = im.size[0] / w, im.size[1] / h
            box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        im.load()
        return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR, box=box))


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
               *extra: str, threads: str | None = None) -> dict:
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
    shutil.rmtree(out, ignore_errors=True)  # GBs at large --n
    n, s = int(m.group(1)), float(m.group(2))
    return {"objects": n, "seconds": s, "objects_per_s": round(n / s, 1)}


def stamp_farm(gz1: Path, n: int, into: Path) -> tuple[Path, Path, list[str]]:
    """(images folder, catalog, files): the first `n` GZ1 rows, listed again as `<id>_<k>`
    (symbolic links to the same files) once the 4,800 stamps run out."""
    rows = [ln for ln in (gz1 / "labels.csv").read_text().splitlines()[1:] if ln.strip()]
    rows = [r for r in rows if (gz1 / "images" / f"{r.split(',')[0]}.jpeg").exists()]
    if n <= len(rows):
        lines = rows[:n]
        images = gz1 / "images"
    else:
        images = into / "images"
        images.mkdir()
        lines = []
        for k in range(-(-n // len(rows))):
            for r in rows:
                oid, label = r.split(",", 1)
                new_id = f"{oid}_{k}"
                (images / f"{new_id}.jpeg").symlink_to(gz1 / "images" / f"{oid}.jpeg")
                lines.append(f"{new_id},{label}")
        lines = lines[:n]
    catalog = into / "labels.csv"
    catalog.write_text("objid,gz1_class\n" + "\n".join(lines) + "\n")
    files = [str(images / f"{ln.split(',')[0]}.jpeg") for ln in lines]
    return images, catalog, files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40000, help="catalog rows to ingest (new, bare)")
    ap.add_argument("--old-n", type=int, default=1200, help="catalog rows for the old code")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", default="8e841d7", help="commit of the old ingest")
    ap.add_argument("--no-old", action="store_true", help="skip the old code (ratio to bare only)")
    ap.add_argument("--gz1", type=Path, default=SHARED_DATA / "gz1_sdss")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not args.gz1.exists():
        raise SystemExit(f"{args.gz1} is absent: this benchmark needs the real GZ1 JPEGs")
    processes = len(os.sched_getaffinity(0))
    result = {"benchmark": "ingest images vs bare decode", "machine": machine(),
              "n_catalog_rows": args.n, "old_n": args.old_n, "crop": CROP, "size": SIZE,
              "processes": processes, "baseline": args.baseline, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-images-") as tmp:
        tmp = Path(tmp)
        images, catalog, files = stamp_farm(args.gz1, args.n, tmp)
        old_cat = tmp / "old_labels.csv"
        old_cat.write_text("\n".join(catalog.read_text().splitlines()[: args.old_n + 1]) + "\n")
        old_src = None if args.no_old else export_baseline(args.baseline, tmp / "baseline")
        for r in range(args.rounds):
            row: dict = {"load_avg_1m": round(os.getloadavg()[0], 2)}

            def new() -> None:
                row["new"] = ingest_cli(None, images, catalog, tmp / f"new{r}.zarr")

            def bare() -> None:
                s = bare_loop(files, processes)
                row["bare"] = {"objects": len(files), "seconds": round(s, 3),
                               "objects_per_s": round(len(files) / s, 1)}

            for step in ((bare, new) if r % 2 == 0 else (new, bare)):
                step()
            row["new_vs_bare"] = round(row["new"]["objects_per_s"] / row["bare"]["objects_per_s"], 3)
            if old_src is not None:
                row["old"] = ingest_cli(old_src, images, old_cat, tmp / f"old{r}.zarr")
                row["old_omp1"] = ingest_cli(old_src, images, old_cat, tmp / f"old1t{r}.zarr",
                                             threads="1")
                for k in ("old", "old_omp1"):
                    row[f"new_vs_{k}"] = round(row["new"]["objects_per_s"]
                                               / row[k]["objects_per_s"], 2)
            add_round(result, row)
    emit_rounds(result, "new_vs_bare", "median_new_vs_bare", args.json)


if __name__ == "__main__":
    main()
