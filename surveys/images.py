"""`images`: any survey's colour cutouts on disk (JPEG, PNG, FITS named `<id>.<ext>`) plus a catalog.

This is how most labelled sets arrive in practice (Galaxy Zoo's SDSS JPEGs among them):
already-cut stamps and a CSV of ids and labels, with no WCS to go back to the frames.
"""
from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from PIL import Image, UnidentifiedImageError

from astrotransfer.errors import SkipObject, UserError
from astrotransfer.survey import Candidate, IngestSource, Option, Survey

from .catalogs import parse_coords, read_table
from .file_guards import check_fits_hdu, check_image_pixels, unsafe_id_reason

EXTENSIONS = (".jpeg", ".jpg", ".png", ".fits", ".fit", ".fits.gz")


def parse_label_map(text: str | None) -> tuple[dict[str, int], list[str]]:
    """'0=elliptical,1=spiral,2=spiral' → ({'0': 0, '1': 1, '2': 1}, ['elliptical', 'spiral'])."""
    if not text:
        return {}, []
    mapping, names = {}, []
    for item in text.split(","):
        raw, sep, name = item.partition("=")
        if not sep or not raw.strip() or not name.strip():
            raise UserError(f"--label-map item '{item}' is not of the form RAW=NAME, "
                            f"e.g. --label-map \"0=elliptical,1=spiral\"")
        name = name.strip()
        if name not in names:
            names.append(name)
        mapping[raw.strip()] = names.index(name)
    return mapping, names


def read_catalog(path: Path) -> Table:
    """The shared reader (catalogs.read_table): byte-order marks, non-UTF-8 text, CRLF,
    repeated column names and trailing empty rows are handled there for every survey."""
    return read_table(path)


def _raw_label(value) -> str:
    """Catalog labels may be ints, floats like 1.0, or strings; normalise to a map key."""
    text = str(value).strip()
    try:
        f = float(text)
        return str(int(f)) if f.is_integer() else text
    except ValueError:
        return text


class ImagesSource(IngestSource):
    def __init__(self, files: dict[str, Path], candidates: list[Candidate], crop: int | None,
                 bands: tuple[str, ...], **kw):
        super().__init__(bands=bands, **kw)
        self._files = files
        self._candidates = candidates
        self._crop = crop

    def candidates(self) -> list[Candidate]:
        return self._candidates

    def load(self, cand: Candidate) -> np.ndarray:
        path = cand.payload
        if isinstance(path, str):  # a catalog problem found by open(): the skip reason
            raise SkipObject(path)
        if path is None:
            raise SkipObject(f"missing file: no image named {cand.object_id}.<ext>")
        pixels = _read_pixels(path)
        if pixels.shape[0] != len(self.bands):
            raise SkipObject(f"wrong band count: {path.name} has {pixels.shape[0]} bands, "
                             f"the others have {len(self.bands)}")
        return _crop_resize_scale(pixels, self._crop, self.image_size)


def _read_pixels(path: Path) -> np.ndarray:
    """(C, H, W) float32; corrupt or truncated files become a SkipObject, not a crash."""
    try:
        if path.name.lower().endswith((".fits", ".fit", ".fits.gz")):
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
        with Image.open(path) as im:
            check_image_pixels(im.size, path)  # from the header, before decoding a bomb
            im.load()  # forces decoding, so a truncated JPEG fails here
            data = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im,
                              dtype=np.float32)
        return data[None] if data.ndim == 2 else data.transpose(2, 0, 1)
    except SkipObject:
        raise
    except Image.DecompressionBombError as exc:  # over Pillow's own hard limit
        raise SkipObject(f"image too large: {path.name} ({exc})") from None
    except (OSError, UnidentifiedImageError, ValueError, TypeError) as exc:
        raise SkipObject(f"corrupt image: {path.name} ({exc})") from None


def _position_problems(table, ra_column: str, dec_column: str) -> list:
    """(ra, dec, skip reason or None) per row. Positions are optional for stamps, so a blank
    cell is an unknown position (NaN); text that is no coordinate, or a value off the sky,
    is a per-object skip, as in the FITS surveys."""
    ra, dec = parse_coords(table[ra_column], table[dec_column])
    out = []
    for i in range(len(table)):
        blank = [_is_blank(table[c][i]) for c in (ra_column, dec_column)]
        if any(blank):
            out.append((math.nan, math.nan, None))
        elif not (np.isfinite(ra[i]) and np.isfinite(dec[i])):
            out.append((math.nan, math.nan,
                        f"RA/Dec unreadable: columns '{ra_column}'/'{dec_column}' hold no "
                        f"position in catalog row {i + 1} (degrees or sexagesimal expected)"))
        elif not -360.0 <= ra[i] <= 360.0:
            out.append((math.nan, math.nan, f"RA/Dec out of range: RA {ra[i]:g} deg in "
                                            f"catalog row {i + 1}"))
        elif not -90.0 <= dec[i] <= 90.0:
            out.append((math.nan, math.nan, f"RA/Dec out of range: Dec {dec[i]:g} deg in "
                                            f"catalog row {i + 1}"))
        else:
            out.append((float(ra[i] % 360.0), float(dec[i]), None))
    return out


def _is_blank(value) -> bool:
    if value is np.ma.masked:
        return True
    if isinstance(value, (float, np.floating)):
        return not np.isfinite(value)
    return isinstance(value, (str, np.str_, bytes)) and str(value).strip().lower() in ("", "nan")


def _crop_resize_scale(pixels: np.ndarray, crop: int | None, size: int) -> np.ndarray:
    """Centre-crop, resize with antialiasing, then scale each band to [0, 1]."""
    import torch
    import torch.nn.functional as F

    c, h, w = pixels.shape
    if crop and crop < min(h, w):
        top, left = (h - crop) // 2, (w - crop) // 2
        pixels = pixels[:, top:top + crop, left:left + crop]
    t = torch.from_numpy(np.ascontiguousarray(pixels))[None]
    if t.shape[-1] != size or t.shape[-2] != size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    out = t[0].numpy()
    if not np.isfinite(out).all():
        raise SkipObject("non-finite pixels: NaN or inf in the image")
    lo = out.min(axis=(1, 2), keepdims=True)
    hi = out.max(axis=(1, 2), keepdims=True)
    return ((out - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


class ImagesSurvey(Survey):
    name = "images"
    description = "colour cutouts on disk (JPEG/PNG/FITS named <id>.<ext>) plus a CSV catalog"
    options = [
        Option("images", Path, ..., "folder of cutouts named <id>.<ext>"),
        Option("catalog", Path, ..., "catalog file (.csv, .ecsv, .fits, .parquet)"),
        Option("id_column", str, "objid", "catalog column holding the image id"),
        Option("label_column", str, None, "catalog column holding the class (omit for unlabelled)"),
        Option("label_map", str, None, 'RAW=NAME pairs, e.g. "0=elliptical,1=spiral,2=spiral"'),
        Option("drop_unmapped", bool, False, "skip rows whose label the map does not cover"),
        Option("ra_column", str, "ra", "catalog RA column in degrees, if present"),
        Option("dec_column", str, "dec", "catalog Dec column in degrees, if present"),
        Option("crop", int, None, "centre-crop to this many pixels before resizing"),
        Option("size", int, 64, "output cutout size in pixels"),
        Option("bands", str, "r,g,b", "names of the image channels, in order"),
        Option("survey_name", str, "images", "survey recorded in the store (e.g. sdss)"),
        Option("pixel_scale", float, math.nan, "arcsec per pixel of the stored cutouts"),
    ]

    def open(self, images: Path, catalog: Path, id_column="objid", label_column=None,
             label_map=None, drop_unmapped=False, ra_column="ra", dec_column="dec", crop=None,
             size=64, bands="r,g,b", survey_name="images", pixel_scale=math.nan) -> ImagesSource:
        images = Path(images)
        if not images.is_dir():
            raise UserError(f"--images folder {images} does not exist or is not a folder")
        if size < 8:
            raise UserError(f"--size {size} is too small; use at least 8 pixels")
        table = read_catalog(Path(catalog))
        if len(table) == 0:
            raise UserError(f"catalog {catalog} has no rows; it must list at least one object")
        for col, opt in ((id_column, "--id-column"), (label_column, "--label-column")):
            if col is not None and col not in table.colnames:
                raise UserError(f"catalog {catalog} has no column '{col}' (columns: "
                                f"{', '.join(table.colnames[:12])}); set {opt}")
        mapping, class_names = parse_label_map(label_map)
        files = {}
        for p in images.iterdir():
            for ext in EXTENSIONS:
                if p.name.lower().endswith(ext):
                    files.setdefault(p.name[: -len(ext)], p)
        cands, unmapped = [], set()
        has_pos = ra_column in table.colnames and dec_column in table.colnames
        bad_pos = (_position_problems(table, ra_column, dec_column) if has_pos
                   else [None] * len(table))
        for i, row in enumerate(table):
            oid = str(row[id_column]).strip()
            label = -1
            if label_column is not None:
                raw = _raw_label(row[label_column])
                if mapping:
                    if raw not in mapping:
                        unmapped.add(raw)
                        continue
                    label = mapping[raw]
                else:
                    if raw not in class_names:
                        class_names.append(raw)
                    label = class_names.index(raw)
            ra, dec, problem = bad_pos[i] if has_pos else (math.nan, math.nan, None)
            problem = unsafe_id_reason(oid) or problem  # never a path outside --images
            cands.append(Candidate(oid, ra, dec, label, problem or files.get(oid)))
        if unmapped and not drop_unmapped:
            raise UserError(f"--label-map leaves classes {', '.join(sorted(unmapped))} of column "
                            f"'{label_column}' unmapped; map them or pass --drop-unmapped")
        if unmapped:
            n_drop = len(table) - len(cands)
            logging.getLogger("astrotransfer").info(
                "dropped %d catalog rows whose %s (%s) the label map leaves out (--drop-unmapped)",
                n_drop, label_column, ", ".join(sorted(unmapped)))
        if not cands:
            raise UserError(f"catalog {catalog} has no usable rows (all labels unmapped); "
                            f"check --label-column and --label-map")
        if not any(c.payload for c in cands):
            raise UserError(f"none of the {len(cands)} catalog ids has an image in {images}; "
                            f"check --id-column (files must be named <id>.jpeg/.png/.fits)")
        band_names = tuple(b.strip() for b in bands.split(",") if b.strip())
        return ImagesSource(files, cands, crop, band_names, survey=survey_name,
                            pixel_scale=pixel_scale, image_size=size, class_names=class_names,
                            normalization="minmax-per-band:[0,1]",
                            extra_attrs={"source_folder": str(images.resolve()), "crop": crop})
