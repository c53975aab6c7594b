"""The built-in single-process trainer, registered as a default plugin.

Every source of randomness (shuffling, augmentation, dropout, target batches) is reseeded
from (seed, epoch) at the start of each epoch, so a run resumed from its last checkpoint
replays exactly the epochs an uninterrupted run would have.
"""
from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from astrotransfer.engine.models import classify, features
from astrotransfer.engine.runs import save_checkpoint
from astrotransfer.hookspecs import hookimpl
from astrotransfer.progress import progress_bar

log = logging.getLogger("astrotransfer")


def augment_batch(augment, x: torch.Tensor) -> torch.Tensor:
    """Per-sample augmentation: v2 transforms on a batch would draw one transform for all."""
    if augment is None:
        return x
    return torch.stack([augment(xi) for xi in x])


def _trainable(ctx) -> list[torch.nn.Parameter]:
    params = [p for p in ctx.model.parameters() if p.requires_grad]
    if ctx.adapter_module is not None:
        params += list(ctx.adapter_module.parameters())
    return params


@torch.no_grad()
def evaluate_tensors(model, x, y, device, batch_size=256) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / max(1, len(x)), correct / max(1, len(x))


class StandardTrainer:
    name = "standard"
    description = "single-process AdamW loop with validation, best/last checkpoints and resume"

    def fit(self, ctx) -> None:
        cfg, model, device = ctx.cfg, ctx.model, ctx.device
        model.to(device)
        if ctx.adapter_module is not None:
            ctx.adapter_module.to(device)
        opt = torch.optim.AdamW(_trainable(ctx), lr=cfg.lr, weight_decay=cfg.weight_decay)
        start, best_val = 0, float("inf")
        if ctx.resume_state is not None:
            st = ctx.resume_state
            model.load_state_dict(st["model"])
            if ctx.adapter_module is not None and st.get("adapter"):
                ctx.adapter_module.load_state_dict(st["adapter"])
            opt.load_state_dict(st["optimizer"])
            start, best_val = int(st["epoch"]) + 1, float(st["best_val_loss"])
            ctx.run.truncate_epochs(int(st["epoch"]) + 1)  # records count epochs from 1
            log.info("resuming %s at epoch %d", ctx.run.path, start + 1)
        n = len(ctx.x_train)
        steps_per_epoch = max(1, (n + cfg.batch_size - 1) // cfg.batch_size)
        total_steps = cfg.epochs * steps_per_epoch
        for epoch in range(start, cfg.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            perm = torch.randperm(n, generator=gen)
            model.train()
            if ctx.adapter_module is not None:
                ctx.adapter_module.train()
            sums = {"loss": 0.0, "adapt_loss": 0.0, "correct": 0}
            with progress_bar(f"epoch {epoch + 1}/{cfg.epochs}", steps_per_epoch) as advance:
                for step in range(steps_per_epoch):
                    idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
                    xb = augment_batch(ctx.augment, ctx.x_train[idx]).to(device)
                    yb = ctx.y_train[idx].to(device)
                    feats = features(model, xb)
                    logits = classify(model, feats)
                    loss = F.cross_entropy(logits, yb)
                    extra = self._adapt_loss(ctx, gen, feats, logits, yb, device,
                                             (epoch * steps_per_epoch + step) / total_steps)
                    opt.zero_grad(set_to_none=True)
                    (loss + extra).backward()
                    opt.step()
                    sums["loss"] += loss.item() * len(idx)
                    sums["adapt_loss"] += float(extra) * len(idx)
                    sums["correct"] += (logits.argmax(1) == yb).sum().item()
                    advance(1, info=f"loss {loss.item():.3f}")
            val_loss, val_acc = evaluate_tensors(model, ctx.x_val, ctx.y_val, device)
            record = {"epoch": epoch + 1, "train_loss": sums["loss"] / n,
                      "adapt_loss": sums["adapt_loss"] / n, "train_acc": sums["correct"] / n,
                      "val_loss": val_loss, "val_acc": val_acc, "lr": opt.param_groups[0]["lr"],
                      "seconds": round(time.perf_counter() - t0, 2)}
            improved = val_loss < best_val
            if improved:
                best_val = val_loss
                save_checkpoint(ctx.run.best, {"model": model.state_dict(), "epoch": epoch,
                                               "val_loss": val_loss, "val_acc": val_acc})
            save_checkpoint(ctx.run.last, {
                "model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                "best_val_loss": best_val,
                "adapter": ctx.adapter_module.state_dict() if ctx.adapter_module else {}})
            ctx.run.append_epoch(record)
            log.info("epoch %d/%d  loss %.4f  train acc %.3f  val loss %.4f  val acc %.3f%s",
                     epoch + 1, cfg.epochs, record["train_loss"], record["train_acc"],
                     val_loss, val_acc, "  *best" if improved else "")

    @staticmethod
    def _adapt_loss(ctx, gen, feats, logits, yb, device, progress):
        if not ctx.adapter.needs_target and ctx.cfg.adapt == "finetune" and not (
                ctx.cfg.fisher or ctx.cfg.entropy):
            return feats.new_zeros(())
        tf = tl = None
        if ctx.x_target is not None and len(ctx.x_target):
            ti = torch.randint(0, len(ctx.x_target), (len(yb),), generator=gen)
            xt = augment_batch(ctx.augment, ctx.x_target[ti]).to(device)
            tf = features(ctx.model, xt)
            tl = classify(ctx.model, tf)
        return ctx.adapter.loss(feats, logits, tf, tl, progress, ctx.adapter_module, src_labels=yb)


@hookimpl
def register_trainers(register):
    register(StandardTrainer())
