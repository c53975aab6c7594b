"""Graceful stop on SIGTERM and SIGINT: finish the unit of work in hand, commit it, exit.

Clusters end jobs with SIGTERM (SLURM at the wall time or on pre-emption, then SIGKILL
after a grace period). Every writing command already survives SIGKILL through atomic
commits; SIGTERM lets it do better: stop at the next safe point, commit what is done (a
store batch, a catalog part, a mid-epoch checkpoint) and exit with `EXIT_STOPPED`, so a
batch script can tell "stopped, resumable" (75, BSD's EX_TEMPFAIL: try again later) from
"failed" (1) and requeue the job.

Two modes, one signal handler:

* outside any `deferred()` block (start-up, model building, a merge), the signal raises
  `Stopped` at once: nothing is in flight that an atomic write does not already protect;
* inside `deferred()` (the loops of ingest, train and predict), it only records the
  request; the loop calls `check()` at its safe points and raises `Stopped` there, with a
  message saying what was committed. A second signal while deferred stops at once.

Example:
    >>> from astrotransfer import interrupt
    >>> with interrupt.deferred():
    ...     for batch in range(3):
    ...         pass                       # do and commit one unit of work
    ...         interrupt.check("ingest", "rerun the same command to resume")
"""
from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator

EXIT_STOPPED = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state = {"signal": None, "deferring": 0}


class Stopped(BaseException):
    """A signal stopped the command at a safe point; `str()` says what was kept.

    A `BaseException` like `KeyboardInterrupt`, so no `except Exception` on the way up
    swallows it and no cleanup meant for failures (deleting a new partial store) runs.
    """


def requested() -> str | None:
    """The name of the signal that asked to stop ("SIGTERM"), or None."""
    return _state["signal"]


def _handler(signum, frame) -> None:
    name = signal.Signals(signum).name
    again = _state["signal"] is not None
    _state["signal"] = name
    if again or not _state["deferring"]:
        raise Stopped(f"stopped by {name} before a safe point; everything committed so far "
                      f"is kept: run the same command again to resume")


def _install() -> dict | None:
    """Our handler for SIGTERM/SIGINT; the previous handlers, or None off the main thread
    (Python only delivers signals there, so another thread has nothing to install)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return {s: signal.signal(s, _handler) for s in SIGNALS}


def _restore(previous: dict | None) -> None:
    for s, h in (previous or {}).items():
        signal.signal(s, h)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """The command line's whole run: SIGTERM/SIGINT become `Stopped` (exit 75), never a
    bare death or a traceback. Resets the request on entry, so one process can run this
    more than once (tests)."""
    _state["signal"] = None
    previous = _install()
    try:
        yield
    finally:
        _restore(previous)
        _state["signal"] = None  # handled (or never came): nothing for a later run to act on


@contextmanager
def deferred() -> Iterator[None]:
    """Inside, a first SIGTERM/SIGINT only sets the request that `check()` acts on.

    Installs the handler if the caller (Python API use) has not, and restores the old
    handlers on the way out; nests.
    """
    previous = _install() if signal.getsignal(signal.SIGTERM) is not _handler else None
    if previous is not None and not _state["deferring"]:
        # outermost block of a Python-API call: a request left over from an earlier call in
        # this process (one that finished its last unit before checking) is not this one's
        _state["signal"] = None
    _state["deferring"] += 1
    try:
        yield
    finally:
        _state["deferring"] -= 1
        _restore(previous)


def check(what: str, kept: str) -> None:
    """Raise `Stopped` if a stop was requested: call it right after a commit.

    Args:
        what: the command and where it stopped ("ingest after 120 committed rows").
        kept: what is on disk and how to resume ("run the same command again").
    """
    if _state["signal"] is not None:
        raise Stopped(f"stopped by {_state['signal']}: {what}; {kept}")
