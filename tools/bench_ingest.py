"""Ingest and read throughput in objects/s: simulated surveys and real GZ1 SDSS JPEGs.

    .venv/bin/python tools/bench_ingest.py [--n-sim 1000] [--n-gz1 600] [--json out.json]

The GZ1 images are read in place from ../shared/data/gz1_sdss (a catalog of the first
--n-gz1 rows is written to a temporary folder; the images are not copied), twice: into the
default store (their 8-bit pixels, uint8) and into a float32 one, with each store's disk
per object. After the ingests, the sim SDSS store and both GZ1 stores are read back in
shuffled batches with `read_images`, to show what the read path delivers.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import SHARED_DATA, emit, machine, timed  # noqa: E402


def ingest_sim(out: Path, instrument: str, n: int, size: int) -> dict:
    import astrotransfer as at

    row = {"what": f"sim {instrument}", "n": n, "size": size}
    with timed(row):
        at.ingest("sim", out, instrument=instrument, n=n, seed=0, size=size)
    row["objects_per_s"] = round(n / row["seconds"], 1)
    return row


def ingest_gz1(out: Path, data: Path, n: int, tmp: Path, dtype: str = "auto") -> dict:
    import astrotransfer as at

    lines = (data / "labels.csv").read_text().splitlines()
    catalog = tmp / "labels.csv"
    catalog.write_text("\n".join(lines[:n + 1]) + "\n")
    row = {"what": f"gz1 sdss jpeg (423 px, crop 212, size 96, dtype {dtype})", "n": n}
    with timed(row):
        store = at.ingest(
            "images", out, images=data / "images", catalog=catalog, id_column="objid",
            label_column="gz1_class", label_map="0=elliptical,1=spiral,2=spiral,3=spiral",
            drop_unmapped=True, crop=212, size=96, survey_name="sdss-gz1", dtype=dtype)
    summary = store.summary
    row["stored_dtype"] = str(store.images.dtype)
    row["disk_kb_per_object"] = round(sum(
        f.stat().st_size for f in (out / "images").rglob("*") if f.is_file())
        / 1024 / summary.n_ingested, 1)
    row["stored"], row["skipped"] = summary.n_ingested, summary.n_skipped
    row["objects_per_s"] = round(n / row["seconds"], 1)
    return row


def read_back(store: Path, passes: int, batch_size: int = 64) -> dict:
    """`passes` reads of every object in shuffled batches (each batch sorted, as the
    engine reads them)."""
    import numpy as np

    import astrotransfer as at

    opened = at.open_store(store)
    row = {"what": f"read_images of {store.stem}, shuffled batches of {batch_size}, "
                   f"{passes} passes", "n": 0}
    with timed(row):
        for epoch in range(passes):
            order = np.random.default_rng(epoch).permutation(opened.n)
            for i in range(0, opened.n, batch_size):
                row["n"] += len(opened.read_images(np.sort(order[i:i + batch_size])))
    row["objects_per_s"] = round(row["n"] / row["seconds"], 1)
    return row


def read_sequential(store: Path, passes: int, block: int = 1024) -> dict:
    """`passes` reads of the whole store in row order, `block` rows at a time (what
    `predict` and `load_tensors` do)."""
    import astrotransfer as at

    opened = at.open_store(store)
    row = {"what": f"read_images of {store.stem}, in order, blocks of {block}, {passes} passes",
           "n": 0}
    with timed(row):
        for _ in range(passes):
            for i in range(0, opened.n, block):
                row["n"] += len(opened.read_images(slice(i, min(opened.n, i + block))))
    row["objects_per_s"] = round(row["n"] / row["seconds"], 1)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-sim", type=int, default=1000)
    ap.add_argument("--sim-size", type=int, default=64)
    ap.add_argument("--n-gz1", type=int, default=600)
    ap.add_argument("--gz1", type=Path, default=SHARED_DATA / "gz1_sdss")
    ap.add_argument("--passes", type=int, default=5, help="read passes over the sim store")
    ap.add_argument("--json")
    args = ap.parse_args()
    result = {"benchmark": "ingest", "machine": machine(), "rows": []}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        tmp = Path(tmp)
        for instrument in ("sdss", "des"):
            result["rows"].append(ingest_sim(tmp / f"{instrument}.zarr", instrument,
                                             args.n_sim, args.sim_size))
        gz1_stores = []
        if args.gz1.exists():  # the default (8-bit JPEG pixels: a uint8 store) and float32
            for dtype in ("auto", "float32"):
                out = tmp / f"gz1_{dtype}.zarr"
                result["rows"].append(ingest_gz1(out, args.gz1, args.n_gz1, tmp, dtype))
                gz1_stores.append(out)
        else:
            result["note"] = f"{args.gz1} is absent: GZ1 rows skipped"
        for store in (tmp / "sdss.zarr", *gz1_stores):
            result["rows"].append(read_back(store, args.passes))
            result["rows"].append(read_sequential(store, args.passes))
    emit(result, args.json)


if __name__ == "__main__":
    main()
