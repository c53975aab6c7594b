"""The PNGs of docs/results/transfer.md, drawn from transfer_report.summarise()'s numbers."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_sim(sim: dict, path: Path) -> Path:
    from transfer_report import sim_order

    labels = sim_order(sim)
    names = [("few-shot" if k == "few-shot" else k).replace("+", "+\n") for k in labels]
    tgt = [(sim[k]["target"]["mean"]["accuracy"], sim[k]["target"]["std"]["accuracy"]) for k in labels]
    src = [(sim[k]["source"]["mean"]["accuracy"], sim[k]["source"]["std"]["accuracy"]) for k in labels]
    if "recursive" in sim:
        rd = sim["recursive"]["rounds"][-1]
        names.append(f"recursive\nround {rd['round']}")
        tgt.append(tuple(rd["target_test_accuracy"][:2]))
        src.append((np.nan, 0.0))
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8.5, 3.8), dpi=120)
    ax.bar(x - 0.2, [m for m, _ in src], 0.4, yerr=[s for _, s in src], capsize=3,
           color="#9ecae1", label="source test (sim SDSS)")
    ax.bar(x + 0.2, [m for m, _ in tgt], 0.4, yerr=[s for _, s in tgt], capsize=3,
           color="#08519c", label="target test (sim DES)")
    ax.axhline(tgt[0][0], color="#08519c", ls=":", lw=1, label="finetune on target")
    ax.set_xticks(x, names, fontsize=7.5)
    lo = np.nanmin([m - s for m, s in tgt + src])
    # headroom above 1.0 holds the legend in one row, clear of every bar whatever the numbers
    bottom = max(0.0, lo - 0.05)
    ax.set_ylim(bottom, 1.0 + 0.12 * (1.0 - bottom))
    ax.set_yticks([t for t in np.arange(0.0, 1.001, 0.05) if t >= bottom])
    ax.set_ylabel("test accuracy (mean ± std over seeds)")
    ax.set_title("sim SDSS → sim DES: fine-tuning, adapters, few-shot, recursive")
    ax.legend(fontsize=7.5, loc="upper center", ncol=3, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_gz1(gz1: dict, path: Path) -> Path:
    labels = list(gz1)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=120)
    m = [gz1[k]["test"]["mean"]["accuracy"] for k in labels]
    s = [gz1[k]["test"]["std"]["accuracy"] for k in labels]
    colors = ["#bdbdbd" if "random" in k else "#e6550d" if "progressive" in k else "#08519c"
              for k in labels]
    a.bar(range(len(labels)), m, yerr=s, capsize=3, color=colors)
    a.set_xticks(range(len(labels)), [k.replace(", ", "\n") for k in labels], fontsize=7.5)
    a.set_ylim(max(0.0, min(m) - max(s) - 0.05), 1.0)
    a.set_ylabel("GZ1 test accuracy")
    a.set_title("equal epochs")
    a.grid(axis="y", alpha=0.3)
    for k, c in zip(labels, colors):
        curve = gz1[k].get("val_acc_curve")
        if curve:
            b.plot(range(1, len(curve) + 1), curve, marker="o", color=c, label=k)
    b.xaxis.get_major_locator().set_params(integer=True)
    b.set_xlabel("epoch")
    b.set_ylabel("validation accuracy (mean over seeds)")
    b.set_title("learning curves")
    b.legend(fontsize=7)
    b.grid(alpha=0.3)
    fig.suptitle("Galaxy Zoo 1 SDSS, elliptical vs spiral (tf_efficientnet_lite0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_hst(hst: dict, path: Path) -> Path:
    backbones = list(hst)
    fig, axes = plt.subplots(1, len(backbones), figsize=(4.6 * len(backbones), 4.2), dpi=120)
    axes = np.atleast_1d(axes)
    for ax, b in zip(axes, backbones):
        mean = np.array(hst[b]["test"]["mean"]["confusion_percent"], dtype=float)
        std = np.array(hst[b]["test"]["std"]["confusion_percent"], dtype=float)
        names = hst[b]["test"]["mean"]["class_names"]
        ax.imshow(mean, cmap="Blues", vmin=0, vmax=100)
        for i in range(len(names)):
            for j in range(len(names)):
                ax.text(j, i, f"{mean[i, j]:.0f}\n±{std[i, j]:.0f}", ha="center", va="center",
                        fontsize=7.5, color="white" if mean[i, j] > 60 else "black")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        acc = hst[b]["test"]["mean"]["accuracy"]
        ax.set_title(f"{b}: accuracy {acc:.3f}\n(row-normalised %, mean ± std over seeds)",
                     fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
