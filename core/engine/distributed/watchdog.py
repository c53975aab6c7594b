"""A watchdog for one rank: a peer that hangs must not hang this rank forever.

A rank whose peer process dies sees its connections close and fails within seconds. A peer
that freezes instead (a node that hangs, loses its network or is stopped) leaves every
other rank blocked inside a collective, and DeepSpeed's own process groups wait 30 minutes
before gloo gives up. So each rank arms a watchdog around its training steps: the loop
calls `beat()` after every step, and if no beat comes for `rank_timeout()` seconds the
watchdog prints one line and ends the process (exit 1): there is no safe way to unblock a
thread stuck in a collective, and the last checkpoint is what `--resume` continues from.

Example:
    >>> with Watchdog(rank=0, world=2, timeout=300, what="train") as dog:
    ...     for step in range(3):
    ...         dog.beat()
"""
from __future__ import annotations

import os
import sys
import threading
import time

EXIT_LOST_RANK = 1


class Watchdog:
    def __init__(self, rank: int, world: int, timeout: float, what: str, resume_hint: str = ""):
        self.rank, self.world, self.timeout, self.what = rank, world, timeout, what
        self.resume_hint = resume_hint
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """This rank made progress: a step (and its collectives) finished."""
        self._last = time.monotonic()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 10)):
            quiet = time.monotonic() - self._last
            if quiet > self.timeout:
                sys.stderr.write(
                    f"error: rank {self.rank}: no progress in {self.what} for {quiet:.0f} s "
                    f"(limit ASTROTRANSFER_RANK_TIMEOUT={self.timeout:g} s): another rank "
                    f"of this {self.world}-rank job died or hangs, so this rank stops; "
                    f"{self.resume_hint}\n")
                sys.stderr.flush()
                os._exit(EXIT_LOST_RANK)  # a thread blocked in a collective cannot be freed

    def __enter__(self) -> "Watchdog":
        if self.world > 1:
            self._stop = threading.Event()  # one watch per `with`: epochs re-arm it
            self.beat()
            self._thread = threading.Thread(target=self._watch, name="astrotransfer-watchdog",
                                            daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
