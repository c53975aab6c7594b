"""From a run and a store to a labelling queue: observe the pool, ask a strategy, write it.

The run is applied once to every candidate (probabilities with the run's test-time
augmentation option, and penultimate features); objects that any labelling session of the
store already answered, and objects the survey itself labels when `unlabelled_only`, are
left out. The queue is a small JSON file (rows and ids, the strategy's order, provenance),
written atomically, which the label page and any script can read.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...label_store import answered_rows
from ...registry import get_registry
from ...selector import Pool
from ...store import CutoutStore
from ..inference.streaming import entropy
from ..runs import atomic_write_text

log = logging.getLogger("astrotransfer")
QUEUE_FORMAT = 1


@dataclass
class Observation:
    """The run's view of store rows: (N, K) probabilities and (N, D) features."""

    rows: np.ndarray
    probs: np.ndarray
    feats: np.ndarray


def observe_rows(run_path: Path, store: CutoutStore, rows: np.ndarray, tta: int = 1,
                 batch_size: int = 256) -> Observation:
    """Probabilities (test-time augmented with `tta` views) and features of `rows`."""
    from ..inference.observe import observe
    from ..inference.streaming import load_run_model
    from ..matching import bands_for, label_remap

    model, info, _ = load_run_model(run_path, tta=tta)
    label_remap(info["class_names"], store)  # another class set is refused, by name
    seen = observe(model, info, store, np.sort(rows), batch_size, bands=bands_for(info, store))
    return Observation(seen.rows, seen.probs, seen.feats)


def candidate_rows(store: CutoutStore, split: str = "all", unlabelled_only: bool = False
                   ) -> np.ndarray:
    """The store rows a queue may hold: `split`, minus rows a session already answered."""
    rows = store.indices(split)
    if unlabelled_only and store.class_names:
        rows = rows[store.column("label")[rows] < 0]
    done = answered_rows(store.path)
    if done:
        rows = rows[~np.isin(rows, np.fromiter(done, dtype=np.int64))]
    return rows


def choose(strategy: str, pool: Pool, n: int, seed: int = 0) -> np.ndarray:
    """Positions into `pool` chosen by a registered strategy, checked to be distinct.

    Args:
        strategy: a registered selector name (``list_plugins("selector")``).
        pool: the candidates.
        n: how many.
        seed: the strategy's random seed.

    Returns:
        Distinct int positions into `pool`, at most `n`, most useful first.

    Example:
        >>> choose("hybrid", Pool(probs, feats), 50)                        # doctest: +SKIP
    """
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    selector = get_registry().get("selector", strategy)
    picks = np.asarray(selector.select(pool, min(n, len(pool)), np.random.default_rng(seed)),
                       dtype=np.int64)
    if len(np.unique(picks)) != len(picks) or (len(picks) and
                                               (picks.min() < 0 or picks.max() >= len(pool))):
        raise UserError(f"selection strategy '{strategy}' returned invalid positions "
                        f"(duplicates or outside the pool of {len(pool)}); fix or remove "
                        f"the plugin that provides it")
    return picks[:n]


def select_queue(run_path: Path, store_path: Path, n: int, strategy: str, out: Path | None,
                 split: str = "all", tta: int = 1, seed: int = 0,
                 unlabelled_only: bool = False) -> dict:
    """Choose `n` objects of a store to label next and write the queue file.

    Returns:
        The queue dict (``rows``, ``object_ids``, ``scores`` entropy, ``strategy``, ...).
    """
    from ...label_store import collect_labels
    from ..runs import RunDir

    get_registry().get("selector", strategy)  # an unknown name fails before the network runs
    if out is not None and out.exists() and out.is_dir():
        raise UserError(f"--out {out} is a folder; name a queue file such as queue.json")
    store = CutoutStore.open(store_path)
    if store.n == 0:
        raise UserError(f"store {store_path} holds no objects; ingest some first")
    info = RunDir(Path(run_path)).info()
    rows = candidate_rows(store, split, unlabelled_only)
    if len(rows) == 0:
        raise UserError(f"every object of split '{split}' in {store_path} is already answered; "
                        f"nothing to select (use another --split)")
    lab_rows, lab_y = collect_labels(store.path, list(info["class_names"]))
    seen = observe_rows(Path(run_path), store, np.concatenate([rows, lab_rows]), tta)
    is_lab = np.isin(seen.rows, lab_rows)
    pool = Pool(seen.probs[~is_lab], seen.feats[~is_lab], seen.feats[is_lab],
                lab_y[np.searchsorted(lab_rows, seen.rows[is_lab])])
    picks = choose(strategy, pool, n, seed)
    chosen = seen.rows[~is_lab][picks]
    queue = {"format": QUEUE_FORMAT, "store": str(store.path.resolve()),
             "run": str(Path(run_path).resolve()), "run_id": info.get("run_id"),
             "strategy": strategy, "tta": tta, "seed": seed, "split": split,
             "classes": list(info["class_names"]),
             "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "rows": [int(r) for r in chosen],
             "object_ids": [str(i) for i in store.column("object_id")[chosen]],
             "entropy": [round(float(e), 5) for e in entropy(seen.probs[~is_lab][picks])]}
    if out is not None:
        write_queue(out, queue)
    return queue


def write_queue(path: Path, queue: dict) -> Path:
    """Write a queue file atomically (a kill leaves the old file or the new one)."""
    path = Path(path)
    if not path.parent.exists():
        raise UserError(f"folder {path.parent} for the queue file does not exist; create it "
                        f"or choose another --out")
    atomic_write_text(path, json.dumps(queue, indent=1))
    return path


def read_queue(path: Path, store: CutoutStore) -> dict:
    """A queue file, checked against the store it is used with (ids must match rows)."""
    path = Path(path)
    try:
        queue = json.loads(path.read_text())
        rows = [int(r) for r in queue["rows"]]
        ids = [str(i) for i in queue["object_ids"]]
    except FileNotFoundError:
        raise UserError(f"queue file {path} does not exist; write one with "
                        f"`astrotransfer select`") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"queue file {path} is not a queue written by `astrotransfer select` "
                        f"({type(exc).__name__}); write it again") from None
    have = store.column("object_id")
    bad = [r for r, i in zip(rows, ids) if r < 0 or r >= store.n or str(have[r]) != i]
    if bad:
        raise UserError(f"queue file {path} does not belong to store {store.path} (row {bad[0]} "
                        f"is another object there); select again for this store")
    return queue
