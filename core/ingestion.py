"""The ingest loop: survey adapter → cutout store, resumable and all-or-nothing.

The store is built at `<out>.partial` and renamed to `<out>` only once complete, so a
reader never sees a half-written store under the final name. A killed ingest leaves the
`.partial` store; the same command run again skips the object ids already committed or
skipped there and carries on, so nothing is duplicated or lost.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from . import __version__, interrupt
from .errors import DiskFull, SkipObject, UserError, check_output_folder
from .ingest_workers import IngestLoader, default_workers
from .progress import progress_bar
from .store import SPLITS, CutoutStore, locked
from .survey import Candidate, IngestSource


@dataclass
class IngestSummary:
    out: Path
    n_ingested: int
    n_skipped: int
    n_resumed: int
    skip_reasons: dict[str, int]
    seconds: float


def parse_split_fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = [float(x) for x in text.split(",")]
    except ValueError:
        parts = []
    if len(parts) != 3 or min(parts) < 0 or abs(sum(parts) - 1) > 1e-6:
        raise UserError(f"--split-fractions '{text}' must be three non-negative numbers "
                        f"summing to 1, e.g. 0.8,0.1,0.1")
    return tuple(parts)  # type: ignore[return-value]


def assign_split(object_id: str, seed: int, fractions: tuple[float, float, float]) -> str:
    """A split that depends only on the id and seed, so resumed and re-run ingests agree."""
    return _split_rule(seed, tuple(fractions))(object_id)


@functools.lru_cache(maxsize=8)
def _split_rule(seed: int, fractions: tuple[float, float, float]):
    """`assign_split` for one seed and one set of fractions, with the edges computed once
    (the ingest asks for every object: numpy's per-call overhead was most of its cost)."""
    edges = [float(e) for e in np.cumsum(fractions)]

    def split_of(object_id: str) -> str:
        digest = hashlib.blake2b(f"{seed}:{object_id}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "little") / 2**64
        # searchsorted(edges, u, side="right"), capped at the last split
        return SPLITS[min(sum(e <= u for e in edges), 2)]

    return split_of


def _reason_key(reason: str) -> str:
    """Group skip reasons for the summary: 'missing file: x.jpeg' → 'missing file'."""
    return reason.split(":", 1)[0].strip()


def _store_attrs(source: IngestSource, fractions, split_seed: int) -> dict:
    return {
        "survey": source.survey,
        "bands": list(source.bands),
        "pixel_scale": float(source.pixel_scale),
        "psf_fwhm": {b: float(v) for b, v in source.psf_fwhm.items()},
        "class_names": list(source.class_names),
        "normalization": source.normalization,
        "split_fractions": list(fractions),
        "split_seed": split_seed,
        "provenance": {
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "toolkit_version": __version__,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        **source.extra_attrs,
    }


def _dedupe(candidates: list[Candidate]) -> tuple[list[Candidate], list[tuple[str, str]]]:
    seen: set[str] = set()
    keep, dupes = [], []
    for c in candidates:
        if c.object_id in seen:
            dupes.append((c.object_id, "duplicate id in catalog: kept the first row"))
        else:
            seen.add(c.object_id)
            keep.append(c)
    return keep, dupes


def run_ingest(source: IngestSource, out: Path, *, split_fractions=(0.8, 0.1, 0.1),
               split_seed: int = 0, batch_size: int = 256, strict: bool = False,
               overwrite: bool = False, dtype: str = "auto",
               workers: int | None = None) -> IngestSummary:
    """Ingest `source` into the store `out`, resuming a killed run's `<out>.partial`.

    Args:
        source: an opened survey input (`Survey.open`).
        out: the store folder to create.
        dtype: the stored pixel type: "auto" (uint8 codes for a source whose pixels are
            8-bit, `pixel_codes`; else float32), "float32", "float16" or "uint8". A resumed
            store keeps the type it was started with.
        workers: decode processes for sources that allow it (`load_in_workers`); None
            means one per core, 0 or 1 decodes in this process.

    Returns:
        The counts of this call (`IngestSummary`).

    Example:
        >>> run_ingest(ImagesSurvey().open(images="stamps"), Path("s.zarr"))  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    out = Path(out)
    partial = out.with_name(out.name + ".partial")
    if out.exists():
        if not overwrite:
            raise UserError(f"store {out} already exists; pass --overwrite to replace it "
                            f"or choose another --out")
    check_output_folder(out.parent)
    candidates, dupes = _dedupe(source.candidates())
    if not candidates:
        raise UserError(f"the {source.survey} input lists no usable objects; "
                        f"check the catalog and its id/label columns")
    if strict and dupes:
        raise UserError(f"object {dupes[0][0]}: {dupes[0][1]} ({len(dupes)} repeated id(s); "
                        f"--strict turns skips into errors; drop --strict to keep the first "
                        f"row of each id)")
    if workers is None:
        workers = default_workers(source)
    elif workers < 0:
        raise UserError(f"--workers {workers} must be 0 or more (0 or 1: decode in this process)")
    if not getattr(source, "load_in_workers", False):
        workers = 0
    shape = (len(source.bands), source.image_size, source.image_size)
    dtype = _stored_dtype(source, partial, dtype)
    load_fn = _load_codes if dtype == "uint8" else functools.partial(_load, dtype=dtype)
    loader = IngestLoader(source, shape, load_fn, workers, batch_size, dtype)
    loader.start()  # forked before the lock below, so no worker inherits the lock
    try:
        partial.mkdir()
        created = True
    except FileExistsError:  # a killed run to resume, or another ingest holding the lock
        created = False
    try:
        with loader, locked(partial, "store"):
            summary = _ingest_locked(source, partial, candidates, dupes, created,
                                     split_fractions, split_seed, batch_size, strict, dtype,
                                     loader)
            if overwrite and out.exists():
                shutil.rmtree(out)
            os.replace(partial, out)
    except BaseException:
        exc = sys.exc_info()[1]
        # a full disk after some commits keeps them: freeing space and rerunning resumes
        kept = isinstance(exc, DiskFull) and _committed_rows(partial) > 0
        if created and not kept and isinstance(exc, (UserError, SkipObject, ValueError,
                                                     OSError)):
            shutil.rmtree(partial, ignore_errors=True)  # nothing half-written from a failed start
        raise
    summary.out = out
    summary.seconds = time.perf_counter() - t0
    return summary


def _stored_dtype(source: IngestSource, partial: Path, dtype: str) -> str:
    """The pixel type to write: a resumed store's own (read before any lock, as the decode
    workers are forked with it), else `dtype` with "auto" resolved for this source."""
    meta = partial / "images" / "zarr.json"
    if meta.exists():
        try:
            return str(json.loads(meta.read_text())["data_type"])
        except (OSError, ValueError, KeyError):
            pass  # a damaged partial store is reported when it is opened
    if dtype == "auto":
        return "uint8" if source.pixel_codes else "float32"
    if dtype == "uint8" and not source.pixel_codes:
        raise UserError(f"--dtype uint8 keeps 8-bit pixels, but the {source.survey} input is "
                        f"not 8-bit (e.g. FITS or PNG files); use --dtype auto or float32")
    return dtype


def _committed_rows(partial: Path) -> int:
    try:
        return CutoutStore.open(partial).n
    except (UserError, OSError):
        return 0


def _ingest_locked(source, partial, candidates, dupes, created, fractions, split_seed,
                   batch_size, strict, dtype, loader: IngestLoader) -> IngestSummary:
    shape = loader.shape
    if created or not (partial / "zarr.json").exists():
        store = CutoutStore.create(partial, _store_attrs(source, fractions, split_seed), shape, dtype)
    else:
        store = CutoutStore.open(partial, mode="r+")
        if store.image_shape != shape or store.bands != list(source.bands):
            raise UserError(f"{partial} was started with other settings (shape "
                            f"{store.image_shape}, bands {store.bands}); delete it or use the "
                            f"original command")
    already_skipped = store.skipped()
    done = set(map(str, store.column("object_id"))) | {i for i, _ in already_skipped}
    n_resumed = len(done)
    todo = [c for c in candidates if c.object_id not in done]
    # duplicate-id records go in last: written earlier, their id would mark the kept row done
    pending_dupes = [d for d in dupes if d not in set(already_skipped)]
    reasons: dict[str, int] = {}
    for _, r in already_skipped:
        reasons[_reason_key(r)] = reasons.get(_reason_key(r), 0) + 1
    split_of = _split_rule(split_seed, tuple(fractions))
    with progress_bar(f"ingest {source.survey}", total=len(candidates)) as advance, \
            interrupt.deferred():
        advance(n_resumed)
        for batch, images in loader.batches(todo, batch_size):
            interrupt.check(f"ingest after {store.n} committed objects of {len(candidates)}",
                            f"{partial} keeps them: run the same command again to resume")
            rows = {k: [] for k in ("object_id", "ra", "dec", "label", "split", "flags")}
            kept: list[int] = []
            skips: list[tuple[str, str]] = []
            for j, (cand, flags, why) in enumerate(batch):
                if why is not None:
                    if strict:
                        raise UserError(f"object {cand.object_id}: {why} (--strict turns skips "
                                        f"into errors; drop --strict to skip such objects)")
                    skips.append((cand.object_id, why))
                    reasons[_reason_key(why)] = reasons.get(_reason_key(why), 0) + 1
                    continue
                kept.append(j)
                rows["object_id"].append(cand.object_id)
                rows["ra"].append(cand.ra)
                rows["dec"].append(cand.dec)
                rows["label"].append(cand.label)
                rows["split"].append(split_of(cand.object_id))
                rows["flags"].append(flags)
            arrays: dict[str, np.ndarray] = {}
            if kept:  # the loader's block as it is when nothing was skipped: no copy
                arrays = {k: np.asarray(v) for k, v in rows.items()}
                arrays["images"] = images if len(kept) == len(images) else images[kept]
            store.commit(arrays, skips)
            advance(len(batch))
    if pending_dupes:
        for _, why in pending_dupes:
            reasons[_reason_key(why)] = reasons.get(_reason_key(why), 0) + 1
        store.commit({}, pending_dupes)
    if store.n == 0:
        detail = ", ".join(f"{k} ({v})" for k, v in sorted(reasons.items())) or "unknown"
        raise UserError(f"no object of the {source.survey} input could be ingested; "
                        f"all were skipped: {detail}")
    store.group.attrs["complete"] = True
    n_skipped = int(store.group.attrs["n_skipped"])
    return IngestSummary(partial, store.n, n_skipped, n_resumed, reasons, 0.0)


def _shaped(result, shape, dtype=None) -> tuple[np.ndarray, int]:
    """A source's `load`/`load_codes` result as (image, flags), the image of `shape`."""
    image, flags = result if isinstance(result, tuple) else (result, 0)
    image = np.asarray(image, dtype=dtype)
    if image.shape != shape:
        raise SkipObject(f"wrong shape: cutout is {image.shape}, expected {shape}")
    return image, int(flags)


def _load_codes(source: IngestSource, cand: Candidate, shape) -> tuple[np.ndarray, int]:
    """`_load` for a uint8 store: the source's unscaled 8-bit pixels."""
    image, flags = _shaped(source.load_codes(cand), shape)
    if image.dtype != np.uint8:
        raise SkipObject(f"not 8-bit: {image.dtype} pixels cannot go in a uint8 store; "
                         f"ingest with --dtype float32")
    return image, flags


def _load(source: IngestSource, cand: Candidate, shape,
          dtype: str = "float32") -> tuple[np.ndarray, int]:
    image, flags = _shaped(source.load(cand), shape, np.float32)
    if not np.isfinite(image).all():
        raise SkipObject("non-finite pixels: NaN or inf left after loading")
    with np.errstate(over="ignore"):  # the overflow is what is being checked
        narrowed = image.astype(dtype) if dtype != "float32" else image
    if not np.isfinite(narrowed).all():
        raise SkipObject(f"pixel values overflow the store's {dtype} (|value| up to "
                         f"{float(np.abs(image).max()):.3g}); ingest with --dtype float32")
    return image, flags
