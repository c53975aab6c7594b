"""`hst-phangs`: HST drizzled mosaics with LEGUS/PHANGS star-cluster catalogs (Wei et al. 2020).

Frames are 0.04"/px drizzled mosaics, one per filter; the filter comes from the file name
(`..._f275w_...drc.fits`, case-insensitive) or the FILTER/FILTER1/FILTER2 header. LEGUS
observed some galaxies in ACS F435W/F606W instead of F438W/F555W; those fill the B and V
slots (F438W, F555W). Drizzled mosaics mark "no exposure" with exact zeros, so zeros count
as blank, and a filter with no data at the object is filled with zeros and flagged: the
five filters rarely all cover a cluster. More than one missing filter drops the object.

Catalogs default to the LEGUS header-less `.tab` layout (col1 id, col4/col5 RA/Dec,
col34 visual class). Classes 1-4 become labels 0-3. Class 0 (never inspected) is
unlabelled: such sources are skipped unless --include-unclassified ingests them with
label -1 (useful as unlabelled target data).
"""
from __future__ import annotations

import re

import numpy as np

from astrotransfer.errors import UserError
from astrotransfer.survey import Option

from .catalogs import LEGUS_CLASSES, LEGUS_COLUMNS, column_values, legus_labels, require_column
from .frame_survey import FrameSurvey


class HSTPhangsSurvey(FrameSurvey):
    name = "hst-phangs"
    description = "HST LEGUS/PHANGS drizzled mosaics (F275W..F814W) plus a cluster catalog"
    bands = ("F275W", "F336W", "F438W", "F555W", "F814W")
    default_bands = bands
    pixel_scale = 0.04
    psf_fwhm = {"F275W": 0.08, "F336W": 0.08, "F438W": 0.08, "F555W": 0.08, "F814W": 0.09}
    # Approximate AB zero points for e-/s (WFC3/UVIS; ACS/WFC for F814W). Each frame's
    # PHOTFLAM/PHOTPLAM header is authoritative; LEGUS catalog magnitudes are Vega.
    zero_points = {"F275W": 24.13, "F336W": 24.67, "F438W": 24.83, "F555W": 25.81,
                   "F814W": 25.94}
    magnitude_system = "AB zero points; LEGUS/PHANGS catalog magnitudes are Vega"
    flux_unit = "electrons/s"
    id_column, ra_column, dec_column = (LEGUS_COLUMNS[k] for k in ("id", "ra", "dec"))
    filename_patterns = (re.compile(r"^(?:.*[_.\-])?(?P<band>[fF]\d{3}[wWmMnN])(?:[_.\-].*)?$"),)
    naming = "a _f<nnn>w_ filter token, e.g. hlsp_legus_hst_wfc3_ngc1566_f275w_v1_drc.fits"
    band_aliases = {"f435w": "F438W", "f606w": "F555W"}
    image_extnames = ("SCI",)
    blank_zero = True
    max_missing_bands = 1
    default_size = 50  # StarcNet stamps; 25 and 100 px are the other sizes in use
    default_normalization = "minmax"

    def label_options(self):
        return [
            Option("class_column", str, LEGUS_COLUMNS["class"], "catalog column with the visual "
                   "class (1-4; 0 = not classified)"),
            Option("include_unclassified", bool, False, "ingest class-0 sources with label -1 "
                   "instead of skipping them"),
        ]

    def make_labels(self, table, opts, path):
        col, include = opts["class_column"], bool(opts["include_unclassified"])
        if col not in table.colnames:
            if include:
                return (np.full(len(table), -1, np.int32), [None] * len(table),
                        list(LEGUS_CLASSES), f"none: no class column {col}")
            require_column(table, col, path, "--class-column (or --include-unclassified to "
                           "ingest without labels)")
        labels = legus_labels(table[col])
        raw = column_values(table[col])
        skips = [None if (lab >= 0 or include) else
                 (f"unclassified: visual class {raw[i]:g}; --include-unclassified "
                  f"ingests it unlabelled") for i, lab in enumerate(labels)]
        if all(s is not None for s in skips):
            raise UserError(f"catalog {path}: no source has a visual class 1-4 in column "
                            f"'{col}'; check --class-column or pass --include-unclassified")
        rule = (f"legus: class 1-4 in {col} -> label 0-3; class 0 "
                + ("-> -1" if include else "skipped"))
        return labels, skips, list(LEGUS_CLASSES), rule
