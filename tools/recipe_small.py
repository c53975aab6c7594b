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


def top_label_ece(y: np.ndarray, p: np.ndarray, n_bins: int = 15) -> float:
    """Guo et al.'s top-label ECE over equal-width (lo, hi] confidence bins: the definition
    `evaluate` reports (tools use the public API only, so it is restated here; the test
    tests/test_small_data_lpft.py checks that both agree)."""
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    gap = np.abs(np.bincount(idx, weights=correct, minlength=n_bins)
                 - np.bincount(idx, weights=conf, minlength=n_bins))
    return float(gap.sum() / max(1, counts.sum()))


def at_temperature(probs: np.ndarray, temperature: float | None) -> np.ndarray:
    """Probabilities after dividing the log-probabilities (logits up to a per-row constant)
    by T, as `evaluate`'s temperature scaling does."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)) / (temperature or 1.0)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


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
    keep = np.asarray(labels) >= 0
    y = np.asarray(labels)[keep].astype(int)
    p = np.asarray(probs, dtype=np.float64)[keep]
    p = at_temperature(p / p.sum(axis=1, keepdims=True), temperature)
    rng = np.random.default_rng(seed)
    n = len(y)
    boot = [top_label_ece(y[i], p[i])
            for i in (rng.integers(0, n, n) for _ in range(n_boot))]
    # labels drawn from the predicted probabilities: a calibrated model by construction
    cum = p.cumsum(axis=1)
    floor = [top_label_ece((rng.random((n, 1)) > cum).sum(axis=1).clip(
        max=p.shape[1] - 1), p) for _ in range(n_boot)]
    return {"n": int(n), "ece": top_label_ece(y, p),
            "boot_std": float(np.std(boot)), "boot_p16": float(np.percentile(boot, 16)),
            "boot_p84": float(np.percentile(boot, 84)), "floor_mean": float(np.mean(floor)),
            "floor_p84": float(np.percentile(floor, 84))}


def unseen_rows(full_store, subset_store, rows: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which of `rows` (of the full store) a small-data run never saw: labelled, not in the
    validation split (the temperature is fitted there), not among the subset's objects.

    Why: the fixed test split has 479 (GZ1) or 377 (CEERS) objects, too few to resolve an
    ECE of 0.05 or an accuracy difference of a point; the rest of the full store's train
    split, minus the few hundred objects the run trained and validated on, is just as
    untouched by the run and 8-9x larger.

    Args:
        full_store, subset_store: the opened stores (`astrotransfer.open_store`).
        rows: row numbers of the full store; labels: their labels (-1 unknown).
    Returns:
        boolean mask over `rows`.
    Example:
        >>> keep = unseen_rows(full, small, seen["rows"], seen["labels"])   # doctest: +SKIP
    """
    used = set(map(str, subset_store.column("object_id")))
    ids = full_store.column("object_id")[rows].tolist()  # zarr's strings: plain str here
    split = full_store.column("split")[rows].tolist()
    fresh = np.array([str(i) not in used and s != "val" for i, s in zip(ids, split)], bool)
    return (np.asarray(labels) >= 0) & fresh


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean per-class recall over the classes present in `y` (scikit-learn's definition)."""
    return float(np.mean([(pred[y == k] == k).mean() for k in np.unique(y)]))


def paired_difference(pred_a: np.ndarray, pred_b: np.ndarray, y: np.ndarray,
                      n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy and balanced accuracy of method A minus method B on the same objects, with
    95 % intervals from two bootstraps: objects resampled (the same resample for both
    methods, each method's seeds kept), and objects and seeds resampled.

    Why both: the first says whether these particular runs differ beyond the luck of which
    objects were scored; the second whether the *methods* do, counting that another seed
    would have given another run (with 3 seeds a crude but honest allowance: seed-to-seed
    spread is often larger than the difference between methods).

    Args:
        pred_a, pred_b: (seeds, N) predicted classes of each method's runs; every seed's
            score is computed and the seeds averaged, per resample.
        y: (N,) true classes.
        n_boot: resamples; seed: their random seed.
    Returns:
        ``{"n", "accuracy": [diff, lo, hi], "balanced": [diff, lo, hi],
        "accuracy_seeds": [diff, lo, hi], "balanced_seeds": [diff, lo, hi]}``.
    Example:
        >>> y = np.array([0, 1] * 50); a = np.stack([y]); b = np.stack([1 - y])
        >>> paired_difference(a, b, y, n_boot=10)["accuracy"][0]
        1.0
    """
    pred_a, pred_b, y = np.atleast_2d(pred_a), np.atleast_2d(pred_b), np.asarray(y)

    def scores(idx: np.ndarray, sa: np.ndarray, sb: np.ndarray) -> tuple[float, float]:
        acc = np.mean([(pred_a[i, idx] == y[idx]).mean() for i in sa]) - \
            np.mean([(pred_b[i, idx] == y[idx]).mean() for i in sb])
        bal = np.mean([balanced_accuracy(y[idx], pred_a[i, idx]) for i in sa]) - \
            np.mean([balanced_accuracy(y[idx], pred_b[i, idx]) for i in sb])
        return float(acc), float(bal)

    rng = np.random.default_rng(seed)
    n, all_a, all_b = len(y), np.arange(len(pred_a)), np.arange(len(pred_b))
    point = scores(np.arange(n), all_a, all_b)
    objects = np.array([scores(rng.integers(0, n, n), all_a, all_b) for _ in range(n_boot)])
    both = np.array([scores(rng.integers(0, n, n), rng.choice(all_a, len(all_a)),
                            rng.choice(all_b, len(all_b))) for _ in range(n_boot)])
    out = {"n": int(n)}
    for key, boot in (("", objects), ("_seeds", both)):
        lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
        out["accuracy" + key] = [point[0], float(lo[0]), float(hi[0])]
        out["balanced" + key] = [point[1], float(lo[1]), float(hi[1])]
    return out
