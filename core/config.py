"""Training configuration: defaults < YAML file (--config) < explicit CLI flags.

The resolved config is written into every run directory, so a run can be repeated exactly
and `evaluate`/`predict` know the model they must rebuild.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError


@dataclass
class TrainConfig:
    source: str = ""
    target: str | None = None
    out: str = ""
    backbone: str = "tf_efficientnet_lite0"
    pretrained: str = "auto"
    adapt: str = "finetune"
    adapt_weight: float = 1.0
    fisher: float = 0.0
    entropy: float = 0.0
    trainer: str = "standard"
    epochs: int = 5
    image_size: int | None = None  # None: the store's cutout size
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    drop_rate: float = 0.2
    seed: int = 0
    augment: list[str] = field(default_factory=lambda: ["flip", "rot90"])
    target_labels: int = 0  # labelled target objects added to training (few-shot)
    device: str = "auto"
    num_workers: int = 0
    stages: list[dict] = field(default_factory=list)  # progressive unfreezing; [] = all at once

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], origin: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"{origin} has unknown keys {', '.join(unknown)}; "
                            f"known keys: {', '.join(sorted(known))}")
        return cls(**data)


def load_config(path: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise UserError(f"config file {path} does not exist; check --config")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"config file {path} is not valid YAML: {exc}".splitlines()[0]) from None
        if not isinstance(data, dict):
            raise UserError(f"config file {path} must hold a mapping of option: value")
    data.update({k: v for k, v in overrides.items() if v is not None})
    cfg = TrainConfig.from_dict(data, origin=str(path) if path else "options")
    if cfg.epochs < 1:
        raise UserError(f"--epochs must be at least 1, got {cfg.epochs}")
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {cfg.batch_size}")
    return cfg
