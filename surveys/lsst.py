"""`lsst`: Rubin Observatory coadd patches, as in the data previews (DP0/DP1).

A patch file holds the image in an extension HDU named IMAGE (then MASK, VARIANCE), with
the WCS in that extension's header; a plain single-HDU image also works. Pixels are nJy,
so the AB zero point is 31.4. The band comes from the file name (the one single-letter
u/g/r/i/z/y token between "_", "-" or "." separators, as in
`deepCoadd_calexp_4431_17_r_DC2.fits`), else from a parent folder named after the band
(butler layouts `.../<tract>/<patch>/<band>/...`), else from the BAND/FILTER header.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from astrotransfer.errors import UserError
from astrotransfer.survey import Option

from .catalogs import column_values, require_column
from .fits_cutouts import match_band
from .frame_survey import FrameSurvey


class LSSTSurvey(FrameSurvey):
    name = "lsst"
    description = "Rubin/LSST coadd patches (IMAGE extension with WCS) plus an object catalog"
    bands = ("u", "g", "r", "i", "z", "y")
    default_bands = ("g", "r", "i")
    pixel_scale = 0.2
    psf_fwhm = {"u": 0.92, "g": 0.87, "r": 0.83, "i": 0.80, "z": 0.78, "y": 0.76}  # design
    zero_points = {b: 31.4 for b in bands}
    magnitude_system = "AB"
    flux_unit = "nJy"
    id_column, ra_column, dec_column = "objectId", "coord_ra", "coord_dec"
    naming = "a single-letter band token, e.g. deepCoadd_calexp_<tract>_<patch>_<band>_....fits"
    image_extnames = ("IMAGE",)
    default_size = 128  # 25.6 arcsec
    default_normalization = "asinh"

    def band_from_filename(self, path: Path):
        stem = path.name
        for suffix in (".fz", ".gz", ".bz2", ".fits", ".fit"):
            stem = stem[: -len(suffix)] if stem.lower().endswith(suffix) else stem
        found = {t for t in re.split(r"[_\-.]", stem) if t in self.bands}
        if len(found) == 1:
            return found.pop(), ""
        return match_band(path.parent.name, self.bands, {}) if not found else None, ""

    def label_options(self):
        return [
            Option("label_column", str, None, "catalog column with integer labels 0..K-1 "
                   "(omit for unlabelled)"),
            Option("class_names", str, None, "comma-separated class names for labels 0..K-1"),
        ]

    def make_labels(self, table, opts, path):
        col = opts["label_column"]
        names = [n.strip() for n in (opts["class_names"] or "").split(",") if n.strip()]
        if not col:
            return np.full(len(table), -1, np.int32), [None] * len(table), names, "none"
        require_column(table, col, path, "--label-column")
        vals = column_values(table[col])
        ok = np.isfinite(vals) & (vals >= 0) & (vals == np.round(vals))
        labels = np.where(ok, vals, -1).astype(np.int32)
        k = int(labels.max()) + 1 if ok.any() else 0
        if names and len(names) < k:
            raise UserError(f"--class-names gives {len(names)} names but column '{col}' has "
                            f"labels up to {k - 1}; name every class")
        return labels, [None] * len(table), names or [str(i) for i in range(k)], f"column {col}"
