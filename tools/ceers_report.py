"""Tables, plots and the new user's commands of docs/results/ceers.md (tools/ceers_results.py).

Kept apart from the runner so the page can be redrawn from cached results without training:
every number comes from the results list the runner collected.
"""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import numpy as np

CLASSES = ("elliptical", "spiral")


# ---------------------------------------------------------------- numbers


def _vals(results, key0, score="accuracy", store="ceers", extra=None):
    return [r["scores"][store][score] for r in results if r["key"][0] == key0
            and (extra is None or r["key"][1] == extra)]


def _ms(values) -> tuple[float, float, int]:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return float("nan"), float("nan"), 0
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0), len(v)


def fmt(values) -> str:
    m, s, n = _ms(values)
    return "—" if n == 0 else f"{m:.3f} ± {s:.3f}"


def beyond_two_se(a, b) -> tuple[float, float, bool]:
    """Mean difference a − b, its standard error over seeds, and whether it exceeds 2 SE."""
    (ma, sa, na), (mb, sb, nb) = _ms(a), _ms(b)
    se = math.sqrt(sa ** 2 / max(na, 1) + sb ** 2 / max(nb, 1))
    return ma - mb, se, (ma - mb) > 2 * se and na > 1 and nb > 1


def _class(r, store, what, c):
    return r["scores"][store][what].get(c)


# ---------------------------------------------------------------- tables


def method_rows(results, adapters) -> list[tuple[str, str]]:
    return [("(a) zero-shot: GZ1 only", "zero-shot"),
            ("(a') zero-shot, recipe check: no layer decay, plateau schedule",
             "zero-shot, no layer decay, plateau"),
            *[(f"(b) adapt: {a}", a) for a in adapters],
            ("(d) recursive pseudo-labels (last round)", "recursive")]


def method_table(results, adapters) -> list[str]:
    head = ("| method | CEERS test acc | balanced acc | completeness E / S | purity E / S "
            "| confident-half acc | high-prob. test acc | Δ vs zero-shot: acc / bal. acc | "
            "train s |")
    lines = [head, "|" + "---|" * 9]
    zs = _vals(results, "zero-shot")
    for label, key in method_rows(results, adapters):
        rs = [r for r in results if r["key"][0] == key]
        if not rs:
            continue
        comp = " / ".join(fmt([_class(r, "ceers", "completeness", c) for r in rs])
                          for c in CLASSES)
        pur = " / ".join(fmt([_class(r, "ceers", "purity", c) for r in rs]) for c in CLASSES)
        if key == "zero-shot":
            delta = "—"
        else:
            d, se, sig = beyond_two_se(_vals(results, key), zs)
            db, seb, sigb = beyond_two_se(_vals(results, key, "balanced"),
                                          _vals(results, "zero-shot", "balanced"))
            delta = (f"{d:+.3f} (SE {se:.3f}{', beyond 2 SE' if sig else ''}) / "
                     f"{db:+.3f} (SE {seb:.3f}{', beyond 2 SE' if sigb else ''})")
        lines.append(
            f"| {label} | {fmt(_vals(results, key))} | {fmt(_vals(results, key, 'balanced'))} "
            f"| {comp} | {pur} | {fmt(_vals(results, key, 'top50'))} "
            f"| {fmt(_vals(results, key, 'accuracy', 'ceers_hp'))} | {delta} "
            f"| {statistics.mean(r['seconds'] for r in rs):.0f} |")
    return lines


def few_shot_table(results, ns) -> list[str]:
    """Accuracy and balanced accuracy per start and N: the test split is 69 % elliptical,
    so accuracy alone rewards a run that calls everything elliptical."""
    starts = (("imagenet", "ImageNet only"), ("gz1", "GZ1-trained"),
              ("adapted", "GZ1 + adaptation"))
    lines = ["| N labels | " + " | ".join(f"{s} acc | {s} bal. acc" for _, s in starts)
             + " | GZ1 − ImageNet acc (SE) | GZ1 − ImageNet bal. acc (SE) |",
             "|" + "---|" * 9]
    zero = {"gz1": "zero-shot", "adapted": None, "imagenet": None}
    for n in (0, *ns):
        cells = []
        for key, _ in starts:
            for score in ("accuracy", "balanced"):
                v = (_vals(results, zero[key], score) if n == 0 and zero[key] else
                     _vals(results, f"few-shot {key}", score, extra=n) if n else [])
                cells.append(fmt(v) if v else ("no training" if key == "imagenet" else
                                               "see (b)"))
        diffs = []
        for score in ("accuracy", "balanced"):
            if n == 0:
                diffs.append("—")
                continue
            d, se, sig = beyond_two_se(_vals(results, "few-shot gz1", score, extra=n),
                                       _vals(results, "few-shot imagenet", score, extra=n))
            worse = -d > 2 * se
            diffs.append(f"{d:+.3f} ({se:.3f}){' *' if sig else ' †' if worse else ''}")
        lines.append(f"| {n} | " + " | ".join(cells + diffs) + " |")
    return lines


def few_shot_answer(results, ns) -> str:
    """One sentence per score: where the GZ1 start is better, tied, worse (2 SE rule)."""
    parts = []
    for score, name in (("accuracy", "accuracy"), ("balanced", "balanced accuracy")):
        rows = []
        for n in ns:
            d, se, sig = beyond_two_se(_vals(results, "few-shot gz1", score, extra=n),
                                       _vals(results, "few-shot imagenet", score, extra=n))
            rows.append((n, d, se, "better" if sig else "worse" if -d > 2 * se else "tied"))
        better = [n for n, *_, v in rows if v == "better"]
        worse = [n for n, *_, v in rows if v == "worse"]
        if not better:
            verdict = "never beats the ImageNet-only start beyond two standard errors"
        elif better[-1] == ns[-1]:
            verdict = (f"beats the ImageNet-only start beyond two standard errors at N = "
                       f"{', '.join(map(str, better))} and has not stopped helping by the "
                       f"largest N measured ({ns[-1]})")
        else:
            stop = next(n for n in ns if n > better[-1])
            verdict = (f"beats the ImageNet-only start beyond two standard errors at N = "
                       f"{', '.join(map(str, better))} and stops beating it from N = {stop}")
        if worse:
            verdict += f"; it is worse beyond two standard errors at N = {', '.join(map(str, worse))}"
        spread = "; ".join(f"N={n}: {d:+.3f} ± {se:.3f}" for n, d, se, _ in rows)
        parts.append(f"In {name} the GZ1-trained start {verdict} (GZ1 − ImageNet, mean ± SE "
                     f"over seeds: {spread}).")
    return " ".join(parts)


def rank_table(results, adapters) -> tuple[list[str], dict]:
    lines = ["| runs ranked | score (lower = better) | Spearman ρ(score, −accuracy) | run "
             "picked | its test acc | best run by labels | its test acc |", "|" + "---|" * 7]
    summary = {}
    everything = {k for _, k in method_rows(results, adapters)}
    for name, keys in (("all (a), (b), (d)", everything), ("adapters (b) only", set(adapters))):
        summary[name] = _rank_rows(results, keys, name, lines)
    return lines, summary


def _rank_rows(results, keys, name, lines) -> dict:
    from scipy.stats import spearmanr

    rs = [r for r in results if r["key"][0] in keys and r.get("label_free")]
    acc = [r["scores"]["ceers"]["accuracy"] for r in rs]
    best = max(rs, key=lambda r: r["scores"]["ceers"]["accuracy"])
    summary = {}
    for score in ("dev", "entropy", "im", "mmd"):
        vals = [r["label_free"][score] for r in rs]
        ok = [i for i, v in enumerate(vals) if v is not None and math.isfinite(v)]
        if len(ok) < 3:
            continue
        rho = spearmanr([vals[i] for i in ok], [-acc[i] for i in ok]).statistic
        pick = rs[min(ok, key=lambda i: vals[i])]
        summary[score] = {"rho": rho, "picked": _name(pick), "picked_acc": pick["scores"][
            "ceers"]["accuracy"], "best": _name(best), "best_acc": best["scores"]["ceers"][
            "accuracy"]}
        lines.append(f"| {name} | {score} | {rho:+.2f} | {_name(pick)} | "
                     f"{pick['scores']['ceers']['accuracy']:.3f} | {_name(best)} | "
                     f"{best['scores']['ceers']['accuracy']:.3f} |")
    return summary


def _name(r) -> str:
    return f"{r['key'][0]} seed {r['key'][-1]}"


def adapters_vs_zero_shot(results, adapters) -> str:
    """The (b) verdict in accuracy and in balanced accuracy, and where a gain comes from:
    on a test split that is mostly one class, accuracy can rise by calling more objects
    the majority class, which balanced accuracy and per-class completeness expose."""
    out = []
    for score, name in (("accuracy", "accuracy"), ("balanced", "balanced accuracy")):
        zs = _vals(results, "zero-shot", score)
        rows = []
        for a in (*adapters, "recursive"):
            d, se, sig = beyond_two_se(_vals(results, a, score), zs)
            rows.append((a, d, se, sig))
        won = [f"{a} {d:+.3f} ± {se:.3f}" for a, d, se, sig in rows if sig]
        rest = [f"{a} {d:+.3f} ± {se:.3f}" for a, d, se, sig in rows if not sig]
        out.append(f"In {name}: " + (f"yes for {', '.join(won)}" if won else "none")
                   + (f" (within 2 SE: {', '.join(rest)})" if rest else "") + ".")
    comp = {k: [statistics.mean(_class(r, "ceers", "completeness", c) for r in results
                                if r["key"][0] == k) for c in CLASSES]
            for k in ("zero-shot", *adapters) if _vals(results, k)}
    out.append("Completeness elliptical / spiral: " + "; ".join(
        f"{k} {e:.2f} / {sp:.2f}" for k, (e, sp) in comp.items()) + ".")
    return " ".join(out)


# ---------------------------------------------------------------- commands


def cli_flags(options: dict) -> str:
    parts = []
    for k, v in options.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            parts.append(flag)
        elif isinstance(v, (tuple, list)):
            parts.append(f"{flag} {','.join(map(str, v))}")
        else:
            parts.append(f'{flag} "{v}"' if any(c in str(v) for c in " =,") else f"{flag} {v}")
    return " ".join(parts)


def user_commands(p: dict, cmds: dict, data: Path, chosen: str) -> list[str]:
    def rel(o):
        return {k: (str(v).replace(str(data), "../shared/data") if isinstance(v, Path) else v)
                for k, v in o.items()}

    size, seeds, gz1n = p["size"], p["seeds"], p["gz1_n"]
    ns = " ".join(map(str, p["ns"]))
    lines = ["```bash", "# 1. stores (splits fixed by object id; CEERS 60/20/20)"]
    lines += [f"astrotransfer ingest images --out {k}.zarr {cli_flags(rel(o))}"
              for k, o in cmds.items()]
    recipe = "--layer-decay 0.7 --scheduler cosine"  # the study's recipe (STUDY_RECIPE)
    src = (f"--source gz1.zarr --source-labels {gz1n} --epochs {p['src_epochs']} --seeds {seeds} "
           f"--image-size {p['train_size']} {recipe}")
    lines += ["", "# 2. (a) zero-shot: GZ1 only, trained on the one-band mean view of its colours",
              f"astrotransfer train {src} --band-policy mean --out runs/zero_shot",
              "# (b) label-free adaptation to the unlabelled CEERS pool"]
    lines += [f"astrotransfer train {src} --target pool.zarr --adapt {a} --out runs/{a.replace('+', '_')}"
              for a in p["adapters"]]
    lines += ["# (e) which run would we pick without labels? (lower is better)",
              "astrotransfer rank runs/zero_shot "
              + " ".join(f"runs/{a.replace('+', '_')}" for a in p["adapters"])
              + " --target pool.zarr --source gz1.zarr --score dev --split test",
              "# scored on the labelled CEERS test split (and its high-probability subset)",
              "astrotransfer evaluate runs/zero_shot --data ceers.zarr",
              "astrotransfer evaluate runs/zero_shot --data ceers_hp.zarr",
              "", "# 3. (c) few-shot: N CEERS labels, three starts at equal steps "
              "(seed 0 shown; a fifth of N validates)",
              f"for n in {ns}; do",
              f"  astrotransfer train --source ceers.zarr --source-labels $n --image-size {p['train_size']} {recipe} --min-steps "
              f"{p['fs_steps']} --seed 0 --out runs/fs_imagenet_n$n",
              f"  astrotransfer train --source ceers.zarr --source-labels $n --image-size {p['train_size']} {recipe} --min-steps "
              f"{p['fs_steps']} --seed 0 --pretrained runs/zero_shot/seed_0 --out runs/fs_gz1_n$n",
              f"  astrotransfer train --source ceers.zarr --source-labels $n --image-size {p['train_size']} {recipe} --min-steps "
              f"{p['fs_steps']} --seed 0 --pretrained runs/{chosen.replace('+', '_')}/seed_0 --out runs/fs_adapted_n$n",
              "  astrotransfer evaluate runs/fs_gz1_n$n --data ceers.zarr", "done",
              "", "# 4. (d) recursive pseudo-labelling, continuing from the zero-shot run",
              f"astrotransfer train --source gz1.zarr --source-labels {gz1n} --target pool.zarr "
              f"--recursive {p['rounds']} --pseudo-top {p['pseudo_top']} --epochs "
              f"{p['round_epochs']} --image-size {p['train_size']} {recipe} --pretrained runs/zero_shot/seed_0 --seed 0 "
              f"--out runs/recursive",
              "astrotransfer evaluate runs/recursive --data ceers.zarr", "```",
              f"(Stores of {size} px stamps; every run trains and is scored at "
              f"`--image-size {p['train_size']}`, which `evaluate` takes from the run.)"]
    return lines


def dump(results, path: Path) -> None:
    path.write_text(json.dumps([{**r, "key": list(r["key"])} for r in results], indent=1))


def write_report(results, maps, choice, p, cmds, args, work: Path, times: dict) -> None:
    """docs/results/ceers.md (+ ceers.json and three PNGs) from the collected results."""
    import astrotransfer as at

    docs = args.docs
    docs.mkdir(parents=True, exist_ok=True)
    tag = "_quick" if args.quick else ""
    ceers = at.open_store(work / "ceers.zarr")
    sizes = {k: at.open_store(work / f"{k}.zarr") for k in ("gz1", "ceers_hp", "pool")}
    test = ceers.labelled_indices("test", "the study")
    counts = np.bincount(ceers.column("label")[test], minlength=2)
    chance = counts.max() / counts.sum()
    hp_test = len(sizes["ceers_hp"].labelled_indices("test", "the study"))
    fs_lines = few_shot_table(results, p["ns"])
    rank_lines, rank_summary = rank_table(results, p["adapters"])
    from ceers_plots import domain_separability, plot_few_shot, plot_methods_and_rank, plot_tsne

    plot_few_shot(results, p["ns"], docs / f"ceers_few_shot{tag}.png", chance)
    plot_methods_and_rank(results, p["adapters"], docs / f"ceers_methods{tag}.png")
    plot_tsne(maps, docs / f"ceers_tsne{tag}.png")
    seps = [domain_separability(m) for m in maps]
    adapter_answer = adapters_vs_zero_shot(results, p["adapters"])
    rec_rounds = [r["rounds"] for r in results if r["key"][0] == "recursive"]
    lines = [
        "# GZ1 (SDSS) → JWST CEERS: transfer to a real new survey" + (
            " — QUICK SMOKE RUN (tiny sizes; numbers mean nothing)" if args.quick else ""),
        "",
        f"Regenerated by `tools/ceers_results.py{' --quick' if args.quick else ''}` on this "
        f"machine (2 CPU cores, shared with other jobs while it ran): the {len(results)} runs "
        f"took {sum(r['seconds'] for r in results) / 60:.0f} min of training in total over "
        f"{args.workers} one-thread workers, i.e. about "
        f"{sum(r['seconds'] for r in results) / 60 / args.workers:.0f} min of wall time, plus "
        f"ingest and scoring; this last invocation took {times['total'] / 60:.1f} min (finished "
        f"runs are reused, so a rerun only redraws). Results per run are in `ceers{tag}.json`.",
        "",
        "**Source**: Galaxy Zoo 1 SDSS colour images (`../shared/data/gz1_sdss`), elliptical vs "
        f"spiral, {p['gz1_n']} labelled objects of its train split (a fifth held out to "
        f"validate; the store holds {sizes['gz1'].n}), stores of {p['size']} px stamps (centre "
        f"212 px of 424, resized), runs at {p['train_size']} px, {p['src_epochs']} epochs. "
        f"**Target**: JWST CEERS NIRCam F200W greyscale stamps (`../shared/data/jwst_ceers`), "
        f"smooth → elliptical, featured → spiral, `unclear` dropped. **Test split: {len(test)} "
        f"CEERS objects** ({counts[0]} elliptical / {counts[1]} spiral; majority class "
        f"{chance:.3f}), fixed by object id, never trained on or used to choose anything; its "
        f"**high-probability subset** (≥ 80 % of the votes agree): {hp_test} objects. "
        f"Unlabelled pool: {sizes['pool'].n} CEERS stamps. Backbone: EfficientNet-Lite0 with "
        f"ImageNet weights, the recipe the toolkit defaulted to when the study ran (layer-wise lr "
        f"decay 0.7, cosine schedule, plain fine-tuning; every other option at its default; "
        f"nothing tuned; the defaults have since become no decay + plateau, row (a') being "
        f"part of the evidence, and LP-FT for sets under 1,000 objects, docs/training.md); "
        f"{p['seeds']} seeds per "
        f"row, mean ± std. Colour → one band: the engine's band policy trains the source on "
        f"the equal-weight mean of its bands (`band_policy: mean`, stored with each run).",
        "",
        "## (a), (b), (d) — no CEERS labels",
        "",
        *method_table(results, p["adapters"]),
        "",
        "Completeness = recall and purity = precision per class (E = elliptical, S = spiral); "
        "confident-half = accuracy on the 50 % of test objects the run is most sure of (the "
        "seeds' figure). Δ: difference of seed means against zero-shot with its standard error "
        "over seeds.",
        "",
        "**Does any label-free adapter beat zero-shot beyond two standard errors?** "
        + adapter_answer,
        "",
        "Recursive rounds (accuracy per round, seed-wise): "
        + "; ".join(" → ".join(f"{r['accuracy']:.3f}" for r in rr) for rr in rec_rounds),
        "",
        f"![methods](ceers_methods{tag}.png)",
        "",
        "## (c) few-shot: how many CEERS labels, and does GZ1 help?",
        "",
        f"Each N draws N labelled objects of the CEERS train split (by seed); a fifth of them "
        f"validates (checkpoint choice), the rest train. All three starts use the same steps "
        f"(at least {p['fs_steps']} optimizer steps, ≥ 3 epochs). The GZ1 + adaptation start is "
        f"the adapter the label-free score picked without labels: **{choice['chosen']}** "
        f"(mean {choice['score']} per adapter: "
        + ", ".join(f"{k} {v:.3g}" for k, v in choice["means"].items()) + ").",
        "",
        *fs_lines,
        "",
        "`*`: GZ1-trained better than ImageNet only beyond two standard errors; `†`: worse "
        "beyond two standard errors. N = 0 of the GZ1 start is the zero-shot run (a).",
        "",
        f"**Answer:** {few_shot_answer(results, p['ns'])}",
        "",
        f"How to read it: {chance:.0%} of the test objects are elliptical, so a run that calls "
        "nearly everything elliptical scores that in accuracy; balanced accuracy (the mean "
        "of the two completenesses, 0.5 = chance) is the score that says whether a start "
        "learned to find spirals.",
        "",
        f"![few-shot](ceers_few_shot{tag}.png)",
        "",
        "## (e) label-free model selection",
        "",
        "`rank`'s scores on the held-out quarter of the unlabelled pool (objects no adapter "
        "aligned and no recursive round pseudo-labelled) for every (a), (b), (d) run, against "
        "the runs' accuracy on the labelled test split, which the scores never see.",
        "",
        *rank_lines,
        "",
        f"![t-SNE](ceers_tsne{tag}.png)",
        "",
        "How far apart the two surveys stay in feature space: a linear classifier telling "
        f"GZ1 from CEERS-pool features (test splits, up to {p['tsne_n']} objects each, 5-fold) is right "
        + ", ".join(f"{sep:.1%} of the time for {m['key'].replace('_', ' ')}"
                    for m, sep in zip(maps, seps))
        + " (50 % would mean the domains are aligned).",
        "",
        "## A new user's commands",
        "",
        "Run from a checkout beside `../shared/data`, after `make venv` "
        "(`source .venv/bin/activate`):",
        "",
        *user_commands(p, cmds, args.data, choice["chosen"]),
        "",
    ]
    (docs / f"ceers{tag}.md").write_text("\n".join(lines))
    dump(results, docs / f"ceers{tag}.json")
    (docs / f"ceers{tag}_summary.json").write_text(json.dumps({
        "choice": choice, "rank": rank_summary, "domain_separability": dict(zip(
            [m["key"] for m in maps], seps)), "test_n": int(len(test)), "hp_test_n": hp_test,
        "minutes": times["total"] / 60}, indent=1, default=str))
    print(f"wrote {docs / f'ceers{tag}.md'}")
