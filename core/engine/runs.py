"""Run directories and checkpoints.

A run directory holds: config.yaml (resolved), run.json (what is needed to rebuild the
model), metrics.jsonl (one line per finished epoch), train.log, best.pt and last.pt.
Checkpoints hold only tensors and plain Python values so that they load with
`torch.load(weights_only=True)`: a checkpoint can never execute code.
"""
from __future__ import annotations

import json
import os
import pickle
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
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(f"checkpoint {path} needs pickled code to load, which is refused for "
                        f"safety ({str(exc).splitlines()[0][:120]}); re-save it as a plain "
                        f"state dict") from None
    except Exception as exc:
        raise UserError(f"checkpoint {path} is corrupt or not a torch checkpoint "
                        f"({type(exc).__name__}); re-train or restore the file") from None


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
