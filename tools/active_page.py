"""docs/results/active.md and active.png from the numbers tools/active_results.py measured.

Only formatting: every number on the page comes from the results dict (saved beside it as
active.json), and every sentence that judges a result is computed from those numbers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

METRICS = {"bal_acc": "balanced accuracy", "acc": "accuracy"}
TITLES = {"ceers": "Real: GZ1 (SDSS) → JWST CEERS",
          "sim": "Simulated pair: sim SDSS → sim DES (other galaxies)"}


def _pm(m: float, s: float) -> str:
    return f"{m:.3f} ± {s:.3f}"


def _heldout_se(st: dict) -> float:
    """Binomial standard error of a balanced accuracy on the held-out set, at the
    ceiling's level: 1/K sqrt(sum_k r(1-r)/n_k)."""
    r = st["ceiling"]["bal_acc"]
    n = np.asarray(st["eval_counts"], dtype=float)
    return float(np.sqrt((r * (1 - r) / n[n > 0]).sum()) / (n > 0).sum())


def feature_lines(st: dict) -> list[str]:
    lines = ["| features | run | TTA views | pool-CV balanced acc (C) | held-out bal. acc / acc: "
             "source run alone | held-out bal. acc / acc: head on all pool labels |",
             "|---|---|---:|---|---|---|"]
    for name, f in st["features"].items():
        mark = " **(chosen)**" if name == st["chosen"] else ""
        z, a = f["zero_shot"], f["all_pool_labels"]
        lines.append(f"| {name}{mark} | `{f['run']}` | {f['tta']} | {f['cv_best']:.3f} "
                     f"(C={f['c']:g}) | {z['bal_acc']:.3f} / {z['acc']:.3f} | "
                     f"{a['bal_acc']:.3f} / {a['acc']:.3f} |")
    return lines


def metric_lines(res: dict, st: dict, metric: str) -> list[str]:
    summ, strategies = st["summary"][metric], list(st["curves"][metric])
    label, ref_n = METRICS[metric], st["ref_n"]
    lines = [f"#### Held-out {label} against the number of labels", "",
             "| labels | " + " | ".join(strategies) + " |",
             "|---:|" + "---|" * len(strategies)]
    for n in st["budgets"]:
        lines.append(f"| {n} | " + " | ".join(_pm(*summ["table"][s][str(n)]) for s in strategies)
                     + " |")
    lines += ["", f"Random selection reaches {summ['target']:.3f} {label} (mean of "
              f"{res['seeds']} seeds) with {ref_n} labels. Labels each strategy needs to reach "
              f"it (on the {res['batch']}-label grid; per seed: mean ± std over the seeds that "
              f"reach it within {st['grid'][-1]}):", "",
              f"| strategy | mean curve reaches it at | per seed | seeds reaching | its score at "
              f"{summ['at_half']['random']['n']} minus random's at {ref_n} (± SE) |",
              "|---|---:|---|---:|---|"]
    for s in strategies:
        c, h = summ["crossing"][s], summ["at_half"][s]
        per = (f"{c['seed_mean']:.0f} ± {c['seed_std']:.0f}" if c["seed_mean"] is not None
               else "never")
        diff = f"{h['delta']:+.3f}" + (f" ± {h['se']:.3f}" if h["se"] is not None else "")
        lines.append(f"| {s} | {c['mean_curve'] or 'never'} | {per} | "
                     f"{c['seeds_reaching']}/{res['seeds']} | {diff} |")
    rnd = summ["crossing"]["random"]
    if rnd["seed_mean"] is not None and rnd["seed_mean"] < 0.75 * ref_n:
        lines += ["", f"Read the crossings with care: random's own seeds reach its {ref_n}-label "
                  f"mean at {rnd['seed_mean']:.0f} ± {rnd['seed_std']:.0f} labels, so the curves "
                  f"are flat and noisy at this level (held-out n={st['n_eval']}) and a crossing "
                  f"counts noise as much as selection; the last column (a difference within ~2 "
                  f"SE of 0 means \"as good as random with twice the labels\") is the steadier "
                  f"reading."]
    best = summ["best"]
    if best:
        c = summ["crossing"][best]
        n = c["mean_curve"]
        lines += ["", f"**Answer ({label}):** the best strategy, `{best}`, needs **{n}** labels "
                  f"(per seed {c['seed_mean']:.0f} ± {c['seed_std']:.0f}, "
                  f"{c['seeds_reaching']}/{res['seeds']} seeds) to match random selection's "
                  f"{label} at {ref_n}: {n / ref_n:.0%} of the labels "
                  f"({'meets' if n <= ref_n / 2 else 'misses'} the goal of half or fewer); "
                  f"at {summ['at_half'][best]['n']} labels it scores "
                  f"{summ['at_half'][best]['delta']:+.3f} ± {summ['at_half'][best]['se']:.3f} "
                  f"against random at {ref_n}. "
                  f"\"Best\" is picked after seeing these held-out curves, which flatters it: a "
                  f"campaign has to commit to one strategy before it starts."]
    else:
        lines += ["", f"**Answer ({label}):** no active strategy's mean curve reaches random's "
                  f"{label} at {ref_n} within {st['grid'][-1]} labels."]
    return lines + [""]


def study_lines(res: dict, st: dict) -> list[str]:
    fl, ce = st["floor"], st["ceiling"]
    counts = ", ".join(f"{n} {c}" for n, c in zip(st["eval_counts"], st["classes"]))
    lines = [f"## {TITLES.get(st['title'], st['title'])}", "",
             f"- Source run `{st['run']}` ({st['backbone']}, trained on {st['source']}, classes "
             f"{', '.join(st['classes'])}), applied once to `{st['data']}` with {st['tta']} "
             f"test-time view(s); features frozen.",
             f"- Pool = train split, {st['n_pool']} objects; held-out = val + test splits, "
             f"**{st['n_eval']} objects** ({counts}; majority class {st['majority']:.3f}), "
             f"never selected or trained on. Oracle = the store's labels.",
             f"- After every batch of {res['batch']} labels: a class-weighted "
             f"(`class_weight=\"balanced\"`), standardised logistic regression, C={st['c']:g} "
             f"(chosen by pool CV), refitted on the frozen features.",
             f"- Standard errors are over seeds; every strategy is scored on the same held-out "
             f"objects, whose own sampling error (binomial, per class) is about "
             f"±{_heldout_se(st):.3f} in balanced accuracy: a property of the "
             f"{st['n_eval']}-object held-out set shared by all rows.",
             f"- **Floor** (source run alone, no labels of this survey): balanced acc "
             f"**{fl['bal_acc']:.3f}**, acc {fl['acc']:.3f}. **Ceiling** (head on all "
             f"{st['n_pool']} pool labels): balanced acc **{ce['bal_acc']:.3f}**, acc "
             f"{ce['acc']:.3f}.", ""]
    if len(st["features"]) > 1 or st["title"] == "ceers":
        lines += ["#### Which frozen features", "",
                  "Chosen by the first score column only (pool CV; the held-out columns are "
                  "shown for the record and chose nothing):", ""] + feature_lines(st) + [""]
    for m in METRICS:
        lines += metric_lines(res, st, m)
    return lines


def write_page(res: dict, out: Path) -> None:
    quick = " (QUICK smoke run: not a result)" if res["quick"] else ""
    lines = [f"# Active learning: which objects of a new survey to label{quick}", "",
             f"Generated by `{res['command']}` in {res['minutes']:.1f} min ({res['machine']}). "
             f"Per-seed curves (every batch) are in `active.json`.", "",
             f"A simulated labelling campaign: the store's labels play the person clicking. "
             f"Active strategies start with one class-balanced seeding batch (`balanced`); "
             f"`random` is random throughout. {res['seeds']} seeds per strategy; mean ± std "
             f"over seeds. **Balanced accuracy** (mean recall over the classes; 0.5 = chance "
             f"with two classes) is the primary score, plain accuracy the second. Strategies: "
             f"{', '.join(res['strategies'])}"
             f"{'' if 'margin' in res['strategies'] else ' (`margin` is left out: with two classes it ranks exactly as `uncertainty`)'}"
             f". Nothing was tuned on the held-out objects.", ""]
    for st in res["studies"].values():
        lines += study_lines(res, st)
    lines += ["![score vs labels](active.png)", ""]
    out.write_text("\n".join(lines))


def plot(res: dict, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = list(res["studies"].values())
    fig, axes = plt.subplots(len(studies), 2, figsize=(10, 3.6 * len(studies)), dpi=110,
                             squeeze=False)
    for row, st in zip(axes, studies):
        grid = np.asarray(st["grid"])
        for ax, m in zip(row, METRICS):
            for s, c in st["curves"][m].items():
                c = np.asarray(c)
                mean, sd = c.mean(0), c.std(0)
                line, = ax.plot(grid, mean, marker="o", ms=2, lw=2.2 if s == "random" else 1.3,
                                label=s, color="black" if s == "random" else None,
                                ls="--" if s == "margin" else "-")
                ax.fill_between(grid, mean - sd, mean + sd, alpha=0.1, color=line.get_color())
            ax.axhline(st["floor"][m], color="grey", ls=":", lw=1, label="source run alone")
            ax.axhline(st["ceiling"][m], color="brown", ls="-.", lw=1,
                       label="head on all pool labels")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ticks = [n for n in st["budgets"]]
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(n) for n in ticks])
            ax.set_xlabel("labels (head refitted after each batch)")
            ax.set_ylabel(f"held-out {METRICS[m]} (n={st['n_eval']})")
            ax.set_title(f"{TITLES.get(st['title'], st['title'])}, {res['seeds']} seeds ±1 std",
                         fontsize=8)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=6, loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
