"""Plots of docs/results/ceers.md (tools/ceers_results.py): the few-shot curves, the
no-label methods with the label-free score against accuracy, and the t-SNE of both surveys."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ceers_report import _ms, _vals, method_rows


def plot_few_shot(results, ns, path: Path, chance: float) -> None:
    """Accuracy and balanced accuracy against N for the three starts (N = 0: no training
    for ImageNet only; the zero-shot / adapted runs for the others)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    zero = {"gz1": "zero-shot", "adapted": None, "imagenet": None}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, score, floor in ((axes[0], "accuracy", chance), (axes[1], "balanced", 0.5)):
        for key, label, mark in (("imagenet", "ImageNet only", "o"),
                                 ("gz1", "GZ1-trained", "s"),
                                 ("adapted", "GZ1 + adaptation", "^")):
            pts = []
            for n in (0, *ns):
                v = (_vals(results, zero[key], score) if n == 0 and zero[key] else
                     _vals(results, f"few-shot {key}", score, extra=n) if n else [])
                if v:
                    pts.append((max(n, 10), *_ms(v)[:2]))
            if pts:
                x, m, sd = map(np.array, zip(*pts))
                ax.errorbar(x, m, yerr=sd, marker=mark, capsize=3, label=label)
        ax.axhline(floor, color="grey", ls=":",
                   label=f"majority class ({floor:.3f})" if score == "accuracy" else "chance")
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks([10, *ns], ["0", *map(str, ns)])
        ax.set_xlabel("labelled CEERS objects N (log axis; 0 drawn at 10)")
        ax.set_ylabel(f"CEERS test {'accuracy' if score == 'accuracy' else 'balanced accuracy'}")
        ax.legend(fontsize=8)
    fig.suptitle("Few-shot transfer GZ1 (SDSS) → JWST CEERS, mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_methods_and_rank(results, adapters, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(label.split(": ")[-1].split(" (")[0], key) for label, key in
            method_rows(results, adapters) if _vals(results, key)]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = np.arange(len(rows))
    for off, score, label in ((-0.2, "accuracy", "accuracy"), (0.2, "balanced", "balanced acc")):
        ms = [_ms(_vals(results, k, score)) for _, k in rows]
        a1.bar(xs + off, [m for m, _, _ in ms], 0.4, yerr=[s for _, s, _ in ms], capsize=4,
               label=label)
    a1.set_xticks(xs, [lab for lab, _ in rows], rotation=25, ha="right")
    a1.set_ylim(0.4, 1.0)
    a1.axhline(0.5, color="grey", ls=":")
    a1.legend(fontsize=8)
    a1.set_ylabel("CEERS test score (mean ± std over seeds)")
    a1.set_title("No CEERS labels: zero-shot, adaptation, pseudo-labels")
    for i, (_, key) in enumerate(rows):
        rs = [r for r in results if r["key"][0] == key and r.get("label_free")]
        a2.scatter([r["label_free"]["dev"] for r in rs],
                   [r["scores"]["ceers"]["accuracy"] for r in rs], label=rows[i][0])
    a2.set_xlabel("DEV score on the unlabelled pool (label-free; lower = better)")
    a2.set_ylabel("CEERS test accuracy")
    a2.set_title("Does the label-free score predict accuracy?")
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_tsne(maps, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    fig, axes = plt.subplots(1, len(maps), figsize=(5.5 * len(maps), 5), squeeze=False)
    for ax, m in zip(axes[0], maps):
        names = list(m["features"])
        feats = [np.asarray(m["features"][n]) for n in names]
        xy = TSNE(2, init="pca", random_state=0, perplexity=30).fit_transform(
            np.concatenate(feats))
        start = 0
        for name, f in zip(names, feats):
            ax.scatter(*xy[start:start + len(f)].T, s=5, alpha=0.6, label=name)
            start += len(f)
        ax.set_title(f"t-SNE of penultimate features: {m['key'].replace('_', ' ')} (seed 0)")
        ax.set_xticks([]), ax.set_yticks([])
        ax.legend(markerscale=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def domain_separability(m: dict) -> float:
    """5-fold accuracy of a linear classifier telling the two domains apart from the
    features (a proxy A-distance): 0.5 = aligned, 1.0 = fully separate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    feats = [np.asarray(v) for v in m["features"].values()]
    x = np.concatenate(feats)
    y = np.concatenate([np.full(len(f), i) for i, f in enumerate(feats)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    return float(cross_val_score(clf, x, y, cv=5).mean())


