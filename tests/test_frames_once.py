"""FITS frames read once: objects visited frame by frame, compressed frames decompressed
once, memory bounded, and stamps equal to the `reproject_interp` resampling they replace.

The speed is measured by tools/bench_frames.py (docs/benchmarks.md).
"""
from __future__ import annotations

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

import astrotransfer as at
from astrotransfer.registry import get_registry
from astrotransfer.surveys.fits_cutouts import cut_object, output_wcs

SIDE, N_PER_TILE = 400, 12


def write_tiles(folder, tiles=("DES0001+0000", "DES0002+0000"), seed=0):
    """Two small RICE-compressed DES-like tiles (g, r) side by side and a catalog that lists
    their objects interleaved, tile A, tile B, tile A, ..."""
    rng = np.random.default_rng(seed)
    scale = 0.263 / 3600
    rows = []
    for t, tile in enumerate(tiles):
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [10.0 + t * 0.05, 0.0]
        wcs.wcs.crpix = [SIDE / 2 + 0.5, SIDE / 2 + 0.5]
        wcs.wcs.cd = [[-scale, 0], [0, scale]]
        x, y = rng.uniform(60, SIDE - 60, (2, N_PER_TILE))
        ra, dec = wcs.pixel_to_world_values(x, y)
        yy, xx = np.mgrid[:SIDE, :SIDE]
        for band in "gr":
            img = rng.normal(0, 2, (SIDE, SIDE)).astype(np.float32)
            for xi, yi in zip(x, y):
                img += 100 * np.exp(-((xx - xi) ** 2 + (yy - yi) ** 2) / 18.0)
            hdu = fits.CompImageHDU(img, header=wcs.to_header(), name="SCI",
                                    compression_type="RICE_1")
            fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(folder / f"{tile}_r1p01_{band}.fits.fz")
        rows.append([(f"{t + 1}{i:04d}", ra[i], dec[i], tile) for i in range(N_PER_TILE)])
    lines = ["COADD_OBJECT_ID,RA,DEC,TILENAME"]
    for a, b in zip(*rows):
        lines += [f"{r[0]},{r[1]:.8f},{r[2]:.8f},{r[3]}" for r in (a, b)]
    (folder / "catalog.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_each_compressed_frame_is_decompressed_once_and_objects_grouped(tmp_path):
    folder = write_tiles(tmp_path)
    source = get_registry().get("survey", "des").open(
        frames=str(folder), catalog=folder / "catalog.csv", bands="g,r", size=32)
    tiles = [c.payload[1] for c in source.candidates()]
    assert tiles == sorted(tiles, key=tiles.index) and len(set(tiles)) == 2
    assert tiles[:N_PER_TILE] == [tiles[0]] * N_PER_TILE  # grouped, not interleaved
    arrays: dict = {}
    cache = source.frame_set._cache
    for cand in source.candidates():
        source.load(cand)
        whole = [(p, v) for p, v in cache.items() if v[0] is None]
        assert len(whole) <= 2, "more than one decompressed frame per band held"
        for path, (_, src, _) in whole:
            arrays.setdefault(path, set()).add(id(src))
    assert len(arrays) == 4 and all(len(ids) == 1 for ids in arrays.values()), arrays


def test_ingest_des_of_interleaved_catalog_stores_every_object(tmp_path):
    folder = write_tiles(tmp_path)
    store = at.ingest("des", tmp_path / "d.zarr", frames=str(folder),
                      catalog=folder / "catalog.csv", bands="g,r", size=32)
    assert store.n == 2 * N_PER_TILE and store.attrs["n_skipped"] == 0


def test_stamp_equals_the_reproject_resampling_it_replaced(tmp_path):
    from reproject import reproject_interp

    folder = write_tiles(tmp_path)
    source = get_registry().get("survey", "des").open(
        frames=str(folder), catalog=folder / "catalog.csv", bands="g,r", size=32)
    cand = source.candidates()[3]
    stamp, flags, missing = cut_object(source.frame_set, ("g", "r"), cand.ra, cand.dec, 32,
                                       0.263, False, False, 0, cand.payload[1])
    assert flags == 0 and missing == []
    frame = next(f for f in source.frame_set.by_band["g"] if f.tag == cand.payload[1])
    with fits.open(frame.path) as hdul:
        data = hdul[frame.hdu].data.astype(np.float32)
    ref = reproject_interp((data, frame.wcs), output_wcs(cand.ra, cand.dec, 32, 0.263),
                           shape_out=(32, 32), order="bicubic", roundtrip_coords=False)[0]
    assert np.abs(stamp[0] - ref).max() < 1e-3 * np.abs(ref).max(), np.abs(stamp[0] - ref).max()


def test_first_tile_is_decompressed_once_before_the_workers_fork(tmp_path, monkeypatch):
    """Two real forked workers: the first tile's frames are decompressed by the ingest
    process alone (the workers share those pages); later tiles by the workers, each frame
    at most once per worker. Decompressions are logged to a file, which forked workers
    append to as well."""
    import os

    from astrotransfer.ingestion import run_ingest
    from astrotransfer.surveys.frame_set import FrameSet

    folder = write_tiles(tmp_path)
    log = tmp_path / "decompressed.log"
    real = FrameSet.pixels

    def logged(self, frame):
        if frame.path not in self._cache:
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()} {frame.path.name}\n")
        return real(self, frame)

    monkeypatch.setattr(FrameSet, "pixels", logged)
    source = get_registry().get("survey", "des").open(
        frames=str(folder), catalog=folder / "catalog.csv", bands="g,r", size=32)
    first_tile = source.candidates()[0].payload[1]
    summary = run_ingest(source, tmp_path / "d.zarr", workers=2, batch_size=4)
    assert summary.n_ingested == 2 * N_PER_TILE
    events = [line.split() for line in log.read_text().splitlines()]
    by_main = sorted(name for pid, name in events if int(pid) == os.getpid())
    assert by_main == sorted(f"{first_tile}_r1p01_{b}.fits.fz" for b in "gr")
    in_workers = [(pid, name) for pid, name in events if int(pid) != os.getpid()]
    assert not any(name.startswith(first_tile) for _, name in in_workers)
    assert len(in_workers) == len(set(in_workers)) and in_workers, in_workers
    assert source.frame_set._cache == {}, "the ingest process kept its frames after forking"
