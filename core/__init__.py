"""astrotransfer: classify objects in a new survey with what networks learned elsewhere.

The kernel (this package) owns the plugin system, the cutout store, the training engine
and the CLI. Surveys, backbones, adapters and trainers are plugins, built-in ones included.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("astrotransfer")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from .errors import UserError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402

__all__ = ["__version__", "UserError", "hookimpl"]
