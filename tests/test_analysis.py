"""Evaluation extras, embeddings, studies, label-free selection and streaming predict, on tiny
sim stores and timm's tiny test network."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import zarr

from astrotransfer.config import TrainConfig
from astrotransfer.engine.training.dispatch import train
from astrotransfer.errors import UserError
from astrotransfer.store import CutoutStore
from conftest import TINY_BACKBONE, make_sim_store, run_cli, tiny_run_copy


def _train(out: Path, source: Path, target: Path, **kw) -> Path:
    opts = dict(backbone=TINY_BACKBONE, pretrained="none", epochs=2, batch_size=16, seed=1)
    train(TrainConfig(source=str(source), target=str(target), out=str(out), **{**opts, **kw}))
    return out


@pytest.fixture(scope="module")
def runs(sim_pair, transfer_run_master, tmp_path_factory):
    """Two runs of different settings on the shared sim SDSS → DES pair (the first is the
    session's shared transfer run, copied)."""
    src, tgt = sim_pair
    base = tmp_path_factory.mktemp("analysis_runs")
    a = tiny_run_copy(transfer_run_master, base / "a")
    b = _train(base / "b", src, tgt, epochs=1, lr=3e-3, seed=2)
    return a, b


@pytest.fixture
def unlabelled_copy(sim_pair, tmp_path):
    path = tmp_path / "unlabelled.zarr"
    shutil.copytree(sim_pair[1], path)
    labels = zarr.open_array(str(path / "label"), mode="r+")
    labels[:] = -1
    return path


# --------------------------------------------------------------------------- calibration
def test_temperature_scaling_repairs_overconfidence():
    from astrotransfer.engine.evaluation.calibration import calibration_block

    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 3)) * 1.5
    p_true = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = (rng.random(4000)[:, None] > np.cumsum(p_true, 1)).sum(1)
    over = np.exp(3 * z) / np.exp(3 * z).sum(1, keepdims=True)  # logits tripled: overconfident
    block = calibration_block(over[:2000], y[:2000], {"split": "val"}, over[2000:], y[2000:])
    assert block["temperature"] == pytest.approx(3.0, rel=0.15)
    for part in ("fit", "eval"):
        assert block[part]["ece_after"] < 0.5 * block[part]["ece_before"]
        assert block[part]["nll_after"] < block[part]["nll_before"]


def test_evaluate_has_calibration_and_label_free_blocks(runs, sim_pair):
    from astrotransfer.engine.evaluation.evaluate import evaluate_run

    m = evaluate_run(runs[0], sim_pair[1], split="val")
    cal = m["calibration"]
    assert cal["temperature"] > 0 and cal["fit"]["split"] == "val"
    assert cal["fit"]["n"] == m["n"] > 0
    assert cal["fit"]["ece_after"] <= cal["fit"]["ece_before"] + 1e-9
    assert cal["fit"]["nll_after"] <= cal["fit"]["nll_before"] + 1e-9
    lf = m["label_free"]
    for key in ("entropy", "im", "mmd", "dev"):
        assert np.isfinite(lf[key]), key
    assert 0 <= lf["entropy"] <= np.log(2) + 1e-9 and -np.log(2) - 1e-9 <= lf["im"] <= 1e-9
    saved = json.loads((runs[0] / "metrics.json").read_text())
    assert saved["calibration"]["temperature"] == pytest.approx(cal["temperature"])
    report = Path(m["report_dir"])
    html = (report / "report.html").read_text()
    assert "Calibration (temperature scaling)" in html and "Label-free scores" in html
    # the labels the run contradicts, named by id, on objects it never trained on
    le = m["label_errors"]
    assert le["n"] == m["n"] and not le["in_sample"] and 0 <= le["error_rate"] < 1
    ids = set(CutoutStore.open(sim_pair[1]).column("object_id"))
    assert len(le["suspects"]) == min(20, le["n_issues"])
    assert all(s["object_id"] in ids and s["label"] != s["model_class"] for s in le["suspects"])
    assert "Labels the model contradicts" in html
    assert evaluate_run(runs[0], sim_pair[1], split="train", report=False)[
        "label_errors"]["in_sample"]
    for png in ("roc.png", "confusion.png", "accuracy_vs_confidence.png", "entropy.png",
                "per_class_accuracy.png", "reliability.png"):
        assert (report / png).stat().st_size > 1000, png


def test_evaluate_unlabelled_store_gives_label_free_scores(runs, unlabelled_copy):
    from astrotransfer.engine.evaluation.evaluate import evaluate_run

    m = evaluate_run(runs[0], unlabelled_copy, split="all")
    assert m["n_labelled"] == 0 and m["n_objects"] == CutoutStore.open(unlabelled_copy).n
    assert "accuracy" not in m
    assert all(np.isfinite(m["label_free"][k]) for k in ("entropy", "im", "mmd", "dev"))
    assert m["calibration"]["fit"]["store"].endswith("sdss.zarr")  # fitted on the source


def test_dev_follows_the_target_risk():
    """Loss is high where the target lives: DEV must move from the source loss towards it."""
    from astrotransfer.engine.evaluation.label_free import dev_risk

    rng = np.random.default_rng(0)
    src_train, val = rng.normal(0, 1, (1500, 4)), rng.normal(0, 1, (1500, 4))
    tgt = rng.normal(0, 1, (1500, 4)) + np.array([1.5, 0, 0, 0])
    loss = lambda x: np.where(x[:, 0] > 1.0, 2.0, 0.1)  # noqa: E731
    res = dev_risk(src_train, tgt, val, loss(val))
    true_target_risk = loss(tgt).mean()
    assert abs(res["dev"] - true_target_risk) < 0.5 * abs(loss(val).mean() - true_target_risk)
    same = dev_risk(src_train, rng.normal(0, 1, (1500, 4)), val, loss(val))
    assert same["dev"] == pytest.approx(loss(val).mean(), rel=0.15)


# --------------------------------------------------------------------------- seeds
def test_seed_directory_is_evaluated_as_an_ensemble(runs, sim_pair, tmp_path):
    from astrotransfer.engine.evaluation.evaluate import evaluate_run, predict_split

    parent = tmp_path / "ens"
    for i, run in enumerate(runs):
        shutil.copytree(run, parent / f"seed_{i}", ignore=shutil.ignore_patterns("eval"))
    m = evaluate_run(parent, sim_pair[1], split="test")
    assert m["seeds"] == ["seed_0", "seed_1"] and m["aggregate"]["n_runs"] == 2
    per_seed = [predict_split(parent / f"seed_{i}", sim_pair[1], "test") for i in range(2)]
    accs = [float((p.argmax(1) == y).mean()) for y, p, *_ in per_seed]
    assert m["aggregate"]["mean"]["accuracy"] == pytest.approx(np.mean(accs))
    assert m["aggregate"]["std"]["accuracy"] == pytest.approx(np.std(accs, ddof=1))
    y = per_seed[0][0]
    ens = (per_seed[0][1] + per_seed[1][1]) / 2
    assert m["ensemble"]["accuracy"] == pytest.approx(float((ens.argmax(1) == y).mean()))
    assert "temperature" in m["ensemble"]["calibration"]
    assert m["ensemble"]["label_errors"]["n"] == m["ensemble"]["n"]
    out = Path(m["report_dir"])
    assert (out / "report.html").exists() and (out / "ensemble" / "reliability.png").exists()
    assert (parent / "seed_1" / "metrics.json").exists()  # each seed keeps its own


# --------------------------------------------------------------------------- embeddings
def test_cluster_purity_on_known_blobs():
    from astrotransfer.engine.analysis.embedding import cluster_purity

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (50, 3)), rng.normal(5, 0.1, (50, 3))])
    y = np.r_[np.zeros(50, int), np.ones(50, int)]
    assert cluster_purity(x, y, 2)["purity"] == pytest.approx(1.0)
    mixed = cluster_purity(x, rng.permutation(y), 2)
    assert 0.5 <= mixed["purity"] < 0.75


def test_embed_map_png_and_purity(runs, sim_pair, tmp_path):
    store = tmp_path / "copy.zarr"
    shutil.copytree(sim_pair[1], store)
    proc = run_cli("embed", runs[0], "--data", store, "--map", "tsne", "--clusters", "2")
    assert proc.returncode == 0, proc.stderr
    res = json.loads((runs[0] / "embedding" / "copy.zarr_all" / "embedding.json").read_text())
    assert res["map"] == "tsne" and res["n_points"] == CutoutStore.open(store).n
    assert Path(res["png"]).stat().st_size > 5000 and res["coloured_by"] == "label"
    assert 0.0 <= res["clusters"]["purity"] <= 1.0 and sum(res["clusters"]["sizes"]) == 96
    assert "purity" in proc.stdout


def test_umap_missing_is_a_clear_error(runs, sim_pair):
    pytest.importorskip("sklearn")
    if __import__("importlib").util.find_spec("umap") is not None:
        pytest.skip("umap-learn is installed here")
    from astrotransfer.engine.analysis.embedding import map_embedding

    with pytest.raises(UserError, match="pip install umap-learn"):
        map_embedding(runs[0], sim_pair[1], method="umap")


def test_similar_returns_query_first(runs, sim_pair):
    from astrotransfer.engine.analysis.embedding import similar_objects

    ids = CutoutStore.open(sim_pair[1]).column("object_id")
    query = str(ids[7])
    res = similar_objects(runs[0], sim_pair[1], query, k=6)
    nb = res["neighbours"]
    assert len(nb) == 6 and nb[0]["object_id"] == query and nb[0]["distance"] == 0.0
    assert len({n["object_id"] for n in nb}) == 6
    d = [n["distance"] for n in nb]
    assert d == sorted(d) and d[1] > 0
    assert Path(res["png"]).stat().st_size > 5000
    with pytest.raises(UserError, match="not in store"):
        similar_objects(runs[0], sim_pair[1], "no-such-object", k=3)


def test_similar_cli(runs, sim_pair):
    query = str(CutoutStore.open(sim_pair[1]).column("object_id")[3])
    proc = run_cli("similar", runs[0], "--data", sim_pair[1], "--id", query, "-k", "4")
    assert proc.returncode == 0, proc.stderr
    assert query in proc.stdout and "4 nearest" in proc.stdout


# --------------------------------------------------------------------------- studies
def test_band_study_reports_every_band(runs, sim_pair):
    from astrotransfer.engine.evaluation.evaluate import predict_split
    from astrotransfer.engine.analysis.studies import band_study

    res = band_study(runs[0], sim_pair[1], "test", batch_size=16)
    assert list(res["drops"]) == ["g", "r", "i"]
    y, p, *_ = predict_split(runs[0], sim_pair[1], "test")
    assert res["baseline_accuracy"] == pytest.approx(float((p.argmax(1) == y).mean()))
    for band, drop in res["drops"].items():
        assert drop == pytest.approx(res["baseline_accuracy"] - res["accuracy"][band])
    assert Path(res["png"]).exists() and json.loads(Path(res["json"]).read_text())["n"] == len(y)


def test_crop_study_trains_each_size(sim_pair, tmp_path):
    from astrotransfer.engine.analysis.studies import crop_store, crop_study

    src = sim_pair[0]
    res = crop_study(src, tmp_path / "crops", sizes=(8, 16),
                     train_options=dict(backbone=TINY_BACKBONE, pretrained="none", epochs=1,
                                        batch_size=32))
    assert [r["crop"] for r in res["results"]] == [8, 16]
    assert all(0 <= r["accuracy"] <= 1 for r in res["results"])
    assert Path(res["png"]).exists()
    cropped = CutoutStore.open(tmp_path / "crops" / "crop_8" / "source.zarr")
    full = CutoutStore.open(src)
    assert cropped.image_shape == (3, 8, 8) and cropped.n == full.n
    np.testing.assert_array_equal(cropped.read_images(slice(0, 4)),
                                  full.read_images(slice(0, 4))[:, :, 12:20, 12:20])
    with pytest.raises(UserError, match="smaller than the 64-px crop"):
        crop_store(src, tmp_path / "too_big.zarr", 64)


# --------------------------------------------------------------------------- selection
def test_rank_orders_runs_and_lists_them(runs, sim_pair, tmp_path):
    from astrotransfer.engine.evaluation.label_free import rank_runs

    out = tmp_path / "rank.json"
    res = rank_runs(list(runs), sim_pair[1], "im", out=out)
    saved = json.loads(out.read_text())
    assert {Path(r["run"]).name for r in saved["runs"]} == {"a", "b"}
    scores = [r["im"] for r in saved["runs"]]
    assert scores == sorted(scores) and [r["rank"] for r in saved["runs"]] == [1, 2]
    assert res["runs"][0]["target_accuracy"] is not None
    with pytest.raises(UserError, match="unknown --score"):
        rank_runs(list(runs), sim_pair[1], "accuracy")


def test_rank_cli_json(runs, sim_pair):
    proc = run_cli("rank", *runs, "--target", sim_pair[1], "--score", "dev", "--json")
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    assert len(res["runs"]) == 2 and res["score"] == "dev"
    assert res["runs"][0]["dev"] <= res["runs"][1]["dev"]


# --------------------------------------------------------------------------- predict
def test_fits_is_written_part_by_part(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from astropy.table import Table

    from astrotransfer.catalog import write_fits_streaming

    parts = []
    for i, n in enumerate((3, 5, 1)):
        p = tmp_path / f"part-{i}.parquet"
        pq.write_table(pa.table({"object_id": [f"o{i}-{j}" + "x" * i for j in range(n)],
                                 "ra": np.arange(n, dtype=np.float64) + i,
                                 "p_a": np.full(n, 0.25, np.float32)}), p)
        parts.append(p)
    write_fits_streaming(parts, tmp_path / "cat.fits")
    t = Table.read(tmp_path / "cat.fits")
    assert len(t) == 9 and t["p_a"].dtype.newbyteorder("=") == np.float32
    ids = [v.decode() if isinstance(v, bytes) else v for v in t["object_id"]]
    assert ids == [f"o{i}-{j}" + "x" * i for i, n in enumerate((3, 5, 1)) for j in range(n)]
    assert list(t["ra"]) == [0, 1, 2, 1, 2, 3, 4, 5, 2]


@pytest.fixture(scope="module")
def kill_store(tmp_path_factory):
    return make_sim_store(tmp_path_factory.mktemp("kill") / "big.zarr", "des", n=240, size=32)


def test_killed_predict_resumes_to_the_same_catalog(runs, kill_store, tmp_path):
    # One torch thread: batch-1 forwards are then ~ms even on a busy shared machine, where
    # two spinning OpenMP threads can take 100x longer.
    env = {"OMP_NUM_THREADS": "1"}
    ref = tmp_path / "ref.parquet"
    run_cli("predict", runs[0], "--data", kill_store, "--out", ref, "--batch-size", "1",
            env=env, check=True)
    out = tmp_path / "cat.parquet"
    partial = tmp_path / "cat.parquet.partial"
    cmd = [sys.executable, "-m", "astrotransfer.cli", "predict", str(runs[0]), "--data",
           str(kill_store), "--out", str(out), "--batch-size", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **env})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(partial.glob("part-*.parquet"))) < 10:
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list(partial.glob("part-*.parquet")))
    assert not out.exists() and 10 <= done < 240, f"kill landed outside the run ({done} parts)"
    again = run_cli("predict", runs[0], "--data", kill_store, "--out", out, "--batch-size", "1",
                    env=env)
    assert again.returncode == 0, again.stderr
    assert "resumed after" in again.stdout
    a, b = pd.read_parquet(ref), pd.read_parquet(out)
    assert list(b["object_id"]) == list(a["object_id"]) and b["object_id"].is_unique
    np.testing.assert_allclose(b[["p_elliptical", "p_spiral"]], a[["p_elliptical", "p_spiral"]],
                               atol=1e-6)
    assert not partial.exists()
