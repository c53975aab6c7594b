"""Instrument models of the `sim` survey, the seeded random streams, and the shared stretch.

Every profile is built in physical units (nanomaggies: flux 1 is AB magnitude 22.5, arcsec)
and every instrument turns it into electrons with its own zero point, then back into surface
brightness before the stretch. The stretch therefore sees the same physical numbers whatever
the instrument, and what differs between two stores of one seed is only what a telescope
changes: resolution, pixel size, depth and noise. That is the domain shift worth studying.

Depth is the quantity people quote (5-sigma point-source magnitude), so each band's zero
point is derived from it rather than set by hand; `extra_attrs` records both.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

NMGY_ZP = 22.5  # AB magnitude of one nanomaggy


@dataclass(frozen=True)
class Instrument:
    name: str
    bands: tuple[str, ...]
    pixel_scale: float  # arcsec / pixel
    psf_fwhm: dict[str, float]  # arcsec
    depth: dict[str, float]  # 5-sigma point-source AB magnitude
    sky: dict[str, float]  # sky brightness, AB mag / arcsec^2
    population: str  # "galaxy" or "cluster"
    psf_beta: float = 3.5  # Moffat index; ground-based seeing wings
    read_noise: float = 5.0  # electrons / pixel
    description: str = ""
    field_centre: tuple[float, float] = (150.1, 2.2)
    extra: dict = field(default_factory=dict)

    def zero_point(self, band: str) -> float:
        """AB magnitude giving one electron, such that the band reaches its quoted depth.

        Optimal PSF photometry has an effective area of 2.266 FWHM^2; over that many pixels
        5 sigma = 5 sqrt(npix (sky + read^2)). Solving that quadratic for the zero point makes
        the quoted depth the input, for sky-limited ground data and read-noise-limited UV alike.
        """
        p = self.pixel_scale
        npix = 2.266 * self.psf_fwhm[band] ** 2 / p ** 2
        sky_pix = 10.0 ** (-0.4 * self.sky[band]) * p ** 2  # in units of a magnitude-0 flux
        f5 = 10.0 ** (-0.4 * self.depth[band])
        a = 25.0 * npix * sky_pix
        disc = a * a + 100.0 * npix * f5 ** 2 * self.read_noise ** 2
        gain = (a + math.sqrt(disc)) / (2 * f5 ** 2)
        return 2.5 * math.log10(gain)

    def electrons_per_nmgy(self, band: str) -> float:
        return 10.0 ** (0.4 * (self.zero_point(band) - NMGY_ZP))

    def sky_electrons(self, band: str, pixel_scale: float | None = None) -> float:
        scale = self.pixel_scale if pixel_scale is None else pixel_scale
        return 10.0 ** (-0.4 * (self.sky[band] - self.zero_point(band))) * scale ** 2

    def attrs(self) -> dict:
        return {
            "instrument": self.name,
            "population": self.population,
            "depth_5sigma_ab": dict(self.depth),
            "sky_ab_per_arcsec2": dict(self.sky),
            "zero_point_ab_1e": {b: round(self.zero_point(b), 4) for b in self.bands},
            "psf_model": f"moffat(beta={self.psf_beta})",
            "read_noise_e": self.read_noise,
        }


def _seeing(fwhm_r: float, waves: dict[str, float], ref: float) -> dict[str, float]:
    """Atmospheric seeing shrinks slowly with wavelength (Kolmogorov: FWHM ~ lambda^-0.2)."""
    return {b: round(fwhm_r * (w / ref) ** -0.2, 3) for b, w in waves.items()}


_WAVE = {"u": 355.0, "g": 475.0, "r": 622.0, "i": 763.0, "z": 905.0, "y": 1000.0}
_SKY = {"u": 22.9, "g": 22.2, "r": 21.2, "i": 20.5, "z": 19.6, "y": 18.6}


def _ground(bands: str) -> tuple[dict[str, float], dict[str, float]]:
    return {b: _WAVE[b] for b in bands}, {b: _SKY[b] for b in bands}


_sdss_w, _sdss_sky = _ground("gri")
_des_w, _des_sky = _ground("griz")
_lsst_w, _lsst_sky = _ground("ugrizy")

INSTRUMENTS: dict[str, Instrument] = {
    "sdss": Instrument(
        "sdss", ("g", "r", "i"), 0.396, _seeing(1.4, _sdss_w, 622.0),
        depth={"g": 22.4, "r": 22.1, "i": 21.5}, sky=_sdss_sky, population="galaxy",
        read_noise=5.0, description="SDSS-like: 0.396\"/px, 1.4\" seeing, 54 s drift scan"),
    "des": Instrument(
        "des", ("g", "r", "i", "z"), 0.263, _seeing(0.9, _des_w, 622.0),
        depth={"g": 23.9, "r": 23.6, "i": 23.0, "z": 22.3}, sky=_des_sky, population="galaxy",
        read_noise=7.0, description="DES-like: 0.263\"/px, 0.9\" seeing, ~1.5 mag deeper"),
    "lsst": Instrument(
        "lsst", ("u", "g", "r", "i", "z", "y"), 0.2, _seeing(0.7, _lsst_w, 622.0),
        depth={"u": 24.4, "g": 25.4, "r": 25.2, "i": 24.6, "z": 24.0, "y": 23.1},
        sky=_lsst_sky, population="galaxy", read_noise=9.0,
        description="LSST-like: 0.2\"/px, 0.7\" seeing, a few years of coadds"),
    "hst": Instrument(
        "hst", ("F275W", "F336W", "F438W", "F555W", "F814W"), 0.04,
        {"F275W": 0.075, "F336W": 0.075, "F438W": 0.075, "F555W": 0.08, "F814W": 0.09},
        depth={"F275W": 25.3, "F336W": 25.6, "F438W": 26.2, "F555W": 26.6, "F814W": 26.2},
        # UV sky from space is far darker than the optical zodiacal light
        sky={"F275W": 25.5, "F336W": 24.6, "F438W": 23.4, "F555W": 22.9, "F814W": 22.4},
        population="cluster", psf_beta=2.5, read_noise=3.1,
        description="HST WFC3/UVIS + ACS-like (LEGUS): 0.04\"/px, star clusters in a nearby "
                    "galaxy", field_centre=(24.174, 15.783)),
}

# ---- random streams ------------------------------------------------------------------------
# Keys are tuples of small ints so that numpy's SeedSequence hashes them collision-free.
_POP_KEY = {"galaxy": 0, "cluster": 1}


def _inst_key(name: str) -> int:
    """A stable integer per instrument name (Python's hash() is salted per process)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def object_rng(seed: int, index: int, population: str) -> np.random.Generator:
    """Intrinsic parameters: keyed by (seed, index) only, so every instrument sees one object."""
    return np.random.default_rng([int(seed), int(index), _POP_KEY[population], 7])


def noise_seed(seed: int, index: int, instrument: str, band: str, what: str = "stamp") -> int:
    """Integer seed for galsim's noise: differs per instrument and band, fixed for a seed."""
    ss = np.random.SeedSequence([int(seed), int(index), _inst_key(instrument), _inst_key(band),
                                 _inst_key(what)])
    return int(ss.generate_state(1, np.uint32)[0]) or 1  # galsim treats 0 as "seed from time"


# ---- the stretch ---------------------------------------------------------------------------
# Softening of the asinh stretch, a surface brightness in nanomaggies / arcsec^2. It is the
# same for every instrument observing a population, so sdss, des and lsst stamps of one galaxy
# differ only by what the telescopes do. It sits near the per-pixel noise of the shallowest
# instrument (SDSS for galaxies: 0.3 is 23.8 mag/arcsec^2), keeping noise in the linear part.
# Star clusters are seen through 0.04" pixels, whose noise in surface brightness is ~20x
# higher (about 1-3 here), hence their own value.
ASINH_SOFTENING = {"galaxy": 0.3, "cluster": 2.0}
ASINH_GAIN = 0.125


def normalization_string(population: str) -> str:
    return (f"asinh:out={ASINH_GAIN}*asinh(I/{ASINH_SOFTENING[population]}), I = "
            f"sky-subtracted surface brightness in nanomaggies/arcsec^2 (AB mag 22.5 = 1), "
            f"same softening for every band and every {population} instrument")


def asinh_stretch(sb: np.ndarray, population: str) -> np.ndarray:
    return (ASINH_GAIN * np.arcsinh(sb / ASINH_SOFTENING[population])).astype(np.float32)
