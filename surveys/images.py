"""`images`: any survey's cutouts on disk (JPEG, PNG, FITS named `<id>.<ext>`) plus a catalog.

This is how most labelled sets arrive in practice (Galaxy Zoo's SDSS JPEGs among them):
already-cut stamps and a CSV of ids and labels, with no WCS to go back to the frames.
Colour or greyscale: the channel count is read from the files, and the bands are named
`r,g,b` (three channels) or `grey` (one) unless `--bands` names them. Labels come from a
class column (`--label-column`, `--label-map`) or from vote counts (`--label-from-counts`,
`--min-fraction`, see `votes`); with neither, or with no `--catalog` at all (every image of
the folder), the store is unlabelled: a target pool for adaptation or prediction.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from astropy.table import Table

from astrotransfer.errors import SkipObject, UserError
from astrotransfer.survey import Candidate, IngestSource, Option, Survey

from .catalogs import parse_coords, read_table
from .file_guards import unsafe_id_reason
from .stamp_decode import FITS_SUFFIXES, decode_codes, decode_stamp, read_pixels as _read_pixels

JPEG_SUFFIXES = (".jpeg", ".jpg")
EXTENSIONS = (*JPEG_SUFFIXES, ".png", *FITS_SUFFIXES)


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
    load_in_workers = True  # load() reads one file by path: safe in forked decode workers

    def __init__(self, files: dict[str, Path], candidates: list[Candidate], crop: int | None,
                 bands: tuple[str, ...], **kw):
        super().__init__(bands=bands, **kw)
        self._files = files
        self._candidates = candidates
        self._crop = crop
        # baseline JPEG is 8-bit whatever it holds; a PNG may be 16-bit and FITS is float,
        # so only an all-JPEG input is kept as 8-bit codes (found from the names, no I/O)
        self.pixel_codes = all(c.payload.name.lower().endswith(JPEG_SUFFIXES)
                               for c in candidates if isinstance(c.payload, Path))

    def candidates(self) -> list[Candidate]:
        return self._candidates

    def load(self, cand: Candidate) -> np.ndarray:
        return decode_stamp(self._path(cand), self._crop, self.image_size, len(self.bands))

    def load_codes(self, cand: Candidate) -> np.ndarray:
        return decode_codes(self._path(cand), self._crop, self.image_size, len(self.bands))

    @staticmethod
    def _path(cand: Candidate) -> Path:
        path = cand.payload
        if isinstance(path, str):  # a catalog problem found by open(): the skip reason
            raise SkipObject(path)
        if path is None:
            raise SkipObject(f"missing file: no image named {cand.object_id}.<ext>")
        return path


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


GREY, RGB = ("grey",), ("r", "g", "b")
SAMPLE = 16  # files read up front to detect the channel count


def detect_bands(paths: list[Path], bands: str | None) -> tuple[str, ...]:
    """Band names for the files' channel count (the most common among the first files).

    One channel is `grey`, three are `r,g,b`; `--bands` names them instead and must agree
    with the files. Any other count must be named with `--bands`, so no guess is stored.
    """
    given = tuple(b.strip() for b in bands.split(",") if b.strip()) if bands else ()
    counts: dict[int, int] = {}
    example: dict[int, str] = {}
    for path in paths[:SAMPLE]:
        try:
            c = _read_pixels(path).shape[0]
        except SkipObject:
            continue  # a corrupt file is skipped (and counted) by the ingest itself
        counts[c] = counts.get(c, 0) + 1
        example.setdefault(c, path.name)
    if not counts:
        return given or RGB
    n = max(counts, key=counts.get)
    if given and len(given) != n:
        raise UserError(f"--bands {bands} names {len(given)} band(s) but the images have {n} "
                        f"channel(s) (e.g. {example[n]}); pass {n} name(s) to --bands, or omit "
                        f"it to name them from the files")
    if given:
        return given
    if n not in (1, 3):
        raise UserError(f"the images have {n} channels (e.g. {example[n]}); name them with "
                        f"--bands, e.g. --bands {','.join(f'b{i}' for i in range(n))}")
    if n == 3:
        return RGB  # as always: colour cutouts are r,g,b unless --bands says otherwise
    logging.getLogger("astrotransfer").info(
        "bands: %s (one channel, read from the files; --bands renames it)", GREY[0])
    return GREY


class ImagesSurvey(Survey):
    name = "images"
    description = "cutouts on disk (JPEG/PNG/FITS named <id>.<ext>, colour or grey) plus a catalog"
    options = [
        Option("images", Path, ..., "folder of cutouts named <id>.<ext>"),
        Option("catalog", Path, None, "catalog file (.csv, .ecsv, .fits, .parquet); omit to "
                                      "ingest every image of the folder, unlabelled"),
        Option("id_column", str, "objid", "catalog column holding the image id"),
        Option("label_column", str, None, "catalog column holding the class (omit for unlabelled)"),
        Option("label_map", str, None, 'RAW=NAME pairs, e.g. "0=elliptical,1=spiral,2=spiral"'),
        Option("drop_unmapped", bool, False, "skip rows whose label the map does not cover"),
        Option("label_from_counts", str, None, "label = class with most votes, from COLUMN=CLASS "
                                               'pairs, e.g. "n_smooth=elliptical,n_featured=spiral"'),
        Option("min_fraction", float, None, "keep rows whose winning class has at least this "
                                            "share of the votes (with --label-from-counts)"),
        Option("fraction_columns", str, None, "count columns summed as the vote total for "
                                              "--min-fraction [the --label-from-counts columns]"),
        Option("ra_column", str, "ra", "catalog RA column in degrees, if present"),
        Option("dec_column", str, "dec", "catalog Dec column in degrees, if present"),
        Option("crop", int, None, "centre-crop to this many pixels before resizing"),
        Option("size", int, 64, "output cutout size in pixels"),
        Option("bands", str, None, "names of the image channels, in order [r,g,b for colour, "
                                   "grey for one channel: read from the files]"),
        Option("survey_name", str, "images", "survey recorded in the store (e.g. sdss)"),
        Option("pixel_scale", float, math.nan, "arcsec per pixel of the stored cutouts"),
    ]

    def open(self, images: Path, catalog: Path | None = None, id_column="objid",
             label_column=None, label_map=None, drop_unmapped=False, label_from_counts=None,
             min_fraction=None, fraction_columns=None, ra_column="ra", dec_column="dec",
             crop=None, size=64, bands=None, survey_name="images",
             pixel_scale=math.nan) -> ImagesSource:
        images = Path(images)
        if not images.is_dir():
            raise UserError(f"--images folder {images} does not exist or is not a folder")
        if size < 8:
            raise UserError(f"--size {size} is too small; use at least 8 pixels")
        files = {}
        for p in sorted(images.iterdir()):
            for ext in EXTENSIONS:
                if p.name.lower().endswith(ext):
                    files.setdefault(p.name[: -len(ext)], p)
        extra = {"source_folder": str(images.resolve()), "crop": crop}
        if catalog is None:
            if label_column or label_map or label_from_counts or min_fraction is not None:
                raise UserError("labels come from a catalog: pass --catalog with the label "
                                "options, or drop them to ingest the folder unlabelled")
            if not files:
                raise UserError(f"--images folder {images} holds no .jpeg/.jpg/.png/.fits "
                                f"files to ingest")
            cands = [Candidate(oid, math.nan, math.nan, -1, p) for oid, p in files.items()]
            class_names: list[str] = []
        else:
            cands, class_names, selection = self._from_catalog(
                images, Path(catalog), files, id_column, label_column, label_map,
                drop_unmapped, label_from_counts, min_fraction, fraction_columns, ra_column,
                dec_column)
            if selection:
                extra["label_selection"] = selection
        band_names = detect_bands([c.payload for c in cands if isinstance(c.payload, Path)],
                                  bands)
        extra["band_names_from"] = "--bands" if bands else "the files' channel count"
        return ImagesSource(files, cands, crop, band_names, survey=survey_name,
                            pixel_scale=pixel_scale, image_size=size, class_names=class_names,
                            normalization="minmax-per-band:[0,1]", extra_attrs=extra)

    @staticmethod
    def _from_catalog(images, catalog, files, id_column, label_column, label_map,
                      drop_unmapped, label_from_counts, min_fraction, fraction_columns,
                      ra_column, dec_column):
        table = read_catalog(catalog)
        if len(table) == 0:
            raise UserError(f"catalog {catalog} has no rows; it must list at least one object")
        for col, opt in ((id_column, "--id-column"), (label_column, "--label-column")):
            if col is not None and col not in table.colnames:
                raise UserError(f"catalog {catalog} has no column '{col}' (columns: "
                                f"{', '.join(table.colnames[:12])}); set {opt}")
        if label_from_counts and (label_column or label_map):
            raise UserError("--label-from-counts builds the label itself; drop --label-column "
                            "and --label-map, or drop --label-from-counts")
        from .votes import labels_from_counts

        votes = labels_from_counts(table, catalog, label_from_counts, fraction_columns,
                                   min_fraction)
        mapping, class_names = parse_label_map(label_map)
        if votes is not None:
            class_names = votes[1]
        cands, unmapped = [], set()
        has_pos = ra_column in table.colnames and dec_column in table.colnames
        bad_pos = (_position_problems(table, ra_column, dec_column) if has_pos
                   else [None] * len(table))
        for i, row in enumerate(table):
            oid = str(row[id_column]).strip()
            label = -1
            if votes is not None:
                if votes[2][i] is not None:
                    continue
                label = int(votes[0][i])
            elif label_column is not None:
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
            raise UserError(f"catalog {catalog} has no usable rows (all labels unmapped or "
                            f"dropped); check --label-column/--label-map or the vote options")
        if not any(c.payload for c in cands):
            raise UserError(f"none of the {len(cands)} catalog ids has an image in {images}; "
                            f"check --id-column (files must be named <id>.jpeg/.png/.fits)")
        return cands, class_names, (votes[3] if votes is not None else None)
