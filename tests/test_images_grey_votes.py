"""`ingest images` for one-band surveys and vote catalogs, with no survey-specific code.

Greyscale PNG/JPEG folders ingest without `--bands` (the band is named from the files),
labels come from a class column or from vote counts with a vote-fraction cut, and a folder
with no labels (or no catalog) becomes an unlabelled target store. The slow test does the
same on the real JWST CEERS stamps (../shared/data/jwst_ceers).
"""
from __future__ import annotations

import csv
import time

import numpy as np
import pytest
from conftest import error_lines, run_cli, shared_data

from astrotransfer.errors import UserError
from astrotransfer.ingestion import run_ingest
from astrotransfer.registry import get_registry
from astrotransfer.store import CutoutStore

# id, n_a, n_b, n_x (artifact), label: fractions over a+b / a+b+x
VOTES = [("o0", 9, 1, 0, "a"), ("o1", 1, 9, 0, "b"), ("o2", 6, 4, 0, "a"),
         ("o3", 5, 5, 0, "unclear"), ("o4", 8, 0, 8, "unclear"), ("o5", 0, 0, 7, "unclear"),
         ("o6", 2, 8, 1, "b"), ("o7", 10, 0, 0, "a")]


def _grey_folder(folder, fmt="png", n=8, mode="L", size=32, catalog=True):
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size] - size / 2
    for i in range(n):
        img = np.exp(-(xx**2 + (yy * (1 + i % 2)) ** 2) / 30.0) * 200 + i
        if mode == "I;16":
            Image.fromarray((img * 100).astype(np.uint16)).save(folder / f"o{i}.{fmt}")
        else:
            Image.fromarray(img.astype(np.uint8), mode="L").save(folder / f"o{i}.{fmt}")
    if catalog:
        with open(folder / "votes.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "n_a", "n_b", "n_x", "label"])
            w.writerows(VOTES[:n])
    return folder


def _ingest(tmp_path, name="s.zarr", **opts):
    source = get_registry().get("survey", "images").open(size=16, **opts)
    run_ingest(source, tmp_path / name, split_fractions=(0.5, 0.25, 0.25))
    return CutoutStore.open(tmp_path / name)


@pytest.mark.parametrize("fmt,mode", [("png", "L"), ("jpg", "L"), ("png", "I;16")])
def test_grey_files_ingest_as_one_named_band(tmp_path, fmt, mode):
    folder = _grey_folder(tmp_path / "imgs", fmt, mode=mode)
    store = _ingest(tmp_path, images=folder, catalog=folder / "votes.csv", id_column="id")
    assert store.bands == ["grey"] and store.image_shape == (1, 16, 16)
    assert store.attrs["band_names_from"] == "the files' channel count"
    assert store.n == 8 and store.class_names == [] and (store.column("label") == -1).all()
    named = _ingest(tmp_path, "f200w.zarr", images=folder, catalog=folder / "votes.csv",
                    id_column="id", bands="F200W")
    assert named.bands == ["F200W"] and named.attrs["band_names_from"] == "--bands"


def test_bands_that_disagree_with_the_files_are_one_line_errors(tmp_path):
    folder = _grey_folder(tmp_path / "imgs")
    proc = run_cli("ingest", "images", "--images", folder, "--catalog", folder / "votes.csv",
                   "--id-column", "id", "--bands", "r,g,b", "--out", tmp_path / "x.zarr")
    lines = error_lines(proc.stderr)
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert "--bands r,g,b names 3 band(s) but the images have 1 channel(s)" in lines[0]
    assert not (tmp_path / "x.zarr").exists()

    from astropy.io import fits
    odd = tmp_path / "two"
    odd.mkdir()
    for i in range(3):
        fits.PrimaryHDU(np.random.default_rng(i).random((2, 16, 16)).astype("f4")).writeto(
            odd / f"o{i}.fits")
    with pytest.raises(UserError, match="have 2 channels .*name them with --bands"):
        get_registry().get("survey", "images").open(images=odd)


def test_votes_to_labels_with_a_string_label_column(tmp_path):
    folder = _grey_folder(tmp_path / "imgs")
    store = _ingest(tmp_path, images=folder, catalog=folder / "votes.csv", id_column="id",
                    label_column="label", label_map="a=elliptical,b=spiral", drop_unmapped=True)
    assert store.class_names == ["elliptical", "spiral"]
    ids = [str(i) for i in store.column("object_id")]
    assert sorted(ids) == ["o0", "o1", "o2", "o6", "o7"]
    want = {"o0": 0, "o1": 1, "o2": 0, "o6": 1, "o7": 0}
    assert all(want[i] == y for i, y in zip(ids, store.column("label")))


def test_label_from_counts_and_min_fraction(tmp_path):
    folder = _grey_folder(tmp_path / "imgs")
    kw = dict(images=folder, catalog=folder / "votes.csv", id_column="id",
              label_from_counts="n_a=elliptical,n_b=spiral")
    every = _ingest(tmp_path, "all.zarr", **kw)  # argmax only: ties and no-vote rows drop
    assert sorted(map(str, every.column("object_id"))) == ["o0", "o1", "o2", "o4", "o6", "o7"]
    assert every.attrs["label_selection"]["dropped"] == {"tied votes": 1, "no class votes": 1}

    hp = _ingest(tmp_path, "hp.zarr", min_fraction=0.8, **kw)  # share over n_a + n_b
    ids = list(map(str, hp.column("object_id")))
    assert sorted(ids) == ["o0", "o1", "o4", "o6", "o7"]
    assert hp.class_names == ["elliptical", "spiral"]
    assert dict(zip(ids, hp.column("label").tolist())) == {"o0": 0, "o1": 1, "o4": 0,
                                                            "o6": 1, "o7": 0}
    strict = _ingest(tmp_path, "strict.zarr", min_fraction=0.8,
                     fraction_columns="n_a,n_b,n_x", **kw)  # artifacts count against
    assert sorted(map(str, strict.column("object_id"))) == ["o0", "o1", "o7"]
    sel = strict.attrs["label_selection"]
    assert sel["n_kept"] == 3 and sel["dropped"]["below --min-fraction 0.8"] == 3
    assert sel["fraction_columns"] == ["n_a", "n_b", "n_x"]


@pytest.mark.parametrize("opts,match", [
    (dict(label_from_counts="n_a=elliptical,n_zz=spiral"), "no column 'n_zz'.*--label-from-counts"),
    (dict(label_from_counts="n_a=e,n_b=s", fraction_columns="n_a,nope"), "no column 'nope'"),
    (dict(label_from_counts="n_a=e,n_b=s", min_fraction=1.5), "--min-fraction must be in"),
    (dict(min_fraction=0.8), "need --label-from-counts"),
    (dict(label_from_counts="label=e,n_b=s"), "'label' .* is not numeric"),
    (dict(label_from_counts="n_a=e,n_b=s", label_column="label"), "drop --label-column"),
    (dict(label_from_counts="n_a"), "COLUMN=CLASS"),
])
def test_vote_options_refuse_bad_input_in_one_line(tmp_path, opts, match):
    folder = _grey_folder(tmp_path / "imgs")
    with pytest.raises(UserError, match=match) as info:
        get_registry().get("survey", "images").open(images=folder, catalog=folder / "votes.csv",
                                                     id_column="id", **opts)
    assert "\n" not in str(info.value)


def test_a_folder_without_catalog_is_an_unlabelled_pool(tmp_path):
    folder = _grey_folder(tmp_path / "pool", "jpg", n=6, catalog=False)
    store = _ingest(tmp_path, images=folder)
    assert store.n == 6 and store.class_names == [] and (store.column("label") == -1).all()
    assert store.bands == ["grey"]
    with pytest.raises(UserError, match="pass --catalog"):
        get_registry().get("survey", "images").open(images=folder, label_column="label")


@pytest.mark.slow
def test_real_ceers_subset_with_a_vote_cut(tmp_path):
    """The first 200 CEERS catalog rows, high-probability cut at 0.8 of smooth+featured."""
    ceers = shared_data("jwst_ceers")
    rows = list(csv.DictReader(open(ceers / "labels.csv")))[:200]
    cat = tmp_path / "ceers200.csv"
    with open(cat, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    t0 = time.perf_counter()
    proc = run_cli("ingest", "images", "--images", ceers / "images", "--catalog", cat,
                   "--id-column", "id", "--label-from-counts", "n_smooth=elliptical,n_featured=spiral",
                   "--min-fraction", "0.8", "--size", "64", "--survey-name", "jwst_ceers",
                   "--out", tmp_path / "ceers.zarr", check=True)
    seconds = time.perf_counter() - t0
    store = CutoutStore.open(tmp_path / "ceers.zarr")
    expect = {"elliptical": 0, "spiral": 0}
    for r in rows:
        s, f = int(r["n_smooth"]), int(r["n_featured"])
        if s != f and max(s, f) / (s + f) >= 0.8:
            expect["elliptical" if s > f else "spiral"] += 1
    counts = np.bincount(store.column("label"), minlength=2)
    assert store.bands == ["grey"] and store.class_names == ["elliptical", "spiral"]
    assert {"elliptical": counts[0], "spiral": counts[1]} == expect, proc.stderr
    assert store.n == sum(expect.values()) and store.attrs["survey"] == "jwst_ceers"
    sel = store.attrs["label_selection"]
    assert sel["n_rows"] == 200 and sel["n_kept"] == store.n
    assert "bands grey; classes elliptical" in proc.stdout + proc.stderr
    assert seconds < 120
