"""A run meets a store: classes matched by name, bands by the run's recorded policy.

The class-order test ingests the same images twice with `--label-map` written in opposite
orders (label 0 is `round` in one store and `flat` in the other): every command that reads
labels for a run must give the same numbers on both, and a store with another class set is
refused. The band tests train a 3-band source for a 1-band target (the `mean` view).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import error_lines, make_sim_store, run_cli, train_tiny, write_image_folder

from astrotransfer.errors import UserError
from astrotransfer.ingestion import run_ingest
from astrotransfer.registry import get_registry
from astrotransfer.store import CutoutStore


def _ingest(folder, out, label_map=None, bands=None, catalog=True):
    opts = dict(images=folder, size=16, bands=bands)
    if catalog:
        opts.update(catalog=folder / "catalog.csv", label_column="klass", label_map=label_map)
    run_ingest(get_registry().get("survey", "images").open(**opts), out,
               split_fractions=(0.5, 0.25, 0.25))
    return out


@pytest.fixture(scope="module")
def orders(tmp_path_factory):
    """One run and three stores of the same images: classes in the run's order, reversed,
    and a different class set."""
    base = tmp_path_factory.mktemp("order")
    folder = write_image_folder(base / "imgs", n=48, size=24)
    a = _ingest(folder, base / "a.zarr", "0=round,1=flat,2=flat")
    b = _ingest(folder, base / "b.zarr", "1=flat,2=flat,0=round")
    c = _ingest(folder, base / "c.zarr", "0=round,1=disk,2=edge")
    run = train_tiny(a, base / "run", epochs=2)
    return a, b, c, run


def test_label_remap_by_name(orders):
    from astrotransfer.engine.matching import label_remap, run_labels

    a, b, c, _ = (CutoutStore.open(p) if str(p).endswith(".zarr") else p for p in orders)
    assert a.class_names == ["round", "flat"] and b.class_names == ["flat", "round"]
    assert label_remap(["round", "flat"], a).tolist() == [0, 1]
    assert label_remap(["round", "flat"], b).tolist() == [1, 0]
    rows = np.arange(a.n)
    assert (run_labels(["round", "flat"], b, rows) == a.column("label")).all()
    with pytest.raises(UserError) as info:
        label_remap(["round", "flat"], c)
    msg = str(info.value)
    assert "round,disk,edge" in msg and "round,flat" in msg and "--label-map" in msg
    assert "\n" not in msg


def test_same_accuracy_whatever_the_class_order(orders):
    from astrotransfer.engine.evaluation.evaluate import evaluate_run, predict_split
    from astrotransfer.engine.evaluation.label_free import score_run
    from astrotransfer.engine.analysis.studies import band_study
    from astrotransfer.engine.evaluation.evaluate import split_metrics

    a, b, _, run = orders
    ma = evaluate_run(run, a, "all", report=False)
    mb = evaluate_run(run, b, "all", report=False)
    print(f"class-order test: accuracy {ma['accuracy']:.3f} (run's order) vs "
          f"{mb['accuracy']:.3f} (reversed --label-map)")
    assert ma["accuracy"] == mb["accuracy"] and ma["recall"] == mb["recall"]
    # the test can tell: scored by index, the reversed store would give 1 - accuracy
    raw_b = CutoutStore.open(b).column("label")
    _, probs, _, _, _ = predict_split(run, b, "all")
    by_index = float((probs.argmax(1) == raw_b[raw_b >= 0]).mean())
    assert abs(by_index - ma["accuracy"]) > 0.05 and by_index == pytest.approx(1 - ma["accuracy"])
    sa, sb = (split_metrics(run, CutoutStore.open(s), "all") for s in (a, b))
    assert sa["accuracy"] == sb["accuracy"] == ma["accuracy"]
    ra, rb = (score_run(run, s) for s in (a, b))
    assert ra["target_accuracy"] == rb["target_accuracy"] == ma["accuracy"]
    ba, bb = (band_study(run, s, "all") for s in (a, b))
    assert ba["baseline_accuracy"] == bb["baseline_accuracy"]


def test_predict_embed_and_recursive_accuracy_use_names(orders, tmp_path):
    from astrotransfer.engine.analysis.embedding import embedding_for
    from astrotransfer.engine.inference.catalog import embed_store, predict_catalog
    from astrotransfer.engine.training.recursive import _accuracy

    a, b, _, run = orders
    res = predict_catalog(run, b, tmp_path / "cat.csv")
    header = (tmp_path / "cat.csv").read_text().splitlines()[0]
    assert res["n"] == CutoutStore.open(b).n and "p_round" in header and "p_flat" in header
    embed_store(run, b)
    ea, eb = embedding_for(run, a), embedding_for(run, b)
    assert (ea.labels == eb.labels).all() and eb.class_names == ["round", "flat"]
    sa, sb = CutoutStore.open(a), CutoutStore.open(b)
    rows = np.arange(sa.n)
    truth_in_run_order = sa.column("label")
    assert _accuracy(sb, rows, truth_in_run_order, ["round", "flat"]) == 1.0
    assert _accuracy(sa, rows, truth_in_run_order, ["round", "flat"]) == 1.0


def test_other_class_set_refused_everywhere_labels_meet(orders, tmp_path):
    from astrotransfer.config import TrainConfig
    from astrotransfer.engine.training.single_run import preflight

    a, _, c, run = orders
    for cmd in (["evaluate", run, "--data", c], ["rank", run, "--target", c, "--score", "im"]):
        proc = run_cli(*cmd)
        assert proc.returncode == 1 and "round,disk,edge" in proc.stderr, proc.stderr
    few = TrainConfig(source=str(a), target=str(c), target_labels=4, out=str(tmp_path / "x"))
    with pytest.raises(UserError, match="round,disk,edge"):
        preflight(few)
    rec = TrainConfig(source=str(a), target=str(c), recursive=1, out=str(tmp_path / "y"))
    with pytest.raises(UserError, match="round,disk,edge"):
        preflight(rec)
    unlabelled_use = TrainConfig(source=str(a), target=str(c), adapt="mmd", out=str(tmp_path / "z"))
    assert preflight(unlabelled_use)["lut"] is None  # adaptation reads no target labels


def test_few_shot_labels_are_translated_into_the_run_order(orders, tmp_path):
    from astrotransfer.config import TrainConfig
    from astrotransfer.engine.training.single_run import prepare

    a, b, _, _ = orders
    ctx = {}
    for name, tgt in (("a", a), ("b", b)):
        cfg = TrainConfig(source=str(a), target=str(tgt), target_labels=6, epochs=1,
                          backbone="test_efficientnet", pretrained="none", device="cpu",
                          out=str(tmp_path / name))
        ctx[name] = prepare(cfg)
    assert torch_equal(ctx["a"].y_train, ctx["b"].y_train)


def torch_equal(x, y) -> bool:
    return bool((x == y).all()) and x.shape == y.shape


# ------------------------------------------------------------------ bands
def test_take_bands_mean_view():
    from astrotransfer.engine.matching import BandMap, take_bands

    x = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    out = take_bands(x, BandMap([2, 0, 1], [[1 / 3] * 3], "mean"))
    assert out.shape == (2, 1, 2, 2) and np.allclose(out[:, 0], x.mean(axis=1))
    assert take_bands(x, [1]).shape == (2, 1, 2, 2)


@pytest.fixture(scope="module")
def colour_to_grey(tmp_path_factory):
    base = tmp_path_factory.mktemp("bands")
    src = make_sim_store(base / "sdss.zarr", "sdss", n=48, size=24)  # g,r,i, labelled
    grey = base / "grey"
    grey.mkdir()
    from PIL import Image
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (24, 24)).astype(np.uint8), mode="L").save(
            grey / f"g{i}.png")
    pool = _ingest(grey, base / "pool.zarr", catalog=False)
    return src, pool, base


def test_colour_source_one_band_target_trains_on_the_mean_view(colour_to_grey):
    src, pool, base = colour_to_grey
    out = base / "run"
    proc = run_cli("train", "--source", src, "--target", pool, "--out", out, "--backbone",
                   "test_efficientnet", "--pretrained", "none", "--epochs", "1",
                   "--batch-size", "16", "--device", "cpu", "--adapt", "mmd", check=True)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("band policy: mean")]
    assert lines and "mean(g,r,i)" in lines[0] and "one band (grey)" in lines[0], proc.stderr
    info = json.loads((out / "run.json").read_text())
    assert info["in_chans"] == 1 and info["bands"] == ["mean(g,r,i)"]
    pol = info["band_policy"]
    assert pol["rule"] == "mean" and pol["source_bands"] == ["g", "r", "i"]
    assert np.allclose(pol["weights"], [[1 / 3] * 3]) and pol["target_mapping"] == "mean"
    # the recorded policy serves any store later: the colour source and the grey pool
    from astrotransfer.engine.evaluation.evaluate import evaluate_run
    from astrotransfer.engine.inference.catalog import predict_catalog
    assert evaluate_run(out, src, "test", report=False)["n"] > 0
    assert predict_catalog(out, pool, base / "pool.csv")["n"] == 12


def test_band_count_mismatch_without_policy_names_the_fix(colour_to_grey, tmp_path):
    src, pool, _ = colour_to_grey
    run = train_tiny(src, tmp_path / "rgb")
    proc = run_cli("predict", run, "--data", pool, "--out", tmp_path / "c.csv")
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr
    assert "--band-policy mean" in errors[0] and "--target" in errors[0]
    forced = train_tiny(src, tmp_path / "mean", band_policy="mean")
    info = json.loads((forced / "run.json").read_text())
    assert info["in_chans"] == 1 and info["band_policy"]["rule"] == "mean"
    from astrotransfer.engine.inference.catalog import predict_catalog
    assert predict_catalog(forced, pool, tmp_path / "m.csv")["n"] == 12


def test_position_only_mapping_is_printed_and_stored(colour_to_grey, tmp_path):
    src, _, base = colour_to_grey
    folder = write_image_folder(tmp_path / "xyz", n=12, size=24)
    xyz = _ingest(folder, tmp_path / "xyz.zarr", "0=a,1=b,2=b", bands="x,y,z")
    out = tmp_path / "run"
    proc = run_cli("train", "--source", src, "--target", xyz, "--out", out, "--backbone",
                   "test_efficientnet", "--pretrained", "none", "--epochs", "1",
                   "--device", "cpu", check=True)
    assert any(ln.startswith("band policy: order") for ln in proc.stderr.splitlines())
    info = json.loads((out / "run.json").read_text())
    assert info["band_policy"]["rule"] == "order" and info["band_policy"]["target_mapping"] == "order"


def test_recursive_rounds_score_a_reversed_target_by_name(orders, tmp_path):
    from astrotransfer.engine.evaluation.evaluate import split_metrics

    a, b, _, _ = orders
    job = train_tiny(a, tmp_path / "rec", target=str(b), recursive=1, pseudo_top=4)
    rounds = [json.loads(ln) for ln in (job / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [0, 1]
    for r in rounds:  # the job scores target b; the same run scored on a must agree
        on_a = split_metrics(job / r["run"], CutoutStore.open(a), "test")
        assert r["target_test_accuracy"] == pytest.approx(on_a["accuracy"])


def test_warm_start_from_a_run_matches_the_head_by_class_name(orders, tmp_path):
    """`--pretrained RUN_DIR` on a store listing the run's classes in the other order keeps
    the run's head with its rows swapped: before any update the new model predicts exactly
    what the old one does, class by class; another class set keeps the body only."""
    import torch

    from astrotransfer.engine.inference.streaming import load_run_model
    from astrotransfer.engine.training.warm_start import build_from_run

    a, b, c, run = orders
    info = json.loads((run / "run.json").read_text())
    old = load_run_model(run)[0]
    new, note = build_from_run(run, info["backbone"], info["in_chans"], ["flat", "round"])
    assert "rows reordered by class name (round,flat -> flat,round)" in note
    x = torch.rand(4, info["in_chans"], 16, 16)
    old.eval(), new.eval()
    with torch.no_grad():
        assert torch.allclose(old(x)[:, [1, 0]], new(x), atol=1e-5)
    other, note = build_from_run(run, info["backbone"], info["in_chans"], ["round", "disk", "edge"])
    assert "new head" in note and "round,flat" in note
    with torch.no_grad():
        assert torch.count_nonzero(other.get_classifier().weight) == 0
    with pytest.raises(UserError, match="pass --backbone"):
        build_from_run(run, "resnet18", 1, ["round", "flat"])


def test_source_labels_budget_and_warm_start_train(orders, tmp_path):
    """`train --source-labels N --pretrained RUN_DIR`: N labels in all (a fifth validate),
    the provenance names the run, and a budget beyond the split is one line."""
    a, b, c, run = orders
    out = train_tiny(b, tmp_path / "ft", source_labels=10, pretrained=str(run), epochs=1)
    info = json.loads((out / "run.json").read_text())
    assert info["pretrained"].startswith(f"weights of run {run}")
    epochs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 1
    from astrotransfer.engine.training.single_run import labelled_budget

    tr, va = labelled_budget(np.arange(30), 10, seed=3)
    assert len(tr) == 8 and len(va) == 2 and not set(tr) & set(va)
    res = run_cli("train", "--source", str(b), "--out", str(tmp_path / "big"),
                  "--source-labels", "100000", "--backbone", "resnet18", "--pretrained", "none")
    assert res.returncode != 0
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "--source-labels 100000" in lines[0]
