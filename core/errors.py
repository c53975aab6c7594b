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
