"""Frame ingest on a DES-sized compressed tile: the old per-object reads against frame-once.

    nice -n 10 .venv/bin/python tools/bench_frames.py [--side 4096] [--n 1200]
        [--old-n 150] [--rounds 3] [--baseline 8e841d7] [--json out.json]

Writes one synthetic DES DR1-like coadd tile, `DES0000+0000_r1p01_<band>.fits.fz` for g, r, i:
--side² float32 pixels at 0.263"/px with a TAN WCS, RICE tile-compressed in astropy's
default row tiles (as DES ships them), noise plus --n Gaussian galaxies at random positions,
and a catalog of those positions. Then, in --rounds interleaved rounds (the order alternates
from round to round, so machine load hits both alike), `astrotransfer ingest des` of the
--baseline commit (exported with `git archive`) on the first --old-n catalog rows (its cost
per object is constant, and the full catalog would take many minutes) and this tree's on
all --n rows, each under `/usr/bin/time -v` for its peak RSS. Rates are the commands' own
timing (their "ingested N objects (S s)" line); the speed-up reported is the median of the
rounds' ratios.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import add_round, emit_rounds, machine  # noqa: E402
from bench_ingest_images import export_baseline  # noqa: E402

TIME = Path("/usr/bin/time")
TILE = "DES0000+0000"


def write_tile(folder: Path, side: int, n: int, seed: int = 0) -> Path:
    """Three compressed band images of one tile and catalog.csv; returns the catalog."""
    from astropy.io import fits
    from astropy.wcs import WCS

    rng = np.random.default_rng(seed)
    scale = 0.263 / 3600
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [10.0, 0.0]
    wcs.wcs.crpix = [side / 2 + 0.5, side / 2 + 0.5]
    wcs.wcs.cd = [[-scale, 0], [0, scale]]
    margin = 80
    x = rng.uniform(margin, side - margin, n)
    y = rng.uniform(margin, side - margin, n)
    ra, dec = wcs.pixel_to_world_values(x, y)
    for b, band in enumerate("gri"):
        img = rng.normal(0, 3, (side, side)).astype(np.float32)
        for xi, yi, k in zip(x, y, range(n)):  # small Gaussian galaxies, stamped locally
            r = 2.0 + (k % 5)
            x0, y0 = int(xi), int(yi)
            yy, xx = np.mgrid[y0 - 15:y0 + 16, x0 - 15:x0 + 16]
            img[y0 - 15:y0 + 16, x0 - 15:x0 + 16] += 200 * (1 + b) * np.exp(
                -((xx - xi) ** 2 + (yy - yi) ** 2) / (2 * r * r))
        hdu = fits.CompImageHDU(img, header=wcs.to_header(), name="SCI",
                                compression_type="RICE_1")
        hdu.header["FILTER"] = band
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(folder / f"{TILE}_r1p01_{band}.fits.fz")
    lines = ["COADD_OBJECT_ID,RA,DEC,TILENAME"]
    lines += [f"{1000000 + i},{ra[i]:.7f},{dec[i]:.7f},{TILE}" for i in range(n)]
    catalog = folder / "catalog.csv"
    catalog.write_text("\n".join(lines) + "\n")
    return catalog


def ingest(pythonpath: Path | None, frames: Path, catalog: Path, out: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    cmd = [str(TIME), "-v", sys.executable, "-m", "astrotransfer", "ingest", "des",
           "--frames", str(frames), "--catalog", str(catalog), "--bands", "g,r,i",
           "--size", "64", "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out.parent)
    text = (proc.stdout + proc.stderr).replace("\n", " ")
    m = re.search(r"ingested (\d+) objects into .*?\(([\d.]+) s", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    if proc.returncode or not m or not rss:
        raise SystemExit(f"ingest failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    shutil.rmtree(out, ignore_errors=True)
    n, s = int(m.group(1)), float(m.group(2))
    return {"objects": n, "seconds": s, "objects_per_s": round(n / s, 2),
            "ms_per_object": round(1000 * s / n, 2),
            "peak_rss_mb": round(int(rss.group(1)) / 1024, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=4096)
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--old-n", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", default="8e841d7")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not TIME.exists():
        raise SystemExit(f"{TIME} is missing: install the Debian package `time`")
    result = {"benchmark": "des frame ingest, compressed tile", "machine": machine(),
              "tile": f"{args.side}x{args.side} x 3 bands, RICE_1 row tiles", "n": args.n,
              "old_n": args.old_n, "baseline": args.baseline, "rounds": []}
    with tempfile.TemporaryDirectory(prefix="bench-frames-") as tmp:
        tmp = Path(tmp)
        frames = tmp / "tile"
        frames.mkdir()
        catalog = write_tile(frames, args.side, args.n)
        result["tile_mb_on_disk"] = round(sum(f.stat().st_size for f in frames.glob("*.fz"))
                                          / 2**20, 1)
        old_cat = tmp / "old_catalog.csv"
        old_cat.write_text("\n".join(catalog.read_text().splitlines()[: args.old_n + 1]) + "\n")
        old_src = export_baseline(args.baseline, tmp / "baseline")
        for r in range(args.rounds):
            row: dict = {"load_avg_1m": round(os.getloadavg()[0], 2)}
            runs = {"old": (old_src, old_cat), "new": (None, catalog)}
            for name in (("old", "new") if r % 2 == 0 else ("new", "old")):
                src, cat = runs[name]
                row[name] = ingest(src, frames, cat, tmp / f"{name}{r}.zarr")
            row["speedup"] = round(row["new"]["objects_per_s"] / row["old"]["objects_per_s"], 2)
            add_round(result, row)
    emit_rounds(result, "speedup", "speedup", args.json)


if __name__ == "__main__":
    main()
