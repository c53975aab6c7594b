"""Recursive training (Khan et al. 2019): pseudo-label the target with the model, retrain.

Round 0 is an ordinary training run. Each later round k takes the previous round's model,
predicts the unlabelled target objects (train split) not yet pseudo-labelled, adds the
`pseudo_top` most confident ones of each predicted class to the training set with the
predicted class as label, and trains again starting from the previous round's best weights.
The target thereby contributes its own, survey-specific examples, at the price of the
model's mistakes: the per-round accuracy of the added labels is recorded whenever the
target store has labels, so the price can be seen.

The job folder holds its config.yaml (recursive: K), one run directory per round, the
pseudo-labels each round k >= 1 trains on and one record per finished round (see
`_round_record`); `engine.runs` owns that layout.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np

from ...config import TrainConfig
from ...store import CutoutStore, locked
from ..inference.streaming import check_compatible, load_run_model, stream_predictions
from ..runs import (ROUNDS_FILE, RunDir, atomic_write_text, pseudo_file, read_rounds, round_dir,
                   write_rounds)
from .seeds import open_job_dir, run_member
from .single_run import preflight, target_indices

log = logging.getLogger("astrotransfer")


def _predict(run_path: Path, store: CutoutStore, rows: np.ndarray) -> np.ndarray:
    model, info, _ = load_run_model(run_path)
    if len(rows) == 0:
        return np.zeros((0, info["num_classes"]), dtype=np.float32)
    bands = check_compatible(info, store)
    return np.concatenate([p for _, p, _ in stream_predictions(model, store, rows, bands,
                                                               info["image_size"])])


def select_confident(probs: np.ndarray, rows: np.ndarray, top: int) -> tuple[np.ndarray, np.ndarray]:
    """Per predicted class, the `top` rows with the highest probability of that class."""
    pred = probs.argmax(1)
    keep_rows, keep_labels = [], []
    for c in range(probs.shape[1]):
        members = np.flatnonzero(pred == c)
        best = members[np.argsort(-probs[members, c], kind="stable")[:top]]
        keep_rows.append(rows[best])
        keep_labels.append(np.full(len(best), c, dtype=np.int64))
    return np.concatenate(keep_rows), np.concatenate(keep_labels)


def _accuracy(store: CutoutStore, rows: np.ndarray, pred: np.ndarray,
              classes: list[str]) -> float | None:
    """Share of `pred` (run class indices) equal to the store's labels, matched by name."""
    from ..matching import run_labels

    truth = run_labels(classes, store, rows)
    mask = truth >= 0
    return float((truth[mask] == pred[mask]).mean()) if mask.any() else None


def _round_record(k: int, run: Path, target: CutoutStore, pseudo: dict, added: int,
                  added_acc: float | None, classes: list[str]) -> dict:
    epochs = RunDir(run).epochs()
    best = min(epochs, key=lambda r: r["val_loss"]) if epochs else {}
    test = target.indices("test")
    test = test[target.column("label")[test] >= 0]
    acc = None
    if len(test):
        acc = _accuracy(target, test, _predict(run, target, test).argmax(1), classes)
    rows = np.array(sorted(pseudo), dtype=np.int64)
    return {"round": k, "run": run.name, "n_pseudo": len(pseudo), "n_added": added,
            "added_label_accuracy": added_acc,
            "pseudo_label_accuracy": (_accuracy(target, rows, np.array([pseudo[r] for r in rows]),
                                                classes) if len(rows) else None),
            "source_val_acc": best.get("val_acc"), "epochs": len(epochs),
            "target_test_accuracy": acc, "n_target_test": int(len(test))}


def train_recursive(cfg: TrainConfig, resume: bool = False) -> RunDir:
    """Round 0 and `cfg.recursive` pseudo-labelling rounds in one job folder (resumable)."""
    checked = preflight(cfg)
    target: CutoutStore = checked["target"]
    classes = checked["source"].class_names  # every round's run keeps the source's classes
    out = Path(cfg.out)
    open_job_dir(out, cfg, resume, ROUNDS_FILE)
    pool, _ = target_indices(target, cfg.target_labels, cfg.seed)
    with locked(out, "run directory"):
        records = {k: r for k, r in read_rounds(out).items() if k <= cfg.recursive}
        pseudo: dict[int, int] = {}
        prev: Path | None = None
        for k in range(cfg.recursive + 1):
            run = round_dir(out, k)
            member = dataclasses.replace(cfg, out=str(run), recursive=0, seeds=1)
            added, added_acc = 0, None
            if k > 0:
                pfile = pseudo_file(out, k)
                if pfile.exists():
                    data = json.loads(pfile.read_text())
                    pseudo = dict(zip(data["rows"], data["labels"]))
                    added, added_acc = data["n_added"], data["added_label_accuracy"]
                else:
                    rest = np.setdiff1d(pool, np.array(sorted(pseudo), dtype=np.int64))
                    rows, labels = select_confident(_predict(prev, target, rest), rest,
                                                    cfg.pseudo_top)
                    added, added_acc = len(rows), _accuracy(target, rows, labels, classes)
                    pseudo.update(zip(rows.tolist(), labels.tolist()))
                    keys = sorted(pseudo)
                    atomic_write_text(pfile, json.dumps({
                        "round": k, "from_run": prev.name, "rows": keys,
                        "labels": [pseudo[r] for r in keys], "n_added": added,
                        "added_label_accuracy": added_acc}))
                log.info("round %d: %d pseudo-labelled target objects (%d new, label accuracy "
                         "%s)", k, len(pseudo), added,
                         "n/a" if added_acc is None else f"{added_acc:.3f}")
                member = dataclasses.replace(member, pseudo_labels=str(pfile.resolve()),
                                             pretrained=str((prev / "best.pt").resolve()))
            run_member(member, resume)
            if k not in records:
                records[k] = _round_record(k, run, target, pseudo, added, added_acc, classes)
                write_rounds(out, records)
            rec = records[k]
            log.info("round %d: target test accuracy %s", k,
                     "n/a (no target labels)" if rec["target_test_accuracy"] is None
                     else f"{rec['target_test_accuracy']:.3f}")
            prev = run
    return RunDir(out)
