"""Two writers on one store, run directory or catalog: the second is refused, never interleaved.

Each writer holds an flock on its output folder (`store.locked`): the store's `.partial`
folder during ingest (and the store itself while `embed` writes), the run directory for the
whole of `train`, and the catalog's `.partial` parts folder for `predict`. The second writer
here is a real `astrotransfer` process; the first is either another real process (train) or
this test process holding the same lock through the same API (store, catalog), which makes
the timing deterministic. After the refusal the first writer's output must be exactly what
it would have been alone.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from astrotransfer.catalog import PartWriter
from astrotransfer.store import CutoutStore, check_store, locked
from conftest import TINY_BACKBONE, error_lines, run_cli, tiny_run_copy


def assert_refused(proc, *needles):
    lines = error_lines(proc.stderr)
    assert proc.returncode != 0, proc.stdout
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in ("locked by another astrotransfer process", *needles):
        assert needle in lines[0], lines[0]


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def run_dir(tiny_run_master, tmp_path_factory) -> Path:
    return tiny_run_copy(tiny_run_master, tmp_path_factory.mktemp("lockrun") / "run")


def test_store_second_ingest_is_refused_while_one_holds_it(tmp_path):
    out = tmp_path / "s.zarr"
    args = ["ingest", "sim", "--n", "30", "--size", "16", "--out", out]
    partial = out.with_name("s.zarr.partial")
    partial.mkdir()
    with locked(partial, "store"):  # an ingest in progress
        second = run_cli(*args)
        assert list(partial.iterdir()) == []  # the refused writer wrote nothing
    assert_refused(second, "s.zarr.partial")
    assert not out.exists()
    first = run_cli(*args)  # the lock is gone with its holder
    assert first.returncode == 0, first.stderr
    assert check_store(out)["unique_ids"] == 30


def test_embed_into_a_locked_store_is_refused(run_dir, sim_pair, tmp_path):
    import shutil
    store = tmp_path / "copy.zarr"
    shutil.copytree(sim_pair[0], store)  # the run's own bands: no band-mapping note on stderr
    before = tree(store)
    with locked(store, "store"):
        proc = run_cli("embed", run_dir, "--data", store)
    assert_refused(proc, "copy.zarr")
    assert tree(store) == before


def test_second_train_on_a_running_run_directory_is_refused(sim_pair, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--source", sim_pair[0], "--out", out, "--backbone", TINY_BACKBONE,
            "--pretrained", "none", "--epochs", "40", "--batch-size", "16", "--device", "cpu"]
    first = subprocess.Popen([sys.executable, "-m", "astrotransfer.cli", *map(str, args)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        deadline = time.time() + 240
        while not (out / "last.pt").exists() and time.time() < deadline:
            assert first.poll() is None, "the first train ended early"
            time.sleep(0.05)
        second = run_cli(*args, "--resume")  # a second writer on the same run directory
        assert first.poll() is None, "the first train finished before the second was refused"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert_refused(second, "run directory", str(out))
    # no interleaving: one writer's epochs, each once, in order, and its config untouched
    epochs = [json.loads(x)["epoch"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, len(epochs) + 1)) and epochs
    assert "epochs: 40" in (out / "config.yaml").read_text()


def test_second_predict_into_a_catalog_being_written_is_refused(run_dir, sim_pair, tmp_path):
    out = tmp_path / "cat.parquet"
    info = json.loads((run_dir / "run.json").read_text())
    store = CutoutStore.open(sim_pair[0])
    manifest = {"run_id": info["run_id"], "store": str(Path(sim_pair[0]).resolve()),
                "split": "all", "n": store.n, "batch_size": 16, "embedding": False}
    holder = PartWriter(out, manifest)  # a predict in progress, holding the parts folder
    try:
        args = ["predict", run_dir, "--data", sim_pair[0], "--out", out, "--batch-size", "16"]
        second = run_cli(*args)
        assert holder.done_chunks() == set()  # the refused writer wrote no part
    finally:
        holder.close()
    assert_refused(second, "cat.parquet.partial")
    assert not out.exists()
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    table = pd.read_parquet(out)
    assert len(table) == store.n and table["object_id"].is_unique
    assert set(table["object_id"]) == set(map(str, store.column("object_id")))
