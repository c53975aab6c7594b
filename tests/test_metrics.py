"""Evaluation metrics, plots and report: numbers checked by hand on tiny examples, and
statistical properties (calibration, temperature recovery) on seeded synthetic samples."""
import json
import math

import numpy as np
import pytest

from astrotransfer.engine.evaluation import metrics as M
from astrotransfer.engine.evaluation import plots as P
from astrotransfer.engine.evaluation import report as R


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _calibrated_sample(n=20000, k=3, scale=2.0, seed=0):
    """Labels drawn from the model's own probabilities: calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * scale
    p = _softmax(z)
    y = (rng.random(n)[:, None] > np.cumsum(p, axis=1)).sum(axis=1)
    return y, z, p


# --------------------------------------------------------------------------- hand-checked
def test_binary_hand_checked():
    # y_pred = [0, 0, 1, 1, 0]  -> TN=2 FP=1 FN=1 TP=1
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([[.9, .1], [.6, .4], [.3, .7], [.2, .8], [.55, .45]])
    m = M.compute_metrics(y, p, ["star", "galaxy"])
    assert m["n"] == 5 and m["accuracy"] == pytest.approx(3 / 5)
    assert m["confusion"] == [[2, 1], [1, 1]]
    assert m["confusion_percent"][0] == pytest.approx([200 / 3, 100 / 3], abs=1e-3)
    assert m["confusion_percent"][1] == pytest.approx([50.0, 50.0])
    assert m["recall"] == pytest.approx({"star": 2 / 3, "galaxy": 1 / 2})
    assert m["precision"] == pytest.approx({"star": 2 / 3, "galaxy": 1 / 2})
    assert m["fpr"] == pytest.approx({"star": 1 / 2, "galaxy": 1 / 3})
    b = m["binary"]
    assert b["positive_class"] == "galaxy"
    assert (b["tp"], b["fp"], b["tn"], b["fn"]) == (1, 1, 2, 1)
    assert b["recall"] == pytest.approx(0.5) and b["fpr"] == pytest.approx(1 / 3)
    # AUC by pairs: positives' scores .8, .45 vs negatives' .1, .4, .7 -> 5 of 6 pairs ordered
    assert b["auc"] == pytest.approx(5 / 6) and m["auc"] == {"galaxy": pytest.approx(5 / 6)}
    assert m["macro"]["f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert set(m["roc"]) == {"galaxy"}
    json.dumps(m, allow_nan=False)


def test_top_q_hand_checked():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([[.9, .1], [.6, .4], [.3, .7], [.2, .8], [.55, .45]])
    tq = M.compute_metrics(y, p, ["a", "b"])["top_q"]
    assert tq["q"] == pytest.approx([0.1 * i for i in range(1, 11)])
    # confidences .9 .8 .7 .6 .55 -> correctness 1 1 0 1 0
    assert tq["n"][4] == 3 and tq["accuracy"][4] == pytest.approx(2 / 3)
    assert tq["accuracy"][-1] == pytest.approx(0.6)


def test_perfect_classifier():
    y = np.repeat(np.arange(4), 25)
    p = np.full((100, 4), 0.02)
    p[np.arange(100), y] = 0.94
    m = M.compute_metrics(y, p, list("abcd"))
    assert m["accuracy"] == 1.0
    assert all(v == 1.0 for v in m["auc"].values()) and m["macro"]["auc"] == 1.0
    assert all(v == 1.0 for v in m["f1"].values())
    assert all(v == 0.0 for v in m["fpr"].values())
    assert np.allclose(m["confusion_percent"], 100 * np.eye(4))


def test_absent_class_is_none_not_crash():
    y = np.array([0, 0, 1, 1])
    p = np.array([[.8, .1, .1], [.1, .1, .8], [.1, .8, .1], [.1, .8, .1]])
    m = M.compute_metrics(y, p, ["a", "b", "c"])
    assert m["recall"]["c"] is None and m["auc"]["c"] is None and m["roc"]["c"] is None
    assert m["support"]["c"] == 0 and m["confusion_percent"][2] == [0.0, 0.0, 0.0]
    assert m["macro"]["recall"] == pytest.approx(0.75)  # mean over the defined classes
    json.dumps(m, allow_nan=False)


def test_rejects_logits_and_bad_shapes():
    y = np.array([0, 1])
    with pytest.raises(ValueError, match="logits"):
        M.compute_metrics(y, np.array([[2.0, -1.0], [0.5, 3.0]]), ["a", "b"])
    with pytest.raises(ValueError, match="class names"):
        M.compute_metrics(y, np.array([[.5, .5], [.5, .5]]), ["a"])
    with pytest.raises(ValueError, match="outside"):
        M.compute_metrics(np.array([0, 2]), np.array([[.5, .5], [.5, .5]]), ["a", "b"])


def test_roc_downsampled_and_entropy_summary():
    y, z, p = _calibrated_sample(n=5000, k=3)
    m = M.compute_metrics(y, p, ["x", "y", "z"])
    for c in m["roc"].values():
        assert 2 <= len(c["fpr"]) == len(c["tpr"]) <= M.MAX_ROC_POINTS
        assert c["fpr"][0] == 0.0 and c["fpr"][-1] == 1.0 and c["tpr"][-1] == 1.0
    e = m["entropy"]
    assert e["max"] == pytest.approx(math.log(3))
    assert sum(e["histogram"]["counts"]) == 5000
    assert len(e["histogram"]["bins"]) == len(e["histogram"]["counts"]) + 1
    assert e["quantiles"]["q05"] <= e["median"] <= e["quantiles"]["q95"]
    assert e["mean"] == pytest.approx(M.prediction_entropy(p))


# --------------------------------------------------------------------------- top-q, calibration
def test_top_q_full_equals_accuracy_and_decreases_when_calibrated():
    y, z, p = _calibrated_sample()
    m = M.compute_metrics(y, p, ["a", "b", "c"])
    acc = m["top_q"]["accuracy"]
    assert acc[-1] == pytest.approx(m["accuracy"])
    assert m["top_q"]["f1_macro"][-1] == pytest.approx(m["macro"]["f1"])
    assert all(a >= b - 0.01 for a, b in zip(acc, acc[1:]))  # tolerance: sampling noise
    assert acc[0] > acc[-1] + 0.2


def test_ece_calibrated_small_overconfident_large():
    y, z, p = _calibrated_sample()
    ece_cal = M.expected_calibration_error(y, p)
    ece_over = M.expected_calibration_error(y, _softmax(3.0 * z))
    assert ece_cal < 0.02
    assert ece_over > 0.1
    rc = M.reliability_curve(y, p, n_bins=10)
    assert sum(rc["count"]) == len(y) and len(rc["bin_edges"]) == 11


def test_ece_hand_checked():
    # one bin per object region: conf .9 correct, conf .9 wrong -> |0.5-0.9| = 0.4
    y = np.array([0, 1])
    p = np.array([[.9, .1], [.9, .1]])
    assert M.expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.4)


def test_fit_temperature_recovers_known_temperature():
    rng = np.random.default_rng(1)
    n, k, t0 = 20000, 4, 2.0
    z = rng.normal(size=(n, k)) * 3.0
    pt = _softmax(z / t0)
    y = (rng.random(n)[:, None] > np.cumsum(pt, axis=1)).sum(axis=1)
    t = M.fit_temperature(z, y)
    assert t == pytest.approx(t0, rel=0.1)
    cal = M.apply_temperature(z, t)
    assert M.expected_calibration_error(y, cal) < M.expected_calibration_error(y, _softmax(z))


# --------------------------------------------------------------------------- label-free
def test_label_free_scores():
    k = 4
    confident_balanced = np.eye(k)[np.arange(400) % k] * 0.999 + 0.001 / k
    collapsed = np.tile(np.eye(k)[0] * 0.999 + 0.001 / k, (400, 1))
    uniform = np.full((400, k), 1.0 / k)
    assert M.prediction_entropy(uniform) == pytest.approx(math.log(k))
    assert M.information_maximization(confident_balanced) == pytest.approx(-math.log(k), abs=0.02)
    assert M.information_maximization(collapsed) == pytest.approx(0.0, abs=1e-9)
    assert M.information_maximization(uniform) == pytest.approx(0.0, abs=1e-9)


# --------------------------------------------------------------------------- aggregate
def test_aggregate_mean_std():
    y = np.array([0, 0, 1, 1])
    runs = [M.compute_metrics(y, p, ["a", "b"]) for p in (
        np.array([[.9, .1], [.8, .2], [.3, .7], [.2, .8]]),   # acc 1.0
        np.array([[.9, .1], [.4, .6], [.3, .7], [.2, .8]]),   # acc 0.75
        np.array([[.9, .1], [.4, .6], [.6, .4], [.2, .8]]))]  # acc 0.5
    a = M.aggregate_metrics(runs)
    assert a["n_runs"] == 3
    assert a["mean"]["accuracy"] == pytest.approx(0.75)
    assert a["std"]["accuracy"] == pytest.approx(np.std([1.0, 0.75, 0.5], ddof=1))
    assert a["mean"]["recall"]["a"] == pytest.approx((1 + .5 + .5) / 3)
    np.testing.assert_allclose(a["mean"]["confusion"], [[4 / 3, 2 / 3], [1 / 3, 5 / 3]])
    assert a["mean"]["top_q"]["accuracy"][-1] == pytest.approx(0.75)
    assert a["std"]["n"] == 0.0 and a["mean"]["class_names"] == ["a", "b"]
    assert a["mean"]["roc"] is None
    json.dumps(a, allow_nan=False)


def test_aggregate_skips_undefined_values():
    p = np.array([[.8, .1, .1], [.1, .1, .8], [.1, .8, .1], [.1, .8, .1]])
    m1 = M.compute_metrics(np.array([0, 0, 1, 1]), p, ["a", "b", "c"])  # class c absent
    m2 = M.compute_metrics(np.array([0, 2, 1, 1]), p, ["a", "b", "c"])
    a = M.aggregate_metrics([m1, m2])
    assert a["mean"]["recall"]["c"] == pytest.approx(1.0)  # only m2 defines it
    assert a["mean"]["auc"]["c"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- plots, report
def test_report_writes_all_pngs_and_mentions_them(tmp_path):
    y, z, p = _calibrated_sample(n=600, k=4, seed=3)
    names = ["elliptical", "spiral", "merger", "artefact"]
    m = M.compute_metrics(y, _softmax(2 * z), names)
    t = M.fit_temperature(2 * z, y)
    html = R.write_report(tmp_path / "rep", m, _softmax(2 * z), y, names,
                          {"model": {"backbone": "efficientnet_lite0"}, "seed": 0},
                          {"survey": "synthetic <test>"}, "Test & report",
                          probs_calibrated=M.apply_temperature(2 * z, t), temperature=t)
    assert html == tmp_path / "rep" / "report.html"
    text = html.read_text()
    md = (tmp_path / "rep" / "report.md").read_text()
    for name in R.PLOT_FILES:
        png = tmp_path / "rep" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < 300_000
        assert f'src="{name}"' in text and f"({name})" in md
    assert "efficientnet_lite0" in text and "synthetic &lt;test&gt;" in text
    assert "Test &amp; report" in text and "spiral" in md


def test_report_for_aggregate_and_binary(tmp_path):
    y, z, p = _calibrated_sample(n=300, k=2, seed=4)
    runs = [M.compute_metrics(y, _softmax(s * z), ["non-lens", "lens"]) for s in (1, 2)]
    a = M.aggregate_metrics(runs)
    html = R.write_report(tmp_path, a, None, None, ["non-lens", "lens"], {}, {}, "agg")
    assert "±" in html.read_text()
    assert not (tmp_path / "reliability.png").exists()
    P.plot_per_class_accuracy(a, tmp_path / "pc.png")
    P.plot_entropy_hist(p, tmp_path / "ent.png")
    assert (tmp_path / "pc.png").exists() and (tmp_path / "ent.png").exists()


def test_format_table():
    y = np.array([0, 0, 0, 1, 1])
    p = np.array([[.9, .1], [.6, .4], [.3, .7], [.2, .8], [.55, .45]])
    m = M.compute_metrics(y, p, ["star", "galaxy"])
    txt = R.format_table(m)
    assert "accuracy 0.600" in txt and "galaxy" in txt and "0.833" in txt and "macro" in txt
    from rich.table import Table
    assert isinstance(R.rich_table(m), Table)
