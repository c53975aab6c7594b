"""From survey frames (FITS images with a WCS) to aligned multi-band cutouts.

Shared by every FITS survey (sdss, des, hst-phangs, lsst) through `frame_survey.FrameSurvey`.

Alignment. Each band is cut from its own frame with that frame's own WCS, by RA/Dec, then
resampled (bicubic, as `reproject_interp` does) onto one output grid per object: a north-up,
east-left tangent plane centred on the object, at the survey pixel scale. Bands whose frames
are rotated, flipped or sampled differently therefore line up on the sky pixel for pixel.
The frame position of every output pixel is computed once per band (it also decides whether
the stamp lies inside the frame), and only the frame pixels under it, plus a margin, are
read and interpolated, so a 10k x 10k tile costs no more per object than a stamp.

Reading. Objects are visited frame by frame (`FrameSet.frame_order`); a tile-compressed
(`.fits.fz`) or stream-compressed (.gz/.bz2) frame is decompressed once, whole, and kept
while its objects are cut (one frame per band at a time, `MAX_DECOMPRESSED_BYTES` at most),
instead of decompressing the tile rows under every stamp again for every object.

Frames. `open()` reads every frame header once: band, WCS, shape, and obvious damage (a
truncated file, no celestial WCS). Pixels are read lazily per object and cached. Bad frames
never stop a run: objects they would have served are skipped with the frame and the
problem in the reason; only "no frame usable at all" is fatal. Several frames per band are
indexed by footprint (unit-vector cone test, then the exact pixel test), and an object uses
the frame that contains its whole stamp, preferring the one matching the catalog's tile
column and then the one where the object sits deepest inside. Stamps are never mosaicked
across two frames: near a frame edge the object is skipped, or padded with --pad-edges.

Flux. Frames are taken to be in flux per pixel (nanomaggies, counts, e-/s); a band sampled
at another pixel scale is rescaled by the pixel-area ratio so that every band of a stamp is
flux per output pixel and colours are preserved.

Band of a frame. The survey's file-name pattern decides; where a name does not match, the
header keywords FILTER, BAND, FILTER1, FILTER2 are read (first token, case-insensitive,
also split at "_" and "-", so "g DECam SDSS c0001", "r_03" and "HSC-R" all work). A frame
whose name and FILTER header name different bands is refused rather than guessed.
"""
from __future__ import annotations

import glob
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_area
from scipy.ndimage import map_coordinates

from astrotransfer.errors import SkipObject, UserError
from astrotransfer.survey import FLAG_BAND_MISSING, FLAG_NAN_FILLED, FLAG_PADDED

from .file_guards import stream_frame_problem
from .frame_set import FrameSet, unit_vector

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fz", ".fits.fz", ".fits.gz", ".fit.gz",
                 ".fits.bz2", ".fit.bz2")
HEADER_BAND_KEYS = ("FILTER", "BAND", "FILTER1", "FILTER2")
BLANK_LIMIT = 0.5  # more than this fraction of the central region blank: no usable data


def is_fits_name(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


def find_frame_files(spec: str, flag: str = "--frames") -> list[Path]:
    """A folder (searched recursively, FITS names only) or a glob pattern."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and is_fits_name(p))
        if not files:
            raise UserError(f"frame folder {path} holds no FITS files (*.fits, *.fits.fz, "
                            f"*.fits.bz2, ...); point {flag} at the folder with the frames")
        return files
    files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
    if not files:
        what = "folder" if not glob.has_magic(spec) else "pattern"
        raise UserError(f"frames {what} '{spec}' matches no file; give {flag} an existing "
                        f"folder or a glob such as 'frames/*.fits'")
    return files


@dataclass
class Frame:
    """One image file of one band; `error` set means it is reported and never used."""

    path: Path
    band: str | None = None
    hdu: int = 0
    shape: tuple[int, int] = (0, 0)
    wcs: WCS | None = None
    error: str | None = None
    tag: str = ""  # e.g. a DES tile name from the file name, matched against the catalog
    center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    cos_radius: float = 2.0
    # frames with equal keys map sky to pixels identically (the bands of one coadd tile)
    wcs_key: str = ""

    @property
    def name(self) -> str:
        return self.path.name


def _pick_hdu(hdul, extnames: tuple[str, ...]) -> int:
    for i, hdu in enumerate(hdul):
        if hdu.name.upper() in extnames and hdu.is_image and hdu.header.get("NAXIS") == 2:
            return i
    for i, hdu in enumerate(hdul):
        if hdu.is_image and hdu.header.get("NAXIS") == 2:
            return i
    raise ValueError("no 2-D image HDU")


def read_frame(path: Path, survey) -> Frame:
    """Header-only look at one frame; any problem goes into `Frame.error`.

    A truncated frame keeps its WCS, so the objects it covers are skipped naming it.
    """
    frame = Frame(path)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", FITSFixedWarning)
            with fits.open(path, memmap=True, lazy_load_hdus=True) as hdul:
                frame.hdu = _pick_hdu(hdul, survey.image_extnames)
                header = hdul[frame.hdu].header
                frame.shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
                headers = [header, hdul[0].header]
                wcs = WCS(header, fobj=hdul).celestial
    except Exception as exc:
        frame.error = f"not a readable FITS image ({type(exc).__name__}: {exc})"
        return frame
    frame.band, frame.tag, frame.error = _frame_band(path, headers, survey)
    if frame.error:
        return frame
    if not wcs.has_celestial:
        frame.error = "no celestial WCS (CTYPE/CRVAL/CD keywords missing)"
        return frame
    ny, nx = frame.shape
    try:
        xs = np.array([(nx - 1) / 2, -0.5, nx - 0.5, -0.5, nx - 0.5])
        ys = np.array([(ny - 1) / 2, -0.5, -0.5, ny - 0.5, ny - 0.5])
        vec = unit_vector(*wcs.pixel_to_world_values(xs, ys))
        if not np.all(np.isfinite(vec)):
            raise ValueError("no sky position for the frame corners")
    except Exception as exc:
        frame.error = f"unusable WCS ({exc})"
        return frame
    frame.wcs, frame.center, frame.wcs_key = wcs, vec[0], wcs_key(wcs, path)
    frame.cos_radius = float(np.min(vec[1:] @ vec[0])) - 1e-9  # corners bound the footprint
    trunc = [str(w.message) for w in caught if "truncated" in str(w.message)]
    if trunc:
        frame.error = f"truncated file ({trunc[0]})"
    frame.error = frame.error or stream_frame_problem(path, header)  # before any allocation
    return frame


def wcs_key(wcs: WCS, path: Path) -> str:
    """Equal for two frames whose sky-to-pixel transforms are the same function.

    Why: the bands of a DES or HSC coadd tile share one WCS, and transforming the stamp's
    4,096 sky positions is a third of a band's cutting cost; `cut_object` transforms once
    per key. The key is the WCS as FITS header text, which holds every parameter wcslib
    uses (projection, CD/PC, CRVAL/CRPIX, PV/TPV terms); a WCS with SIP or table
    distortions, held outside that text, keys on its own file, so it is never shared.
    """
    if any(getattr(wcs, a, None) is not None
           for a in ("sip", "cpdis1", "cpdis2", "det2im1", "det2im2")):
        return f"file:{path}"
    return wcs.to_header_string(relax=True)


def _frame_band(path: Path, headers, survey) -> tuple[str | None, str, str | None]:
    by_name, tag = survey.band_from_filename(path)
    by_header = None
    for key in HEADER_BAND_KEYS:
        for header in headers:
            if key in header and by_header is None:
                by_header = survey.band_from_header(str(header[key]))
    if by_name and by_header and by_name != by_header:
        return None, tag, (f"file name says band {by_name} but the FILTER/BAND header says "
                           f"{by_header}; rename the file or fix its header")
    band = by_name or by_header
    if band is None:
        return None, tag, (f"band unknown: the name does not match {survey.naming} and no "
                           f"FILTER/BAND header keyword names one of {', '.join(survey.bands)}")
    return band, tag, None


def match_band(token: str, bands: tuple[str, ...], aliases: dict[str, str]) -> str | None:
    """Map a file-name or header token to a canonical band, case-insensitively if unique."""
    token = token.strip()
    if token in bands:
        return token
    low = [b for b in bands if b.lower() == token.lower()]
    if len(low) == 1:
        return low[0]
    return aliases.get(token.lower())


def output_wcs(ra: float, dec: float, size: int, scale_arcsec: float) -> WCS:
    """North-up, east-left tangent plane; the object sits at the stamp centre."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = [(size + 1) / 2, (size + 1) / 2]
    w.wcs.cdelt = [-scale_arcsec / 3600.0, scale_arcsec / 3600.0]
    return w


@dataclass
class BandResult:
    image: np.ndarray | None = None
    flags: int = 0
    uncovered: bool = False
    reason: str | None = None


def cut_band(frames: FrameSet, band: str, ra: float, dec: float, grid, opts) -> BandResult:
    """One band of one object, from the best frame that can serve it."""
    out_wcs, world, size, to_pixels = grid
    choices = []
    for f in frames.near(band, unit_vector(ra, dec)):
        px, py = to_pixels(f)  # the stamp's pixels and the object's centre
        x, y, cx, cy = px[:-1], py[:-1], px[-1], py[-1]
        ny, nx = f.shape
        inside = (x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)
        depth = min(cx + 0.5, nx - 0.5 - cx, cy + 0.5, ny - 0.5 - cy)
        if depth > 0:
            choices.append((f, inside.reshape(size, size), depth, (x, y)))
    if not choices:
        return BandResult(uncovered=True)
    tag = opts["tag"]
    choices.sort(key=lambda c: (c[0].error is None, bool(tag) and c[0].tag == tag,
                                bool(c[1].all()), c[2]), reverse=True)
    failures: list[BandResult] = []
    for f, inside, _, xy in choices:
        if f.error:
            failures.append(BandResult(reason=f"frame {f.name} unreadable: band {band}, {f.error}"))
            continue
        if not inside.all() and not opts["pad_edges"]:
            failures.append(BandResult(reason=(
                f"too close to edge: band {band}, frame {f.name} ({100 * (1 - inside.mean()):.1f}"
                f"% of the stamp is off the image; --pad-edges pads instead)")))
            continue
        try:
            region, xy_in = _read_region(frames, f, *xy)
        except Exception as exc:  # damaged since open(): remember, so later objects skip fast
            f.error = f"{type(exc).__name__}: {exc}"
            failures.append(BandResult(reason=f"frame {f.name} unreadable: band {band}, {f.error}"))
            continue
        res = _resample(region, xy_in, f, band, grid, inside, opts["blank_zero"])
        if res.image is not None:
            return res
        failures.append(res)
    real = [r for r in failures if not r.uncovered]  # blank-only frames mean "no coverage"
    return real[0] if real else failures[0]


MARGIN = 10  # frame pixels read beyond the stamp's footprint: the bicubic spline's reach


def _read_region(frames: FrameSet, f: Frame, x: np.ndarray, y: np.ndarray):
    """The frame pixels under the stamp plus MARGIN, and the stamp's pixel coordinates in
    that region. `x`, `y` are where each output pixel falls in the frame (0-based), already
    computed by `cut_band`, so no second WCS transform is needed."""
    ny, nx = f.shape
    x0 = max(0, int(np.floor(np.nanmin(x))) - MARGIN)
    x1 = min(nx, int(np.ceil(np.nanmax(x))) + MARGIN + 1)
    y0 = max(0, int(np.floor(np.nanmin(y))) - MARGIN)
    y1 = min(ny, int(np.ceil(np.nanmax(y))) + MARGIN + 1)
    region = np.array(frames.pixels(f)[y0:y1, x0:x1], dtype=np.float32)
    # points beyond the frame (not just beyond the region) are what must come back blank
    off = (x < -0.5) | (x > nx - 0.5) | (y < -0.5) | (y > ny - 0.5)
    return region, (x - x0, y - y0, off)


def _resample(region: np.ndarray, xy_in, f: Frame, band: str, grid, inside,
              blank_zero) -> BandResult:
    """Onto the output grid; blank pixels filled (flagged) unless the core is mostly blank."""
    out_wcs, _, size, _ = grid
    data = region
    if blank_zero:  # drizzled mosaics mark "no exposure" with exact zeros, not NaN
        data = np.where(data == 0.0, np.float32(np.nan), data)
    img = _interpolate(data, xy_in, size)
    # Interpolation samples surface brightness per *frame* pixel; a band observed at a
    # coarser or finer scale must be brought to flux per *output* pixel, or its colour
    # against the other bands is off by the pixel-area ratio.
    img *= abs(out_wcs.wcs.cdelt[0] * out_wcs.wcs.cdelt[1]) / _pixel_area(f)  # deg² ratio
    blank = inside & ~np.isfinite(img)
    q = size // 4
    central = blank[q:size - q, q:size - q].mean()
    if central > BLANK_LIMIT:
        if blank_zero:
            return BandResult(uncovered=True, reason=f"no data at the object in {f.name}")
        return BandResult(reason=f"mostly blank: band {band}, {100 * central:.0f}% of the "
                                 f"central region is NaN/masked in frame {f.name}")
    flags = 0
    if blank.any():
        img[blank] = np.nanmedian(img[inside & ~blank]) if (inside & ~blank).any() else 0.0
        flags |= FLAG_NAN_FILLED
    if not inside.all():
        img[~inside] = 0.0
        flags |= FLAG_PADDED
    return BandResult(image=img.astype(np.float32), flags=flags)


def _pixel_area(f: Frame) -> float:
    if getattr(f, "_area", None) is None:
        f._area = float(proj_plane_pixel_area(f.wcs))
    return f._area


def _sample(data: np.ndarray, x: np.ndarray, y: np.ndarray, order: int) -> np.ndarray:
    ny, nx = data.shape
    coords = np.array([np.clip(y, 0, ny - 1), np.clip(x, 0, nx - 1)])
    return map_coordinates(data, coords, order=order, mode="nearest")


def _interpolate(data: np.ndarray, xy_in, size: int) -> np.ndarray:
    """Bicubic resampling at the given frame coordinates, NaN where the input was blank or
    beyond the frame: what `reproject_interp(order="bicubic")` computes, without building
    WCS transforms again for every object and band.

    Bicubic keeps a well-sampled PSF's peak (bilinear flattens it by several sigma on bright
    objects), but its spline prefilter spreads one NaN over the whole array; so blank pixels
    are filled before interpolating and put back, through a bilinear map of the blank mask.
    """
    x, y, off = xy_in
    blank = ~np.isfinite(data)
    if not blank.any():
        img = _sample(data, x, y, 3)
    else:
        filled = np.where(blank, np.nanmedian(data) if (~blank).any() else 0.0, data)
        img = _sample(filled, x, y, 3)
        img[_sample(blank.astype(np.float32), x, y, 1) > 0] = np.nan
    img[off] = np.nan
    return img.reshape(size, size).astype(np.float32)


def cut_object(frames: FrameSet, bands: tuple[str, ...], ra: float, dec: float, size: int,
               scale: float, pad_edges: bool, blank_zero: bool, max_missing: int,
               tag: str = "") -> tuple[np.ndarray, int, list[int]]:
    """(C, H, W) stamp in `bands` order, flag bits and the indices of bands with no data."""
    out_wcs = output_wcs(ra, dec, size, scale)
    yy, xx = np.mgrid[0:size, 0:size]
    world = out_wcs.pixel_to_world_values(xx.ravel(), yy.ravel())
    pixels: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def to_pixels(f: Frame) -> tuple[np.ndarray, np.ndarray]:
        """The stamp's pixels and (last) the object's centre in frame `f`, in one WCS call,
        made once for all frames sharing f's WCS (`wcs_key`)."""
        key = f.wcs_key or f"file:{f.path}"
        if key not in pixels:
            pixels[key] = f.wcs.world_to_pixel_values(np.append(world[0], ra),
                                                      np.append(world[1], dec))
        return pixels[key]

    grid = (out_wcs, world, size, to_pixels)
    opts = {"pad_edges": pad_edges, "blank_zero": blank_zero, "tag": tag}
    results = {b: cut_band(frames, b, ra, dec, grid, opts) for b in bands}
    for b, r in results.items():
        if r.reason and not r.uncovered:
            raise SkipObject(r.reason)
    missing = [b for b, r in results.items() if r.uncovered]
    if len(missing) == len(bands):
        raise SkipObject(f"off frame: no frame of any band covers RA={ra:.6f} Dec={dec:.6f}"
                         + problem_note(frames, None))
    if len(missing) > max_missing:
        allowed = "none" if max_missing == 0 else f"at most {max_missing}"
        raise SkipObject(f"no coverage: band(s) {', '.join(missing)} ({allowed} may be "
                         f"missing)" + problem_note(frames, missing[0]))
    flags = FLAG_BAND_MISSING if missing else 0
    stack = np.zeros((len(bands), size, size), np.float32)
    for i, b in enumerate(bands):
        if results[b].image is not None:
            stack[i] = results[b].image
            flags |= results[b].flags
    return stack, flags, [bands.index(b) for b in missing]


def problem_note(frames: FrameSet, band: str | None, unplaced: bool = True) -> str:
    """Frames with no usable WCS might have covered the object: name them in the reason."""
    probs = frames.problems(band, unplaced=unplaced)
    if not probs:
        return ""
    more = f" and {len(probs) - 1} more" if len(probs) > 1 else ""
    return f"; unusable frames: {probs[0]}{more}"


def filename_band(patterns: tuple[re.Pattern, ...], path: Path) -> tuple[str | None, str]:
    for pat in patterns:
        m = pat.match(path.name)
        if m:
            return m.group("band"), (m.groupdict().get("tag") or "")
    return None, ""
