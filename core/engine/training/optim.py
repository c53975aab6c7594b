"""Optimizers for fine-tuning: AdamW over layer-wise learning-rate groups.

Shared by every trainer (standard and DeepSpeed), so a recipe means the same thing
whichever loop runs it. Each group carries `lr_scale`; a trainer sets a group's lr to
(schedule's lr) x lr_scale at every step.
"""
from __future__ import annotations

import torch

from ...errors import UserError
from .stages import param_groups


def build_optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """Adam or AdamW over `params` (tensors or param-group dicts that carry `lr_scale`).

    Adam's weight decay is an L2 term in the gradient (what Keras' Adam + l2 did in the
    papers); AdamW decouples it, which behaves better with adaptive steps.
    """
    cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
    groups = params if params and isinstance(params[0], dict) else [{"params": params}]
    for g in groups:
        g["lr"] = lr * g.setdefault("lr_scale", 1.0)
    return cls(groups, lr=lr, weight_decay=weight_decay)


#: layer-wise lr decay spans at most this many steps from head to stem
DECAY_STEPS = 8


def layerwise_groups(model, weight_decay: float, layer_decay: float) -> list[dict]:
    """Trainable parameters in groups whose lr falls by `layer_decay` per block, head to stem.

    Why: the head is new and must learn fast, the stem's edge and colour filters are the
    most general part of an ImageNet network and the part small survey sets damage most
    (Howard & Ruder 2018; Zoobot decays its EfficientNet's lr block by block). Blocks are
    timm's coarse groups (an EfficientNet's 7 stages, a ResNet's 4 layers); a network
    without a group matcher uses its top-level children. Biases and normalisation
    parameters take no weight decay. `layer_decay` 1 gives one lr for all.

    Returns:
        param-group dicts with `params`, `lr_scale` and `weight_decay`.
    Example:
        >>> import timm
        >>> g = layerwise_groups(timm.create_model("resnet18", num_classes=2), 1e-4, 0.5)
        >>> sorted({x["lr_scale"] for x in g})[-1], len({x["lr_scale"] for x in g}) > 3
        (1.0, True)
    """
    depth = _coarse_depths(model)
    top = max(depth.values()) if depth else 0
    # deep per-layer groupings (VGG has no coarse matcher: 50 groups) are squeezed onto
    # the 8 steps of an EfficientNet's stem + 7 stages, so the stem's lr is never below
    # layer_decay**8 of the head's, whatever the architecture
    squeeze = min(1.0, DECAY_STEPS / top) if top else 1.0
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale = layer_decay ** ((top - depth.get(name, top)) * squeeze)
        decay = 0.0 if p.ndim <= 1 else weight_decay
        key = (scale, decay)
        groups.setdefault(key, {"params": [], "lr_scale": scale, "weight_decay": decay})
        groups[key]["params"].append(p)
    return list(groups.values())


def _coarse_depths(model) -> dict[str, int]:
    """Parameter name -> block depth (0 = stem ... last = the classifier head)."""
    try:
        groups = param_groups(model, coarse=True)
    except UserError:  # no stem/blocks/head split: one lr for all
        return {}
    return {n: i for i, g in enumerate(groups) for n in g}
