"""Temperature scaling for evaluate: fit on a validation split, report ECE and NLL around it.

A classifier's probabilities feed catalog cuts ("keep p_spiral > 0.9"), so they must mean
what they say. Temperature scaling (Guo et al. 2017) rescales the logits by one number fitted
on held-out labelled data, which leaves every argmax — hence accuracy — unchanged and only
moves confidence. The run stores probabilities, not logits; log-probabilities differ from the
logits by a per-row constant, which softmax ignores, so they are used as logits.
"""
from __future__ import annotations

import numpy as np

from .metrics import apply_temperature, expected_calibration_error, fit_temperature

__all__ = ["log_probs", "calibration_block", "scores_at"]


def log_probs(probs: np.ndarray) -> np.ndarray:
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))


def _nll(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(y)), y], 1e-12, 1.0)
    return float(-np.log(p).mean())


def scores_at(probs: np.ndarray, y: np.ndarray, temperature: float) -> dict:
    """ECE and NLL of the same predictions before and after dividing the logits by T."""
    before = np.asarray(probs, dtype=np.float64)
    before = before / before.sum(axis=1, keepdims=True)
    after = apply_temperature(log_probs(before), temperature)
    return {"n": int(len(y)),
            "ece_before": expected_calibration_error(y, before),
            "ece_after": expected_calibration_error(y, after),
            "nll_before": _nll(before, y), "nll_after": _nll(after, y)}


def calibration_block(fit_probs: np.ndarray | None, fit_y: np.ndarray | None, fit_on: dict,
                      eval_probs: np.ndarray | None = None, eval_y: np.ndarray | None = None,
                      eval_on: dict | None = None) -> dict:
    """The `calibration` entry of metrics.json.

    `fit` holds the scores on the data T was fitted on (NLL after ≤ before there by
    construction); `eval` the same on the evaluated split, which is the honest number when
    the two differ. Without labelled validation data the block says why it is empty.
    """
    if fit_probs is None or fit_y is None or len(fit_y) == 0:
        return {"method": "temperature scaling", "temperature": None,
                "reason": fit_on.get("reason", "no labelled validation objects to fit on")}
    t = fit_temperature(log_probs(fit_probs), fit_y)
    block = {"method": "temperature scaling", "temperature": t,
             "fit": {**fit_on, **scores_at(fit_probs, fit_y, t)}}
    if eval_probs is not None and eval_y is not None and len(eval_y):
        block["eval"] = {**(eval_on or {}), **scores_at(eval_probs, eval_y, t)}
    return block


def calibrated(probs: np.ndarray, block: dict) -> np.ndarray | None:
    """Probabilities after the block's temperature, or None when none was fitted."""
    t = block.get("temperature")
    return None if t is None else apply_temperature(log_probs(probs), t)
