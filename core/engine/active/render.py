"""Cutouts as PNGs a person can judge: asinh stretch, Lupton RGB for several bands.

Store pixels are linear fluxes (min-max scaled at ingest), where a galaxy's faint disc and
spiral arms sit a few percent above the sky and a linear display shows only a bright core.
An asinh stretch (Lupton et al. 2004) is linear near the sky and logarithmic in the core,
so both are visible; for three or more bands the Lupton composite keeps colours true to
the band ratios, which an independent per-channel stretch would not.
"""
from __future__ import annotations

import io

import numpy as np

#: rough effective wavelengths (nm) so RGB takes the reddest band as red
_WAVELENGTH = {"u": 355, "g": 475, "r": 620, "i": 760, "z": 900, "y": 1000, "j": 1250,
               "h": 1650, "k": 2200, "vis": 700, "b": 450, "v": 550, "nuv": 230, "fuv": 150}


def _wavelength(name: str, position: int) -> float:
    key = name.lower()
    if key in _WAVELENGTH:
        return _WAVELENGTH[key]
    digits = "".join(ch for ch in key if ch.isdigit())  # JWST/HST filters: F200W -> 2000 nm
    if key.startswith("f") and digits:
        return int(digits) * 10.0
    return 10_000 + position  # unknown names: keep the store's order, blue to red


def rgb_bands(bands: list[str]) -> list[int]:
    """Indices of the three bands for (R, G, B): the reddest, middle and bluest of the
    store's bands by name (r,g,b composites map by name)."""
    lower = [b.lower() for b in bands]
    if {"r", "g", "b"} <= set(lower) and not {"i", "z", "u"} & set(lower):
        return [lower.index("r"), lower.index("g"), lower.index("b")]
    order = sorted(range(len(bands)), key=lambda i: _wavelength(bands[i], i))
    pick = [order[0], order[len(order) // 2], order[-1]] if len(order) > 3 else order
    return pick[::-1]


def views(bands: list[str]) -> list[str]:
    """What a band picker offers: "rgb" (with 3+ bands), then each band by name."""
    return (["rgb"] if len(bands) >= 3 else []) + list(bands)


def asinh_grey(image: np.ndarray, softening: float = 0.1) -> np.ndarray:
    """One band to uint8 with astropy's asinh stretch between the 0.5 and 99.8 percentiles."""
    from astropy.visualization import AsinhStretch, ImageNormalize, ManualInterval

    x = np.nan_to_num(np.asarray(image, dtype=np.float64))
    lo, hi = np.percentile(x, [0.5, 99.8])
    norm = ImageNormalize(x, interval=ManualInterval(lo, hi if hi > lo else lo + 1e-6),
                          stretch=AsinhStretch(a=softening), clip=True)
    return (np.asarray(norm(x)) * 255).round().astype(np.uint8)


def lupton_rgb(image: np.ndarray, bands: list[str], q: float = 8.0) -> np.ndarray:
    """(C, H, W) → (H, W, 3) uint8 with `make_lupton_rgb` on the R, G, B bands."""
    from astropy.visualization import make_lupton_rgb

    r, g, b = (np.nan_to_num(np.asarray(image[i], dtype=np.float64)) for i in rgb_bands(bands))
    stack = np.stack([r, g, b])
    lo = np.percentile(stack, 1.0)
    hi = np.percentile(stack, 99.8)
    return make_lupton_rgb(r, g, b, minimum=lo, stretch=max(hi - lo, 1e-6) / 4, Q=q)


def cutout_png(image: np.ndarray, bands: list[str], view: str = "auto",
               softening: float = 0.1) -> bytes:
    """A PNG of one (C, H, W) cutout.

    Args:
        image: the store's pixels of one object.
        bands: the store's band names.
        view: "auto" (RGB with 3+ bands, else the first band), "rgb" or a band name.
        softening: the asinh `a` (smaller shows fainter structure) for one-band views.

    Returns:
        PNG bytes at the cutout's own size (the page scales it up).

    Example:
        >>> png = cutout_png(store.read_images([0])[0], store.bands)       # doctest: +SKIP
    """
    from PIL import Image

    if view == "auto":
        view = "rgb" if len(bands) >= 3 else bands[0]
    if view == "rgb" and len(bands) >= 3:
        pixels = lupton_rgb(image, bands)
    else:
        idx = bands.index(view) if view in bands else 0
        pixels = asinh_grey(image[idx], softening)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
