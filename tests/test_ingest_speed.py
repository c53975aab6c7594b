"""`ingest images` at the decode limit: worker processes, reduced-scale JPEG decoding.

The speed itself is measured by tools/bench_ingest_images.py (docs/benchmarks.md); these
tests pin what the speed must not cost: the same store with 1 or 2 worker processes, a
cutout close to the full-resolution decode, and a `kill -9` that leaves no worker behind,
no lock held and a `.partial` store that resumes to the uninterrupted result.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from astrotransfer.store import CutoutStore, check_store
from conftest import run_cli, shared_data

MAP = "0=round,1=flat,2=flat"


def write_jpeg_folder(folder: Path, n: int, size: int = 200, seed: int = 0) -> Path:
    """Real JPEG stamps (galaxy-like blobs plus noise), a catalog, and two bad files."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    rows = ["objid,klass"]
    for i in range(n):
        label = i % 3
        blob = np.exp(-(xx**2 + (yy * (1 + label)) ** 2) / (size * 2.0))
        img = np.clip(blob[..., None] * 200 + rng.normal(20, 8, (size, size, 3)), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"g{i:04d}.jpeg", quality=90)
        rows.append(f"g{i:04d},{label}")
    (folder / "g0003.jpeg").write_bytes((folder / "g0003.jpeg").read_bytes()[:500])  # truncated
    (folder / "g0005.jpeg").unlink()  # missing
    (folder / "catalog.csv").write_text("\n".join(rows) + "\n")
    return folder


def ingest_args(folder: Path, out: Path, *extra) -> list:
    return ["ingest", "images", "--images", folder, "--catalog", folder / "catalog.csv",
            "--label-column", "klass", "--label-map", MAP, "--crop", 150, "--size", 32,
            "--out", out, *extra]


def test_two_workers_write_the_same_store_as_one(tmp_path):
    folder = write_jpeg_folder(tmp_path / "jpegs", 60)
    stores = {}
    for w in (1, 2):
        out = tmp_path / f"w{w}.zarr"
        proc = run_cli(*ingest_args(folder, out, "--workers", w, "--batch-size", 16))
        assert proc.returncode == 0, proc.stderr
        stores[w] = CutoutStore.open(out)
    a, b = stores[1], stores[2]
    assert a.n == b.n == 58
    for col in ("object_id", "split", "label", "flags"):
        np.testing.assert_array_equal(a.column(col), b.column(col), err_msg=col)
    np.testing.assert_array_equal(a.read_images(slice(0, a.n)), b.read_images(slice(0, b.n)))
    assert a.skipped() == b.skipped()
    assert sorted(r.split(":")[0] for _, r in a.skipped()) == ["corrupt image", "missing file"]


def test_strict_fails_on_the_first_bad_file_with_workers(tmp_path):
    folder = write_jpeg_folder(tmp_path / "jpegs", 12)
    out = tmp_path / "s.zarr"
    proc = run_cli(*ingest_args(folder, out, "--workers", 2, "--strict"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "object g0003: corrupt image" in proc.stderr
    assert not out.exists()


def _children(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc (Linux)."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads worker processes from /proc")
def test_kill_9_leaves_no_worker_and_resumes_to_the_same_store(tmp_path):
    folder = write_jpeg_folder(tmp_path / "jpegs", 400, size=300)
    out, ref = tmp_path / "k.zarr", tmp_path / "ref.zarr"
    args = [str(a) for a in ingest_args(folder, out, "--workers", 2, "--batch-size", 8)]
    proc = subprocess.Popen([sys.executable, "-m", "astrotransfer.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = Path(str(out) + ".partial")
    deadline = time.time() + 120
    committed = 0
    while committed < 24 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
        try:
            committed = int(zarr.open_group(str(partial), mode="r").attrs["n_committed"])
        except Exception:
            committed = 0
    workers = _children(proc.pid)
    assert proc.poll() is None, "ingest finished before the kill; make it bigger"
    assert len(workers) >= 2, f"expected 2 decode workers, saw {workers}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < gone:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "decode workers outlived the killed ingest"
    done = int(zarr.open_group(str(partial), mode="r").attrs["n_committed"])
    again = run_cli(*args)  # the lock was not inherited by a worker: resuming is allowed
    assert again.returncode == 0, again.stderr
    assert "resumed after" in again.stderr
    assert check_store(out)["n"] == 398 and done < 398
    assert run_cli(*ingest_args(folder, ref, "--workers", 1)).returncode == 0
    a, b = CutoutStore.open(out), CutoutStore.open(ref)
    ia, ib = np.argsort(a.column("object_id")), np.argsort(b.column("object_id"))
    np.testing.assert_array_equal(a.column("object_id")[ia], b.column("object_id")[ib])
    np.testing.assert_array_equal(a.read_images(ia), b.read_images(ib))


@pytest.mark.slow
def test_reduced_scale_decode_matches_the_full_resolution_cutout():
    """GZ1 stamps (423 px → crop 212 → 64 px): the draft-mode decode against a full decode
    resized with torch's antialiased bilinear filter (the previous implementation)."""
    import torch
    import torch.nn.functional as F

    from astrotransfer.surveys.stamp_decode import decode_stamp, read_pixels, scale_bands

    images = shared_data("gz1_sdss", "images")
    diffs = []
    for path in sorted(images.iterdir())[:40]:
        full = read_pixels(path)[:, 105:317, 105:317]
        t = F.interpolate(torch.from_numpy(np.ascontiguousarray(full))[None], size=(64, 64),
                          mode="bilinear", antialias=True, align_corners=False)
        ref = scale_bands(t[0].numpy())
        diffs.append(np.abs(decode_stamp(path, 212, 64, 3) - ref).mean())
    assert max(diffs) < 0.01, f"mean abs difference up to {max(diffs):.4f} of the [0, 1] range"
