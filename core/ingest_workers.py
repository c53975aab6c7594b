"""Cutouts decoded in worker processes while the ingest loop commits the previous batch.

Why: decoding and resizing a JPEG is pure CPU work per object, while the store's batch
commit is cheap and must stay in one process (one writer, one lock, one `n_committed`).
So `IngestLoader` hands each batch's candidates to a pool of worker processes and yields the
finished batches *in catalog order*, one batch ahead: while the main process writes batch k
to zarr, the workers already decode batch k+1. The commit protocol is untouched: only the
main process writes, and it commits exactly the batches the sequential loop would.

Workers are forked *before* the ingest takes the store lock (`start()` is called first), so
no worker inherits the lock's file descriptor: a `kill -9` of the ingest frees the lock at
once even while a worker is still exiting. Each worker ignores SIGINT (Ctrl-C stops the main
process, which shuts the pool down) and exits by itself within a second when its parent
dies, so a killed ingest leaves no orphans.

Only sources that declare `load_in_workers = True` (a `load` that depends on the candidate
and the source's own state alone) are decoded in workers; any other source is loaded in
the main process, exactly as before.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator

import numpy as np

from .errors import SkipObject, UserError
from .survey import Candidate, IngestSource

# (candidate, image or None, flags, skip reason or None)
Loaded = tuple[Candidate, "np.ndarray | None", int, "str | None"]

_WORKER: dict = {}


def default_workers(source: IngestSource) -> int:
    """Worker processes for a source: one per usable core when it can load in workers."""
    if not getattr(source, "load_in_workers", False):
        return 0
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _init_worker(source, shape, load_fn, parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER.update(source=source, shape=shape, load=load_fn)

    def watch_parent() -> None:  # a killed ingest must not leave workers behind
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()


def _load_chunk(cands: list[Candidate]) -> list[tuple["np.ndarray | None", int, "str | None"]]:
    out = []
    for cand in cands:
        try:
            image, flags = _WORKER["load"](_WORKER["source"], cand, _WORKER["shape"])
            out.append((image, flags, None))
        except SkipObject as exc:
            out.append((None, 0, str(exc)))
    return out


def _noop() -> int:
    return os.getpid()


class IngestLoader:
    """Loads batches of candidates, in worker processes when `workers` > 1.

    Args:
        source: the opened survey input.
        shape: the (C, H, W) every cutout must have.
        load_fn: `load_fn(source, candidate, shape) -> (image, flags)`, raising SkipObject.
        workers: processes to decode in; 0 or 1 loads in the calling process.

    Example:
        >>> with IngestLoader(source, (3, 64, 64), _load, workers=2) as loader:  # doctest: +SKIP
        ...     loader.start()          # fork before taking any lock
        ...     for batch in loader.batches(todo, 256):
        ...         commit(batch)
    """

    def __init__(self, source: IngestSource, shape, load_fn: Callable, workers: int):
        self.source, self.shape, self.load_fn = source, shape, load_fn
        self.workers = max(0, int(workers))
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> "IngestLoader":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def start(self) -> None:
        """Fork the workers now (call before taking the store lock)."""
        if self.workers <= 1 or self._pool is not None:
            return
        # fork: the source need not be picklable, and nothing is imported again
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(self.source, self.shape, self.load_fn, os.getpid()))
        self._pool.submit(_noop).result()  # with fork, every worker is launched on first submit

    def batches(self, todo: list[Candidate], batch_size: int) -> Iterator[list[Loaded]]:
        """The loaded batches of `todo`, in order; skips come back with their reason."""
        starts = range(0, len(todo), batch_size)
        if self._pool is None:
            for start in starts:
                yield [self._load_here(c) for c in todo[start:start + batch_size]]
            return
        # chunks small enough to spread a batch over the workers, large enough to amortise IPC
        chunk = max(1, min(32, batch_size // (4 * self.workers)))
        pending: deque[tuple[list[Candidate], list[Future]]] = deque()

        def submit(start: int) -> None:
            batch = todo[start:start + batch_size]
            pending.append((batch, [self._pool.submit(_load_chunk, batch[i:i + chunk])
                                    for i in range(0, len(batch), chunk)]))

        it = iter(starts)
        for start in it:  # two batches in flight: one being committed, one being decoded
            submit(start)
            if len(pending) >= 2:
                break
        while pending:
            batch, futures = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                submit(nxt)
            try:
                results = [r for f in futures for r in f.result()]
            except BrokenProcessPool:
                raise UserError(f"a decode worker of the {self.source.survey} ingest died "
                                f"(out of memory?); run the same command again to resume, "
                                f"with --workers 1 to decode in one process") from None
            yield [(c, img, flags, why) for c, (img, flags, why) in zip(batch, results)]

    def _load_here(self, cand: Candidate) -> Loaded:
        try:
            image, flags = self.load_fn(self.source, cand, self.shape)
            return cand, image, flags, None
        except SkipObject as exc:
            return cand, None, 0, str(exc)
