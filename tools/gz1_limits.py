"""What limits GZ1 elliptical-vs-spiral accuracy: resolution, ambiguity and label noise, measured.

    .venv/bin/python tools/gz1_limits.py                 # ~20 min on 2 cores
    .venv/bin/python tools/gz1_limits.py --quick --work W --docs D   # smoke sizes (the test)

Why: the recipe issue asks for GZ1 test accuracy >= 0.91 or, failing that, for what limits
it. This script regenerates docs/results/gz1_limits.md (with gz1_limits.json and
gz1_limits_errors.png) from the real images in ../shared/data/gz1_sdss, read in place:

(a) pixels on the galaxy: the recipe's row of docs/results/recipe.md (a) (lite0, ImageNet
    weights, 3 epochs, zero head, label smoothing, rotation/shift/zoom) at two centre crops
    of the 423 px stamp (212 px and 106 px; GZ1 stamps are scaled to each galaxy's
    Petrosian radius, so a crop is a fixed fraction of the galaxy) and two training sizes,
    3 seeds each; the configuration is chosen on the validation split, the test split is
    reported beside it and chooses nothing;
(b) where the errors are, by the Galaxy Zoo vote leaf each label came from (elliptical,
    clockwise or anticlockwise spiral, edge-on disk), for the 3-seed ensemble with test-time
    augmentation on the validation and test objects (no run trained on them);
(c) accuracy against confidence: the seeds' "most confident half" figure and the curve;
(d) labels contradicted with confidence: `astrotransfer.label_errors` (confident
    learning), and the share of objects the ensemble is unsure of;
(e) a sheet of random disagreements in both directions: the stamp the volunteers voted on
    beside the cutout the network is given;
(f) a check of (d) where the votes are known: the same recipe on JWST CEERS, whose folder
    ships the vote counts behind each label, and how contested the flagged labels were.

Uses the public API only (ingest, train, load_run, predict_array, label_errors). Finished
runs in --work are reused, so a killed call continues where it stopped.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per worker, before torch loads
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import SHARED_DATA  # noqa: E402

LABEL_MAP = "0=elliptical,1=spiral,2=spiral,3=spiral"
CEERS_MAP = "smooth=elliptical,featured=spiral"
LEAVES = {0: "elliptical", 1: "clockwise spiral", 2: "anticlockwise spiral", 3: "edge-on disk"}
RECIPE = dict(backbone="tf_efficientnet_lite0", pretrained="auto", epochs=3, batch_size=32,
              label_smoothing=0.1, augment=["flip", "rotate", "shift", "zoom"],
              layer_decay=1.0, scheduler="plateau", head_init="zero", channels_last=True,
              device="cpu", num_workers=0)
#: (centre crop of the 423 px stamp, store size, training size)
FULL = dict(configs=[(212, 64, 40), (106, 64, 40), (212, 64, 64), (106, 64, 64),
                     (106, 96, 96)],
            seeds=(0, 1, 2), recipe=RECIPE, sheet=8, ceers=(212, 64, 64))
QUICK = dict(configs=[(212, 32, 32), (106, 32, 32)], seeds=(0,), sheet=4, ceers=(212, 32, 32),
             recipe={**RECIPE, "backbone": "test_efficientnet", "pretrained": "none",
                     "epochs": 1})


def store_path(work: Path, crop: int, size: int) -> Path:
    return work / f"gz1_crop{crop}_{size}px.zarr"


def config_name(cfg: list) -> str:
    survey = f"{cfg[0]}: " if isinstance(cfg[0], str) else ""
    crop, size, image = cfg[-3:]
    return f"{survey}crop {crop} px → store {size} px → trained at {image} px"


def ingest_job(job: dict) -> str:
    import astrotransfer as at

    out = Path(job["out"])
    if (out / "zarr.json").exists() and at.open_store(out).attrs.get("complete"):
        return str(out)
    if job.get("survey") == "ceers":  # as docs/results/ceers.md ingests it
        ceers = Path(job["data"]) / "jwst_ceers"
        at.ingest("images", out, images=ceers / "images", catalog=ceers / "labels.csv",
                  id_column="id", label_column="label", label_map=CEERS_MAP,
                  drop_unmapped=True, crop=job["crop"], size=job["size"],
                  survey_name="jwst-ceers", split_fractions="0.6,0.2,0.2", workers=1)
        return str(out)
    gz1 = Path(job["data"]) / "gz1_sdss"
    at.ingest("images", out, images=gz1 / "images", catalog=gz1 / "labels.csv",
              id_column="objid", label_column="gz1_class", label_map=LABEL_MAP,
              drop_unmapped=True, crop=job["crop"], size=job["size"],
              survey_name="sdss-gz1", workers=1)
    return str(out)


def train_job(job: dict) -> dict:
    """One run (resumed when killed), scored on val and test without TTA."""
    import astrotransfer as at

    out = Path(job["out"])
    done = out.parent / f".{out.name}.result.json"
    if done.exists():
        return json.loads(done.read_text())
    t0 = time.perf_counter()
    run = at.train(source=job["store"], out=out, seed=job["seed"], image_size=job["image"],
                   resume=(out / "last.pt").exists(), **job["recipe"])
    seconds = time.perf_counter() - t0
    store = at.open_store(job["store"])
    result = {"config": job["config"], "seed": job["seed"], "seconds": round(seconds, 1)}
    for split in ("val", "test"):
        rows = store.indices(split)
        y = store.column("label")[rows]
        rows, y = rows[y >= 0], y[y >= 0]
        p = run.predict_array(store.read_images(rows))
        result[split] = float((p.argmax(1) == y).mean())
        result[f"n_{split}"] = int(len(y))
    done.write_text(json.dumps(result))
    return result


def ensemble_job(job: dict) -> dict:
    """The seeds' mean probabilities with TTA x8 on the val + test objects of one config."""
    import astrotransfer as at

    cache = Path(job["cache"])
    if cache.exists():
        return json.loads(cache.read_text())
    store = at.open_store(job["store"])
    rows = np.sort(np.concatenate([store.indices("val"), store.indices("test")]))
    y = store.column("label")[rows]
    rows, y = rows[y >= 0], y[y >= 0]
    x = store.read_images(rows)
    probs = np.mean([at.load_run(r).predict_array(x, tta=job["tta"]) for r in job["runs"]], 0)
    out = {"object_id": [str(i) for i in store.column("object_id")[rows]],
           "label": y.tolist(), "probs": probs.tolist(),
           "class_names": list(store.attrs["class_names"])}
    cache.write_text(json.dumps(out))
    return out


# ---------------------------------------------------------------- analysis


def test_ids(store: str) -> set[str]:
    import astrotransfer as at

    st = at.open_store(store)
    return {str(i) for i in st.column("object_id")[st.indices("test")]}


def gz1_leaves(data: Path) -> dict[str, int]:
    with open(data / "gz1_sdss" / "labels.csv", newline="") as f:
        return {r["objid"]: int(r["gz1_class"]) for r in csv.DictReader(f)}


def analyse(ens: dict, leaves: dict[str, int], test_ids: set[str]) -> dict:
    import astrotransfer as at

    y, p = np.asarray(ens["label"]), np.asarray(ens["probs"])
    pred, conf = p.argmax(1), p.max(1)
    test = np.array([i in test_ids for i in ens["object_id"]])
    leaf = np.array([leaves[i] for i in ens["object_id"]])
    by_leaf = []
    for code, name in LEAVES.items():
        m = leaf == code
        if m.any():
            by_leaf.append({"leaf": name, "n": int(m.sum()),
                            "error": float((pred[m] != y[m]).mean()),
                            "mean_p_label": float(p[m, y[m]].mean())})
    order = np.argsort(-conf, kind="stable")
    coverage = []
    for frac in (1.0, 0.9, 0.75, 0.5, 0.25):
        top = order[: max(1, int(round(frac * len(y))))]
        coverage.append({"fraction": frac, "n": int(len(top)),
                         "accuracy": float((pred[top] == y[top]).mean()),
                         "min_confidence": float(conf[top].min())})
    est = at.label_errors(y, p)
    wrong = pred != y
    return {"n": int(len(y)), "accuracy": float((~wrong).mean()), "by_leaf": by_leaf,
            "n_test": int(test.sum()), "test_accuracy": float((~wrong[test]).mean()),
            "coverage": coverage, "error_rate": est["error_rate"],
            "ambiguous": est["ambiguous"], "n_issues": int(len(est["issues"])),
            "errors_unsure": float((wrong & (conf < 0.8)).sum() / max(1, wrong.sum())),
            "counts": est["counts"].tolist()}


def vote_check(ens: dict, data: Path) -> dict:
    """Do the objects confident learning flags have doubtful labels? CEERS ships the vote
    counts behind each label, so the share of smooth+featured votes that went to the label
    says how contested it was; compared between flagged and unflagged objects."""
    import astrotransfer as at
    from scipy.stats import mannwhitneyu

    with open(data / "jwst_ceers" / "labels.csv", newline="") as f:
        votes = {r["id"]: r for r in csv.DictReader(f)}
    y, p = np.asarray(ens["label"]), np.asarray(ens["probs"])
    names = ens["class_names"]
    column = {"elliptical": "n_smooth", "spiral": "n_featured"}
    n_for = np.array([float(votes[i][column[names[k]]]) for i, k in zip(ens["object_id"], y)])
    n_both = np.array([float(votes[i]["n_smooth"]) + float(votes[i]["n_featured"])
                       for i in ens["object_id"]])
    agree = n_for / np.maximum(n_both, 1)
    est = at.label_errors(y, p)
    flagged = np.zeros(len(y), bool)
    flagged[est["issues"]] = True
    wrong = p.argmax(1) != y
    bins = []
    for lo, hi in ((0.5, 0.6), (0.6, 0.7), (0.7, 0.8), (0.8, 0.9), (0.9, 1.0001)):
        m = (agree >= lo) & (agree < hi)
        if m.any():
            bins.append({"agreement": f"{lo:.0%}–{min(hi, 1):.0%}", "n": int(m.sum()),
                         "error": float(wrong[m].mean()), "flagged": float(flagged[m].mean())})
    both = flagged.any() and (~flagged).any()
    return {"n": int(len(y)), "accuracy": float((~wrong).mean()),
            "error_rate": est["error_rate"], "ambiguous": est["ambiguous"],
            "n_flagged": int(flagged.sum()),
            "agreement_flagged": float(agree[flagged].mean()) if flagged.any() else None,
            "agreement_unflagged": float(agree[~flagged].mean()) if (~flagged).any() else None,
            "p_value": float(mannwhitneyu(agree[flagged], agree[~flagged]).pvalue)
            if both else None, "bins": bins}


def error_sheet(ens: dict, data: Path, store: Path, image: int, crop_shown: int, n: int,
                out: Path, seed: int = 0) -> None:
    """Random disagreements, each as the volunteers' stamp above the network's cutout."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    import astrotransfer as at

    y, p = np.asarray(ens["label"]), np.asarray(ens["probs"])
    pred, names = p.argmax(1), ens["class_names"]
    st = at.open_store(store)
    row_of = {str(i): k for k, i in enumerate(st.column("object_id"))}
    rng = np.random.default_rng(seed)
    groups = [(g, np.where((y == g) & (pred != g))[0]) for g in range(len(names))]
    fig, axes = plt.subplots(2 * len(groups), n, figsize=(1.6 * n, 3.4 * len(groups)),
                             squeeze=False)
    for gi, (g, idx) in enumerate(groups):
        pick = rng.choice(idx, min(n, len(idx)), replace=False) if len(idx) else []
        for col in range(n):
            top, bottom = axes[2 * gi, col], axes[2 * gi + 1, col]
            top.axis("off")
            bottom.axis("off")
            if col >= len(pick):
                continue
            i = pick[col]
            oid = ens["object_id"][i]
            stamp = Image.open(data / "gz1_sdss" / "images" / f"{oid}.jpeg").convert("RGB")
            c0 = (stamp.size[0] - crop_shown) // 2
            top.imshow(stamp.crop((c0, c0, c0 + crop_shown, c0 + crop_shown)))
            top.set_title(f"{names[g]} → {names[pred[i]]}\np={p[i, pred[i]]:.2f}", fontsize=7)
            cut = st.read_images(np.array([row_of[oid]]))[0]
            rgb = Image.fromarray((np.clip(cut.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8))
            bottom.imshow(rgb.resize((image, image), Image.BILINEAR), interpolation="nearest")
    fig.suptitle("Disagreements at random (label → ensemble's class). Top: the centre "
                 f"{crop_shown} px of the stamp\nthe volunteers voted on; below: the {image} px "
                 "cutout the network is given", fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


# ---------------------------------------------------------------- the page


def _pm(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def config_rows(results: list[dict], configs: list) -> list[dict]:
    rows = []
    for cfg in configs:
        mine = [r for r in results if tuple(r["config"]) == tuple(cfg)]
        rows.append({"config": list(cfg), "seeds": len(mine),
                     "val": [r["val"] for r in mine], "test": [r["test"] for r in mine],
                     "seconds": [r["seconds"] for r in mine],
                     "n_val": mine[0]["n_val"], "n_test": mine[0]["n_test"]})
    return rows


def write_page(docs: Path, summary: dict, quick: bool) -> Path:
    rows, chosen, base = summary["configs"], summary["chosen"], summary["baseline"]
    lines = ["# What limits GZ1 elliptical vs spiral: measured", ""]
    if quick:
        lines += ["**QUICK SMOKE RUN: tiny sizes, random-init test network; the numbers mean "
                  "nothing.** The real page is docs/results/gz1_limits.md.", ""]
    lines += [
        f"Regenerated by `tools/gz1_limits.py` ({summary['run_minutes']:.0f} run-minutes of "
        f"training in all; the last call took {summary['minutes']:.0f} min, reusing finished "
        f"runs; {summary['machine']}). Real SDSS Galaxy Zoo 1 stamps (`../shared/data/gz1_sdss`, "
        "read in place), elliptical (vote leaf 0) vs spiral (leaves 1-3), leaves 4 and 5 "
        "dropped; splits 80/10/10 by id hash (the splits of docs/results/recipe.md); the "
        f"recipe of recipe.md (a)'s default row, {summary['recipe']}. The question: the "
        "recipe issue's bar is 0.91 on the test split; the best measured is 0.86-0.87. "
        "Why, and is it the images, the labels or the method?", ""]
    lines += answer_lines(summary)
    lines += [
        "## (a) Pixels on the galaxy", "",
        "GZ1 stamps are 423 px, scaled to each galaxy's Petrosian radius, so a centre crop "
        "is a fixed fraction of the galaxy: the 106 px crop gives the galaxy twice the "
        "pixels of the 212 px crop at the same store size. Chosen on the validation split; "
        f"the test split ({rows[0]['n_test']} objects) only reports.", "",
        f"| configuration | seeds | validation ({rows[0]['n_val']}) | test "
        f"({rows[0]['n_test']}) | train time per run (s) |",
        "|---|---|---|---|---|"]
    for r in rows:
        mark = " **(chosen on validation)**" if r["config"] == chosen else ""
        lines.append(f"| {config_name(r['config'])}{mark} | {r['seeds']} | {_pm(r['val'])} | "
                     f"{_pm(r['test'])} | {np.mean(r['seconds']):.0f} |")
    lines += ["", "## (b)-(d) Where the errors are, for the ensemble of each configuration", "",
              "The seeds' mean probabilities with test-time augmentation ×8, on the "
              "validation and test objects together (no run trained on them). 'Unsure' is "
              "the share of objects below every class's confidence threshold in confident "
              "learning (Northcutt et al. 2021), which are counted as neither right nor "
              "wrong labels; 'labels contradicted' is its estimate of wrong labels.", ""]
    shown = [("baseline", base)] + ([("chosen_ensemble", chosen)] if chosen != base else [])
    for key, title in shown:
        a = summary["analysis"][key]
        lines += [f"### {config_name(title)}", "",
                  f"{a['n']} objects, accuracy {a['accuracy']:.3f} (on the test split alone, "
                  f"{a['n_test']} objects: **{a['test_accuracy']:.3f}**); errors made at "
                  f"confidence < 0.8: {a['errors_unsure']:.0%} of all errors; labels "
                  f"contradicted with confidence: **{a['error_rate']:.1%}** estimated "
                  f"({a['n_issues']} flagged); unsure: {a['ambiguous']:.0%} of objects.", "",
                  "| GZ1 vote leaf of the label | objects | error rate | mean p(label) |",
                  "|---|---|---|---|"]
        lines += [f"| {b['leaf']} | {b['n']} | {b['error']:.3f} | {b['mean_p_label']:.3f} |"
                  for b in a["by_leaf"]]
        lines += ["", "| most confident | objects | accuracy | lowest confidence kept |",
                  "|---|---|---|---|"]
        lines += [f"| {c['fraction']:.0%} | {c['n']} | {c['accuracy']:.3f} | "
                  f"{c['min_confidence']:.3f} |" for c in a["coverage"]]
        lines.append("")
    lines += ["## (e) The disagreements, looked at", "",
              f"![random disagreements]({summary['sheet']})", "",
              "<!-- observations:begin -->", summary.get("observations", ""),
              "<!-- observations:end -->", ""]
    lines += ceers_lines(summary["ceers"])
    page = docs / ("gz1_limits_quick.md" if quick else "gz1_limits.md")
    page.write_text("\n".join(lines))
    return page


def ceers_lines(c: dict) -> list[str]:
    lines = [
        "## (f) Does the estimate point at doubtful labels? A check where the votes are known",
        "",
        "GZ1's folder has only each galaxy's plurality answer. CEERS (JWST NIRCam, "
        "`../shared/data/jwst_ceers`) ships the vote counts behind each label, so the share "
        "of smooth + featured votes that went to the label says how contested it was. The "
        "same recipe trained on the CEERS train split (60/20/20 as in docs/results/ceers.md; "
        f"validation {_pm(c['val'])}, test {_pm(c['test'])} over {len(c['test'])} seeds); "
        f"its ensemble with TTA ×8 on the {c['n']} validation and test objects "
        f"(accuracy {c['accuracy']:.3f}) flags {c['n_flagged']} labels "
        f"(estimated label-error rate {c['error_rate']:.1%}, unsure {c['ambiguous']:.0%}).",
        ""]
    if c["agreement_flagged"] is not None and c["agreement_unflagged"] is not None:
        lines += [f"Flagged labels had **{c['agreement_flagged']:.0%}** of the votes behind "
                  f"them, unflagged ones **{c['agreement_unflagged']:.0%}** (Mann-Whitney "
                  f"p = {c['p_value']:.1g}).", ""]
    lines += ["| votes behind the label | objects | model error rate | flagged |",
              "|---|---|---|---|"]
    lines += [f"| {b['agreement']} | {b['n']} | {b['error']:.3f} | {b['flagged']:.3f} |"
              for b in c["bins"]]
    points = (c["p_value"] is not None and c["p_value"] < 0.01
              and c["agreement_flagged"] < c["agreement_unflagged"])
    top = c["bins"][-1] if c["bins"] else None
    lines += ["", ("So the flags do point at contested labels" if points else
                   "So the flags are not clearly more contested than the rest") +
              ", and the estimate is only as good as the model: " +
              (f"where {top['agreement']} of the votes agree, {top['flagged']:.0%} are still "
               "flagged, the model's own confident mistakes. " if top else "") +
              "With a weak model the rate is inflated by them; read it beside the model's "
              "accuracy, and look at the suspects `evaluate` lists rather than quoting the "
              "rate alone.", ""]
    return lines


def answer_lines(summary: dict) -> list[str]:
    """The page's reading of its own tables, every number taken from them."""
    rows = {tuple(r["config"]): r for r in summary["configs"]}
    base, best = summary["analysis"]["baseline"], summary["analysis"].get(
        "chosen_ensemble", summary["analysis"]["baseline"])
    b, c = rows[tuple(summary["baseline"])], rows[tuple(summary["chosen"])]

    def leaf(a: dict, name: str) -> dict:
        return next((x for x in a["by_leaf"] if x["leaf"] == name), {"n": 0, "error": 0.0})

    def spiral_error(a: dict) -> float:
        faces = [leaf(a, "clockwise spiral"), leaf(a, "anticlockwise spiral")]
        return sum(f["n"] * f["error"] for f in faces) / max(1, sum(f["n"] for f in faces))

    ell = leaf(best, "elliptical")
    ell_share = ell["n"] * ell["error"] / max(1e-9, best["n"] * (1 - best["accuracy"]))
    return [
        "## What it says", "",
        f"- **More pixels on the galaxy help a little, and not to 0.91.** From "
        f"{config_name(summary['baseline'])} to {config_name(summary['chosen'])} (chosen on "
        f"validation): validation {np.mean(b['val']):.3f} → {np.mean(c['val']):.3f}, test "
        f"{np.mean(b['test']):.3f} → {np.mean(c['test']):.3f} (means of {c['seeds']} seeds);"
        f" the {c['seeds']}-seed ensemble with TTA ×8 reaches **{best['test_accuracy']:.3f}** "
        "on the test split, the best GZ1 test figure measured so far.",
        f"- **What the pixels fix is the face-on spirals.** Galaxies volunteers called "
        f"clockwise or anticlockwise spirals (they saw the arms wind) were missed "
        f"{spiral_error(base):.0%} of the time at the baseline and {spiral_error(best):.0%} "
        f"with the chosen configuration; edge-on disks {leaf(base, 'edge-on disk')['error']:.0%}"
        f" → {leaf(best, 'edge-on disk')['error']:.0%}.",
        f"- **What they do not fix is the labelled ellipticals**: {leaf(base, 'elliptical')['error']:.0%}"
        f" → {ell['error']:.0%} of them are called spirals, {ell_share:.0%} of the remaining "
        "errors. The sheet below shows what many of them look like.",
        f"- **The errors are where the model is unsure**: {best['errors_unsure']:.0%} of them are "
        f"made at a confidence below 0.8, and the most confident half is right "
        f"{best['coverage'][3]['accuracy']:.3f} of the time (baseline "
        f"{base['coverage'][3]['accuracy']:.3f}): the seeds' ≥ 0.96 figure holds.",
        f"- **Labels contradicted with confidence: {base['error_rate']:.1%} (baseline) and "
        f"{best['error_rate']:.1%} (chosen)** by confident learning; the ensemble is unsure "
        f"of {best['ambiguous']:.0%} of the objects, where labels can be neither confirmed "
        "nor contradicted from these images. The estimates count the model's own confident "
        "mistakes as label errors (an upper bound on labels confidently wrong) and cannot "
        "see wrong labels the model agrees with, such as faint spirals that look smooth to "
        "volunteers and network alike at SDSS depth (the bias Galaxy Zoo's debiased vote "
        "fractions correct for).",
        *_ceers_bullet(summary["ceers"]), ""]


def _ceers_bullet(c: dict) -> list[str]:
    if c["agreement_flagged"] is None or c["agreement_unflagged"] is None:
        return []
    return [f"- **Where the votes can be checked (section (f), CEERS)** flagged labels had "
            f"{c['agreement_flagged']:.0%} of the votes behind them against "
            f"{c['agreement_unflagged']:.0%} for the rest (p = {c['p_value']:.1g}); the rate "
            "also counts the model's mistakes, more so the weaker the model."]


def _keep_observations(page: Path) -> str:
    """The hand-written reading of the sheets survives a regeneration."""
    if not page.exists():
        return "_Write what the sheet shows here._"
    text = page.read_text()
    a, b = "<!-- observations:begin -->", "<!-- observations:end -->"
    return text.split(a, 1)[1].split(b, 1)[0].strip() if a in text and b in text else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke-test sizes (a minute)")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "gz1_limits",
                    help="stores, runs and caches (reused on the next call)")
    ap.add_argument("--data", type=Path, default=SHARED_DATA)
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--workers", type=int, default=2, help="parallel one-thread runs")
    args = ap.parse_args()
    if not (args.data / "gz1_sdss" / "labels.csv").is_file():
        sys.exit(f"gz1_limits: real data not found under {args.data}/gz1_sdss; pass --data")
    plan = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    args.docs.mkdir(parents=True, exist_ok=True)
    stores = sorted({(c, s) for c, s, _ in plan["configs"]})
    with ProcessPoolExecutor(args.workers) as pool:
        list(pool.map(ingest_job, [{"out": str(store_path(args.work, c, s)), "crop": c,
                                    "size": s, "data": str(args.data)} for c, s in stores]))
        ceers_store = str(args.work / "ceers_crop{}_{}px.zarr".format(*plan["ceers"][:2]))
        pool.submit(ingest_job, {"out": ceers_store, "crop": plan["ceers"][0],
                                 "size": plan["ceers"][1], "data": str(args.data),
                                 "survey": "ceers"}).result()
        ceers_jobs = [{"config": ["ceers", *plan["ceers"]], "seed": seed,
                       "image": plan["ceers"][2], "recipe": plan["recipe"],
                       "store": ceers_store, "out": str(args.work / "runs" / "ceers"
                                                        / f"seed_{seed}")}
                      for seed in plan["seeds"]]
        jobs = [{"config": list(cfg), "seed": seed, "image": cfg[2], "recipe": plan["recipe"],
                 "store": str(store_path(args.work, cfg[0], cfg[1])),
                 "out": str(args.work / "runs" / f"crop{cfg[0]}_{cfg[1]}px_at{cfg[2]}px"
                            / f"seed_{seed}")}
                for cfg in plan["configs"] for seed in plan["seeds"]]
        results = []
        for i, res in enumerate(pool.map(train_job, jobs + ceers_jobs), 1):
            results.append(res)
            print(f"[{i}/{len(jobs) + len(ceers_jobs)}] {config_name(res['config'])} seed {res['seed']}: "
                  f"val {res['val']:.3f} test {res['test']:.3f} ({res['seconds']:.0f} s)",
                  flush=True)
        rows = config_rows([r for r in results if r["config"][0] != "ceers"], plan["configs"])
        chosen = max(rows, key=lambda r: np.mean(r["val"]))["config"]
        baseline = list(plan["configs"][0])
        ens_jobs = {}
        for key, cfg in (("baseline", baseline), ("chosen_ensemble", chosen)):
            runs = [j["out"] for j in jobs if j["config"] == cfg]
            tag = f"crop{cfg[0]}_{cfg[1]}px_at{cfg[2]}px"
            ens_jobs[key] = {"store": str(store_path(args.work, cfg[0], cfg[1])), "runs": runs,
                             "tta": 8, "cache": str(args.work / f"ensemble_{tag}.json")}
        ens_jobs["ceers"] = {"store": ceers_store, "runs": [j["out"] for j in ceers_jobs],
                             "tta": 8, "cache": str(args.work / "ensemble_ceers.json")}
        ensembles = dict(zip(ens_jobs, pool.map(ensemble_job, ens_jobs.values())))
    leaves = gz1_leaves(args.data)
    suffix = "_quick" if args.quick else ""
    sheet = f"gz1_limits_errors{suffix}.png"
    error_sheet(ensembles["baseline"], args.data, store_path(args.work, *baseline[:2]),
                baseline[2], 212, plan["sheet"], args.docs / sheet)
    import platform

    summary = {"configs": rows, "chosen": chosen, "baseline": baseline,
               "analysis": {k: analyse(e, leaves, test_ids(ens_jobs[k]["store"]))
                            for k, e in ensembles.items() if k != "ceers"},
               "ceers": {**vote_check(ensembles["ceers"], args.data),
                         "val": [r["val"] for r in results if r["config"][0] == "ceers"],
                         "test": [r["test"] for r in results if r["config"][0] == "ceers"]},
               "run_minutes": sum(r["seconds"] for r in results) / 60,
               "recipe": ", ".join(f"{k} {v}" for k, v in plan["recipe"].items()
                                   if k in ("backbone", "epochs", "batch_size")),
               "sheet": sheet, "minutes": (time.perf_counter() - t0) / 60,
               "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                          f"{args.workers} one-thread workers"}
    page = args.docs / f"gz1_limits{suffix}.md"
    summary["observations"] = _keep_observations(page)
    (args.docs / f"gz1_limits{suffix}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {write_page(args.docs, summary, args.quick)}")


if __name__ == "__main__":
    main()
