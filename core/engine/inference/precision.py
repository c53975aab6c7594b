"""How inference runs: torch fp32, torch bf16 autocast, or fp32 under ONNX Runtime.

Why (measured side by side in `tools/bench_inference.py`, docs/benchmarks.md): on CPU,
ONNX Runtime runs the same fp32 network 2× faster or more than torch eager, with the same
probabilities (within 1e-4), so it is the default (`auto`) wherever `onnxruntime` is
installed and the device is the CPU. bf16 autocast (AVX-512 BF16 / AMX) is faster still
but moves probabilities by up to ~0.1 and GZ1 test accuracy by more than half a point, so
it is offered (`bf16`), not chosen by default. `fp32` is the plain torch path, and what
`auto` falls back to on GPUs, without onnxruntime, or with test-time augmentation.

The choice is per call (`predict --precision`, `load_run_model(precision=...)`) or for the
whole process through the environment variable ASTROTRANSFER_PRECISION=auto|fp32|bf16|onnx.
"""
from __future__ import annotations

import contextlib
import os

import torch

from ...errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "onnx")
ENV = "ASTROTRANSFER_PRECISION"


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (CPU: AVX-512 BF16 or AMX; CUDA: Ampere+)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def resolve_precision(precision: str | None, device: torch.device | None = None,
                      tta: int = 1) -> str:
    """'fp32', 'bf16' or 'onnx' for a request (None: $ASTROTRANSFER_PRECISION or auto).

    Args:
        precision: "auto", "fp32", "bf16", "onnx" or None.
        device: where the model runs (CPU when None).
        tta: test-time augmentation views (ONNX runs the plain model only).

    Returns:
        The concrete choice; one the machine cannot run is refused with a UserError.

    Example:
        >>> resolve_precision("fp32")
        'fp32'
    """
    device = device or torch.device("cpu")
    asked = (precision or os.environ.get(ENV) or "auto").strip().lower()
    if asked not in PRECISIONS:
        source = f"--precision {precision}" if precision else f"{ENV}={asked}"
        raise UserError(f"{source} is not a precision; use one of {', '.join(PRECISIONS)}")
    from .onnx_runtime import onnxruntime_available

    if asked == "auto":
        return "onnx" if device.type == "cpu" and tta == 1 and onnxruntime_available() else "fp32"
    if asked == "onnx":
        if device.type != "cpu" or tta != 1:
            raise UserError("--precision onnx runs the plain model on the CPU; use fp32 for "
                            "--tta or a GPU")
        if not onnxruntime_available():
            raise UserError("--precision onnx needs the onnx and onnxruntime packages: "
                            "pip install onnx onnxruntime, or use --precision fp32")
    if asked == "bf16" and not native_bf16(device):
        raise UserError(f"bf16 inference needs native bf16 on {device.type} (AVX-512 BF16 or "
                        f"AMX on CPU, Ampere or newer on CUDA), which this machine lacks; "
                        f"use --precision fp32 or auto")
    return asked


def autocast(model, device: torch.device):
    """The autocast context of `model`'s inference precision (set by `load_run_model`)."""
    if getattr(model, "inference_precision", "fp32") == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
