"""What a domain-adaptation plugin provides.

The trainer calls an adapter once per step with penultimate features and logits of a
labelled source batch and, when `needs_target`, of an unlabelled target batch. The adapter
returns its extra loss; the supervised source cross-entropy is the trainer's job, so plain
fine-tuning is simply an adapter whose extra loss is zero.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn

from . import losses


class Adapter:
    name: str = ""
    description: str = ""
    needs_target: bool = False

    def build(self, feature_dim: int, num_classes: int) -> nn.Module | None:
        """Extra trainable modules (e.g. a domain classifier); optimised with the backbone."""
        return None

    def loss(self, src_feats: torch.Tensor, src_logits: torch.Tensor,
             tgt_feats: torch.Tensor | None, tgt_logits: torch.Tensor | None,
             progress: float, module: nn.Module | None, *,
             src_labels: torch.Tensor | None = None) -> torch.Tensor:
        """Extra loss for this step. `progress` runs from 0 to 1 over the whole training.

        `src_labels` (class indices of the source batch) is keyword-only and optional so that
        adapters written before it existed keep working: class-aware terms such as the Fisher
        loss need it, purely distributional ones ignore it. A caller should pass it only to
        an override whose signature accepts it (an older third-party `loss` does not).
        """
        raise NotImplementedError


def _accepts_labels(adapter: Adapter) -> bool:
    try:
        params = inspect.signature(adapter.loss).parameters
    except (TypeError, ValueError):
        return False
    return "src_labels" in params or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


class Composite(Adapter):
    """Any adapter plus the DeepMerge II regularisers, each with its own weight.

    loss = base loss + fisher · fisher_loss(source feats, source labels)
                     + entropy · entropy_loss(target logits).
    The base adapter's module (e.g. DANN's discriminator) is passed through untouched.
    """

    def __init__(self, base: Adapter, fisher: float = 0.0, entropy: float = 0.0,
                 fisher_form: str = "ratio",
                 fisher_intra: float = losses.FISHER_INTRA_WEIGHT,
                 fisher_inter: float = losses.FISHER_INTER_WEIGHT):
        self.base = base
        self.fisher = float(fisher)
        self.entropy = float(entropy)
        self.fisher_kwargs = dict(form=fisher_form, intra_weight=fisher_intra,
                                  inter_weight=fisher_inter)
        extras = [n for n, w in (("fisher", self.fisher), ("entropy", self.entropy)) if w]
        self.name = "+".join([base.name, *extras])
        self.description = base.description + "".join(
            f"; + {w:g} x {n}" for n, w in (("Fisher loss", self.fisher),
                                            ("target entropy", self.entropy)) if w)
        # Entropy minimisation reads target logits, so it needs the target batch even when
        # the base method (e.g. fine-tuning) does not.
        self.needs_target = bool(base.needs_target or self.entropy)
        self._base_takes_labels = _accepts_labels(base)

    def build(self, feature_dim: int, num_classes: int) -> nn.Module | None:
        return self.base.build(feature_dim, num_classes)

    def loss(self, src_feats, src_logits, tgt_feats, tgt_logits, progress, module, *,
             src_labels=None):
        args = (src_feats, src_logits, tgt_feats, tgt_logits, progress, module)
        if self._base_takes_labels:
            total = self.base.loss(*args, src_labels=src_labels)
        else:
            total = self.base.loss(*args)
        if self.fisher:
            if src_labels is None:
                raise ValueError(f"'{self.name}': the Fisher loss needs src_labels")
            total = total + self.fisher * losses.fisher_loss(src_feats, src_labels,
                                                             **self.fisher_kwargs)
        if self.entropy:
            if tgt_logits is None:
                raise ValueError(f"'{self.name}': entropy minimisation needs target logits")
            total = total + self.entropy * losses.entropy_loss(tgt_logits)
        return total


def compose(base: Adapter, fisher: float = 0.0, entropy: float = 0.0, **fisher_options) -> Adapter:
    """`base` with the Fisher and entropy regularisers added; `base` itself if both are 0.

    `fisher_options` go to `Composite` (fisher_form, fisher_intra, fisher_inter).
    """
    if not fisher and not entropy:
        return base
    return Composite(base, fisher=fisher, entropy=entropy, **fisher_options)
