"""Rebuild a trained model from its run directory and stream a store through it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import UserError
from ..store import CutoutStore
from .data import band_mapping, resize
from .models import build_model, classify, features
from .runs import RunDir, load_checkpoint


def load_run_model(run_path: Path | str, device: torch.device | None = None):
    """The run's best model in eval mode, and its run.json facts."""
    run = RunDir(Path(run_path))
    info = run.info()
    ckpt = load_checkpoint(run.best if run.best.exists() else run.last)
    model, _ = build_model(info["backbone"], in_chans=info["in_chans"],
                           num_classes=info["num_classes"], pretrained="none",
                           drop_rate=info.get("drop_rate", 0.0))
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError) as exc:
        raise UserError(f"checkpoint in {run.path} does not fit its {info['backbone']} model "
                        f"({str(exc).splitlines()[0][:100]}); the run directory is damaged") from None
    model.eval().to(device or torch.device("cpu"))
    return model, info, run


def check_compatible(info: dict, store: CutoutStore) -> list[int]:
    """Band indices for the model; refuses a store whose classes differ from the run's."""
    if store.class_names and len(store.class_names) != info["num_classes"]:
        raise UserError(f"store {store.path} has {len(store.class_names)} classes "
                        f"({','.join(store.class_names)}) but the run was trained on "
                        f"{info['num_classes']} ({','.join(info['class_names'])})")
    return band_mapping(info["bands"], store)


@torch.no_grad()
def stream_predictions(model, store: CutoutStore, indices: np.ndarray, bands: list[int],
                       image_size: int, batch_size: int = 256, with_features: bool = False,
                       device: torch.device | None = None
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Yield (rows, probabilities, features) chunk by chunk: memory is flat in store size.

    Rows are read in store order in slabs of `batch_size`, which are contiguous zarr reads.
    """
    device = device or torch.device("cpu")
    for start in range(0, len(indices), batch_size):
        rows = indices[start:start + batch_size]
        x = torch.from_numpy(store.read_images(rows)[:, bands])
        x = resize(x, image_size).to(device)
        feats = features(model, x)
        probs = torch.softmax(classify(model, feats).float(), dim=1)
        yield rows, probs.cpu().numpy(), (feats.float().cpu().numpy() if with_features else None)


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)
