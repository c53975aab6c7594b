"""Confident learning recovers a label-error rate it is told nothing about.

Why these tests: the GZ1 limits page (docs/results/gz1_limits.md) quotes the estimated share
of Galaxy Zoo labels a model confidently contradicts. The estimator must find label noise
that is there, in about the amount injected, and must not invent it where there is none; the
probabilities are out-of-sample (5-fold cross-validation), as the page's are.
"""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_predict

from astrotransfer.engine.evaluation.label_noise import confident_joint


def noisy_problem(flip: float, seed: int = 0, n: int = 3000):
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 5)) + 3.0 * truth[:, None]  # well separated: the model is right
    given = truth.copy()
    flipped = rng.random(n) < flip
    given[flipped] = 1 - given[flipped]
    probs = cross_val_predict(LogisticRegression(), x, given, cv=5, method="predict_proba")
    return given, probs, flipped


@pytest.mark.parametrize("flip", [0.05, 0.15])
def test_the_injected_noise_rate_is_recovered_and_the_flipped_labels_found(flip):
    given, probs, flipped = noisy_problem(flip)
    out = confident_joint(given, probs)
    assert out["error_rate"] == pytest.approx(flipped.mean(), abs=0.02)
    found = np.zeros(len(given), bool)
    found[out["issues"]] = True
    assert (found & flipped).sum() / flipped.sum() > 0.8  # recall of the flipped labels
    assert (found & flipped).sum() / found.sum() > 0.9    # and few clean ones accused
    assert np.isclose(out["joint"].sum(), 1.0) and out["counts"].sum() <= len(given)


def test_clean_labels_give_almost_no_errors_and_ambiguity_is_reported_apart():
    given, probs, _ = noisy_problem(0.0)
    assert confident_joint(given, probs)["error_rate"] < 0.01
    # a model sure of 80 % of the objects and at 50:50 on the rest: the rest are counted as
    # ambiguous, not as label errors
    rng = np.random.default_rng(1)
    unsure = rng.random(len(given)) < 0.2
    p_given = np.where(unsure, 0.5, 0.97)
    probs = np.where(given[:, None] == np.arange(2), p_given[:, None], 1 - p_given[:, None])
    out = confident_joint(given, probs)
    assert out["ambiguous"] == pytest.approx(unsure.mean()) and out["error_rate"] == 0.0


def test_a_class_absent_from_the_labels_writes_valid_json():
    import json

    from astrotransfer.engine.evaluation.label_noise import label_errors_block

    block = label_errors_block([0, 0, 0], np.array([[.9, .1], [.2, .8], [.7, .3]]),
                               ["a", "b", "c"], ["E", "S"], in_sample=False)
    assert block["thresholds"][1] is None
    json.loads(json.dumps(block, allow_nan=False))  # strict JSON: no Infinity
    assert block["n_issues"] == 0  # nothing can be confidently another, absent class


def test_bad_shapes_and_labels_are_refused():
    with pytest.raises(ValueError, match="must be"):
        confident_joint([0, 1], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="drop unlabelled"):
        confident_joint([0, -1], np.full((2, 2), 0.5))
