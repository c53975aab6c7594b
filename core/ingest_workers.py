"""Cutouts decoded in worker processes while the ingest loop commits the previous batch.

Why: decoding and resizing a JPEG is pure CPU work per object, while the store's batch
commit is cheap and must stay in one process (one writer, one lock, one `n_committed`).
So `IngestLoader` hands each batch's candidates to a pool of worker processes and yields the
finished batches *in catalog order*, one batch ahead: while the main process writes batch k
to zarr, the workers already decode batch k+1. The commit protocol is untouched: only the
main process writes, and it commits exactly the batches the sequential loop would.

Pixels do not travel through pipes: before forking, the loader maps a shared anonymous
buffer of SLOTS batches, and a worker writes each cutout straight into its row of its
batch's slot, returning only the flags and skip reason. The main process then hands the
slot itself (or the rows kept, when some were skipped) to the store's commit, so a cutout
is never pickled, unpickled or stacked: on 64-pixel GZ1 stamps those copies cost a fifth
of the decode itself on this machine (docs/benchmarks.md, "Survey-scale throughput").

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

import mmap
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

# (candidate, flags, skip reason or None); the pixels are row i of the batch's block
Loaded = tuple[Candidate, int, "str | None"]

_WORKER: dict = {}
# batches the shared buffer holds: the one being committed and IN_FLIGHT decoded meanwhile
SLOTS = 4
IN_FLIGHT = SLOTS - 1


def default_workers(source: IngestSource) -> int:
    """Worker processes for a source: one per usable core when it can load in workers."""
    if not getattr(source, "load_in_workers", False):
        return 0
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _init_worker(source, shape, load_fn, parent: int, slots: np.ndarray) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # fork: `slots` is the parent's shared mapping itself, not a pickled copy
    _WORKER.update(source=source, shape=shape, load=load_fn, slots=slots)

    def watch_parent() -> None:  # a killed ingest must not leave workers behind
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch_parent, daemon=True).start()


def _load_chunk(slot: int, row: int, cands: list[Candidate]) -> list[tuple[int, "str | None"]]:
    """Decode `cands` into rows `row`, `row + 1`, ... of shared slot `slot`."""
    block = _WORKER["slots"][slot]
    out = []
    for i, cand in enumerate(cands):
        try:
            image, flags = _WORKER["load"](_WORKER["source"], cand, _WORKER["shape"])
            block[row + i] = image
            out.append((flags, None))
        except SkipObject as exc:
            out.append((0, str(exc)))
    return out


def _noop() -> int:
    return os.getpid()


class IngestLoader:
    """Loads batches of candidates, in worker processes when `workers` > 1.

    Args:
        source: the opened survey input.
        shape: the (C, H, W) every cutout must have.
        load_fn: `load_fn(source, candidate, shape) -> (image, flags)`, raising SkipObject;
            the image is of `shape` and `dtype`.
        workers: processes to decode in; 0 or 1 loads in the calling process.
        batch_size: the most candidates `batches` is asked for at once.
        dtype: the cutouts' type in the batches (the store's: float32, float16 or uint8).

    Example:
        >>> with IngestLoader(source, (3, 64, 64), _load, workers=2) as loader:  # doctest: +SKIP
        ...     loader.start()          # fork before taking any lock
        ...     for items, images in loader.batches(todo, 256):
        ...         commit(items, images)   # images[i] is items[i]'s cutout
    """

    def __init__(self, source: IngestSource, shape, load_fn: Callable, workers: int,
                 batch_size: int = 256, dtype: str = "float32"):
        self.source, self.shape, self.load_fn = source, tuple(shape), load_fn
        self.dtype = np.dtype(dtype)
        self.workers = max(0, int(workers))
        self.batch_size = max(1, int(batch_size))
        self._pool: ProcessPoolExecutor | None = None
        self._slots: np.ndarray | None = None

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
        # shared between this process and the forked workers; pages are touched only when
        # written, and the mapping goes when the last process holding it exits
        item = int(np.prod(self.shape)) * self.dtype.itemsize
        buf = mmap.mmap(-1, SLOTS * self.batch_size * item)
        self._slots = np.frombuffer(buf, self.dtype).reshape(SLOTS, self.batch_size,
                                                             *self.shape)
        getattr(self.source, "share_before_fork", lambda: None)()  # optional (IngestSource)
        # fork: the source need not be picklable, and nothing is imported again
        self._pool = ProcessPoolExecutor(
            self.workers, mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(self.source, self.shape, self.load_fn, os.getpid(), self._slots))
        self._pool.submit(_noop).result()  # with fork, every worker is launched on first submit
        getattr(self.source, "release_after_fork", lambda: None)()

    def batches(self, todo: list[Candidate],
                batch_size: int | None = None) -> Iterator[tuple[list[Loaded], np.ndarray]]:
        """The loaded batches of `todo`, in order, as (items, images): skips come back with
        their reason, and `images[i]` is item i's cutout (garbage for a skip).

        With workers, `images` is a view of a shared slot, reused for a later batch as soon
        as the caller asks for the next one: commit it (or copy it) before that.
        IN_FLIGHT batches are decoded while the caller commits, so a commit slower than
        one batch's decoding (a loaded machine, a slow disk) does not idle the workers."""
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size > self.batch_size:
            raise ValueError(f"batch_size {batch_size} is over the loader's {self.batch_size}")
        starts = range(0, len(todo), batch_size)
        if self._pool is None:
            for start in starts:
                yield self._load_here(todo[start:start + batch_size])
            return
        # chunks small enough to spread a batch over the workers, large enough to amortise IPC
        chunk = max(1, min(32, batch_size // (4 * self.workers)))
        pending: deque[tuple[list[Candidate], int, list[Future]]] = deque()
        n_submitted = 0

        def submit(start: int) -> None:
            nonlocal n_submitted
            batch, slot = todo[start:start + batch_size], n_submitted % SLOTS
            n_submitted += 1
            pending.append((batch, slot, [self._pool.submit(_load_chunk, slot, i,
                                                            batch[i:i + chunk])
                                          for i in range(0, len(batch), chunk)]))

        it = iter(starts)
        for start in it:
            submit(start)
            if len(pending) >= IN_FLIGHT:
                break
        while pending:
            batch, slot, futures = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:  # into the slot of a batch the caller is done with
                submit(nxt)
            try:
                results = [r for f in futures for r in f.result()]
            except BrokenProcessPool:
                raise UserError(f"a decode worker of the {self.source.survey} ingest died "
                                f"(out of memory?); run the same command again to resume, "
                                f"with --workers 1 to decode in one process") from None
            yield ([(c, flags, why) for c, (flags, why) in zip(batch, results)],
                   self._slots[slot, :len(batch)])

    def _load_here(self, batch: list[Candidate]) -> tuple[list[Loaded], np.ndarray]:
        images = np.zeros((len(batch), *self.shape), self.dtype)
        items = []
        for i, cand in enumerate(batch):
            try:
                images[i], flags = self.load_fn(self.source, cand, self.shape)
                items.append((cand, int(flags), None))
            except SkipObject as exc:
                items.append((cand, 0, str(exc)))
        return items, images
