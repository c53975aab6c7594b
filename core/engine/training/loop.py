"""The training loop's shared parts: what both built-in trainers do the same way.

The standard (one process) and DeepSpeed (data-parallel) trainers differ in how a batch is
dealt out and stepped, not in what a step means. So one module holds, for both:

* `augment_batch` and `to_device`: the augmentation of a source or target batch and its
  move to the device (channels-last when the model is);
* `uses_adapter`: when the adapter pass runs at all (pure fine-tuning skips it, so a
  fine-tuned run costs one forward pass per step, not two);
* `evaluate_tensors` / `evaluate_sums`: validation loss and accuracy;
* `epoch_record`, `save_epoch` and `log_epoch`: the metrics.jsonl record, best.pt/last.pt
  and the one log line per epoch.

A third-party trainer (`astrotransfer.trainer.Trainer`) may use them too, and then writes
run directories every command reads the same way.
"""
from __future__ import annotations

import json
import logging
import time

import torch
import torch.nn.functional as F

from ..runs import atomic_write_text, save_checkpoint

log = logging.getLogger("astrotransfer")


def augment_batch(augment, x: torch.Tensor) -> torch.Tensor:
    """Augment a batch; `augment` draws its own transform per sample (engine.data)."""
    return x if augment is None else augment(x)


def to_device(x: torch.Tensor, device, channels_last: bool) -> torch.Tensor:
    """`x` on `device`, in NHWC memory layout when the model is (faster convolutions)."""
    x = x.to(device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def uses_adapter(cfg, adapter) -> bool:
    """Whether a step runs the adapter pass: always, except for pure fine-tuning (no target
    batch needed, no Fisher or entropy add-on), whose extra loss is zero anyway."""
    return not (not adapter.needs_target and cfg.adapt == "finetune"
                and not (cfg.fisher or cfg.entropy))


@torch.no_grad()
def evaluate_tensors(model, x, y, device, batch_size=256) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on in-memory tensors, in eval mode."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / max(1, len(x)), correct / max(1, len(x))


@torch.no_grad()
def evaluate_sums(forward, x, y, device, rows, weight, batch_size=256) -> torch.Tensor:
    """(weighted CE sum, weighted correct count) over `rows` of x/y, float64: one rank's
    share of a sharded validation pass, where padding rows carry weight 0."""
    sums = torch.zeros(2, dtype=torch.float64)
    for i in range(0, len(rows), batch_size):
        r = torch.from_numpy(rows[i:i + batch_size])
        w = torch.from_numpy(weight[i:i + batch_size])
        logits = forward(x[r].to(device)).float().cpu()
        loss = F.cross_entropy(logits, y[r], reduction="none").double()
        sums += torch.stack([(loss * w).sum(), ((logits.argmax(1) == y[r]).double() * w).sum()])
    return sums


def epoch_record(epoch: int, train_loss: float, adapt_loss: float, train_acc: float,
                 val_loss: float, val_acc: float, lr: float, started: float, **extra) -> dict:
    """One metrics.jsonl line: `epoch` counts from 1, `seconds` since `started`."""
    return {"epoch": epoch + 1, "train_loss": train_loss, "adapt_loss": adapt_loss,
            "train_acc": train_acc, "val_loss": val_loss, "val_acc": val_acc, "lr": lr,
            "seconds": round(time.perf_counter() - started, 2), **extra}


def save_epoch(run, record: dict, improved: bool, model_state: dict, last: dict) -> None:
    """best.pt when the validation loss improved, then last.pt, then the record: a kill
    between them loses no epoch that last.pt says is done."""
    if improved:
        save_checkpoint(run.best, {"model": model_state, "epoch": record["epoch"] - 1,
                                   "val_loss": record["val_loss"], "val_acc": record["val_acc"]})
    save_checkpoint(run.last, {"model": model_state, "epoch": record["epoch"] - 1, **last})
    run.append_epoch(record)


def log_epoch(record: dict, epochs: int, improved: bool) -> None:
    log.info("epoch %d/%d  loss %.4f  train acc %.3f  val loss %.4f  val acc %.3f%s",
             record["epoch"], epochs, record["train_loss"], record["train_acc"],
             record["val_loss"], record["val_acc"], "  *best" if improved else "")


def rewrite_metrics(run, history: list[dict]) -> None:
    """metrics.jsonl from a checkpoint's own records (resume)."""
    atomic_write_text(run.metrics_path, "".join(json.dumps(r) + "\n" for r in history))
