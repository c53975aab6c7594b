"""Issue 16's smaller items, each on real files and processes: non-finite pixels refused at
commit time, the sweep of dead ranks' scratch folders, `embed` holding the store lock for
its whole run, the disk-full message, and the stop handler's two modes."""
from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from astrotransfer.errors import DiskFull, SkipObject, UserError, disk_space
from astrotransfer.store import CutoutStore
from conftest import run_cli


def test_float16_overflow_is_skipped_at_ingest_not_committed(tmp_path):
    """A finite float32 cutout above 65504 becomes inf in a float16 store: the ingest skips
    it with the reason, so `store check` never meets an inf pixel."""
    from astrotransfer.ingestion import _load
    from astrotransfer.survey import Candidate

    class Source:
        def load(self, cand):
            return np.full((1, 4, 4), 1e6, np.float32)

    cand = Candidate("big", 0.0, 0.0, 0, {})
    assert _load(Source(), cand, (1, 4, 4), "float32")[0].max() == 1e6
    with pytest.raises(SkipObject, match="overflow the store's float16"):
        _load(Source(), cand, (1, 4, 4), "float16")


def test_store_commit_refuses_non_finite_pixels(tmp_path):
    store = CutoutStore.create(tmp_path / "s.zarr", {"survey": "x", "bands": ["g"],
                                                     "pixel_scale": 1.0, "class_names": []},
                               (1, 4, 4), "float16")
    rows = {"images": np.stack([np.zeros((1, 4, 4)), np.full((1, 4, 4), 1e5)]),
            "object_id": np.array(["ok", "hot"]), "ra": np.zeros(2), "dec": np.zeros(2),
            "label": np.array([-1, -1]), "split": np.array(["train", "train"]),
            "flags": np.zeros(2, int)}
    with pytest.raises(UserError, match=r"1 object\(s\).*e\.g\. hot"):
        store.commit(rows)
    assert CutoutStore.open(tmp_path / "s.zarr").n == 0  # nothing committed


def test_sweep_removes_only_dead_ranks_scratch(tmp_path):
    from astrotransfer.engine.distributed.watchdog import sweep_dead_scratch

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a real pid that no longer runs
    gone = Path(tempfile.mkdtemp(prefix=f"astrotransfer-rank1-pid{dead.pid}-", dir=tmp_path))
    (gone / "run").mkdir()
    alive = Path(tempfile.mkdtemp(prefix=f"astrotransfer-rank1-pid{os.getpid()}-",
                                  dir=tmp_path))
    other = Path(tempfile.mkdtemp(prefix="astrotransfer-rank1-", dir=tmp_path))
    assert sweep_dead_scratch(tmp_path) == [gone]
    assert not gone.exists() and alive.exists() and other.exists()


def test_embed_takes_the_store_lock_before_any_work(tiny_run_master, sim_pair, tmp_path):
    import shutil

    data = tmp_path / "des.zarr"
    shutil.copytree(sim_pair[1], data)
    fd = os.open(data, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another writer holds the store
        res = run_cli("embed", tiny_run_master, "--data", data)
    finally:
        os.close(fd)
    assert res.returncode == 1 and "is locked by another astrotransfer process" in res.stderr
    assert not (data / "runs" / "embeddings").exists()


def test_disk_space_names_path_needed_and_free_and_removes_tmp(tmp_path):
    tmp = tmp_path / ".x.tmp"
    tmp.write_bytes(b"half")
    with pytest.raises(DiskFull) as info:
        with disk_space(tmp_path / "x.bin", needed=2048, tmp=tmp):
            raise OSError(errno.ENOSPC, "No space left on device")
    msg = str(info.value)
    assert f"could not write {tmp_path / 'x.bin'}" in msg and "needs about 2.0 KiB" in msg
    assert "free there" in msg and not tmp.exists()
    with pytest.raises(PermissionError):  # other OS errors pass through untouched
        with disk_space(tmp_path / "x.bin"):
            raise PermissionError(errno.EACCES, "denied")


def test_stop_handler_defers_inside_loops_and_stops_at_once_outside():
    from astrotransfer import interrupt

    with interrupt.stop_on_signals():
        with interrupt.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert interrupt.requested() == "SIGTERM"  # recorded, not raised
            with pytest.raises(interrupt.Stopped, match="stopped by SIGTERM: unit 3; kept"):
                interrupt.check("unit 3", "kept")
        with pytest.raises(interrupt.Stopped, match="before a safe point"):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
