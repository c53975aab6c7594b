"""Start a run from another run's weights, with the classifier matched by class name.

The few-shot question of a new survey ("does training on an older survey first help, and up
to how many of my own labels?") needs a run that *continues* from a source-trained run on a
handful of target labels: `train --source target.zarr --source-labels 100 --pretrained
RUN_DIR`. A plain checkpoint path cannot do that safely: the source run numbers its classes
in its own store's order, so keeping its head by position would start a store that lists
the same classes in another order with every prediction flipped. Here the head's rows are
permuted by name; a run with another class set gives its body only (a new zero head, said in
the provenance), and bands are adapted by timm's `adapt_input_conv` as for ImageNet weights.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...backbone import head_param_keys, load_pretrained_state, read_state_dict
from ...errors import UserError
from ..models import build_model
from ..runs import SEEDS_FILE, RunDir


def is_run_dir(pretrained: str | None) -> bool:
    """True when `pretrained` names a folder (a run directory or a job of runs)."""
    return bool(pretrained) and Path(str(pretrained)).expanduser().is_dir()


def build_from_run(run_path: str | Path, backbone: str, in_chans: int, class_names: list[str],
                   drop_rate: float = 0.0, head_init: str = "zero") -> tuple[nn.Module, str]:
    """Build `backbone` with the weights of a finished run, head rows matched by class name.

    Args:
        run_path: a run directory (the `--out` of `train`) holding run.json and best.pt.
        backbone: the architecture of the new run; must be the run's own.
        in_chans: input bands of the new run (the stem is adapted when it differs).
        class_names: the new run's classes, in its store's order.
        drop_rate: dropout before the head.
        head_init: initialiser of a new head when the class sets differ.

    Returns:
        ``(model, provenance)``: the provenance says which run, and what was kept.

    Example:
        >>> model, note = build_from_run("runs/gz1", "tf_efficientnet_lite0", 1,
        ...                              ["elliptical", "spiral"])          # doctest: +SKIP
    """
    path = Path(run_path).expanduser()
    if (path / SEEDS_FILE).exists() and not (path / "run.json").exists():
        raise UserError(f"--pretrained {path} is a seed job; pass one of its runs, e.g. "
                        f"{path / 'seed_0'}")
    run = RunDir(path)
    info = run.info()
    if info.get("backbone") != backbone:
        raise UserError(f"--pretrained run {path} is a '{info.get('backbone')}' but this run "
                        f"builds '{backbone}'; pass --backbone {info.get('backbone')}")
    if not run.best.exists():
        raise UserError(f"--pretrained run {path} has no best.pt; finish or resume it first")
    state = read_state_dict(run.best)
    model, _ = build_model(backbone, in_chans=in_chans, num_classes=len(class_names),
                           pretrained="none", drop_rate=drop_rate, head_init=head_init)
    old = [str(c) for c in info.get("class_names", [])]
    keys = head_param_keys(model)
    if sorted(old) == sorted(class_names):
        order = torch.tensor([old.index(c) for c in class_names])
        for key in keys & set(state):
            state[key] = state[key][order]
        head = ("head kept, classes matched by name" if old == list(class_names) else
                f"head kept, rows reordered by class name ({','.join(old)} -> "
                f"{','.join(class_names)})")
    else:
        for key in keys & set(state):
            del state[key]
        head = (f"new head: the run's classes ({','.join(old)}) are not this run's "
                f"({','.join(class_names)})")
    try:
        notes = load_pretrained_state(model, state, keep_head=True)
    except ValueError as exc:
        raise UserError(f"--pretrained run {path} does not fit this model: {exc}") from None
    stem = [n for n in notes.split("; ") if n.startswith("stem")]
    survey = (info.get("source") or {}).get("survey", "?")
    return model, f"weights of run {path} (trained on {survey}; {'; '.join([head, *stem])})"

