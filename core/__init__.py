"""astrotransfer: classify objects in a new survey with what networks learned elsewhere.

The public Python API (see docs/python-api.md) is importable from here:

    import astrotransfer as at
    at.ingest("sim", "sdss.zarr", instrument="sdss", n=500)
    run = at.train(source="sdss.zarr", target="des.zarr", out="runs/dann", adapt="dann")
    run.evaluate("des.zarr")
    probs = run.predict_array(images)

Those names are resolved lazily (module `__getattr__`, PEP 562): importing the package
loads neither torch nor the engine, so `astrotransfer --help` stays fast. The kernel owns
the plugin system, the cutout store, the engine and the CLI; surveys, backbones, adapters
and trainers are plugins, built-in ones included.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("astrotransfer")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from .errors import UserError  # noqa: E402
from .hookspecs import hookimpl  # noqa: E402

_API = ("ingest", "train", "load_run", "open_store", "list_plugins", "aggregate_metrics",
        "label_errors",
        "augmentation", "rank", "crop_study", "select", "choose", "label_page", "store_labels",
        "FrozenHead", "Run", "CutoutStore", "TrainConfig")

__all__ = ["__version__", "UserError", "hookimpl", *_API]


def __getattr__(name: str):
    if name in _API:
        from . import api

        value = getattr(api, name)
        globals()[name] = value  # resolved once
        return value
    raise AttributeError(f"module 'astrotransfer' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
