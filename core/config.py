"""Training configuration: defaults < YAML file (--config) < explicit CLI flags.

The resolved config is written into every run directory, so a run can be repeated exactly
and `evaluate`/`predict` know the model they must rebuild. Shorthands a user types on the
command line (`--augment flip,rot90`, `--stages head=1,top:0.5=2`, `--adapt mmd+fisher`)
are expanded here, so the stored config only ever holds the canonical form and every
consumer (standard trainer, DeepSpeed trainer, studies) reads one spelling.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

OPTIMIZERS = ("adamw", "adam")
SCHEDULERS = ("cosine", "plateau", "none")
HEAD_INITS = ("zero", "timm")
BALANCES = ("none", "weights", "sampler")
#: weights the `--adapt BASE+fisher+entropy` shorthand uses when --fisher/--entropy are unset
#: (the values of the DeepMerge II style runs in docs/results/transfer.md)
DEFAULT_ADDON_WEIGHTS = {"fisher": 0.01, "entropy": 0.05}
#: sky images have no up, no handedness and no fixed centre to the pixel: any angle, flips,
#: small shifts and zooms (docs/results/recipe.md measures it against flip,rot90)
DEFAULT_AUGMENT = ("flip", "rotate", "shift", "zoom")


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
    # None: chosen by training-set size, so every run gets at least `min_steps` optimizer
    # steps (BiT's rule: a few hundred objects otherwise get a few dozen updates)
    epochs: int | None = None
    min_steps: int = 300
    image_size: int | None = None  # None: the store's cutout size
    batch_size: int = 32
    lr: float = 1e-3  # the head's; earlier blocks get lr x layer_decay**depth
    # per block from head to stem (1 = one lr for all, the default: on the sim SDSS -> DES pair
    # 0.7 cost 0.12 target accuracy over 8 seeds and gave nothing on GZ1 or GZ1 -> CEERS;
    # docs/results/recipe.md, docs/results/ceers.md)
    layer_decay: float = 1.0
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    drop_rate: float = 0.2
    head_init: str = "zero"  # zero (BiT) | timm (the architecture's own initialiser)
    seed: int = 0
    augment: list[str] = field(default_factory=lambda: list(DEFAULT_AUGMENT))
    channels_last: bool = True  # NHWC convolutions: faster on CPU (oneDNN) and GPU
    target_labels: int = 0  # labelled target objects added to training (few-shot)
    # train on only N labelled objects of the source's train split, a fifth of them held out
    # for validation (few-shot on a new survey's own labels); 0 = every labelled object
    source_labels: int = 0
    # a store whose labelling sessions (`astrotransfer label`) add labelled objects to training
    target_labels_from: str | None = None
    device: str = "auto"
    num_workers: int = 0
    # progressive unfreezing, [{epochs, train, lr?}, ...]; [] = everything trains throughout
    # (rules in astrotransfer.engine.training.stages)
    stages: list[dict] = field(default_factory=list)
    # LP-FT (Kumar et al. 2022): head-only epochs before everything trains at lr/100; None =
    # by size: half the epochs for training sets under 1,000 objects, else 0 (rule and
    # measurements: engine/training/small_data.py)
    probe_epochs: int | None = None
    keep_bn_stats: bool = False  # BatchNorm keeps its pretrained statistics (LP-FT sets it)
    optimizer: str = "adamw"
    # plateau (on the val loss; the default, for the same measurements as layer_decay) |
    # cosine (per step, after a 5 % warm-up) | none
    scheduler: str = "plateau"
    lr_patience: int = 2  # epochs without improvement before the lr drops
    lr_factor: float = 0.1
    early_stop: int = 0  # patience in epochs on the validation loss; 0 = off
    balance: str = "none"
    seeds: int = 1  # >1: that many runs under <out>/seed_<s>/ (seed, seed+1, ...)
    recursive: int = 0  # pseudo-labelling rounds after the first training
    pseudo_top: int = 100  # most confident target objects added per class and round
    pseudo_labels: str | None = None  # JSON of pseudo-labelled target rows (recursive rounds)
    # Scaling knobs, shared with the deepspeed trainer (which reads fields of these names);
    # the standard trainer honours grad_accum, clip_grad, warmup_epochs and scale_lr.
    zero_stage: int = 0
    deepspeed_config: str | None = None
    grad_accum: int = 1
    clip_grad: float = 0.0  # max gradient norm; 0 = off
    warmup_epochs: float | None = None  # None: the trainer's default (standard: 5 % of the
    # steps with the cosine schedule, none with the others)
    scale_lr: bool = False  # lr x grad_accum (linear scaling rule for the effective batch)
    # how source bands become model inputs: auto (by name, else the one-band mean view for a
    # one-band target, else by position) | mean (always the mean view); engine/matching.py
    band_policy: str = "auto"

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
    epochs_given = "epochs" in data
    cfg = TrainConfig.from_dict(data, origin=str(path) if path else "options")
    return normalize(cfg, epochs_given=epochs_given)


def normalize(cfg: TrainConfig, epochs_given: bool = True) -> TrainConfig:
    """Expand shorthands and check every value that needs no store or model, in place.

    Everything here fails in milliseconds, before a store is opened, so a typo in a long
    job's options costs nothing.
    """
    cfg.augment = parse_augment(cfg.augment)
    _split_adapt(cfg)
    from .engine.training.stages import parse_stages

    cfg.stages = parse_stages(cfg.stages)
    epochs_given = epochs_given and cfg.epochs is not None
    if cfg.stages:
        fixed = sum(s["epochs"] for s in cfg.stages[:-1])
        if not epochs_given:
            if cfg.stages[-1].get("epochs") is not None:
                cfg.epochs = fixed + cfg.stages[-1]["epochs"]
            # else the last stage runs until the epochs chosen by training-set size
        elif fixed >= cfg.epochs:
            raise UserError(f"--stages before the last add up to {fixed} epochs, leaving none "
                            f"of --epochs {cfg.epochs} for the last stage; raise --epochs")
    _check_values(cfg)
    return cfg


def resolve_epochs(cfg: TrainConfig, n_train: int) -> int:
    """Fix `cfg.epochs` for a training set of `n_train` objects when it was left to us.

    The rule is BiT's: the schedule length follows the data, so a run takes at least
    `min_steps` optimizer steps (and at least 3 epochs): 240 GZ1 objects get 38 short
    epochs, 3,700 get 3. With stages, the earlier stages' epochs count towards it.

    Args:
        cfg: the run's config; `cfg.epochs` is set in place when it is None.
        n_train: labelled objects in the training set.
    Returns:
        the epochs the run will train.
    Example:
        >>> resolve_epochs(TrainConfig(batch_size=32, min_steps=300), 3200)
        3
    """
    if cfg.epochs is None:
        steps = max(1, math.ceil(n_train / cfg.batch_size / max(1, cfg.grad_accum)))
        fixed = sum(s["epochs"] for s in cfg.stages[:-1]) if cfg.stages else 0
        cfg.epochs = max(3, fixed + 1, math.ceil(cfg.min_steps / steps))
    return cfg.epochs


def parse_augment(value) -> list[str]:
    """`flip,rot90` or a YAML list; `none` or an empty string means no augmentation."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(v).strip().lower() for v in items if str(v).strip()]
    return [] if names == ["none"] else names


def _split_adapt(cfg: TrainConfig) -> None:
    """`mmd+fisher=0.02+entropy` → adapt='mmd', fisher=0.02, entropy=default weight."""
    if "+" not in str(cfg.adapt):
        return
    base, *addons = [p.strip() for p in str(cfg.adapt).split("+")]
    for addon in addons:
        name, _, weight = addon.partition("=")
        if name not in DEFAULT_ADDON_WEIGHTS:
            raise UserError(f"unknown regulariser '{name}' in --adapt '{cfg.adapt}'; known: "
                            f"{', '.join(DEFAULT_ADDON_WEIGHTS)} (e.g. --adapt mmd+fisher+entropy)")
        try:
            value = float(weight) if weight else (getattr(cfg, name) or
                                                  DEFAULT_ADDON_WEIGHTS[name])
        except ValueError:
            raise UserError(f"weight '{weight}' of {name} in --adapt '{cfg.adapt}' is not a "
                            f"number; write e.g. {name}=0.01") from None
        setattr(cfg, name, value)
    cfg.adapt = base


def _check_values(cfg: TrainConfig) -> None:
    def need(ok: bool, message: str) -> None:
        if not ok:
            raise UserError(message)

    need(cfg.epochs is None or cfg.epochs >= 1, f"--epochs must be at least 1, got {cfg.epochs}")
    need(cfg.min_steps >= 1, f"--min-steps must be at least 1, got {cfg.min_steps}")
    need(0.0 < cfg.layer_decay <= 1.0, f"--layer-decay must be in (0, 1], got {cfg.layer_decay}")
    need(0.0 <= cfg.label_smoothing < 1.0,
         f"--label-smoothing must be in [0, 1), got {cfg.label_smoothing}")
    need(cfg.batch_size >= 1, f"--batch-size must be at least 1, got {cfg.batch_size}")
    need(cfg.lr > 0, f"--lr must be positive, got {cfg.lr}")
    need(0.0 <= cfg.drop_rate < 1.0, f"--drop-rate must be in [0, 1), got {cfg.drop_rate}")
    for name, value, choices in (("head-init", cfg.head_init, HEAD_INITS),
                                 ("optimizer", cfg.optimizer, OPTIMIZERS),
                                 ("scheduler", cfg.scheduler, SCHEDULERS),
                                 ("balance", cfg.balance, BALANCES)):
        need(value in choices, f"unknown --{name} '{value}'; choose from {', '.join(choices)}")
    need(cfg.lr_patience >= 0 and 0.0 < cfg.lr_factor < 1.0,
         f"--lr-patience must be >= 0 and --lr-factor in (0, 1), got {cfg.lr_patience} and "
         f"{cfg.lr_factor}")
    need(cfg.probe_epochs is None or cfg.probe_epochs >= 0,
         f"--probe-epochs must be >= 0 (0 = off), got {cfg.probe_epochs}")
    need(cfg.early_stop >= 0, f"--early-stop must be >= 0 (0 = off), got {cfg.early_stop}")
    need(cfg.seeds >= 1, f"--seeds must be at least 1, got {cfg.seeds}")
    need(cfg.recursive >= 0, f"--recursive must be >= 0, got {cfg.recursive}")
    need(cfg.pseudo_top >= 1, f"--pseudo-top must be at least 1, got {cfg.pseudo_top}")
    need(not (cfg.recursive and cfg.seeds > 1),
         "--recursive and --seeds cannot be combined in one command; run one recursive job "
         "per seed with --seed")
    need(not cfg.recursive or bool(cfg.target),
         "--recursive pseudo-labels the target survey; pass --target")
    need(cfg.target_labels >= 0, f"--target-labels must be >= 0, got {cfg.target_labels}")
    need(cfg.source_labels >= 0, f"--source-labels must be >= 0, got {cfg.source_labels}")
    need(not (cfg.target_labels and cfg.target_labels_from),
         "--target-labels (drawn from the survey's labels) and --target-labels-from (labels "
         "people made) cannot be combined; pass one")
    need(cfg.grad_accum >= 1, f"--grad-accum must be at least 1, got {cfg.grad_accum}")
    need(cfg.clip_grad >= 0, f"--clip-grad must be >= 0 (0 = off), got {cfg.clip_grad}")
    need(cfg.warmup_epochs is None or cfg.warmup_epochs >= 0,
         f"--warmup-epochs must be >= 0, got {cfg.warmup_epochs}")
    need(cfg.zero_stage in (0, 1, 2, 3), f"--zero-stage must be 0, 1, 2 or 3, got {cfg.zero_stage}")
    need(cfg.fisher >= 0 and cfg.entropy >= 0 and cfg.adapt_weight >= 0,
         "--fisher, --entropy and --adapt-weight must not be negative")
