"""`predict` and `embed`: a trained run applied to a whole store, chunk by chunk."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..catalog import PartWriter
from ..progress import progress_bar
from ..store import CutoutStore, locked
from .infer import check_compatible, entropy, load_run_model, stream_predictions


def predict_catalog(run_path: Path, data: Path, out: Path, split: str = "all",
                    batch_size: int = 256, overwrite: bool = False,
                    with_embedding: bool = False) -> dict:
    model, info, run = load_run_model(run_path)
    store = CutoutStore.open(data)
    bands = check_compatible(info, store)
    rows = store.indices(split)
    manifest = {"run_id": info["run_id"], "store": str(Path(data).resolve()), "split": split,
                "n": int(len(rows)), "batch_size": batch_size, "embedding": with_embedding}
    writer = PartWriter(Path(out), manifest, overwrite=overwrite)
    try:
        n_chunks = (len(rows) + batch_size - 1) // batch_size
        start = writer.done_chunks()
        ids, ra, dec = store.column("object_id"), store.column("ra"), store.column("dec")
        names = info["class_names"]
        with progress_bar("predict", n_chunks) as advance:
            advance(start)
            chunks = stream_predictions(model, store, rows[start * batch_size:], bands,
                                        info["image_size"], batch_size, with_embedding)
            for i, (r, probs, feats) in enumerate(chunks, start=start):
                cols = {"object_id": ids[r].astype(str), "ra": ra[r], "dec": dec[r]}
                cols.update({f"p_{c}": probs[:, k].astype(np.float32) for k, c in enumerate(names)})
                cols["pred"] = np.asarray(names)[probs.argmax(1)]
                cols["entropy"] = entropy(probs).astype(np.float32)
                if feats is not None:
                    cols.update({f"emb_{j}": feats[:, j] for j in range(feats.shape[1])})
                writer.write_chunk(i, cols)
                advance(1)
        path = writer.finish(n_chunks)
    finally:
        writer.close()
    return {"catalog": str(path), "n": int(len(rows)), "resumed_chunks": start}


def embed_store(run_path: Path, data: Path, split: str = "all", batch_size: int = 256) -> dict:
    """Penultimate features (and probabilities) into the store under runs/<run_id>/."""
    model, info, run = load_run_model(run_path)
    store = CutoutStore.open(data, mode="r+")
    bands = check_compatible(info, store)
    rows = store.indices(split)
    feats, probs = [], []
    with progress_bar("embed", len(rows)) as advance:
        for r, p, f in stream_predictions(model, store, rows, bands, info["image_size"],
                                          batch_size, with_features=True):
            feats.append(f)
            probs.append(p)
            advance(len(r))
    meta = {"run_id": info["run_id"], "split": split, "backbone": info["backbone"]}
    with locked(store.path, "store"):
        store.write_run_array(info["run_id"], "rows", rows.astype(np.int64), meta)
        store.write_run_array(info["run_id"], "embeddings", np.concatenate(feats), meta)
        store.write_run_array(info["run_id"], "probabilities", np.concatenate(probs),
                              {**meta, "class_names": json.dumps(info["class_names"])})
    return {"run_id": info["run_id"], "n": int(len(rows)), "dim": int(feats[0].shape[1])}
