"""The public Python API: docs/python-api.md runs as written, predict_array equals predict,
and the top-level names stay lazy."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import astrotransfer as at
from conftest import ROOT, tiny_run_copy

DOC = ROOT / "docs" / "python-api.md"


def python_blocks(path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def test_python_api_page_runs(tmp_path, monkeypatch):
    """Every ```python block of docs/python-api.md, in order, in one namespace."""
    blocks = python_blocks(DOC)
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    namespace: dict = {"__name__": "__doc_example__"}
    for i, code in enumerate(blocks, 1):
        try:
            exec(compile(code, f"{DOC.name}[block {i}]", "exec"), namespace)
        except Exception as exc:  # name the block, not just the line
            raise AssertionError(f"{DOC.name} block {i} failed: {exc!r}\n{code}") from exc
    assert (tmp_path / "des_predictions.parquet").exists()
    assert namespace["job"].kind == "seeds" and len(namespace["job"].members) == 2


@pytest.fixture(scope="module")
def tiny_run(tiny_run_master, tmp_path_factory):
    return at.load_run(tiny_run_copy(tiny_run_master, tmp_path_factory.mktemp("api") / "run"))


@pytest.mark.parametrize("batch_size,tta", [(7, 1), (256, 8)])
def test_predict_array_equals_predict_on_a_store(tiny_run, sim_pair, tmp_path, batch_size, tta):
    store = at.open_store(sim_pair[1])  # DES: four bands, the run uses three
    out = tmp_path / "cat.csv"
    res = tiny_run.predict(sim_pair[1], out=out, split="test", batch_size=batch_size, tta=tta)
    catalog = pd.read_csv(res["catalog"])
    rows = store.indices("test")
    images = store.read_images(rows)[:, [store.bands.index(b) for b in tiny_run.bands]]
    probs = tiny_run.predict_array(images, batch_size=batch_size, tta=tta)
    assert probs.shape == (len(rows), len(tiny_run.class_names))
    expected = catalog[[f"p_{c}" for c in tiny_run.class_names]].to_numpy()
    np.testing.assert_allclose(probs, expected, rtol=0, atol=1e-6)
    assert (probs.argmax(1) == catalog["pred"].map(tiny_run.class_names.index)).all()
    one = tiny_run.predict_array(images[0], tta=tta)  # a single (C, H, W) cutout
    np.testing.assert_allclose(one[0], probs[0], atol=1e-6)


def test_features_array_matches_embed(tiny_run, sim_pair, tmp_path):
    import shutil

    data = tmp_path / "sdss.zarr"
    shutil.copytree(sim_pair[0], data)
    res = tiny_run.embed(data, split="val")
    store = at.open_store(data)
    grp = store.run_group(res["run_id"])
    rows = np.asarray(grp["rows"][:])
    feats = tiny_run.features_array(store.read_images(rows))
    np.testing.assert_allclose(feats, np.asarray(grp["embeddings"][:]), atol=1e-5)


def test_bad_input_is_one_user_error(tiny_run):
    with pytest.raises(at.UserError, match=r"images must be \(N, 3, H, W\)"):
        tiny_run.predict_array(np.zeros((2, 4, 32, 32), np.float32))
    with pytest.raises(at.UserError, match="unknown plugin kind"):
        at.list_plugins("bogus")
    with pytest.raises(at.UserError, match="has no option"):
        at.ingest("sim", "nowhere.zarr", instrumnet="des")
    with pytest.raises(at.UserError, match="not a run directory"):
        at.load_run(ROOT / "no-such-run").predict_array(np.zeros((1, 3, 32, 32), np.float32))


def test_public_names_are_lazy_and_documented():
    code = ("import sys, astrotransfer as at; assert 'torch' not in sys.modules; "
            "at.load_run; at.open_store; assert 'torch' not in sys.modules; print('lazy')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ})
    assert proc.returncode == 0 and "lazy" in proc.stdout, proc.stderr
    public = [at.ingest, at.train, at.load_run, at.open_store, at.list_plugins,
              at.Run.evaluate, at.Run.predict, at.Run.predict_array, at.Run.features_array,
              at.Run.embed, at.label_errors]
    for fn in public:
        doc = fn.__doc__ or ""
        assert "Args:" in doc and "Returns:" in doc and "Example:" in doc, fn.__qualname__
