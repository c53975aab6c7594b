"""What a model sees of some store rows: features, probabilities and labels in one pass.

Evaluation, calibration, label-free scores and embeddings all need the same three arrays
for the same rows; `observe` streams the rows through the model once and keeps them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...store import CutoutStore
from ..matching import run_labels
from .streaming import check_compatible, stream_predictions


@dataclass
class Observed:
    """A model's view of some store rows: features, probabilities and labels (-1 unknown)."""

    rows: np.ndarray
    feats: np.ndarray
    probs: np.ndarray
    labels: np.ndarray

    def labelled(self) -> "Observed":
        keep = self.labels >= 0
        return Observed(self.rows[keep], self.feats[keep], self.probs[keep], self.labels[keep])


def subsample(rows: np.ndarray, max_n: int | None, seed: int = 0) -> np.ndarray:
    """At most `max_n` rows, drawn reproducibly and kept sorted for slab reads."""
    if max_n is None or len(rows) <= max_n:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, max_n, replace=False))


def observe(model, info: dict, store: CutoutStore, rows: np.ndarray,
            batch_size: int = 256, bands: list[int] | None = None) -> Observed:
    """Pass `bands` when the store was already checked, to log its band mapping once."""
    bands = check_compatible(info, store) if bands is None else bands
    feats, probs = [], []
    for _, p, f in stream_predictions(model, store, rows, bands, info["image_size"],
                                      batch_size, with_features=True):
        feats.append(f)
        probs.append(p)
    if not feats:
        k = info["num_classes"]
        return Observed(rows, np.zeros((0, 1), np.float32), np.zeros((0, k)),
                        np.zeros(0, np.int64))
    return Observed(rows, np.concatenate(feats), np.concatenate(probs).astype(np.float64),
                    run_labels(info["class_names"], store, rows))
