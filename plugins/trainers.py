"""The built-in trainers, registered as default plugins: "standard" (one process, here) and
"deepspeed" (data-parallel, `engine.distributed.rank_training`). Both share the step's
augmentation, the adapter-pass rule, validation and the epoch record and log line
(`engine.training.loop`); this module keeps what only the single-process loop has.

Every source of randomness (shuffling or balanced sampling, augmentation, dropout, target
batches) is reseeded from (seed, epoch) at the start of each epoch, and everything that
changes between epochs (weights, optimizer, stage, plateau and early-stop counters, the
epoch records themselves) is in last.pt. A run resumed from its last checkpoint therefore
replays exactly the epochs an uninterrupted run would have, wherever it was killed.
"""
from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from astrotransfer import interrupt
from astrotransfer.engine.models import classify, features
from astrotransfer.engine.runs import save_checkpoint
from astrotransfer.engine.training.loop import (augment_batch, epoch_record, evaluate_tensors,
                                                log_epoch, rewrite_metrics, save_epoch,
                                                to_device, uses_adapter)
from astrotransfer.hookspecs import hookimpl
from astrotransfer.progress import progress_bar
from astrotransfer.trainer import Trainer

from .schedule import Schedule

log = logging.getLogger("astrotransfer")


def class_weights(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """scikit-learn's 'balanced' weights n / (K n_k): each class carries equal total weight.

    A class absent from training gets weight 0 rather than an infinite one.
    """
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(y.numpy())
    w = np.zeros(num_classes)
    w[present] = compute_class_weight("balanced", classes=present, y=y.numpy())
    return torch.tensor(w, dtype=torch.float32)


def epoch_order(y: torch.Tensor, balance: str, gen: torch.Generator) -> torch.Tensor:
    """This epoch's sample order: a permutation, or with `sampler` n draws with replacement
    at probability 1/n_class, so every class is seen equally often on average."""
    n = len(y)
    if balance != "sampler":
        return torch.randperm(n, generator=gen)
    counts = torch.bincount(y)
    weights = 1.0 / counts[y].double()
    return torch.multinomial(weights, n, replacement=True, generator=gen)


class StandardTrainer(Trainer):
    name = "standard"
    description = ("single-process Adam/AdamW loop: progressive unfreezing, plateau lr, early "
                   "stopping, class balancing, validation, best/last checkpoints and resume")

    def fit(self, ctx) -> None:
        cfg, model, device = ctx.cfg, ctx.model, ctx.device
        model.to(device)
        if cfg.channels_last:  # same numbers, ~1.6x faster training on CPU (tools/bench_train)
            model.to(memory_format=torch.channels_last)
        if ctx.adapter_module is not None:
            ctx.adapter_module.to(device)
        n, bs, accum = len(ctx.x_train), cfg.batch_size, cfg.grad_accum
        # a lone trailing sample joins the batch before it: BatchNorm cannot train on one
        micro_steps = max(1, n // bs if n % bs == 1 and n > bs else math.ceil(n / bs))
        sched = Schedule(ctx, math.ceil(micro_steps / accum))
        start, history = self._restore(ctx, sched)
        if sched.done:
            log.info("%s already finished (%d epochs); nothing to do", ctx.run.path, start)
            return
        weight = (class_weights(ctx.y_train, len(ctx.class_names)).to(device)
                  if cfg.balance == "weights" else None)
        total_steps = cfg.epochs * micro_steps
        with interrupt.deferred():
            self._epochs(ctx, sched, start, history, weight, micro_steps, total_steps)

    def _epochs(self, ctx, sched, start, history, weight, micro_steps, total_steps) -> None:
        """The epochs from `start`; on SIGTERM/SIGINT, stop after the optimizer step in hand
        and write a mid-epoch last.pt (`_stop_mid_epoch`)."""
        cfg, model, device = ctx.cfg, ctx.model, ctx.device
        n, bs, accum = len(ctx.x_train), cfg.batch_size, cfg.grad_accum
        partial = (ctx.resume_state or {}).get("partial")
        logged_stage = None
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            if cfg.stages and sched.stage != logged_stage:
                log.info(sched.describe())
                logged_stage = sched.stage
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            order = epoch_order(ctx.y_train, cfg.balance, gen)
            sched.train_mode()
            stage, lr = sched.stage, None
            sums = {"loss": 0.0, "adapt_loss": 0.0, "correct": 0}
            first = 0
            if partial is not None and int(partial["epoch"]) == epoch:
                # continue exactly where a graceful stop left this epoch: same random
                # streams, running sums and first-step lr as the uninterrupted run
                torch.set_rng_state(partial["torch_rng"])
                gen.set_state(partial["gen"])
                sums, lr, first = dict(partial["sums"]), partial["lr"], int(partial["step"])
                log.info("resuming epoch %d at step %d/%d", epoch + 1, first + 1, micro_steps)
            partial = None
            with progress_bar(f"epoch {epoch + 1}/{cfg.epochs}", micro_steps) as advance:
                advance(first)
                for step in range(first, micro_steps):
                    idx = order[step * bs:(step + 1) * bs if step + 1 < micro_steps else n]
                    window = min(accum, micro_steps - (step // accum) * accum)
                    xb = to_device(augment_batch(ctx.augment, ctx.x_train[idx]), device,
                                   cfg.channels_last)
                    yb = ctx.y_train[idx].to(device)
                    feats = features(model, xb)
                    logits = classify(model, feats)
                    loss = F.cross_entropy(logits, yb, weight=weight,
                                           label_smoothing=cfg.label_smoothing)
                    extra = self._adapt_loss(ctx, gen, feats, logits, yb, device,
                                             (epoch * micro_steps + step) / total_steps)
                    if step % accum == 0:
                        sched.opt.zero_grad(set_to_none=True)
                    ((loss + extra) / window).backward()
                    if (step + 1) % accum == 0 or step + 1 == micro_steps:
                        if cfg.clip_grad > 0:
                            torch.nn.utils.clip_grad_norm_(
                                [p for g in sched.opt.param_groups for p in g["params"]],
                                cfg.clip_grad)
                        sched.before_step()
                        lr = sched.lr() if lr is None else lr
                        sched.opt.step()
                    sums["loss"] += loss.item() * len(idx)
                    sums["adapt_loss"] += float(extra.detach()) * len(idx)
                    sums["correct"] += (logits.argmax(1) == yb).sum().item()
                    advance(1, info=f"loss {loss.item():.3f}")
                    if (interrupt.requested() and (step + 1) % accum == 0
                            and step + 1 < micro_steps):
                        self._stop_mid_epoch(ctx, sched, history, epoch, step + 1,
                                             micro_steps, gen, sums, lr)
            val_loss, val_acc = evaluate_tensors(model, ctx.x_val, ctx.y_val, device)
            stage_info = (dict(stage=stage + 1, train=cfg.stages[stage]["train"])
                          if cfg.stages else {})
            record = epoch_record(epoch, sums["loss"] / n, sums["adapt_loss"] / n,
                                  sums["correct"] / n, val_loss, val_acc,
                                  lr if lr is not None else sched.lr(), t0, **stage_info)
            improved = sched.end_epoch(epoch, val_loss)
            history.append(record)
            save_epoch(ctx.run, record, improved, model.state_dict(), {
                "best_val_loss": sched.best_val, "optimizer": sched.opt.state_dict(),
                "schedule": sched.state_dict(), "history": history,
                "adapter": ctx.adapter_module.state_dict() if ctx.adapter_module else {}})
            log_epoch(record, cfg.epochs, improved)
            if sched.done:
                break
            interrupt.check(f"train finished epoch {epoch + 1}/{cfg.epochs}",
                            f"{ctx.run.last} holds it: run the same command with --resume")

    @staticmethod
    def _stop_mid_epoch(ctx, sched, history, epoch, steps_done, micro_steps, gen, sums,
                        lr) -> None:
        """Write last.pt in the middle of `epoch` and raise `Stopped`.

        The checkpoint is an ordinary last.pt of the epochs before (so every reader of
        last.pt sees a finished epoch) plus a `partial` entry: the steps done, both random
        streams and the running sums. `--resume` replays nothing and skips nothing, so its
        numbers equal an uninterrupted run's; an older astrotransfer simply redoes the epoch.
        """
        save_checkpoint(ctx.run.last, {
            "model": ctx.model.state_dict(), "epoch": epoch - 1,
            "best_val_loss": sched.best_val, "optimizer": sched.opt.state_dict(),
            "schedule": sched.state_dict(), "history": history,
            "adapter": ctx.adapter_module.state_dict() if ctx.adapter_module else {},
            "partial": {"epoch": epoch, "step": steps_done, "torch_rng": torch.get_rng_state(),
                        "gen": gen.get_state(), "sums": dict(sums), "lr": lr}})
        raise interrupt.Stopped(
            f"stopped by {interrupt.requested()}: train in epoch {epoch + 1}/{ctx.cfg.epochs} "
            f"after step {steps_done}/{micro_steps}; checkpoint {ctx.run.last} written: run the "
            f"same command with --resume to continue exactly there")

    @staticmethod
    def _restore(ctx, sched: Schedule) -> tuple[int, list[dict]]:
        """(first epoch to run, epoch records so far); metrics.jsonl is rewritten from the
        checkpoint's own records, so a kill between checkpoint and log line loses none."""
        st = ctx.resume_state
        if st is None:
            sched.enter_stage()
            return 0, []
        ctx.model.load_state_dict(st["model"])
        if ctx.adapter_module is not None and st.get("adapter"):
            ctx.adapter_module.load_state_dict(st["adapter"])
        done = int(st["epoch"]) + 1  # records count epochs from 1
        if "schedule" in st:
            sched.load_state_dict(st["schedule"], done)
        else:  # a checkpoint from before schedules: one stage, its optimizer, its best loss
            sched.enter_stage()
            sched.opt.load_state_dict(st["optimizer"])
            sched.best_val = sched.stage_best = float(st["best_val_loss"])
            sched.done = done >= ctx.cfg.epochs
        history = list(st.get("history") or [r for r in ctx.run.epochs() if r["epoch"] <= done])
        rewrite_metrics(ctx.run, history)
        if not sched.done:
            log.info("resuming %s at epoch %d", ctx.run.path, done + 1)
        return done, history

    @staticmethod
    def _adapt_loss(ctx, gen, feats, logits, yb, device, progress):
        if not uses_adapter(ctx.cfg, ctx.adapter):
            return feats.new_zeros(())
        tf = tl = None
        if ctx.x_target is not None and len(ctx.x_target):
            ti = torch.randint(0, len(ctx.x_target), (len(yb),), generator=gen)
            xt = to_device(augment_batch(ctx.augment, ctx.x_target[ti]), device,
                           ctx.cfg.channels_last)
            tf = features(ctx.model, xt)
            tl = classify(ctx.model, tf)
        return ctx.adapter.loss(feats, logits, tf, tl, progress, ctx.adapter_module, src_labels=yb)


@hookimpl
def register_trainers(register):
    """Both built-in loops, the same way a third-party trainer registers."""
    from astrotransfer.engine.distributed.rank_training import DeepSpeedTrainer

    register(StandardTrainer())
    register(DeepSpeedTrainer())
