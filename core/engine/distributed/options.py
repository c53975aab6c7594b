"""Data-parallel options and process-group start-up (the DeepSpeed config and the global
batch schedule are in `ds_config`).

Options come from four places, strongest first: an explicit `astrotransfer launch` option
(passed to every rank in $ASTROTRANSFER_LAUNCH_OPTIONS, base64 JSON, so it survives pdsh and
the DeepSpeed launcher unchanged), the options a resumed run was saved with, a `TrainConfig`
field of the same name, then the default. That order lets `launch` tune a run whose config
file does not know about scaling at all, and lets `--resume` continue it unchanged.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass, fields
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from ...errors import UserError

log = logging.getLogger("astrotransfer")
ENV_OPTIONS = "ASTROTRANSFER_LAUNCH_OPTIONS"
LR_SCALINGS = ("none", "linear")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class DistOptions:
    """Scaling knobs of the deepspeed trainer (see docs/distributed.md for each one)."""

    zero_stage: int = 0
    grad_accum: int = 1
    clip_grad: float = 0.0
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
            raise UserError(f"lr scaling must be one of {', '.join(LR_SCALINGS)}, "
                            f"got '{self.lr_scaling}'")
        if self.precision not in PRECISIONS:
            raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, "
                            f"got '{self.precision}'")
        if self.warmup_epochs < 0 or self.clip_grad < 0:
            raise UserError("--warmup-epochs and --clip-grad must not be negative")
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


def resolve_options(cfg: Any, saved: dict | None = None) -> DistOptions:
    """Launch option > the options a resumed run was saved with > TrainConfig field of the
    same name > default. `saved` lets `--resume` go on with the run's own ZeRO stage, lr
    scaling etc. even when the resuming command does not repeat them."""
    explicit = launch_options()
    saved = {k: v for k, v in (saved or {}).items() if k != "device"}
    values = {}
    for f in fields(DistOptions):
        if f.name in explicit:
            values[f.name] = explicit[f.name]
        elif f.name in saved:
            values[f.name] = saved[f.name]
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


ENV_RANK_TIMEOUT = "ASTROTRANSFER_RANK_TIMEOUT"
DEFAULT_RANK_TIMEOUT_S = 300.0


def rank_timeout() -> float:
    """Seconds a rank waits for the others before it gives up: the process group's
    collective timeout (training) and the staleness of a rank's heartbeat file (sharded
    predict). A dead peer usually fails its connections at once; this bounds the case where
    it vanishes silently (a node that hangs or loses its network). Default 300 s, set by
    $ASTROTRANSFER_RANK_TIMEOUT (see docs/clusters.md)."""
    raw = os.environ.get(ENV_RANK_TIMEOUT)
    if not raw:
        return DEFAULT_RANK_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise UserError(f"${ENV_RANK_TIMEOUT}={raw!r} must be a positive number of seconds")
    return value


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

    if device.type == "cpu":
        _no_shm_allreduce()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False,
                                   verbose=False, timeout=timedelta(seconds=rank_timeout()))
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ and world > 1:
        per_node = int(os.environ.get("LOCAL_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // per_node))
    return device


def _quiet_deepspeed() -> None:
    """DeepSpeed logs every step and config key at INFO; our own log says what matters."""
    logging.getLogger("DeepSpeed").setLevel(logging.WARNING)
    import warnings
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.distributed")


def _no_shm_allreduce() -> None:
    """Keep DeepSpeed's CPU shared-memory all-reduce op from loading.

    Only `inference_all_reduce` uses it (training never does), yet loading it JIT-builds a
    C++ op, probes every op builder, and leaves two 69 MB segments per job in /dev/shm that
    nothing unlinks. DeepSpeed decides through `deepspeed.ops.__compatible_ops__`, a dict it
    caches on first use and documents as editable.
    """
    import deepspeed.ops

    compatible = deepspeed.ops.__dict__.get("__compatible_ops__")
    if compatible is None:
        deepspeed.ops.__compatible_ops__ = compatible = {}
    compatible["deepspeed_shm_comm"] = False


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


def options_dict(opts: DistOptions) -> dict:
    return asdict(opts)
