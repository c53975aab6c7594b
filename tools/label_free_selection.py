"""How often does each label-free score pick the run that target labels would pick?

Usage: python tools/label_free_selection.py [--n 600] [--size 32] [--subset 4]
                                            [--backbone test_efficientnet] [--out DIR]

Trains a handful of small runs on a sim SDSS → sim DES pair (adapter, epochs and learning
rate varied), scores each with `Run.label_free_scores` (the same code as
`astrotransfer rank`), and compares every score's choice with the choice made with the real
DES labels. With one grid there is one choice per score, so the agreement rate is measured
over every subset of `--subset` runs (the situation of a user comparing a few candidates):

  top-1 agreement  share of subsets where the score's pick has the best target accuracy
  regret           mean target accuracy lost by trusting the score instead of labels
  pairwise         share of run pairs the score orders like target accuracy does

Runs and stores are kept in --out, so a second call only rescores. Not a test.
"""
from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from pathlib import Path

import numpy as np

GRID = [  # (adapter, epochs, lr): deliberately spread from undertrained to well trained
    ("finetune", 1, 1e-3), ("finetune", 4, 3e-3), ("finetune", 3, 3e-2),
    ("finetune", 6, 1e-3), ("mmd", 3, 3e-3), ("mmd", 1, 1e-2),
    ("dann", 3, 3e-3), ("coral", 4, 1e-3),
]
SCORES = ("dev", "entropy", "im", "mmd")


def stores(out: Path, n: int, size: int, seed: int) -> tuple[Path, Path]:
    import astrotransfer as at

    paths = []
    for inst in ("sdss", "des"):
        path = out / f"sim_{inst}_{n}_{size}_s{seed}.zarr"
        if not path.exists():
            at.ingest("sim", path, instrument=inst, n=n, seed=seed, size=size)
        paths.append(path)
    return paths[0], paths[1]


def train_grid(out: Path, source: Path, target: Path, backbone: str, pretrained: str
               ) -> list[Path]:
    import astrotransfer as at

    runs = []
    for adapt, epochs, lr in GRID:
        run = out / f"{adapt}_e{epochs}_lr{lr:g}"
        if not (run / "best.pt").exists():
            print(f"training {run.name}", flush=True)
            at.train(source=source, target=target, out=run, backbone=backbone,
                     pretrained=pretrained, adapt=adapt, epochs=epochs, lr=lr, batch_size=32,
                     seed=0)
        runs.append(run)
    return runs


def agreement(rows: list[dict], score: str, subset: int) -> dict:
    acc = np.array([r["target_accuracy"] for r in rows])
    val = np.array([r[score] for r in rows])
    hits, regret = [], []
    for sub in itertools.combinations(range(len(rows)), subset):
        sub = list(sub)
        pick = sub[int(np.argmin(val[sub]))]
        best = acc[sub].max()
        hits.append(acc[pick] >= best - 1e-12)  # a tie with the best is the right choice
        regret.append(best - acc[pick])
    pairs = [(i, j) for i, j in itertools.combinations(range(len(rows)), 2) if acc[i] != acc[j]]
    concordant = [(val[i] < val[j]) == (acc[i] > acc[j]) for i, j in pairs]
    full_pick = int(np.argmin(val))
    return {"top1_agreement": float(np.mean(hits)), "mean_regret": float(np.mean(regret)),
            "pairwise_agreement": float(np.mean(concordant)) if pairs else None,
            "all_runs_pick": rows[full_pick]["name"],
            "all_runs_pick_accuracy": float(acc[full_pick]), "n_subsets": len(hits)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0, help="sim population seed")
    ap.add_argument("--subset", type=int, default=4)
    ap.add_argument("--backbone", default="test_efficientnet")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "at_label_free")
    args = ap.parse_args()
    import astrotransfer as at

    args.out.mkdir(parents=True, exist_ok=True)
    src, tgt = stores(args.out, args.n, args.size, args.seed)
    runs = train_grid(args.out, src, tgt, args.backbone, args.pretrained)
    rows = []
    for run in runs:
        r = at.load_run(run).label_free_scores(tgt, source=src, split="all")
        r["name"] = run.name
        rows.append(r)
    print(f"\n{'run':<22}{'target acc':>11}" + "".join(f"{s:>10}" for s in SCORES))
    for r in sorted(rows, key=lambda r: -r["target_accuracy"]):
        print(f"{r['name']:<22}{r['target_accuracy']:>11.3f}"
              + "".join(f"{r[s]:>10.4f}" for s in SCORES))
    best = max(rows, key=lambda r: r["target_accuracy"])
    print(f"\nwith target labels: {best['name']} ({best['target_accuracy']:.3f})")
    print(f"agreement with the label-based choice over all {args.subset}-run subsets of "
          f"{len(rows)} runs:")
    summary = {}
    for s in SCORES:
        a = agreement(rows, s, args.subset)
        summary[s] = a
        print(f"  {s:<8} top-1 {a['top1_agreement']:.0%} of {a['n_subsets']} subsets, "
              f"regret {a['mean_regret']:.3f}, pairwise {a['pairwise_agreement']:.0%}; "
              f"over all runs picks {a['all_runs_pick']} ({a['all_runs_pick_accuracy']:.3f})")
    (args.out / "label_free_selection.json").write_text(json.dumps(
        {"grid": GRID, "n": args.n, "size": args.size, "backbone": args.backbone,
         "subset": args.subset, "runs": rows, "agreement": summary}, indent=2, default=str))
    print(f"details in {args.out / 'label_free_selection.json'}")


if __name__ == "__main__":
    main()
