"""Collectives that carry gradients, BatchNorm over the global batch, and gathering a
ZeRO-partitioned model back into a plain state dict.

These make data parallelism exact rather than approximate: a loss computed on features
gathered from every rank, or a BatchNorm computed over every rank's rows, gives (after
DeepSpeed averages gradients over ranks) the gradient one process would get on the whole
global batch.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


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
