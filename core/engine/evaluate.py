"""`evaluate`: a run's best model measured on a store's split, with metrics.json and a report."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import UserError
from ..store import CutoutStore
from .infer import check_compatible, load_run_model, stream_predictions
from .runs import atomic_write_text


def predict_split(run_path: Path, data: Path, split: str = "test"):
    """(labels, probabilities, info, run, store) for the labelled objects of a split."""
    model, info, run = load_run_model(run_path)
    store = CutoutStore.open(data)
    bands = check_compatible(info, store)
    rows = store.indices(split)
    labels = store.column("label")[rows]
    rows = rows[labels >= 0]
    if len(rows) == 0:
        raise UserError(f"store {data} has no labelled objects in split '{split}'; "
                        f"evaluate needs labels (try --split all)")
    probs = np.concatenate([p for _, p, _ in stream_predictions(
        model, store, rows, bands, info["image_size"])])
    return store.column("label")[rows], probs, info, run, store


def evaluate_run(run_path: Path, data: Path, split: str = "test", report: bool = True) -> dict:
    from .metrics import compute_metrics

    y, probs, info, run, store = predict_split(run_path, data, split)
    metrics = compute_metrics(y, probs, info["class_names"])
    metrics.update({"store": str(Path(data).resolve()), "split": split,
                    "survey": store.attrs.get("survey"), "run_id": info["run_id"]})
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(data).name}_{split}")
    out_dir = run.path / "eval" / slug
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(metrics, indent=2, default=float)
    atomic_write_text(out_dir / "metrics.json", text)
    atomic_write_text(run.path / "metrics.json", text)
    if report:
        from .report import write_report

        config = run.config_path.read_text() if run.config_path.exists() else ""
        write_report(out_dir, metrics, probs, y, info["class_names"],
                     config={"run": str(run.path), "config.yaml": config},
                     provenance={"store": str(data), **store.attrs.get("provenance", {}),
                                 "weights": info.get("pretrained", "")},
                     title=f"{run.path.name} on {Path(data).name} ({split})")
    metrics["report_dir"] = str(out_dir)
    return metrics
