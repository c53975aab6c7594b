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
from gz1_limits_report import (config_name, config_rows, keep_observations,  # noqa: E402
                               write_page)

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


#: how each survey's folder is ingested (CEERS as docs/results/ceers.md ingests it)
INGEST = {
    "gz1": dict(folder="gz1_sdss", id_column="objid", label_column="gz1_class",
                label_map=LABEL_MAP, survey_name="sdss-gz1"),
    "ceers": dict(folder="jwst_ceers", id_column="id", label_column="label",
                  label_map=CEERS_MAP, survey_name="jwst-ceers", split_fractions="0.6,0.2,0.2"),
}


def ingest_job(job: dict) -> str:
    import astrotransfer as at

    out = Path(job["out"])
    if (out / "zarr.json").exists() and at.open_store(out).attrs.get("complete"):
        return str(out)
    options = dict(INGEST[job.get("survey", "gz1")])
    folder = Path(job["data"]) / options.pop("folder")
    at.ingest("images", out, images=folder / "images", catalog=folder / "labels.csv",
              drop_unmapped=True, crop=job["crop"], size=job["size"], workers=1, **options)
    return str(out)


def labelled_rows(store, splits: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Sorted rows of `splits` that carry a label, and their labels."""
    rows = np.sort(np.concatenate([store.indices(s) for s in splits]))
    y = store.column("label")[rows]
    return rows[y >= 0], y[y >= 0]


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
        rows, y = labelled_rows(store, (split,))
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
    rows, y = labelled_rows(store, ("val", "test"))
    x = store.read_images(rows)
    probs = np.mean([at.load_run(r).predict_array(x, tta=job["tta"]) for r in job["runs"]], 0)
    out = {"object_id": [str(i) for i in store.column("object_id")[rows]],
           "label": y.tolist(), "probs": probs.tolist(),
           "class_names": list(store.attrs["class_names"])}
    cache.write_text(json.dumps(out))
    return out


# ---------------------------------------------------------------- analysis


def test_split_ids(store: str) -> set[str]:
    import astrotransfer as at

    st = at.open_store(store)
    return {str(i) for i in st.column("object_id")[st.indices("test")]}


def gz1_leaves(data: Path) -> dict[str, int]:
    with open(data / "gz1_sdss" / "labels.csv", newline="") as f:
        return {r["objid"]: int(r["gz1_class"]) for r in csv.DictReader(f)}


def analyse(ens: dict, leaves: dict[str, int], in_test: set[str]) -> dict:
    import astrotransfer as at

    y, p = np.asarray(ens["label"]), np.asarray(ens["probs"])
    pred, conf = p.argmax(1), p.max(1)
    test = np.array([i in in_test for i in ens["object_id"]])
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
    # the vote-count column of each class, from the label map the store was ingested with
    column = {cls: f"n_{vote}" for vote, cls in (pair.split("=") for pair in CEERS_MAP.split(","))}
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
        every = jobs + ceers_jobs
        for i, res in enumerate(pool.map(train_job, every), 1):
            results.append(res)
            print(f"[{i}/{len(every)}] {config_name(res['config'])} seed {res['seed']}: "
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
               "analysis": {k: analyse(e, leaves, test_split_ids(ens_jobs[k]["store"]))
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
    summary["observations"] = keep_observations(page)
    (args.docs / f"gz1_limits{suffix}.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"wrote {write_page(args.docs, summary, args.quick)}")


if __name__ == "__main__":
    main()
