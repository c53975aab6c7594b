"""Errors a user can act on.

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
