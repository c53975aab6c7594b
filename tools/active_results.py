"""Regenerate docs/results/active.md (+ active.png, active.json): does choosing what to label
beat labelling at random, on a real new survey and on a simulated pair?

    nice -n 10 .venv/bin/python tools/active_results.py --data /work/scratch/ceers_64.zarr \\
        --features gz1_64=/work/scratch/label/gz1_mean_run \\
        --features gz1_64_tta8=/work/scratch/label/gz1_mean_run:8 --sim --work CACHE
    .venv/bin/python tools/active_results.py --quick --run RUN --data STORE --out /tmp/a.md

The simulated campaign (tools/active_study.py), with the store's labels as the oracle (the
person clicking): a source run is applied once to every object of the new survey; its
penultimate features stay frozen. Each strategy asks for labels in batches of `--batch` from
the train split (the pool), the oracle answers, and after every batch a head is refitted on
the frozen features of everything labelled so far (a class-weighted, standardised logistic
regression: what the label page's "retrain head" does). Scores are taken on the held-out val
+ test splits, which no strategy ever selects or trains on.

The primary score is **balanced accuracy** (mean recall over classes): on CEERS 69 % of the
objects are elliptical, so plain accuracy rewards a head that answers "elliptical"; plain
accuracy is reported second. Nothing is tuned on the held-out objects: which features (of
the `--features` candidates) and which C are chosen by stratified 5-fold CV of a head on all
pool labels (a validation split carved from the pool); batch 25 and the strategies'
settings were fixed before the first run.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from active_study import (FeatureSpec, campaign, observe_split, pool_cv, scores,  # noqa: E402
                          sim_pair, summarise)

ROOT = Path(__file__).resolve().parents[1]
# `margin` ranks exactly as `uncertainty` (entropy) with two classes: add it with --strategies
STRATEGIES = ("random", "uncertainty", "diversity", "hybrid", "badge", "density")
BUDGETS = (25, 50, 100, 200, 400, 800)
METRICS = {"bal_acc": "balanced accuracy", "acc": "accuracy"}


def choose_features(specs: list[FeatureSpec], work: Path) -> tuple[dict, dict, str]:
    """Observe every candidate and pick the one whose all-pool-labels head scores best in
    pool CV. Returns (arrays per name, report per name, chosen name)."""
    arrays, report = {}, {}
    for spec in specs:
        t = time.time()
        d = arrays[spec.name] = observe_split(spec, work)
        cv = pool_cv(d["pool_feats"], d["pool_y"])
        best_c = max(cv, key=cv.get)
        report[spec.name] = {"run": str(spec.run), "store": str(spec.store), "tta": spec.tta,
                             "cv": cv, "c": best_c, "cv_best": cv[best_c],
                             "zero_shot": scores(d["eval_y"], d["eval_probs"]),
                             "pool_zero_shot": scores(d["pool_y"], d["pool_probs"])}
        print(f"features {spec.name}: pool-CV balanced acc {cv[best_c]:.3f} at C={best_c} "
              f"({time.time() - t:.0f} s)", file=sys.stderr)
    chosen = max(report, key=lambda n: report[n]["cv_best"])
    return arrays, report, chosen


def study(title: str, specs: list[FeatureSpec], args, work: Path) -> dict:
    """One survey's study: features chosen on the pool, then every strategy x seed."""
    from astrotransfer import FrozenHead, load_run

    arrays, feat_report, chosen = choose_features(specs, work)
    d, c = arrays[chosen], feat_report[chosen]["c"]
    k = d["pool_probs"].shape[1]
    for name, dd in arrays.items():  # the ceiling of every candidate, for the record
        full = FrozenHead(k, feat_report[name]["c"]).fit(dd["pool_feats"], dd["pool_y"])
        feat_report[name]["all_pool_labels"] = scores(dd["eval_y"],
                                                      full.predict_proba(dd["eval_feats"]))
    n_pool = len(d["pool_y"])
    max_n = min(args.max_n, n_pool)
    grid = list(range(args.batch, max_n + 1, args.batch))
    if grid[-1] != max_n:
        grid.append(max_n)
    curves = {m: {} for m in METRICS}
    for s in args.strategies.split(","):
        for m in METRICS:
            curves[m][s] = []
        for seed in range(args.seeds):
            t = time.time()
            res = campaign(s, seed, d, max_n, args.batch, c)
            for m in METRICS:
                curves[m][s].append(res[m])
            print(f"{title} {s} seed {seed}: bal acc {res['bal_acc'][-1]:.3f} at {max_n} "
                  f"labels ({time.time() - t:.0f} s)", file=sys.stderr)
    spec = next(s for s in specs if s.name == chosen)
    info = load_run(spec.run).info
    ref_n = 400 if 400 in grid else grid[len(grid) // 2]
    budgets = [n for n in BUDGETS if n in grid] or grid
    return {"title": title, "features": feat_report, "chosen": chosen, "c": c,
            "run": str(spec.run), "data": str(spec.store), "tta": spec.tta,
            "backbone": info["backbone"], "classes": info["class_names"],
            "source": (info.get("source") or {}).get("survey", "?"),
            "n_pool": int(n_pool), "n_eval": int(len(d["eval_y"])),
            "eval_counts": np.bincount(d["eval_y"], minlength=k).tolist(),
            "majority": float(np.bincount(d["eval_y"]).max() / len(d["eval_y"])),
            "floor": feat_report[chosen]["zero_shot"],
            "ceiling": feat_report[chosen]["all_pool_labels"],
            "grid": grid, "ref_n": ref_n, "budgets": budgets, "curves": curves,
            "summary": {m: summarise(grid, curves[m], budgets, ref_n) for m in METRICS}}


def main(argv: list[str] | None = None) -> dict:
    from active_page import plot, write_page

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="labelled store of the new survey")
    ap.add_argument("--features", action="append", default=[],
                    help="candidate frozen features NAME=RUN[:TTA][@STORE] (repeatable); "
                         "the best by pool CV is used")
    ap.add_argument("--run", type=Path, default=None, help="one source run (= --features RUN)")
    ap.add_argument("--sim", action="store_true",
                    help="also run the study on a simulated pair built in --work")
    ap.add_argument("--sim-run", type=Path, default=None,
                    help="an existing source run trained on sim SDSS (64 px, population seed 0) "
                         "to use instead of training one")
    ap.add_argument("--out", type=Path, default=ROOT / "docs/results/active.md")
    ap.add_argument("--work", type=Path, default=None,
                    help="feature cache and sim pair [$TMPDIR/astrotransfer_active_cache]")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--max-n", type=int, default=800)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--quick", action="store_true",
                    help="2 seeds, up to 100 labels, a tiny sim pair: a smoke test")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.max_n = 2, min(args.max_n, 100)
    specs = [FeatureSpec.parse(f, args.data) for f in args.features]
    if args.run is not None:
        specs.insert(0, FeatureSpec(args.run.name, args.run, 1, args.data))
    if not specs:
        ap.error("name the source run: --run RUN or --features NAME=RUN[:TTA][@STORE]")
    t0 = time.time()
    work = args.work or Path(tempfile.gettempdir()) / "astrotransfer_active_cache"
    res = {"quick": args.quick, "seeds": args.seeds, "batch": args.batch,
           "strategies": args.strategies.split(","),
           "command": "python tools/active_results.py " + " ".join(
               argv if argv is not None else sys.argv[1:]),
           "machine": f"{os.cpu_count()} CPU cores, shared, OMP_NUM_THREADS=1, nice 10",
           "studies": {"ceers": study("ceers", specs, args, work)}}
    if args.sim:
        t = time.time()
        run, tgt = sim_pair(work, args.quick, args.sim_run)
        res["sim_build_s"] = time.time() - t
        res["studies"]["sim"] = study("sim", [FeatureSpec("sim_sdss_run", run, 1, tgt)],
                                      args, work)
    res["minutes"] = (time.time() - t0) / 60
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
    plot(res, args.out.with_suffix(".png"))
    write_page(res, args.out)
    print(f"wrote {args.out} ({res['minutes']:.1f} min)", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
