"""Pixel normalizations applied to cutouts at ingest, selectable per run.

The method name is stored as the store's `normalization` attribute, so a network trained on
one store can be fed another store prepared the same way. Each method follows a seed paper:

- `minmax` (Wei et al. 2020, star clusters): the whole (C, H, W) cutout is mapped to [0, 1]
  with one min and one max, so the ratios between bands (the colours) survive.
- `khan` (Khan et al. 2019, galaxies): each band has its own mean subtracted (sky level and
  band-to-band offsets differ between surveys), then the cutout is divided by its largest
  absolute value so it spans [-1, 1], the input range the ImageNet backbones were tuned for.
- `asinh`: per band, astropy's percentile interval and asinh stretch to [0, 1]. The stretch
  is linear for faint pixels and logarithmic for bright ones, so faint spiral arms and a
  bright core are both visible; each band gets its own interval because bands differ in
  depth by magnitudes.
- `none`: raw calibrated pixels (for tools that normalize later).

A constant image (all one value) has no scale: it maps to zeros instead of dividing by 0.
Non-finite input values are treated as 0 so one bad pixel cannot turn a cutout into NaNs.
"""
from __future__ import annotations

import numpy as np
from astropy.visualization import AsinhStretch, PercentileInterval

from astrotransfer.errors import UserError

METHODS = ("minmax", "khan", "asinh", "none")

# Percentile kept by the asinh interval: clips the few brightest pixels (stars, cosmic rays)
# that would otherwise compress every other pixel into the bottom of the range.
ASINH_PERCENTILE = 99.5
ASINH_A = 0.1


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UserError(f"unknown normalization '{method}'; use one of {', '.join(METHODS)} "
                        f"with --normalization")
    return method


def _minmax(img: np.ndarray) -> np.ndarray:
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.zeros_like(img)
    return (img - lo) / (hi - lo)


def _khan(img: np.ndarray) -> np.ndarray:
    out = img - img.mean(axis=(1, 2), keepdims=True)
    scale = float(np.abs(out).max())
    if scale == 0.0:
        return np.zeros_like(img)
    return out / scale


def _asinh(img: np.ndarray) -> np.ndarray:
    out = np.empty_like(img)
    stretch = AsinhStretch(a=ASINH_A)
    for c, band in enumerate(img):
        lo, hi = PercentileInterval(ASINH_PERCENTILE).get_limits(band)
        if hi <= lo:
            out[c] = 0.0
            continue
        out[c] = stretch(np.clip((band - lo) / (hi - lo), 0.0, 1.0))
    return out


_FUNCS = {"minmax": _minmax, "khan": _khan, "asinh": _asinh}


def normalize(img: np.ndarray, method: str) -> np.ndarray:
    """Return a float32 (C, H, W) copy of `img` normalized with `method`."""
    check_method(method)
    img = np.asarray(img, dtype=np.float32)
    if img.ndim != 3:
        raise ValueError(f"expected a (C, H, W) cutout, got shape {img.shape}")
    img = np.where(np.isfinite(img), img, np.float32(0.0))
    if method == "none":
        return img
    return _FUNCS[method](img).astype(np.float32, copy=False)
