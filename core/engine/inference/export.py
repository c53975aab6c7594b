"""`astrotransfer export RUN --format onnx`: a run's model as a file for ONNX Runtime."""
from __future__ import annotations

from pathlib import Path

from ...errors import UserError
from .onnx_runtime import checkpoint_digest, export_onnx, onnxruntime_available
from .streaming import load_run_model


def export_run(run_path: Path, out: Path) -> Path:
    """Export a run's model (best checkpoint, else last) to the ONNX file `out`.

    Args:
        run_path: a single run directory.
        out: the .onnx file to write (refused if its folder does not exist).

    Returns:
        `out`, whose graph maps `images` (N, C, H, W) float32 to `features` and
        `probabilities`, equal to the run's torch fp32 output within 1e-4.

    Example:
        >>> export_run(Path("runs/gz1"), Path("gz1.onnx"))             # doctest: +SKIP
    """
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise UserError(f"--out {out} must end in .onnx")
    if not out.parent.is_dir():
        raise UserError(f"folder {out.parent} of --out does not exist; create it first")
    if not onnxruntime_available():
        raise UserError("ONNX export needs the onnx and onnxruntime packages: "
                        "pip install onnx onnxruntime")
    model, info, run = load_run_model(run_path, precision="fp32")
    ckpt = run.best if run.best.exists() else run.last
    return export_onnx(model, (info["in_chans"], info["image_size"], info["image_size"]), out,
                       checkpoint_digest(ckpt))
