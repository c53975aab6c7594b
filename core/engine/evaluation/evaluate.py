"""`evaluate`: a run measured on a store's split, with metrics.json and a report.

Beyond the labelled metrics, every evaluation carries a `calibration` block (temperature
scaling fitted on a labelled validation split) and a `label_free` block (scores that need
no target labels; see `selection`), so a target survey without labels still gets numbers.

A run directory holding `seed_*/` sub-runs (each a normal run, as `train --seeds N` writes)
is evaluated as an ensemble: each seed gets its own metrics and report, and the parent gets
mean ± std over seeds (`aggregate`) and the metrics of the seed-averaged probabilities
(`ensemble`), since the ensemble is what a catalog built from these runs would use.
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...store import CutoutStore
from ..inference.observe import Observed, observe, subsample
from ..inference.streaming import check_compatible, load_run_model, stream_predictions
from ..runs import atomic_write_text, job_kind, load_checkpoint, round_runs, seed_runs
from .calibration import calibration_block
from .label_free import MAX_OBJECTS, label_free_scores, source_observations, source_store_of
from ..matching import run_labels

log = logging.getLogger("astrotransfer")


def predict_split(run_path: Path, data: Path, split: str = "test"):
    """(labels, probabilities, info, run, store) for the labelled objects of a split."""
    model, info, run = load_run_model(run_path)
    store = CutoutStore.open(data)
    bands = check_compatible(info, store)
    rows = store.labelled_indices(split, "evaluate")
    probs = np.concatenate([p for _, p, _ in stream_predictions(
        model, store, rows, bands, info["image_size"])])
    return run_labels(info["class_names"], store, rows), probs, info, run, store


def split_metrics(run_path: Path, store: CutoutStore, split: str = "test", tta: int = 1) -> dict:
    """compute_metrics of one run's best model on the labelled objects of a store's split.

    Lighter than `evaluate_run` (no calibration, label-free scores or report): studies score
    dozens of runs and need only the labelled numbers.
    """
    from .metrics import compute_metrics

    model, info, _ = load_run_model(run_path, tta=tta)
    rows = store.labelled_indices(split, "the study")
    bands = check_compatible(info, store)
    probs = np.concatenate([p for _, p, _ in stream_predictions(model, store, rows, bands,
                                                                info["image_size"])])
    return compute_metrics(run_labels(info["class_names"], store, rows), probs,
                           list(info["class_names"]))


@dataclass
class Evaluation:
    """One run's evaluation, with the per-object data an ensemble needs."""

    metrics: dict
    target: Observed  # every object of the split
    fit_probs: np.ndarray | None  # calibration data (labelled validation objects)
    fit_y: np.ndarray | None
    fit_on: dict
    run_path: Path
    info: dict


def _slug(data: Path, split: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(data).name}_{split}")


def _calibration_data(model, info, store: CutoutStore, data: Path, target: Observed,
                      split: str, source: CutoutStore | None, cache: dict, bands: list[int]):
    """Labelled validation objects to fit T on: the evaluated store's, else the source's."""
    if split == "val":
        lab = target.labelled()
        if len(lab.labels):
            return lab.probs, lab.labels, {"store": str(data), "split": "val"}
    for where in (store, source):
        if where is None:
            continue
        key = (str(Path(where.path).resolve()), "val")
        if key not in cache:
            rows = where.indices("val")
            rows = rows[where.column("label")[rows] >= 0]
            cache[key] = observe(model, info, where, subsample(rows, MAX_OBJECTS),
                                 bands=bands if where is store else None)
        obs = cache[key]
        if len(obs.labels):
            return obs.probs, obs.labels, {"store": str(where.path), "split": "val"}
    return None, None, {"reason": "neither the evaluated store nor the run's source store has "
                                  "labelled validation objects"}


def evaluate_one(run_path: Path, data: Path, split: str = "test", report: bool = True,
                 max_objects: int = MAX_OBJECTS, tta: int = 1) -> Evaluation:
    model, info, run = load_run_model(run_path, tta=tta)
    store = CutoutStore.open(data)
    bands = check_compatible(info, store)
    rows = store.indices(split)
    if len(rows) == 0:
        raise UserError(f"store {data} has no objects in split '{split}'; try --split all")
    target = observe(model, info, store, rows, bands=bands)
    lab = target.labelled()
    names = list(info["class_names"])
    if len(lab.labels):
        from .metrics import compute_metrics
        metrics = compute_metrics(lab.labels, lab.probs, names)
        metrics["label_errors"] = _label_errors(store, lab, names, split)
    else:
        from .metrics import entropy_summary
        metrics = {"n": 0, "n_classes": len(names), "class_names": names,
                   "entropy": entropy_summary(target.probs)}
    source, reason = source_store_of(info)
    cache: dict = {}
    s_train, s_val = source_observations(model, info, source, max_objects, 0, cache)
    fit_probs, fit_y, fit_on = _calibration_data(model, info, store, data, target, split,
                                                 source, cache, bands)
    metrics["calibration"] = calibration_block(fit_probs, fit_y, fit_on, lab.probs, lab.labels,
                                               {"store": str(data), "split": split})
    metrics["label_free"] = label_free_scores(target, s_train, s_val, max_objects,
                                              missing_source=reason)
    metrics.update({"n_objects": int(len(rows)), "n_labelled": int(len(lab.labels)),
                    "store": str(Path(data).resolve()), "split": split,
                    "survey": store.attrs.get("survey"), "run_id": info["run_id"]})
    out_dir = run.path / "eval" / _slug(data, split)
    metrics["tta"] = tta
    _write(run.path, out_dir, metrics)
    if report:
        from .report_sections import write_single_report

        write_single_report(out_dir, metrics, target, run, info, store, data, split)
    metrics["report_dir"] = str(out_dir)
    return Evaluation(metrics, target, fit_probs, fit_y, fit_on, run.path, info)


def _label_errors(store: CutoutStore, lab: Observed, names: list[str], split: str) -> dict:
    """Labels the run contradicts with confidence; in-sample when it trained on the split."""
    from .label_noise import label_errors_block

    ids = store.column("object_id")[lab.rows]
    return label_errors_block(lab.labels, lab.probs, ids, names,
                              in_sample=split in ("train", "all"))


def _write(run_path: Path, out_dir: Path, metrics: dict) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics, indent=2, default=float)
    atomic_write_text(out_dir / "metrics.json", text)
    atomic_write_text(run_path / "metrics.json", text)


def evaluate_seeds(run_path: Path, seeds: list[Path], data: Path, split: str = "test",
                   report: bool = True, tta: int = 1) -> dict:
    from .metrics import (aggregate_metrics, compute_metrics, information_maximization,
                          prediction_entropy)

    unfinished = [s for s in seeds if not ((s / "best.pt").exists() or (s / "last.pt").exists())]
    if unfinished:
        raise UserError(f"seed run {unfinished[0]} has no checkpoint yet; finish the job with "
                        f"`astrotransfer train --out {run_path} --resume`")
    for s in seeds:  # every member readable before any member's report is written
        load_checkpoint(s / "best.pt" if (s / "best.pt").exists() else s / "last.pt")
    evals = [evaluate_one(s, data, split, report, tta=tta) for s in seeds]
    first = evals[0]
    for e in evals[1:]:
        if e.info["class_names"] != first.info["class_names"] or \
                not np.array_equal(e.target.rows, first.target.rows):
            raise UserError(f"seed runs {first.run_path.name} and {e.run_path.name} do not "
                            f"share classes and objects; a seed directory must hold runs of one "
                            f"config")
    agg = aggregate_metrics([e.metrics for e in evals])
    probs = np.mean([e.target.probs for e in evals], axis=0)
    ens_target = Observed(first.target.rows, first.target.feats, probs, first.target.labels)
    lab = ens_target.labelled()
    names = list(first.info["class_names"])
    ens = compute_metrics(lab.labels, lab.probs, names) if len(lab.labels) else {
        "n": 0, "n_classes": len(names), "class_names": names}
    if len(lab.labels):
        ens["label_errors"] = _label_errors(CutoutStore.open(data), lab, names, split)
    fits = [e for e in evals if e.fit_probs is not None]
    same_fit = fits and all(len(e.fit_y) == len(fits[0].fit_y) for e in fits)
    fit_p = np.mean([e.fit_probs for e in fits], axis=0) if same_fit else None
    ens["calibration"] = calibration_block(
        fit_p, fits[0].fit_y if same_fit else None, first.fit_on, lab.probs, lab.labels,
        {"store": str(data), "split": split})
    ens["label_free"] = {"lower_is_better": True, "entropy": prediction_entropy(probs),
                         "im": information_maximization(probs), "mmd": None, "dev": None,
                         "reason": "feature scores differ per seed; see aggregate"}
    run = Path(run_path)
    metrics = {"seeds": [s.name for s in seeds], "n_seeds": len(seeds), "aggregate": agg,
               "ensemble": ens, "per_seed": [_seed_row(e) for e in evals],
               "store": str(Path(data).resolve()), "split": split,
               "n_objects": int(len(ens_target.rows)), "n_labelled": int(len(lab.labels))}
    out_dir = run / "eval" / _slug(data, split)
    _write(run, out_dir, metrics)
    if report:
        from .report_sections import write_seeds_report

        write_seeds_report(out_dir, metrics, ens_target, evals, run, data, split)
    metrics["report_dir"] = str(out_dir)
    return metrics


def _seed_row(e: Evaluation) -> dict:
    m = e.metrics
    return {"seed_run": e.run_path.name, "run_id": m.get("run_id"),
            "accuracy": m.get("accuracy"), "macro_f1": (m.get("macro") or {}).get("f1"),
            "ece": m.get("ece"), "temperature": m["calibration"].get("temperature"),
            **{k: m["label_free"].get(k) for k in ("entropy", "im", "mmd", "dev")}}


def evaluate_run(run_path: Path, data: Path, split: str = "test", report: bool = True,
                 tta: int = 1) -> dict:
    """metrics.json for a run (or a multi-seed run directory) on a store's split.

    `tta` > 1 averages that many flips/rotations of each cutout (1, 2, 4 or 8)."""
    seeds = seed_runs(run_path)
    if seeds:
        return evaluate_seeds(Path(run_path), seeds, data, split, report, tta=tta)
    if job_kind(run_path) == "recursive":  # the job's model is its last round's
        rounds = round_runs(run_path)
        if not rounds:
            raise UserError(f"recursive job {run_path} has no finished round; resume it with "
                            f"`train ... --resume`")
        log.info("recursive job %s: evaluating its last round, %s", run_path, rounds[-1].name)
        run_path = rounds[-1]
    return evaluate_one(Path(run_path), data, split, report, tta=tta).metrics


__all__ = ["evaluate_run", "evaluate_one", "evaluate_seeds", "predict_split", "split_metrics"]
