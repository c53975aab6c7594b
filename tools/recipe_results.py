"""Regenerate docs/results/recipe.md (and recipe.json): the fine-tuning recipe, measured.

    .venv/bin/python tools/recipe_results.py             # the full study (~1 h on 2 cores)
    .venv/bin/python tools/recipe_results.py --quick     # smoke test, minutes; says so

What it measures, every run an ordinary run directory under --work:

  (a) the ablation: the v0.1 defaults, the zero-initialised head alone, each other change
      alone on top of it, and the new defaults, >= 3 seeds at equal epochs, on real GZ1
      (elliptical vs spiral, 64 px, the store's fixed test split) and on the sim SDSS ->
      sim DES pair of the demo (target test split), with the wall time of every row;
  (b) test-time augmentation (8 flips x rotations) on the new defaults' runs, and its cost;
  (c) small data: 300 labelled objects of GZ1 and of JWST CEERS with the defaults, the
      validation-loss curve, the calibration after the run's own temperature scaling, and
      a linear probe on frozen features of the same backbone;
  (d) the offline ImageNet backbones lite0/lite1/lite2 with the defaults on GZ1;
  (e) the default recipe on GZ1 with larger stamps (96 and 128 px stores), nothing else
      set: the accuracy a new user gets, with and without TTA.

Runs go to a pool of single-threaded worker processes: on a small shared CPU two
one-thread trainings finish sooner than one two-thread one (OpenMP threads spin against
other processes). No hyper-parameter is tuned here: the defaults were set before the study
(from the literature), and test splits are only scored.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in workers
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

from bench_common import SHARED_DATA  # noqa: E402

#: the v0.1 defaults, as options of today's engine
OLD = dict(head_init="timm", layer_decay=1.0, scheduler="plateau", label_smoothing=0.0,
           augment=["flip", "rot90"])
#: every change together: the defaults of the first recipe (until layer decay and the cosine
#: schedule were measured to cost accuracy on the sim pair; today's defaults are the
#: "no decay, plateau" row). Its runs keep their folder name from when it was the default.
NEW = "all of the above (layer decay 0.7, cosine)"
FOLDERS = {NEW: "new_defaults__all_of_the_above"}
#: the options of NEW, pinned: the small-data and larger-stamp rows were measured with them
FIRST_RECIPE = {"layer_decay": 0.7, "scheduler": "cosine"}
ABLATION = {  # label -> options on top of the new defaults
    "v0.1 defaults": OLD,
    "+ zero head": {**OLD, "head_init": "zero"},
    "+ zero head, layer decay 0.7": {**OLD, "head_init": "zero", "layer_decay": 0.7},
    "+ zero head, cosine + 5 % warm-up": {**OLD, "head_init": "zero", "scheduler": "cosine"},
    "+ zero head, label smoothing 0.1": {**OLD, "head_init": "zero", "label_smoothing": 0.1},
    "+ zero head, any-angle rotation/shift/zoom": {
        **OLD, "head_init": "zero", "augment": ["flip", "rotate", "shift", "zoom"]},
    "+ zero head, label smoothing, rotation/shift/zoom (no decay, plateau)": {
        **OLD, "head_init": "zero", "label_smoothing": 0.1,
        "augment": ["flip", "rotate", "shift", "zoom"]},
    NEW: FIRST_RECIPE,
}
#: rows of the ablation run on the sim pair too (all of them: sim runs are cheap)
SIM_ROWS = tuple(ABLATION)
#: the rows the default hangs on get more sim seeds: the pair's seed spread is ~0.1
SIM_MORE_SEEDS = ("+ zero head", NEW,
                  "+ zero head, label smoothing, rotation/shift/zoom (no decay, plateau)")
#: section (c): method -> options. The plain fine-tune row is pinned to no LP-FT (it was the
#: default before LP-FT became the small-set default: the "new defaults" row)
SMALL_NEW = "fine-tune (new defaults)"
SMALL_METHODS = {
    "fine-tune (defaults)": FIRST_RECIPE,
    "fine-tune (today's defaults: no decay, plateau)": {"probe_epochs": 0},
    SMALL_NEW: {},
    "linear probe": {"stages": [{"train": "head", "epochs": None}]},
}
BACKBONES = ("tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2")

# Sizes: the full study fits ~1.5 h on 2 shared cores. The GZ1 ablation trains at 40 px
# (stores hold 64 px) and 3 epochs to afford 7 recipes x 3 seeds; the small-data runs use
# the store's 64 px and the defaults' own epochs.
FULL = dict(gz1_n=None, size=64, train_size=40, epochs=3, seeds=3, sim_seeds=8, sim_n=2000,
            sim_epochs=4,
            small_n=300, small_seeds=3, backbone_seeds=1, tta=8, batch_size=32,
            default_sizes=(96,))
QUICK = dict(gz1_n=300, size=32, train_size=32, epochs=1, seeds=2, sim_seeds=2, sim_n=160,
             sim_epochs=1,
             small_n=60, small_seeds=1, backbone_seeds=1, tta=2, batch_size=16,
             default_sizes=(40,))


# ---------------------------------------------------------------- work done in workers


def _quiet() -> None:
    import logging
    import warnings
    logging.getLogger("astrotransfer").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def ingest_job(job: dict) -> dict:
    """One store: a sim survey, or an image folder + catalog (optionally an id subset)."""
    _quiet()
    import astrotransfer as at

    out = Path(job["out"])
    if not out.exists():
        at.ingest(job["survey"], out, split_fractions=tuple(job["splits"]), **job["options"])
    return {"key": job["key"]}


def train_job(job: dict) -> dict:
    """Train one run (resuming a killed attempt) and score it on each store of job['eval']."""
    _quiet()
    import shutil

    import astrotransfer as at

    cfg = dict(job["cfg"])
    out = Path(cfg["out"])
    done = out.parent / f".{out.name}.result.json"
    if done.exists():
        result = json.loads(done.read_text())
        if job.get("unseen") and "unseen" not in result["scores"]:  # scored after the fact
            result["scores"]["unseen"] = unseen_scores(at.load_run(out), job, result)
            done.write_text(json.dumps(result))
        return {**result, "key": job["key"]}
    if out.exists() and not (out / "last.pt").exists():
        shutil.rmtree(out)
    t0 = time.perf_counter()
    run = at.train(**cfg, resume=out.exists())
    result = {"seconds": round(time.perf_counter() - t0, 1), "epochs": run.epochs,
              "scores": {}}
    for name, (store, split, tta) in job["eval"].items():
        t1 = time.perf_counter()
        if job.get("calibrate") and tta == 1:  # evaluate: + temperature scaling, label-free
            m = run.evaluate(store, split, report=False, tta=tta)
        else:
            m = run.metrics(store, split, tta=tta)
        result["scores"][name] = {**_slim(m), "eval_seconds": round(time.perf_counter() - t1, 1)}
        if job.get("ece_spread"):  # how much of the ECE the test split's size explains
            from recipe_small import ece_spread

            seen = run.observe(store, split)
            result["scores"][name]["ece_spread"] = ece_spread(
                seen["probs"], seen["labels"], result["scores"][name]["temperature"])
    if job.get("unseen"):
        result["scores"]["unseen"] = unseen_scores(run, job, result)
    done.write_text(json.dumps(result))
    return {**result, "key": job["key"]}


def unseen_scores(run, job: dict, result: dict) -> dict:
    """A small-data run scored on every labelled object of the full store it never saw
    (`recipe_small.unseen_rows`), after the temperature fitted by its test evaluation."""
    import astrotransfer as at
    from recipe_small import balanced_accuracy, ece_spread, unseen_rows

    store, subset = job["unseen"]
    seen = run.observe(store, "all")
    keep = unseen_rows(at.open_store(store), at.open_store(subset), seen["rows"],
                       seen["labels"])
    probs, y = seen["probs"][keep], seen["labels"][keep]
    temperature = result["scores"]["test"]["temperature"]
    pred = probs.argmax(axis=1)  # a temperature never changes the winning class
    return {"n": int(keep.sum()), "accuracy": float((pred == y).mean()),
            "balanced": balanced_accuracy(y, pred), "temperature": temperature,
            "ece_spread": ece_spread(probs, y, temperature),
            # per object (one digit per class index), for the paired comparison of methods:
            # the rows are the same for every run of one survey
            "pred": "".join(map(str, pred.tolist())), "labels": "".join(map(str, y.tolist()))}


def _slim(m: dict) -> dict:
    half = m["top_q"]["q"].index(0.5) if 0.5 in m["top_q"]["q"] else None
    cal = m.get("calibration") or {}
    return {"n": m["n"], "accuracy": m["accuracy"], "balanced": m["macro"]["recall"],
            "recall": m["recall"], "precision": m["precision"],
            "top50": m["top_q"]["accuracy"][half] if half is not None else None,
            "ece": m["ece"], "nll": m["nll"], "temperature": cal.get("temperature"),
            "ece_after": (cal.get("eval") or {}).get("ece_after"),
            "nll_after": (cal.get("eval") or {}).get("nll_after"),
            "calibrated_on": {k: v for k, v in (cal.get("fit") or {}).items()
                              if k in ("store", "split", "n")}}


# ---------------------------------------------------------------- the plan


def stores(p: dict, work: Path, data: Path) -> dict[str, str]:
    return {k: str(work / f"{k}.zarr") for k in
            ("gz1", "ceers", "sdss", "des", "gz1_small", "ceers_small",
             *(f"gz1_{size}" for size in p["default_sizes"]))}


def ingest_plan(p: dict, work: Path, data: Path) -> tuple[list[dict], list[dict]]:
    """(first wave, second wave): the small-data subsets need the full stores' splits."""
    s = stores(p, work, data)
    gz1 = data / "gz1_sdss"
    ceers = data / "jwst_ceers"
    first = [
        {"key": "gz1", "survey": "images", "out": s["gz1"], "splits": (0.8, 0.1, 0.1),
         "options": _images(gz1 / "images", _catalog(gz1 / "labels.csv", p["gz1_n"], work,
                                                     "gz1"), "objid", "gz1_class",
                            "0=elliptical,1=spiral,2=spiral,3=spiral", "r,g,b", "sdss-gz1", p)},
        {"key": "ceers", "survey": "images", "out": s["ceers"], "splits": (0.8, 0.1, 0.1),
         "options": _images(ceers / "images", ceers / "labels.csv", "id", "label",
                            "smooth=elliptical,featured=spiral", "L", "jwst-ceers", p)},
        *({"key": f"gz1_{size}", "survey": "images", "out": s[f"gz1_{size}"],
           "splits": (0.8, 0.1, 0.1),
           "options": _images(gz1 / "images", _catalog(gz1 / "labels.csv", p["gz1_n"], work,
                                                       "gz1"), "objid", "gz1_class",
                              "0=elliptical,1=spiral,2=spiral,3=spiral", "r,g,b", "sdss-gz1",
                              {**p, "size": size})} for size in p["default_sizes"]),
        {"key": "sdss", "survey": "sim", "out": s["sdss"], "splits": (0.6, 0.1, 0.3),
         "options": dict(instrument="sdss", n=p["sim_n"], seed=0, size=64)},
        {"key": "des", "survey": "sim", "out": s["des"], "splits": (0.5, 0.1, 0.4),
         "options": dict(instrument="des", n=p["sim_n"], seed=0, size=32)},
    ]
    second = []
    for name, folder, id_col, label_col, label_map, bands, survey in (
            ("gz1", gz1, "objid", "gz1_class", "0=elliptical,1=spiral,2=spiral,3=spiral",
             "r,g,b", "sdss-gz1"),
            ("ceers", ceers, "id", "label", "smooth=elliptical,featured=spiral", "L",
             "jwst-ceers")):
        catalog = work / f"{name}_small.csv"
        second.append({"key": f"{name}_small", "survey": "images", "out": s[f"{name}_small"],
                       "splits": (0.8, 0.2, 0.0), "subset_of": s[name], "n": p["small_n"],
                       "catalog_in": str(folder / "labels.csv"), "catalog": str(catalog),
                       "id_column": id_col,
                       "options": _images(folder / "images", catalog, id_col, label_col,
                                          label_map, bands, survey, p)})
    return first, second


def _images(images, catalog, id_col, label_col, label_map, bands, survey, p) -> dict:
    return dict(images=str(images), catalog=str(catalog), id_column=id_col,
                label_column=label_col, label_map=label_map, drop_unmapped=True, crop=212,
                size=p["size"], bands=bands, survey_name=survey)


def _catalog(path: Path, n: int | None, work: Path, name: str) -> Path:
    if not n:
        return path
    lines = path.read_text().splitlines()
    out = work / f"{name}_head.csv"
    out.write_text("\n".join(lines[: n + 1]) + "\n")
    return out


def write_small_catalog(job: dict) -> None:
    """The first `n` objects of the full store's TRAIN split (in id order), so the small
    set's runs can be scored on the full store's untouched test split."""
    import csv

    import astrotransfer as at

    full = at.open_store(job["subset_of"])
    train = full.indices("train")
    ids = sorted(map(str, full.column("object_id")[train]))[: job["n"]]
    keep = set(ids)
    with open(job["catalog_in"], newline="") as fin, open(job["catalog"], "w", newline="") as fout:
        reader = csv.DictReader(fin)
        writer = csv.DictWriter(fout, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(r for r in reader if str(r[job["id_column"]]) in keep)


def train_plan(p: dict, work: Path, data: Path) -> list[dict]:
    s = stores(p, work, data)
    common = dict(batch_size=p["batch_size"], device="cpu", backbone=BACKBONES[0],
                  pretrained="auto")
    jobs = []
    for label, opts in ABLATION.items():
        tta = p["tta"] if label == NEW else 1
        sim_seeds = p["sim_seeds"] if label in SIM_MORE_SEEDS else p["seeds"]
        for seed in range(max(p["seeds"], sim_seeds)):
            gz1_eval = {"test": (s["gz1"], "test", 1)}
            sim_eval = {"target": (s["des"], "test", 1), "source": (s["sdss"], "test", 1)}
            if tta > 1:
                gz1_eval["test_tta"] = (s["gz1"], "test", tta)
                sim_eval["target_tta"] = (s["des"], "test", tta)
            if seed < p["seeds"]:
                jobs.append({"key": ["gz1", label, seed], "eval": gz1_eval, "cfg": dict(
                    common, **opts, source=s["gz1"], epochs=p["epochs"], seed=seed,
                    image_size=p["train_size"],
                    out=str(work / "gz1" / FOLDERS.get(label, _slug(label)) / f"seed_{seed}"))})
            if label not in SIM_ROWS or seed >= sim_seeds:
                continue
            jobs.append({"key": ["sim", label, seed], "eval": sim_eval, "cfg": dict(
                common, **opts, source=s["sdss"], target=s["des"], image_size=32,
                epochs=p["sim_epochs"], seed=seed,
                out=str(work / "sim" / FOLDERS.get(label, _slug(label)) / f"seed_{seed}"))})
    for backbone in BACKBONES[1:]:
        for seed in range(p["backbone_seeds"]):
            jobs.append({"key": ["backbone", backbone, seed],
                         "eval": {"test": (s["gz1"], "test", 1)}, "cfg": dict(
                             common, backbone=backbone, source=s["gz1"], epochs=p["epochs"],
                             image_size=p["train_size"], seed=seed, out=str(work / "backbones" / backbone / f"seed_{seed}"))})
    for name in ("gz1", "ceers"):
        for seed in range(p["small_seeds"]):
            for method, opts in SMALL_METHODS.items():
                jobs.append({"key": ["small", name, method, seed], "calibrate": True,
                             "ece_spread": method == SMALL_NEW,
                             "unseen": (s[name], s[f"{name}_small"]),
                             "eval": {"test": (s[name], "test", 1)}, "cfg": dict(
                                 common, **opts, source=s[f"{name}_small"], seed=seed,
                                 out=str(work / "small" / name / _slug(method) / f"seed_{seed}"))})
    for size in p["default_sizes"]:
        store = s[f"gz1_{size}"]
        jobs.append({"key": ["default", size, 0], "calibrate": True,
                     "eval": {"test": (store, "test", 1), "test_tta": (store, "test", p["tta"])},
                     "cfg": dict(source=store, device="cpu", seed=0, **FIRST_RECIPE,
                                 out=str(work / "default" / f"gz1_{size}px"))})
    # breadth first: every row's seed 0 before any row's seed 1, so a study stopped by
    # --max-minutes still has every row, with fewer seeds; within a seed the longest first
    order = {"default": 0, "backbone": 1, "gz1": 2, "small": 3, "sim": 4}
    return sorted(jobs, key=lambda j: (j["key"][-1], order[j["key"][0]]))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


# ---------------------------------------------------------------- running


def run_all(p: dict, work: Path, data: Path, workers: int,
            max_minutes: float | None = None) -> list[dict]:
    work.mkdir(parents=True, exist_ok=True)
    first, second = ingest_plan(p, work, data)
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(ingest_job, first))
        for job in second:
            if not Path(job["out"]).exists():
                write_small_catalog(job)
        list(pool.map(ingest_job, second))
        jobs = train_plan(p, work, data)
        results = []
        deadline = time.monotonic() + 60 * max_minutes if max_minutes else None
        futures = [pool.submit(train_job, j) for j in jobs]
        for i, fut in enumerate(as_completed(futures), 1):
            res = fut.result()
            results.append(res)
            print(f"[{i}/{len(jobs)}] {res['key']} {res['seconds']} s", flush=True)
            if deadline and time.monotonic() > deadline:
                print(f"--max-minutes {max_minutes} reached: {len(jobs) - i} jobs not run; "
                      f"rerun to complete (finished jobs are kept)", flush=True)
                for other in futures:
                    other.cancel()
                break
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def speed_ratio(size: int, batch: int, rounds: int = 3) -> dict:
    """Training images/s of lite0 before (NCHW, per-sample torchvision augmentation) and
    after (channels-last, batched SkyAugment), side by side, round-robin, one thread."""
    import torch
    import torch.nn.functional as F
    import timm
    from torchvision.transforms import v2

    import astrotransfer as at

    torch.set_num_threads(1)
    old_aug = v2.Compose([v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()])
    new_aug = at.augmentation(["flip", "rotate", "shift", "zoom"])
    setups = {}
    for name, cl in (("before", False), ("after", True)):
        model = timm.create_model(BACKBONES[0], num_classes=2)
        if cl:
            model = model.to(memory_format=torch.channels_last)
        setups[name] = (model, torch.optim.AdamW(model.parameters(), 1e-3), cl)
    x = torch.rand(batch, 3, size, size)
    y = torch.randint(0, 2, (batch,))
    speeds: dict[str, list[float]] = {k: [] for k in setups}
    for _ in range(rounds):
        for name, (model, opt, cl) in setups.items():
            model.train()
            t0, steps = time.perf_counter(), 4
            for _ in range(steps):
                xb = (new_aug(x).contiguous(memory_format=torch.channels_last) if cl
                      else torch.stack([old_aug(xi) for xi in x]))
                loss = F.cross_entropy(model(xb), y)
                opt.zero_grad()
                loss.backward()
                opt.step()
            speeds[name].append(steps * batch / (time.perf_counter() - t0))
    med = {k: statistics.median(v) for k, v in speeds.items()}
    return {"size": size, "batch": batch, "before": round(med["before"], 1),
            "after": round(med["after"], 1), "ratio": round(med["after"] / med["before"], 2),
            "runs": {k: [round(v, 1) for v in vs] for k, vs in speeds.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "recipe")
    ap.add_argument("--data", type=Path, default=SHARED_DATA)
    ap.add_argument("--docs", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--max-minutes", type=float, default=None,
                    help="stop starting runs after this long and report what is done "
                         "(rows then have fewer seeds; the page says how many)")
    ap.add_argument("--keep-speed", action="store_true",
                    help="reuse the speed ratio of the existing recipe.json instead of timing "
                         "it again")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "tools"))  # recipe_small, recipe_report (workers too)
    if not (args.data / "gz1_sdss").is_dir() or not (args.data / "jwst_ceers").is_dir():
        sys.exit(f"real data not found under {args.data}; pass --data")
    p = QUICK if args.quick else FULL
    t0 = time.perf_counter()
    results = run_all(p, args.work, args.data, args.workers, args.max_minutes)
    old = args.docs / "recipe.json"
    if args.keep_speed and old.exists():  # a study of other rows: no re-timing on a busy machine
        speed = json.loads(old.read_text())["speed"]
    else:
        speed = speed_ratio(p["size"], p["batch_size"])
    from recipe_report import write_report

    write_report(results, p, speed, args, time.perf_counter() - t0)


if __name__ == "__main__":
    main()
