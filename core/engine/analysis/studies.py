"""Ablation studies: which bands a classifier relies on, and how much of the stamp it needs.

The band study reuses one trained model: zeroing a band at test time is cheap and asks the
question a survey planner has ("what if this band is missing or bad?"). The crop study has
to retrain per size, since a network trained on 100 px stamps says little about 25 px ones;
it goes through the ordinary training engine so its runs are ordinary run directories.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch

from ...errors import UserError
from ...store import PER_OBJECT, CutoutStore
from ..inference.streaming import as_text, check_compatible, image_chunks, load_run_model, prefetch
from ..matching import run_labels
from ..runs import atomic_write_text

DEFAULT_CROPS = (25, 50, 100)


# --------------------------------------------------------------------------- bands
@torch.no_grad()
def band_study(run_path: Path, data: Path, split: str = "test", batch_size: int = 256) -> dict:
    """Accuracy with each model band set to zero in turn, against the untouched baseline.

    Zero is the sky level of the sky-subtracted stores ingest writes, so a zeroed band
    looks like a band with no signal, not like a saturated one. Each chunk is read once and
    run through the model once per band, so the study costs C+1 forward passes, no re-reads.
    """
    from .figures import plot_band_drops
    from .embedding import out_dir_for

    model, info, run = load_run_model(run_path)
    store = CutoutStore.open(data)
    bands = check_compatible(info, store)
    rows = store.labelled_indices(split, "the band study")
    labels = run_labels(info["class_names"], store, np.arange(store.n))
    names = list(info["bands"])
    correct = np.zeros(len(names) + 1, dtype=np.int64)
    for r, x, _ in prefetch(image_chunks(store, rows, bands, info["image_size"], batch_size)):
        y = torch.from_numpy(labels[r].astype(np.int64))
        for j in range(-1, len(names)):
            xx = x
            if j >= 0:
                xx = x.clone()
                xx[:, j] = 0.0
            correct[j + 1] += int((model(xx).argmax(1) == y).sum())
    acc = correct / len(rows)
    result = {"run_id": info["run_id"], "store": str(data), "split": split, "n": int(len(rows)),
              "baseline_accuracy": float(acc[0]),
              "accuracy": {b: float(a) for b, a in zip(names, acc[1:])},
              "drops": {b: float(acc[0] - a) for b, a in zip(names, acc[1:])}}
    out_dir = out_dir_for(run.path, "study", data, f"bands_{split}")
    result["png"] = str(plot_band_drops(result, out_dir / "band_drops.png"))
    atomic_write_text(out_dir / "band_study.json", json.dumps(result, indent=2))
    result["json"] = str(out_dir / "band_study.json")
    return result


# --------------------------------------------------------------------------- crops
def crop_store(src: Path, dst: Path, size: int) -> Path:
    """A copy of a store with every cutout centre-cropped to `size` px, chunk by chunk.

    A complete crop of the same source and size is reused, so a rerun study does not copy
    again; anything else at `dst` (a killed copy) is rebuilt.
    """
    store = CutoutStore.open(src)
    c, h, w = store.image_shape
    if min(h, w) < size:
        raise UserError(f"store {src} has {h}x{w}-px cutouts, smaller than the {size}-px "
                        f"crop; re-ingest with --size {size} or more, or leave {size} out "
                        f"of --sizes")
    origin = {"from": str(Path(src).resolve()), "size": size, "n": store.n}
    if dst.exists():
        try:
            old = CutoutStore.open(dst)
            if old.attrs.get("complete") and old.attrs.get("centre_crop") == origin:
                return dst
        except UserError:
            pass
        shutil.rmtree(dst)
    y0, x0 = (h - size) // 2, (w - size) // 2
    attrs = {k: v for k, v in store.attrs.items()
             if k not in ("n_committed", "n_skipped", "complete", "store_version")}
    attrs["centre_crop"] = origin
    # 8-bit codes are scaled over the whole stamp: a crop of them would rescale over the
    # crop, so the crop keeps the scaled float32 pixels instead
    dtype = "float32" if store.images.dtype == np.uint8 else str(store.images.dtype)
    out = CutoutStore.create(dst, attrs, (c, size, size), dtype=dtype)
    step = store.images.chunks[0]
    for start in range(0, store.n, step):
        stop = min(store.n, start + step)
        batch = {"images": store.read_images(slice(start, stop))[:, :, y0:y0 + size,
                                                                 x0:x0 + size]}
        for name in PER_OBJECT:
            values = np.asarray(store.group[name][start:stop])
            batch[name] = as_text(values) if values.dtype.kind in "OTU" else values
        out.commit(batch)
    out.group.attrs["complete"] = True
    return dst


def _scores(run_dir: Path, store: Path) -> dict | None:
    """Accuracy and macro F1 on a store's labelled test split (None without labels)."""
    from ..evaluation.evaluate import predict_split
    from ..evaluation.metrics import compute_metrics

    try:
        y, probs, info, _, _ = predict_split(run_dir, store, "test")
    except UserError:
        return None
    m = compute_metrics(y, probs, info["class_names"])
    return {"accuracy": m["accuracy"], "macro_f1": m["macro"]["f1"], "n": m["n"]}


def crop_study(source: Path, out: Path, target: Path | None = None,
               sizes: tuple[int, ...] = DEFAULT_CROPS, train_options: dict | None = None,
               progress=None) -> dict:
    """Train and test at each centre-crop size; results in `out/crop_study.json`.

    Every size gets `out/crop_<size>/` with its cropped stores and run directory; a size
    whose result.json exists with the same training options is reused, so a killed study
    continues where it stopped while a study with new options retrains.
    """
    from ...config import load_config
    from .figures import plot_crop_study
    from ..training.dispatch import train

    sizes = tuple(sorted(set(int(s) for s in sizes)))
    if not sizes or min(sizes) < 1:
        raise UserError(f"--sizes must be positive pixel sizes, got {sizes}")
    stores = [Path(source)] + ([Path(target)] if target else [])
    for p in stores:  # refuse before training anything
        h = min(CutoutStore.open(p).image_shape[1:])
        if h < max(sizes):
            raise UserError(f"store {p} has {h}-px cutouts, smaller than the {max(sizes)}-px "
                            f"crop; re-ingest with --size {max(sizes)} or more, or leave "
                            f"{max(sizes)} out of --sizes")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for size in sizes:
        folder = out / f"crop_{size}"
        done = folder / "result.json"
        if done.exists():  # same size and same training options: a finished result
            old = json.loads(done.read_text())
            if old.get("train_options") == (train_options or {}):
                results.append(old)
                continue
        folder.mkdir(exist_ok=True)
        src = crop_store(Path(source), folder / "source.zarr", size)
        tgt = crop_store(Path(target), folder / "target.zarr", size) if target else None
        run_dir = folder / "run"
        if run_dir.exists():  # a killed training: results are only trusted when complete
            shutil.rmtree(run_dir)
        opts = {**(train_options or {}), "source": str(src), "target": str(tgt) if tgt else None,
                "out": str(run_dir), "image_size": None}
        if progress:
            progress(f"crop {size} px: training {run_dir}")
        train(load_config(None, opts))
        res = {"crop": size, "run": str(run_dir), "train_options": train_options or {},
               "source_test": _scores(run_dir, src),
               "target_test": _scores(run_dir, tgt) if tgt else None}
        best = res["target_test"] or res["source_test"] or {}
        res.update(accuracy=best.get("accuracy"), macro_f1=best.get("macro_f1"))
        atomic_write_text(done, json.dumps(res, indent=2))
        results.append(res)
    on_target = bool(target) and all(r["target_test"] for r in results)
    summary = {"source": str(source), "target": str(target) if target else None,
               "sizes": list(sizes), "evaluated_on": "target test split" if on_target
               else "source test split", "results": results}
    for r in results:  # one series throughout, even if a target lacked labels somewhere
        pick = r["target_test"] if on_target else r["source_test"]
        r.update(accuracy=(pick or {}).get("accuracy"), macro_f1=(pick or {}).get("macro_f1"))
    summary["png"] = str(plot_crop_study(summary, out / "crop_study.png"))
    atomic_write_text(out / "crop_study.json", json.dumps(summary, indent=2))
    summary["json"] = str(out / "crop_study.json")
    return summary
