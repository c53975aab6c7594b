"""Label-free model selection: scoring runs on a target survey that has no labels.

With no target labels, the usual validation accuracy cannot choose between adapters,
epochs or learning rates. Four proxies are computed, all LOWER IS BETTER:

  entropy  mean target prediction entropy (decided predictions);
  im       information maximisation: mean entropy − entropy of the mean prediction, which,
           unlike plain entropy, cannot be gamed by predicting one class for everything;
  mmd      multi-kernel MMD between source and target penultimate features (the domains
           look alike to the classifier);
  dev      Deep Embedded Validation (You et al. 2019): the source validation loss
           re-weighted by density ratios p_target(x)/p_source(x) estimated by a domain
           classifier on features, with a control variate to cut the variance of the
           weights. It estimates the target risk itself, so it is the one with a scale.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...store import CutoutStore
from ..inference.observe import Observed, observe, subsample
from ..inference.streaming import check_compatible, load_run_model
from ..runs import atomic_write_text, member_runs
from .metrics import information_maximization, prediction_entropy

SCORES = ("dev", "entropy", "im", "mmd")
MAX_OBJECTS = 2000  # per domain: enough for stable scores, bounded cost on big stores


def per_object_loss(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return -np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, 1.0))


def mmd_score(src: np.ndarray, tgt: np.ndarray, max_n: int = 1000, seed: int = 0) -> float:
    """Feature MMD² with the same multi-kernel estimator the MMD adapter trains with."""
    import torch

    from ...losses import mmd

    rng = np.random.default_rng(seed)
    a = src[rng.permutation(len(src))[:max_n]]
    b = tgt[rng.permutation(len(tgt))[:max_n]]
    with torch.no_grad():
        return float(mmd(torch.from_numpy(a).double(), torch.from_numpy(b).double()))


def dev_risk(src_train: np.ndarray, tgt: np.ndarray, val_feats: np.ndarray,
             val_loss: np.ndarray, seed: int = 0, folds: int = 5) -> dict:
    """Deep Embedded Validation (You et al. 2019, alg. 1).

    A domain classifier (logistic regression on standardised principal components of the
    features) gives w(x) = (n_s/n_t)·P(target|x)/P(source|x) for each source validation
    object; the risk is mean(w·ℓ) + η·mean(w) − η with η = −Cov(w·ℓ, w)/Var(w), which
    keeps the estimate unbiased while cancelling most of the variance the weights add.

    The paper's classifier sees only source-train features, but a network's features of
    the very objects it was trained on are tighter than those of unseen ones, so the
    classifier partly learns "seen in training" and calls every validation object
    target-like. Here the validation objects are cross-fitted instead: each fold's weights
    come from a classifier whose source side holds source-train plus the other folds.
    Probabilities are clipped to [1e-3, 1 − 1e-3] so one separable object cannot dominate.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_val = len(val_feats)
    k = max(2, min(folds, n_val))
    fold = np.random.default_rng(seed).permutation(n_val) % k
    dims = int(min(32, src_train.shape[1], len(src_train) + len(tgt) - 1))
    w = np.empty(n_val)
    accuracy = []
    for f in range(k):
        src = np.concatenate([src_train, val_feats[fold != f]])
        x = np.concatenate([src, tgt]).astype(np.float64)
        d = np.r_[np.zeros(len(src)), np.ones(len(tgt))]
        clf = make_pipeline(StandardScaler(), PCA(dims, random_state=seed), StandardScaler(),
                            LogisticRegression(C=1.0, max_iter=2000, random_state=seed))
        clf.fit(x, d)
        accuracy.append(clf.score(x, d))
        p = np.clip(clf.predict_proba(val_feats[fold == f].astype(np.float64))[:, 1],
                    1e-3, 1 - 1e-3)
        w[fold == f] = (len(src) / len(tgt)) * p / (1 - p)
    weighted = w * val_loss
    var_w = float(np.var(w, ddof=1)) if n_val > 1 else 0.0
    eta = -float(np.cov(weighted, w, ddof=1)[0, 1]) / var_w if var_w > 0 else 0.0
    return {"dev": float(weighted.mean() + eta * w.mean() - eta),
            "weighted_loss": float(weighted.mean()), "source_val_loss": float(val_loss.mean()),
            "eta": eta, "weight_mean": float(w.mean()), "weight_max": float(w.max()),
            "domain_accuracy": float(np.mean(accuracy))}


def label_free_scores(tgt: Observed, src_train: Observed | None, src_val: Observed | None,
                      max_objects: int = MAX_OBJECTS, seed: int = 0,
                      missing_source: str | None = None) -> dict:
    """The four scores (None with a reason when the data for one is missing)."""
    out: dict = {"lower_is_better": True, "n_target": int(len(tgt.probs))}
    if len(tgt.probs) == 0:
        raise UserError("no target objects to score; check the store and --split")
    out["entropy"] = prediction_entropy(tgt.probs)
    out["im"] = information_maximization(tgt.probs)
    t = tgt.feats[np.sort(np.random.default_rng(seed).permutation(len(tgt.feats))[:max_objects])]
    val = src_val.labelled() if src_val is not None else None
    if val is None or len(val.probs) < 2:
        reason = missing_source or "the source store has fewer than 2 labelled validation objects"
        out.update(mmd=None, dev=None, reason=reason)
        return out
    out["mmd"] = mmd_score(val.feats, t, seed=seed)
    if src_train is None or len(src_train.feats) < 2 or len(t) < 2:
        out.update(dev=None, reason="too few source-train or target objects for DEV")
        return out
    details = dev_risk(src_train.feats, t, val.feats, per_object_loss(val.probs, val.labels),
                       seed)
    out["dev"] = details.pop("dev")
    out["dev_details"] = details
    out["n_source_val"] = int(len(val.probs))
    return out


def source_store_of(info: dict, override: Path | str | None = None
                    ) -> tuple[CutoutStore | None, str | None]:
    """The run's source store (or the given one), or None and why it cannot be opened."""
    path = override or (info.get("source") or {}).get("path")
    if not path:
        return None, "run.json records no source store; pass --source"
    if not Path(path).exists():
        return None, f"source store {path} recorded in run.json is gone; pass --source"
    return CutoutStore.open(path), None


def source_observations(model, info, source: CutoutStore | None, max_objects: int, seed: int,
                        cache: dict | None = None) -> tuple[Observed | None, Observed | None]:
    """(source train subsample, labelled source val) as the model sees them."""
    if source is None:
        return None, None
    cache = {} if cache is None else cache
    bands = check_compatible(info, source)
    out = []
    for split in ("train", "val"):
        key = (str(Path(source.path).resolve()), split)
        if key not in cache:
            rows = source.indices(split)
            if split == "val":
                rows = rows[source.column("label")[rows] >= 0]
            cache[key] = observe(model, info, source, subsample(rows, max_objects, seed),
                                 bands=bands)
        out.append(cache[key])
    return out[0], out[1]


def score_run(run_path: Path, target: Path, source: Path | None = None, split: str = "all",
              max_objects: int = MAX_OBJECTS, seed: int = 0) -> dict:
    """Every label-free score of one run, plus the target accuracy when labels exist (for
    reference only: it is what the scores try to predict)."""
    model, info, run = load_run_model(run_path)
    tstore = CutoutStore.open(target)
    rows = subsample(tstore.indices(split), max_objects, seed)
    tgt = observe(model, info, tstore, rows)
    src, reason = source_store_of(info, source)
    s_train, s_val = source_observations(model, info, src, max_objects, seed)
    scores = label_free_scores(tgt, s_train, s_val, max_objects, seed, missing_source=reason)
    lab = tgt.labelled()
    scores["target_accuracy"] = (float((lab.probs.argmax(1) == lab.labels).mean())
                                 if len(lab.labels) else None)
    return {"run": str(run.path), "run_id": info["run_id"], **scores}


def expand_runs(paths: list[Path]) -> list[Path]:
    """Runs as given; a seed or recursive job stands for each of its member runs."""
    return [m for p in paths for m in member_runs(p)]


def rank_runs(runs: list[Path], target: Path, score: str, source: Path | None = None,
              split: str = "all", max_objects: int = MAX_OBJECTS, seed: int = 0,
              out: Path | None = None) -> dict:
    if score not in SCORES:
        raise UserError(f"unknown --score '{score}'; use one of {', '.join(SCORES)}")
    if not runs:
        raise UserError("rank needs at least one run directory")
    results = [score_run(r, target, source, split, max_objects, seed) for r in expand_runs(runs)]
    missing = [r for r in results if r.get(score) is None]
    if missing:
        raise UserError(f"score '{score}' could not be computed for {missing[0]['run']} "
                        f"({missing[0].get('reason', 'no source data')}); use --score "
                        f"entropy or im, or pass --source")
    results.sort(key=lambda r: r[score])
    for i, r in enumerate(results, 1):
        r["rank"] = i
    report = {"score": score, "lower_is_better": True, "target": str(target), "split": split,
              "source": str(source) if source else None, "runs": results}
    if out is not None:
        atomic_write_text(Path(out), json.dumps(report, indent=2))
    return report
