"""The DeepSpeed config and the global-batch schedule of a data-parallel run.

Pure functions of the options, the world size and the batch: the DeepSpeed config (with a
user's `--deepspeed-config` merged over it), learning-rate scaling with warm-up, and how a
global batch and the validation set are dealt out to the ranks.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import UserError
from .options import DistOptions


def use_bf16(opts: DistOptions, device: torch.device) -> bool:
    if opts.precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return opts.precision == "bf16"


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


BATCH_KEYS = ("train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps")


def build_ds_config(micro_batch: int, world: int, opts: DistOptions, bf16: bool) -> dict:
    """The DeepSpeed config for these options; `--deepspeed-config FILE` is merged over it.

    When the file sets any of the three batch keys, the generated ones it does not set are
    dropped so that DeepSpeed derives them from the file's, instead of refusing a mismatch.
    """
    conf: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": opts.grad_accum,
        "train_batch_size": micro_batch * opts.grad_accum * world,
        "zero_optimization": {"stage": opts.zero_stage},
        # bf16 through autocast: fp32 master weights and BatchNorm, bf16 convolutions and
        # matmuls; the exported weights stay fp32 and every ZeRO stage supports it
        "torch_autocast": {"enabled": bool(bf16), "dtype": "bfloat16"},
        "gradient_clipping": opts.clip_grad,  # explicit: DeepSpeed's own default clips at 1.0
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if not opts.deepspeed_config:
        return conf
    path = Path(opts.deepspeed_config)
    if not path.is_file():
        raise UserError(f"DeepSpeed config {path} does not exist; check --deepspeed-config")
    try:
        user = json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"DeepSpeed config {path} is not valid JSON ({exc})") from None
    if not isinstance(user, dict):
        raise UserError(f"DeepSpeed config {path} must hold a JSON object")
    if any(k in user for k in BATCH_KEYS):
        for k in BATCH_KEYS:
            if k not in user:
                conf.pop(k)
    return _merge(conf, user)


def lr_at(step: int, steps_per_epoch: int, base_lr: float, opts: DistOptions,
          world: int, accum: int) -> float:
    """Linear scaling with gradual warm-up (Goyal et al. 2017, sec. 2.2).

    The rate ramps linearly from the single-rank `base_lr` to `base_lr x k`, k = world x
    grad_accum (how much larger the global batch is), over `warmup_epochs`, then stays.
    """
    k = world * accum if opts.lr_scaling == "linear" else 1
    peak = base_lr * k
    warm = opts.warmup_epochs * steps_per_epoch
    if warm <= 0 or step >= warm:
        return peak
    return base_lr + (peak - base_lr) * step / warm


# ---------------------------------------------------------------- sharding


def global_steps(n: int, global_batch: int, accum: int, world: int) -> tuple[int, bool]:
    """(steps per epoch, tail dropped?). A short last batch is kept when every rank gets at
    least two objects in each of its micro-steps. With none, ranks would run different
    numbers of forward passes (ZeRO-3 and synced BN would hang); with one, BatchNorm cannot
    take batch statistics. Such a tail is dropped (the single-process loop would fail)."""
    full, tail = divmod(n, global_batch)
    if tail and tail >= 2 * accum * world:
        return full + 1, False
    return full, bool(tail)


def micro_positions(m: int, accum: int, world: int, rank: int) -> list[np.ndarray]:
    """Positions in a global batch of m objects that this rank handles, per micro-step.

    The batch is cut into `accum` consecutive parts and each part is dealt round-robin over
    the ranks (DistributedSampler's interleaving), so with m = micro x accum x world every
    rank gets exactly `micro` objects and the union over ranks is the whole batch.
    """
    return [part[rank::world] for part in np.array_split(np.arange(m), accum)]


def eval_shard(n: int, world: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows for this rank and their weights (0 for padding): all ranks get the same count so
    they run the same number of forward passes."""
    per = -(-n // world)
    rows = np.arange(rank * per, (rank + 1) * per)
    return np.where(rows < n, rows, 0), (rows < n).astype(np.float64)
