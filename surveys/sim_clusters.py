"""The star-cluster population of the `sim` survey, after the classes of Wei et al. (2020).

LEGUS-like HST imaging of clusters in a nearby galaxy, four classes:
  0 symmetric    compact, round, single peak, a little wider than a star (EFF profile);
  1 asymmetric   compact, elongated or lopsided, still one peak;
  2 association  several peaks, often on diffuse emission; young, hence blue;
  3 not_cluster  a single star, a close pair, a background galaxy or a detector artifact.
Colours follow age and dust, so the UV bands help: associations are young and bright in
F275W/F336W, old clusters and background galaxies are red. A smooth host disk lies behind
everything, as a function of sky position so that stamps and frames agree.
"""
from __future__ import annotations

import math

import galsim
import numpy as np

CLASS_NAMES = ["symmetric", "asymmetric", "association", "not_cluster"]
BANDS = ("F275W", "F336W", "F438W", "F555W", "F814W")
GSPARAMS = galsim.GSParams(folding_threshold=1e-2, maxk_threshold=2e-3)

# AB colour relative to F555W against log10(age/yr), from simple stellar populations.
_LOG_AGE = (6.0, 7.0, 8.0, 9.0, 10.0)
_SSP = {
    "F275W": (-1.6, -1.0, 0.2, 2.0, 3.4),
    "F336W": (-1.3, -0.9, -0.1, 1.1, 2.2),
    "F438W": (-0.35, -0.25, 0.0, 0.45, 0.85),
    "F555W": (0.0, 0.0, 0.0, 0.0, 0.0),
    "F814W": (0.55, 0.35, 0.0, -0.45, -0.75),
}
_EXTINCTION = (1.95, 1.62, 1.30, 1.0, 0.60)  # A_band / A_V
_RED_SUPERGIANT = (4.0, 2.8, 1.4, 0.0, -1.3)
_BACKGROUND_GALAXY = (2.6, 1.8, 0.8, 0.0, -0.8)
_HOST = (2.5, 1.6, 0.5, 0.0, -0.6)
HOST_SB_F555W = 21.3  # mag / arcsec^2 at the field centre
HOST_SCALE = 60.0  # arcsec


def ssp_colours(log_age: float, a_v: float) -> list[float]:
    return [float(np.interp(log_age, _LOG_AGE, _SSP[b])) + a_v * e
            for b, e in zip(BANDS, _EXTINCTION)]


def _nmgy(mag: float) -> float:
    return 10 ** (-0.4 * (mag - 22.5))


def _separated(rng: np.random.Generator, n: int, sigma: float, min_sep: float) -> list:
    """n positions from a 2-D Gaussian, greedily keeping those at least min_sep apart, so an
    association shows distinct peaks; always consumes the same number of draws."""
    cand = rng.normal(0.0, sigma, (48, 2))
    kept: list = []
    for c in cand:
        if all(math.hypot(c[0] - k[0], c[1] - k[1]) >= min_sep for k in kept):
            kept.append(c.tolist())
        if len(kept) == n:
            break
    return kept


def draw_cluster(rng: np.random.Generator) -> dict:
    """All intrinsic parameters of one object; fixed draw order (append new draws at the end)."""
    p: dict = {"population": "cluster"}
    p["jitter"] = rng.uniform(-1, 1, 2).tolist()
    label = int(rng.choice(4, p=[0.3, 0.25, 0.2, 0.25]))
    p["label"], p["class_name"] = label, CLASS_NAMES[label]
    dist = float(rng.uniform(4.0, 12.0))
    pc = dist * 1e6 * math.pi / 648000  # pc per arcsec
    dm = 5 * math.log10(dist * 1e5)
    p.update(dist_mpc=dist, beta=float(rng.uniform(0, math.pi)))
    log_age = float(rng.uniform(6.0, 9.5))
    a_v = float(rng.uniform(0.0, 0.6))
    m_v = float(rng.uniform(-10.5, -6.0))
    r_h = float(np.clip(2.5 * 10 ** rng.normal(0, 0.2), 1.0, 8.0)) / pc  # arcsec
    # EFF index gamma = 2 beta; real clusters reach gamma ~ 2.5, but truncated Moffats cost
    # galsim a slow maxk search per object, so beta stays where no truncation is needed
    eff_beta = float(rng.uniform(1.5, 2.5))
    if label in (0, 1):
        p.update(log_age=log_age, a_v=a_v, mag=m_v + dm, r_h=r_h, eff_beta=eff_beta)
        p["colours"] = ssp_colours(log_age, a_v)
        if label == 0:
            p["q"] = float(rng.uniform(0.85, 1.0))
        else:
            p["q"] = float(rng.uniform(0.35, 0.7))
            p["lobe"] = {"frac": float(rng.uniform(0.15, 0.35)),
                         "dist": float(rng.uniform(0.7, 1.5)),
                         "angle": float(rng.uniform(-0.6, 0.6))}
    elif label == 2:
        log_age = float(rng.uniform(6.0, 7.3))
        a_v = float(rng.uniform(0.2, 1.5))
        spread = float(rng.uniform(6.0, 18.0)) / pc
        n_peaks = int(rng.integers(3, 11))
        pos = _separated(rng, n_peaks, spread, 0.1)
        fluxes = (rng.pareto(1.5, len(pos)) + 1.0).tolist()
        p.update(log_age=log_age, a_v=a_v, mag=float(rng.uniform(-11.0, -7.5)) + dm,
                 peaks=pos, peak_flux=fluxes, peak_r_h=float(rng.uniform(0.6, 1.5)) / pc,
                 colours=ssp_colours(log_age, a_v))
        if rng.random() < 0.6:
            p["diffuse"] = {"frac": float(rng.uniform(0.2, 0.5)),
                            "sigma": spread * float(rng.uniform(1.0, 1.6))}
    else:
        kind = ["star", "pair", "galaxy", "artifact"][int(rng.choice(4, p=[0.35, 0.25, 0.25,
                                                                          0.15]))]
        p["kind"] = kind
        red = bool(rng.random() < 0.4)
        star_col = list(_RED_SUPERGIANT) if red else ssp_colours(6.0, 0.0)
        star_col = [c + a_v * e for c, e in zip(star_col, _EXTINCTION)]
        m_star = float(rng.uniform(-9.0, -5.5)) + dm
        if kind == "star":
            p.update(mag=m_star, colours=star_col)
        elif kind == "pair":
            sep, ang = float(rng.uniform(0.08, 0.25)), float(rng.uniform(0, math.pi))
            p.update(mag=m_star, colours=star_col, pair_sep=sep, pair_angle=ang,
                     pair_ratio=float(rng.uniform(0.3, 1.0)),
                     pair_colours=ssp_colours(float(rng.uniform(6.0, 9.0)), a_v))
        elif kind == "galaxy":
            p.update(mag=float(rng.uniform(21.0, 24.0)),
                     colours=[c + rng.normal(0, 0.1) for c in _BACKGROUND_GALAXY],
                     n=round(float(rng.uniform(1.0, 4.0)) * 2) / 2,
                     re=float(rng.uniform(0.15, 0.6)), q=float(rng.uniform(0.3, 1.0)))
        else:
            p.update(mag=float(rng.uniform(-7.0, -5.0)) + dm, colours=star_col,
                     faint_star=bool(rng.random() < 0.5))
            p["artifact"] = {"kind": "cosmic" if rng.random() < 0.7 else "hot",
                             "band": int(rng.integers(0, len(BANDS))),
                             "length": float(rng.uniform(3.0, 15.0)),
                             "angle": float(rng.uniform(0, math.pi)),
                             "offset": rng.uniform(-4, 4, 2).tolist(),
                             "electrons": float(rng.uniform(300.0, 3000.0)),
                             "hot": rng.integers(-2, 3, (4, 2)).tolist()}
    return p


def _flux(p: dict, band: str, colours_key: str = "colours") -> float:
    return _nmgy(p["mag"] + p[colours_key][BANDS.index(band)])


def cluster_components(p: dict) -> list[tuple[galsim.GSObject, dict[str, float]]]:
    """(unit-flux profile, flux per band in nanomaggies) for each part with its own colour."""
    gsp = GSPARAMS
    label = p["label"]
    beta = p["beta"] * galsim.radians
    fluxes = {b: _flux(p, b) for b in BANDS}
    if label in (0, 1):
        core = galsim.Moffat(beta=p["eff_beta"], half_light_radius=p["r_h"],
                             gsparams=gsp).shear(q=p["q"], beta=beta)
        if label == 1:  # a fainter, wider lobe off-centre along the major axis: lopsided
            lobe = p["lobe"]
            ang = p["beta"] + lobe["angle"]
            d = lobe["dist"] * p["r_h"]
            extra = galsim.Gaussian(sigma=1.5 * p["r_h"], gsparams=gsp).shear(
                q=0.7, beta=beta).shift(d * math.cos(ang), d * math.sin(ang))
            core = galsim.Add([core.withFlux(1 - lobe["frac"]), extra.withFlux(lobe["frac"])])
        return [(core, fluxes)]
    if label == 2:
        total = sum(p["peak_flux"])
        frac = 1.0 - p.get("diffuse", {}).get("frac", 0.0)
        parts = [galsim.Gaussian(half_light_radius=p["peak_r_h"], flux=frac * f / total,
                                 gsparams=gsp).shift(x, y)
                 for (x, y), f in zip(p["peaks"], p["peak_flux"])]
        if "diffuse" in p:
            parts.append(galsim.Gaussian(sigma=p["diffuse"]["sigma"], gsparams=gsp,
                                         flux=p["diffuse"]["frac"]).shear(q=0.7, beta=beta))
        return [(galsim.Add(parts), fluxes)]
    kind = p["kind"]
    if kind == "galaxy":
        return [(galsim.Sersic(n=p["n"], half_light_radius=p["re"], gsparams=gsp,
                               trunc=6 * p["re"]).shear(q=p["q"], beta=beta), fluxes)]
    if kind == "pair":
        s, a = 0.5 * p["pair_sep"], p["pair_angle"]
        dx, dy = s * math.cos(a), s * math.sin(a)
        f2 = {b: _flux(p, b, "pair_colours") * p["pair_ratio"] for b in BANDS}
        return [(galsim.DeltaFunction(gsparams=gsp).shift(dx, dy), fluxes),
                (galsim.DeltaFunction(gsparams=gsp).shift(-dx, -dy), f2)]
    if kind == "artifact" and not p["faint_star"]:
        fluxes = {b: 0.0 for b in BANDS}  # nothing real at the position, only the artifact
    return [(galsim.DeltaFunction(gsparams=gsp), fluxes)]


def paint_artifact(electrons: np.ndarray, p: dict, band: str, x0: float, y0: float) -> None:
    """Add a cosmic-ray track or hot pixels in detector pixels, in one band only.

    Artifacts happen on the detector, after the optics, so they are sharp single-pixel
    features never blurred by the PSF and never seen in the other bands: the cue that
    separates them from real sources. (x0, y0) is the object's position in array indices.
    """
    art = p.get("artifact")
    if art is None or BANDS.index(band) != art["band"]:
        return
    h, w = electrons.shape
    cx, cy = x0 + art["offset"][0], y0 + art["offset"][1]
    if art["kind"] == "cosmic":
        t = np.linspace(-0.5, 0.5, int(art["length"] * 3) + 1) * art["length"]
        xs = np.rint(cx + t * math.cos(art["angle"])).astype(int)
        ys = np.rint(cy + t * math.sin(art["angle"])).astype(int)
        pix = np.unique(np.stack([ys, xs], 1), axis=0)
        amp = art["electrons"] * np.linspace(1.0, 0.6, len(pix))
    else:
        pix = np.array([[int(round(cy)) + dy, int(round(cx)) + dx] for dx, dy in art["hot"]])
        pix = np.unique(pix, axis=0)
        amp = art["electrons"] * np.ones(len(pix))
    ok = (pix[:, 0] >= 0) & (pix[:, 0] < h) & (pix[:, 1] >= 0) & (pix[:, 1] < w)
    np.add.at(electrons, (pix[ok, 0], pix[ok, 1]), amp[ok])


def host_sb(u: np.ndarray, v: np.ndarray, band: str) -> np.ndarray:
    """Surface brightness (nmgy/arcsec^2) of the host galaxy's disk at offsets (u West,
    v North, arcsec) from the field centre: an exponential disk with two soft arms."""
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    arms = 1.0 + 0.5 * np.cos(2 * (theta - np.log1p(r / 5.0) / math.tan(math.radians(20))))
    sb0 = _nmgy(HOST_SB_F555W + _HOST[BANDS.index(band)])
    return sb0 * np.exp(-r / HOST_SCALE) * arms
