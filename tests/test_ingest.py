"""Ingest: the images survey, bad input, per-object skips, kill-and-resume, locking."""
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

from astrotransfer.store import CutoutStore, check_store
from conftest import error_lines, run_cli, write_image_folder

MAP = "0=round,1=flat,2=flat"


def ingest_images(folder: Path, out: Path, *extra: str):
    return run_cli("ingest", "images", "--images", folder, "--catalog", folder / "catalog.csv",
                   "--label-column", "klass", "--label-map", MAP, "--size", 24, "--out", out, *extra)


def assert_one_line_error(proc, *needles: str):
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0, proc.stdout
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_images_ingest_with_bad_rows(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", n=24)
    (folder / "obj005.png").unlink()  # missing file
    data = (folder / "obj006.png").read_bytes()
    (folder / "obj006.png").write_bytes(data[: len(data) // 2])  # truncated image
    out = tmp_path / "s.zarr"
    proc = ingest_images(folder, out, "--id-column", "objid")
    assert proc.returncode == 0, proc.stderr
    assert "ingested 22 objects" in proc.stderr and "skipped 2" in proc.stderr
    store = CutoutStore.open(out)
    assert store.n == 22 and store.class_names == ["round", "flat"]
    reasons = dict(store.skipped())
    assert reasons["obj005"].startswith("missing file")
    assert reasons["obj006"].startswith("corrupt image")
    images = store.read_images(np.arange(store.n))
    assert images.shape == (22, 3, 24, 24)
    assert images.min() >= 0 and images.max() <= 1 and np.isclose(images[0].max(), 1)
    assert set(store.column("label")) == {0, 1}
    report = check_store(out)
    assert report["unique_ids"] == 22
    strict = ingest_images(folder, tmp_path / "strict.zarr", "--strict")
    assert_one_line_error(strict, "obj005", "--strict")
    assert not (tmp_path / "strict.zarr").exists()
    assert not (tmp_path / "strict.zarr.partial").exists()


@pytest.mark.parametrize("case", ["survey", "folder", "id_column", "unmapped", "all_unusable"])
def test_ingest_bad_input_is_one_line(tmp_path, case):
    folder = write_image_folder(tmp_path / "imgs", n=9)
    out = tmp_path / "bad.zarr"
    if case == "survey":
        proc = run_cli("ingest", "nosuchsurvey", "--out", out)
        assert_one_line_error(proc, "nosuchsurvey", "images")
    elif case == "folder":
        proc = run_cli("ingest", "images", "--images", tmp_path / "nope", "--catalog",
                       folder / "catalog.csv", "--out", out)
        assert_one_line_error(proc, "nope", "does not exist")
    elif case == "id_column":
        proc = ingest_images(folder, out, "--id-column", "ID")
        assert_one_line_error(proc, "'ID'", "--id-column")
    elif case == "unmapped":
        proc = run_cli("ingest", "images", "--images", folder, "--catalog", folder / "catalog.csv",
                       "--label-column", "klass", "--label-map", "0=round,1=flat", "--out", out)
        assert_one_line_error(proc, "unmapped", "--drop-unmapped")
    else:
        for p in folder.glob("*.png"):
            p.write_bytes(b"")  # every image is empty: all rows unusable
        proc = ingest_images(folder, out)
        assert_one_line_error(proc, "no object", "corrupt image")
    assert not out.exists() and not Path(str(out) + ".partial").exists()


def _committed(path: Path) -> int:
    try:
        return int(zarr.open_group(str(path), mode="r").attrs.get("n_committed", 0))
    except Exception:
        return 0


def test_killed_ingest_resumes_without_loss_or_duplicates(tmp_path):
    out = tmp_path / "sim.zarr"
    args = ["ingest", "sim", "--instrument", "sdss", "--n", "400", "--size", "48",
            "--batch-size", "20", "--out", str(out)]
    cmd = [sys.executable, "-m", "astrotransfer.cli", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = Path(str(out) + ".partial")
    deadline = time.time() + 240
    while _committed(partial) < 60 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be killed; make it bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _committed(partial)
    assert 0 < done_before < 400 and not out.exists()
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert f"resumed after {done_before} done" in again.stderr
    report = check_store(out)
    assert report["n"] == 400 and report["unique_ids"] == 400
    ok = run_cli("store", "check", out)
    assert ok.returncode == 0 and "400 objects" in ok.stdout
    # the resumed store equals an uninterrupted one, object for object
    ref = tmp_path / "ref.zarr"
    assert run_cli(*args[:-1], str(ref)).returncode == 0
    a, b = CutoutStore.open(out), CutoutStore.open(ref)
    oa, ob = a.column("object_id"), b.column("object_id")
    ia, ib = np.argsort(oa), np.argsort(ob)
    assert (oa[ia] == ob[ib]).all() and (a.column("split")[ia] == b.column("split")[ib]).all()
    np.testing.assert_array_equal(a.read_images(ia[:50]), b.read_images(ib[:50]))


def test_second_writer_is_refused(tmp_path):
    out = tmp_path / "sim.zarr"
    args = ["ingest", "sim", "--n", "3000", "--size", "64", "--batch-size", "10", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-m", "astrotransfer.cli", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = Path(str(out) + ".partial")
    deadline = time.time() + 240
    while _committed(partial) < 10 and time.time() < deadline and first.poll() is None:
        time.sleep(0.05)
    second = run_cli(*args)
    first.kill()
    first.wait()
    assert_one_line_error(second, "locked")


def test_store_check_detects_damage(tmp_path):
    folder = write_image_folder(tmp_path / "imgs", n=9)
    out = tmp_path / "s.zarr"
    assert ingest_images(folder, out).returncode == 0
    import shutil
    shutil.rmtree(out / "label")
    proc = run_cli("store", "check", out)
    assert_one_line_error(proc, "label")
