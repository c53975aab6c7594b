"""Evaluation figures, one PNG per function, drawn from the dicts of `metrics`.

Figures are built with `matplotlib.figure.Figure` and saved through the Agg canvas
rather than through pyplot: no global figure state, nothing to close, no GUI backend picked
up from the user's environment, and safe to call from worker threads. Each function takes
a metrics dict (or, where noted, an `aggregate_metrics` result, drawn as mean ± std) and
returns the path it wrote.
"""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..runs import atomic_write_bytes
from . import metrics as M

__all__ = [
    "plot_roc",
    "plot_confusion",
    "plot_accuracy_vs_confidence",
    "plot_entropy_hist",
    "plot_per_class_accuracy",
    "plot_reliability",
]

DPI = 120
_RC = {"font.size": 10, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9}
# Colour-blind-safe (Okabe-Ito) so classes stay distinguishable in print and for all readers.
COLORS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]


def _figure(w: float, h: float) -> Figure:
    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No Software/date metadata: the same inputs give byte-identical files. Drawn in
    # memory and renamed into place: a stop or a full disk never leaves a torn PNG.
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())
    return path


def _style(fn):
    """Apply the shared font sizes to one plotting call only, leaving the caller's rcParams."""
    import functools

    import matplotlib

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with matplotlib.rc_context(_RC):
            return fn(*args, **kwargs)
    return wrapped


def _split(metrics: dict) -> tuple[dict, dict | None, int]:
    """(mean-or-single metrics, std or None, number of runs) for either kind of dict."""
    if "mean" in metrics and "std" in metrics and "n_runs" in metrics:
        return metrics["mean"], metrics["std"], int(metrics["n_runs"])
    return metrics, None, 1


def _class_names(m: dict) -> list[str]:
    return list(m.get("class_names") or m["recall"].keys())


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _fmt(v, digits: int = 3) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _runs_note(n_runs: int) -> str:
    return f" (mean ± std over {n_runs} runs)" if n_runs > 1 else ""


# --------------------------------------------------------------------------- ROC
@_style
def plot_roc(metrics: dict, path) -> Path:
    """One-vs-rest ROC per class (the positive class only for K=2), AUC in the legend. For an
    aggregate, whose curves are not averaged, the AUCs are listed as mean ± std instead."""
    m, s, n_runs = _split(metrics)
    fig = _figure(5.2, 5.0)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="0.6", label="chance")
    drawn = 0
    for i, (name, curve) in enumerate((m.get("roc") or {}).items()):
        if not curve:
            continue
        auc = (m.get("auc") or {}).get(name)
        label = f"{name} (AUC = {_fmt(auc)})"
        if m.get("n_classes") == 2:
            label = f"{name} vs rest (AUC = {_fmt(auc)})"
        ax.plot(curve["fpr"], curve["tpr"], lw=2, color=COLORS[i % len(COLORS)], label=label)
        drawn += 1
    if not drawn and s is not None:
        lines = [f"{name}: AUC = {_fmt(auc)} ± {_fmt((s.get('auc') or {}).get(name))}"
                 for name, auc in (m.get("auc") or {}).items()]
        ax.text(0.5, 0.35, f"ROC curves are not averaged over runs\n({n_runs} runs)\n\n"
                + "\n".join(lines), ha="center", va="center", transform=ax.transAxes,
                bbox={"boxstyle": "round", "fc": "white", "ec": "0.7"})
    elif not drawn:
        ax.text(0.5, 0.5, "ROC undefined\n(each class needs positives and negatives)",
                ha="center", va="center", transform=ax.transAxes, color="0.3")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal",
           xlabel="False positive rate", ylabel="True positive rate",
           title="ROC curves (one-vs-rest)" if m.get("n_classes", 0) > 2 else "ROC curve")
    ax.grid(alpha=0.3)
    if drawn:
        ax.legend(loc="lower right", frameon=True)
    return _save(fig, path)


# --------------------------------------------------------------------------- confusion
@_style
def plot_confusion(metrics: dict, path) -> Path:
    """Row-normalised confusion (percent of each true class) with raw counts annotated,
    so both the per-class error pattern and the number behind it can be read."""
    m, _, n_runs = _split(metrics)
    names = _class_names(m)
    pct = np.array([[_num(v) for v in row] for row in m["confusion_percent"]], dtype=float)
    counts = np.array([[_num(v) for v in row] for row in m["confusion"]], dtype=float)
    k = len(names)
    side = min(max(3.8, 1.0 + 0.9 * k), 11.0)
    fig = _figure(side + 1.1, side)
    ax = fig.add_subplot()
    im = ax.imshow(np.nan_to_num(pct), cmap="Blues", vmin=0, vmax=100)
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("% of true class")
    size = 10 if k <= 6 else (8 if k <= 10 else 6)
    for i in range(k):
        for j in range(k):
            p, c = pct[i, j], counts[i, j]
            cnt = f"{c:.0f}" if n_runs == 1 else f"{c:.1f}"
            text = f"{p:.1f}%\n({cnt})" if math.isfinite(p) else "n/a"
            ax.text(j, i, text, ha="center", va="center", fontsize=size,
                    color="white" if math.isfinite(p) and p > 55 else "black")
    long = max(map(len, names)) * k > 28
    ax.set_xticks(range(k), names, rotation=30 if long else 0, ha="right" if long else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    total = int(round(np.nansum(counts)))
    runs = f", mean of {n_runs} runs" if n_runs > 1 else ""
    ax.set_title(f"Confusion matrix (N = {total}{runs})")
    return _save(fig, path)


# --------------------------------------------------------------------------- top-q
@_style
def plot_accuracy_vs_confidence(metrics: dict, path) -> Path:
    """Accuracy and macro F1 on the most confident fraction of objects (Khan et al. fig 6):
    how much purity one gains by keeping only the objects the model is surest of."""
    m, s, n_runs = _split(metrics)
    tq = m["top_q"]
    q = np.array(tq["q"], dtype=float) * 100
    fig = _figure(6.0, 4.2)
    ax = fig.add_subplot()
    # Accuracy and macro F1 often coincide on balanced data: a wide solid line under a thin
    # dashed one with hollow markers keeps both visible.
    for key, label, color, style in (
            ("accuracy", "Accuracy", COLORS[0], {"marker": "o", "lw": 3.5, "ms": 7}),
            ("f1_macro", "F1 (macro)", COLORS[1],
             {"marker": "s", "lw": 1.6, "ls": "--", "ms": 6, "mfc": "white", "mew": 1.5})):
        y = np.array([_num(v) for v in tq[key]])
        ax.plot(q, y, color=color, label=label, **style)
        if s is not None and s.get("top_q"):  # band for accuracy, bars for F1: bands would blend
            e = np.array([_num(v) for v in s["top_q"][key]])
            if key == "accuracy":
                ax.fill_between(q, y - e, y + e, color=color, alpha=0.2, lw=0, label="± 1 std")
            else:
                ax.errorbar(q, y, yerr=e, fmt="none", ecolor=color, capsize=3, lw=1)
    lo = np.nanmin([_num(v) for v in tq["accuracy"] + tq["f1_macro"]] + [1.0])
    ax.set_ylim(max(0.0, math.floor((lo - 0.05) * 20) / 20), 1.005)
    ax.set_xlim(0, 102)
    ax.set_xticks(np.arange(0, 101, 10))
    ax.set_xlabel("Most confident fraction of objects kept (%)")
    ax.set_ylabel("Score on the kept objects")
    ax.set_title("Accuracy vs. confidence" + _runs_note(n_runs))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    return _save(fig, path)


# --------------------------------------------------------------------------- entropy
@_style
def plot_entropy_hist(probs_or_metrics, path) -> Path:
    """Histogram of per-object prediction entropy, from probabilities or a metrics dict.
    A mass near 0 means decided predictions; a mass near log K means the model is guessing."""
    if isinstance(probs_or_metrics, dict):
        m, _, n_runs = _split(probs_or_metrics)
        ent = m["entropy"]
    else:
        ent, n_runs = M.entropy_summary(np.asarray(probs_or_metrics, dtype=float)), 1
    edges = np.array(ent["histogram"]["bins"], dtype=float)
    counts = np.array([_num(c) for c in ent["histogram"]["counts"]], dtype=float)
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color=COLORS[5],
           edgecolor="white", lw=0.6)
    ax.axvline(_num(ent["mean"]), color=COLORS[1], lw=2, label=f"mean = {_fmt(ent['mean'])}")
    ax.axvline(_num(ent["median"]), color=COLORS[0], lw=2, ls="--",
               label=f"median = {_fmt(ent['median'])}")
    hmax = _num(ent["max"])
    ax.axvline(hmax, color="0.4", lw=1, ls=":", label=f"max = ln K = {hmax:.3f}")
    ax.set_xlim(0, hmax * 1.04)
    ax.set_xlabel("Prediction entropy (nats)")
    ax.set_ylabel("Number of objects" + (" (mean)" if n_runs > 1 else ""))
    ax.set_title("Prediction entropy" + _runs_note(n_runs))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="best")
    return _save(fig, path)


# --------------------------------------------------------------------------- per class
@_style
def plot_per_class_accuracy(metrics: dict, path) -> Path:
    """Per-class recall (accuracy within each true class) as bars; error bars when given an
    aggregate of several runs. Overall accuracy is drawn for reference, since a good overall
    number often hides one poorly recognised minority class."""
    m, s, n_runs = _split(metrics)
    names = _class_names(m)
    rec = np.array([_num(m["recall"].get(n)) for n in names])
    err = None
    if s is not None and s.get("recall"):
        err = np.nan_to_num(np.array([_num(s["recall"].get(n)) for n in names]))
    k = len(names)
    fig = _figure(min(max(4.5, 1.2 + 0.8 * k), 12.0), 4.2)
    ax = fig.add_subplot()
    x = np.arange(k)
    ax.bar(x, np.nan_to_num(rec), yerr=err, capsize=5 if err is not None else 0,
           color=[COLORS[i % len(COLORS)] for i in range(k)], alpha=0.85, width=0.65)
    for i, v in enumerate(rec):
        label = "n/a" if math.isnan(v) else f"{v:.2f}"
        top = 0.0 if math.isnan(v) else v + (err[i] if err is not None else 0.0)
        ax.text(i, min(top + 0.02, 1.07), label, ha="center", va="bottom", fontsize=9)
    acc = m.get("accuracy")
    if acc is not None:
        ax.axhline(acc, color="0.3", ls="--", lw=1.2, label=f"overall accuracy = {acc:.3f}")
        fig.legend(loc="outside lower center", frameon=False)  # bars may fill any corner
    long = max(map(len, names)) * k > 36
    ax.set_xticks(x, names, rotation=30 if long else 0, ha="right" if long else "center")
    ax.set_ylim(0, 1.12)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("True class")
    ax.set_ylabel("Recall (per-class accuracy)")
    ax.set_title("Per-class accuracy" + _runs_note(n_runs))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


# --------------------------------------------------------------------------- calibration
@_style
def plot_reliability(y_true, probs_before, probs_after, path, n_bins: int = 15) -> Path:
    """Reliability diagram before and after temperature scaling (``probs_after`` may be
    None). Points on the diagonal are calibrated; below it, over-confident. The lower panel
    shows how many objects each bin holds, since sparse bins are noisy."""
    fig = _figure(5.4, 5.6)
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1])
    ax = fig.add_subplot(gs[0])
    axh = fig.add_subplot(gs[1], sharex=ax)
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="0.6", label="perfectly calibrated")
    first = "before scaling" if probs_after is not None else "model"
    series = [(first, probs_before, COLORS[1], "o")]
    if probs_after is not None:
        series.append(("after temperature scaling", probs_after, COLORS[0], "s"))
    width = 1.0 / n_bins
    k = np.asarray(probs_before).shape[1]
    x_lo = math.floor(10 * (1.0 / k - 0.02)) / 10  # confidence can never fall below 1/K
    x_lo = max(0.0, x_lo)
    for j, (label, probs, color, marker) in enumerate(series):
        rc = M.reliability_curve(y_true, probs, n_bins)
        ece = M.expected_calibration_error(y_true, probs, n_bins)
        conf = np.array([_num(v) for v in rc["confidence"]])
        acc = np.array([_num(v) for v in rc["accuracy"]])
        ok = np.isfinite(conf)
        ax.plot(conf[ok], acc[ok], marker=marker, ms=5, lw=1.8, color=color,
                label=f"{label} (ECE = {100 * ece:.2f}%)")
        edges = np.array(rc["bin_edges"], dtype=float)
        off = (j - (len(series) - 1) / 2) * width / len(series)
        axh.bar(edges[:-1] + width / 2 + off, rc["count"], width=width / len(series),
                color=color, alpha=0.8)
    ax.set(xlim=(x_lo, 1), ylim=(0, 1), ylabel="Accuracy",
           title="Reliability diagram (top-label confidence)")
    ax.tick_params(labelbottom=False)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    axh.set(xlabel="Confidence (max probability)", ylabel="Objects")
    if max(axh.get_ylim()) > 50:  # a few crowded high-confidence bins would flatten the rest
        axh.set_yscale("log")
    axh.grid(alpha=0.3)
    return _save(fig, path)
