"""Shared fixtures: real data location, tiny stores, and a CLI runner in its own process.

Commands are run as real subprocesses (`python -m astrotransfer.cli`) where exit codes,
stderr and kill signals matter; in-process calls are used where only results matter.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ASTROTRANSFER_SHARED_DATA", ROOT.parent / "shared" / "data"))
# The suite's numeric comparisons (reference runs, sharded vs single-process catalogs) were
# written against torch fp32; the ONNX Runtime default (`auto`) is tested on its own in
# tests/test_inference_speed.py. A test that wants `auto` passes precision explicitly.
os.environ.setdefault("ASTROTRANSFER_PRECISION", "fp32")
sys.path.insert(0, str(Path(__file__).parent / "bad_inputs"))  # corpus: forked CLI runs
TINY_BACKBONE = "test_efficientnet"  # timm's own tiny test network: real code path, fast on CPU


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or a skip naming what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data {path} is absent (expected ../shared/data beside the project, "
                    f"or set ASTROTRANSFER_SHARED_DATA)")
    return path


def mini_shared_data(root: Path, gz1_rows: int = 700, ceers_rows: int = 1000,
                     pool: int = 400) -> Path:
    """A small copy of the real ../shared/data tree (the first catalog rows, images linked,
    not copied) under `root`: the same files, folder names and columns, so a command written
    for the full data runs on it verbatim, in a fraction of the ingest time."""
    gz1, ceers = shared_data("gz1_sdss"), shared_data("jwst_ceers")
    data = root / "data"
    for survey, rows, suffix, id_col in ((gz1, gz1_rows, ".jpeg", "objid"),
                                         (ceers, ceers_rows, ".jpg", "id")):
        dest = data / survey.name
        (dest / "images").mkdir(parents=True)
        lines = (survey / "labels.csv").read_text().splitlines()[: rows + 1]
        (dest / "labels.csv").write_text("\n".join(lines) + "\n")
        column = lines[0].split(",").index(id_col)
        for line in lines[1:]:
            name = line.split(",")[column] + suffix
            (dest / "images" / name).symlink_to(survey / "images" / name)
    (data / "jwst_ceers" / "unlabelled").mkdir()
    for image in sorted((ceers / "unlabelled").iterdir())[:pool]:
        (data / "jwst_ceers" / "unlabelled" / image.name).symlink_to(image)
    return data


def run_cli(*args: str, env: dict | None = None, check: bool = False,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """`astrotransfer ARGS` in a separate process; stdout, stderr and the exit code come back.

    By default the process is forked from a forkserver that has already imported torch,
    timm, astropy and the plugins (tests/bad_inputs/corpus.py's `PRELOAD`: nothing built,
    no torch op run, no environment read) and calls `astrotransfer.cli.main(argv)`: the same
    code from `main()` on, in its own process, without paying the interpreter's ~4 s of
    imports for each of the suite's hundreds of commands. `tests/bad_inputs/test_corpus.py
    ::test_runners_agree` checks it answers as `python -m astrotransfer.cli` does; tests of
    start-up itself (import-time warnings, signals, launchers) use `subprocess` directly,
    and ASTROTRANSFER_TEST_CLI=subprocess runs every command the plain way.
    """
    argv = [str(a) for a in args]
    cmd = [sys.executable, "-m", "astrotransfer.cli", *argv]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    if os.environ.get("ASTROTRANSFER_TEST_CLI", "fork") == "subprocess":
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env=full_env)
    else:
        proc = _run_forked(cmd, argv, full_env, timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _run_forked(cmd: list[str], argv: list[str], env: dict,
                timeout: float) -> subprocess.CompletedProcess:
    import tempfile

    from corpus import fork_cli  # tests/bad_inputs, on sys.path below

    with tempfile.TemporaryDirectory(prefix="run-cli-") as tmp:
        code, stdout, stderr = fork_cli(argv, env, os.getcwd(), Path(tmp), timeout)
    if code is None:
        raise subprocess.TimeoutExpired(cmd, timeout, output=stdout, stderr=stderr)
    return subprocess.CompletedProcess(cmd, code, stdout, stderr)


def error_lines(stderr: str) -> list[str]:
    """stderr lines that are not library warnings printed at import time."""
    return [ln for ln in stderr.splitlines()
            if ln.strip() and "[WARNING]" not in ln and "real_accelerator" not in ln]


def make_sim_store(path: Path, instrument: str = "sdss", n: int = 64, size: int = 32,
                   seed: int = 0) -> Path:
    from astrotransfer.ingestion import run_ingest
    from astrotransfer.registry import get_registry

    source = get_registry().get("survey", "sim").open(instrument=instrument, n=n, seed=seed,
                                                       size=size)
    run_ingest(source, path, split_fractions=(0.6, 0.2, 0.2))
    return path


def train_tiny(source: Path, out: Path, **overrides) -> Path:
    """A one-epoch run of the tiny test backbone from random init: the run directory that
    evaluate/predict/lock/security tests need, without their training details."""
    from astrotransfer.config import TrainConfig
    from astrotransfer.engine.training.dispatch import train

    opts = dict(backbone=TINY_BACKBONE, pretrained="none", epochs=1, batch_size=16, seed=0,
                device="cpu")
    train(TrainConfig(source=str(source), out=str(out), **{**opts, **overrides}))
    return out


@pytest.fixture(scope="session")
def tiny_run_master(sim_pair, tmp_path_factory) -> Path:
    """`train_tiny` on the sim SDSS store, trained once per session. Tests never use it
    directly: `tiny_run_copy` hands each module its own copy to read, damage or lock."""
    return train_tiny(sim_pair[0], tmp_path_factory.mktemp("tiny_master") / "run")


@pytest.fixture(scope="session")
def transfer_run_master(sim_pair, tmp_path_factory) -> Path:
    """Two epochs of fine-tuning on sim SDSS with sim DES as target (seed 1), trained once
    per session for the train/predict and analysis tests; use `tiny_run_copy` on it."""
    from astrotransfer.config import TrainConfig
    from astrotransfer.engine.training.dispatch import train

    out = tmp_path_factory.mktemp("transfer_master") / "ft"
    train(TrainConfig(source=str(sim_pair[0]), target=str(sim_pair[1]), out=str(out),
                      backbone=TINY_BACKBONE, pretrained="none", epochs=2, batch_size=16,
                      seed=1))
    return out


def tiny_run_copy(master: Path, dst: Path) -> Path:
    """A copy of a trained run with a fresh run_id, so embeddings it writes into a shared
    store never collide with another copy's."""
    import json
    import shutil
    import uuid

    shutil.copytree(master, dst)
    info = json.loads((dst / "run.json").read_text())
    info["run_id"] = f"{info['run_id']}-{uuid.uuid4().hex[:6]}"
    (dst / "run.json").write_text(json.dumps(info, indent=2))
    return dst


@pytest.fixture(scope="session")
def sim_pair(tmp_path_factory) -> tuple[Path, Path]:
    """A small labelled sim SDSS store and the same galaxies seen by sim DES."""
    base = tmp_path_factory.mktemp("sim")
    return (make_sim_store(base / "sdss.zarr", "sdss", n=96),
            make_sim_store(base / "des.zarr", "des", n=96))


def write_image_folder(folder: Path, n: int = 24, size: int = 40, seed: int = 0) -> Path:
    """PNG cutouts named <id>.png and a catalog.csv with labels 0/1/2 and positions."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows = ["objid,klass,ra,dec"]
    for i in range(n):
        label = i % 3
        yy, xx = np.mgrid[:size, :size] - size / 2
        blob = np.exp(-(xx**2 + (yy * (1 + label)) ** 2) / 40.0)
        img = np.clip(blob[..., None] * 200 + rng.normal(20, 5, (size, size, 3)), 0, 255)
        Image.fromarray(img.astype(np.uint8)).save(folder / f"obj{i:03d}.png")
        rows.append(f"obj{i:03d},{label},{150 + i * 0.01:.5f},{2 + i * 0.01:.5f}")
    (folder / "catalog.csv").write_text("\n".join(rows) + "\n")
    return folder


def start_label_server(*args: str, timeout: float = 240) -> tuple[subprocess.Popen, str]:
    """`astrotransfer label ARGS --port 0` as a real process; returns it and the page URL
    (read from its stdout once it listens). The caller stops it (terminate or kill -9)."""
    import select as _select
    import time

    cmd = [sys.executable, "-m", "astrotransfer.cli", "label", *map(str, args), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = _select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if "labelling page at " in line:
                return proc, line.split("labelling page at ", 1)[1].split()[0]
        if proc.poll() is not None:
            raise AssertionError(f"label server exited {proc.returncode}: {proc.stderr.read()}")
    proc.kill()
    raise AssertionError("label server did not start in time")


@pytest.fixture
def label_store(sim_pair, tmp_path) -> Path:
    """A private copy of the sim DES store (labelling writes sessions into it)."""
    import shutil

    return Path(shutil.copytree(sim_pair[1], tmp_path / "des.zarr"))
