"""The `sim` survey: reproducible, the same objects on every instrument, physically sensible,
and frames whose WCS puts every catalog position on its rendered object."""
from __future__ import annotations

import csv
import hashlib
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from astrotransfer.errors import UserError
from astrotransfer.surveys import sim_render
from astrotransfer.surveys.sim import SimSurvey
from astrotransfer.surveys.sim_frames import band_layout, direct_stamp, write_frames
from astrotransfer.surveys.sim_instruments import INSTRUMENTS
from astrotransfer.surveys.sim_render import object_params, render_direct, render_stamp


def _params(pop, seed, n):
    return [object_params(pop, seed, i) for i in range(n)]


def test_same_seed_same_pixels_in_any_order():
    first = [render_stamp("sdss", 5, i, 32)[0] for i in range(6)]
    sim_render._params.cache_clear()  # nothing may depend on what was rendered before
    sim_render.band_psf.cache_clear()
    again = [render_stamp("sdss", 5, i, 32)[0] for i in reversed(range(6))][::-1]
    for a, b in zip(first, again):
        assert a.tobytes() == b.tobytes()
    other = render_stamp("sdss", 6, 0, 32)[0]
    assert not np.array_equal(first[0], other)


def test_bit_identical_in_a_fresh_process():
    """A resumed ingest runs in a new process; its pixels must equal the first run's."""
    code = ("import hashlib; from astrotransfer.surveys.sim_render import render_stamp; "
            "print(hashlib.sha256(b''.join(render_stamp(i, 3, 7, 32)[0].tobytes() "
            "for i in ('des', 'hst'))).hexdigest())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    here = hashlib.sha256(b"".join(render_stamp(i, 3, 7, 32)[0].tobytes()
                                   for i in ("des", "hst"))).hexdigest()
    assert out == here


def test_noise_is_seeded_per_object_and_matches_the_instrument():
    a = render_stamp("sdss", 0, 3, 48, normalize=False)[0]  # a small, faint galaxy
    clean = render_stamp("sdss", 0, 3, 48, noise=False, normalize=False)[0]
    assert np.array_equal(a, render_stamp("sdss", 0, 3, 48, normalize=False)[0])
    noise = a - clean
    # a different object of the same seed gets an independent noise field
    other = (render_stamp("sdss", 0, 2, 48, normalize=False)[0]
             - render_stamp("sdss", 0, 2, 48, noise=False, normalize=False)[0])
    assert abs(np.corrcoef(noise[0].ravel(), other[0].ravel())[0, 1]) < 0.1
    # away from the galaxy, the noise is the instrument's sky + read noise
    inst = INSTRUMENTS["sdss"]
    e, area = inst.electrons_per_nmgy("r"), inst.pixel_scale ** 2
    expected = np.sqrt(inst.sky_electrons("r") + inst.read_noise ** 2) / (e * area)
    sky = clean[1] < 0.05 * expected
    assert sky.sum() > 100
    assert np.std(noise[1][sky]) == pytest.approx(expected, rel=0.1)


def test_same_objects_across_instruments():
    sdss = SimSurvey().open(instrument="sdss", n=40, seed=2).candidates()
    des = SimSurvey().open(instrument="des", n=40, seed=2).candidates()
    assert [c.object_id for c in sdss] == [c.object_id for c in des]
    assert [c.label for c in sdss] == [c.label for c in des]
    assert np.allclose([c.ra for c in sdss], [c.ra for c in des], rtol=0, atol=0)
    assert np.allclose([c.dec for c in sdss], [c.dec for c in des], rtol=0, atol=0)
    assert len({c.object_id for c in sdss}) == 40
    assert sdss[3].object_id == "sim2-000003"
    # objects sit on a sparse grid: no two within 20 arcsec
    ra, dec = np.array([c.ra for c in sdss]), np.array([c.dec for c in sdss])
    d = np.hypot((ra[:, None] - ra[None]) * np.cos(np.radians(dec[0])), dec[:, None] - dec[None])
    assert d[~np.eye(40, dtype=bool)].min() * 3600 > 20
    # star clusters are another population and must never match a galaxy by id
    hst = SimSurvey().open(instrument="hst", n=3, seed=2).candidates()
    assert not {c.object_id for c in hst} & {c.object_id for c in sdss}


@pytest.mark.parametrize("instrument,nbands,nclass", [("sdss", 3, 2), ("des", 4, 2),
                                                      ("lsst", 6, 2), ("hst", 5, 4)])
def test_shapes_bands_and_attributes(instrument, nbands, nclass):
    src = SimSurvey().open(instrument=instrument, n=4, seed=1, size=48)
    assert src.survey == f"sim-{instrument}"
    assert len(src.bands) == nbands and len(src.class_names) == nclass
    assert set(src.psf_fwhm) == set(src.bands)
    assert src.normalization.startswith("asinh:")
    assert src.extra_attrs["instrument"] == instrument and src.extra_attrs["seed"] == 1
    for c in src.candidates():
        img = src.load(c)
        assert img.shape == (nbands, 48, 48) and img.dtype == np.float32
        assert np.isfinite(img).all()
        assert 0 <= c.label < nclass


def test_instrument_facts():
    assert INSTRUMENTS["sdss"].bands == ("g", "r", "i")
    assert INSTRUMENTS["hst"].bands == ("F275W", "F336W", "F438W", "F555W", "F814W")
    assert INSTRUMENTS["sdss"].pixel_scale == 0.396 and INSTRUMENTS["lsst"].pixel_scale == 0.2
    # DES about 1.5 mag deeper than SDSS, LSST deeper still
    assert 1.2 < INSTRUMENTS["des"].depth["r"] - INSTRUMENTS["sdss"].depth["r"] < 1.8
    assert INSTRUMENTS["lsst"].depth["r"] > INSTRUMENTS["des"].depth["r"]


def test_class_balance_and_hard_fraction():
    gal = _params("galaxy", 0, 2000)
    spiral = np.mean([p["label"] for p in gal])
    assert 0.4 < spiral < 0.6
    mags = np.array([p["mag_r"] for p in gal])
    assert 0.1 < np.mean(mags > 18.5) < 0.5  # a real share of faint, hard galaxies
    cl = np.bincount([p["label"] for p in _params("cluster", 0, 2000)], minlength=4) / 2000
    assert cl.min() > 0.12 and cl.max() < 0.4


def test_invalid_options_are_user_errors():
    with pytest.raises(UserError, match="instrument"):
        SimSurvey().open(instrument="euclid")
    with pytest.raises(UserError, match="--n"):
        SimSurvey().open(n=0)
    with pytest.raises(UserError, match="normalization"):
        SimSurvey().open(normalization="zscale")


def test_fast_multiband_path_matches_galsim_drawimage():
    for i in range(4):
        img, _, _ = render_stamp("lsst", 0, i, 40, noise=False, normalize=False)
        for c, band in enumerate(INSTRUMENTS["lsst"].bands):
            ref = render_direct("lsst", 0, i, band, 40) / 0.2 ** 2
            # equal up to folding of the far wings of big galaxies, which the fast path caps
            assert np.abs(img[c] - ref).max() <= 2e-3 * np.abs(ref).max() + 1e-6


def _aperture_snr(img, radius_px):
    h = img.shape[0]
    yy, xx = np.indices(img.shape)
    r = np.hypot(xx - (h - 1) / 2, yy - (h - 1) / 2)
    inside = r <= radius_px
    sigma = np.std(img[r > 0.45 * h])  # stamp corners: mostly sky
    return img[inside].sum() / (sigma * np.sqrt(inside.sum()))


def test_deeper_instrument_has_higher_snr():
    bright = [i for i, p in enumerate(_params("galaxy", 0, 200))
              if 16.5 < p["mag_r"] < 18.0 and p["re"] < 3.0 and "star" not in p][:6]
    assert len(bright) >= 4
    ratios = []
    for i in bright:
        s = render_stamp("sdss", 0, i, 64, normalize=False)[0][1]  # r band
        d = render_stamp("des", 0, i, 64, normalize=False)[0][1]
        ratios.append(_aperture_snr(d, 4.0 / 0.263) / _aperture_snr(s, 4.0 / 0.396))
    assert np.median(ratios) > 1.5, ratios


def _ci(img):
    """Flux within 1 px over flux within 3 px of the centre (LEGUS concentration)."""
    h = img.shape[0]
    yy, xx = np.indices(img.shape)
    r = np.hypot(xx - (h - 1) / 2, yy - (h - 1) / 2)
    img = img - np.median(img[r > 0.4 * h])  # the host disk behind everything
    return img[r <= 1.5].sum() / img[r <= 3.5].sum()


def test_stars_are_more_concentrated_than_symmetric_clusters():
    params = _params("cluster", 0, 300)
    stars = [i for i, p in enumerate(params) if p.get("kind") == "star" and p["mag"] < 22.5]
    clusters = [i for i, p in enumerate(params) if p["label"] == 0 and p["mag"] < 22.5]
    band = INSTRUMENTS["hst"].bands.index("F555W")
    ci_star = [_ci(render_stamp("hst", 0, i, 32, normalize=False)[0][band]) for i in stars[:8]]
    ci_cl = [_ci(render_stamp("hst", 0, i, 32, normalize=False)[0][band]) for i in clusters[:8]]
    assert np.median(ci_star) > np.median(ci_cl) + 0.05, (ci_star, ci_cl)


def test_associations_are_young_and_blue():
    params = _params("cluster", 0, 400)
    col = {k: [] for k in range(4)}
    for p in params:
        if "colours" in p:
            col[p["label"]].append(p["colours"][1] - p["colours"][4])  # F336W - F814W
    assert np.median(col[2]) < np.median(col[0]) - 0.3


def _centroid(data, x, y, r):
    for _ in range(4):  # recentre, so a start on the wrong spot does not bias the answer
        ix, iy = int(round(x)), int(round(y))
        yy, xx = np.mgrid[iy - r:iy + r + 1, ix - r:ix + r + 1]
        w = np.clip(data[iy - r:iy + r + 1, ix - r:ix + r + 1], 0, None)
        w = w * (np.hypot(xx - x, yy - y) <= r)
        x, y = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    return x, y


def _moments(img, x, y, r):
    yy, xx = np.indices(img.shape)
    w = np.clip(img, 0, None) * (np.hypot(xx - x, yy - y) <= r)
    dx, dy = xx - x, yy - y
    m = np.array([[(w * dx * dx).sum(), (w * dx * dy).sum()],
                  [(w * dx * dy).sum(), (w * dy * dy).sum()]])
    return m / w.sum()


def _apsum(img, x, y, r):
    yy, xx = np.indices(img.shape)
    return img[np.hypot(xx - x, yy - y) <= r].sum()


def test_frames_wcs_round_trip_and_geometry(tmp_path):
    info = write_frames("sdss", 0, 16, tmp_path)
    rows = list(csv.DictReader(open(info["catalog"])))
    assert [r["id"] for r in rows] == [f"sim0-{i:06d}" for i in range(16)]
    cands = SimSurvey().open(instrument="sdss", n=16, seed=0).candidates()
    assert np.allclose([float(r["ra"]) for r in rows], [c.ra for c in cands], atol=1e-9)
    params = _params("galaxy", 0, 16)
    # symmetric galaxies, whose light-weighted centre is their true centre
    clean = [i for i, p in enumerate(params)
             if p["label"] == 0 and p["mag_r"] < 19 and "star" not in p]
    assert len(clean) >= 3
    layout = band_layout("sdss")
    dets, scales = [], []
    for band, path in info["frames"].items():
        with fits.open(path) as hdul:
            data, header = hdul[0].data.astype(float), hdul[0].header
        wcs = WCS(header)
        cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
        dets.append(np.linalg.det(cd))
        scales.append(np.sqrt(abs(dets[-1])) * 3600)
        if layout[band]["rotation"]:
            assert abs(cd[0, 0]) < 1e-12 and abs(cd[1, 1]) < 1e-12  # grid turned by 90 deg
        r = int(np.ceil(2.5 / layout[band]["scale"]))
        for i in clean:
            x, y = wcs.wcs_world2pix(float(rows[i]["ra"]), float(rows[i]["dec"]), 0)
            cx, cy = _centroid(data, float(x), float(y), r)
            assert np.hypot(cx - x, cy - y) < 0.5, (band, i, cx - x, cy - y)
    assert sum(d > 0 for d in dets) == 1  # exactly one mirrored band
    assert max(scales) / min(scales) == pytest.approx(1.5, rel=1e-6)


def test_frames_match_direct_stamps_in_orientation(tmp_path):
    """An elongated galaxy's shape, mapped from each frame's pixels to the sky through its WCS,
    equals the shape of the north-up direct stamp: rotated or mirrored drawing is correct."""
    params = _params("galaxy", 0, 25)
    pick = [i for i, p in enumerate(params) if p["label"] == 0 and p["q"] < 0.75
            and "star" not in p and p["mag_r"] < 18.5][0]
    info = write_frames("sdss", 0, pick + 1, tmp_path, noise=False)
    rows = list(csv.DictReader(open(info["catalog"])))
    for band, path in info["frames"].items():
        with fits.open(path) as hdul:
            data, header = hdul[0].data.astype(float), hdul[0].header
        wcs = WCS(header)
        scale = band_layout("sdss")[band]["scale"]
        x, y = wcs.wcs_world2pix(float(rows[pick]["ra"]), float(rows[pick]["dec"]), 0)
        r = 4.0 / scale
        cd = np.array([[header["CD1_1"], header["CD1_2"]], [header["CD2_1"], header["CD2_2"]]])
        jac = 3600 * np.array([[-cd[0, 0], -cd[0, 1]], [cd[1, 0], cd[1, 1]]])
        m_frame = jac @ _moments(data, float(x), float(y), r) @ jac.T
        stamp = direct_stamp("sdss", 0, pick, band, 2 * int(r) + 9)
        c = (stamp.shape[0] - 1) / 2
        m_direct = _moments(stamp, c, c, r) * scale ** 2
        assert np.allclose(m_frame, m_direct, atol=0.03 * np.trace(m_direct)), (band, m_frame,
                                                                                 m_direct)
        assert _apsum(data, float(x), float(y), r) == pytest.approx(_apsum(stamp, c, c, r),
                                                                    rel=0.02)


def test_open_writes_frames(tmp_path):
    src = SimSurvey().open(instrument="hst", n=4, seed=0, write_frames=tmp_path / "f")
    names = sorted(p.name for p in (tmp_path / "f").iterdir())
    assert names == sorted(["catalog.csv"] + [f"hst_{b}.fits" for b in src.bands])
    assert src.extra_attrs["frames_n"] == 4
