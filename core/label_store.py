"""Labels that people make, kept in the cutout store beside the survey's own, per session.

Why a separate group and not the `label` column: the survey's labels are what the survey
said, and a labelling campaign must never blur them (a study that uses the survey's labels
as the oracle would otherwise grade itself). Each labelling session is its own append-only
log, so who labelled what, when and how the object was chosen is never lost.

Layout, inside the store folder (zarr v3):
  labels/<session>/row (int64) · object_id (str) · label (int32) · time (float64, unix s)
                   · how (str: the strategy that queued the object, or "manual")
  labels/<session> attrs: who, created, classes, strategy, run, n_committed, events

`label` is a class index into the session's `classes`, or one of SKIP (-1), UNSURE (-2)
and UNDO (-3). An UNDO entry retracts the session's latest entry not yet retracted (its
`row` names that object, for the reader's benefit), so undo too is an append and the log
keeps every click.

Commit protocol (the store's): an entry's values are written into rows past the committed
count first, and `n_committed` in the session's attributes is bumped last; zarr's local
store replaces files atomically, so a kill at any moment leaves the old or the new count,
never a torn entry. A server killed mid-click loses at most the click in flight. One
writer per session: the session folder is flock-ed (see `store.locked`) while it is open
for writing, so two pages on one session are refused instead of interleaved.
"""
from __future__ import annotations

import contextlib
import getpass
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import zarr

from .errors import UserError
from .store import CutoutStore, locked

SKIP, UNSURE, UNDO = -1, -2, -3
_ENTRY_FIELDS = {"row": "int64", "object_id": str, "label": "int32", "time": "float64",
                 "how": str}
_CHUNK = 256
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class Entry:
    """One click: the object (store row and id), what was answered, when and why it was shown."""

    row: int
    object_id: str
    label: int
    time: float
    how: str


def default_session_name() -> str:
    return f"{_user()}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"


def _user() -> str:
    try:
        name = getpass.getuser()
    except Exception:  # no login name in some containers
        name = "user"
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "user"


def list_sessions(store_path: Path | str) -> list[str]:
    """Names of the labelling sessions in a store, oldest first (by creation time)."""
    base = Path(store_path) / "labels"
    if not base.is_dir():
        return []
    names = [p.name for p in base.iterdir() if (p / "zarr.json").exists()]
    sessions = [LabelSession.open(store_path, n) for n in names]
    return [s.name for s in sorted(sessions, key=lambda s: (s.attrs.get("created", ""), s.name))]


class LabelSession:
    """One session's append-only log of labels in a store.

    Example:
        >>> s = LabelSession.create("ceers.zarr", classes=["elliptical", "spiral"])  # doctest: +SKIP
        >>> with s.writing():                                                       # doctest: +SKIP
        ...     s.append(row=12, label=1, how="hybrid")
        >>> s.current()                                                             # doctest: +SKIP
        {12: 1}
    """

    def __init__(self, store_path: Path, name: str, group: zarr.Group):
        self.store_path = Path(store_path)
        self.name = name
        self.group = group
        self._ids: np.ndarray | None = None

    # ---------------------------------------------------------------- opening
    @classmethod
    def create(cls, store_path: Path | str, classes: list[str], name: str | None = None,
               who: str | None = None, strategy: str = "manual",
               run: str | None = None) -> "LabelSession":
        """A new, empty session in an existing store (the store itself is not modified)."""
        store = CutoutStore.open(store_path)
        name = name or default_session_name()
        if not _NAME.match(name):
            raise UserError(f"session name '{name}' must be letters, digits, '.', '_' or '-' "
                            f"(at most 64); choose another --session")
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise UserError(f"a labelling session needs at least 2 distinct classes, got "
                            f"{','.join(classes) or 'none'}; pass --classes A,B")
        path = store.path / "labels" / name
        if (path / "zarr.json").exists():
            raise UserError(f"session '{name}' already exists in {store.path}; choose another "
                            f"--session or open it to continue")
        group = zarr.open_group(str(store.path), mode="a").require_group(f"labels/{name}")
        for field, dtype in _ENTRY_FIELDS.items():
            group.create_array(field, shape=(0,), chunks=(_CHUNK,), dtype=dtype)
        group.attrs.update({"who": who or _user(), "classes": list(classes),
                            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "strategy": strategy, "run": run, "n_committed": 0, "events": []})
        return cls(store.path, name, group)

    @classmethod
    def open(cls, store_path: Path | str, name: str, mode: str = "r") -> "LabelSession":
        path = Path(store_path) / "labels" / name
        if not (path / "zarr.json").exists():
            known = ", ".join(list_sessions(store_path)) if (Path(store_path) / "labels").is_dir() else ""
            raise UserError(f"store {store_path} has no labelling session '{name}' "
                            f"(sessions: {known or 'none'}); start one with `astrotransfer label`")
        group = zarr.open_group(str(path), mode=mode)
        missing = [f for f in (*_ENTRY_FIELDS,) if f not in group]
        if missing or "n_committed" not in group.attrs:
            raise UserError(f"labelling session {path} is damaged (missing "
                            f"{', '.join(missing) or 'n_committed'}); move it aside and start "
                            f"a new session")
        return cls(Path(store_path), name, group)

    @contextlib.contextmanager
    def writing(self):
        """Hold the session's write lock (a second page on the same session is refused)."""
        path = self.store_path / "labels" / self.name
        with locked(path, f"labelling session '{self.name}'"):
            if self.group.read_only:
                self.group = zarr.open_group(str(path), mode="a")
            yield self

    # ---------------------------------------------------------------- facts
    @property
    def attrs(self) -> dict:
        return dict(self.group.attrs)

    @property
    def classes(self) -> list[str]:
        return list(self.group.attrs["classes"])

    @property
    def n(self) -> int:
        return int(self.group.attrs["n_committed"])

    def entries(self) -> list[Entry]:
        n = self.n
        cols = {f: np.asarray(self.group[f][:n]) for f in _ENTRY_FIELDS}
        return [Entry(int(cols["row"][i]), str(cols["object_id"][i]), int(cols["label"][i]),
                      float(cols["time"][i]), str(cols["how"][i])) for i in range(n)]

    def effective(self) -> list[Entry]:
        """The entries still standing after undos, oldest first (a row may appear twice when
        it was answered again; the later answer counts)."""
        stack: list[Entry] = []
        for e in self.entries():
            if e.label == UNDO:
                if stack:
                    stack.pop()
            else:
                stack.append(e)
        return stack

    def current(self) -> dict[int, int]:
        """Store row -> the standing answer (class index, SKIP or UNSURE), latest wins."""
        return {e.row: e.label for e in self.effective()}

    # ---------------------------------------------------------------- writing
    def append(self, row: int, label: int, how: str = "manual",
               object_id: str | None = None) -> Entry:
        """Commit one answer: values first, then the count (the store's commit protocol).

        Args:
            row: the store row of the object.
            label: a class index into `classes`, SKIP, UNSURE or UNDO.
            how: what queued the object (a strategy name, "manual").
            object_id: the object's id; read from the store when None.

        Returns:
            The committed `Entry`.
        """
        if not (UNDO <= label < len(self.classes)):
            raise UserError(f"label {label} is not a class of session '{self.name}' "
                            f"({', '.join(self.classes)}), skip, unsure or undo")
        if object_id is None:
            object_id = str(self._object_ids()[row])
        entry = Entry(int(row), str(object_id), int(label), time.time(), str(how))
        n = self.n
        for field in _ENTRY_FIELDS:
            arr = self.group[field]
            if arr.shape[0] <= n:  # grow a chunk at a time: rows past n are uncommitted
                arr.resize((n + _CHUNK,))
            value = getattr(entry, field)
            arr[n:n + 1] = np.array([value], dtype=object).astype(str) \
                if arr.dtype.kind in "OTU" else np.array([value])
        self.group.attrs["n_committed"] = n + 1
        return entry

    def note_event(self, event: dict) -> None:
        """Record a session event (a retrain and re-queue) in the session's attributes."""
        events = list(self.group.attrs.get("events", []))
        events.append({"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       **event})
        self.group.attrs["events"] = events

    def _object_ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = CutoutStore.open(self.store_path).column("object_id")
        return self._ids


def collect_labels(store_path: Path | str, classes: list[str],
                   sessions: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Every standing class label of a store's sessions, in the order of `classes`.

    Classes are matched by name, so a session labelled with `spiral,elliptical` trains a run
    whose classes are `elliptical,spiral` correctly; a session with a class the run lacks is
    refused. Sessions are read oldest first and a later answer for the same object wins;
    skip and unsure answers give no label (and an object once labelled, later marked
    unsure, loses its label).

    Args:
        store_path: the store holding the sessions.
        classes: the class names wanted, in the wanted order (e.g. a run's).
        sessions: session names; None for all.

    Returns:
        (rows, labels): sorted store rows and their class indices into `classes`.

    Example:
        >>> rows, y = collect_labels("ceers.zarr", ["elliptical", "spiral"])  # doctest: +SKIP
    """
    names = list_sessions(store_path) if sessions is None else sessions
    answer: dict[int, int] = {}
    for name in names:
        s = LabelSession.open(store_path, name)
        unknown = sorted(set(s.classes) - set(classes))
        if unknown:
            raise UserError(f"labelling session '{name}' in {store_path} has classes "
                            f"{','.join(s.classes)}, but {','.join(unknown)} is not among "
                            f"{','.join(classes)}; use sessions with the run's classes")
        lut = {i: classes.index(c) for i, c in enumerate(s.classes)}
        for row, label in s.current().items():
            answer[row] = lut[label] if label >= 0 else -1
    rows = np.array(sorted(r for r, v in answer.items() if v >= 0), dtype=np.int64)
    return rows, np.array([answer[int(r)] for r in rows], dtype=np.int64)


def answered_rows(store_path: Path | str) -> set[int]:
    """Rows any session has a standing answer for (labelled, skipped or unsure): what a new
    queue should not show again."""
    seen: set[int] = set()
    for name in list_sessions(store_path):
        seen.update(LabelSession.open(store_path, name).current())
    return seen
