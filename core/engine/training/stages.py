"""Progressive unfreezing: which parameters train in each stage of a fine-tuning schedule.

Khan et al. (2019) fine-tune an ImageNet Xception in three steps: the new dense head alone,
then the upper part of the network ("layers >= 40"), then everything but the stem. Keras
layer indices do not carry over between architectures, so the rules here are stated in
timm's own parameter groups (`model.group_matcher(coarse=False)`): group 0 is the stem, the
last group is the classifier head, and the groups between are the network's blocks in
forward order. "The top half of the blocks" then means the same thing for Xception, ResNet,
VGG or EfficientNet.

A schedule is a list of stages, each `{train: RULE, epochs: N, lr: optional}`:

  head             the classifier head only (the backbone is a fixed feature extractor)
  top:F            the head and the last fraction F (0 < F < 1) of the blocks
  top:N            the head and the last N blocks (N >= 1, an integer)
  all_but_stem     everything except the stem group
  all              everything
  prefix:A+B       the head and parameters whose names start with A or B (e.g. layer4)

On the command line: `--stages head=1,top:0.5=2,all_but_stem=3` (RULE=EPOCHS[@LR]).
The last stage runs until --epochs; when --epochs is not given it is the sum of the stages.
A stage ends early when early stopping triggers in it, and the next stage starts.

Frozen BatchNorm layers are kept in eval mode, as Keras does for non-trainable layers, so
the pretrained running statistics are not overwritten by a head-only stage.
"""
from __future__ import annotations

import math
import re

from torch import nn

from ...errors import UserError

RULE_HELP = "head | top:F | top:N | all_but_stem | all | prefix:A+B"
_RULE = re.compile(r"^(head|all|all_but_stem|top:(\d+|\d*\.\d+)|prefix:[\w.+]+)$")


def _check_rule(rule: str) -> str:
    rule = str(rule).strip()
    if not _RULE.match(rule):
        raise UserError(f"unknown stage rule '{rule}' in --stages; use {RULE_HELP}")
    if rule.startswith("top:"):
        value = float(rule[4:])
        if value <= 0 or ("." in rule[4:] and value >= 1):
            raise UserError(f"stage rule '{rule}': top:F needs 0 < F < 1, top:N needs N >= 1")
    return rule


def _parse_text(text: str) -> list[dict]:
    stages = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        rule, _, rest = part.partition("=")
        epochs, _, lr = rest.partition("@")
        stage: dict = {"train": rule}
        try:
            if epochs:
                stage["epochs"] = int(epochs)
            if lr:
                stage["lr"] = float(lr)
        except ValueError:
            raise UserError(f"cannot read stage '{part}' in --stages; write RULE=EPOCHS[@LR], "
                            f"e.g. head=1,top:0.5=2,all_but_stem=3") from None
        stages.append(stage)
    return stages


def parse_stages(spec) -> list[dict]:
    """Canonical `[{train, epochs, lr?}, ...]` from a CLI string or a YAML list."""
    if not spec:
        return []
    raw = _parse_text(spec) if isinstance(spec, str) else list(spec)
    out = []
    for i, stage in enumerate(raw):
        if not isinstance(stage, dict) or "train" not in stage:
            raise UserError(f"stage {i + 1} of --stages is {stage!r}; each stage needs "
                            f"'train' ({RULE_HELP}) and 'epochs'")
        unknown = set(stage) - {"train", "epochs", "lr"}
        if unknown:
            raise UserError(f"stage {i + 1} of --stages has unknown keys "
                            f"{', '.join(sorted(unknown))}; use train, epochs, lr")
        canon = {"train": _check_rule(stage["train"]), "epochs": stage.get("epochs")}
        last = i == len(raw) - 1
        if canon["epochs"] is None and not last:
            raise UserError(f"stage {i + 1} ('{canon['train']}') of --stages needs epochs; "
                            f"only the last stage may run to --epochs")
        if canon["epochs"] is not None and int(canon["epochs"]) < 1:
            raise UserError(f"stage {i + 1} of --stages has epochs {canon['epochs']}; "
                            f"give at least 1")
        if canon["epochs"] is not None:
            canon["epochs"] = int(canon["epochs"])
        if stage.get("lr") is not None:
            canon["lr"] = float(stage["lr"])
        out.append(canon)
    return out


# ---------------------------------------------------------------- parameter groups


def param_groups(model: nn.Module, coarse: bool = False) -> list[list[str]]:
    """Parameter names per group in forward order: [stem, block..., head].

    `coarse` asks timm for stages (an EfficientNet's 7) rather than single blocks."""
    names = [n for n, _ in model.named_parameters()]
    matcher = getattr(model, "group_matcher", None)
    groups: list[list[str]] = []
    if matcher is not None:
        try:
            from timm.models import group_parameters
            grouped = group_parameters(model, matcher(coarse=coarse))
            groups = [list(v) for _, v in sorted(grouped.items())]
        except Exception:  # a model whose matcher does not fit its parameters
            groups = []
    if len(groups) < 3:  # no usable matcher: top-level children in definition order
        groups = []
        for child, _ in model.named_children():
            members = [n for n in names if n.startswith(child + ".")]
            if members:
                groups.append(members)
    head = {f"{_prefix_of(model)}{n}" for n, _ in model.get_classifier().named_parameters()}
    body = [[n for n in g if n not in head] for g in groups]
    body = [g for g in body if g]
    if len(body) < 2 or not head:
        raise UserError(f"backbone {type(model).__name__} cannot be split into stem, blocks and "
                        f"head for --stages; train it without stages")
    return body + [sorted(head)]


def _prefix_of(model: nn.Module) -> str:
    clf = model.get_classifier()
    for name, module in model.named_modules():
        if module is clf:
            return f"{name}." if name else ""
    return ""


def trainable_names(model: nn.Module, rule: str) -> set[str]:
    """Names of the parameters `rule` trains; raises UserError if it selects nothing new."""
    groups = param_groups(model)
    stem, blocks, head = groups[0], groups[1:-1], groups[-1]
    everything = {n for g in groups for n in g}
    if rule == "all":
        return everything
    if rule == "head":
        return set(head)
    if rule == "all_but_stem":
        return everything - set(stem)
    if rule.startswith("top:"):
        value = float(rule[4:])
        k = int(value) if value >= 1 else math.ceil(value * len(blocks))
        chosen = blocks[len(blocks) - min(k, len(blocks)):]
        return set(head) | {n for g in chosen for n in g}
    prefixes = rule[len("prefix:"):].split("+")
    picked = {n for n in everything if any(n.startswith(p) for p in prefixes)}
    if not picked:
        sample = ", ".join(sorted({n.split(".")[0] for n in everything}))
        raise UserError(f"stage rule '{rule}' matches no parameter of this backbone; its "
                        f"top-level modules are {sample}")
    return set(head) | picked


def check_stages(model: nn.Module, stages: list[dict]) -> None:
    """Resolve every stage against the model now, so a bad rule fails before training."""
    for stage in stages:
        trainable_names(model, stage["train"])


def apply_stage(model: nn.Module, rule: str | None) -> int:
    """Set requires_grad for a stage (None: all); returns the number of trainable tensors."""
    names = trainable_names(model, rule) if rule else None
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad_(names is None or name in names)
        n += int(p.requires_grad)
    return n


def freeze_frozen_batchnorm(model: nn.Module, all_layers: bool = False) -> None:
    """Eval mode for BatchNorm layers whose affine parameters are all frozen (call after
    model.train()): their running statistics belong to the pretrained network. With
    `all_layers`, every BatchNorm layer (`keep_bn_stats`, LP-FT): the affine parameters
    still train, the normalisation stays the one the probe stage was fitted on."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters(recurse=False))
            if all_layers or (params and not any(p.requires_grad for p in params)):
                module.eval()
