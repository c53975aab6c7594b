"""Built-in adaptation methods, registered as a default plugin.

The methods (MMD, DANN, CORAL) align source and target features; the DeepMerge II
regularisers (Fisher loss, entropy minimisation) are not methods of their own but add-ons,
so they are bolted onto any adapter with `compose` instead of multiplying registry entries.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from astrotransfer.adapter import Adapter
from astrotransfer.hookspecs import hookimpl

from astrotransfer import losses


def _need_target(adapter: Adapter, tgt_feats) -> None:
    if tgt_feats is None:
        raise ValueError(f"adapter '{adapter.name}' needs a target batch but got none")


class FineTune(Adapter):
    """Source-only training: the baseline every adaptation method must beat on the target."""

    name = "finetune"
    description = "supervised fine-tuning on the labelled source only"

    def loss(self, src_feats, src_logits, tgt_feats, tgt_logits, progress, module, *,
             src_labels=None):
        return src_feats.new_zeros(())


class MMD(Adapter):
    """DAN-style alignment: penalise the kernel distance between the two feature clouds."""

    name = "mmd"
    description = "multi-kernel Gaussian MMD between source and target features (DAN)"
    needs_target = True

    def __init__(self, weight: float = 1.0,
                 multipliers: Sequence[float] = losses.DEFAULT_MULTIPLIERS,
                 unbiased: bool = False):
        self.weight = float(weight)
        self.multipliers = tuple(multipliers)
        self.unbiased = unbiased

    def loss(self, src_feats, src_logits, tgt_feats, tgt_logits, progress, module, *,
             src_labels=None):
        _need_target(self, tgt_feats)
        return self.weight * losses.mmd(src_feats, tgt_feats, multipliers=self.multipliers,
                                        unbiased=self.unbiased)


class CORAL(Adapter):
    """Deep CORAL: match second moments only, a cheap and stable alternative to MMD."""

    name = "coral"
    description = "match source and target feature covariances (Deep CORAL)"
    needs_target = True

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def loss(self, src_feats, src_logits, tgt_feats, tgt_logits, progress, module, *,
             src_labels=None):
        _need_target(self, tgt_feats)
        return self.weight * losses.coral(src_feats, tgt_feats)


class DomainClassifier(nn.Module):
    """Ganin's 3-layer domain discriminator; one logit, source = 1."""

    def __init__(self, feature_dim: int, hidden: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.net(feats.reshape(feats.shape[0], -1)).squeeze(1)


class DANN(Adapter):
    """Adversarial alignment through a gradient-reversal layer (Ganin & Lempitsky 2015).

    The discriminator is the module `build` returns; the trainer must optimise it with the
    backbone, and the reversal makes one optimiser step serve both players.
    """

    name = "dann"
    description = "domain-adversarial training with a gradient-reversal layer (DANN)"
    needs_target = True

    def __init__(self, weight: float = 1.0, hidden: int = 1024, dropout: float = 0.5,
                 gamma: float = 10.0):
        self.weight = float(weight)
        self.hidden = hidden
        self.dropout = dropout
        self.gamma = gamma

    def build(self, feature_dim: int, num_classes: int) -> nn.Module:
        return DomainClassifier(feature_dim, self.hidden, self.dropout)

    def loss(self, src_feats, src_logits, tgt_feats, tgt_logits, progress, module, *,
             src_labels=None):
        _need_target(self, tgt_feats)
        if module is None:
            raise ValueError("DANN needs the domain classifier from build() as `module`")
        lambd = losses.dann_lambda(progress, self.gamma)
        feats = torch.cat([src_feats.reshape(src_feats.shape[0], -1),
                           tgt_feats.reshape(tgt_feats.shape[0], -1)])
        logits = module(losses.grad_reverse(feats, lambd))
        n = src_feats.shape[0]
        return self.weight * losses.domain_bce(logits[:n], logits[n:])


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


BUILTIN_ADAPTERS = [FineTune, MMD, DANN, CORAL]


@hookimpl
def register_adapters(register):
    for cls in BUILTIN_ADAPTERS:
        register(cls())
