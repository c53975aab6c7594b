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
            "| confident-half acc | high-prob. test acc | Δ acc vs zero-shot (2 SE?) | "
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
            delta = f"{d:+.3f} (SE {se:.3f}{', beyond 2 SE' if sig else ''})"
        lines.append(
            f"| {label} | {fmt(_vals(results, key))} | {fmt(_vals(results, key, 'balanced'))} "
            f"| {comp} | {pur} | {fmt(_vals(results, key, 'top50'))} "
            f"| {fmt(_vals(results, key, 'accuracy', 'ceers_hp'))} | {delta} "
            f"| {statistics.mean(r['seconds'] for r in rs):.0f} |")
    return lines


def few_shot_table(results, ns) -> tuple[list[str], dict]:
    starts = (("imagenet", "ImageNet only"), ("gz1", "GZ1-trained"),
              ("adapted", "GZ1 + adaptation"))
    lines = ["| N labels | " + " | ".join(s for _, s in starts)
             + " | GZ1 − ImageNet (SE) | balanced acc, GZ1-trained |", "|" + "---|" * 6]
    zero = {"gz1": _vals(results, "zero-shot"), "adapted": None, "imagenet": None}
    curve = {k: {} for k, _ in starts}
    for n in (0, *ns):
        cells = []
        for key, _ in starts:
            v = (zero[key] if n == 0 else _vals(results, f"few-shot {key}", extra=n))
            curve[key][n] = _ms(v or [])
            cells.append(fmt(v or []) if v else ("chance" if key == "imagenet" else "see (b)"))
        if n == 0:
            diff = "—"
        else:
            d, se, sig = beyond_two_se(_vals(results, "few-shot gz1", extra=n),
                                       _vals(results, "few-shot imagenet", extra=n))
            diff = f"{d:+.3f} ({se:.3f}){' *' if sig else ''}"
        bal = fmt(_vals(results, "few-shot gz1", "balanced", extra=n)) if n else \
            fmt(_vals(results, "zero-shot", "balanced"))
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {diff} | {bal} |")
    return lines, curve


def few_shot_answer(results, ns) -> str:
    beats = []
    for n in ns:
        d, se, sig = beyond_two_se(_vals(results, "few-shot gz1", extra=n),
                                   _vals(results, "few-shot imagenet", extra=n))
        beats.append((n, d, se, sig))
    last_sig = [n for n, _, _, sig in beats if sig]
    spread = "; ".join(f"N={n}: {d:+.3f} ± {se:.3f}" for n, d, se, _ in beats)
    if not last_sig:
        return (f"The GZ1-trained start never beats the ImageNet-only start by more than two "
                f"standard errors at any N measured (GZ1 − ImageNet accuracy, mean ± SE over "
                f"seeds: {spread}).")
    stop = next((n for n, _, _, sig in beats if n > max(last_sig)), None)
    tail = (f"from N = {stop} on it no longer does" if stop is not None else
            f"it still does at the largest N measured ({ns[-1]})")
    return (f"The GZ1-trained start beats the ImageNet-only start beyond two standard errors "
            f"up to N = {max(last_sig)} labelled CEERS objects; {tail} (GZ1 − ImageNet "
            f"accuracy, mean ± SE over seeds: {spread}).")


def rank_table(results, adapters) -> tuple[list[str], dict]:
    from scipy.stats import spearmanr

    keys = {k for _, k in method_rows(results, adapters)}
    rs = [r for r in results if r["key"][0] in keys and r.get("label_free")]
    acc = [r["scores"]["ceers"]["accuracy"] for r in rs]
    best = max(rs, key=lambda r: r["scores"]["ceers"]["accuracy"])
    lines = ["| score (lower = better) | Spearman ρ(score, −accuracy) | run picked | its "
             "test acc | best run by labels | its test acc |", "|" + "---|" * 6]
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
        lines.append(f"| {score} | {rho:+.2f} | {_name(pick)} | "
                     f"{pick['scores']['ceers']['accuracy']:.3f} | {_name(best)} | "
                     f"{best['scores']['ceers']['accuracy']:.3f} |")
    return lines, summary


def _name(r) -> str:
    return f"{r['key'][0]} seed {r['key'][-1]}"


# ---------------------------------------------------------------- plots


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
    src = (f"--source gz1.zarr --source-labels {gz1n} --epochs {p['src_epochs']} --seeds {seeds} "
           f"--image-size {p['train_size']}")
    lines += ["", "# 2. (a) zero-shot: GZ1 only, trained on the one-band mean view of its colours",
              f"astrotransfer train {src} --band-policy mean --out runs/zero_shot",
              "# (b) label-free adaptation to the unlabelled CEERS pool"]
    lines += [f"astrotransfer train {src} --target pool.zarr --adapt {a} --out runs/{a.replace('+', '_')}"
              for a in p["adapters"]]
    lines += ["# (e) which run would we pick without labels? (lower is better)",
              "astrotransfer rank runs/zero_shot "
              + " ".join(f"runs/{a.replace('+', '_')}" for a in p["adapters"])
              + " --target pool.zarr --source gz1.zarr --score dev",
              "# scored on the labelled CEERS test split (and its high-probability subset)",
              "astrotransfer evaluate runs/zero_shot --data ceers.zarr",
              "astrotransfer evaluate runs/zero_shot --data ceers_hp.zarr",
              "", "# 3. (c) few-shot: N CEERS labels, three starts at equal steps "
              "(seed 0 shown; a fifth of N validates)",
              f"for n in {ns}; do",
              f"  astrotransfer train --source ceers.zarr --source-labels $n --image-size {p['train_size']} --min-steps "
              f"{p['fs_steps']} --seed 0 --out runs/fs_imagenet_n$n",
              f"  astrotransfer train --source ceers.zarr --source-labels $n --image-size {p['train_size']} --min-steps "
              f"{p['fs_steps']} --seed 0 --pretrained runs/zero_shot/seed_0 --out runs/fs_gz1_n$n",
              f"  astrotransfer train --source ceers.zarr --source-labels $n --image-size {p['train_size']} --min-steps "
              f"{p['fs_steps']} --seed 0 --pretrained runs/{chosen.replace('+', '_')}/seed_0 --out runs/fs_adapted_n$n",
              "  astrotransfer evaluate runs/fs_gz1_n$n --data ceers.zarr", "done",
              "", "# 4. (d) recursive pseudo-labelling, continuing from the zero-shot run",
              f"astrotransfer train --source gz1.zarr --source-labels {gz1n} --target pool.zarr "
              f"--recursive {p['rounds']} --pseudo-top {p['pseudo_top']} --epochs "
              f"{p['round_epochs']} --image-size {p['train_size']} --pretrained runs/zero_shot/seed_0 --seed 0 "
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
    fs_lines, curve = few_shot_table(results, p["ns"])
    rank_lines, rank_summary = rank_table(results, p["adapters"])
    plot_few_shot(results, p["ns"], docs / f"ceers_few_shot{tag}.png", chance)
    plot_methods_and_rank(results, p["adapters"], docs / f"ceers_methods{tag}.png")
    plot_tsne(maps, docs / f"ceers_tsne{tag}.png")
    seps = [domain_separability(m) for m in maps]
    zs = _vals(results, "zero-shot")
    verdicts = []
    for a in (*p["adapters"], "recursive"):  # the recipe-check row is not an adapter
        d, se, sig = beyond_two_se(_vals(results, a), zs)
        verdicts.append(f"{a} {d:+.3f} ± {se:.3f}{' (beyond 2 SE)' if sig else ''}")
    winners = [v for v in verdicts if "beyond" in v and "+" in v.split(" ")[1]]
    rec_rounds = [r["rounds"] for r in results if r["key"][0] == "recursive"]
    lines = [
        "# GZ1 (SDSS) → JWST CEERS: transfer to a real new survey" + (
            " — QUICK SMOKE RUN (tiny sizes; numbers mean nothing)" if args.quick else ""),
        "",
        f"Regenerated by `tools/ceers_results.py{' --quick' if args.quick else ''}` in "
        f"{times['total'] / 60:.1f} min on this machine (2 CPU cores, shared with other jobs "
        f"while it ran; ingest {times['ingest']:.0f} s). Every number below was measured in that "
        f"run; results per run are in `ceers{tag}.json`.",
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
        f"ImageNet weights, the toolkit's default recipe, nothing tuned; {p['seeds']} seeds per "
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
        + (f"Yes: {'; '.join(winners)}." if winners else
           "No. " + "; ".join(verdicts) + ". Why: see the t-SNE map and the domain "
           "separability under (e)."),
        "",
        f"Recursive rounds (accuracy per round, seed-wise): "
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
        "`*`: GZ1-trained beats ImageNet only beyond two standard errors.",
        "",
        f"**Answer:** {few_shot_answer(results, p['ns'])}",
        "",
        f"![few-shot](ceers_few_shot{tag}.png)",
        "",
        "## (e) label-free model selection",
        "",
        "`rank`'s scores on the unlabelled pool for every (a), (b), (d) run, against the runs' "
        "accuracy on the labelled test split (which the scores never see).",
        "",
        *rank_lines,
        "",
        f"![t-SNE](ceers_tsne{tag}.png)",
        "",
        "How far apart the two surveys stay in feature space: a linear classifier telling "
        f"GZ1 from CEERS-pool features ({p['tsne_n']} objects each, 5-fold) is right "
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
