"""CPU inference precisions side by side: images/s of `predict` and GZ1 test accuracy.

    nice -n 10 .venv/bin/python tools/bench_inference.py --run RUN --store gz1_64.zarr
        [--rounds 3] [--threads 1] [--precisions fp32,bf16,onnx] [--json out.json]

For each precision (fp32 eager torch, the old default; bf16 autocast; the run exported to
ONNX and run by ONNX Runtime in fp32, the new default `auto`), round-robin in one
process so load hits them alike: the whole `predict_catalog` of every object of the store
(zarr reads, resize, forward, softmax, Parquet parts, merge), timed; then the accuracy of
those probabilities on the store's labelled test split, and the largest difference of any
probability from fp32. The store and run are only read.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import emit, machine  # noqa: E402


def catalog_probs(path: Path, class_names: list[str]):
    import pandas as pd

    df = pd.read_parquet(path)
    return df["object_id"].astype(str).to_numpy(), df[[f"p_{c}" for c in class_names]].to_numpy()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--precisions", default="fp32,bf16,onnx")
    ap.add_argument("--json")
    args = ap.parse_args()
    import numpy as np
    import torch

    import astrotransfer as at

    torch.set_num_threads(args.threads)
    store = at.open_store(args.store)
    run = at.load_run(args.run)
    names = run.info["class_names"]
    ids = np.asarray(store.column("object_id")).astype(object).astype(str)
    labels = dict(zip(ids, store.column("label")))
    test = set(ids[store.indices("test")])
    precisions = args.precisions.split(",")
    result = {"benchmark": "cpu inference precisions", "machine": machine(), "run": str(args.run),
              "store": str(args.store), "n": store.n, "threads": args.threads,
              "batch_size": args.batch_size, "rows": {p: {"images_per_s": []} for p in precisions}}
    probs = {}
    with tempfile.TemporaryDirectory(prefix="bench-inference-") as tmp:
        for r in range(args.rounds):
            for p in precisions:
                out = Path(tmp) / f"{p}_{r}.parquet"
                t0 = time.perf_counter()
                run.predict(args.store, out, "all", args.batch_size, precision=p)
                dt = time.perf_counter() - t0
                result["rows"][p]["images_per_s"].append(round(store.n / dt, 1))
                probs[p] = catalog_probs(out, names)
                print(p, r, round(store.n / dt, 1), file=sys.stderr)
    ref_ids, ref = probs[precisions[0]]
    for p in precisions:
        got_ids, got = probs[p]
        row = result["rows"][p]
        row["median_images_per_s"] = statistics.median(row["images_per_s"])
        row["speedup_vs_" + precisions[0]] = round(
            row["median_images_per_s"] / result["rows"][precisions[0]]["median_images_per_s"], 2)
        mask = np.array([i in test and labels[i] >= 0 for i in got_ids])
        y = np.array([labels[i] for i in got_ids[mask]])
        row["test_accuracy_pct"] = round(100 * float((got[mask].argmax(1) == y).mean()), 2)
        row["test_n"] = int(mask.sum())
        assert (got_ids == ref_ids).all()
        row["max_abs_prob_diff_vs_" + precisions[0]] = float(np.abs(got - ref).max())
    emit(result, args.json)


if __name__ == "__main__":
    main()
