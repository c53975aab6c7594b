"""The data-parallel training loop (trainer "deepspeed") and the rank-aware `train`.

The step, validation and epoch bookkeeping it shares with the standard trainer are in
`engine.training.loop`; here is only what data parallelism changes: the global batch dealt
out to ranks, DeepSpeed's engine and its sharded checkpoints.

Every rank replays the single-process trainer's random stream for the *global* batch (the
same permutation, the same target draws) and handles its interleaved share of it, and the
adaptation losses are computed on features gathered from all ranks. With synced BN and no
stochastic augmentation or dropout, N ranks with per-rank batch B therefore follow the same
trajectory as one process with batch N x B, up to float summation order; tests check it.

Only rank 0 writes the run directory (config, run.json, metrics, best.pt, last.pt, log
lines); every rank writes its own DeepSpeed shard under <run>/deepspeed/ (ZeRO partitions
optimizer state, so no single rank holds it all).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import re
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ...errors import UserError
from ...progress import progress_bar
from ...registry import get_registry
from ...trainer import Trainer
from ..models import classify, features
from ..runs import (RunDir, deepspeed_safe_globals, load_checkpoint,
                    weights_only_loads)
from ..training.loop import (augment_batch, epoch_record, evaluate_sums, log_epoch, save_epoch,
                             uses_adapter)
from ..training.optim import build_optimizer, layerwise_groups
from ..training.single_run import pick_device, prepare
from .collectives import convert_sync_batchnorm, gather_rows, plain_state_dict, row_counts
from .ds_config import build_ds_config, eval_shard, global_steps, lr_at, micro_positions, use_bf16
from .options import (agree, init_distributed, options_dict, rank_timeout, ranks,
                      resolve_options)
from .watchdog import SCRATCH_PREFIX, Watchdog, lost_peer, sweep_dead_scratch

log = logging.getLogger("astrotransfer")
DS_DIR = "deepspeed"


class PeerFailed(UserError):
    """Another rank failed during set-up. `silent`: rank 0 failed too and says why."""

    def __init__(self, message: str, silent: bool = False):
        super().__init__(message)
        self.silent = silent


_state = {"agreed": False}


def _agree(ok: bool) -> None:
    """The one set-up handshake of this process (see `distributed.agree`)."""
    if _state["agreed"]:
        return
    _state["agreed"] = True
    flags = agree(ok)
    if all(flags) or not ok:
        return
    failed = [i for i, f in enumerate(flags) if not f]
    raise PeerFailed(f"stopped: rank(s) {', '.join(map(str, failed))} failed during set-up "
                     f"(their error is above)", silent=ranks()[0] != 0 and 0 in failed)


class AdaptNet(nn.Module):
    """Backbone + adapter module as one module, so DeepSpeed sees (and ZeRO partitions)
    every trained parameter and runs the whole loss inside its forward.

    `forward(x)` gives logits (evaluation); `forward(xs, ys, xt, progress, scale)` gives
    (objective, CE sum, adaptation loss, correct) for one micro-batch, where `scale` turns
    this rank's CE sum into its share of the global batch mean.
    """

    def __init__(self, model: nn.Module, adapter, adapter_module: nn.Module | None, adapt: bool):
        super().__init__()
        self.model = model
        self.adapter_module = adapter_module
        self.adapter = adapter
        self.adapt = adapt
        self.channels_last = False
        self.label_smoothing = 0.0

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, xs, ys=None, xt=None, progress: float = 0.0, scale: float = 1.0):
        raw = features(self.model, self._prep(xs))
        logits = classify(self.model, raw).float()
        if ys is None:
            return logits
        ce_sum = F.cross_entropy(logits, ys, reduction="sum",
                                 label_smoothing=self.label_smoothing)
        extra = logits.new_zeros(())
        if self.adapt:
            extra = self._adapt_loss(raw.float(), logits, ys, xt, progress)
        correct = (logits.argmax(1) == ys).sum()
        return ce_sum * scale + extra, ce_sum.detach(), extra.detach(), correct

    def _adapt_loss(self, feats, logits, ys, xt, progress):
        tf = tl = None
        if xt is not None:
            traw = features(self.model, self._prep(xt))
            tl, tf = classify(self.model, traw).float(), traw.float()
        if dist.is_initialized() and dist.get_world_size() > 1:
            counts = row_counts(len(ys), ys.device)
            feats, logits, ys = gather_rows(feats, counts), gather_rows(logits, counts), \
                gather_rows(ys, counts)
            tf, tl = gather_rows(tf, counts), gather_rows(tl, counts)
        # kernel distances and covariances lose too much in bf16: losses run in fp32 even
        # when the engine runs the backbone under bf16 autocast
        with torch.autocast(feats.device.type, enabled=False):
            loss = self.adapter.loss(feats, logits, tf, tl, progress, self.adapter_module,
                                     src_labels=ys)
        return loss.float()


class _Loop:
    """One epoch of the global-batch schedule, seen from one rank."""

    def __init__(self, ctx, engine, opts, device, world, rank, micro, accum, steps, target,
                 manage_lr):
        self.ctx, self.engine, self.opts, self.device = ctx, engine, opts, device
        self.world, self.rank, self.accum, self.steps = world, rank, accum, steps
        self.global_batch = micro * accum * world
        self.target, self.manage_lr = target, manage_lr
        self.dog = Watchdog(rank, world, rank_timeout(), "training",
                            f"launch the same command with --resume on {world} ranks to "
                            f"continue from the last checkpoint in {ctx.run.path}")

    def epoch(self, epoch: int) -> tuple[torch.Tensor, float]:
        """Returns (CE sum, adapt loss x count, correct, count) summed over ranks, and the lr."""
        ctx, cfg, engine, device = self.ctx, self.ctx.cfg, self.engine, self.device
        torch.manual_seed(cfg.seed * 100_003 + epoch + 1_000_003 * self.rank)  # augment, dropout
        gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)  # same on all ranks
        perm = torch.randperm(len(ctx.x_train), generator=gen)
        engine.train()
        sums = torch.zeros(4, dtype=torch.float64)
        lr = cfg.lr
        bar = progress_bar(f"epoch {epoch + 1}/{cfg.epochs}", self.steps) if self.rank == 0 \
            else nullcontext(lambda *a, **k: None)
        with bar as advance:
            for step in range(self.steps):
                batch = perm[step * self.global_batch:(step + 1) * self.global_batch]
                m = len(batch)
                ti = (torch.randint(0, len(self.target), (m,), generator=gen)
                      if self.target is not None else None)
                done = epoch * self.steps + step
                if self.manage_lr:
                    lr = lr_at(done, self.steps, cfg.lr, self.opts, self.world, self.accum)
                    for group in engine.optimizer.param_groups:
                        group["lr"] = lr * group.get("lr_scale", 1.0)
                for pos in micro_positions(m, self.accum, self.world, self.rank):
                    pos = torch.from_numpy(pos)
                    idx = batch[pos]
                    xb = augment_batch(ctx.augment, ctx.x_train[idx]).to(device,
                                                                        non_blocking=True)
                    yb = ctx.y_train[idx].to(device)
                    xt = None if ti is None else augment_batch(
                        ctx.augment, self.target[ti[pos]]).to(device, non_blocking=True)
                    objective, ce, extra, correct = engine(
                        xb, yb, xt, done / (cfg.epochs * self.steps), self.world * self.accum / m)
                    engine.backward(objective)
                    engine.step()
                    sums += torch.tensor([ce.item(), extra.item() * len(idx), correct.item(),
                                          len(idx)], dtype=torch.float64)
                    self.dog.beat()
                advance(1, info=f"loss {float(ce) / max(1, len(idx)):.3f}")
        if self.world > 1:
            dist.all_reduce(sums)
        return sums, lr


class DeepSpeedTrainer(Trainer):
    name = "deepspeed"
    description = ("data-parallel DeepSpeed loop: ZeRO 0-3, gloo on CPU / nccl on GPU; "
                   "run it with `astrotransfer launch`")

    def fit(self, ctx) -> None:
        cfg = ctx.cfg
        state = ctx.resume_state
        opts = resolve_options(cfg, (state or {}).get("dist_options"))
        device = init_distributed(torch.device(opts.device) if opts.device else ctx.device)
        if getattr(cfg, "stages", None):
            raise UserError("progressive unfreezing (stages) is not supported by the deepspeed "
                            "trainer; train with stages in one process, or drop them")
        _agree(True)
        rank, world, _ = ranks()
        if opts.sync_bn and world > 1:
            log.info("synced BatchNorm on %d layers", convert_sync_batchnorm(ctx.model))
        if state is not None:  # weights before initialize: ZeRO-3 partitions them there
            ctx.model.load_state_dict(state["model"])
            if ctx.adapter_module is not None and state.get("adapter"):
                ctx.adapter_module.load_state_dict(state["adapter"])
        engine, net = self._engine(ctx, opts, device, world)
        micro, accum = engine.train_micro_batch_size_per_gpu(), engine.gradient_accumulation_steps()
        ds_dir = ctx.run.path / DS_DIR
        start, best_val = 0, float("inf")
        if state is not None:
            start, best_val = int(state["epoch"]) + 1, float(state["best_val_loss"])
            self._load_ds_state(engine, ds_dir, state, world, opts.zero_stage, ctx.run.path)
            if rank == 0:
                ctx.run.truncate_epochs(int(state["epoch"]) + 1)  # records count from 1
            log.info("resuming %s at epoch %d on %d rank(s)", ctx.run.path, start + 1, world)
        n = len(ctx.x_train)
        steps, dropped = global_steps(n, micro * accum * world, accum, world)
        if steps == 0:
            raise UserError(f"{n} training objects are too few for {world} rank(s) x {accum} "
                            f"micro-step(s) of at least 2 each; use fewer ranks or less "
                            f"--grad-accum")
        if dropped:
            log.warning("the last %d objects of each epoch are skipped: too few to give each of "
                        "%d ranks x %d micro-steps two", n % (micro * accum * world), world, accum)
        manage_lr = "scheduler" not in engine.config
        target = ctx.x_target if (net.adapt and ctx.x_target is not None
                                  and len(ctx.x_target)) else None
        log.info("%d rank(s) x batch %d x accumulation %d = global batch %d, ZeRO stage %d, %s",
                 world, micro, accum, micro * accum * world, opts.zero_stage,
                 "bf16 autocast" if net.bf16 else "fp32")
        loop = _Loop(ctx, engine, opts, device, world, rank, micro, accum, steps, target,
                     manage_lr)
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            with loop.dog:  # armed for the steps and the epoch's all-reduce of their sums
                sums, lr = loop.epoch(epoch)
            val_loss, val_acc = self._evaluate(engine, ctx.x_val, ctx.y_val, device, world, rank)
            count = max(1.0, float(sums[3]))
            record = epoch_record(epoch, float(sums[0]) / count, float(sums[1]) / count,
                                  float(sums[2]) / count, val_loss, val_acc, lr, t0,
                                  world_size=world)
            improved = val_loss < best_val
            best_val = min(best_val, val_loss)
            self._checkpoint(ctx, engine, net, opts, epoch, record, improved, best_val)

    # ------------------------------------------------------------------ pieces

    @staticmethod
    def _engine(ctx, opts, device, world):
        import deepspeed

        net = AdaptNet(ctx.model, ctx.adapter, ctx.adapter_module,
                       uses_adapter(ctx.cfg, ctx.adapter)).to(device)
        # NHWC: faster convolutions, on GPU only. On CPU DeepSpeed views each parameter as
        # bytes (ZeRO flattening, gloo broadcast), which an NHWC conv weight refuses ("stride(-1)
        # must be 1 to view Float as Byte"), one rank or many, so `--channels-last` is the
        # standard trainer's there
        if device.type == "cuda":
            net.to(memory_format=torch.channels_last)
            net.channels_last = True
        net.label_smoothing = ctx.cfg.label_smoothing
        bf16 = use_bf16(opts, device)
        conf = build_ds_config(ctx.cfg.batch_size, world, opts, bf16)
        params = [p for p in net.parameters() if p.requires_grad]
        # the standard trainer's groups: lr x layer_decay per block, no decay on norms/biases
        groups = layerwise_groups(ctx.model, ctx.cfg.weight_decay, ctx.cfg.layer_decay)
        if ctx.adapter_module is not None:
            groups.append({"params": [p for p in ctx.adapter_module.parameters()
                                      if p.requires_grad], "lr_scale": 1.0})
        client = None if "optimizer" in conf else build_optimizer(
            "adamw", [g for g in groups if g["params"]], ctx.cfg.lr, ctx.cfg.weight_decay)
        try:
            engine, *_ = deepspeed.initialize(model=net, optimizer=client,
                                              model_parameters=params, config=conf)
        except (AssertionError, ValueError) as exc:
            raise UserError(f"DeepSpeed refused the generated config ({_first_line(exc)}); "
                            f"check --deepspeed-config and the launch options") from None
        net.bf16 = bf16
        if opts.compile:
            engine.compile()
        return engine, net

    @staticmethod
    def _load_ds_state(engine, ds_dir: Path, state: dict, world: int, stage: int, run: Path):
        tag = state.get("ds_tag")
        if not tag or not (ds_dir / tag).is_dir():
            log.warning("%s has no DeepSpeed state to resume from; continuing from its weights "
                        "with a fresh optimizer", run)
            return
        try:
            # DeepSpeed's loader asks torch.load for weights_only=False: forced off, so a
            # run directory can never run code on resume
            with weights_only_loads(*deepspeed_safe_globals()):
                path, _ = engine.load_checkpoint(str(ds_dir), tag=tag,
                                                 load_lr_scheduler_states=False)
        except pickle.UnpicklingError as exc:
            found = re.search(r"GLOBAL (\S+)", str(exc))
            raise UserError(f"DeepSpeed state {ds_dir / tag} needs pickled code to load"
                            f"{f' ({found.group(1)})' if found else ''}, which is refused for "
                            f"safety; delete {ds_dir} to resume from last.pt's weights with a "
                            f"fresh optimizer") from None
        except Exception as exc:
            path, detail = None, _first_line(exc)
        else:
            detail = "no checkpoint found"
        if path is None:
            raise UserError(f"cannot resume {run} on {world} rank(s) with ZeRO stage {stage}: it "
                            f"was saved by {state.get('world_size')} rank(s) with stage "
                            f"{state.get('zero_stage')} ({detail}); launch it the same way")

    @staticmethod
    @torch.no_grad()
    def _evaluate(engine, x, y, device, world, rank) -> tuple[float, float]:
        """Each rank scores an equal-sized (padded) slice; sums are reduced over ranks."""
        rows, weight = eval_shard(len(x), world, rank)
        engine.eval()
        sums = evaluate_sums(engine, x, y, device, rows, weight)
        if world > 1:
            dist.all_reduce(sums)
        n = max(1, len(x))
        return float(sums[0]) / n, float(sums[1]) / n

    @staticmethod
    def _checkpoint(ctx, engine, net, opts, epoch, record, improved, best_val) -> None:
        """DeepSpeed state (all ranks) first, then rank 0's plain exports: last.pt names the
        DeepSpeed tag, so a kill between the two resumes from the previous, complete tag."""
        rank, stage = ranks()[0], opts.zero_stage
        ds_dir = ctx.run.path / DS_DIR
        tag = f"epoch{epoch + 1:04d}"
        engine.save_checkpoint(str(ds_dir), tag=tag, client_state={"epoch": epoch})
        model = plain_state_dict(net.model, stage)
        adapter = ({} if net.adapter_module is None
                   else plain_state_dict(net.adapter_module, stage))
        if rank != 0:
            return
        save_epoch(ctx.run, record, improved, model, {
            "adapter": adapter, "best_val_loss": best_val, "trainer": "deepspeed",
            "ds_tag": tag, "world_size": record["world_size"], "zero_stage": stage,
            "dist_options": options_dict(opts)})
        for old in ds_dir.glob("epoch*"):
            if old.name != tag and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        log_epoch(record, ctx.cfg.epochs, improved)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


# ---------------------------------------------------------------- rank-aware train

def train_distributed(cfg, resume: bool, single_process_train) -> RunDir:
    """`train` for one rank of a launched job (called by `training.dispatch.train`).

    Rank 0 runs the normal single-process entry (`single_process_train`: lock, checks,
    run directory, prepare, trainer). Other ranks prepare the same data and model against a
    private scratch directory, so they never touch the run directory, then join the loop.
    """
    rank, world, _ = ranks()
    if cfg.trainer == "standard":
        cfg.trainer = "deepspeed"
    _state["agreed"] = False
    try:
        if cfg.trainer != "deepspeed":
            raise UserError(f"trainer '{cfg.trainer}' runs in one process only; under "
                            f"`astrotransfer launch` use --trainer deepspeed")
        opts = resolve_options(cfg)
        if opts.device:
            cfg.device = opts.device
        if rank != 0:
            log.setLevel(logging.ERROR)
        init_distributed(pick_device(cfg.device))
        if rank == 0:
            return single_process_train(cfg, resume)
        sweep_dead_scratch()
        with tempfile.TemporaryDirectory(
                prefix=f"{SCRATCH_PREFIX}{rank}-pid{os.getpid()}-") as scratch:
            local = dataclasses.replace(cfg, out=str(Path(scratch) / "run"))
            ctx = prepare(local, resume=False)
            cfg.image_size = local.image_size
            ctx.cfg, ctx.run = cfg, RunDir(Path(cfg.out))
            ctx.resume_state = load_checkpoint(ctx.run.last) if resume else None
            get_registry().get("trainer", "deepspeed").fit(ctx)
            return ctx.run
    except Exception as exc:
        if world > 1 and lost_peer(exc):
            done = len(RunDir(Path(cfg.out)).epochs())
            raise UserError(
                f"rank {rank}: another rank of this {world}-rank job died or stopped answering "
                f"({lost_peer(exc)}), so this rank stopped too; launch the same command with "
                f"--resume on {world} ranks to continue after epoch {done}, its last "
                f"checkpoint") from None
        if not _state["agreed"] and world > 1 and dist.is_initialized():
            _state["agreed"] = True
            flags = agree(False)
            if rank != 0 and not flags[0]:
                raise PeerFailed("rank 0 failed too", silent=True) from None
        raise

