"""How many labels does a classifier confidently contradict? (confident learning)

Why: survey labels are votes. Galaxy Zoo's plurality answer is wrong for some galaxies, and
no classifier can score above the agreement of its labels with the truth. Before a user
tunes for the last points of accuracy, they should know how much of the error is labels the
model contradicts with confidence, and how much is objects it is simply unsure about.

Confident learning (Northcutt, Jiang & Chuang 2021, JAIR 70) counts, from out-of-sample
probabilities, the objects whose probability of another class reaches that class's own
typical confidence (its threshold: the mean probability the model gives the class on
objects labelled with it). The counts, rescaled to the label totals, estimate the joint
distribution of given and true labels; its off-diagonal mass is the estimated label-error
rate. Objects below every threshold are left uncounted: they are the ambiguous ones, and
their share is reported beside the estimate, because on real survey images it is usually
the larger part of the error.

The probabilities must come from objects the model never trained on (a held-out split, or
cross-validation); on training objects the model has learnt the noisy labels back.
"""
from __future__ import annotations

import numpy as np

__all__ = ["confident_joint", "label_errors_block"]


def confident_joint(labels, probs) -> dict:
    """Estimate the label-error rate of `labels` from out-of-sample `probs`.

    Args:
        labels: (N,) integer class of each object as given (the possibly noisy label).
        probs: (N, K) class probabilities from a model that never trained on these objects.

    Returns:
        ``{"n", "thresholds" (K,), "counts" (K, K) confident counts [given, true],
        "joint" (K, K) estimated joint of given and true labels (sums to 1),
        "error_rate": off-diagonal mass of the joint, "ambiguous": share of objects below
        every class threshold, "issues": indices of the counted objects whose confident
        class differs from their label, most confident first, "issue_classes": their
        confident classes}``.

    Example:
        >>> y = np.array([0, 0, 0, 1, 1, 1])
        >>> p = np.array([[.9, .1], [.8, .2], [.1, .9], [.2, .8], [.1, .9], [.3, .7]])
        >>> out = confident_joint(y, p)
        >>> out["issues"].tolist(), round(out["error_rate"], 3)
        ([2], 0.167)
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y) or len(y) == 0:
        raise ValueError(f"labels {y.shape} and probs {p.shape} must be (N,) and (N, K), N > 0")
    k = p.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must lie in 0..{k - 1}; drop unlabelled objects first")
    given = np.bincount(y, minlength=k)
    thresholds = np.array([p[y == j, j].mean() if given[j] else np.inf for j in range(k)])
    above = p >= thresholds
    counted = above.any(axis=1)
    confident = np.where(above, p, -np.inf).argmax(axis=1)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (y[counted], confident[counted]), 1)
    rows = counts.sum(axis=1, keepdims=True)
    # each row rescaled to the number of objects given that label (the calibration step)
    scaled = np.divide(counts, np.maximum(rows, 1)) * given[:, None]
    joint = scaled / max(scaled.sum(), 1e-12)
    wrong = np.where(counted & (confident != y))[0]
    order = np.argsort(-p[wrong, confident[wrong]], kind="stable")
    return {"n": int(len(y)), "thresholds": thresholds, "counts": counts, "joint": joint,
            "error_rate": float(1.0 - np.trace(joint)),
            "ambiguous": float(1.0 - counted.mean()), "issues": wrong[order],
            "issue_classes": confident[wrong[order]]}


def label_errors_block(labels, probs, object_ids, class_names: list[str], in_sample: bool,
                       top: int = 20) -> dict:
    """What `evaluate` records of `confident_joint`: JSON-ready, objects named by id.

    Args:
        labels: (N,) given classes of the labelled objects evaluated.
        probs: (N, K) the run's (or ensemble's) probabilities for them.
        object_ids: (N,) their store ids, so a person can look the suspects up.
        class_names: the run's class names, in column order.
        in_sample: True when the run trained on these objects (split train or all): the
            estimate is then biased low and the block says so.
        top: how many suspects, most confident first, to list by id.

    Returns:
        ``{"method", "n", "error_rate", "ambiguous", "n_issues", "counts", "thresholds",
        "in_sample", "suspects": [{"object_id", "label", "model_class", "p"}, ...]}``.

    Example:
        >>> p = [[.9, .1], [.8, .2], [.9, .1], [.3, .7]]
        >>> b = label_errors_block([0, 0, 1, 1], p, list("abcd"), ["E", "S"], in_sample=False)
        >>> b["suspects"], b["ambiguous"]
        ([{'object_id': 'c', 'label': 'S', 'model_class': 'E', 'p': 0.9}], 0.25)
    """
    y = np.asarray(labels, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    out = confident_joint(y, p)
    ids = np.asarray(object_ids)
    suspects = [{"object_id": str(ids[i]), "label": class_names[y[i]],
                 "model_class": class_names[c], "p": float(p[i, c])}
                for i, c in zip(out["issues"][:top], out["issue_classes"][:top])]
    return {"method": "confident learning (Northcutt et al. 2021)", "n": out["n"],
            "error_rate": out["error_rate"], "ambiguous": out["ambiguous"],
            "n_issues": int(len(out["issues"])), "counts": out["counts"].tolist(),
            # a class with no labelled object here has no threshold (null, not Infinity)
            "thresholds": [float(t) if np.isfinite(t) else None for t in out["thresholds"]],
            "in_sample": bool(in_sample),
            "suspects": suspects}
