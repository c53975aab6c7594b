"""Section (c) of recipe.md: how far an ECE measured on a few hundred test objects can be trusted.

Why: the issue's bar is "ECE <= 0.05 after temperature scaling" on test splits of 190 (CEERS)
and 479 (GZ1) objects. With 15 confidence bins and so few objects, ECE is biased upwards and
noisy: even a perfectly calibrated model shows an ECE of a few points. So each small-data run
also reports
  * the bootstrap spread of its ECE after T (objects resampled with replacement), and
  * the sampling floor: the mean ECE of a model that IS calibrated, with the same
    confidences, when the labels are drawn from those confidences (same n, same bins).
A run whose ECE is inside its floor's range is as calibrated as the test split can show.
"""
from __future__ import annotations

import numpy as np


def ece_spread(probs: np.ndarray, labels: np.ndarray, temperature: float | None,
               n_boot: int = 1000, seed: int = 0) -> dict:
    """Bootstrap spread and sampling floor of the top-label ECE after temperature `temperature`.

    Args:
        probs: (N, K) predicted probabilities on the test split.
        labels: (N,) true classes (rows with label < 0 are dropped).
        temperature: the run's fitted T (None: 1).
        n_boot: resamples for the spread and label draws for the floor.
        seed: random seed, so the numbers are reproducible.
    Returns:
        ``{"ece": ..., "boot_std", "boot_p16", "boot_p84", "floor_mean", "floor_p84", "n"}``.
    Example:
        >>> p = np.tile([[0.8, 0.2]], (200, 1)); y = (np.arange(200) % 5 == 0).astype(int)
        >>> round(ece_spread(p, y, 1.0)["ece"], 3)
        0.0
    """
    from astrotransfer.engine.evaluation.calibration import log_probs
    from astrotransfer.engine.evaluation.metrics import (apply_temperature,
                                                         expected_calibration_error)

    keep = np.asarray(labels) >= 0
    y = np.asarray(labels)[keep].astype(int)
    p = np.asarray(probs, dtype=np.float64)[keep]
    p = p / p.sum(axis=1, keepdims=True)
    p = apply_temperature(log_probs(p), temperature or 1.0)
    rng = np.random.default_rng(seed)
    n = len(y)
    boot = [expected_calibration_error(y[i], p[i])
            for i in (rng.integers(0, n, n) for _ in range(n_boot))]
    # labels drawn from the predicted probabilities: a calibrated model by construction
    cum = p.cumsum(axis=1)
    floor = [expected_calibration_error((rng.random((n, 1)) > cum).sum(axis=1).clip(
        max=p.shape[1] - 1), p) for _ in range(n_boot)]
    return {"n": int(n), "ece": expected_calibration_error(y, p),
            "boot_std": float(np.std(boot)), "boot_p16": float(np.percentile(boot, 16)),
            "boot_p84": float(np.percentile(boot, 84)), "floor_mean": float(np.mean(floor)),
            "floor_p84": float(np.percentile(floor, 84))}
