"""Evaluation metrics for a classifier's predicted probabilities.

Everything returned is plain JSON (Python floats, ints, lists, dicts; undefined values are
``None``) so that a run's metrics can be written next to its checkpoint and compared or
aggregated later without numpy or the model at hand. Metric formulas come from
scikit-learn wherever it has them, so numbers match what readers of the papers we follow
(Khan et al.; Wei et al.) would compute themselves.

Conventions:
  * a class absent from ``y_true`` has undefined recall and AUC; these are ``None`` and are
    left out of macro averages rather than counted as 0, because a test set that simply
    lacks a class says nothing about how well that class is recognised;
  * entropies are in nats;
  * for K=2 the positive class is index 1, as in every binary metric in scikit-learn.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from scipy.stats import entropy as _entropy
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

__all__ = [
    "compute_metrics",
    "aggregate_metrics",
    "expected_calibration_error",
    "reliability_curve",
    "fit_temperature",
    "apply_temperature",
    "prediction_entropy",
    "information_maximization",
    "entropy_summary",
    "TOP_Q",
    "MAX_ROC_POINTS",
]

TOP_Q = tuple(round(0.1 * i, 1) for i in range(1, 11))
MAX_ROC_POINTS = 200
ENTROPY_BINS = 20
_ENTROPY_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


# --------------------------------------------------------------------------- helpers
def _f(x) -> float | None:
    """A JSON-safe float: NaN/inf become None so that json.dump never writes `NaN`."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _by_class(values, class_names: Sequence[str]) -> dict:
    return {name: _f(v) for name, v in zip(class_names, values)}


def _nanmean(values) -> float | None:
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    return _f(np.nanmean(arr)) if np.isfinite(arr).any() else None


def _check_inputs(y_true, probs, class_names=None) -> tuple[np.ndarray, np.ndarray]:
    """Validate early: a wrong shape or logits passed as probabilities would otherwise give
    plausible-looking but meaningless numbers."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probs must have shape (N, K) with K >= 2, got {p.shape}")
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true must have shape ({len(p)},), got {y.shape}")
    if len(p) == 0:
        raise ValueError("cannot compute metrics on an empty set")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError("y_true must hold integer class indices")
        y = y.astype(np.int64)
    k = p.shape[1]
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"y_true holds class indices outside 0..{k - 1}")
    if class_names is not None:
        if len(class_names) != k:
            raise ValueError(f"{len(class_names)} class names for {k} probability columns")
        if len(set(class_names)) != k:
            raise ValueError(f"class names must be unique: {list(class_names)}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ValueError("probs must be finite and non-negative (were logits passed?)")
    sums = p.sum(axis=1)
    if np.abs(sums - 1.0).max() > 1e-3:
        raise ValueError("probs rows must sum to 1 (were logits passed? use softmax first)")
    return y, p / sums[:, None]  # exact renormalisation so float32 rounding is not warned about


def _downsample(fpr: np.ndarray, tpr: np.ndarray, max_points: int) -> tuple[list, list]:
    """Keep the curve's end points and an even spread of its vertices, so a saved curve
    stays small for any N while still drawing the same shape."""
    if len(fpr) > max_points:
        idx = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr = fpr[idx], tpr[idx]
    return [round(float(v), 6) for v in fpr], [round(float(v), 6) for v in tpr]


def _roc(y_bin: np.ndarray, score: np.ndarray) -> tuple[float | None, dict | None]:
    if y_bin.all() or not y_bin.any():  # one-class target: ROC is undefined
        return None, None
    fpr, tpr, _ = roc_curve(y_bin, score, drop_intermediate=True)
    xs, ys = _downsample(fpr, tpr, MAX_ROC_POINTS)
    return _f(roc_auc_score(y_bin, score)), {"fpr": xs, "tpr": ys}


def _entropies(probs: np.ndarray) -> np.ndarray:
    return _entropy(probs, axis=1)


def entropy_summary(probs, n_bins: int = ENTROPY_BINS) -> dict:
    """The distribution of per-object prediction entropy. Bins span [0, log K] so that
    histograms from runs with the same classes can be compared and aggregated bin by bin."""
    p = np.asarray(probs, dtype=np.float64)
    h = _entropies(p)
    h_max = math.log(p.shape[1])
    counts, edges = np.histogram(np.clip(h, 0.0, h_max), bins=n_bins, range=(0.0, h_max))
    qs = np.quantile(h, _ENTROPY_QUANTILES)
    return {
        "unit": "nats",
        "max": _f(h_max),
        "mean": _f(h.mean()),
        "median": _f(np.median(h)),
        "std": _f(h.std()),
        "quantiles": {f"q{int(round(q * 100)):02d}": _f(v) for q, v in zip(_ENTROPY_QUANTILES, qs)},
        "histogram": {"bins": [_f(e) for e in edges], "counts": [int(c) for c in counts]},
    }


def _top_q(y: np.ndarray, probs: np.ndarray) -> dict:
    """Khan et al. (fig. 6): accuracy when only the most confident fraction q is kept. A
    stable sort makes ties resolve by input order, so the result is deterministic."""
    order = np.argsort(-probs.max(axis=1), kind="stable")
    y_pred = probs.argmax(axis=1)
    out = {"q": list(TOP_Q), "n": [], "accuracy": [], "f1_macro": [], "min_confidence": []}
    for q in TOP_Q:
        m = max(1, int(math.ceil(q * len(y) - 1e-9)))
        sel = order[:m]
        out["n"].append(m)
        out["accuracy"].append(_f(accuracy_score(y[sel], y_pred[sel])))
        f1 = f1_score(y[sel], y_pred[sel], average="macro", zero_division=np.nan)
        out["f1_macro"].append(_f(f1))
        out["min_confidence"].append(_f(probs[sel[-1]].max()))
    return out


# --------------------------------------------------------------------------- main entry
def compute_metrics(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """All evaluation numbers for one run, as a JSON-serialisable dict.

    Per-class entries are dicts keyed by class name; ``macro`` averages them over the
    classes where they are defined (``macro.recall`` is the balanced accuracy). ROC/AUC are
    one-vs-rest per class for K>2; for K=2 only the positive class (index 1) is stored,
    since the other curve is its mirror image, and a ``binary`` block gives the usual
    positive-class numbers.
    """
    y, p = _check_inputs(y_true, probs, class_names)
    names = [str(c) for c in class_names]
    k = p.shape[1]
    labels = list(range(k))
    y_pred = p.argmax(axis=1)

    prec, rec, f1, support = precision_recall_fscore_support(
        y, y_pred, labels=labels, zero_division=np.nan)
    mcm = multilabel_confusion_matrix(y, y_pred, labels=labels)  # [[tn, fp], [fn, tp]] per class
    tn, fp = mcm[:, 0, 0], mcm[:, 0, 1]
    fpr = np.where(tn + fp > 0, fp / np.maximum(tn + fp, 1), np.nan)

    roc_classes = [1] if k == 2 else labels
    auc, roc = {}, {}
    for c in roc_classes:
        auc[names[c]], roc[names[c]] = _roc(y == c, p[:, c])

    cm = confusion_matrix(y, y_pred, labels=labels)
    cm_pct = confusion_matrix(y, y_pred, labels=labels, normalize="true") * 100.0

    out = {
        "n": int(len(y)),
        "n_classes": k,
        "class_names": names,
        "accuracy": _f(accuracy_score(y, y_pred)),
        "support": {n: int(s) for n, s in zip(names, support)},
        "precision": _by_class(prec, names),
        "recall": _by_class(rec, names),
        "f1": _by_class(f1, names),
        "fpr": _by_class(fpr, names),
        "auc": auc,
        "macro": {
            "precision": _nanmean(prec),
            "recall": _nanmean(rec),
            "f1": _nanmean(f1),
            "fpr": _nanmean(fpr),
            "auc": _nanmean(auc.values()),
        },
        "confusion": cm.astype(int).tolist(),
        "confusion_percent": [[round(float(v), 4) for v in row] for row in cm_pct],
        "roc": roc,
        "top_q": _top_q(y, p),
        "entropy": entropy_summary(p),
        "ece": _f(expected_calibration_error(y, p)),
        "nll": _f(log_loss(y, p, labels=labels)),
    }
    if k == 2:
        out["binary"] = {
            "positive_class": names[1],
            "precision": _f(prec[1]),
            "recall": _f(rec[1]),
            "f1": _f(f1[1]),
            "fpr": _f(fpr[1]),
            "specificity": _f(1.0 - fpr[1]) if math.isfinite(fpr[1]) else None,
            "auc": auc[names[1]],
            "tp": int(cm[1, 1]), "fp": int(cm[0, 1]), "tn": int(cm[0, 0]), "fn": int(cm[1, 0]),
        }
    return out


# --------------------------------------------------------------------------- several runs
def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _agg_leaf(values: list):
    """Mean and std of one leaf across runs; None where no run defines it. Lists and nested
    lists (curves on a shared grid, confusion matrices) are aggregated element-wise when all
    runs agree on their shape."""
    present = [v for v in values if v is not None]
    if not present:
        return None, None
    first = present[0]
    is_text = isinstance(first, list) and any(isinstance(x, str) for x in _flat(first))
    if isinstance(first, str) or is_text:
        same = all(v == first for v in present)  # labels such as class_names: kept if agreed
        return (first, first) if same else (None, None)
    if _is_num(first) and all(_is_num(v) for v in present):
        arr = np.array(present, dtype=float)
        std = arr.std(ddof=1) if len(arr) > 1 else 0.0
        return _f(arr.mean()), _f(std)
    if isinstance(first, list):
        try:
            arr = np.array([[np.nan if x is None else x for x in _flat(v)] for v in present],
                           dtype=float)
            shapes = {np.shape(v) for v in present}
        except (TypeError, ValueError):
            return None, None
        if len(shapes) != 1 or arr.ndim != 2:
            return None, None
        with warnings.catch_warnings():  # all-None columns: 'mean of empty slice' -> None
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(arr, axis=0)
            std = np.nanstd(arr, axis=0, ddof=1) if len(arr) > 1 else np.zeros(arr.shape[1])
            std[np.isfinite(arr).sum(axis=0) == 1] = 0.0  # one defining run: 0, as for scalars
        shape = shapes.pop()
        return _unflat(mean, shape), _unflat(std, shape)
    return None, None


def _flat(v) -> list:
    return np.array(v, dtype=object).ravel().tolist()


def _unflat(arr: np.ndarray, shape) -> list:
    return np.vectorize(_f, otypes=[object])(arr.reshape(shape)).tolist()


# Curves whose x values differ between runs: averaging their point lists is meaningless.
_NOT_AGGREGATED = {"roc"}


def _aggregate(trees: list) -> tuple:
    first = next((t for t in trees if t is not None), None)
    if isinstance(first, dict):
        mean, std = {}, {}
        for key in first:
            if key in _NOT_AGGREGATED:
                mean[key] = std[key] = None
                continue
            m, s = _aggregate([t.get(key) if isinstance(t, dict) else None for t in trees])
            mean[key], std[key] = m, s
        return mean, std
    return _agg_leaf(trees)


def aggregate_metrics(metrics_list: list[dict]) -> dict:
    """Mean and standard deviation of every numeric leaf over several runs (e.g. seeds), as
    in the mean±std tables of Wei et al. ``mean`` and ``std`` have the shape of one run's
    dict (keys of the first run). The std is the sample std (ddof=1), 0 for a single run;
    runs where a value is undefined (None) are left out of that value's statistics. ROC
    point lists are not aggregated (None); the per-class AUCs are."""
    runs = list(metrics_list)
    if not runs:
        raise ValueError("aggregate_metrics needs at least one metrics dict")
    mean, std = _aggregate(runs)
    return {"mean": mean, "std": std, "n_runs": len(runs)}


# --------------------------------------------------------------------------- calibration
def reliability_curve(y_true, probs, n_bins: int = 15) -> dict:
    """Top-label reliability data: per equal-width confidence bin (lo, hi], the mean
    confidence, the accuracy and the count. Empty bins have None for both rates."""
    y, p = _check_inputs(y_true, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=n_bins)
    nz = counts > 0
    mean_conf = np.where(nz, conf_sum / np.maximum(counts, 1), np.nan)
    acc = np.where(nz, acc_sum / np.maximum(counts, 1), np.nan)
    return {
        "bin_edges": [_f(e) for e in edges],
        "confidence": [_f(v) for v in mean_conf],
        "accuracy": [_f(v) for v in acc],
        "count": [int(c) for c in counts],
    }


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> float:
    """Top-label ECE of Guo et al. (2017): the count-weighted mean |accuracy − confidence|
    over equal-width confidence bins. scikit-learn has no multi-class ECE."""
    rc = reliability_curve(y_true, probs, n_bins)
    n = sum(rc["count"])
    bins = zip(rc["count"], rc["accuracy"], rc["confidence"])
    return float(sum(c / n * abs(a - m) for c, a, m in bins if c))


def apply_temperature(logits, temperature: float) -> np.ndarray:
    """Probabilities from logits divided by a fitted temperature."""
    return softmax(np.asarray(logits, dtype=np.float64) / float(temperature), axis=1)


def fit_temperature(logits_val, y_val, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature scaling (Guo et al. 2017): the single T > 0 minimising the validation
    NLL of softmax(z / T). Searching over log T keeps the problem well scaled on both sides
    of T=1; the NLL is unimodal in T, so a bounded scalar search is enough. Fit on a
    held-out split, never on the test set the calibrated numbers are reported for."""
    z = np.asarray(logits_val, dtype=np.float64)
    y = np.asarray(y_val).astype(np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"logits must be (N, K) matching y of length N; "
                         f"got {z.shape} and {y.shape}")
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-log_softmax(z / math.exp(log_t), axis=1)[rows, y].mean())

    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(res.x))


# --------------------------------------------------------------------------- label-free
def prediction_entropy(probs) -> float:
    """Mean per-object entropy (nats). Without target labels, lower means the model is more
    decided on the target domain — which is necessary for, not proof of, being right."""
    p = np.asarray(probs, dtype=np.float64)
    return float(_entropies(p).mean())


def information_maximization(probs) -> float:
    """The information-maximisation (IM) loss: mean per-object entropy − entropy of the
    mean prediction, i.e. −I(x; ŷ) under the model. LOWER IS BETTER: it rewards confident
    per-object predictions (small first term) that still spread over the classes (large
    second term), so a model that collapses every object onto one class cannot game it
    the way it games plain entropy. The value lies in [−log K, 0]: −log K for confident
    and balanced predictions, 0 for collapsed or uniformly unsure ones."""
    p = np.asarray(probs, dtype=np.float64)
    return float(_entropies(p).mean() - _entropy(p.mean(axis=0)))
