"""8-bit stores: JPEG stamps kept as their decoded 8-bit pixels, scaled on read.

Why these tests: a uint8 store changes what is on disk, not what any reader gets. Each
test ingests real JPEG (or PNG) files and checks a promise of that change: the float32
cutouts read back are the float32 store's bit for bit; the disk is smaller; a 16-bit or
float input is never squeezed into 8 bits; a resumed store keeps the type it began with;
an older reader is refused by version rather than reading codes as pixels; the centre-crop
study scales over the whole stamp as before.
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from astrotransfer.errors import UserError
from astrotransfer.ingestion import run_ingest
from astrotransfer.registry import get_registry
from astrotransfer.store import STORE_VERSION, UINT8_ENCODING, CutoutStore, minmax_per_band
from test_ingest_reference import assert_bits_equal
from test_ingest_speed import MAP, write_jpeg_folder


def open_images(folder, **kw):
    return get_registry().get("survey", "images").open(
        images=folder, catalog=folder / "catalog.csv", label_column="klass", label_map=MAP,
        crop=150, size=32, **kw)


def disk_bytes(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_jpeg_store_is_uint8_reads_back_the_float32_store_bit_for_bit(tmp_path):
    folder = write_jpeg_folder(tmp_path / "jpegs", 40)
    auto = CutoutStore.open(run_ingest(open_images(folder), tmp_path / "a.zarr",
                                       workers=2, batch_size=8).out)
    flt = CutoutStore.open(run_ingest(open_images(folder), tmp_path / "f.zarr",
                                      workers=2, batch_size=8, dtype="float32").out)
    assert auto.images.dtype == np.uint8 and flt.images.dtype == np.float32
    assert auto.attrs["store_version"] == 2 and flt.attrs["store_version"] == 1
    assert auto.attrs["pixel_encoding"] == UINT8_ENCODING and "pixel_encoding" not in flt.attrs
    assert auto.n == flt.n == 38
    assert list(auto.column("object_id")) == list(flt.column("object_id"))
    assert_bits_equal(auto.read_images(slice(0, auto.n)), flt.read_images(slice(0, flt.n)),
                      "uint8 store read back against the float32 store")
    rows = np.array([7, 2, 30, 2])  # any order, repeats: the point-read path
    assert_bits_equal(auto.read_images(rows), flt.read_images(rows), "uint8 rows")
    # 0.53 here (smooth synthetic blobs compress well as floats too); 0.45 on GZ1 stamps
    assert disk_bytes(auto.path / "images") < 0.6 * disk_bytes(flt.path / "images")


def test_png_or_explicit_float_input_is_never_squeezed_into_8_bits(tmp_path):
    folder = write_jpeg_folder(tmp_path / "jpegs", 12)
    grey16 = (np.arange(200 * 200, dtype=np.uint32).reshape(200, 200) * 1.6).astype(np.uint16)
    Image.fromarray(grey16).save(folder / "g0001.png")  # a 16-bit PNG beside the JPEGs
    (folder / "g0001.jpeg").unlink()
    source = open_images(folder)
    assert not source.pixel_codes
    with pytest.raises(UserError, match="--dtype uint8 keeps 8-bit pixels.*not 8-bit"):
        run_ingest(source, tmp_path / "u.zarr", dtype="uint8")
    assert not (tmp_path / "u.zarr.partial").exists()  # refused before anything was written
    store = CutoutStore.open(run_ingest(source, tmp_path / "s.zarr", workers=0).out)
    assert store.images.dtype == np.float32


def test_a_resumed_store_keeps_the_type_it_was_started_with(tmp_path):
    folder = write_jpeg_folder(tmp_path / "jpegs", 20)
    source = open_images(folder)
    partial = tmp_path / "r.zarr.partial"  # a float32 ingest killed before its first commit
    partial.mkdir()
    CutoutStore.create(partial, {"survey": "images", "bands": list(source.bands),
                                 "pixel_scale": 1.0, "class_names": source.class_names},
                       (len(source.bands), 32, 32), "float32")
    summary = run_ingest(source, tmp_path / "r.zarr", workers=2, batch_size=8)
    store = CutoutStore.open(summary.out)
    assert store.images.dtype == np.float32 and store.n == 18


def test_stores_are_refused_by_version_and_by_a_mismatched_encoding(tmp_path):
    folder = write_jpeg_folder(tmp_path / "jpegs", 10)
    out = run_ingest(open_images(folder), tmp_path / "a.zarr", workers=0).out
    import zarr

    group = zarr.open_group(str(out), mode="r+")
    group.attrs["store_version"] = STORE_VERSION + 1
    with pytest.raises(UserError, match="newer than this astrotransfer supports"):
        CutoutStore.open(out)
    group.attrs["store_version"] = 2
    del group.attrs["pixel_encoding"]  # uint8 codes nobody says how to scale
    with pytest.raises(UserError, match="do not go together"):
        CutoutStore.open(out)


def test_commit_refuses_float_cutouts_in_a_uint8_store(tmp_path):
    store = CutoutStore.create(tmp_path / "s.zarr", {"survey": "x", "bands": ["g"],
                                                     "pixel_scale": 1.0, "class_names": []},
                               (1, 4, 4), "uint8")
    rows = {"images": np.full((2, 1, 4, 4), 0.5, np.float32), "object_id": np.array(["a", "b"])}
    with pytest.raises(TypeError, match="uint8 pixel codes"):
        store.commit(rows)
    assert store.n == 0


def test_minmax_per_band_is_the_stamp_scaling_bit_for_bit():
    from astrotransfer.surveys.stamp_decode import scale_bands

    rng = np.random.default_rng(1)
    codes = rng.integers(0, 256, (5, 3, 9, 7), dtype=np.uint8)
    codes[1, 2] = 77  # a constant band becomes 0, not NaN
    want = np.stack([scale_bands(c.astype(np.float32)) for c in codes])
    assert_bits_equal(minmax_per_band(codes), want, "minmax_per_band vs scale_bands")
    assert (minmax_per_band(codes)[1, 2] == 0).all()


def test_centre_crop_of_a_uint8_store_crops_the_scaled_pixels(tmp_path):
    from astrotransfer.engine.analysis.studies import crop_store

    folder = write_jpeg_folder(tmp_path / "jpegs", 12)
    store = CutoutStore.open(run_ingest(open_images(folder), tmp_path / "a.zarr",
                                        workers=0).out)
    cropped = CutoutStore.open(crop_store(store.path, tmp_path / "c.zarr", 16))
    assert cropped.images.dtype == np.float32 and "pixel_encoding" not in cropped.attrs
    want = store.read_images(slice(0, store.n))[:, :, 8:24, 8:24]
    assert_bits_equal(cropped.read_images(slice(0, cropped.n)), want, "centre crop")


def test_a_float_copy_of_a_uint8_store_drops_the_encoding_it_copied(tmp_path):
    """tools/bench_gpu.py builds its float16 predict store from a uint8 store's attrs: the
    copy holds scaled pixels, so it must not say its pixels are 8-bit codes (CI caught the
    copy refused as damaged when the real GZ1 stamps were beside the checkout)."""
    folder = write_jpeg_folder(tmp_path / "jpegs", 12)
    src = CutoutStore.open(run_ingest(open_images(folder), tmp_path / "a.zarr", workers=0).out)
    assert src.attrs["pixel_encoding"] == UINT8_ENCODING
    pixels = src.read_images(slice(0, src.n))
    copy = CutoutStore.create(tmp_path / "h.zarr", dict(src.attrs), src.image_shape,
                              dtype="float16")
    copy.commit({"images": pixels.astype(np.float16),
                 "object_id": np.array([f"r{i}" for i in range(src.n)])})
    reopened = CutoutStore.open(copy.path)
    assert "pixel_encoding" not in reopened.attrs and reopened.images.dtype == np.float16
    assert_bits_equal(reopened.read_images(slice(0, src.n)),
                      pixels.astype(np.float16).astype(np.float32),
                      "float16 copy of a uint8 store")


@pytest.mark.parametrize("survey", ["gz1_sdss", "jwst_ceers"])
def test_real_stamps_read_back_bit_for_bit_from_half_the_disk(tmp_path, survey):
    """The claim on real images: GZ1's colour SDSS JPEGs and CEERS's greyscale NIRCam
    JPEGs (the first 300 catalog rows of each, read in place), ingested into the default
    uint8 store and into a float32 one, read back identically; the uint8 store is smaller."""
    from conftest import shared_data

    data = shared_data(survey)
    rows = (data / "labels.csv").read_text().splitlines()[:301]
    catalog = tmp_path / "labels.csv"
    catalog.write_text("\n".join(rows) + "\n")
    id_column, label = (("objid", dict(label_column="gz1_class", drop_unmapped=True,
                                       label_map="0=elliptical,1=spiral,2=spiral,3=spiral"))
                        if survey == "gz1_sdss" else
                        ("id", dict(label_column="label", drop_unmapped=True,
                                    label_map="smooth=elliptical,featured=spiral")))
    stores = {}
    for dtype in ("auto", "float32"):
        source = get_registry().get("survey", "images").open(
            images=data / "images", catalog=catalog, id_column=id_column, crop=None, size=64,
            **label)
        stores[dtype] = CutoutStore.open(run_ingest(source, tmp_path / f"{dtype}.zarr",
                                                    workers=2, dtype=dtype).out)
    auto, flt = stores["auto"], stores["float32"]
    assert auto.images.dtype == np.uint8 and auto.n == flt.n > 150
    assert auto.bands == flt.bands == (["r", "g", "b"] if survey == "gz1_sdss" else ["grey"])
    assert_bits_equal(auto.read_images(slice(0, auto.n)), flt.read_images(slice(0, flt.n)),
                      f"real {survey} stamps")
    assert disk_bytes(auto.path / "images") < 0.6 * disk_bytes(flt.path / "images")
