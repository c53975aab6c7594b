"""Catalog reading, label rules and cross-matching on the real catalogs in ../shared/data.

The expected numbers are published ones: Khan et al. 2019 (table 1) for the SDSS x DES
high-probability test set, and the LEGUS NGC 1566 cluster catalog used by Wei et al. 2020.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astrotransfer.plugins.crossmatch import run_crossmatch
from astrotransfer.surveys.catalogs import (LEGUS_COLUMNS, crossmatch, galaxy_zoo_labels,
                                            legus_labels, load_positions, read_table)
from conftest import shared_data

pytestmark = pytest.mark.realdata


def hp_path() -> Path:
    return shared_data("catalogs", "des_sdss_hp_crossmatch.csv")


def legus_path() -> Path:
    return shared_data("catalogs", "legus_ngc1566_clusters.tab")


@pytest.fixture(scope="module")
def hp():
    return read_table(hp_path())


def test_sdss_and_des_positions_match_within_one_arcsec(hp):
    joined, s = crossmatch(hp, hp, 1.0, "ra", "dec", "RA_des", "DEC_des")
    assert len(hp) == 1066
    assert (s["matched"], s["unmatched_a"], s["unmatched_b"], s["duplicate_b"]) == (1066, 0, 0, 0)
    # every SDSS galaxy found its own row's DES counterpart
    assert np.all(joined["SDSS_OBJID_a"] == joined["SDSS_OBJID_b"])
    assert joined["separation_arcsec"].max() < 1.0


def test_crossmatch_command_on_one_file_with_two_column_pairs(tmp_path):
    s = run_crossmatch(hp_path(), hp_path(), "1arcsec", tmp_path / "m.parquet", ra_a="ra",
                       dec_a="dec", ra_b="RA_des", dec_b="DEC_des")
    assert s["matched"] == 1066
    out = read_table(tmp_path / "m.parquet")
    assert len(out) == 1066 and "separation_arcsec" in out.colnames


def test_sexagesimal_sdss_positions_parse(hp):
    """RA_sdss/DEC_sdss are sexagesimal strings for the same galaxies as ra/dec in degrees."""
    pos = load_positions(hp_path(), "SDSS_OBJID", "RA_sdss", "DEC_sdss", table=hp)
    assert pos.usable.all()
    dra = (pos.ra - np.asarray(hp["ra"]) + 180) % 360 - 180
    assert np.max(np.abs(dra * np.cos(np.radians(pos.dec)))) * 3600 < 1.0
    assert np.max(np.abs(pos.dec - np.asarray(hp["dec"]))) * 3600 < 1.0


def test_high_probability_labels_reproduce_khan_table_1(hp):
    labels = galaxy_zoo_labels(hp["P_EL_DEBIASED"], hp["P_CS_DEBIASED"])
    spiral, elliptical = labels == 1, labels == 0
    assert (spiral.sum(), elliptical.sum(), (labels == -1).sum()) == (516, 550, 0)
    # 19 stored values are 0.92599999...: only the 6-decimal rounding keeps the cut inclusive
    assert (np.asarray(hp["P_EL_DEBIASED"]) >= 0.926).sum() == 531
    assert np.array_equal(spiral, np.asarray(hp["SPIRAL"]) == 1)  # all 516 spirals agree
    flag_el = np.asarray(hp["ELLIPTICAL"]) == 1
    uncertain = np.asarray(hp["UNCERTAIN"]) == 1
    # The file's ELLIPTICAL flag has 532, not 550: the other 18 HP ellipticals carry Galaxy
    # Zoo's own UNCERTAIN flag (column UNCERTAIN = 1, ELLIPTICAL = 0). Every HP elliptical
    # is flagged exactly one of the two ways, and no spiral is UNCERTAIN. GZ1's flags are
    # not a vote-fraction cut these columns reproduce: the 18 have raw P_EL >= 0.945 and
    # debiased >= 0.926, as high as flagged ellipticals, so the label rule must not use them.
    assert flag_el.sum() == 532 and uncertain.sum() == 18
    assert (elliptical & uncertain).sum() == 18 and (elliptical & flag_el).sum() == 532
    assert np.array_equal(elliptical, flag_el | uncertain) and not (flag_el & uncertain).any()
    assert not (spiral & uncertain).any()
    assert np.all(np.asarray(hp["P_EL"])[uncertain] >= 0.945)


def test_legus_ngc1566_catalog_parses_with_visual_classes():
    t = read_table(legus_path())
    assert len(t) == 2752 and len(t.colnames) >= 34
    classes = np.asarray(t[LEGUS_COLUMNS["class"]])
    counts = {c: int((classes == c).sum()) for c in range(5)}
    assert counts == {0: 301, 1: 477, 2: 404, 3: 692, 4: 878}
    labels = legus_labels(t[LEGUS_COLUMNS["class"]])
    assert np.bincount(labels[labels >= 0]).tolist() == [477, 404, 692, 878]
    assert (labels == -1).sum() == 301
    pos = load_positions(legus_path(), LEGUS_COLUMNS["id"], LEGUS_COLUMNS["ra"],
                         LEGUS_COLUMNS["dec"], table=t)
    assert pos.usable.all()
    # NGC 1566 lies at RA 65.0, Dec -54.9
    assert abs(np.median(pos.ra) - 65.0) < 0.1 and abs(np.median(pos.dec) + 54.94) < 0.1
