"""Errors a user can act on, and the output-folder check every writing command shares.

Anything raised as `UserError` is shown as one line on stderr (no traceback unless
`--debug`), so its message must name the file or object at fault and say what to do.
"""


class UserError(Exception):
    """A problem with the user's input or environment, with the fix in its message."""


class SkipObject(Exception):
    """One object in a batch job cannot be used; the job counts it and carries on.

    Raised by survey loaders for a missing/corrupt file, an object off the frame, etc.
    The message is the reason recorded in the store.
    """


def check_output_folder(folder, flag: str = "--out", create: bool = False) -> None:
    """Refuse an output folder that cannot be written, before any work is done.

    With `create`, a missing folder is fine (the command makes it); a regular file standing
    where the folder or one of its parents should be is refused either way, for root too.
    """
    import os
    from pathlib import Path

    folder = Path(folder)
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()),
                   None)
    if blocker is not None:
        raise UserError(f"output folder {folder} is not a folder ({blocker} is a file); "
                        f"choose another {flag}")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if existing != folder and not create:
        raise UserError(f"output folder {folder} does not exist; create it first")
    if not os.access(existing, os.W_OK):
        raise UserError(f"output folder {existing} is not writable; choose another {flag}")


class DiskFull(UserError):
    """A write failed for lack of space (ENOSPC) or quota (EDQUOT): one line naming the
    path, the bytes the write needed when known and the bytes free there."""


def _free_bytes(path) -> int | None:
    import shutil
    from pathlib import Path

    for p in (Path(path), *Path(path).parents):
        if p.exists():
            try:
                return shutil.disk_usage(p).free
            except OSError:
                return None
    return None


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


class disk_space:  # noqa: N801 - used as `with disk_space(path, needed):`
    """Turn "no space left on device" inside the block into one `DiskFull` line.

    Why here and not in the CLI: only the writer knows which path it was writing and how
    many bytes it needed; zarr and torch often raise ENOSPC without a filename. `tmp`
    (a path or a list of paths) is removed on the way out, so a failed write leaves no
    half-written temporary file eating the space the user is about to free.

    Args:
        path: the file or folder being written (named in the message).
        needed: bytes the write needs, if known (an int, or a callable computed only on
            failure, for sizes that cost something to know).
        upper_bound: `needed` is a bound, not an estimate (zarr rewrites whole chunks).
        tmp: temporary file(s) of the write to delete on failure.

    Example:
        >>> with disk_space(out / "last.pt", needed=len(data), tmp=tmp):
        ...     tmp.write_bytes(data)
    """

    def __init__(self, path, needed=None, tmp=None, upper_bound: bool = False):
        self.path, self.needed, self.upper_bound = path, needed, upper_bound
        self.tmp = [] if tmp is None else (list(tmp) if isinstance(tmp, (list, tuple)) else [tmp])

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        import errno
        from pathlib import Path

        full = (isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)) or (
            exc is not None and "No space left on device" in str(exc))
        if not full:
            return False
        for t in self.tmp:
            Path(t).unlink(missing_ok=True)
        needed = self.needed() if callable(self.needed) else self.needed
        free = _free_bytes(self.path)
        what = ", ".join(x for x in (
            f"needs {'up to' if self.upper_bound else 'about'} {_size(int(needed))}"
            if needed else "",
            f"{_size(free)} free there" if free is not None else "") if x)
        raise DiskFull(f"disk full: could not write {self.path}"
                       + (f" ({what})" if what else "")
                       + "; what was committed before is kept: free space (or choose "
                         "another output folder) and run the same command again to resume "
                         "(train: with --resume)"
                       ) from None
