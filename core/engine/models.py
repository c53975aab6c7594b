"""Backbones for the engine: build by name, resolve pretrained weights, split feature/head.

`pretrained` is one of
  none            random init;
  auto            the first source that works: the Hugging Face hub through timm (or its
                  local cache), then `<name>.pth` in $ASTROTRANSFER_WEIGHTS (default
                  ~/.cache/astrotransfer/weights), then registered offline `WeightSource`s;
                  if all fail, random init with a warning that names every source tried;
  hf-hub:<repo>   that hub repository's weights for the named architecture;
  PATH            a checkpoint file (state dict, optionally under "state_dict"/"model").

Survey pipelines often run on nodes without internet, where huggingface_hub would retry
for most of a minute before giving up, so the hub is probed once with a short deadline
($ASTROTRANSFER_HUB_TIMEOUT, default 5 s) and skipped at once under HF_HUB_OFFLINE=1.

ImageNet weights reach a survey with any number of bands through timm's own
`adapt_input_conv` on the layers timm's `pretrained_cfg` names as `first_conv`; the layers it
names as `classifier` are dropped, since ImageNet's 1000 classes mean nothing to a survey.
Every result comes with a one-line provenance string, stored with the run, so a reader can
tell fine-tuned ImageNet features from random init without rerunning anything.
"""
from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
from pathlib import Path

import torch
from torch import nn

from ..backbone import (BackboneProvider, WeightSource, _brief, load_pretrained_state,
                        read_state_dict)
from ..errors import UserError

log = logging.getLogger("astrotransfer")

DEFAULT_HUB_TIMEOUT_S = 5.0
#: how build_model initialises a new head: "zero", or "timm" to keep the architecture's own
_HEAD_INIT: contextvars.ContextVar[str] = contextvars.ContextVar("head_init", default="zero")
_TRUE = {"1", "true", "yes", "on"}


class _Unavailable(Exception):
    """One weight source cannot serve this model; the message is the reason reported."""


# ---------------------------------------------------------------- building


def build_model(name: str, in_chans: int, num_classes: int, pretrained: str = "auto",
                drop_rate: float = 0.0, registry=None, head_init: str = "zero"
                ) -> tuple[nn.Module, str]:
    """Return `(model, provenance)`; raise `UserError` for anything the user must fix.

    A new classifier head starts at zero (`zero_head`); `head_init="timm"` keeps the
    architecture's own initialiser, for comparison (docs/results/recipe.md).
    """
    token = _HEAD_INIT.set(head_init)
    try:
        return _build(name, in_chans, num_classes, pretrained, drop_rate, registry)
    finally:
        _HEAD_INIT.reset(token)


def _build(name, in_chans, num_classes, pretrained, drop_rate, registry):
    provider = find_provider(name, registry)
    mode = str(pretrained).strip() if pretrained else "none"
    args = (provider, name, in_chans, num_classes, drop_rate)
    if mode.lower() == "none":
        return _create(*args), "random init (pretrained='none')"
    if mode.lower() == "auto":
        return _auto(*args, registry)
    if mode.startswith("hf-hub:"):
        return _explicit_hub(*args, mode[len("hf-hub:"):])
    return _from_file(*args, Path(mode).expanduser())


def find_provider(name: str, registry=None) -> BackboneProvider:
    reg = _registry(registry)
    providers = [e.obj for e in reg.all("backbone") if isinstance(e.obj, BackboneProvider)]
    for provider in providers:
        if _quiet(provider.provides, name, default=False):
            return provider
    if not providers:
        errors = "; ".join(f"{p}: {e}" for p, e in reg.errors) or "none recorded"
        raise UserError(f"unknown backbone '{name}': no backbone providers are registered "
                        f"(plugin errors: {errors})")
    close = sorted({s for p in providers for s in _quiet(p.suggest, name, default=[])})
    hints = [h for p in providers if (h := _quiet(p.listing_hint, name, default=""))]
    msg = f"unknown backbone '{name}' (providers asked: {', '.join(p.name for p in providers)})"
    if close:
        msg += f"; did you mean {', '.join(close)}?"
    raise UserError("; ".join([msg, *hints]))


def _create(provider, name, in_chans, num_classes, drop_rate) -> nn.Module:
    try:
        return zero_head(provider.create(name, in_chans=in_chans, num_classes=num_classes,
                                         drop_rate=drop_rate))
    except Exception as exc:
        raise UserError(f"backbone '{name}' cannot be built with in_chans={in_chans}, "
                        f"num_classes={num_classes} by provider '{provider.name}': "
                        f"{_brief(exc)}") from exc


def _auto(provider, name, in_chans, num_classes, drop_rate, registry):
    tried = []
    try:
        return _auto_hub(provider, name, in_chans, num_classes, drop_rate)
    except _Unavailable as exc:
        tried.append(f"hf-hub: {exc}")
    model = _create(provider, name, in_chans, num_classes, drop_rate)
    for label, attempt in (("local cache", _auto_cache), ("offline sources", _auto_sources)):
        try:
            return model, attempt(model, name, registry)
        except _Unavailable as exc:
            tried.append(f"{label}: {exc}")
    summary = "; ".join(tried)
    log.warning("no pretrained weights for backbone '%s', training from random init "
                "(tried %s)", name, summary)
    return model, f"random init (no pretrained weights: tried {summary})"


def _auto_cache(model, name, registry) -> str:
    directory = weights_cache_dir()
    path = next((p for p in (directory / f"{name}.pth", directory / f"{name}.safetensors")
                 if p.is_file()), None)
    if path is None:
        raise _Unavailable(f"no {directory / name}.pth")
    try:
        notes = load_pretrained_state(model, read_state_dict(path), keep_head=False)
    except (UserError, ValueError) as exc:
        raise _Unavailable(str(exc)) from exc
    return f"pretrained weights from local cache {path} ({notes})"


def _auto_sources(model, name, registry) -> str:
    sources = [e.obj for e in _registry(registry).all("backbone")
               if isinstance(e.obj, WeightSource)]
    usable = [s for s in sources if _quiet(s.available_for, name, default=False)]
    if not usable:
        known = ", ".join(s.name for s in sources) or "none registered"
        raise _Unavailable(f"none offers {name} (sources: {known})")
    failures = []
    for source in usable:
        try:
            notes = load_pretrained_state(model, source.state_dict(name), keep_head=False)
        except Exception as exc:  # a broken third-party source must not stop the next one
            failures.append(f"{source.name} failed ({_brief(exc)})")
            continue
        origin = _quiet(source.origin, name, default=source.name)
        return f"ImageNet weights from {source.name}: {origin} ({notes})"
    raise _Unavailable("; ".join(failures))


def _from_file(provider, name, in_chans, num_classes, drop_rate, path: Path):
    state = read_state_dict(path)
    model = _create(provider, name, in_chans, num_classes, drop_rate)
    try:
        notes = load_pretrained_state(model, state, keep_head=True)
    except ValueError as exc:
        raise UserError(f"weights file {path} does not fit backbone '{name}': {exc}") from None
    return model, f"weights from file {path} ({notes})"


def weights_cache_dir() -> Path:
    return Path(os.environ.get("ASTROTRANSFER_WEIGHTS")
                or "~/.cache/astrotransfer/weights").expanduser()


# ---------------------------------------------------------------- the hub


def _auto_hub(provider, name, in_chans, num_classes, drop_rate):
    if not provider.timm_compatible:
        raise _Unavailable(f"provider '{provider.name}' is not timm-based")
    from timm.models import get_pretrained_cfg
    cfg = _quiet(get_pretrained_cfg, name, default=None)
    if cfg is None or not cfg.hf_hub_id:
        raise _Unavailable(f"timm lists no hub weights for {name}")
    model, where = _hub_model(name, cfg.hf_hub_id, cfg.hf_hub_filename, in_chans, num_classes,
                              drop_rate, explicit=False)
    notes = _hub_notes(in_chans, num_classes)
    if num_classes == cfg.num_classes:  # timm keeps a same-sized head; ImageNet's is no use
        model.reset_classifier(num_classes)
    zero_head(model)
    return model, f"pretrained weights from {where} via timm ({notes})"


def _explicit_hub(provider, name, in_chans, num_classes, drop_rate, repo):
    if not provider.timm_compatible:
        raise UserError(f"pretrained='hf-hub:{repo}' needs a timm backbone; '{name}' comes "
                        f"from provider '{provider.name}'")
    try:
        model, where = _hub_model(name, repo, None, in_chans, num_classes, drop_rate,
                                  explicit=True)
    except _Unavailable as exc:
        raise UserError(f"pretrained weights hf-hub:{repo} unavailable: {exc}; download them "
                        f"where there is internet or pass a local checkpoint file") from None
    # the repository may hold a fine-tuned survey model, so timm decides what fits
    return model, (f"weights from {where} via timm ({in_chans} bands, {num_classes} classes; "
                   f"stem and head adapted by timm where the weights differ)")


def _hub_model(name, repo, filename, in_chans, num_classes, drop_rate, explicit):
    import timm
    cached = _hf_cached(repo, filename)
    if cached:
        overlay, where = {"file": cached}, f"Hugging Face hub {repo} (local HF cache)"
    else:
        if _hub_offline():
            raise _Unavailable(f"HF_HUB_OFFLINE is set and {repo} is not in the local "
                               f"Hugging Face cache")
        reason = _hub_unreachable(repo)
        if reason:
            raise _Unavailable(reason)
        overlay = {"hf_hub_id": repo, "source": "hf-hub"} if explicit else None
        where = f"Hugging Face hub {repo}"
    try:
        with _short_hub_timeouts():
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay,
                                      in_chans=in_chans, num_classes=num_classes,
                                      drop_rate=drop_rate)
    except Exception as exc:
        raise _Unavailable(f"loading {repo} failed ({_brief(exc)})") from exc
    return model, where


def _hub_notes(in_chans, num_classes) -> str:
    stem = f"stem adapted 3->{in_chans} bands by timm adapt_input_conv; " if in_chans != 3 else ""
    return f"{stem}new {num_classes}-class head"


def _hub_timeout() -> float:
    try:
        return float(os.environ.get("ASTROTRANSFER_HUB_TIMEOUT", DEFAULT_HUB_TIMEOUT_S))
    except ValueError:
        return DEFAULT_HUB_TIMEOUT_S


def _hub_offline() -> bool:
    if any(os.environ.get(v, "").strip().lower() in _TRUE
           for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def _hf_cached(repo: str, filename: str | None) -> str | None:
    from huggingface_hub import try_to_load_from_cache
    for fname in [filename] if filename else ["model.safetensors", "pytorch_model.bin"]:
        found = _quiet(try_to_load_from_cache, repo, fname, default=None)
        if isinstance(found, str):
            return found
    return None


def _hub_unreachable(repo: str) -> str | None:
    """Probe the hub once, bounded even when DNS hangs; None when it answered at all."""
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    timeout, box = _hub_timeout(), {}

    def probe():
        try:
            box["status"] = get_session().head(f"{constants.ENDPOINT}/api/models/{repo}",
                                               timeout=timeout).status_code
        except Exception as exc:
            box["error"] = exc

    thread = threading.Thread(target=probe, name="astrotransfer-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if thread.is_alive():
        return f"{constants.ENDPOINT} did not answer within {timeout:g} s"
    if "error" in box:
        return f"{constants.ENDPOINT} unreachable ({_brief(box['error'])})"
    return None


@contextlib.contextmanager
def _short_hub_timeouts():
    """huggingface_hub reads its timeouts at import; patch them unless the user set them."""
    from huggingface_hub import constants
    seconds = max(1, round(_hub_timeout()))
    saved = {}
    for var in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        if var not in os.environ and hasattr(constants, var):
            saved[var] = getattr(constants, var)
            setattr(constants, var, seconds)
    try:
        yield
    finally:
        for var, value in saved.items():
            setattr(constants, var, value)


# ---------------------------------------------------------------- the new head


def zero_head(model: nn.Module) -> nn.Module:
    """Zero the classifier's weights and bias in place, and return the model.

    Why: a new head with its architecture's own initialiser starts far from chance. timm's
    EfficientNet scales the classifier for 1,000 outputs, so a 2-class head on ImageNet
    features starts with logit std ~8.6 and a cross-entropy of ~4.8 on real GZ1 cutouts
    (chance is ln 2 = 0.69); the first epochs then spend the pretrained features undoing it.
    A zero head (Kolesnikov et al. 2020, BiT) predicts the uniform distribution, so the first
    loss is exactly ln(K), and the gradient reaches the backbone once the head has learnt a
    direction. Heads loaded from a checkpoint are overwritten afterwards and so kept.

    Example:
        >>> import timm
        >>> m = zero_head(timm.create_model("test_efficientnet", num_classes=2))
        >>> float(m.get_classifier().weight.abs().sum())
        0.0
    """
    if _HEAD_INIT.get() != "zero":
        return model
    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    layers = [head] if isinstance(head, (nn.Linear, nn.Conv2d)) else \
        [m for m in (head.modules() if isinstance(head, nn.Module) else [])
         if isinstance(m, (nn.Linear, nn.Conv2d))][-1:]
    with torch.no_grad():
        for layer in layers:
            layer.weight.zero_()
            if layer.bias is not None:
                layer.bias.zero_()
    return model


# ---------------------------------------------------------------- feature / head split


def features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Pooled penultimate features `(N, D)`: what adapters align and `embed` exports.

    In training mode these already carry the head dropout, because timm applies it before
    its `pre_logits` exit; `classify` therefore only applies the classifier, and
    `classify(model, features(model, x))` is exactly `model(x)`. A model set up for
    test-time augmentation (`set_tta`) returns the mean over its views instead, so
    predictions are the mean logits and embeddings are orientation-free.
    """
    views = getattr(model, "tta_views", 1)
    if views <= 1 or model.training:
        return model.forward_head(model.forward_features(x), pre_logits=True)
    stacked = dihedral_views(x, views)
    if x.is_contiguous(memory_format=torch.channels_last):
        stacked = stacked.contiguous(memory_format=torch.channels_last)
    feats = model.forward_head(model.forward_features(stacked), pre_logits=True)
    return feats.view(views, len(x), -1).mean(0)


#: test-time augmentation view counts: identity; + flip; the 4 rotations; all 8 of D4
TTA_VIEWS = (1, 2, 4, 8)


def dihedral_views(x: torch.Tensor, views: int) -> torch.Tensor:
    """`views` exact symmetries of the square (N, C, H, W) batch, stacked along the batch.

    Example:
        >>> dihedral_views(torch.rand(3, 1, 8, 8), 8).shape
        torch.Size([24, 1, 8, 8])
    """
    if views not in TTA_VIEWS:
        raise UserError(f"--tta must be one of {', '.join(map(str, TTA_VIEWS))}, got {views}")
    if views == 2:
        return torch.cat([x, x.flip(-1)])
    rots = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4 if views >= 4 else 1)]
    if views == 8:
        rots += [r.flip(-1) for r in rots]
    return torch.cat(rots)


def set_tta(model: nn.Module, views: int) -> nn.Module:
    """Make `features` (and so every prediction and embedding) average `views` dihedral
    views of each cutout in eval mode; 1 turns it off. Returns the model."""
    dihedral_views(torch.zeros(1, 1, 2, 2), views)  # validates the count
    model.tta_views = int(views)
    return model


def feature_dim(model: nn.Module) -> int:
    # head_hidden_size differs from num_features when a pre-logits MLP sits before the
    # classifier (e.g. VGG's 4096-wide fc layers)
    return int(getattr(model, "head_hidden_size", None) or model.num_features)


def classify(model: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    """Logits from `features(model, x)`."""
    clf = model.get_classifier()
    if isinstance(clf, nn.Conv2d):  # 1x1-conv classifiers expect a spatial map
        return clf(feats[:, :, None, None]).flatten(1)
    return clf(feats)


# ---------------------------------------------------------------- helpers


def _registry(registry):
    if registry is not None:
        return registry
    from ..registry import get_registry
    return get_registry()


def _quiet(fn, *args, default):
    try:
        return fn(*args)
    except Exception:
        return default
