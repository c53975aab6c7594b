"""`des`: Dark Energy Survey DR1 coadd tiles (the target domain of Khan et al. 2019).

Tiles are `<TILENAME>_r<reqnum>p<attnum>_<band>.fits.fz`, tile-compressed: the science
image is the `SCI` extension (a CompImageHDU, read tile by tile). Coadds are scaled to a
zero point of 30 (AB). Adjacent tiles overlap, so the catalog's TILENAME column, when
present, picks the tile an object was measured on. Labels come from Galaxy Zoo vote
fractions carried over by an SDSS cross-match, when the catalog has them.
"""
from __future__ import annotations

import re

from .frame_survey import FrameSurvey
from .sdss import gz_label_options, gz_make_labels


class DESSurvey(FrameSurvey):
    name = "des"
    description = "DES DR1 coadd tiles (<TILE>_r<req>p01_<band>.fits.fz) plus a catalog"
    bands = ("g", "r", "i", "z", "Y")
    default_bands = ("g", "r", "i")
    pixel_scale = 0.263
    psf_fwhm = {"g": 1.12, "r": 0.96, "i": 0.88, "z": 0.84, "Y": 0.90}  # DR1 medians, arcsec
    zero_points = {b: 30.0 for b in bands}
    magnitude_system = "AB"
    flux_unit = "coadd counts at zero point 30"
    id_column, ra_column, dec_column = "COADD_OBJECT_ID", "RA", "DEC"
    tag_column = "TILENAME"
    filename_patterns = (
        re.compile(r"^(?P<tag>[^_]+)_r[^_]+_(?P<band>[grizY])\.fits(?:\.fz|\.gz)?$"),
    )
    naming = "<TILENAME>_r<req>p<att>_<band>.fits.fz"
    image_extnames = ("SCI",)
    default_size = 96  # 25 arcsec, like the SDSS default
    default_normalization = "khan"

    def label_options(self):
        return gz_label_options()

    def make_labels(self, table, opts, path):
        return gz_make_labels(table, opts, path)
