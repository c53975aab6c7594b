"""The frames of an ingest, indexed by band and sky position, and their pixel cache.

Why a module of its own: the cache decides what a frame survey's ingest costs. Plain FITS
frames are read through a lazy `.section` (a stamp reads only its own rows); compressed
ones are decompressed once, whole, and kept while the ingest cuts their objects, which it
visits frame by frame (`frame_order`). Memory stays bounded: at most one decompressed frame
per band and MAX_DECOMPRESSED_BYTES in all, besides the frame being read.
"""
from __future__ import annotations

import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
from astropy.io import fits

MAX_OPEN_FRAMES = 24  # pixel sources kept open; enough for every band of a few fields
# Compressed frames (.fz tiles, .gz/.bz2 streams) are decompressed whole, once, and kept
# while their objects are cut (the ingest visits objects frame by frame, `frame_order`):
# at most one decompressed frame per band, and never more than this many bytes in all
# beyond the frame being read (a DES 10k x 10k tile is 400 MB per band as float32).
MAX_DECOMPRESSED_BYTES = 2 << 30


class FrameSet:
    """All frames of a run, indexed by band, with a small cache of open pixel sources."""

    def __init__(self, frames: list):  # of fits_cutouts.Frame
        self.frames = frames
        self.by_band: dict[str, list] = {}
        for f in frames:
            if f.band is not None and f.wcs is not None:
                self.by_band.setdefault(f.band, []).append(f)
        self._vec = {b: np.array([f.center for f in fs]) for b, fs in self.by_band.items()}
        self._cos = {b: np.array([f.cos_radius for f in fs]) for b, fs in self.by_band.items()}
        self._cache: OrderedDict = OrderedDict()

    def __getstate__(self):  # worker processes reopen files themselves
        return {**self.__dict__, "_cache": OrderedDict()}

    def __del__(self):
        for hdul, *_ in getattr(self, "_cache", {}).values():
            if hdul is not None:
                hdul.close()

    def problems(self, band: str | None = None, unplaced: bool = False) -> list[str]:
        """Frame problems; `unplaced`: only frames that could not be put on the sky."""
        return [f"{f.name}: {f.error}" for f in self.frames
                if f.error and (band is None or f.band in (band, None))
                and not (unplaced and f.wcs is not None)]

    def near(self, band: str, vec: np.ndarray) -> list:
        if band not in self.by_band:
            return []
        hit = self._vec[band] @ vec >= self._cos[band]
        return [f for f, h in zip(self.by_band[band], hit) if h]

    def pixels(self, frame):
        """The frame's pixel source: a lazy `.section` of a plain FITS image, or the whole array,
        decompressed once, of a tile-compressed HDU or a .gz/.bz2 stream.

        Reading a compressed tile through `.section` decompresses every tile row a stamp
        touches, again for every object: on a 4096² DES tile that was ~100 ms per object.
        Whole decompressed frames are few (one per band at a time, MAX_DECOMPRESSED_BYTES
        in all) because the ingest visits objects grouped by frame (`frame_order`)."""
        if frame.path in self._cache:
            self._cache.move_to_end(frame.path)
            return self._cache[frame.path][1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            hdul = fits.open(frame.path, memmap=True)
            hdu = hdul[frame.hdu]
            if _compressed(frame, hdu):
                self._make_room(frame.band)
                src = np.asarray(hdu.data, dtype=np.float32)
                hdul.close()
                hdul = None
            else:
                src = hdu.section  # plain FITS: a stamp reads only its own rows
        self._cache[frame.path] = (hdul, src, frame.band)
        while len(self._cache) > MAX_OPEN_FRAMES:
            self._evict(next(iter(self._cache)))
        return src

    def preload_compressed(self, bands, ra: float, dec: float, tag: str = "") -> None:
        """Decompress, into the cache, the compressed frame of each band that covers
        (ra, dec), preferring frames tagged `tag`; plain frames are left lazy. Best effort:
        a frame that fails here fails again, with its reason, when an object is cut."""
        vec = unit_vector(ra, dec)
        if not np.all(np.isfinite(vec)):
            return
        for band in bands:
            near = [f for f in self.near(band, vec) if f.error is None]
            near.sort(key=lambda f: bool(tag) and f.tag == tag, reverse=True)
            if near and _compressed(near[0]):
                try:
                    self.pixels(near[0])
                except Exception:  # noqa: BLE001 - reported per object by the cut itself
                    pass

    def drop_cache(self) -> None:
        """Close and forget every cached pixel source."""
        for path in list(self._cache):
            self._evict(path)

    def _make_room(self, band: str | None) -> None:
        """Drop decompressed frames of `band`, then the oldest ones over the byte budget."""
        whole = [(p, v) for p, v in self._cache.items() if v[0] is None]
        for path, (_, _, b) in whole:
            if b == band:
                self._evict(path)
        whole = [(p, v[1].nbytes) for p, v in self._cache.items() if v[0] is None]
        total = sum(n for _, n in whole)
        for path, nbytes in whole:
            if total <= MAX_DECOMPRESSED_BYTES:
                break
            self._evict(path)
            total -= nbytes

    def _evict(self, path: Path) -> None:
        hdul = self._cache.pop(path)[0]
        if hdul is not None:
            hdul.close()

    def frame_order(self, ra: np.ndarray, dec: np.ndarray, band: str) -> np.ndarray:
        """A stable order of objects that visits them frame by frame: each object keyed by
        the `band` frame whose centre is nearest, so a frame is decompressed once."""
        if band not in self.by_band or len(ra) == 0:
            return np.arange(len(ra))
        vec = unit_vector(np.asarray(ra, float), np.asarray(dec, float))
        nearest = np.argmax(np.nan_to_num(vec) @ self._vec[band].T, axis=1)
        return np.argsort(nearest, kind="stable")


def unit_vector(ra, dec) -> np.ndarray:
    """Unit vectors on the sphere for RA/Dec in degrees: shape (..., 3); what frame centres
    and footprints are compared with (a dot product is the cosine of the separation).

    Example:
        >>> unit_vector(0.0, 90.0).round(6).tolist()
        [0.0, 0.0, 1.0]
    """
    ra, dec = np.radians(ra), np.radians(dec)
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], -1)


def _compressed(frame, hdu=None) -> bool:
    """A stream (.gz/.bz2: no cheap seeking) or a tile-compressed HDU (.fz): read whole."""
    if frame.path.suffix.lower() in (".gz", ".bz2"):
        return True
    if hdu is None:
        name = frame.path.name.lower()
        return name.endswith(".fz") or _is_comp_hdu(frame)
    return isinstance(hdu, fits.CompImageHDU)


def _is_comp_hdu(frame) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(frame.path, memmap=True, lazy_load_hdus=True) as hdul:
            return isinstance(hdul[frame.hdu], fits.CompImageHDU)
