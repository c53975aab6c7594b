"""FITS surveys on synthetic frames: alignment, bad inputs, band detection, normalization, matching.

Frames are written with astropy in tmp_path: Gaussian sources at known RA/Dec, each band with
its own WCS (one rotated by 90 degrees, one mirrored, some at other pixel scales), so a
cutout whose bands agree with the catalog position to half a pixel proves the alignment.
"""
from __future__ import annotations

import bz2
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from astrotransfer.errors import SkipObject, UserError
from astrotransfer.survey import FLAG_BAND_MISSING, FLAG_NAN_FILLED, FLAG_PADDED
from astrotransfer.surveys.catalogs import crossmatch, load_positions, read_table
from astrotransfer.surveys.des import DESSurvey
from astrotransfer.surveys.hst_phangs import HSTPhangsSurvey
from astrotransfer.surveys.lsst import LSSTSurvey
from astrotransfer.surveys.normalize import normalize
from astrotransfer.surveys.sdss import SDSSSurvey

RNG = np.random.default_rng(7)
NPIX = 400  # frame side, in frame pixels
SIGMA_PX = 2.5  # source Gaussian sigma, in survey pixels
# Per band: (rotation deg, mirrored, pixel scale relative to the survey's)
VARIANTS = [(0.0, False, 1.0), (90.0, False, 1.0), (0.0, True, 1.0), (30.0, False, 1.5),
            (-45.0, False, 0.8)]


def make_wcs(ra0, dec0, scale_arcsec, rot=0.0, flip=False, npix=NPIX) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [(npix + 1) / 2, (npix + 1) / 2]
    s, th = scale_arcsec / 3600.0, math.radians(rot)
    cd = np.array([[-s * math.cos(th), s * math.sin(th)], [s * math.sin(th), s * math.cos(th)]])
    if flip:
        cd[:, 0] *= -1
    w.wcs.cd = cd
    return w


def render(wcs, sources, sigma_arcsec, scale_arcsec, npix=NPIX) -> np.ndarray:
    yy, xx = np.mgrid[0:npix, 0:npix]
    img = RNG.normal(0.0, 0.01, (npix, npix))
    sp = sigma_arcsec / scale_arcsec
    for ra, dec in sources:
        x, y = wcs.world_to_pixel_values(ra, dec)
        img += 10.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sp**2))
    return img.astype(np.float32)


def write_frame(path: Path, data, wcs, kind="primary", extra=None) -> Path:
    hdr = wcs.to_header() if wcs is not None else fits.Header()
    for k, v in (extra or {}).items():
        hdr[k] = v
    if kind == "fz":
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, hdr, name="SCI")])
    elif kind == "lsst":
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(data, hdr, name="IMAGE"),
                             fits.ImageHDU(np.zeros(data.shape, np.int32), name="MASK"),
                             fits.ImageHDU(np.ones_like(data), name="VARIANCE")])
    else:
        hdul = fits.HDUList([fits.PrimaryHDU(data, hdr)])
    if path.name.endswith(".bz2"):
        tmp = path.with_name(path.name[:-4])
        hdul.writeto(tmp, overwrite=True)
        path.write_bytes(bz2.compress(tmp.read_bytes()))
        tmp.unlink()
    else:
        hdul.writeto(path, overwrite=True)
    return path


def sky(ra0, dec0, dx_px, dy_px, scale):
    """Position offset east/north by a number of survey pixels."""
    return (ra0 + dx_px * scale / 3600.0 / math.cos(math.radians(dec0)),
            dec0 + dy_px * scale / 3600.0)


def centroid(img):
    w = np.clip(img, 0, None)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]]
    return (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()


# ---- alignment on every survey --------------------------------------------------------------
SURVEY_CASES = {
    # survey, frame name per band, writer kind, (ra0, dec0), size
    "sdss": (SDSSSurvey(), lambda b: f"frame-{b}-000756-1-0206.fits.bz2", "primary",
             (150.0, 2.0), 32),
    "des": (DESSurvey(), lambda b: f"DES0000+0001_r2577p01_{b}.fits.fz", "fz", (0.005, 0.1), 48),
    "hst-phangs": (HSTPhangsSurvey(),
                   lambda b: f"hlsp_legus_hst_wfc3_ngc1566_{b.lower()}_v1_drc.fits",
                   "primary", (65.0, -54.9), 50),
    "lsst": (LSSTSurvey(), lambda b: f"deepCoadd_calexp_4431_17_{b}_DC2.fits", "lsst",
             (56.0, -30.0), 32),
}
OFFSETS = [(0, 0), (80, 50), (-90, -60)]


def build(tmp_path, key, bands):
    survey, namer, kind, (ra0, dec0), size = SURVEY_CASES[key]
    p = survey.pixel_scale
    objs = [sky(ra0, dec0, dx, dy, p) for dx, dy in OFFSETS]
    frames = tmp_path / "frames"
    frames.mkdir()
    for k, band in enumerate(bands):
        rot, flip, rel = VARIANTS[k % len(VARIANTS)]
        w = make_wcs(ra0, dec0, p * rel, rot, flip)
        write_frame(frames / namer(band), render(w, objs, SIGMA_PX * p, p * rel), w, kind)
    return survey, frames, objs, size


def write_catalog(path, survey, objs, ids=None, extra=None):
    t = Table({survey.id_column: ids or [f"obj{i}" for i in range(len(objs))],
               survey.ra_column: [o[0] for o in objs], survey.dec_column: [o[1] for o in objs]})
    for k, v in (extra or {}).items():
        t[k] = v
    t.write(path, overwrite=True)
    return path


@pytest.mark.parametrize("key", list(SURVEY_CASES))
def test_bands_align_on_the_sky(tmp_path, key):
    survey = SURVEY_CASES[key][0]
    bands = survey.bands[:5]
    survey, frames, objs, size = build(tmp_path, key, bands)
    if key == "hst-phangs":  # native header-less .tab: col1 id, col4/col5 RA/Dec, col34 class
        cat = tmp_path / "clusters.tab"
        rows = [[i + 1, 0, 0, ra, dec] + [99.0] * 28 + [i + 1] for i, (ra, dec) in enumerate(objs)]
        cat.write_text("\n".join(" ".join(f"{v}" for v in r) for r in rows) + "\n")
    else:
        cat = write_catalog(tmp_path / "cat.fits", survey, objs)
    src = survey.open(frames=str(frames), catalog=cat, size=size, bands=",".join(bands),
                      normalization="none")
    assert src.bands == tuple(bands) and src.image_size == size
    cands = src.candidates()
    assert len(cands) == 3
    c0 = (size - 1) / 2
    for cand in cands:
        img, flags = src.load(cand)
        assert img.shape == (len(bands), size, size) and img.dtype == np.float32
        assert flags == 0
        for b, band_img in zip(bands, img):
            cx, cy = centroid(band_img)
            assert abs(cx - c0) < 0.5 and abs(cy - c0) < 0.5, (key, cand.object_id, b, cx, cy)
    if key == "hst-phangs":
        assert [c.label for c in cands] == [0, 1, 2]


def test_flipped_band_really_is_mirrored_back(tmp_path):
    """An asymmetric pair of sources keeps its east/west order in every band."""
    survey = SDSSSurvey()
    ra0, dec0, p = 150.0, 2.0, survey.pixel_scale
    east = sky(ra0, dec0, 6, 0, p)  # 6 px east of the target: must land left of centre
    frames = tmp_path / "f"
    frames.mkdir()
    for k, band in enumerate("gri"):
        rot, flip, rel = VARIANTS[k]
        w = make_wcs(ra0, dec0, p * rel, rot, flip)
        write_frame(frames / f"frame-{band}-000001-1-0001.fits",
                    render(w, [east], 2.5 * p, p * rel), w)
    cat = write_catalog(tmp_path / "c.csv", survey, [(ra0, dec0)])
    src = survey.open(frames=str(frames), catalog=cat, size=32, normalization="none")
    img, _ = src.load(src.candidates()[0])
    for band_img in img:
        cx, cy = centroid(band_img)
        assert abs(cx - (15.5 - 6)) < 0.5 and abs(cy - 15.5) < 0.5


# ---- bad inputs, per object and fatal -------------------------------------------------------
@pytest.fixture
def bad_fields(tmp_path):
    """Four SDSS fields (A good, B truncated g, C damaged later, D i without WCS) + objects."""
    survey, p = SDSSSurvey(), SDSSSurvey.pixel_scale
    frames = tmp_path / "frames"
    frames.mkdir()
    fields = {"A": 150.0, "B": 150.2, "C": 150.4, "D": 150.6}
    objs = {}
    for name, ra0 in fields.items():
        targets = [sky(ra0, 2.0, 0, 0, p)]
        if name == "A":
            targets += [sky(ra0, 2.0, 80, 50, p), sky(ra0, 2.0, 190, 0, p)]
        objs[name] = targets
        for band in "gri":
            w = make_wcs(ra0, 2.0, p)
            data = render(w, targets, 2.5 * p, p)
            if name == "A" and band == "r":
                x, y = (int(round(float(v))) for v in w.world_to_pixel_values(*targets[1]))
                data[y - 20:y + 20, x - 20:x + 20] = np.nan  # NaN block over object a_nan
                data[199:203, 207:211] = np.nan  # small patch inside a_ok's stamp, off its core
            path = frames / f"frame-{band}-00010{ord(name) - 64}-1-0001.fits"
            if name == "D" and band == "i":
                write_frame(path, data, None)  # no WCS keywords
            else:
                write_frame(path, data, w)
            if name == "B" and band == "g":
                raw = path.read_bytes()
                path.write_bytes(raw[: len(raw) // 2])
    ids = ["a_ok", "a_nan", "a_edge", "b1", "c1", "d1", "off", "bad_ra", "a_ok"]
    pos = [objs["A"][0], objs["A"][1], objs["A"][2], objs["B"][0], objs["C"][0], objs["D"][0],
           (10.0, -30.0), (400.0, 2.0), objs["A"][0]]
    cat = write_catalog(tmp_path / "cat.csv", survey, pos, ids=ids)
    return survey, frames, cat


def _outcomes(src):
    out = {}
    for cand in src.candidates():
        try:
            out.setdefault(cand.object_id, []).append(src.load(cand))
        except SkipObject as exc:
            out.setdefault(cand.object_id, []).append(str(exc))
    return out


def test_bad_inputs_skip_per_object_with_reasons(bad_fields):
    survey, frames, cat = bad_fields
    src = survey.open(frames=str(frames), catalog=cat, size=32)
    assert any("truncated" in p for p in src.extra_attrs["frame_problems"])
    # damage field C's r frame after the scan: found lazily, at load time
    c_r = frames / "frame-r-000103-1-0001.fits"
    c_r.write_bytes(c_r.read_bytes()[:5000])
    res = _outcomes(src)
    img, flags = res["a_ok"][0]
    assert img.shape == (3, 32, 32) and np.isfinite(img).all()
    assert flags == FLAG_NAN_FILLED
    assert res["a_ok"][1].startswith("duplicate id")
    assert res["a_nan"][0].startswith("mostly blank: band r")
    assert res["a_edge"][0].startswith("too close to edge")
    assert res["b1"][0].startswith("frame frame-g-000102-1-0001.fits unreadable: band g, truncated")
    assert res["c1"][0].startswith("frame frame-r-000103-1-0001.fits unreadable: band r")
    assert res["d1"][0].startswith("no coverage: band(s) i") and "no celestial WCS" in res["d1"][0]
    assert res["off"][0].startswith("off frame")
    assert res["bad_ra"][0].startswith("RA/Dec out of range")


def test_pad_edges_pads_and_flags(bad_fields):
    survey, frames, cat = bad_fields
    src = survey.open(frames=str(frames), catalog=cat, size=32, pad_edges=True)
    edge = next(c for c in src.candidates() if c.object_id == "a_edge")
    img, flags = src.load(edge)
    assert flags & FLAG_PADDED and img.shape == (3, 32, 32) and np.isfinite(img).all()


def test_fatal_inputs_are_user_errors(tmp_path, bad_fields):
    survey, frames, cat = bad_fields
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("frame-g-000102-1-0001.fits", "frame-i-000104-1-0001.fits"):
        (bad / name).write_bytes((frames / name).read_bytes())
    (bad / "frame-r-000001-1-0001.fits").write_text("not a FITS file")
    with pytest.raises(UserError, match="none of the 3 frames"):
        survey.open(frames=str(bad), catalog=cat, bands="g,r,i")
    with pytest.raises(UserError, match="matches no file"):
        survey.open(frames=str(tmp_path / "nothing*.fits"), catalog=cat)
    with pytest.raises(UserError, match="--ra-column"):
        survey.open(frames=str(frames), catalog=cat, ra_column="RA_nope")
    with pytest.raises(UserError, match="no usable frame for band"):
        survey.open(frames=str(frames), catalog=cat, bands="u,g")
    with pytest.raises(UserError, match="unknown band"):
        survey.open(frames=str(frames), catalog=cat, bands="g,q")
    odd = tmp_path / "cat.xyz"
    odd.write_text("x")
    with pytest.raises(UserError, match="unknown format"):
        survey.open(frames=str(frames), catalog=odd)
    far = write_catalog(tmp_path / "far.csv", survey, [(400.0, 0.0), (10.0, 95.0)])
    with pytest.raises(UserError, match="no row has a usable"):
        survey.open(frames=str(frames), catalog=far)


def test_sexagesimal_catalog_positions(tmp_path):
    t = Table({"objid": ["a", "b", "c"], "ra": ["10:00:00.0", "150.5", "junk"],
               "dec": ["+02:00:00", "-1.25", "0"]})
    t.write(tmp_path / "c.csv")
    pos = load_positions(tmp_path / "c.csv", "objid", "ra", "dec")
    assert pos.ra[0] == pytest.approx(150.0) and pos.dec[0] == pytest.approx(2.0)
    assert pos.ra[1] == pytest.approx(150.5) and pos.dec[1] == pytest.approx(-1.25)
    assert pos.reason[:2] == [None, None] and "unreadable" in pos.reason[2]


# ---- HST: filters without coverage ----------------------------------------------------------
def test_hst_missing_filter_is_zero_filled_and_two_missing_drop(tmp_path):
    survey, p = HSTPhangsSurvey(), HSTPhangsSurvey.pixel_scale
    ra0, dec0 = 65.0, -54.9
    objs = [sky(ra0, dec0, dx, dy, p) for dx, dy in OFFSETS]
    frames = tmp_path / "frames"
    frames.mkdir()
    for band in survey.bands:
        w = make_wcs(ra0, dec0, p)
        data = render(w, objs, 2.5 * p, p)
        x1, y1 = (int(round(float(v))) for v in w.world_to_pixel_values(*objs[1]))
        x2, y2 = (int(round(float(v))) for v in w.world_to_pixel_values(*objs[2]))
        if band == "F275W":  # drizzled "no exposure" is exact zeros
            data[y1 - 40:y1 + 40, x1 - 40:x1 + 40] = 0.0
            data[y2 - 40:y2 + 40, x2 - 40:x2 + 40] = 0.0
        if band == "F336W":
            data[y2 - 40:y2 + 40, x2 - 40:x2 + 40] = 0.0
        write_frame(frames / f"hlsp_legus_hst_uvis_ngc1566_{band.lower()}_v1_drc.fits", data, w)
    t = Table({"col1": [1, 2, 3, 4], "col4": [o[0] for o in objs] + [objs[0][0]],
               "col5": [o[1] for o in objs] + [objs[0][1]], "col34": [1, 4, 2, 0]})
    cat = tmp_path / "clusters.csv"
    t.write(cat)
    src = survey.open(frames=str(frames), catalog=cat)
    res = _outcomes(src)
    img, flags = res["1"][0]
    assert img.shape == (5, 50, 50) and flags == 0
    img, flags = res["2"][0]
    assert flags == FLAG_BAND_MISSING
    assert np.all(img[0] == 0) and img[1:].max() == pytest.approx(1.0)  # minmax default
    assert res["3"][0].startswith("no coverage: band(s) F275W, F336W")
    assert res["4"][0].startswith("unclassified: visual class 0")
    assert [c.label for c in src.candidates()] == [0, 3, 1, -1]
    src = survey.open(frames=str(frames), catalog=cat, include_unclassified=True)
    assert isinstance(_outcomes(src)["4"][0], tuple)


# ---- band detection --------------------------------------------------------------------------
@pytest.mark.parametrize("survey, name, band", [
    (SDSSSurvey(), "frame-g-000756-1-0206.fits.bz2", "g"),
    (SDSSSurvey(), "frame-z-008162-6-0080.fits", "z"),
    (SDSSSurvey(), "fpC-000756-r1-0206.fit.gz", "r"),
    (DESSurvey(), "DES0000+0209_r2577p01_Y.fits.fz", "Y"),
    (DESSurvey(), "DES2359-5040_r4907p01_i.fits.fz", "i"),
    (HSTPhangsSurvey(), "hlsp_legus_hst_wfc3_ngc1566_f275w_v1_drc.fits", "F275W"),
    (HSTPhangsSurvey(), "hlsp_legus_hst_acs_ngc628-c_f435w_v1_drc.fits", "F438W"),
    (HSTPhangsSurvey(), "hlsp_phangs-hst_hst_acs-wfc_ngc1566_f814w_v1_exp-drc-sci.fits", "F814W"),
    (LSSTSurvey(), "deepCoadd_calexp_4431_17_y_DC2.fits", "y"),
    (LSSTSurvey(), "deep_coadd-r-tract5063-patch14.fits", "r"),
    (SDSSSurvey(), "mystery.fits", None),
    (DESSurvey(), "DES0000+0209_r2577p01_det.fits.fz", None),
])
def test_band_from_file_name(survey, name, band):
    assert survey.band_from_filename(Path(name))[0] == band


def test_band_from_header_and_disagreement(tmp_path):
    survey, p = DESSurvey(), DESSurvey.pixel_scale
    frames = tmp_path / "frames"
    frames.mkdir()
    w = make_wcs(10.0, -40.0, p)
    data = render(w, [(10.0, -40.0)], 2.5 * p, p)
    write_frame(frames / "tile_a.fits.fz", data, w, "fz",
                {"FILTER": "g DECam SDSS c0001 4720.0 1520.0"})
    write_frame(frames / "tile_b.fits", data, w, "primary", {"BAND": "r"})
    write_frame(frames / "DES0040-4000_r1p01_i.fits", data, w, "primary", {"FILTER": "z"})
    write_frame(frames / "LSST_like.fits", data, w, "lsst", {"BAND": "r_03"})
    cat = write_catalog(tmp_path / "c.csv", survey, [(10.0, -40.0)])
    src = survey.open(frames=str(frames), catalog=cat, bands="g,r", size=32)
    assert {f.name: f.band for f in src.frame_set.frames if f.error is None} == \
        {"tile_a.fits.fz": "g", "tile_b.fits": "r", "LSST_like.fits": "r"}
    assert any("file name says band i but the FILTER/BAND header says z" in x
               for x in src.extra_attrs["frame_problems"])
    img, flags = src.load(src.candidates()[0])
    assert img.shape == (2, 32, 32) and flags == 0


def test_lsst_reads_image_extension_and_primary(tmp_path):
    survey, p = LSSTSurvey(), LSSTSurvey.pixel_scale
    frames = tmp_path / "frames"
    frames.mkdir()
    w = make_wcs(56.0, -30.0, p)
    data = render(w, [(56.0, -30.0)], 2.5 * p, p)
    write_frame(frames / "deepCoadd_calexp_4431_17_g_DC2.fits", data, w, "lsst")
    write_frame(frames / "coadd_r.fits", data, w, "primary")
    src = survey.open(frames=str(frames), catalog=write_catalog(tmp_path / "c.csv", survey,
                      [(56.0, -30.0)]), bands="g,r", size=32)
    hdus = {f.name: f.hdu for f in src.frame_set.frames}
    assert hdus == {"deepCoadd_calexp_4431_17_g_DC2.fits": 1, "coadd_r.fits": 0}
    assert src.load(src.candidates()[0])[0].shape == (2, 32, 32)


def test_des_prefers_the_catalogs_tile(tmp_path):
    survey, p = DESSurvey(), DESSurvey.pixel_scale
    frames = tmp_path / "frames"
    frames.mkdir()
    target = (20.0, -10.0)
    for tile, dx in (("DES0120-1000", 0), ("DES0121-1000", -30)):
        w = make_wcs(*sky(20.0, -10.0, dx, 0, p), p)
        write_frame(frames / f"{tile}_r1p01_g.fits.fz", render(w, [target], 2.5 * p, p), w, "fz")
    cat = write_catalog(tmp_path / "c.csv", survey, [target], extra={"TILENAME": ["DES0121-1000"]})
    src = survey.open(frames=str(frames), catalog=cat, bands="g", size=32)
    cand = src.candidates()[0]
    assert cand.payload[1] == "DES0121-1000"
    assert src.load(cand)[0].shape == (1, 32, 32)


# ---- normalizations --------------------------------------------------------------------------
def test_normalization_ranges():
    img = RNG.normal(5.0, 2.0, (3, 16, 16)).astype(np.float32)
    img[1] += 100.0
    img[0, 0, 0] = np.nan
    mm = normalize(img, "minmax")
    assert mm.min() == pytest.approx(0.0) and mm.max() == pytest.approx(1.0)
    kh = normalize(img, "khan")
    assert kh.min() >= -1.0 and kh.max() <= 1.0 and np.abs(kh).max() == pytest.approx(1.0)
    assert np.abs(kh.mean(axis=(1, 2))).max() < 1e-5  # each band mean-subtracted
    ah = normalize(img, "asinh")
    assert ah.min() >= 0.0 and ah.max() <= 1.0 and ah.max() > 0.9
    for method in ("minmax", "khan", "asinh"):
        assert np.isfinite(normalize(img, method)).all()
        assert not normalize(np.full((2, 4, 4), 3.0), method).any()  # constant -> zeros
    with pytest.raises(UserError, match="unknown normalization"):
        normalize(img, "zscale")


# ---- cross-match -----------------------------------------------------------------------------
def test_crossmatch_counts_matches_unmatched_and_duplicates(tmp_path):
    ra0, dec0 = 150.0, 2.0
    a = Table({"id": list("abcdef"),
               "ra": [ra0, ra0 + 0.01, ra0 + 0.02, ra0 + 0.03, ra0 + 0.03 + 0.3 / 3600, ra0 + 0.05],
               "dec": [dec0] * 6})
    b_deg = [(ra0 + 0.2 / 3600, dec0), (ra0 + 0.01, dec0 + 0.5 / 3600), (ra0 + 0.02, dec0),
             (ra0 + 0.03 + 0.15 / 3600, dec0), (ra0 + 1.0, dec0)]
    from astropy.coordinates import SkyCoord
    cs = SkyCoord([r for r, _ in b_deg], [d for _, d in b_deg], unit="deg")
    b = Table({"name": ["B0", "B1", "B2", "B3", "B4"],
               "RA": cs.ra.to_string(unit="hourangle", sep=":", precision=4),
               "DEC": cs.dec.to_string(unit="deg", sep=":", precision=3, alwayssign=True)})
    joined, s = crossmatch(a, b, 1.0, "ra", "dec", "RA", "DEC")
    assert (s["matched"], s["unmatched_a"], s["unmatched_b"], s["duplicate_b"]) == (5, 1, 1, 1)
    assert s["rows_sharing_b"] == 2
    assert list(joined["id"]) == ["a", "b", "c", "d", "e"]
    assert list(joined["name"]) == ["B0", "B1", "B2", "B3", "B3"]
    assert list(joined["duplicate_match"]) == [False, False, False, True, True]
    assert joined["separation_arcsec"].max() < 1.0

    # the CLI command, through a bare typer app
    import typer
    from typer.testing import CliRunner
    from astrotransfer.plugins import crossmatch as plugin
    app = typer.Typer()
    plugin.register_commands(app)

    @app.command("noop")
    def _noop():  # a second command keeps typer in multi-command mode
        pass

    a.write(tmp_path / "a.csv")
    b.write(tmp_path / "b.fits")
    res = CliRunner().invoke(app, ["crossmatch", str(tmp_path / "a.csv"), str(tmp_path / "b.fits"),
                                   "--radius", "1arcsec", "--ra-b", "RA", "--dec-b", "DEC",
                                   "--out", str(tmp_path / "m.csv")])
    assert res.exit_code == 0, res.output
    assert "matched" in res.output
    out = read_table(tmp_path / "m.csv")
    assert len(out) == 5 and "separation_arcsec" in out.colnames
    res = CliRunner().invoke(app, ["crossmatch", str(tmp_path / "a.csv"), str(tmp_path / "b.fits"),
                                   "--ra-b", "nope", "--out", str(tmp_path / "m.csv")])
    assert isinstance(res.exception, UserError) and "--ra-b" in str(res.exception)
