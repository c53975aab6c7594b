"""The simulated labelling campaign behind tools/active_results.py: frozen features of a
source run, a strategy that asks for labels in batches, an oracle that answers, a head
refitted after every batch, scores on objects no strategy may choose.

Kept apart from the page writer so the campaign can be read (and reused) on its own. The
held-out objects are used for scoring only: which features, which C, which strategy
settings are all decided on the pool (the objects a campaign could label).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

C_GRID = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)


@dataclass
class FeatureSpec:
    """One candidate for the frozen features: a run applied to a store with `tta` views.

    Written ``NAME=RUN[:TTA][@STORE]`` on the command line, e.g.
    ``gz1_96=/runs/gz1_96px:8@ceers_96.zarr``; without ``@STORE`` the study's `--data`.
    """

    name: str
    run: Path
    tta: int = 1
    store: Path | None = None

    @classmethod
    def parse(cls, text: str, data: Path) -> "FeatureSpec":
        name, _, rest = text.partition("=")
        if not rest:  # a bare run path
            name, rest = Path(text).name, text
        rest, _, store = rest.partition("@")
        run, _, tta = rest.partition(":")
        return cls(name, Path(run), int(tta or 1), Path(store) if store else data)


def observe_split(spec: FeatureSpec, work: Path) -> dict:
    """Source-run probabilities and features of the pool (train split) and held-out (val +
    test) labelled rows, cached in `work` by run id, store path and TTA views."""
    from astrotransfer import load_run

    r = load_run(spec.run)
    key = f"{r.info['run_id']}_{zlib.crc32(str(spec.store.resolve()).encode())}_tta{spec.tta}"
    cache = work / f"features_{key}.npz"
    if cache.exists():
        return dict(np.load(cache))
    seen = {split: r.observe(spec.store, split, spec.tta) for split in ("train", "val", "test")}
    out = {}
    for name, splits in (("pool", ["train"]), ("eval", ["val", "test"])):
        cat = {k: np.concatenate([seen[s][k] for s in splits]) for k in seen["train"]}
        keep = cat["labels"] >= 0
        out[f"{name}_rows"], out[f"{name}_probs"] = cat["rows"][keep], cat["probs"][keep]
        out[f"{name}_feats"], out[f"{name}_y"] = cat["feats"][keep], cat["labels"][keep]
    work.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def balanced_accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    """Mean recall over the classes present in `y` (0.5 = chance with two classes)."""
    return float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)]))


def pool_cv(feats: np.ndarray, y: np.ndarray, cs=C_GRID, folds: int = 5, reps: int = 2,
            class_weight: str | None = "balanced") -> dict:
    """Balanced accuracy of a head on all pool labels, by stratified k-fold CV on the pool
    (the validation split carved from the pool), for each C. Returns ``{C: score}``."""
    from sklearn.model_selection import StratifiedKFold

    from astrotransfer import FrozenHead

    k = int(y.max()) + 1
    out = {}
    for c in cs:
        scores = []
        for rep in range(reps):
            pred = np.empty_like(y)
            for tr, va in StratifiedKFold(folds, shuffle=True, random_state=rep).split(feats, y):
                head = FrozenHead(k, c, class_weight).fit(feats[tr], y[tr])
                pred[va] = head.predict_proba(feats[va]).argmax(1)
            scores.append(balanced_accuracy(y, pred))
        out[c] = float(np.mean(scores))
    return out


def scores(y: np.ndarray, probs: np.ndarray) -> dict:
    pred = probs.argmax(1)
    return {"bal_acc": balanced_accuracy(y, pred), "acc": float((pred == y).mean())}


def campaign(strategy: str, seed: int, d: dict, max_n: int, batch: int, c: float,
             class_weight: str | None = "balanced") -> dict:
    """Held-out scores after each batch (labels = batch, 2 batch, ..., max_n).

    Active strategies start with one class-balanced seeding batch (`balanced`, on the
    source run's predictions); `random` is random throughout.

    Returns:
        ``{"bal_acc": [...], "acc": [...]}``, one value per batch.
    """
    from astrotransfer import FrozenHead, choose

    k = d["pool_probs"].shape[1]
    fp, yp, fe, ye = d["pool_feats"], d["pool_y"], d["eval_feats"], d["eval_y"]
    probs = d["pool_probs"]
    labelled = np.zeros(0, dtype=np.int64)
    out = {"bal_acc": [], "acc": []}
    while len(labelled) < max_n:
        free = np.setdiff1d(np.arange(len(fp)), labelled)
        name = "balanced" if (len(labelled) == 0 and strategy != "random") else strategy
        picks = choose(name, probs[free], fp[free], min(batch, max_n - len(labelled)),
                       fp[labelled], yp[labelled], seed * 100_003 + len(labelled))
        labelled = np.concatenate([labelled, free[picks]])
        if FrozenHead.can_fit(yp[labelled]):
            head = FrozenHead(k, c, class_weight).fit(fp[labelled], yp[labelled])
            probs = head.predict_proba(fp)
            s = scores(ye, head.predict_proba(fe))
        else:  # one class only so far: the source run's head still decides
            s = scores(ye, d["eval_probs"])
        for m in out:
            out[m].append(s[m])
    return out


def crossing(grid: list[int], curve, target: float) -> int | None:
    """The fewest labels on the grid whose score reaches `target` (None: never)."""
    for n, a in zip(grid, curve):
        if a >= target - 1e-12:
            return n
    return None


def summarise(grid: list[int], curves: dict, budgets: list[int], ref_n: int) -> dict:
    """Mean ± std per budget, and labels each strategy needs to reach random's mean score
    at `ref_n` (on its mean curve, and per seed), for one metric's curves."""
    curves = {s: np.asarray(v) for s, v in curves.items()}
    mean = {s: c.mean(0) for s, c in curves.items()}
    std = {s: c.std(0) for s, c in curves.items()}
    target = float(mean["random"][grid.index(ref_n)])
    cross = {}
    for s, c in curves.items():
        per_seed = [crossing(grid, row, target) for row in c]
        hit = [n for n in per_seed if n is not None]
        cross[s] = {"mean_curve": crossing(grid, mean[s], target), "per_seed": per_seed,
                    "seed_mean": float(np.mean(hit)) if hit else None,
                    "seed_std": float(np.std(hit)) if hit else None,
                    "seeds_reaching": len(hit)}
    # the less noisy reading of "half the labels": each strategy's score at ref_n / 2 minus
    # random's at ref_n, with the standard error of that difference over seeds
    half = min(grid, key=lambda n: abs(n - ref_n / 2))
    r = curves["random"][:, grid.index(ref_n)]
    at_half = {}
    for s, c in curves.items():
        a = c[:, grid.index(half)]
        se = float(np.sqrt(a.var(ddof=1) / len(a) + r.var(ddof=1) / len(r))) if len(a) > 1 else None
        at_half[s] = {"n": half, "delta": float(a.mean() - r.mean()), "se": se}
    active = [s for s in curves if s != "random" and cross[s]["mean_curve"] is not None]
    best = min(active, key=lambda s: (cross[s]["mean_curve"], -mean[s][-1])) if active else None
    return {"target": target, "ref_n": ref_n, "crossing": cross, "best": best,
            "at_half": at_half,
            "table": {s: {str(n): (float(mean[s][grid.index(n)]), float(std[s][grid.index(n)]))
                          for n in budgets if n in grid} for s in curves}}


def sim_pair(work: Path, quick: bool, run: Path | None = None) -> tuple[Path, Path]:
    """A simulated source → target pair for the study, built once in `work`: a source run
    trained on sim SDSS (64 px stamps of population seed 0, so target galaxies look ~3x
    larger than in training, the gap docs/results/transfer.md measures) and a labelled sim
    DES store of *other* galaxies (population seed 1), 32 px. `run`: an existing run trained
    that way (e.g. tools/recipe_results.py's sim runs), instead of training one here.
    Returns (run, target store)."""
    from astrotransfer import ingest, train

    n_src, n_tgt, epochs = (200, 300, 1) if quick else (2000, 1600, 4)
    tag = "quick" if quick else "full"
    src, tgt = work / f"sim_sdss_{tag}.zarr", work / f"sim_des_{tag}.zarr"
    if run is not None:
        if not tgt.exists():
            ingest("sim", tgt, instrument="des", n=n_tgt, seed=1, size=32,
                   split_fractions="0.75,0.125,0.125")
        return run, tgt
    run = work / f"sim_run_{tag}"
    if not src.exists():
        ingest("sim", src, instrument="sdss", n=n_src, seed=0, size=64,
               split_fractions="0.7,0.3,0.0")
    if not tgt.exists():
        ingest("sim", tgt, instrument="des", n=n_tgt, seed=1, size=32,
               split_fractions="0.75,0.125,0.125")
    if not (run / "run.json").exists():
        train(source=src, out=run, backbone="tf_efficientnet_lite0", pretrained="auto",
              image_size=32, epochs=epochs, batch_size=32, augment=["flip", "rot90"],
              seed=0, device="cpu")
    return run, tgt
