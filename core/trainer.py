"""What a trainer plugin provides: the `Trainer` contract and the `TrainContext` it gets.

A trainer owns the loop and nothing else. The engine (`engine.training.single_run`) has
already checked the config, opened the stores, mapped bands, built the model with its
pretrained weights and the adapter's module, loaded the tensors and opened the run
directory; it hands all of that over as one `TrainContext`, and the trainer writes epochs
into `ctx.run` (metrics.jsonl via `append_epoch`, best.pt, last.pt). Register one with the
`register_trainers` hook; `--trainer NAME` selects it.

The built-in trainers ("standard" and "deepspeed") share the step, evaluation and epoch
bookkeeping in `astrotransfer.engine.training.loop`; a third-party trainer may reuse it.

Example (a plugin module with an entry point in the group ``astrotransfer``):

    from astrotransfer import hookimpl
    from astrotransfer.trainer import Trainer, TrainContext

    class OneCycle(Trainer):
        name = "onecycle"
        description = "AdamW with a one-cycle lr schedule"

        def fit(self, ctx: TrainContext) -> None:
            ...  # train ctx.model on ctx.x_train / ctx.y_train, write into ctx.run

    @hookimpl
    def register_trainers(register):
        register(OneCycle())
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .config import TrainConfig
    from .engine.runs import RunDir


@dataclass
class TrainContext:
    """Everything a trainer needs, built once by the engine so trainers stay small.

    Attributes:
        cfg: the resolved `TrainConfig` (epochs, lr, batch size, stages, ...).
        run: the run directory to write (`RunDir`: best, last, append_epoch, ...).
        model: the timm network, pretrained weights loaded, on the CPU.
        adapter: the `Adapter` (its `loss` is added to the cross-entropy each step).
        adapter_module: the adapter's trainable module (e.g. DANN's discriminator) or None.
        x_train, y_train: source (plus few-shot and pseudo-labelled target) images and
            labels, (N, C, H, W) float32 and (N,) int64, already resized.
        x_val, y_val: the validation split, same form.
        x_target: unlabelled target images when the adapter needs them, else None.
        class_names: the source's classes, in label order.
        augment: a per-sample augmentation callable, or None.
        device: where to train.
        resume_state: last.pt's contents when resuming, else None.
        extra: provenance and counts, for logs.
    """

    cfg: "TrainConfig"
    run: "RunDir"
    model: "nn.Module"
    adapter: Any
    adapter_module: "nn.Module | None"
    x_train: "torch.Tensor"
    y_train: "torch.Tensor"
    x_val: "torch.Tensor"
    y_val: "torch.Tensor"
    x_target: "torch.Tensor | None"
    class_names: list[str]
    augment: Any
    device: "torch.device"
    resume_state: dict | None = None
    extra: dict = field(default_factory=dict)


class Trainer:
    """A training loop. Subclass it (or provide `name`, `description` and `fit`)."""

    name: str = ""
    description: str = ""

    def fit(self, ctx: TrainContext) -> None:
        """Train `ctx.model` and write every finished epoch into `ctx.run`.

        Contract: append one record per epoch (at least ``epoch``, ``train_loss``,
        ``val_loss``, ``val_acc``) with `ctx.run.append_epoch`; save best.pt whenever the
        validation loss improves and last.pt after every epoch, with
        `engine.runs.save_checkpoint` (plain tensors only); when `ctx.resume_state` is set,
        continue after its epoch. Raise `astrotransfer.UserError` for bad input.
        """
        raise NotImplementedError
