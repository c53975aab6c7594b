"""What one rank does about the others failing: a watchdog for a peer that hangs, the
one-line reading of a failed collective, and the sweep of dead ranks' scratch folders.

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

import logging
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

log = logging.getLogger("astrotransfer")

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


_LOST = re.compile(r"connection (closed|reset|refused)|broken pipe|timed out|timeout|"
                   r"socket|peer|gloo|nccl", re.I)


def lost_peer(exc: BaseException) -> str | None:
    """What a failed collective says about the lost rank, cut to one short clause ("Connection
    closed by peer [127.0.0.1]:14767"), or None if `exc` is not a communication failure."""
    is_dist = any(c.__name__.startswith("Dist") for c in type(exc).__mro__)
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if not (is_dist or (isinstance(exc, RuntimeError) and _LOST.search(text))):
        return None
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)  # gloo's "[.../pair.cc:561] " source location
    return text.split(". ")[0].rstrip(".")[:160] or type(exc).__name__


SCRATCH_PREFIX = "astrotransfer-rank"


def sweep_dead_scratch(root: Path | None = None) -> list[Path]:
    """Delete the scratch folders of ranks whose process is gone; returns them.

    A rank > 0 prepares in a private temporary folder named after its pid, removed when
    it ends; a `kill -9` leaves it behind. Each rank sweeps at start-up, so a requeued job
    never piles them up. Folders of live processes, and names without a pid, are kept.
    """
    swept = []
    for path in Path(root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*-pid*-*"):
        found = re.search(r"-pid(\d+)-", path.name)
        if not (found and path.is_dir()):
            continue
        try:
            os.kill(int(found.group(1)), 0)
            continue  # alive (or someone else's): keep
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        swept.append(path)
    if swept:
        log.info("removed %d scratch folder(s) of dead ranks", len(swept))
    return swept
