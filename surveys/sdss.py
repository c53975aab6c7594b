"""`sdss`: SDSS imaging frames with Galaxy Zoo labels (the source domain of Khan et al. 2019).

Frames: DR8+ `frame-<band>-<run>-<camcol>-<field>.fits[.bz2]` (calibrated, nanomaggies,
WCS in the primary header) and DR7 `fpC-`/`drC-<run>-<band><camcol>-<field>.fit[.gz]`.
DR7 frames are raw counts with a soft bias and need a WCS in their header (astrometry.net
or the DAS versions); their zero points live in tsField files and are not applied here,
which the per-image normalizations make harmless for classification.
"""
from __future__ import annotations

import re

import numpy as np

from astrotransfer.errors import UserError
from astrotransfer.survey import Option

from .catalogs import GZ_CLASSES, GZ_DECIMALS, galaxy_zoo_labels
from .frame_survey import FrameSurvey

GZ_VOTE_COLUMNS = {"debiased": ("P_EL_DEBIASED", "P_CS_DEBIASED"), "raw": ("P_EL", "P_CS")}


def gz_label_options() -> list[Option]:
    return [
        Option("spiral_threshold", float, 0.985, "spiral if the spiral (CW+ACW+edge-on) vote "
               "fraction is at least this (Khan et al. high-probability cut)"),
        Option("elliptical_threshold", float, 0.926, "elliptical if the elliptical vote "
               "fraction is at least this"),
        Option("votes", str, "debiased", "which Galaxy Zoo fractions the thresholds apply to: "
               "debiased (P_*_DEBIASED) or raw (P_EL, P_CS)"),
    ]


def gz_make_labels(table, opts: dict, path):
    """Galaxy Zoo labels when the catalog carries vote fractions; unlabelled otherwise."""
    if opts["votes"] not in GZ_VOTE_COLUMNS:
        raise UserError(f"--votes {opts['votes']} is unknown; use debiased or raw")
    el_col, cs_col = GZ_VOTE_COLUMNS[opts["votes"]]
    present = [c for c in (el_col, cs_col) if c in table.colnames]
    none = [None] * len(table)
    if not present:
        return np.full(len(table), -1, np.int32), none, list(GZ_CLASSES), \
            f"none: catalog has no Galaxy Zoo columns {el_col}/{cs_col}"
    if len(present) == 1:
        missing = ({el_col, cs_col} - set(present)).pop()
        raise UserError(f"catalog {path} has {present[0]} but not {missing}; both Galaxy Zoo "
                        f"fractions are needed (or use --votes raw/debiased)")
    t_sp, t_el = float(opts["spiral_threshold"]), float(opts["elliptical_threshold"])
    labels = galaxy_zoo_labels(table[el_col], table[cs_col], t_el, t_sp)
    rule = (f"galaxy-zoo: spiral if {cs_col} >= {t_sp}, elliptical if {el_col} >= {t_el} "
            f"(inclusive after rounding to {GZ_DECIMALS} decimals), else unlabelled")
    return labels, none, list(GZ_CLASSES), rule


class SDSSSurvey(FrameSurvey):
    name = "sdss"
    description = "SDSS DR7/DR8+ imaging frames plus a catalog (objid, ra, dec; Galaxy Zoo votes)"
    bands = ("u", "g", "r", "i", "z")
    default_bands = ("g", "r", "i")
    pixel_scale = 0.396
    psf_fwhm = {"u": 1.5, "g": 1.4, "r": 1.3, "i": 1.3, "z": 1.3}  # typical seeing, arcsec
    # DR8+ frames are in nanomaggies: m = 22.5 - 2.5 log10(f). SDSS is "AB-like": u and z
    # are offset by -0.04 and +0.02 mag from true AB.
    zero_points = {b: 22.5 for b in bands}
    magnitude_system = "AB (SDSS asinh; u_AB = u - 0.04, z_AB = z + 0.02)"
    flux_unit = "nanomaggy (DR8+ frames); DR7 fpC: counts"
    id_column, ra_column, dec_column = "objid", "ra", "dec"
    filename_patterns = (
        re.compile(r"^frame-(?P<band>[ugriz])-(?P<tag>\d{6}-\d-\d{4})\.fits(?:\.bz2|\.gz)?$"),
        re.compile(r"^(?:fpC|drC)-(?P<tag>\d{6})-(?P<band>[ugriz])\d-\d{4}\.fits?(?:\.gz|\.bz2)?$"),
    )
    naming = ("frame-<band>-<run>-<camcol>-<field>.fits[.bz2] or "
              "fpC-<run>-<band><camcol>-<field>.fit")
    default_size = 64
    default_normalization = "khan"

    def label_options(self):
        return gz_label_options()

    def make_labels(self, table, opts, path):
        return gz_make_labels(table, opts, path)
