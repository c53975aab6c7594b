"""The fast ingest paths write exactly the arrays a plain reference computation gives.

Why: the speed work (8-bit stamps scaled in place on a band-major copy, cutouts written
by forked workers into a shared buffer, one sky-to-pixel transform for all bands that
share a WCS) must change nothing but the time taken. Each test ingests real files with two
real worker processes and compares the stored pixels bit for bit (as integers) with a
straightforward computation written here, one object at a time, in this process.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image

from astrotransfer.ingestion import run_ingest
from astrotransfer.registry import get_registry
from astrotransfer.store import CutoutStore
from test_frames_once import write_tiles
from test_ingest_speed import MAP, write_jpeg_folder


def reference_stamp(path: Path, crop: int, size: int) -> np.ndarray:
    """The cutout as the ingest defined it before the speed work: decode (reduced scale
    for a large JPEG), crop+resize, float32, then per band (x - min) / (max - min)."""
    with Image.open(path) as im:
        w, h = im.size
        top, left = (h - crop) // 2, (w - crop) // 2
        box = (left, top, left + crop, top + crop)
        if im.format == "JPEG" and crop >= 2 * size:
            im.draft(None, (math.ceil(w * size / crop), math.ceil(h * size / crop)))
            sx, sy = im.size[0] / w, im.size[1] / h
            box = (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)
        im.load()
        im = im.convert("RGB") if im.mode != "L" else im
        out = np.asarray(im.resize((size, size), Image.Resampling.BILINEAR, box=box),
                         dtype=np.float32)
    out = out[None] if out.ndim == 2 else out.transpose(2, 0, 1)
    lo = out.min(axis=(1, 2), keepdims=True)
    hi = out.max(axis=(1, 2), keepdims=True)
    return ((out - lo) / np.maximum(hi - lo, 1e-12)).astype(np.float32)


def assert_bits_equal(a: np.ndarray, b: np.ndarray, what: str) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype == np.float32, what
    same = (a.view(np.uint32) == b.view(np.uint32)).reshape(len(a), -1).all(axis=1)
    assert same.all(), f"{what}: {int((~same).sum())} of {len(a)} cutouts differ in some bit"


def test_images_with_workers_equal_the_reference_bit_for_bit(tmp_path):
    folder = write_jpeg_folder(tmp_path / "jpegs", 45)  # with a truncated and a missing file
    # flat colour: every band constant, the degenerate case of the scaling (hi == lo)
    Image.fromarray(np.full((200, 200, 3), (77, 140, 9), np.uint8)).save(folder / "g0044.jpeg")
    source = get_registry().get("survey", "images").open(
        images=folder, catalog=folder / "catalog.csv", label_column="klass", label_map=MAP,
        crop=150, size=32)
    summary = run_ingest(source, tmp_path / "s.zarr", workers=2, batch_size=8)
    store = CutoutStore.open(summary.out)
    assert store.n == 43 and summary.n_skipped == 2  # a truncated and a missing file
    ids = store.column("object_id")
    ref = np.stack([reference_stamp(folder / f"{i}.jpeg", 150, 32) for i in ids])
    assert_bits_equal(store.read_images(slice(0, store.n)), ref, "ingest images, 2 workers")


def test_bench_bare_loop_makes_the_ingest_decode_calls(tmp_path):
    """tools/bench_ingest_images.py's bare loop (the decode limit) must do exactly the
    Pillow work of `decode_resized`: same arrays, so neither side does more or less."""
    import sys

    from astrotransfer.surveys.stamp_decode import decode_resized

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from bench_ingest_images import bare_decode

    folder = write_jpeg_folder(tmp_path / "jpegs", 8)
    for path in sorted(folder.glob("*.jpeg")):
        if path.name == "g0003.jpeg":  # the truncated one
            continue
        ours, bench = decode_resized(path, 150, 32), bare_decode(str(path), 150, 32)
        assert ours.dtype == bench.dtype and np.array_equal(ours, bench), path.name


def test_frames_with_workers_equal_per_band_transforms_bit_for_bit(tmp_path):
    """DES tiles whose bands share a WCS: the ingest (two workers, one transform per shared
    WCS) against cutting each object alone with every band transformed on its own."""
    folder = write_tiles(tmp_path)
    des = get_registry().get("survey", "des")
    opts = dict(frames=str(folder), catalog=folder / "catalog.csv", bands="g,r", size=32)
    summary = run_ingest(des.open(**opts), tmp_path / "d.zarr", workers=2, batch_size=5)
    store = CutoutStore.open(summary.out)
    reference = des.open(**opts)
    keys = {f.wcs_key for f in reference.frame_set.frames}
    assert len(keys) == 2, "each tile's g and r frames should share one WCS key"
    for f in reference.frame_set.frames:  # the plain path: every frame transformed alone
        f.wcs_key = ""
    by_id = {c.object_id: c for c in reference.candidates()}
    ids = store.column("object_id")
    assert store.n == len(by_id) == 24
    ref = np.stack([reference.load(by_id[i])[0] for i in ids])
    assert_bits_equal(store.read_images(slice(0, store.n)), ref, "ingest des, 2 workers")
