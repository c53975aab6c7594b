"""`sim`: a labelled population rendered with GalSim and observed by a chosen instrument.

The point of a simulated survey is a domain shift whose cause is known. One seed defines one
population of intrinsic objects; `--instrument sdss` and `--instrument des` observe the very
same galaxies (same ids, labels and sky positions) through different optics, pixels, depth
and noise, and every instrument is put through the same physical stretch. A network that
transfers badly from one store to the other is therefore failing on instrument effects alone.

Galaxies (elliptical / spiral) are seen by sdss, des and lsst; hst sees star clusters in the
four classes of Wei et al. (2020). See sim_galaxies, sim_clusters, sim_instruments.

Each object is rendered from (instrument, seed, index) alone, so `load()` can render any
object in any order and a resumed ingest gives bit-identical pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astrotransfer.errors import UserError
from astrotransfer.survey import Candidate, IngestSource, Option, Survey

from . import sim_frames
from .sim_frames import band_layout, direct_stamp, write_frames
from .sim_instruments import ASINH_SOFTENING, INSTRUMENTS, normalization_string
from .sim_render import (POPULATIONS, object_id, object_params, render_direct, render_stamp,
                         sky_position)

# The pure-function API other code may use without going through an ingest.
__all__ = ["SimSurvey", "SimSource", "INSTRUMENTS", "render_stamp", "render_direct",
           "object_params", "object_id", "sky_position", "write_frames", "direct_stamp",
           "band_layout"]

GENERATOR_VERSION = 1  # bump when a change alters the pixels of an existing (seed, index)
NORMALIZATIONS = ("asinh", "none", "minmax", "khan")
MAX_OBJECTS = 10_000_000


@dataclass
class SimSource(IngestSource):
    instrument: str = "sdss"
    seed: int = 0
    n: int = 0
    method: str = "asinh"

    @property
    def population(self) -> str:
        return INSTRUMENTS[self.instrument].population

    def candidates(self) -> list[Candidate]:
        pop = self.population
        out = []
        for i in range(self.n):
            ra, dec = sky_position(pop, self.seed, i)
            out.append(Candidate(object_id=object_id(pop, self.seed, i), ra=ra, dec=dec,
                                 label=int(object_params(pop, self.seed, i)["label"]),
                                 payload=i))
        return out

    def load(self, candidate: Candidate) -> np.ndarray:
        img, _, _ = render_stamp(self.instrument, self.seed, int(candidate.payload),
                                 self.image_size, normalize=self.method == "asinh")
        if self.method in ("minmax", "khan"):
            from .normalize import normalize

            img = normalize(img, self.method)
        return img


def _normalization(method: str, population: str) -> str:
    if method == "asinh":
        return normalization_string(population)
    unit = "sky-subtracted surface brightness in nanomaggies/arcsec^2"
    return "none:" + unit if method == "none" else f"{method}:of {unit}"


class SimSurvey(Survey):
    name = "sim"
    description = ("GalSim-rendered labelled population (galaxies for sdss/des/lsst, star "
                   "clusters for hst) seen through an instrument model")
    bands = INSTRUMENTS["sdss"].bands
    pixel_scale = INSTRUMENTS["sdss"].pixel_scale
    psf_fwhm = dict(INSTRUMENTS["sdss"].psf_fwhm)
    options = [
        Option("instrument", str, "sdss", f"instrument model: {'|'.join(INSTRUMENTS)}"),
        Option("n", int, 2000, "number of objects"),
        Option("seed", int, 0, "population seed: same seed, same objects on every instrument"),
        Option("size", int, 64, "cutout size in pixels"),
        Option("write_frames", Path, None,
               f"also write FITS frames with WCS and catalog.csv of the first "
               f"{sim_frames.MAX_FRAME_OBJECTS} objects to this folder"),
        Option("normalization", str, "asinh",
               "asinh (physical, same for every instrument) | none | minmax | khan"),
    ]

    def open(self, instrument: str = "sdss", n: int = 2000, seed: int = 0, size: int = 64,
             write_frames: Path | None = None, normalization: str = "asinh") -> SimSource:
        instrument = str(instrument).lower()
        if instrument not in INSTRUMENTS:
            raise UserError(f"unknown --instrument '{instrument}'; use one of "
                            f"{', '.join(INSTRUMENTS)}")
        if not 1 <= int(n) <= MAX_OBJECTS:
            raise UserError(f"--n {n} is out of range; give between 1 and {MAX_OBJECTS}")
        if int(seed) < 0:
            raise UserError(f"--seed {seed} is negative; give a seed >= 0")
        if not 8 <= int(size) <= 1024:
            raise UserError(f"--size {size} is out of range; give 8 to 1024 pixels")
        if normalization not in NORMALIZATIONS:
            raise UserError(f"unknown --normalization '{normalization}'; use one of "
                            f"{', '.join(NORMALIZATIONS)}")
        inst = INSTRUMENTS[instrument]
        pop = inst.population
        extra = {**inst.attrs(), "seed": int(seed), "n": int(n),
                 "generator": f"astrotransfer.surveys.sim v{GENERATOR_VERSION}",
                 "object_id_format": f"{POPULATIONS[pop]['id_prefix']}<seed>-<index:06d>",
                 "field_centre_radec": list(POPULATIONS[pop]["centre"]),
                 "asinh_softening_nmgy_arcsec2": ASINH_SOFTENING[pop]}
        if write_frames is not None:
            try:
                info = sim_frames.write_frames(instrument, int(seed), int(n), Path(write_frames))
            except OSError as exc:
                raise UserError(f"cannot write frames to {write_frames} ({exc}); pass a "
                                f"writable folder to --write-frames") from None
            extra["frames_dir"] = str(Path(write_frames).resolve())
            extra["frames_n"] = info["n"]
        return SimSource(
            survey=f"sim-{instrument}", bands=tuple(inst.bands),
            pixel_scale=inst.pixel_scale, image_size=int(size), psf_fwhm=dict(inst.psf_fwhm),
            class_names=list(POPULATIONS[pop]["class_names"]),
            normalization=_normalization(normalization, pop), extra_attrs=extra,
            instrument=instrument, seed=int(seed), n=int(n), method=normalization)
