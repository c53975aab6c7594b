"""Pieces of data-parallel training that do not depend on the loop: options, the DeepSpeed
config, process-group start-up, batch sharding, gradient-carrying collectives, synced BN.

Options come from three places, strongest first: an explicit `astrotransfer launch` option
(passed to every rank in $ASTROTRANSFER_LAUNCH_OPTIONS, base64 JSON, so it survives pdsh and
the DeepSpeed launcher unchanged), a `TrainConfig` field of the same name, then the default.
That order lets `launch` tune a run whose config file does not know about scaling at all.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import UserError

log = logging.getLogger("astrotransfer")
ENV_OPTIONS = "ASTROTRANSFER_LAUNCH_OPTIONS"
LR_SCALINGS = ("none", "linear")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class DistOptions:
    """Scaling knobs of the deepspeed trainer (see docs/distributed.md for each one)."""

    zero_stage: int = 0
    grad_accum: int = 1
    clip: float = 0.0
    lr_scaling: str = "linear"   # Goyal et al.: lr x (global batch / per-rank batch)
    warmup_epochs: float = 2.0   # linear ramp from the base lr to the scaled one (Khan et al.)
    sync_bn: bool = False
    precision: str = "auto"      # auto: bf16 on GPU, fp32 on CPU
    deepspeed_config: str | None = None
    device: str | None = None    # set by launch: cpu for --num-procs, cuda for --num-gpus
    compile: bool = False        # torch.compile: off until a GPU measurement shows a gain

    def validate(self) -> "DistOptions":
        if self.zero_stage not in (0, 1, 2, 3):
            raise UserError(f"--zero-stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.grad_accum < 1:
            raise UserError(f"--grad-accum must be at least 1, got {self.grad_accum}")
        if self.lr_scaling not in LR_SCALINGS:
            raise UserError(f"--lr-scaling must be one of {', '.join(LR_SCALINGS)}, "
                            f"got '{self.lr_scaling}'")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                            f"got '{self.precision}'")
        if self.warmup_epochs < 0 or self.clip < 0:
            raise UserError("--warmup-epochs and --clip must not be negative")
        return self


def encode_options(explicit: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(explicit).encode()).decode()


def launch_options() -> dict[str, Any]:
    raw = os.environ.get(ENV_OPTIONS)
    if not raw:
        return {}
    try:
        return json.loads(base64.urlsafe_b64decode(raw.encode()))
    except ValueError:
        raise UserError(f"${ENV_OPTIONS} is not valid base64 JSON; unset it or start the "
                        f"run with `astrotransfer launch`") from None


def resolve_options(cfg: Any) -> DistOptions:
    """Launch option > TrainConfig field of the same name > default."""
    explicit = launch_options()
    values = {}
    for f in fields(DistOptions):
        if f.name in explicit:
            values[f.name] = explicit[f.name]
        elif f.name != "device" and getattr(cfg, f.name, None) is not None:  # cfg.device is
            # the user's --device, already applied by prepare; this one is launch's choice
            values[f.name] = getattr(cfg, f.name)
    return DistOptions(**values).validate()


# ---------------------------------------------------------------- process group


def ranks() -> tuple[int, int, int]:
    """(rank, world, local_rank) from the launcher's environment; (0, 1, 0) without one."""
    env = os.environ
    return (int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))


def launched() -> bool:
    return ranks()[1] > 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(device: torch.device) -> torch.device:
    """Join (or, for a lone process, create) the process group; returns this rank's device.

    gloo on CPU, nccl on GPU. A process started without a launcher gets a world of one, so
    `train --trainer deepspeed` works on a laptop exactly as one rank of a job would.
    """
    if "RANK" not in os.environ:
        os.environ.update({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                           "MASTER_ADDR": "127.0.0.1"})
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    _, world, local_rank = ranks()
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("this rank was asked to use a GPU but none is visible; "
                            "launch with --num-procs for CPU ranks")
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    _quiet_deepspeed()
    import deepspeed

    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                                   verbose=False, timeout=timedelta(minutes=30))
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ and world > 1:
        per_node = int(os.environ.get("LOCAL_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    return device


def _quiet_deepspeed() -> None:
    """DeepSpeed logs every step and config key at INFO; our own log says what matters."""
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")


def agree(ok: bool) -> list[bool]:
    """Every rank says whether its set-up worked; all ranks learn all answers.

    Called once per rank before the first real collective, so a rank whose input is bad
    stops the others cleanly instead of leaving them blocked in a collective.
    """
    _, world, _ = ranks()
    if world == 1 or not dist.is_initialized():
        return [ok]
    flags = torch.zeros(world, dtype=torch.int32)
    flags[dist.get_rank()] = int(ok)
    dist.all_reduce(flags)
    return [bool(v) for v in flags.tolist()]


# ---------------------------------------------------------------- DeepSpeed config


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
        "bf16": {"enabled": bool(bf16)},
        "gradient_clipping": opts.clip,  # explicit: DeepSpeed's own default clips at 1.0
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
    least one object in each of its micro-steps; otherwise ranks would run different numbers
    of forward passes, which hangs ZeRO-3 and synced BN, so it is dropped."""
    full, tail = divmod(n, global_batch)
    if tail and tail >= accum * world:
        return full + 1, False
    return max(full, 1), bool(tail) and full > 0


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


# ---------------------------------------------------------------- collectives with gradients


class _AllReduceSum(torch.autograd.Function):
    """y = sum over ranks of x; dL/dx = sum over ranks of dL/dy (each rank's loss uses y)."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        g = grad.clone()
        dist.all_reduce(g)
        return g


class _GatherRows(torch.autograd.Function):
    """Concatenate every rank's rows (counts may differ); the gradient of a rank's slice is
    summed over all ranks' losses, which is what makes a loss computed on the gathered batch
    give, after DeepSpeed's gradient averaging, exactly the single-process gradient."""

    @staticmethod
    def forward(ctx, x, counts):
        ctx.counts = counts
        ctx.rank = dist.get_rank()
        pad = max(counts) - x.shape[0]
        xp = torch.cat([x, x.new_zeros(pad, *x.shape[1:])]) if pad else x.contiguous()
        parts = [torch.empty_like(xp) for _ in counts]
        dist.all_gather(parts, xp)
        return torch.cat([p[:c] for p, c in zip(parts, counts)])

    @staticmethod
    def backward(ctx, grad):
        g = grad.contiguous().clone()
        dist.all_reduce(g)
        start = sum(ctx.counts[:ctx.rank])
        return g[start:start + ctx.counts[ctx.rank]], None


def row_counts(n_local: int, device: torch.device) -> list[int]:
    world = dist.get_world_size()
    t = torch.tensor([n_local], device=device)
    out = [torch.zeros_like(t) for _ in range(world)]
    dist.all_gather(out, t)
    return [int(c.item()) for c in out]


def gather_rows(x: torch.Tensor | None, counts: list[int]) -> torch.Tensor | None:
    if x is None or len(counts) == 1:
        return x
    if x.requires_grad:
        return _GatherRows.apply(x, counts)
    with torch.no_grad():
        return _GatherRows.apply(x, counts)


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(x) if dist.is_initialized() and dist.get_world_size() > 1 else x


# ---------------------------------------------------------------- synced batch norm


def _sync_bn_forward(self, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the global batch: the same numbers one process would compute.

    torch.nn.SyncBatchNorm refuses CPU tensors, so this works on gloo as well; statistics
    are summed with gradient-carrying all-reduces (two passes: mean, then variance).
    """
    if not self.training or dist.get_world_size() == 1:
        return type(self).__mro__[1].forward(self, x)
    dtype, x = x.dtype, x.float()  # statistics in float32 even when the model runs in bf16
    dims = [0] + list(range(2, x.ndim))
    c = x.shape[1]
    count = torch.tensor([x.numel() / c], dtype=x.dtype, device=x.device)
    total = all_reduce_sum(torch.cat([x.sum(dims), count]))
    n = total[-1].detach()
    mean = total[:c] / n
    shape = [1, c] + [1] * (x.ndim - 2)
    centred = x - mean.reshape(shape)
    var = all_reduce_sum((centred * centred).sum(dims)) / n
    y = centred * torch.rsqrt(var + self.eps).reshape(shape)
    if self.affine:
        y = y * self.weight.float().reshape(shape) + self.bias.float().reshape(shape)
    y = y.to(dtype)
    if self.track_running_stats:
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            mom = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
            unbiased = var.detach() * (n / max(n - 1, 1))
            self.running_mean.mul_(1 - mom).add_(mean.detach().to(self.running_mean.dtype), alpha=mom)
            self.running_var.mul_(1 - mom).add_(unbiased.to(self.running_var.dtype), alpha=mom)
    if hasattr(self, "drop"):  # timm's BatchNormAct2d: norm, then dropout, then activation
        y = self.drop(y)
    if hasattr(self, "act"):
        y = self.act(y)
    return y


_SYNC_CLASSES: dict[type, type] = {}


def convert_sync_batchnorm(model: nn.Module) -> int:
    """Make every BatchNorm layer normalise over the global batch; returns how many.

    The layer's class is swapped for a subclass, not the module replaced, so parameter
    names stay unchanged and checkpoints still load into a plain model.
    """
    n = 0
    for module in model.modules():
        cls = type(module)
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and cls not in _SYNC_CLASSES.values():
            if cls not in _SYNC_CLASSES:
                _SYNC_CLASSES[cls] = type(f"Sync{cls.__name__}", (cls,), {"forward": _sync_bn_forward})
            module.__class__ = _SYNC_CLASSES[cls]
            n += 1
    return n


def plain_state_dict(module: nn.Module, zero_stage: int) -> dict[str, torch.Tensor]:
    """A float32 CPU state dict on every rank; under ZeRO-3 the partitioned parameters are
    gathered first (a collective: every rank must call this)."""
    if zero_stage == 3:
        import deepspeed
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            return _cpu_float(module.state_dict())
    return _cpu_float(module.state_dict())


def _cpu_float(state: dict) -> dict:
    return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
            for k, v in state.items()}


def options_dict(opts: DistOptions) -> dict:
    return asdict(opts)
