"""Run directories and checkpoints.

A run directory holds: config.yaml (resolved), run.json (what is needed to rebuild the
model), metrics.jsonl (one line per finished epoch), train.log, best.pt and last.pt.
Checkpoints hold only tensors and plain Python values so that they load with
`torch.load(weights_only=True)`: a checkpoint can never execute code.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import torch
import yaml

from ..errors import UserError

CHECKPOINT_FORMAT = 1


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary name, then rename: a kill never leaves a torn checkpoint."""
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; train the run first "
                        f"(or point to a run directory that finished an epoch)")
    try:
        # weights_only: tensors and plain values only, so loading can never run code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        what = f"it pickles {found.group(1)}" if found else str(exc).splitlines()[0][:120]
        raise UserError(f"checkpoint {path} needs pickled code to load, which is refused for "
                        f"safety ({what}); use checkpoints written by astrotransfer, or re-save "
                        f"it as a plain state dict") from None
    except Exception as exc:
        raise UserError(f"checkpoint {path} is corrupt or not a torch checkpoint "
                        f"({type(exc).__name__}); re-train or restore the file") from None
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict)):
        raise UserError(f"checkpoint {path} is not an astrotransfer checkpoint (no 'model' "
                        f"state dict); re-train or restore the file")
    return ckpt


@contextlib.contextmanager
def weights_only_loads(*safe_globals):
    """Every `torch.load` inside runs with `weights_only=True`, whatever its caller asked.

    For third-party loaders that pass `weights_only=False` themselves, such as DeepSpeed's
    `engine.load_checkpoint` on `train --resume`: a run directory is data, and unpickling it
    must never run code. `safe_globals` are the plain-data classes such a loader's files are
    known to hold (see `deepspeed_safe_globals`).
    """
    original = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = load
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            yield
    finally:
        torch.load = original


def deepspeed_safe_globals() -> list:
    """The data classes DeepSpeed pickles into its ZeRO optimizer states (fp32/fp16/bf16,
    stages 0-3): loss scalers, the stage enum and parameter fragment addresses."""
    names = [("deepspeed.runtime.fp16.loss_scaler", "LossScaler"),
             ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
             ("deepspeed.runtime.zero.config", "ZeroStageEnum"),
             ("deepspeed.utils.tensor_fragment", "fragment_address")]
    found = []
    for module, name in names:
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return found


class RunDir:
    def __init__(self, path: Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def info_path(self) -> Path:
        return self.path / "run.json"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def run_id(self) -> str:
        return self.info()["run_id"]

    def info(self) -> dict[str, Any]:
        if not self.info_path.exists():
            raise UserError(f"{self.path} is not a run directory (no run.json); "
                            f"pass the --out folder of `astrotransfer train`")
        return json.loads(self.info_path.read_text())

    def write_info(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.info_path, json.dumps(info, indent=2))

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_text(self.config_path, yaml.safe_dump(config, sort_keys=False))

    def epochs(self) -> list[dict[str, Any]]:
        if not self.metrics_path.exists():
            return []
        return [json.loads(line) for line in self.metrics_path.read_text().splitlines() if line]

    def append_epoch(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_epochs(self, last_epoch: int) -> None:
        """Drop epoch records past the checkpoint, so a resumed run repeats none of them."""
        kept = [r for r in self.epochs() if r["epoch"] <= last_epoch]
        atomic_write_text(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
