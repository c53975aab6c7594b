"""A run exported to ONNX and run by ONNX Runtime: the default CPU inference path.

Why: EfficientNet-Lite and most mobile backbones are chains of depthwise convolutions,
which torch's eager CPU kernels run poorly; ONNX Runtime's fused kernels run the same fp32
network 2× faster or more on CPU (docs/benchmarks.md, `tools/bench_inference.py`), with
probabilities equal to the torch ones within 1e-4 (tests/test_inference_speed.py), so
accuracy does not move.

The exported graph returns `(features, probabilities)`: `features(model, x)` and the softmax
of `classify`, exactly what `forward_batch` computes in torch. `astrotransfer export RUN
--format onnx` writes it anywhere; `predict`/`evaluate`/`embed` with precision `auto` or
`onnx` keep one in the run directory (`model.onnx`), rebuilt when its checkpoint changes
(the checkpoint's SHA-256 is stored in the file's metadata), written atomically.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ...errors import UserError
from ..models import classify, features

CACHE_NAME = "model.onnx"
DIGEST_KEY = "astrotransfer_checkpoint_sha256"


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
    except ImportError:
        return False
    return True


class _FeaturesAndProbs(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        feats = features(self.model, x)
        return feats, torch.softmax(classify(self.model, feats).float(), dim=1)


def checkpoint_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def export_onnx(model: nn.Module, image_shape: tuple[int, int, int], out: Path,
                digest: str = "") -> Path:
    """Write `model` (eval mode, fp32, tta 1) as ONNX with a dynamic batch axis, atomically.

    Args:
        model: from `load_run_model`.
        image_shape: (C, H, W) of the model's input.
        out: the .onnx file to write; its folder must exist.
        digest: the checkpoint's SHA-256, stored in the file's metadata.

    Returns:
        `out`.

    Example:
        >>> export_onnx(model, (3, 64, 64), Path("gz1.onnx"))       # doctest: +SKIP
    """
    import onnx

    if getattr(model, "tta_views", 1) > 1:
        raise UserError("ONNX export is of the plain model; test-time augmentation (--tta) "
                        "runs in torch: use --precision fp32 with --tta")
    wrapper = _FeaturesAndProbs(model).eval()
    x = torch.zeros(2, *image_shape)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(wrapper, x, tmp, input_names=["images"],
                              output_names=["features", "probabilities"],
                              dynamic_axes={"images": {0: "n"}, "features": {0: "n"},
                                            "probabilities": {0: "n"}},
                              opset_version=17, dynamo=False)
        proto = onnx.load(tmp)
        entry = proto.metadata_props.add()
        entry.key, entry.value = DIGEST_KEY, digest
        onnx.save(proto, tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


class OrtModel:
    """An ONNX Runtime session with `forward_batch`'s contract: (probs, features)."""

    def __init__(self, path: Path, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        feats, probs = self.session.run(None, {"images": np.ascontiguousarray(x, np.float32)})
        return probs, feats


def cached_onnx(model: nn.Module, run_dir: Path, checkpoint: Path,
                image_shape: tuple[int, int, int]) -> OrtModel:
    """The run's `model.onnx` for this checkpoint (exported now if missing or stale)."""
    import onnx

    digest = checkpoint_digest(checkpoint)
    path = Path(run_dir) / CACHE_NAME
    if path.exists():
        try:
            meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False)
                    .metadata_props}
        except Exception:  # a damaged cache is rebuilt, never trusted
            meta = {}
        if meta.get(DIGEST_KEY) == digest:
            return OrtModel(path)
    try:
        export_onnx(model, image_shape, path, digest)
    except OSError as exc:
        raise UserError(f"cannot write the ONNX model into run directory {run_dir} ({exc}); "
                        f"make it writable or use --precision fp32") from None
    return OrtModel(path)

