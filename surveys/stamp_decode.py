"""Decoding a stamp file into a finished cutout: read, centre-crop, resize once, scale.

Why a module of its own: this is the whole per-object cost of `ingest images`, so it is
written to do no more work than the output needs.

- A JPEG much larger than the output is decoded at a reduced scale (libjpeg's DCT scaling,
  Pillow's `draft`): a 424-pixel stamp headed for 64 pixels is decoded at 1/2 or 1/4 of its
  size, with the largest reduction that still leaves the crop at least `size` pixels wide.
- Crop and resize are one Pillow call (`resize(box=...)`), an antialiased bilinear filter
  like the torch one used before, on the 8-bit pixels; only the small result becomes float.
- Nothing here imports torch, so forked decode workers never touch its thread pool.

The cutout differs from a full-resolution decode by the JPEG reduced-scale reconstruction
and 8-bit rounding of the resized pixels: on GZ1 stamps (423 px → crop 212 → 64 px) the
mean absolute difference after scaling to [0, 1] is under 0.01
(tests/test_ingest_speed.py measures it).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from PIL import Image, UnidentifiedImageError

from astrotransfer.errors import SkipObject
from astrotransfer.store import minmax_per_band

from .file_guards import check_fits_hdu, check_image_pixels

FITS_SUFFIXES = (".fits", ".fit", ".fits.gz")


def is_fits(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


def crop_box(w: int, h: int, crop: int | None) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the centred `crop` square, or the whole image."""
    if crop and crop < min(h, w):
        top, left = (h - crop) // 2, (w - crop) // 2
        return left, top, left + crop, top + crop
    return 0, 0, w, h


def _plain_mode(im: Image.Image) -> Image.Image:
    """One float band for 16-bit/float grey, L for other grey, RGB for everything else."""
    if im.mode in ("I", "I;16", "I;16L", "I;16B", "F"):
        return im.convert("F")
    if im.mode in ("LA", "1"):
        return im.convert("L")
    if im.mode not in ("L", "RGB"):
        return im.convert("RGB")
    return im


def read_pixels(path: Path) -> np.ndarray:
    """(C, H, W) float32 at full resolution; corrupt or truncated files become a SkipObject."""
    try:
        if is_fits(path):
            return _read_fits(path)
        with Image.open(path) as im:
            check_image_pixels(im.size, path)  # from the header, before decoding a bomb
            im.load()  # forces decoding, so a truncated JPEG fails here
            data = np.array(_plain_mode(im), dtype=np.float32)  # a writable copy
        return data[None] if data.ndim == 2 else data.transpose(2, 0, 1)
    except (SkipObject, Image.DecompressionBombError, OSError, UnidentifiedImageError,
            ValueError, TypeError) as exc:
        raise _as_skip(exc, path) from None


def decode_stamp(path: Path, crop: int | None, size: int, n_bands: int) -> np.ndarray:
    """The finished (n_bands, size, size) cutout of one stamp file, each band in [0, 1].

    Args:
        path: a JPEG/PNG/FITS stamp.
        crop: centre-crop to this many pixels first (None: the whole image).
        size: output side in pixels.
        n_bands: the band count every stamp of the ingest must have.

    Returns:
        float32 array; raises SkipObject for corrupt files or a wrong band count.

    Example:
        >>> decode_stamp(Path("587722.jpeg"), 212, 64, 3).shape      # doctest: +SKIP
        (3, 64, 64)
    """
    if is_fits(path):
        pixels = read_pixels(path)
        _check_bands(pixels.shape[0], n_bands, path)
        return crop_resize_scale(pixels, crop, size)
    data = _decode_checked(path, crop, size, n_bands)
    if data.dtype == np.uint8:
        return scale_uint8_bands(data)
    data = np.asarray(data, dtype=np.float32)
    return scale_bands(data[None] if data.ndim == 2 else data.transpose(2, 0, 1))


def decode_resized(path: Path, crop: int | None, size: int) -> np.ndarray:
    """The Pillow half of `decode_stamp`: open, draft, decode, crop+resize; no scaling.

    Why separate: this is the decode limit of `ingest images`, and
    tools/bench_ingest_images.py times exactly these calls as its bare loop.

    Args:
        path: a JPEG/PNG stamp (not FITS).
        crop: centre-crop to this many pixels first (None: the whole image).
        size: output side in pixels.

    Returns:
        (size, size) or (size, size, 3) array: uint8 for 8-bit images, float32 for
        16-bit/float grey. Pillow's errors propagate (`decode_stamp` turns them into skips).

    Example:
        >>> decode_resized(Path("587722.jpeg"), 212, 64).shape       # doctest: +SKIP
        (64, 64, 3)
    """
    with Image.open(path) as im:
        check_image_pixels(im.size, path)
        w, h = im.size
        box = crop_box(w, h, crop)
        bw, bh = box[2] - box[0], box[3] - box[1]
        if im.format == "JPEG" and min(bw, bh) >= 2 * size:
            im.draft(None, (math.ceil(w * size / bw), math.ceil(h * size / bh)))
            sx, sy = im.size[0] / w, im.size[1] / h
            box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        im.load()  # a truncated file fails here
        im = _plain_mode(im)
        return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR, box=box))


def crop_resize_scale(pixels: np.ndarray, crop: int | None, size: int) -> np.ndarray:
    """Centre-crop and resize float (C, H, W) pixels band by band, then scale to [0, 1]."""
    c, h, w = pixels.shape
    box = crop_box(w, h, crop)
    if box == (0, 0, w, h) and h == size and w == size:
        return scale_bands(np.asarray(pixels, np.float32))
    bands = [np.asarray(Image.fromarray(np.ascontiguousarray(b, dtype=np.float32))
                        .resize((size, size), Image.Resampling.BILINEAR, box=box))
             for b in pixels]
    return scale_bands(np.stack(bands))


def scale_bands(out: np.ndarray) -> np.ndarray:
    """Each band min–max scaled to [0, 1]; non-finite pixels make the object a skip."""
    if not np.isfinite(out).all():
        raise SkipObject("non-finite pixels: NaN or inf in the image")
    lo = out.min(axis=(1, 2), keepdims=True)
    hi = out.max(axis=(1, 2), keepdims=True)
    return ((out - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


def scale_uint8_bands(data: np.ndarray) -> np.ndarray:
    """`scale_bands` of 8-bit (H, W) or (H, W, C) pixels, bit for bit, at a fraction of
    the cost: the store's `minmax_per_band` (the same float32 operations on one contiguous
    band-major copy, extremes taken on the 8-bit pixels). `scale_bands` on the transposed
    float view spent most of its time striding. 8-bit pixels are always finite."""
    return minmax_per_band(band_major(data))


def band_major(data: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) pixels as a contiguous (C, H, W) copy, in their own type."""
    hwc = data[..., None] if data.ndim == 2 else data
    return np.ascontiguousarray(np.moveaxis(hwc, 2, 0))


def decode_codes(path: Path, crop: int | None, size: int, n_bands: int) -> np.ndarray:
    """The 8-bit (n_bands, size, size) pixels of a JPEG stamp, unscaled: what a uint8 store
    keeps (`decode_stamp` of the same file is `minmax_per_band` of this, bit for bit).

    Args:
        path: a JPEG stamp (baseline JPEG is always 8-bit).
        crop, size, n_bands: as for `decode_stamp`.
    Returns:
        uint8 array; raises SkipObject for corrupt files, a wrong band count, or a file
        that is not 8-bit after all (e.g. a 16-bit PNG named .jpeg).
    Example:
        >>> decode_codes(Path("587722.jpeg"), 212, 64, 3).dtype       # doctest: +SKIP
        dtype('uint8')
    """
    data = _decode_checked(path, crop, size, n_bands)
    if data.dtype != np.uint8:
        raise SkipObject(f"not 8-bit: {path.name} decodes to {data.dtype} pixels, which an "
                         f"8-bit store cannot hold; ingest with --dtype float32")
    return band_major(data)


def _decode_checked(path: Path, crop: int | None, size: int, n_bands: int) -> np.ndarray:
    """`decode_resized` with the band count checked and every failure a SkipObject."""
    try:
        data = decode_resized(path, crop, size)
        _check_bands(1 if data.ndim == 2 else data.shape[2], n_bands, path)
    except (SkipObject, Image.DecompressionBombError, OSError, UnidentifiedImageError,
            ValueError, TypeError) as exc:
        raise _as_skip(exc, path) from None
    return data


def _check_bands(have: int, want: int, path: Path) -> None:
    if have != want:
        raise SkipObject(f"wrong band count: {path.name} has {have} bands, "
                         f"the others have {want}")


def _read_fits(path: Path) -> np.ndarray:
    # a truncated file warns ("may have been truncated") and then fails to read: the
    # failure is the skip reason, so the warning would only be noise on stderr
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as hdul:
            # chosen by header: touching .data first would allocate what it claims
            hdu = next((h for h in hdul if h.is_image and len(h.shape) >= 2
                        and min(h.shape) > 0), None)
            if hdu is None:
                raise SkipObject(f"empty FITS: {path.name} has no image data")
            check_fits_hdu(hdu, path)
            data = np.asarray(hdu.data, dtype=np.float32)
    return data[None] if data.ndim == 2 else data


def _as_skip(exc: BaseException, path: Path) -> SkipObject:
    if isinstance(exc, SkipObject):
        return exc
    if isinstance(exc, Image.DecompressionBombError):  # over Pillow's own hard limit
        return SkipObject(f"image too large: {path.name} ({exc})")
    return SkipObject(f"corrupt image: {path.name} ({exc})")
