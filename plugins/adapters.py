"""Built-in adaptation methods, registered as a default plugin.

The methods (MMD, DANN, CORAL) align source and target features; the DeepMerge II
regularisers (Fisher loss, entropy minimisation) are not methods of their own but add-ons,
so they are bolted onto any adapter with `compose` (in `astrotransfer.adapter`, beside the
contract, since the engine applies it) instead of multiplying registry entries.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from astrotransfer import losses
from astrotransfer.adapter import Adapter, Composite, compose  # noqa: F401 (re-exported)
from astrotransfer.hookspecs import hookimpl


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


BUILTIN_ADAPTERS = [FineTune, MMD, DANN, CORAL]


@hookimpl
def register_adapters(register):
    for cls in BUILTIN_ADAPTERS:
        register(cls())
