"""Pure rendering API of the `sim` survey: one object, any instrument, any band.

Everything here is a function of (instrument, seed, index) alone, so any object can be
rendered on its own: that is what lets an interrupted ingest resume at any object, and what
makes object i of a seed the same galaxy in the sdss, des and lsst stores.

Stamp orientation is north up, east left (u = West along +x, v = North along +y, FITS row
order), with the object's centre at the geometric centre of the array, ((size-1)/2, (size-1)/2)
in 0-based array indices.
"""
from __future__ import annotations

import copy
import math
from functools import lru_cache

import galsim
import numpy as np

from . import sim_clusters, sim_galaxies
from .sim_instruments import INSTRUMENTS, Instrument, asinh_stretch, noise_seed, object_rng

# Objects sit on a square spiral of cells around the field centre, so that the first k^2
# objects of any seed fill a compact k x k patch (small frames) and none overlap. Spacing is
# larger than a 64-pixel stamp of the coarsest instrument observing the population.
POPULATIONS = {
    "galaxy": {"centre": (150.1, 2.2), "spacing": 36.0, "class_names": sim_galaxies.CLASS_NAMES,
               "id_prefix": "sim", "draw": sim_galaxies.draw_galaxy},
    "cluster": {"centre": (24.174, 15.783), "spacing": 4.0,
                "class_names": sim_clusters.CLASS_NAMES, "id_prefix": "simcl",
                "draw": sim_clusters.draw_cluster},
}
JITTER = 0.08  # of the spacing


def get_instrument(name: str) -> Instrument:
    try:
        return INSTRUMENTS[name]
    except KeyError:
        known = ", ".join(INSTRUMENTS)
        raise ValueError(f"unknown instrument '{name}'; use one of {known}") from None


def object_id(population: str, seed: int, index: int) -> str:
    """Same id for every instrument observing the population; clusters get their own prefix
    so an HST store can never be matched by id against a galaxy store."""
    return f"{POPULATIONS[population]['id_prefix']}{seed}-{index:06d}"


@lru_cache(maxsize=8192)
def _params(population: str, seed: int, index: int) -> dict:
    return POPULATIONS[population]["draw"](object_rng(seed, index, population))


def object_params(population: str, seed: int, index: int) -> dict:
    """Intrinsic parameters of object `index` (cached; treat as read-only)."""
    return _params(population, int(seed), int(index))


def spiral_cell(i: int) -> tuple[int, int]:
    """(column, row) of the i-th cell (0-based) of a square spiral starting at (0, 0)."""
    n = i + 1
    k = (math.isqrt(n - 1) + 1) // 2  # ring: the smallest k with (2k+1)^2 >= n
    t = 2 * k
    m = (t + 1) ** 2
    if n >= m - t:
        return k - (m - n), -k
    m -= t
    if n >= m - t:
        return -k, -k + (m - n)
    m -= t
    if n >= m - t:
        return -k + (m - n), k
    return k, k - (m - n - t)


def field_offset(population: str, seed: int, index: int) -> tuple[float, float]:
    """(u West, v North) offset of the object from the field centre, arcsec."""
    spacing = POPULATIONS[population]["spacing"]
    col, row = spiral_cell(index)
    jx, jy = object_params(population, seed, index)["jitter"]
    return (col + JITTER * jx) * spacing, (row + JITTER * jy) * spacing


def tan_deproject(ra0: float, dec0: float, xi: np.ndarray, eta: np.ndarray):
    """Gnomonic (TAN) standard coordinates (degrees, xi East) to RA/Dec (degrees)."""
    a0, d0 = np.radians(ra0), np.radians(dec0)
    x, y = np.radians(xi), np.radians(eta)
    denom = np.cos(d0) - y * np.sin(d0)
    ra = a0 + np.arctan2(x, denom)
    dec = np.arctan2(np.sin(d0) + y * np.cos(d0), np.hypot(x, denom))
    return np.degrees(ra) % 360.0, np.degrees(dec)


def sky_position(population: str, seed: int, index: int) -> tuple[float, float]:
    u, v = field_offset(population, seed, index)
    ra0, dec0 = POPULATIONS[population]["centre"]
    ra, dec = tan_deproject(ra0, dec0, -u / 3600.0, v / 3600.0)
    return float(ra), float(dec)


@lru_cache(maxsize=64)
def band_psf(instrument: str, band: str) -> galsim.GSObject:
    inst = INSTRUMENTS[instrument]
    return galsim.Moffat(beta=inst.psf_beta, fwhm=inst.psf_fwhm[band],
                         gsparams=sim_galaxies.GSPARAMS)


def components(params: dict) -> list[tuple[galsim.GSObject, dict[str, float]]]:
    if params["population"] == "galaxy":
        return sim_galaxies.galaxy_components(params)
    return sim_clusters.cluster_components(params)


def scene(comps: list, band: str, psf: galsim.GSObject) -> galsim.GSObject:
    """One band of an object, PSF-convolved, in nanomaggies."""
    obj = galsim.Add([prof * fluxes[band] for prof, fluxes in comps])
    return galsim.Convolve(obj, psf, gsparams=sim_galaxies.GSPARAMS)


def _extras(params: dict, inst: Instrument, band: str, arr_e: np.ndarray, cx: float, cy: float,
            uv0: tuple[float, float], jac: np.ndarray, host: bool = True) -> None:
    """Pixel-level additions in electrons: the clusters' host disk and detector artifacts.

    The host disk is a function of sky position, so it matches between stamps and frames.
    (cx, cy) is the object's position in 0-based array indices; `jac` maps pixel offsets to
    (u, v) arcsec; `uv0` is the object's offset from the field centre.
    """
    if params["population"] != "cluster":
        return
    if host:
        ys, xs = np.indices(arr_e.shape, dtype=float)
        du, dv = jac @ np.stack([(xs - cx).ravel(), (ys - cy).ravel()])
        sb = sim_clusters.host_sb(uv0[0] + du, uv0[1] + dv, band).reshape(arr_e.shape)
        arr_e += sb * abs(np.linalg.det(jac)) * inst.electrons_per_nmgy(band)
    sim_clusters.paint_artifact(arr_e, params, band, cx, cy)


def draw_general(comps: list, params: dict, inst: Instrument, band: str, shape: tuple[int, int],
                 cx: float, cy: float, uv0: tuple[float, float], jac: np.ndarray,
                 host: bool = True) -> np.ndarray:
    """Noiseless electrons on an (ny, nx) grid with any local WCS `jac` (pixel -> u, v arcsec),
    the object centred at 0-based array position (cx, cy). Used for frames and direct stamps;
    frames add the clusters' host disk once for the whole field (`host=False` here)."""
    image = galsim.ImageD(shape[1], shape[0])
    wcs = galsim.JacobianWCS(*jac.ravel())
    scene(comps, band, band_psf(inst.name, band)).drawImage(
        image=image, wcs=wcs, center=galsim.PositionD(cx + 1, cy + 1), method="auto")
    arr = image.array * inst.electrons_per_nmgy(band)
    _extras(params, inst, band, arr, cx, cy, uv0, jac, host)
    return arr


def draw_bands_fast(comps: list, inst: Instrument, bands: tuple[str, ...],
                    size: int) -> dict[str, np.ndarray]:
    """Noiseless stamps (nanomaggies/pixel, centred, north up) of all bands at once.

    Same arithmetic as galsim's drawImage(method='auto'), but on one k-space grid shared by
    every band: each part's Fourier image is drawn once and the bands differ only by fluxes
    and the PSF. This is what makes 6-band LSST stamps of many-armed spirals affordable.
    It relies on galsim's drawFFT_makeKImage/_drawKImage/drawFFT_finish split (galsim 2.x);
    tests compare it with drawImage so a galsim change cannot slip by silently.
    """
    wcs = galsim.PixelScale(inst.pixel_scale)
    shift = (size - 1) / 2 - size // 2  # object at the array's geometric centre
    imview = galsim.ImageD(galsim.BoundsI(-(size // 2), size - 1 - size // 2,
                                          -(size // 2), size - 1 - size // 2), scale=1.0)
    profs = [wcs.profileToImage(prof, offset=galsim.PositionD(shift, shift))
             for prof, _ in comps]
    pix = galsim.Pixel(1.0, gsparams=sim_galaxies.GSPARAMS)
    psfs = {b: wcs.profileToImage(band_psf(inst.name, b)) for b in bands}
    unit = galsim.Add(profs) if len(profs) > 1 else profs[0]
    n_fft, maxk = 0, 0.0
    # the grid is set by the sharpest PSF (largest maxk) and the widest (smallest stepk);
    # sizing only those two saves galsim's costly maxk of truncated profiles per band
    fwhm = {b: inst.psf_fwhm[b] for b in bands}
    for b in {min(fwhm, key=fwhm.get), max(fwhm, key=fwhm.get)}:
        sizing = galsim.Convolve(unit, psfs[b], pix, gsparams=sim_galaxies.GSPARAMS)
        n_fft = max(n_fft, sizing.drawFFT_makeKImage(imview)[1])
        maxk = max(maxk, sizing.maxk)
    # Huge nearby ellipticals would ask for 3000-pixel FFTs to keep their far wings from
    # folding back; beyond four stamp widths what folds in is far below the sky noise.
    n_fft = min(n_fft, galsim.Image.good_fft_size(max(4 * size, 128)))
    dk = 2 * np.pi / n_fft
    nk = n_fft if n_fft * dk / 2 > maxk else int(np.ceil(maxk / dk)) * 2
    kimage = galsim.ImageCD(galsim.BoundsI(0, nk // 2, -(nk // 2), nk // 2), scale=dk)

    def kdraw(prof):
        prof._drawKImage(kimage)
        return kimage.array.copy()

    comp_k = [kdraw(prof) for prof in profs]
    pix_k = kdraw(pix)
    out = {}
    for b in bands:
        total = sum(fluxes[b] * k for (_, fluxes), k in zip(comps, comp_k))
        kimage.array[...] = total * kdraw(psfs[b]) * pix_k
        # drawFFT_finish only wraps and inverse-transforms kimage; its object is irrelevant
        pix.drawFFT_finish(imview, kimage, n_fft, False)
        out[b] = imview.array.copy()
    return out


def add_noise(arr_e: np.ndarray, inst: Instrument, band: str, seed: int,
              pixel_area: float) -> np.ndarray:
    """CCD noise: Poisson on object + sky, sky subtracted, plus Gaussian read noise.

    numpy's Poisson sampler is ~50x faster than galsim's CCDNoise at sky levels of hundreds
    of electrons, and is just as reproducible from an integer seed.
    """
    rng = np.random.default_rng(seed)
    sky = 10.0 ** (-0.4 * (inst.sky[band] - inst.zero_point(band))) * pixel_area
    lam = np.clip(arr_e + sky, 0.0, None)
    return rng.poisson(lam).astype(np.float64) - sky + rng.normal(0.0, inst.read_noise, lam.shape)


def render_stamp(instrument: str, seed: int, index: int, size: int = 64, *,
                 noise: bool = True, normalize: bool = True) -> tuple[np.ndarray, int, dict]:
    """One object as the instrument sees it: ((C, size, size) float32, label, parameters).

    With `normalize` the bands carry the shared asinh stretch of surface brightness; without
    it, sky-subtracted surface brightness in nanomaggies / arcsec^2.
    """
    inst = get_instrument(instrument)
    p = object_params(inst.population, seed, index)
    scale = inst.pixel_scale
    jac = np.array([[scale, 0.0], [0.0, scale]])
    uv0 = field_offset(inst.population, seed, index)
    nmgy = draw_bands_fast(components(p), inst, inst.bands, size)
    out = np.empty((len(inst.bands), size, size), np.float32)
    centre = (size - 1) / 2
    for c, band in enumerate(inst.bands):
        e = inst.electrons_per_nmgy(band)
        arr = nmgy[band] * e
        _extras(p, inst, band, arr, centre, centre, uv0, jac)
        if noise:
            arr = add_noise(arr, inst, band, noise_seed(seed, index, instrument, band),
                            scale * scale)
        sb = arr / (e * scale * scale)
        out[c] = asinh_stretch(sb, inst.population) if normalize else sb
    return out, int(p["label"]), copy.deepcopy(p)


def render_direct(instrument: str, seed: int, index: int, band: str, size: int = 64,
                  pixel_scale: float | None = None, *, noise: bool = False) -> np.ndarray:
    """One band of one object, north up and east left, at any pixel scale (default: the
    instrument's), in nanomaggies per pixel: the units of the frames, so a cutout taken from
    a frame and resampled to north-up can be compared with this pixel for pixel. Drawn by
    galsim's own drawImage, independently of the fast path used for stamps."""
    inst = get_instrument(instrument)
    if band not in inst.bands:
        raise ValueError(f"{instrument} has no band '{band}'; it has {', '.join(inst.bands)}")
    p = object_params(inst.population, seed, index)
    scale = inst.pixel_scale if pixel_scale is None else float(pixel_scale)
    jac = np.array([[scale, 0.0], [0.0, scale]])
    centre = (size - 1) / 2
    arr = draw_general(components(p), p, inst, band, (size, size), centre, centre,
                       field_offset(inst.population, seed, index), jac)
    if noise:
        arr = add_noise(arr, inst, band, noise_seed(seed, index, instrument, band, "direct"),
                        scale * scale)
    return (arr / inst.electrons_per_nmgy(band)).astype(np.float32)
