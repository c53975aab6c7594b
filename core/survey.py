"""What a survey plugin provides: its instrument facts, its CLI options, and its objects.

A survey is split into two steps on purpose:
- `Survey.open(**options)` reads and validates the catalog and returns an `IngestSource`.
  All fatal input problems (missing folder, missing column, ...) are raised here as
  `UserError`, before any store exists, so a bad command never leaves a half-written store.
- `IngestSource.load(candidate)` makes one cutout. Per-object problems raise `SkipObject`;
  the ingest loop counts and records them and carries on (`--strict` makes them fatal).
Listing candidates cheaply, apart from loading them, is what lets a killed ingest resume by
object id without touching the pixels already stored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

# Per-object flag bits stored in the `flags` array.
FLAG_BAND_MISSING = 1  # a band had no coverage and was filled with zeros
FLAG_NAN_FILLED = 2  # NaN/masked pixels were filled
FLAG_PADDED = 4  # the object was near the frame edge and the cutout was padded


@dataclass
class Option:
    """One survey-specific CLI option of `astrotransfer ingest <survey>`.

    `name` is the Python parameter name; the flag is `--name-with-dashes`.
    A `default` of `...` makes the option required.
    """

    name: str
    type: type
    default: Any = ...
    help: str = ""


@dataclass
class Candidate:
    """An object listed by the catalog, before its pixels are read."""

    object_id: str
    ra: float = math.nan
    dec: float = math.nan
    label: int = -1
    payload: Any = None  # survey-private: a file path, render parameters, ...


@dataclass
class IngestSource:
    """An opened, validated input: instrument facts plus the objects to ingest.

    Subclasses implement `candidates()` and `load()`; the attributes become store attributes.
    """

    survey: str
    bands: tuple[str, ...]
    pixel_scale: float  # arcsec / pixel
    image_size: int  # cutouts are (len(bands), image_size, image_size)
    psf_fwhm: dict[str, float] = field(default_factory=dict)  # arcsec, per band
    class_names: list[str] = field(default_factory=list)
    normalization: str = "none"
    extra_attrs: dict[str, Any] = field(default_factory=dict)
    # True when load() depends only on the candidate and this source's own state (no open
    # file handles shared between calls, no order dependence): the ingest may then call it
    # in forked worker processes, one per core (`--workers`)
    load_in_workers: ClassVar[bool] = False
    # True when every object's pixels are 8-bit codes that `load_codes` returns unscaled
    # and `load` scales with `store.minmax_per_band`: the ingest then keeps the codes in a
    # uint8 store (4x less to write, bit-identical float32 on read) unless --dtype says
    # otherwise
    pixel_codes: bool = False

    def candidates(self) -> list[Candidate]:
        raise NotImplementedError

    def load(self, candidate: Candidate) -> np.ndarray | tuple[np.ndarray, int]:
        """Return the (C, H, W) float32 cutout, optionally with flag bits; or raise SkipObject."""
        raise NotImplementedError

    def load_codes(self, candidate: Candidate) -> np.ndarray | tuple[np.ndarray, int]:
        """The (C, H, W) uint8 pixels that `load` would scale (sources with `pixel_codes`),
        optionally with flag bits; or raise SkipObject."""
        raise NotImplementedError

    def share_before_fork(self) -> None:
        """Called once before decode workers are forked: read here what every worker would
        otherwise read for itself (e.g. the first decompressed frames); forked workers share
        those pages. Optional."""

    def release_after_fork(self) -> None:
        """Called once the workers are forked: drop what `share_before_fork` read (the
        workers keep their shared copies). Optional."""


class Survey:
    """Base class for survey plugins. Register instances through `register_surveys`."""

    name: str = ""
    description: str = ""
    bands: tuple[str, ...] = ()
    pixel_scale: float = float("nan")
    psf_fwhm: dict[str, float] = {}
    options: list[Option] = []

    def open(self, **options: Any) -> IngestSource:
        raise NotImplementedError
