"""Faster CPU inference: the ONNX export and ONNX Runtime path, bf16 autocast, the choice.

The speed is measured by tools/bench_inference.py (docs/benchmarks.md); these tests pin
what it must not cost: an exported model and the `onnx`/`auto` prediction path give the
run's torch fp32 probabilities within 1e-4, the cached `model.onnx` is rebuilt when the
checkpoint changes, and bad choices are one-line errors.
"""
from __future__ import annotations

import os
import time

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest

import astrotransfer as at
from conftest import error_lines, run_cli, tiny_run_copy

TOL = 1e-4


@pytest.fixture(scope="module")
def run_and_store(tiny_run_master, sim_pair, tmp_path_factory):
    return tiny_run_copy(tiny_run_master, tmp_path_factory.mktemp("onnx") / "run"), sim_pair[0]


def probs_of(catalog) -> np.ndarray:
    df = pd.read_parquet(catalog)
    return df[[c for c in df.columns if c.startswith("p_")]].to_numpy()


def test_exported_onnx_reproduces_the_runs_probabilities(run_and_store, tmp_path):
    run_dir, store_path = run_and_store
    out = tmp_path / "model.onnx"
    proc = run_cli("export", run_dir, "--out", out, "--format", "onnx")
    assert proc.returncode == 0, proc.stderr
    store = at.open_store(store_path)
    images = store.read_images(np.arange(min(store.n, 48)))
    run = at.load_run(run_dir)
    want = run.predict_array(images)  # torch fp32 (the suite's precision, conftest)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feats, got = session.run(None, {"images": images.astype(np.float32)})
    assert got.shape == want.shape and feats.shape[0] == len(images)
    assert np.abs(got - want).max() < TOL, np.abs(got - want).max()
    np.testing.assert_allclose(feats, run.features_array(images), atol=1e-3)


def test_onnx_predict_equals_fp32_and_caches_the_export(run_and_store, tmp_path):
    run_dir, store = run_and_store
    run = at.load_run(run_dir)
    run.predict(store, tmp_path / "fp32.parquet", precision="fp32")
    run.predict(store, tmp_path / "onnx.parquet", precision="onnx")
    cache = run_dir / "model.onnx"
    assert cache.exists()
    diff = np.abs(probs_of(tmp_path / "onnx.parquet") - probs_of(tmp_path / "fp32.parquet"))
    assert diff.max() < TOL, diff.max()
    stamp = cache.stat().st_mtime_ns
    time.sleep(0.01)
    at.load_run(run_dir).predict(store, tmp_path / "again.parquet", precision="auto")
    assert cache.stat().st_mtime_ns == stamp, "an up-to-date export was rebuilt"
    # a new checkpoint (another training, a restored file) makes the cache stale
    best = run_dir / "best.pt"
    best.write_bytes(best.read_bytes() + b"")  # same bytes: still valid
    os.utime(best)
    at.load_run(run_dir).predict(store, tmp_path / "same.parquet", precision="onnx")
    assert cache.stat().st_mtime_ns == stamp
    cache.write_bytes(b"not an onnx file")
    at.load_run(run_dir).predict(store, tmp_path / "rebuilt.parquet", precision="onnx")
    np.testing.assert_array_equal(probs_of(tmp_path / "rebuilt.parquet"),
                                  probs_of(tmp_path / "onnx.parquet"))


def test_bf16_autocast_stays_close_to_fp32(run_and_store, tmp_path):
    from astrotransfer.engine.inference.precision import native_bf16

    import torch

    if not native_bf16(torch.device("cpu")):
        pytest.skip("this CPU has no native bf16 (AVX-512 BF16 or AMX)")
    run_dir, store = run_and_store
    run = at.load_run(run_dir)
    run.predict(store, tmp_path / "fp32.parquet", precision="fp32")
    run.predict(store, tmp_path / "bf16.parquet", precision="bf16")
    diff = np.abs(probs_of(tmp_path / "bf16.parquet") - probs_of(tmp_path / "fp32.parquet"))
    assert 0 < diff.max() < 0.15, diff.max()  # really bf16, and still the same model


def test_precision_choice_and_bad_values():
    import torch

    from astrotransfer.engine.inference.precision import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "onnx"
    assert resolve_precision("auto", cpu, tta=4) == "fp32"  # ONNX runs the plain model
    assert resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(at.UserError, match="--tta"):
        resolve_precision("onnx", cpu, tta=2)


def test_bad_precision_and_export_paths_are_one_line_errors(run_and_store, tmp_path):
    run_dir, store = run_and_store
    proc = run_cli("predict", run_dir, "--data", store, "--out", tmp_path / "p.parquet",
                   "--precision", "fp16")
    assert proc.returncode != 0 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "fp16" in proc.stderr and "auto, fp32, bf16, onnx" in proc.stderr
    proc = run_cli("export", run_dir, "--out", tmp_path / "nowhere" / "m.onnx")
    assert proc.returncode != 0 and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = run_cli("export", run_dir, "--out", tmp_path / "m.pt")
    assert proc.returncode != 0 and ".onnx" in proc.stderr
