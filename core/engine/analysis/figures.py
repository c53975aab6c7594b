"""Figures of the analysis commands: feature maps, neighbour grids, band and crop studies.

Same conventions as `plots`: Agg canvas without pyplot, colour-blind-safe colours, one PNG
per call, and the path returned.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib import colormaps

from ..evaluation.plots import COLORS, _figure, _save, _style


def _scatter(ax, coords: np.ndarray, colour: np.ndarray, names: list[str], prefix: str) -> None:
    dims = coords.shape[1]
    size = 6 if len(coords) > 2000 else 14
    kw = {"depthshade": False} if dims == 3 else {}  # faded far points read as another class
    unknown = colour < 0
    if unknown.any():
        ax.scatter(*coords[unknown].T[:dims], s=size, c="0.75", label="unlabelled",
                   linewidths=0, **kw)
    for k, name in enumerate(names):
        sel = colour == k
        if sel.any():
            ax.scatter(*coords[sel].T[:dims], s=size, color=COLORS[k % len(COLORS)],
                       label=f"{prefix}{name} ({int(sel.sum())})", linewidths=0, alpha=0.8,
                       **kw)


@_style
def plot_map(coords: np.ndarray, colour: np.ndarray, class_names: list[str], path,
             coloured_by: str = "label", clusters: np.ndarray | None = None,
             title: str = "") -> Path:
    """A 2-D or 3-D map coloured by class; with `clusters`, a second panel coloured by
    k-means cluster, so one sees at a glance whether clusters follow classes."""
    dims = coords.shape[1]
    panels = 1 if clusters is None else 2
    fig = _figure(5.6 * panels, 5.2)
    kw = {"projection": "3d"} if dims == 3 else {}
    ax = fig.add_subplot(1, panels, 1, **kw)
    prefix = "" if coloured_by == "label" else "predicted "
    _scatter(ax, coords, np.asarray(colour), class_names, prefix)
    ax.set_title(f"coloured by {coloured_by}")
    ax.legend(loc="best", markerscale=2, fontsize=8)
    if clusters is not None:
        axc = fig.add_subplot(1, panels, 2, **kw)
        k = int(clusters.max()) + 1
        cmap = colormaps["Dark2" if k <= 8 else "tab20"]  # unlike the class colours
        for c in range(k):
            sel = clusters == c
            if sel.any():
                axc.scatter(*coords[sel].T[:dims], s=10, color=cmap(c % cmap.N),
                            label=f"cluster {c} ({int(sel.sum())})", linewidths=0, alpha=0.8,
                            **({"depthshade": False} if dims == 3 else {}))
        axc.set_title(f"coloured by k-means cluster (k = {k})")
        if k <= 12:
            axc.legend(loc="best", markerscale=2, fontsize=7)
    for a in fig.axes:
        a.set_xticks([])
        a.set_yticks([])
        if dims == 3:
            a.set_zticks([])
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def composite(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) → (N, H, W, 3) in [0, 1] for display.

    Three or more bands: the first three as blue, green, red (stores list bands blue to
    red, so the reddest of the three is red). Fewer: the first band in grey. One
    percentile scale for all images, so their brightness can be compared.
    """
    x = np.asarray(images, dtype=np.float64)
    rgb = x[:, 2::-1][:, :3] if x.shape[1] >= 3 else np.repeat(x[:, :1], 3, axis=1)
    lo, hi = np.percentile(rgb, [1, 99.7])
    rgb = np.clip((rgb - lo) / max(hi - lo, 1e-12), 0, 1)
    return rgb.transpose(0, 2, 3, 1)


@_style
def plot_neighbours(images: np.ndarray, neighbours: list[dict], bands: list[str], path,
                    metric: str) -> Path:
    """The query and its nearest neighbours as a grid of cutouts, with distance, label and
    predicted class under each."""
    k = len(neighbours)
    cols = min(5, k)
    rows = math.ceil(k / cols)
    fig = _figure(2.2 * cols, 2.5 * rows + 0.4)
    pics = composite(images)
    for j, (pic, n) in enumerate(zip(pics, neighbours)):
        ax = fig.add_subplot(rows, cols, j + 1)
        ax.imshow(pic, origin="lower", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        head = "query" if j == 0 else f"#{n['rank'] - 1}  d = {n['distance']:.3f}"
        truth = n["label"] if n["label"] is not None else "?"
        ax.set_title(f"{head}\n{n['object_id']}\ntrue {truth} / pred {n['predicted']}",
                     fontsize=7)
        if j == 0:
            for side in ax.spines.values():
                side.set_edgecolor(COLORS[1])
                side.set_linewidth(3)
    shown = ",".join(bands[:3][::-1]) if len(bands) >= 3 else bands[0]
    fig.suptitle(f"Nearest neighbours ({metric} distance on features; RGB = {shown})",
                 fontsize=10)
    return _save(fig, path)


@_style
def plot_band_drops(result: dict, path) -> Path:
    """Accuracy lost when each band is zeroed: the bands the classifier relies on."""
    bands = list(result["drops"])
    drops = np.array([result["drops"][b] for b in bands])
    fig = _figure(max(5.0, 1.3 + 0.9 * len(bands)), 4.4)
    ax = fig.add_subplot()
    x = np.arange(len(bands))
    ax.bar(x, drops, color=[COLORS[i % len(COLORS)] for i in range(len(bands))], width=0.6)
    for i, d in enumerate(drops):
        ax.text(i, d + (0.005 if d >= 0 else -0.005), f"{d:+.3f}", ha="center",
                va="bottom" if d >= 0 else "top", fontsize=9)
    ax.axhline(0, color="0.3", lw=1)
    ax.set_xticks(x, bands)
    top = max(0.05, float(drops.max()) * 1.25)
    ax.set_ylim(min(0.0, float(drops.min()) * 1.25 - 0.01), top)
    ax.set_xlabel("Band set to zero (sky level)")
    ax.set_ylabel("Accuracy drop")
    ax.set_title(f"Band importance\nbaseline accuracy {result['baseline_accuracy']:.3f}, "
                 f"N = {result['n']}")
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


@_style
def plot_crop_study(result: dict, path) -> Path:
    """Accuracy against centre-crop size: how much of the stamp the classifier needs. The
    scored split is drawn solid (accuracy) and dashed (macro F1, often on top of it); the
    source test accuracy is dotted when a target is the scored split."""
    sizes = [r["crop"] for r in result["results"]]
    fig = _figure(5.5, 4.0)
    ax = fig.add_subplot()
    where = "target" if result["evaluated_on"].startswith("target") else "source"
    series = [(f"{where} test accuracy", [r.get("accuracy") for r in result["results"]],
               {"color": COLORS[0], "marker": "o", "lw": 3.5, "ms": 7}),
              (f"{where} test macro F1", [r.get("macro_f1") for r in result["results"]],
               {"color": COLORS[1], "marker": "s", "lw": 1.6, "ls": "--", "ms": 6,
                "mfc": "white", "mew": 1.5})]
    if where == "target":
        series.append(("source test accuracy",
                       [(r["source_test"] or {}).get("accuracy") for r in result["results"]],
                       {"color": "0.45", "marker": "^", "lw": 1.4, "ls": ":", "ms": 6}))
    values = []
    for label, ys, style in series:
        ys = [np.nan if y is None else y for y in ys]
        values += ys
        ax.plot(sizes, ys, label=label, **style)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    lo = np.nanmin(values + [1.0])  # zoom on the data, as plots.plot_accuracy_vs_confidence
    ax.set_ylim(max(0.0, math.floor((lo - 0.05) * 20) / 20), 1.005)
    ax.set_xlabel("Centre crop (px)")
    ax.set_ylabel("Score on the test split")
    ax.set_title("Crop-size study")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return _save(fig, path)
