"""The base of every FITS-frame survey: options, validation in `open()`, per-object `load()`.

A survey module (sdss, des, hst-phangs, lsst) subclasses `FrameSurvey` and states only its
facts: bands in canonical order, pixel scale, PSF, zero points, file naming, catalog columns,
label rule. Everything that can be checked before pixels are read is checked in `open()`, so
a bad command fails in one line before a store exists; what can only fail per object (a frame
damaged, an object off the edge) is a `SkipObject` from `load()`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from astrotransfer.errors import SkipObject, UserError
from astrotransfer.survey import Candidate, IngestSource, Option, Survey

from .catalogs import ids_as_str, load_positions
from .fits_cutouts import (FrameSet, cut_object, filename_band, find_frame_files, match_band,
                           problem_note, read_frame)
from .normalize import METHODS, check_method, normalize


@dataclass
class FrameSource(IngestSource):
    frame_set: FrameSet | None = None
    rows: list[Candidate] = field(default_factory=list)
    pad_edges: bool = False
    blank_zero: bool = False
    max_missing: int = 0
    # load() reads frames by path through this source's own FrameSet cache, empty when the
    # decode workers are forked: each worker decompresses a frame
    # at most once and holds at most one per band
    load_in_workers = True

    def candidates(self) -> list[Candidate]:
        return list(self.rows)

    def share_before_fork(self) -> None:
        """Decompress the first object's compressed frames once, here, before the workers
        fork: they share those pages instead of each decompressing the same frames (on a
        one-tile ingest, the only decompression there is)."""
        first = next((c for c in self.rows if not c.payload[0]), None)
        if first is not None and self.frame_set is not None:
            self.frame_set.preload_compressed(self.bands, first.ra, first.dec, first.payload[1])

    def release_after_fork(self) -> None:
        if self.frame_set is not None:
            self.frame_set.drop_cache()

    def load(self, cand: Candidate) -> tuple[np.ndarray, int]:
        skip, tag = cand.payload
        if skip:
            raise SkipObject(skip)
        img, flags, missing = cut_object(self.frame_set, self.bands, cand.ra, cand.dec,
                                         self.image_size, self.pixel_scale, self.pad_edges,
                                         self.blank_zero, self.max_missing, tag)
        keep = [i for i in range(len(self.bands)) if i not in missing]
        img[keep] = normalize(img[keep], self.normalization)  # missing bands stay exactly 0
        return img, flags


class FrameSurvey(Survey):
    """A survey whose pixels are FITS frames with a WCS; subclasses state the facts."""

    default_bands: tuple[str, ...] = ()
    default_size = 64
    default_normalization = "asinh"
    zero_points: dict[str, float] = {}
    magnitude_system = "AB"
    flux_unit = ""
    id_column, ra_column, dec_column = "id", "ra", "dec"
    tag_column: str | None = None  # catalog column naming the frame/tile an object belongs to
    filename_patterns: tuple[re.Pattern, ...] = ()
    naming = ""  # the file-name convention in words, for error messages
    band_aliases: dict[str, str] = {}
    image_extnames: tuple[str, ...] = ()
    blank_zero = False  # exact zeros mean "no data" (drizzled mosaics)
    max_missing_bands = 0  # bands an object may lack (filled with zeros, flagged)

    def __init__(self):
        self.options = [
            Option("frames", str, ..., "folder or glob of FITS frames; the band comes from "
                   "the file name, else the FILTER/BAND header"),
            Option("catalog", Path, ..., "object catalog: .csv, .fits, .parquet, .vot or "
                   "header-less .tab"),
            Option("size", int, self.default_size, "cutout size in pixels"),
            Option("bands", str, ",".join(self.default_bands),
                   f"comma-separated bands, from {','.join(self.bands)}"),
            Option("normalization", str, self.default_normalization,
                   f"pixel normalization: {'|'.join(METHODS)}"),
            Option("pad_edges", bool, False, "pad objects near a frame edge with zeros "
                   "(flagged) instead of skipping them"),
            Option("id_column", str, self.id_column, "catalog column with the object id"),
            Option("ra_column", str, self.ra_column, "catalog RA column (deg or sexagesimal)"),
            Option("dec_column", str, self.dec_column, "catalog Dec column (deg or sexagesimal)"),
            *self.label_options(),
        ]

    # ---- facts a subclass may refine ----
    def label_options(self) -> list[Option]:
        return []

    def make_labels(self, table, opts: dict, path) -> tuple[np.ndarray, list, list[str], str]:
        """(labels, per-row skip reasons or None, class names, rule recorded in the store)."""
        return np.full(len(table), -1, np.int32), [None] * len(table), [], "none"

    def band_from_filename(self, path: Path) -> tuple[str | None, str]:
        band, tag = filename_band(self.filename_patterns, path)
        return (match_band(band, self.bands, self.band_aliases) if band else None), tag

    def band_from_header(self, value: str) -> str | None:
        tokens = value.split()[:1]
        tokens += re.split(r"[_\-]", tokens[0]) if tokens else []
        for tok in tokens:
            band = match_band(tok, self.bands, self.band_aliases)
            if band:
                return band
        return None

    # ---- opening a run ----
    def _resolve(self, given: dict) -> dict:
        known = {o.name: o for o in self.options}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise UserError(f"survey {self.name} has no option {', '.join(unknown)}; "
                            f"see `astrotransfer ingest {self.name} --help`")
        opts = {n: given.get(n, o.default) for n, o in known.items()}
        for n, v in opts.items():
            if v is ...:
                raise UserError(f"ingest {self.name} needs --{n.replace('_', '-')}")
        return opts

    def parse_bands(self, text: str) -> tuple[str, ...]:
        chosen = set()
        for tok in (t.strip() for t in str(text).split(",") if t.strip()):
            band = match_band(tok, self.bands, self.band_aliases)
            if band is None:
                raise UserError(f"unknown band '{tok}' for {self.name}; choose --bands from "
                                f"{','.join(self.bands)}")
            chosen.add(band)
        if not chosen:
            raise UserError(f"--bands is empty; give e.g. {','.join(self.default_bands)}")
        return tuple(b for b in self.bands if b in chosen)  # canonical survey order

    def open(self, **options) -> FrameSource:
        opts = self._resolve(options)
        size, norm = int(opts["size"]), check_method(opts["normalization"])
        if size < 8:
            raise UserError(f"--size {size} is too small; use at least 8 pixels")
        bands = self.parse_bands(opts["bands"])
        files = find_frame_files(str(opts["frames"]))
        frame_set = FrameSet([read_frame(p, self) for p in files])
        problems = frame_set.problems()
        if len(problems) == len(files):
            raise UserError(f"none of the {len(files)} frames in {opts['frames']} is usable "
                            f"(e.g. {problems[0]}); check --frames")
        lacking = [b for b in bands if b not in frame_set.by_band]
        if len(lacking) > self.max_missing_bands:
            raise UserError(f"no usable frame for band(s) {', '.join(lacking)} in "
                            f"{opts['frames']}; add those frames or drop the band(s) from "
                            f"--bands" + problem_note(frame_set, lacking[0], unplaced=False))
        path = Path(opts["catalog"])
        pos = load_positions(path, opts["id_column"], opts["ra_column"], opts["dec_column"])
        labels, label_skips, class_names, rule = self.make_labels(pos.table, opts, path)
        tags = (ids_as_str(pos.table[self.tag_column])
                if self.tag_column and self.tag_column in pos.table.colnames else None)
        rows = []
        for i, oid in enumerate(pos.ids):
            skip = pos.reason[i] or label_skips[i]
            tag = tags[i] if tags is not None else ""
            rows.append(Candidate(oid or f"row{i + 1}", float(pos.ra[i]), float(pos.dec[i]),
                                  int(labels[i]), (skip, tag)))
        # frame by frame, so each (compressed) frame is read and decompressed once
        order = frame_set.frame_order(np.array([c.ra for c in rows]),
                                      np.array([c.dec for c in rows]),
                                      next((b for b in bands if b in frame_set.by_band), ""))
        rows = [rows[i] for i in order]
        return FrameSource(
            survey=self.name, bands=bands, pixel_scale=self.pixel_scale, image_size=size,
            psf_fwhm={b: self.psf_fwhm[b] for b in bands}, class_names=class_names,
            normalization=norm, frame_set=frame_set, rows=rows,
            pad_edges=bool(opts["pad_edges"]), blank_zero=self.blank_zero,
            max_missing=self.max_missing_bands,
            extra_attrs={"zero_points": {b: self.zero_points.get(b) for b in bands},
                         "magnitude_system": self.magnitude_system, "flux_unit": self.flux_unit,
                         "frames": str(opts["frames"]), "n_frames": len(files),
                         "frame_problems": problems[:50], "catalog": str(path),
                         "label_rule": rule})
