"""The galaxy population of the `sim` survey: smooth ellipticals and featured spirals.

Parameters are drawn from a redshift and a luminosity, not directly as apparent sizes and
magnitudes, so that faint galaxies are also small: a far spiral loses its arms into the
PSF exactly as in real data, which is what keeps the classification task from being trivial.

Every draw comes from the object's own random stream in a fixed order and covers all six
ugrizy bands whatever instrument asked, so object i of a seed is the same galaxy for SDSS,
DES and LSST. Profiles are in nanomaggies and arcsec; u points West and v North, the
orientation of a north-up, east-left image.
"""
from __future__ import annotations

import math

import galsim
import numpy as np

CLASS_NAMES = ["elliptical", "spiral"]
ALL_BANDS = ("u", "g", "r", "i", "z", "y")

# Colours (AB mag relative to r) at z=0, and their change per unit redshift (k-correction).
# Old populations (ellipticals, bulges) are red; arms and HII knots carry the young, blue light.
_COLOUR = {
    "elliptical": (2.45, 0.78, 0.0, -0.38, -0.68, -0.85),
    "bulge": (2.25, 0.72, 0.0, -0.36, -0.64, -0.80),
    "disk": (1.35, 0.48, 0.0, -0.24, -0.40, -0.50),
    "arms": (0.75, 0.22, 0.0, -0.10, -0.16, -0.20),
    "knots": (0.35, 0.05, 0.0, -0.02, -0.02, 0.00),
    "star": (1.3, 0.45, 0.0, -0.15, -0.25, -0.30),  # scaled by the star's own g-r below
}
_KCORR_RED = (4.0, 2.0, 0.0, -0.6, -0.9, -1.0)
_KCORR_BLUE = tuple(0.5 * k for k in _KCORR_RED)

GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3)

C_OVER_H0 = 4283.0  # Mpc, H0 = 70 km/s/Mpc


def distances(z: float) -> tuple[float, float]:
    """(distance modulus, kpc per arcsec). A q0=-0.55 expansion is plenty below z=0.4."""
    d_c = C_OVER_H0 * (z - 0.225 * z * z)
    d_l = d_c * (1 + z)
    d_a = d_c / (1 + z)
    return 5 * math.log10(d_l) + 25, d_a * 1e3 * math.pi / 648000


def _mags(rng: np.random.Generator, kind: str, z: float, scatter: float = 0.05) -> list[float]:
    kc = _KCORR_RED if kind in ("elliptical", "bulge") else _KCORR_BLUE
    jitter = rng.normal(0.0, scatter, len(ALL_BANDS))
    return [c + z * k + j for c, k, j in zip(_COLOUR[kind], kc, jitter)]


def _quantize(x: float, step: float) -> float:
    """Sersic profiles are cached by index; a handful of indices keeps that cache warm."""
    return round(round(x / step) * step, 4)


def draw_galaxy(rng: np.random.Generator) -> dict:
    """All intrinsic parameters of one galaxy. The draw order is part of the reproducibility
    contract: appending new draws at the end keeps existing objects unchanged."""
    p: dict = {"population": "galaxy"}
    p["jitter"] = rng.uniform(-1, 1, 2).tolist()
    label = int(rng.random() < 0.5)
    p["label"] = label
    p["class_name"] = CLASS_NAMES[label]
    z = float(np.clip(math.exp(rng.normal(math.log(0.1), 0.55)), 0.02, 0.4))
    absmag = float(np.clip(rng.normal(-21.0 if label == 0 else -20.7, 0.9), -23.5, -18.0))
    dm, kpc_per_arcsec = distances(z)
    p.update(z=z, absmag_r=absmag, mag_r=absmag + dm)
    p["beta"] = float(rng.uniform(0, math.pi))
    if label == 0:
        re_kpc = 3.0 * 10 ** (-0.4 * (absmag + 21) * 0.5) * 10 ** rng.normal(0, 0.15)
        p["re"] = re_kpc / kpc_per_arcsec
        p["n"] = _quantize(rng.uniform(3.0, 5.0), 0.25)
        p["q"] = float(rng.uniform(0.5, 1.0))
        p["mags"] = {"elliptical": _mags(rng, "elliptical", z)}
        p["fractions"] = {"elliptical": 1.0}
    else:
        re_kpc = 4.5 * 10 ** (-0.4 * (absmag + 21) * 0.35) * 10 ** rng.normal(0, 0.12)
        re = re_kpc / kpc_per_arcsec
        cos_i = rng.uniform(0.3, 1.0)
        bt = float(rng.uniform(0.05, 0.35))
        kind = ["grand", "multi", "flocculent"][int(np.searchsorted([0.6, 0.85], rng.random()))]
        f_arm = {"grand": rng.uniform(0.35, 0.6), "multi": rng.uniform(0.3, 0.5),
                 "flocculent": rng.uniform(0.05, 0.15)}[kind]
        f_knot = rng.uniform(0.06, 0.14) if kind != "flocculent" else rng.uniform(0.15, 0.3)
        p.update(re=re, q=float(math.sqrt((1 - 0.15**2) * cos_i**2 + 0.15**2)), bt=bt,
                 bulge_n=_quantize(rng.uniform(1.5, 4.0), 0.5),
                 bulge_re=float(re * rng.uniform(0.15, 0.3)),
                 bulge_q=float(rng.uniform(0.7, 1.0)), spiral_kind=kind)
        p["arms"] = {
            "m": {"grand": 2, "multi": int(rng.integers(3, 5)), "flocculent": 2}[kind],
            "pitch": float(np.radians(rng.uniform(15, 32))),
            "phase": float(rng.uniform(0, 2 * math.pi)),
            "chirality": int(rng.choice([-1, 1])),
            "width": float(rng.uniform(0.10, 0.16)),
            "seg_jitter": rng.lognormal(0.0, 0.3, 64).tolist(),
        }
        n_knots = int(rng.integers(4, 13))
        p["knots"] = {"n": n_knots, "t": rng.uniform(0.1, 0.9, n_knots).tolist(),
                      "arm": rng.integers(0, 8, n_knots).tolist(),
                      "flux": rng.lognormal(0, 0.5, n_knots).tolist(),
                      "offset": rng.normal(0, 0.05, (n_knots, 2)).tolist(),
                      "random_seed": int(rng.integers(1, 2**31 - 1))}
        disk = 1.0 - bt
        p["fractions"] = {"bulge": bt, "disk": disk * (1 - f_arm - f_knot),
                          "arms": disk * f_arm, "knots": disk * f_knot}
        p["mags"] = {k: _mags(rng, k, z) for k in ("bulge", "disk", "arms", "knots")}
    # a field star near some galaxies: real cutouts are rarely clean
    has_star = bool(rng.random() < 0.3)
    ang, rad = rng.uniform(0, 2 * math.pi), rng.uniform(4.0, 12.0)
    gr = rng.uniform(0.3, 1.4)
    star_mag = rng.uniform(17.0, 22.5)
    if has_star:
        colour = [c * gr / 0.45 for c in _COLOUR["star"]]
        p["star"] = {"dx": rad * math.cos(ang), "dy": rad * math.sin(ang), "mag_r": star_mag,
                     "mags": colour}
    return p


def _band_flux(p: dict, comp: str, band: str) -> float:
    mag = p["mag_r"] + p["mags"][comp][ALL_BANDS.index(band)]
    return p["fractions"][comp] * 10 ** (-0.4 * (mag - 22.5))


def _arm_segments(p: dict) -> list[tuple[float, ...]]:
    """(x, y, sigma_along, sigma_across, angle, weight) of Gaussian pieces tracing log-spiral arms.

    Spacing, length and width all grow with radius, which is what a log spiral does to
    itself under scaling, so a fixed number of pieces per radian fits every pitch angle.
    """
    a, re = p["arms"], p["re"]
    tan_p = math.tan(a["pitch"])
    r_in, r_out = 0.35 * re, 2.3 * re
    span = math.log(r_out / r_in) / tan_p
    nseg = max(4, int(math.ceil(span / 0.55)))
    h = re / 1.678  # exponential scale length
    segs, k = [], 0
    for arm in range(a["m"]):
        for s in range(nseg):
            phi = (s + 0.5) * span / nseg
            r = r_in * math.exp(phi * tan_p)
            theta = a["chirality"] * phi + a["phase"] + 2 * math.pi * arm / a["m"]
            along = a["chirality"] * (math.pi / 2 - a["pitch"])
            length = r * (span / nseg) / math.cos(a["pitch"])
            weight = r * r * math.exp(-r / h) * a["seg_jitter"][k % 64]
            k += 1
            segs.append((r * math.cos(theta), r * math.sin(theta), 0.5 * length,
                         max(a["width"] * r, 0.04 * re), theta + along, weight))
    return segs


def galaxy_components(p: dict) -> list[tuple[galsim.GSObject, dict[str, float]]]:
    """(unit-flux profile, flux per band in nanomaggies) for each part with its own colour.

    Renderers scale and sum these per band, so the many Gaussians of the arms are built and
    Fourier-transformed once per object rather than once per band.
    """
    gsp = GSPARAMS
    incl = dict(q=p["q"], beta=p["beta"] * galsim.radians)
    if p["label"] == 0:
        profs = {"elliptical": galsim.Sersic(n=p["n"], half_light_radius=p["re"], gsparams=gsp)}
    else:
        re = p["re"]
        profs = {
            "bulge": galsim.Sersic(n=p["bulge_n"], half_light_radius=p["bulge_re"], gsparams=gsp)
            .shear(q=p["bulge_q"], beta=0.3 * galsim.radians),
            "disk": galsim.Exponential(half_light_radius=re, gsparams=gsp),
        }
        segs = _arm_segments(p)
        total = sum(s[5] for s in segs)
        pieces = []
        for x, y, s_along, s_across, ang, w in segs:
            g = galsim.Gaussian(sigma=math.sqrt(s_along * s_across), flux=w / total, gsparams=gsp)
            pieces.append(g.shear(q=min(1.0, s_across / s_along), beta=ang * galsim.radians)
                          .shift(x, y))
        profs["arms"] = galsim.Add(pieces)
        kn = p["knots"]
        if p["spiral_kind"] == "flocculent":
            profs["knots"] = galsim.RandomKnots(npoints=30, half_light_radius=re, flux=1.0,
                                                rng=galsim.BaseDeviate(kn["random_seed"]),
                                                gsparams=gsp)
        else:  # HII regions sit on the arms
            knots, tot = [], sum(kn["flux"])
            sigma = max(0.05 * re, 0.15)
            nseg = len(segs) // p["arms"]["m"]
            for t, arm_sel, f, (ox, oy) in zip(kn["t"], kn["arm"], kn["flux"], kn["offset"]):
                x, y, *_ = segs[(arm_sel % p["arms"]["m"]) * nseg + int(t * nseg)]
                knots.append(galsim.Gaussian(sigma=sigma, flux=f / tot, gsparams=gsp)
                             .shift(x + ox * re, y + oy * re))
            profs["knots"] = galsim.Add(knots)
    out = [(prof.shear(**incl), {b: _band_flux(p, k, b) for b in ALL_BANDS})
           for k, prof in profs.items()]
    if "star" in p:
        s = p["star"]
        fluxes = {b: 10 ** (-0.4 * (s["mag_r"] + s["mags"][j] - 22.5))
                  for j, b in enumerate(ALL_BANDS)}
        out.append((galsim.DeltaFunction(gsparams=gsp).shift(s["dx"], s["dy"]), fluxes))
    return out
