"""The standard trainer's schedule: stages, optimizer, learning rate and early stopping.

Everything that decides *what* trains and *how fast* between epochs lives in one object,
`Schedule`, whose whole state is plain values and tensors. It goes into last.pt, so a run
killed anywhere resumes with the same stage, learning rate, plateau counter and early-stop
counter as the run that was never interrupted.
"""
from __future__ import annotations

import logging
import math

import torch

from astrotransfer.engine.training.optim import build_optimizer, layerwise_groups
from astrotransfer.engine.training.stages import apply_stage, freeze_frozen_batchnorm

log = logging.getLogger("astrotransfer")


class Schedule:
    """Stage, optimizer, plateau scheduler and early stopping of one run."""

    def __init__(self, ctx, steps_per_epoch: int):
        self.ctx = ctx
        cfg = ctx.cfg
        self.cfg = cfg
        self.stages = cfg.stages or [{"train": None, "epochs": None}]
        self.steps_per_epoch = steps_per_epoch  # optimizer steps
        self.total_steps = max(1, cfg.epochs * steps_per_epoch)
        if cfg.warmup_epochs is None:  # the default: 5 % of a cosine run, none otherwise
            self.warmup_steps = (math.ceil(0.05 * self.total_steps)
                                 if cfg.scheduler == "cosine" else 0)
        else:
            self.warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
        self.base_lr = cfg.lr * (cfg.grad_accum if cfg.scale_lr else 1)
        self.stage = 0
        self.stage_start = 0  # epoch index at which the current stage began
        self.best_val = math.inf  # over the whole run: picks best.pt
        self.stage_best = math.inf  # within the stage: early stopping
        self.bad_epochs = 0
        self.done = False
        self.stopped = False  # by early stopping: a resume with more --epochs stays stopped
        self.step = 0  # optimizer steps taken, for the warm-up
        self.opt = self.plateau = None
        self.n_trainable = 0

    # ------------------------------------------------------------ stages
    @property
    def rule(self) -> str | None:
        return self.stages[self.stage]["train"]

    def stage_lr(self) -> float:
        lr = self.stages[self.stage].get("lr")
        return self.base_lr if lr is None else lr * (self.cfg.grad_accum if self.cfg.scale_lr else 1)

    def enter_stage(self) -> None:
        """Freeze/unfreeze for the current stage and start a fresh optimizer over what trains.

        A fresh optimizer per stage is what re-compiling a Keras model does; Adam moments
        of parameters that were frozen would be meaningless anyway.
        """
        ctx = self.ctx
        n = apply_stage(ctx.model, self.rule)
        params = layerwise_groups(ctx.model, self.cfg.weight_decay, self.cfg.layer_decay)
        if ctx.adapter_module is not None:  # adapters are new layers: the head's lr
            params.append({"params": list(ctx.adapter_module.parameters()), "lr_scale": 1.0})
        self.opt = build_optimizer(self.cfg.optimizer, params, self.stage_lr(),
                                   self.cfg.weight_decay)
        self.plateau = (torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.opt, mode="min", factor=self.cfg.lr_factor, patience=self.cfg.lr_patience)
            if self.cfg.scheduler == "plateau" else None)
        self.stage_best, self.bad_epochs = math.inf, 0
        self.n_trainable = n

    def describe(self) -> str:
        return (f"stage {self.stage + 1}/{len(self.stages)}: training '{self.rule}' "
                f"({self.n_trainable} parameter tensors), lr {self.stage_lr():.2g}")

    def train_mode(self) -> None:
        self.ctx.model.train()
        if getattr(self.cfg, "keep_bn_stats", False):  # LP-FT: the probe's features stay put
            freeze_frozen_batchnorm(self.ctx.model, all_layers=True)
        elif self.cfg.stages:
            freeze_frozen_batchnorm(self.ctx.model)
        if self.ctx.adapter_module is not None:
            self.ctx.adapter_module.train()

    def stage_over(self, epoch: int) -> bool:
        """Whether the stage ends after `epoch` by its epoch count (the last runs to --epochs)."""
        length = self.stages[self.stage]["epochs"]
        last = self.stage == len(self.stages) - 1
        return not last and length is not None and epoch + 1 - self.stage_start >= length

    # ------------------------------------------------------------ learning rate
    def before_step(self) -> None:
        """Set this optimizer step's lr: a linear warm-up from lr/warmup_steps to the stage's
        lr (the last warm-up step lands exactly on it), then, with `cosine`, a half cosine
        from there to 0 at the run's last step; with `plateau` only the plateau moves it."""
        factor = None
        if self.step < self.warmup_steps:
            factor = (self.step + 1) / self.warmup_steps
        elif self.cfg.scheduler == "cosine":
            span = max(1, self.total_steps - self.warmup_steps)
            done = min(1.0, (self.step - self.warmup_steps) / span)
            factor = 0.5 * (1.0 + math.cos(math.pi * done))
        if factor is not None:
            for g in self.opt.param_groups:
                g["lr"] = self.stage_lr() * g.get("lr_scale", 1.0) * factor
        self.step += 1

    def lr(self) -> float:
        """The head's lr (the largest group's): what the epoch log reports."""
        return float(max(g["lr"] for g in self.opt.param_groups))

    # ------------------------------------------------------------ end of epoch
    def end_epoch(self, epoch: int, val_loss: float) -> bool:
        """Update plateau/early stopping/stage after `epoch`; True if val_loss is a new best."""
        improved = val_loss < self.best_val
        self.best_val = min(self.best_val, val_loss)
        if val_loss < self.stage_best:
            self.stage_best, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        if self.plateau is not None and self.step >= self.warmup_steps:
            self.plateau.step(val_loss)
        stop = self.cfg.early_stop and self.bad_epochs >= self.cfg.early_stop
        if epoch + 1 >= self.cfg.epochs:
            self.done = True
        elif stop and self.stage == len(self.stages) - 1:
            log.info("early stopping after epoch %d: no better validation loss for %d epochs",
                     epoch + 1, self.bad_epochs)
            self.done = self.stopped = True
        elif stop or self.stage_over(epoch):
            if stop:
                log.info("early stopping ends stage %d after epoch %d", self.stage + 1, epoch + 1)
            self.stage += 1
            self.stage_start = epoch + 1
            self.enter_stage()
        return improved

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {"stage": self.stage, "stage_start": self.stage_start, "best_val": self.best_val,
                "stage_best": self.stage_best, "bad_epochs": self.bad_epochs, "stopped": self.stopped,
                "step": self.step, "optimizer": self.opt.state_dict(),
                "plateau": self.plateau.state_dict() if self.plateau is not None else {}}

    def load_state_dict(self, st: dict, epochs_done: int) -> None:
        """Restore after `epochs_done` epochs; a run asked for more --epochs than it had
        continues (its last stage runs longer), unless early stopping had ended it."""
        self.stage, self.stage_start = int(st["stage"]), int(st["stage_start"])
        self.enter_stage()
        self.best_val, self.stage_best = float(st["best_val"]), float(st["stage_best"])
        self.bad_epochs, self.step = int(st["bad_epochs"]), int(st["step"])
        self.stopped = bool(st["stopped"])
        self.done = self.stopped or epochs_done >= self.cfg.epochs
        self.opt.load_state_dict(st["optimizer"])
        if self.plateau is not None and st.get("plateau"):
            self.plateau.load_state_dict(st["plateau"])
