"""Few-shot study: target accuracy against the number of labelled target objects.

The question a survey team asks before a labelling campaign is "how many labels of our own
do we need?". Each N trains an ordinary run (or seed ensemble) with N labelled target
objects, drawn from the target's train split, mixed into the source training set, and is
scored on the target's test split, which no run ever trains on. N = 0 is the source-only
baseline, so the curve shows what each label buys over transfer alone.

Output folder (reused to resume: finished runs are kept, killed ones continue):
    n_<N>/            a run directory, or a seed job with seed_<s>/ runs
    few_shot.json     per N: accuracy, macro recall (mean, std over seeds), per-seed values
    few_shot.md       the table;   few_shot.png   accuracy vs N with ±1 std bars
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from ...config import TrainConfig, normalize
from ...errors import UserError
from ...store import CutoutStore
from ..evaluation.evaluate import split_metrics
from ..runs import atomic_write_text, member_runs

log = logging.getLogger("astrotransfer")


def job_metrics(path: Path, store: CutoutStore, split: str = "test") -> dict:
    """Per-member metrics plus aggregate_metrics mean/std (std 0 for one run)."""
    from ..evaluation.metrics import aggregate_metrics

    per = [split_metrics(p, store, split) for p in member_runs(path)]
    return {"per_run": per, **aggregate_metrics(per)}


def parse_ns(text: str) -> list[int]:
    try:
        ns = sorted({int(v) for v in str(text).split(",") if v.strip()})
    except ValueError:
        raise UserError(f"--n '{text}' must be comma-separated integers, e.g. 0,50,100,300") from None
    if not ns or ns[0] < 0:
        raise UserError(f"--n '{text}' needs at least one count, none negative")
    return ns


def few_shot_study(cfg: TrainConfig, ns: list[int], out: Path) -> dict:
    from ..training.seeds import member_state, run_member
    from ..training.single_run import preflight

    if not cfg.target:
        raise UserError("the few-shot study needs --target, a target store with labels")
    cfg.out = str(out)
    preflight(cfg)
    target = CutoutStore.open(cfg.target)
    train_rows = target.indices("train")
    n_lab = int((target.column("label")[train_rows] >= 0).sum())
    if ns[-1] > n_lab:
        raise UserError(f"--n {ns[-1]} exceeds the {n_lab} labelled objects in the train split "
                        f"of {cfg.target}; lower --n or ingest more target objects")
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in ns:
        member = normalize(dataclasses.replace(cfg, target_labels=n, out=str(out / f"n_{n}")))
        log.info("few-shot N=%d -> %s", n, member.out)
        if member.seeds > 1:
            from ..training.seeds import train_seeds
            train_seeds(member, resume=Path(member.out).exists())
        else:
            run_member(member, resume=member_state(Path(member.out)) == "partial")
        m = job_metrics(Path(member.out), target)
        rows.append({"n": n, "accuracy": m["mean"]["accuracy"], "accuracy_std": m["std"]["accuracy"],
                     "macro_recall": m["mean"]["macro"]["recall"],
                     "macro_recall_std": m["std"]["macro"]["recall"], "n_runs": m["n_runs"],
                     "per_run_accuracy": [r["accuracy"] for r in m["per_run"]],
                     "n_test": m["per_run"][0]["n"]})
    result = {"source": str(cfg.source), "target": str(cfg.target), "backbone": cfg.backbone,
              "adapt": cfg.adapt, "epochs": cfg.epochs, "seeds": cfg.seeds, "rows": rows}
    atomic_write_text(out / "few_shot.json", json.dumps(result, indent=2))
    atomic_write_text(out / "few_shot.md", few_shot_table(result))
    plot_few_shot(result, out / "few_shot.png")
    return result


def few_shot_table(result: dict) -> str:
    lines = ["| labelled target objects N | target test accuracy | macro recall | runs |",
             "|---:|---|---|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['n']} | {r['accuracy']:.3f} ± {r['accuracy_std']:.3f} | "
                     f"{r['macro_recall']:.3f} ± {r['macro_recall_std']:.3f} | {r['n_runs']} |")
    return "\n".join(lines) + "\n"


def plot_few_shot(result: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(5, 3.4), dpi=120)
    ax.errorbar([r["n"] for r in rows], [r["accuracy"] for r in rows],
                yerr=[r["accuracy_std"] for r in rows], marker="o", capsize=3,
                label=f"{result['adapt']} + N target labels")
    ax.axhline(rows[0]["accuracy"], color="grey", ls=":", lw=1,
               label=f"N={rows[0]['n']}")
    ax.set_xlabel("labelled target objects N")
    ax.set_ylabel("target test accuracy")
    ax.set_title(f"Few-shot transfer ({result['backbone']}, "
                 f"{max(r['n_runs'] for r in rows)} seed(s))")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
