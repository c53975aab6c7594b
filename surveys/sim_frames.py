"""Whole simulated fields as FITS frames with real WCS, to test cutout code against truth.

Real surveys deliver frames, not stamps, and the hard part of cutting them is geometry:
bands taken at different pixel scales, rotated or mirrored on the sky, not aligned pixel to
pixel. The frames here have all of that on purpose (see `band_layout`), while every object
is drawn straight into each band's own pixel grid through that band's WCS, so a correct
RA/Dec -> pixel mapping lands on the rendered centre to numerical precision.

Frames are in nanomaggies per pixel, sky-subtracted, north/east as their WCS says.
`direct_stamp` draws the same object north up at the band's pixel scale, the answer a
cutout-and-resample of the frame should reproduce.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from . import sim_clusters
from .sim_instruments import noise_seed
from .sim_render import (POPULATIONS, add_noise, band_psf, components, draw_general,
                         field_offset, get_instrument, object_id, object_params, render_direct,
                         scene, sky_position, tan_deproject)

MAX_FRAME_OBJECTS = 100
COARSE_FACTOR = 1.5


def band_layout(instrument: str) -> dict[str, dict]:
    """Per band: pixel scale (arcsec), rotation of the pixel grid (deg) and mirror flip.

    The first band is mirrored (RA increasing to the right), the third is rotated by 90 deg,
    the last is sampled 1.5x coarser; on 3-band instruments the last is both.
    """
    inst = get_instrument(instrument)
    out = {b: {"scale": inst.pixel_scale, "rotation": 0.0, "flip": False} for b in inst.bands}
    out[inst.bands[0]]["flip"] = True
    out[inst.bands[min(2, len(inst.bands) - 1)]]["rotation"] = 90.0
    out[inst.bands[-1]]["scale"] = round(inst.pixel_scale * COARSE_FACTOR, 6)
    return out


def cd_matrix(scale: float, rotation: float, flip: bool) -> np.ndarray:
    """CD matrix (deg/pixel). Unflipped: east left at rotation 0; rotation turns the grid."""
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    base = np.array([[1.0 if flip else -1.0, 0.0], [0.0, 1.0]]) * scale / 3600.0
    return base @ np.array([[c, -s], [s, c]])


def _header(crval, crpix, cd) -> fits.Header:
    h = fits.Header()
    h["WCSAXES"] = 2
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    h["CRVAL1"], h["CRVAL2"] = float(crval[0]), float(crval[1])
    h["CRPIX1"], h["CRPIX2"] = float(crpix[0]), float(crpix[1])
    for i in range(2):
        for j in range(2):
            h[f"CD{i + 1}_{j + 1}"] = float(cd[i, j])
    h["RADESYS"], h["EQUINOX"] = "ICRS", 2000.0
    return h


def _tan_project(ra0, dec0, ra, dec):
    """RA/Dec (deg) to gnomonic standard coordinates (deg, xi East) about (ra0, dec0)."""
    a0, d0, a, d = map(np.radians, (ra0, dec0, ra, dec))
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    xi = np.cos(d) * np.sin(a - a0) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cosc
    return np.degrees(xi), np.degrees(eta)


def direct_stamp(instrument: str, seed: int, index: int, band: str, size: int = 64, *,
                 noise: bool = False) -> np.ndarray:
    """The object north up at the frame band's own pixel scale, nanomaggies per pixel."""
    scale = band_layout(instrument)[band]["scale"]
    return render_direct(instrument, seed, index, band, size, scale, noise=noise)


def write_frames(instrument: str, seed: int, n: int, out_dir: Path | str, *,
                 max_objects: int = MAX_FRAME_OBJECTS, noise: bool = True) -> dict:
    """Render objects 0..min(n, max_objects)-1 into one FITS frame per band plus catalog.csv.

    Returns {"frames": {band: path}, "catalog": path, "n": count}.
    """
    inst = get_instrument(instrument)
    pop = inst.population
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    idx = list(range(min(int(n), int(max_objects))))
    radec = np.array([sky_position(pop, seed, i) for i in idx]).reshape(-1, 2)
    centre = POPULATIONS[pop]["centre"]
    spacing = POPULATIONS[pop]["spacing"]
    margin = 0.6 * spacing  # arcsec: the frame extends half a grid cell beyond the objects
    frames = {}
    for k, (band, lay) in enumerate(band_layout(instrument).items()):
        scale = lay["scale"]
        cd = cd_matrix(scale, lay["rotation"], lay["flip"])
        # each band has its own tangent point, so no two bands share a pixel grid
        crval = tan_deproject(*centre, np.array(3.7 * k / 3600), np.array(-2.3 * k / 3600))
        wcs = WCS(_header(crval, (0.0, 0.0), cd))
        x, y = wcs.wcs_world2pix(radec[:, 0], radec[:, 1], 0)
        pad = int(math.ceil(margin / scale))
        x0, y0 = math.floor(x.min()) - pad - 2, math.floor(y.min()) - pad - 2
        nx, ny = math.ceil(x.max()) + pad + 3 - x0, math.ceil(y.max()) + pad + 3 - y0
        header = _header(crval, (-x0, -y0), cd)  # pixel x0 (0-based) becomes FITS pixel 1
        wcs = WCS(header)
        x, y = wcs.wcs_world2pix(radec[:, 0], radec[:, 1], 0)
        jac = 3600.0 * np.array([[-cd[0, 0], -cd[0, 1]], [cd[1, 0], cd[1, 1]]])  # -> (u, v)
        arr = np.zeros((ny, nx))
        for i, xi, yi in zip(idx, x, y):
            p = object_params(pop, seed, i)
            comps = components(p)
            # draw as far as galsim's own folding radius (99% of the light), so that big
            # galaxies have no visible box edge, within three grid cells
            reach = math.pi / scene(comps, band, band_psf(instrument, band)).stepk
            half = int(math.ceil(min(max(reach, margin), 3 * spacing) / scale))
            ix, iy = int(round(xi)), int(round(yi))
            xa, xb = max(ix - half, 0), min(ix + half + 1, nx)
            ya, yb = max(iy - half, 0), min(iy + half + 1, ny)
            arr[ya:yb, xa:xb] += draw_general(
                comps, p, inst, band, (yb - ya, xb - xa), xi - xa, yi - ya,
                field_offset(pop, seed, i), jac, host=False)
        e = inst.electrons_per_nmgy(band)
        if pop == "cluster":  # the host disk is continuous across the whole frame
            ys, xs = np.indices(arr.shape, dtype=float)
            ra, dec = wcs.wcs_pix2world(xs.ravel(), ys.ravel(), 0)
            xi_, eta_ = _tan_project(*centre, ra, dec)
            sb = sim_clusters.host_sb(-xi_ * 3600, eta_ * 3600, band).reshape(arr.shape)
            arr += sb * scale * scale * e
        if noise:
            arr = add_noise(arr, inst, band, noise_seed(seed, 0, instrument, band, "frame"),
                            scale * scale)
        sigma = math.sqrt(inst.sky_electrons(band, scale) + inst.read_noise ** 2) / e
        header.update({
            "BUNIT": ("nanomaggy", "per pixel; AB mag = 22.5 - 2.5 log10"),
            "FILTER": band, "INSTRUME": f"sim-{instrument}", "SIMSEED": int(seed),
            "PIXSCALE": (scale, "arcsec/pixel"), "ROTATION": (lay["rotation"], "deg"),
            "FLIPPED": (lay["flip"], "RA increases with x"),
            "PSF_FWHM": (inst.psf_fwhm[band], "arcsec, Moffat"),
            "SKYSUB": (True, "sky subtracted"), "NOISE": (sigma, "sky+read sigma per pixel"),
            "NOBJ": len(idx)})
        path = out_dir / f"{instrument}_{band}.fits"
        fits.PrimaryHDU((arr / e).astype(np.float32), header).writeto(path, overwrite=True)
        frames[band] = path
    cat = out_dir / "catalog.csv"
    legus = pop == "cluster"  # also the visual class as LEGUS/PHANGS number it (1-4)
    with open(cat, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "ra", "dec", "label"] + (["class"] if legus else []))
        for i, (ra, dec) in zip(idx, radec):
            label = object_params(pop, seed, i)["label"]
            w.writerow([object_id(pop, seed, i), f"{ra:.10f}", f"{dec:.10f}", label]
                       + ([label + 1] if legus else []))
    return {"frames": frames, "catalog": cat, "n": len(idx)}
