"""The labelling desk: the queue, the session log and the retrain loop behind the label page.

Kept apart from the web layer (`server.py`) so that every rule of a labelling session (what
is shown next, what a key means, what undo takes back, when the head is refitted) is plain
Python a test can drive without a browser, and the page is a thin client of it.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...label_store import (SKIP, UNDO, UNSURE, LabelSession, answered_rows, collect_labels,
                            list_sessions)
from ...selector import Pool
from ...store import CutoutStore
from .head import FrozenHead
from .render import cutout_png, views
from .selection import candidate_rows, choose, observe_rows, read_queue

log = logging.getLogger("astrotransfer")
RESERVED_KEYS = {" ": "skip", "u": "unsure", "z": "undo", "r": "retrain", "b": "next view"}


def parse_classes(text: str | list[str] | None) -> list[str] | None:
    if text is None:
        return None
    names = [c.strip() for c in (text.split(",") if isinstance(text, str) else text)]
    return [c for c in names if c] or None


def resolve_classes(store: CutoutStore, run_classes: list[str] | None,
                    given: list[str] | None, run_path: Path | None) -> list[str]:
    """The session's classes: --classes, else the run's, else the store's; a run whose class
    set differs from --classes is refused (its probabilities would mean other things)."""
    if given and run_classes is not None and sorted(given) != sorted(run_classes):
        raise UserError(f"run {run_path} was trained on classes {','.join(run_classes)} but "
                        f"--classes gives {','.join(given)}; pass the run's classes or label "
                        f"without --run")
    classes = given or run_classes or (store.class_names or None)
    if not classes:
        raise UserError(f"store {store.path} names no classes; pass --classes A,B")
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise UserError(f"--classes needs at least 2 distinct names, got {','.join(classes)}")
    return list(classes)


def resolve_keys(classes: list[str], keys: str | list[str] | None) -> list[str]:
    """One key per class: --keys, else 1..K. Reserved keys and repeats are refused."""
    if keys is None:
        if len(classes) > 9:
            raise UserError(f"{len(classes)} classes need --keys (one key each), digits only "
                            f"reach 9")
        return [str(i + 1) for i in range(len(classes))]
    keys = [k.strip() for k in keys.split(",")] if isinstance(keys, str) else list(keys)
    bad = [k for k in keys if len(k) != 1 or k.lower() in RESERVED_KEYS or k == ","]
    if bad or len(keys) != len(classes) or len(set(k.lower() for k in keys)) != len(keys):
        what = (f"'{bad[0]}' is not a usable class key" if bad else
                f"--keys gives {len(keys)} distinct keys for {len(classes)} classes")
        raise UserError(f"{what}: use one single character per class "
                        f"({','.join(classes)}), none of space,u,z,r,b (skip, unsure, undo, "
                        f"retrain, view), e.g. --keys 1,2")
    return keys


class LabelDesk:
    """One person's labelling session over a queue of a store's objects.

    Args:
        store_path: the store whose objects are labelled (and where labels are written).
        classes, keys: the answers and their keys (see `resolve_classes`, `resolve_keys`).
        session: an open `LabelSession` (written to while the desk runs).
        run_path: a run for probabilities, embeddings and the head-only retrain; optional.
        queue: a queue file from `select`; default: chosen here (with a run) or store order.
        strategy, batch: what re-queues after each batch, and how many.
        split, tta, seed: candidates, test-time augmentation views, strategy seed.
    """

    def __init__(self, store_path: Path, classes: list[str], keys: list[str],
                 session: LabelSession, run_path: Path | None = None,
                 queue: Path | None = None, strategy: str = "hybrid", batch: int = 50,
                 split: str = "all", tta: int = 1, seed: int = 0):
        self.store = CutoutStore.open(store_path)
        self.classes, self.keys, self.session = classes, keys, session
        self.lut = [session.classes.index(c) for c in classes]  # desk index -> session index
        self.run_path, self.strategy, self.batch = run_path, strategy, batch
        self.split, self.tta, self.seed = split, tta, seed
        self.lock = threading.Lock()
        self.ids = self.store.column("object_id")
        self.obs = None
        self.queue: list[int] = []
        self.how: dict[int, str] = {}
        if queue is not None:
            q = read_queue(queue, self.store)
            self._extend(q["rows"], q.get("strategy", "queue"))
        if run_path is not None:
            rows = self.store.indices(split)
            log.info("applying run %s to %d objects of %s (once per session)", run_path,
                     len(rows), self.store.path)
            self.obs = observe_rows(run_path, self.store, rows, tta)
        if not self.queue:
            self.requeue(first=True)

    # ------------------------------------------------------------------ queue
    def _extend(self, rows, how: str) -> None:
        done = set(self.session.current()) | answered_rows(self.store.path)
        for r in map(int, rows):
            if r not in self.how and r not in done:
                self.queue.append(r)
                self.how[r] = how

    def pending(self) -> list[int]:
        answered = self.session.current()
        return [r for r in self.queue if r not in answered]

    def requeue(self, first: bool = False) -> dict:
        """Refit the head on every label of the store (with a run) and queue the next batch
        by the strategy; without a run, queue every unanswered object in store order."""
        if self.obs is None:
            rows = candidate_rows(self.store, self.split)
            self._extend(rows, "store order")
            return {"queued": len(rows), "strategy": "store order"}
        lab_rows, lab_y = collect_labels(self.store.path, self.classes)
        in_obs = np.isin(lab_rows, self.obs.rows)
        lab_rows, lab_y = lab_rows[in_obs], lab_y[in_obs]
        pos = np.searchsorted(self.obs.rows, lab_rows)
        probs, fitted = self.obs.probs, False
        if FrozenHead.can_fit(lab_y):
            head = FrozenHead(len(self.classes)).fit(self.obs.feats[pos], lab_y)
            probs, fitted = head.predict_proba(self.obs.feats), True
        taken = set(self.queue) | answered_rows(self.store.path)
        free = np.flatnonzero(~np.isin(self.obs.rows, np.fromiter(taken, np.int64, len(taken))))
        if len(free) == 0:
            return {"queued": 0, "strategy": self.strategy, "head_refit": fitted}
        strategy = "balanced" if (first and len(lab_rows) == 0) else self.strategy
        pool = Pool(probs[free], self.obs.feats[free], self.obs.feats[pos], lab_y)
        picks = choose(strategy, pool, self.batch, self.seed + len(self.queue))
        self._extend(self.obs.rows[free][picks], strategy)
        event = {"queued": int(len(picks)), "strategy": strategy, "head_refit": fitted,
                 "n_labels": int(len(lab_rows))}
        self.session.note_event(event)
        return event

    # ------------------------------------------------------------------ answers
    def answer(self, row: int, answer: str) -> None:
        """Record an answer for the object shown: a class name, a class key, skip or unsure."""
        with self.lock:
            pending = self.pending()
            if not pending or int(row) != pending[0]:
                raise UserError(f"object row {row} is not the one being shown; reload the page")
            code = self._code(answer)
            self.session.append(int(row), code, self.how.get(int(row), "manual"),
                                str(self.ids[int(row)]))

    def _code(self, answer: str) -> int:
        answer = str(answer)
        if answer in ("skip", " "):
            return SKIP
        if answer in ("unsure", "u"):
            return UNSURE
        for i, (c, k) in enumerate(zip(self.classes, self.keys)):
            if answer == c or answer == k:
                return self.lut[i]
        raise UserError(f"unknown class or key '{answer}'; this session's classes are "
                        + ", ".join(f"{c} [{k}]" for c, k in zip(self.classes, self.keys))
                        + ", skip [space], unsure [u]")

    def undo(self) -> int | None:
        """Take back this session's latest standing answer; its object is shown again."""
        with self.lock:
            standing = self.session.effective()
            if not standing:
                return None
            last = standing[-1]
            self.session.append(last.row, UNDO, "undo", last.object_id)
            if last.row not in self.how:  # answered in an earlier run of the page
                self.queue.insert(0, last.row)
                self.how[last.row] = last.how
            else:  # show it next, before the rest of the pending queue
                self.queue.remove(last.row)
                self.queue.insert(0, last.row)
            return last.row

    # ------------------------------------------------------------------ views
    def image(self, row: int, view: str = "auto", softening: float = 0.1) -> bytes:
        if not 0 <= row < self.store.n:
            raise UserError(f"row {row} is outside store {self.store.path} (0..{self.store.n - 1})")
        return cutout_png(self.store.read_images(np.array([row]))[0], self.store.bands, view,
                          softening)

    def state(self) -> dict:
        pending = self.pending()
        standing = self.session.effective()
        names = {SKIP: "skip", UNSURE: "unsure",
                 **{self.lut[i]: c for i, c in enumerate(self.classes)}}
        in_queue = set(self.queue)
        done = sum(1 for e in {e.row: e for e in standing}.values() if e.row in in_queue)
        counts = {n: 0 for n in [*self.classes, "skip", "unsure"]}
        for e in {e.row: e for e in standing}.values():
            counts[names[e.label]] += 1
        current = pending[0] if pending else None
        return {"store": self.store.path.name, "session": self.session.name,
                "who": self.session.attrs.get("who"), "classes": self.classes,
                "keys": self.keys, "views": views(self.store.bands), "done": done,
                "total": len(self.queue), "counts": counts,
                "current": None if current is None else {
                    "row": current, "object_id": str(self.ids[current]),
                    "how": self.how.get(current, "")},
                "upcoming": [{"row": r, "object_id": str(self.ids[r])} for r in pending[1:7]],
                "recent": [{"row": e.row, "object_id": e.object_id, "answer": names[e.label]}
                           for e in standing[-8:]][::-1],
                "can_retrain": self.obs is not None, "strategy": self.strategy,
                "batch": self.batch, "sessions": len(list_sessions(self.store.path))}
