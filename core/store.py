"""The cutout store: one zarr v3 group per dataset.

Layout (N = committed objects; arrays may be longer, rows past N are uncommitted garbage):
  images (N, C, H, W) float32|float16|uint8, chunked along N; uint8 holds 8-bit source
         pixels as decoded (attrs.pixel_encoding = "uint8-minmax-per-band"), scaled to
         float32 on read exactly as the ingest would have scaled them (`minmax_per_band`)
  object_id, split (str) · ra, dec (float64) · label (int32, -1 unknown) · flags (int32 bits)
  skipped/object_id, skipped/reason (str): objects an ingest could not use, and why
  runs/<run_id>/<name>: per-run outputs (embeddings, probabilities)
  attrs: store_version, survey, bands, pixel_scale, psf_fwhm, class_names, normalization,
         provenance, n_committed, n_skipped, complete, pixel_encoding (uint8 stores)

A batch is committed by writing its rows first and bumping `n_committed` last. zarr's local
store replaces files atomically, so a kill at any point leaves either the old or the new
count, never a torn batch; readers and resumed ingests trust only the first N rows.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from .errors import UserError, disk_space

#: the newest layout this code reads. Version 2 adds uint8 pixel codes; float stores are still
#: written as version 1, so older astrotransfer keeps reading them, while it refuses a uint8
#: store (it would read the codes 0-255 as if they were scaled pixels)
STORE_VERSION = 2
#: how an 8-bit store's pixels become the float32 cutouts every reader gets
UINT8_ENCODING = "uint8-minmax-per-band"
SPLITS = ("train", "val", "test")
PER_OBJECT = {"object_id": str, "ra": "float64", "dec": "float64", "label": "int32",
              "split": str, "flags": "int32"}
REQUIRED_ATTRS = ("store_version", "survey", "bands", "pixel_scale", "class_names", "n_committed")


@contextmanager
def locked(path: Path, what: str = "store") -> Iterator[None]:
    """Hold an exclusive lock on a directory; a second writer is refused, not interleaved.

    flock on the directory itself leaves no lock file behind and is released by the kernel
    when the process dies, so a `kill -9` never leaves a stale lock.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{what} {path} is locked by another astrotransfer process; "
                f"wait for it to finish (two writers at once are refused)"
            ) from None
        yield
    finally:
        os.close(fd)


class CutoutStore:
    def __init__(self, path: Path, group: zarr.Group):
        self.path = Path(path)
        self.group = group

    # ---- opening -------------------------------------------------------------------------
    @classmethod
    def create(cls, path: Path, attrs: dict, image_shape: tuple[int, int, int],
               dtype: str = "float32", chunk_n: int | None = None) -> "CutoutStore":
        c, h, w = image_shape
        if chunk_n is None:  # about 2-4 MB per chunk keeps reads efficient for any cutout size;
            # a power of two, so ingest batches of 256 fill whole chunks (no chunk is read
            # back, merged and compressed again at the next batch)
            fit = max(16, min(4096, (4 << 20) // (c * h * w * np.dtype(dtype).itemsize)))
            chunk_n = 1 << (fit.bit_length() - 1)
        # "a", not "w": "w" deletes and recreates the folder, which would orphan the lock
        # a writer holds on it
        group = zarr.open_group(str(path), mode="a")
        if np.dtype(dtype) == np.uint8:
            # bit-shuffled LZ4: on GZ1 stamps 7.9 KB per 64-px object at 0.07 ms to write,
            # against 17.7 KB and 0.22 ms for the float32 cutouts with zstd -1
            # (docs/benchmarks.md, "Survey-scale throughput")
            codec = BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle")
            attrs = {**attrs, "pixel_encoding": UINT8_ENCODING}
        else:
            # the encoding follows the dtype written here, never attrs copied from another
            # store: float pixels copied out of a uint8 store are already scaled
            attrs = {k: v for k, v in attrs.items() if k != "pixel_encoding"}
            # zstd's fast level -1: 2x cheaper to write than the default level 3 for 20 %
            # more disk (GZ1); at level 3 compressing cost as much CPU as decoding the JPEGs
            codec = ZstdCodec(level=-1)
        group.create_array("images", shape=(0, c, h, w), chunks=(chunk_n, c, h, w), dtype=dtype,
                           compressors=codec)
        for name, dt in PER_OBJECT.items():
            group.create_array(name, shape=(0,), chunks=(max(chunk_n, 4096),), dtype=dt)
        skipped = group.create_group("skipped")
        for name in ("object_id", "reason"):
            skipped.create_array(name, shape=(0,), chunks=(4096,), dtype=str)
        group.create_group("runs")
        version = 2 if np.dtype(dtype) == np.uint8 else 1  # the oldest reader that can read it
        group.attrs.update({**attrs, "store_version": version, "n_committed": 0,
                            "n_skipped": 0, "complete": False})
        return cls(path, group)

    @classmethod
    def open(cls, path: Path | str, mode: str = "r") -> "CutoutStore":
        path = Path(path)
        if not path.exists():
            raise UserError(f"store {path} does not exist; create it with `astrotransfer ingest`")
        try:
            group = zarr.open_group(str(path), mode=mode)
        except Exception as exc:
            raise UserError(f"{path} is not a readable zarr store ({exc}); re-run the ingest") from None
        attrs = dict(group.attrs)
        missing = [a for a in REQUIRED_ATTRS if a not in attrs]
        if missing:
            raise UserError(f"{path} is not an astrotransfer store (missing attributes "
                            f"{', '.join(missing)}); re-create it with `astrotransfer ingest`")
        if attrs["store_version"] > STORE_VERSION:
            raise UserError(f"store {path} has version {attrs['store_version']}, newer than this "
                            f"astrotransfer supports ({STORE_VERSION}); upgrade astrotransfer")
        for name in ("images", *PER_OBJECT):
            if name not in group:
                raise UserError(f"store {path} is missing its '{name}' array; it is damaged, "
                                f"re-run the ingest into a new store")
        if (group["images"].dtype == np.uint8) != (attrs.get("pixel_encoding") == UINT8_ENCODING):
            raise UserError(f"store {path} has {group['images'].dtype} images with pixel "
                            f"encoding {attrs.get('pixel_encoding')!r}, which do not go "
                            f"together; it is damaged, re-run the ingest into a new store")
        return cls(path, group)

    # ---- facts ---------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def n(self) -> int:
        return int(self.group.attrs["n_committed"])

    @property
    def bands(self) -> list[str]:
        return list(self.group.attrs["bands"])

    @property
    def class_names(self) -> list[str]:
        return list(self.group.attrs["class_names"])

    @property
    def images(self) -> zarr.Array:
        return self.group["images"]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def column(self, name: str) -> np.ndarray:
        """A committed per-object column (object_id, ra, dec, label, split, flags)."""
        return np.asarray(self.group[name][: self.n])

    def indices(self, split: str = "all") -> np.ndarray:
        if split == "all":
            return np.arange(self.n)
        if split not in SPLITS:
            raise UserError(f"unknown split '{split}'; use one of {', '.join(SPLITS)} or all")
        return np.flatnonzero(self.column("split") == split)

    def labelled_indices(self, split: str, needed_by: str) -> np.ndarray:
        """Rows of `split` with a label; scoring commands cannot do anything without them."""
        rows = self.indices(split)
        rows = rows[self.column("label")[rows] >= 0]
        if len(rows) == 0:
            raise UserError(f"store {self.path} has no labelled objects in split '{split}'; "
                            f"{needed_by} needs labels (try --split all)")
        return rows

    def read_images(self, index: np.ndarray | slice) -> np.ndarray:
        """Images for the given rows as float32, whatever the stored type (uint8 codes are
        scaled here, exactly as the ingest scales float cutouts). Sorted contiguous reads
        keep zarr efficient.

        Args:
            index: row numbers (any order, repeats allowed) or a slice of rows.
        Returns:
            (len(index), C, H, W) float32.
        Example:
            >>> store.read_images(store.indices("test")[:8]).shape       # doctest: +SKIP
            (8, 3, 64, 64)
        """
        if isinstance(index, slice):
            return self._as_float(self.images[index])
        index = np.asarray(index)
        if index.size == 0:
            return np.zeros((0, *self.image_shape), np.float32)
        order = np.argsort(index)
        lo, hi = int(index[order[0]]), int(index[order[-1]]) + 1
        if hi - lo <= 4 * index.size:  # dense enough: one slab read beats many point reads
            return self._as_float(np.asarray(self.images[lo:hi])[index - lo])
        return self._as_float(self.images.get_orthogonal_selection((index,)))

    def _as_float(self, raw) -> np.ndarray:
        raw = np.asarray(raw)
        if raw.dtype == np.uint8:
            return minmax_per_band(raw)
        return np.asarray(raw, dtype=np.float32)

    def skipped(self) -> list[tuple[str, str]]:
        n = int(self.group.attrs.get("n_skipped", 0))
        ids = self.group["skipped/object_id"][:n]
        reasons = self.group["skipped/reason"][:n]
        return list(zip(map(str, ids), map(str, reasons)))

    # ---- writing -------------------------------------------------------------------------
    def commit(self, rows: dict[str, np.ndarray], skipped: list[tuple[str, str]] = ()) -> None:
        """Append a batch of rows (and skip records) and commit them with one attribute write."""
        n0 = self.n
        k = len(rows["object_id"]) if rows else 0
        # zarr rewrites the whole chunk a batch lands in: the batch plus one chunk, at most
        item = self.images.dtype.itemsize * int(np.prod(self.image_shape))
        needed = (k + self.images.chunks[0]) * item if k else None
        with disk_space(self.path, needed=needed, upper_bound=True):  # rows past n_committed
            # are garbage anyway, so a failure anywhere here leaves the last commit valid
            if k:
                self._write_rows(n0, k, rows)
            s0 = int(self.group.attrs.get("n_skipped", 0))
            if skipped:
                for j, name in enumerate(("object_id", "reason")):
                    arr = self.group[f"skipped/{name}"]
                    arr.resize((s0 + len(skipped),))
                    arr[s0:] = np.array([s[j] for s in skipped], dtype=object).astype(str)
            self.group.attrs.update({"n_committed": n0 + k, "n_skipped": s0 + len(skipped)})

    def _write_rows(self, n0: int, k: int, rows: dict[str, np.ndarray]) -> None:
        images = self.images
        if images.dtype == np.uint8:  # codes, never scaled floats: those would be truncated
            pixels = np.asarray(rows["images"])
            if pixels.dtype != np.uint8:
                raise TypeError(f"store {self.path} holds uint8 pixel codes; got {pixels.dtype} "
                                f"cutouts to commit")
            bad = np.zeros(len(pixels), bool)  # integers are always finite
        else:
            with np.errstate(over="ignore"):  # an overflow to inf is refused just below
                pixels = np.asarray(rows["images"], dtype=images.dtype)
            bad = ~np.isfinite(pixels).all(axis=tuple(range(1, pixels.ndim)))
        if bad.any():  # refused at commit time, not found later by `store check`
            ids = np.asarray(rows["object_id"])[bad]
            raise UserError(f"store {self.path}: {int(bad.sum())} object(s) to commit have NaN "
                            f"or inf pixels in the store's {images.dtype} (e.g. {ids[0]}); the "
                            f"survey loader must skip them (SkipObject) or clean the pixels")
        images.resize((n0 + k, *images.shape[1:]))
        images[n0:n0 + k] = pixels
        for name in PER_OBJECT:
            arr = self.group[name]
            arr.resize((n0 + k,))
            values = np.asarray(rows.get(name, np.zeros(k)))
            arr[n0:n0 + k] = values.astype(str) if arr.dtype.kind in "OTU" else values

    def run_group(self, run_id: str) -> zarr.Group:
        return self.group.require_group(f"runs/{run_id}")

    def write_run_array(self, run_id: str, name: str, data: np.ndarray, attrs: dict | None = None):
        """Replace a per-run array in one go: write to a temporary name, then move it in place."""
        grp = self.run_group(run_id)
        tmp = f"_{name}.tmp"
        if tmp in grp:
            del grp[tmp]
        arr = grp.create_array(tmp, shape=data.shape, dtype=data.dtype,
                               chunks=(min(max(1, data.shape[0]), 65536), *data.shape[1:]))
        arr[...] = data
        arr.attrs.update(attrs or {})
        base = Path(self.path) / "runs" / run_id
        if name in grp:
            shutil.rmtree(base / name)
        os.replace(base / tmp, base / name)
        return zarr.open_array(str(base / name), mode="r")


def minmax_per_band(codes: np.ndarray) -> np.ndarray:
    """8-bit cutouts scaled per object and band to [0, 1]: (x - min) / max(max - min, 1e-12).

    The one definition of the `images` survey's scaling of 8-bit pixels, used when an ingest
    scales a decoded stamp and when a uint8 store is read, so both give the same float32
    bits: the same float32 operations in the same order, extremes taken on the 8-bit values
    (exact in float32). A constant band becomes 0.

    Args:
        codes: (..., H, W) uint8; every leading index is one band of one object.
    Returns:
        float32 array of the same shape.
    Example:
        >>> minmax_per_band(np.array([[[[10, 20], [30, 50]]]], np.uint8))[0, 0].tolist()
        [[0.0, 0.25], [0.5, 1.0]]
    """
    codes = np.asarray(codes)
    planes = codes.reshape(*codes.shape[:-2], -1)
    lo = planes.min(axis=-1, keepdims=True).astype(np.float32)
    hi = planes.max(axis=-1, keepdims=True).astype(np.float32)
    out = planes.astype(np.float32)
    out -= lo
    out /= np.maximum(hi - lo, 1e-12)
    return out.reshape(codes.shape)


def check_store(path: Path | str) -> dict:
    """Integrity report of a store; raises UserError with the first problem found."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    if not path.exists() and partial.exists():
        raise UserError(f"store {path} is incomplete: its ingest was interrupted ({partial} "
                        f"exists); run the same ingest command again to resume it")
    store = CutoutStore.open(path)
    n = store.n
    problems = []
    if not store.attrs.get("complete", False):
        problems.append("the ingest never finished (complete=false); re-run it to resume")
    for name in ("images", *PER_OBJECT):
        if store.group[name].shape[0] < n:
            problems.append(f"array '{name}' has {store.group[name].shape[0]} rows, fewer than "
                            f"the {n} committed")
    if problems:
        raise UserError(f"store {path} is broken: {problems[0]}")
    ids = store.column("object_id")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        problems.append(f"{int((counts > 1).sum())} duplicate object ids, e.g. {uniq[counts > 1][0]}")
    bad_split = set(np.unique(store.column("split"))) - set(SPLITS)
    if bad_split:
        problems.append(f"unknown split values {sorted(bad_split)}")
    labels = store.column("label")
    k = len(store.class_names)
    if ((labels < -1) | (labels >= max(k, 0) if k else labels > -1)).any():
        problems.append(f"labels outside -1..{k - 1}")
    n_bad = 0
    chunk = store.images.chunks[0]
    for start in range(0, n, chunk):
        block = np.asarray(store.images[start:min(n, start + chunk)])
        n_bad += int((~np.isfinite(block)).any(axis=(1, 2, 3)).sum())
    if n_bad:
        problems.append(f"{n_bad} images with NaN or inf pixels")
    if problems:
        raise UserError(f"store {path} is broken: {'; '.join(problems)}; re-run the ingest "
                        f"into a new store")
    splits = {s: int((store.column("split") == s).sum()) for s in SPLITS}
    return {"path": str(path), "n": n, "n_skipped": int(store.attrs.get("n_skipped", 0)),
            "unique_ids": int(len(uniq)), "splits": splits, "bands": store.bands,
            "image_shape": list(store.image_shape), "class_names": store.class_names,
            "labelled": int((labels >= 0).sum()), "survey": store.attrs["survey"]}
