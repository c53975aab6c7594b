"""What a domain-adaptation plugin provides.

The trainer calls an adapter once per step with penultimate features and logits of a
labelled source batch and, when `needs_target`, of an unlabelled target batch. The adapter
returns its extra loss; the supervised source cross-entropy is the trainer's job, so plain
fine-tuning is simply an adapter whose extra loss is zero.
"""
from __future__ import annotations

import torch
from torch import nn


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
