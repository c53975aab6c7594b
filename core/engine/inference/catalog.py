"""`predict` and `embed`: a trained run applied to a whole store, chunk by chunk."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ... import interrupt
from ...catalog import PartWriter
from ...errors import UserError
from ...progress import progress_bar
from ...store import CutoutStore, locked
from .streaming import (as_text, check_compatible, entropy, load_run_model, stream_chunks,
                    stream_predictions)


def predict_catalog(run_path: Path, data: Path, out: Path, split: str = "all",
                    batch_size: int = 256, overwrite: bool = False,
                    with_embedding: bool = False, rank: int = 0, world: int = 1,
                    merge_timeout: float = 3600.0, tta: int = 1,
                    precision: str | None = None, device: str | None = None) -> dict:
    """Predict every row of a split into a catalog.

    Memory is flat in the number of objects: a background thread reads each chunk's
    pixels and id/ra/dec slabs from zarr while the model runs on the previous chunk, and
    every chunk goes straight to its own part file. With `world > 1`, rank r predicts the
    chunks i with i % world == r into the shared `<out>.partial/` folder; rank 0 merges once
    every part exists. Parts are keyed by their global chunk index, so the merged catalog is
    identical to a single-process one, and a killed run continues after its last part.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}")
    dev = pick_device(device)
    model, info, run = load_run_model(run_path, dev, tta=tta, precision=precision)
    store = CutoutStore.open(data)
    bands = check_compatible(info, store)
    rows = store.indices(split)
    manifest = {"run_id": info["run_id"], "store": str(Path(data).resolve()), "split": split,
                "n": int(len(rows)), "batch_size": batch_size, "embedding": with_embedding,
                "tta": tta, "precision": model.inference_precision}
    writer = PartWriter(Path(out), manifest, overwrite=overwrite, shard=world > 1)
    stale_after = job = None
    if world > 1:  # rank 0 must notice a dead rank in bounded time, not wait for its parts
        import os

        from ..distributed.options import rank_timeout
        stale_after = rank_timeout()
        job = f"{os.environ.get('MASTER_ADDR', '')}:{os.environ.get('MASTER_PORT', '')}"
        writer.start_heartbeat(rank, every=min(2.0, stale_after / 5))
    try:
        n_chunks = (len(rows) + batch_size - 1) // batch_size
        done = writer.done_chunks()
        mine = [i for i in range(rank, n_chunks, world) if i not in done]
        names = np.asarray(info["class_names"])
        with progress_bar("predict", len(mine)) as advance, interrupt.deferred():
            todo = np.concatenate([rows[i * batch_size:(i + 1) * batch_size] for i in mine]) \
                if mine else rows[:0]
            chunks = stream_chunks(model, store, todo, bands, info["image_size"], batch_size,
                                   with_embedding, device=dev,
                                   extra=lambda r: _positions(store, r))
            for i, (r, probs, feats, cols) in zip(mine, chunks):
                cols.update({f"p_{c}": probs[:, k].astype(np.float32)
                             for k, c in enumerate(names)})
                cols["pred"] = names[probs.argmax(1)]
                cols["entropy"] = entropy(probs).astype(np.float32)
                if feats is not None:
                    cols.update({f"emb_{j}": feats[:, j] for j in range(feats.shape[1])})
                writer.write_chunk(i, cols)
                advance(1)
                interrupt.check(f"predict after {len(writer.done_chunks())} of {n_chunks} "
                                f"chunks", f"{writer.dir} keeps them: run the same command "
                                f"again to resume")
        if rank != 0:
            writer.mark_done(rank, job)
            return {"catalog": None, "n": int(len(rows)), "resumed_chunks": len(done)}
        writer.wait_for(n_chunks, merge_timeout, world, job, stale_after)
        path = writer.finish(n_chunks)
    finally:
        writer.close()
    return {"catalog": str(path), "n": int(len(rows)), "resumed_chunks": len(done)}


def _slab(arr, rows: np.ndarray) -> np.ndarray:
    """Values of a per-object zarr column at sorted `rows`: one slab read when dense."""
    lo, hi = int(rows[0]), int(rows[-1]) + 1
    if hi - lo <= 4 * len(rows):
        return np.asarray(arr[lo:hi])[rows - lo]
    return np.asarray(arr.get_orthogonal_selection((rows,)))


def _positions(store: CutoutStore, rows: np.ndarray) -> dict:
    """A chunk's id, ra and dec, read beside its pixels so no whole column sits in memory."""
    if len(rows) == 0:
        return {"object_id": np.array([], dtype=str), "ra": np.array([]), "dec": np.array([])}
    return {"object_id": as_text(_slab(store.group["object_id"], rows)),
            "ra": _slab(store.group["ra"], rows), "dec": _slab(store.group["dec"], rows)}


def embed_store(run_path: Path, data: Path, split: str = "all", batch_size: int = 256,
                tta: int = 1) -> dict:
    """Penultimate features (and probabilities) into the store under runs/<run_id>/;
    with `tta` > 1 the mean features over that many flips/rotations."""
    model, info, run = load_run_model(run_path, tta=tta)
    store = CutoutStore.open(data, mode="r+")
    with locked(store.path, "store"):  # the whole run: no ingest may change the rows read
        return _embed_locked(model, info, store, split, batch_size, tta)


def _embed_locked(model, info, store, split, batch_size, tta) -> dict:
    """embed_store's work under the store lock. A stop signal while streaming exits at once
    (nothing was written yet); the three arrays are then written as one deferred unit, so a
    stop never leaves rows without their embeddings."""
    bands = check_compatible(info, store)
    rows = store.indices(split)
    feats, probs = [], []
    with progress_bar("embed", len(rows)) as advance:
        for r, p, f in stream_predictions(model, store, rows, bands, info["image_size"],
                                          batch_size, with_features=True):
            feats.append(f)
            probs.append(p)
            advance(len(r))
    meta = {"run_id": info["run_id"], "split": split, "backbone": info["backbone"], "tta": tta}
    with interrupt.deferred():
        store.write_run_array(info["run_id"], "rows", rows.astype(np.int64), meta)
        store.write_run_array(info["run_id"], "embeddings", np.concatenate(feats), meta)
        store.write_run_array(info["run_id"], "probabilities", np.concatenate(probs),
                              {**meta, "class_names": json.dumps(info["class_names"])})
    return {"run_id": info["run_id"], "n": int(len(rows)), "dim": int(feats[0].shape[1])}


def pick_device(device: str | None):
    """torch.device for "cpu", "cuda", "cuda:N" or None/"auto" (a GPU when there is one)."""
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA GPU is visible; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {device} is not a device; use auto, cpu or cuda[:N]") from None
