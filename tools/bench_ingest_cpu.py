"""Where `ingest images` spends CPU, against the bare decode loop: CPU seconds, not wall.

    nice -n 10 .venv/bin/python tools/bench_ingest_cpu.py [--n 4800] [--rounds 3] [--json out.json]

Why a second benchmark: on a shared machine the wall-clock ratio of
tools/bench_ingest_images.py moves with whoever else runs (the ingest's committing main
process is a third runnable process against the bare loop's two). CPU seconds per object
are what the work costs, whatever the scheduler does: the bare loop's workers
(`RUSAGE_CHILDREN`) against the ingest's main process (`RUSAGE_SELF`, its zarr threads
included) plus its decode workers (`RUSAGE_CHILDREN`, reaped when the ingest ends), in
interleaved rounds. The ingest runs in this process through the public API
(`astrotransfer.ingest`: opening the catalog, decoding, committing; the plugins are imported
before the first round), so no start-up is counted; the bare loop is
`bench_ingest_images.bare_decode`, the ingest's own Pillow calls.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import numpy as np  # noqa: E402

import astrotransfer as at  # noqa: E402
from bench_common import SHARED_DATA, add_round, emit_rounds, machine  # noqa: E402
from bench_ingest_images import CROP, MAP, SIZE, bare_loop, stamp_farm  # noqa: E402


def cpu() -> tuple[float, float]:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


def codec_cost(store, n: int = 1024) -> float:
    """CPU ms per object of compressing stored cutouts as the store does (its own codec on
    its own pixel type, its chunks of objects): the main process's largest single cost."""
    import numcodecs

    images = np.asarray(store.images[: min(n, store.n)])  # as stored: uint8 codes or floats
    chunk = store.images.chunks[0]
    if images.dtype == np.uint8:  # the store's bit-shuffled LZ4
        codec = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.BITSHUFFLE)
    else:
        codec = numcodecs.Zstd(level=-1)
    t0 = time.process_time()
    for i in range(0, len(images), chunk):
        codec.encode(images[i:i + chunk].copy())
    return round(1000 * (time.process_time() - t0) / len(images), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4800)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--gz1", type=Path, default=SHARED_DATA / "gz1_sdss")
    ap.add_argument("--json")
    args = ap.parse_args()
    if not args.gz1.exists():
        raise SystemExit(f"{args.gz1} is absent: this benchmark needs the real GZ1 JPEGs")
    processes = len(os.sched_getaffinity(0))
    result = {"benchmark": "ingest images CPU vs bare decode CPU", "machine": machine(),
              "n_catalog_rows": args.n, "crop": CROP, "size": SIZE, "processes": processes,
              "rounds": []}
    at.list_plugins("survey")  # the plugin imports, once, before any round is timed
    with tempfile.TemporaryDirectory(prefix="bench-ingest-cpu-") as tmp:
        tmp = Path(tmp)
        images, catalog, files = stamp_farm(args.gz1, args.n, tmp)
        for r in range(args.rounds):
            row: dict = {"load_avg_1m": round(os.getloadavg()[0], 2)}

            def bare() -> None:
                c0 = cpu()
                s = bare_loop(files, processes)
                c1 = cpu()
                row["bare"] = {"objects": len(files), "seconds": round(s, 2),
                               "cpu_ms_per_object": round(1000 * (c1[1] - c0[1]) / len(files), 3)}

            def new() -> None:
                out = tmp / f"new{r}.zarr"
                c0, t0 = cpu(), time.perf_counter()
                store = at.ingest("images", out, images=images, catalog=catalog,
                                  label_column="gz1_class", label_map=MAP, drop_unmapped=True,
                                  crop=CROP, size=SIZE)
                c1, n = cpu(), store.n
                row["new"] = {"objects": n, "seconds": round(time.perf_counter() - t0, 2),
                              "main_cpu_ms_per_object": round(1000 * (c1[0] - c0[0]) / n, 3),
                              "workers_cpu_ms_per_object": round(1000 * (c1[1] - c0[1]) / n, 3),
                              "codec_cpu_ms_per_object": codec_cost(store),
                              "stored_dtype": str(store.images.dtype)}
                shutil.rmtree(out)

            for step in ((bare, new) if r % 2 == 0 else (new, bare)):
                step()
            total = row["new"]["main_cpu_ms_per_object"] + row["new"]["workers_cpu_ms_per_object"]
            row["new"]["cpu_ms_per_object"] = round(total, 3)
            row["bare_cpu_share"] = round(row["bare"]["cpu_ms_per_object"] / total, 3)
            add_round(result, row)
    emit_rounds(result, "bare_cpu_share", "median_bare_cpu_share", args.json)


if __name__ == "__main__":
    main()
