"""The public Python API: what the CLI, `tools/` and notebooks call.

Everything here is re-exported lazily at the top of the package (`astrotransfer.train`,
`astrotransfer.load_run`, ...), so `import astrotransfer` stays cheap and `astrotransfer
--help` does not load torch. The CLI commands are thin clients of these functions: a
notebook and a shell get the same checks, the same files and the same one-line `UserError`
for bad input. Names not listed in `__all__` are not part of the stable API.

Example:
    >>> import astrotransfer as at
    >>> src = at.ingest("sim", "sdss.zarr", instrument="sdss", n=200)      # doctest: +SKIP
    >>> run = at.train(source="sdss.zarr", out="runs/ft", epochs=2)       # doctest: +SKIP
    >>> run.evaluate("sdss.zarr")["accuracy"]                             # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrainConfig
from .errors import UserError
from .run import Run
from .store import CutoutStore

__all__ = ["ingest", "train", "load_run", "open_store", "list_plugins", "aggregate_metrics",
           "augmentation", "Run", "CutoutStore", "TrainConfig"]

INGEST_DEFAULTS = {"split_fractions": (0.8, 0.1, 0.1), "split_seed": 0, "batch_size": 256,
                   "strict": False, "overwrite": False, "dtype": "float32", "workers": None}


def open_store(path: str | Path) -> CutoutStore:
    """Open a cutout store written by `ingest`, read-only.

    Args:
        path: the store folder (e.g. ``sdss.zarr``).

    Returns:
        The `CutoutStore`: ``n``, ``bands``, ``class_names``, ``attrs``,
        ``column(name)`` (``object_id``, ``ra``, ``dec``, ``label``, ``split``),
        ``indices(split)`` and ``read_images(indices)`` → (N, C, H, W) float32.

    Example:
        >>> store = open_store("sdss.zarr")                               # doctest: +SKIP
        >>> store.read_images(store.indices("test")[:8]).shape           # doctest: +SKIP
        (8, 3, 64, 64)
    """
    return CutoutStore.open(path)


def ingest(survey: str, out: str | Path, **options: Any) -> CutoutStore:
    """Ingest a survey's objects into a new cutout store (resumable; re-run to continue).

    Args:
        survey: a registered survey name (``list_plugins("survey")``), e.g. ``"sim"``.
        out: the store folder to write.
        **options: the survey's own options (those of ``astrotransfer ingest SURVEY
            --help``, with underscores) and the common ones: ``split_fractions``
            (tuple or ``"0.8,0.1,0.1"``), ``split_seed``, ``batch_size``, ``strict``,
            ``overwrite``, ``dtype`` (``"float32"`` or ``"float16"``), ``workers``
            (decode processes; None: one per core for surveys that allow it).

    Returns:
        The finished store, opened read-only; ``store.attrs["ingest"]`` records the run.

    Example:
        >>> store = ingest("sim", "des.zarr", instrument="des", n=200)     # doctest: +SKIP
    """
    from .ingestion import parse_split_fractions, run_ingest
    from .registry import get_registry

    common = {k: options.pop(k, v) for k, v in INGEST_DEFAULTS.items()}
    if common["dtype"] not in ("float32", "float16"):
        raise UserError(f"--dtype {common['dtype']} is not supported; use float32 or float16")
    plugin = get_registry().get("survey", survey)
    known = {o.name for o in plugin.options}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"survey '{survey}' has no option {unknown[0]!r}; it takes "
                        f"{', '.join(sorted(known)) or 'none'} and {', '.join(INGEST_DEFAULTS)}")
    source = plugin.open(**options)  # fatal input problems surface here, before any store
    fractions = common.pop("split_fractions")
    if not isinstance(fractions, str):
        fractions = ",".join(map(str, fractions))
    summary = run_ingest(source, Path(out), split_fractions=parse_split_fractions(fractions),
                         **common)
    store = CutoutStore.open(summary.out)
    store.summary = summary  # the counts of this call (skips, resumed objects, seconds)
    return store


def train(source: str | Path | None = None, target: str | Path | None = None,
          out: str | Path | None = None, *, config: str | Path | None = None,
          resume: bool = False, **cfg: Any) -> Run:
    """Train (fine-tune or adapt) a classifier; a seed ensemble or recursive job with
    ``seeds=N`` or ``recursive=K``.

    Args:
        source: the labelled source store.
        target: an unlabelled (or few-shot labelled) target store; needed by adapters.
        out: the run directory to create (or, with ``resume=True``, to continue).
        config: a YAML file of options; keyword options override it.
        resume: continue a killed run or job in ``out`` (its config.yaml is reused).
        **cfg: any `TrainConfig` field, as on the command line with underscores:
            ``backbone``, ``pretrained``, ``adapt``, ``epochs``, ``batch_size``, ``lr``,
            ``stages``, ``augment``, ``seed``, ``seeds``, ``recursive``, ``device``, ...

    Returns:
        The `Run` (for ``seeds``/``recursive`` jobs: the job, whose ``members`` are runs).

    Example:
        >>> run = train(source="sdss.zarr", target="des.zarr", out="runs/dann",
        ...             adapt="dann", epochs=3)                          # doctest: +SKIP
        >>> run.epochs[-1]["val_acc"]                                     # doctest: +SKIP
    """
    from .config import load_config
    from .engine.training.dispatch import train as run_train

    if out is None:
        raise UserError("train needs out=, the run directory to create")
    out = Path(out)
    if resume and config is None and (out / "config.yaml").exists():
        config = out / "config.yaml"
    overrides = dict(cfg, source=None if source is None else str(source),
                     target=None if target is None else str(target), out=str(out))
    run_dir = run_train(load_config(config, overrides), resume=resume)
    return Run(run_dir.path)


def load_run(path: str | Path) -> Run:
    """Open a run directory (or a seed / recursive job folder) written by `train`.

    Args:
        path: the ``out`` folder of a training run or job.

    Returns:
        The `Run`; nothing is loaded until a method needs the model.

    Example:
        >>> run = load_run("runs/ft")                                     # doctest: +SKIP
        >>> run.class_names                                              # doctest: +SKIP
        ['elliptical', 'spiral']
    """
    return Run(Path(path))


def list_plugins(kind: str | None = None) -> list[dict]:
    """Every registered plugin object, optionally of one kind.

    Args:
        kind: ``"survey"``, ``"backbone"``, ``"adapter"`` or ``"trainer"``; None for all.

    Returns:
        One dict per entry: ``kind``, ``name``, ``dist`` (distribution), ``version``,
        ``description``.

    Example:
        >>> [p["name"] for p in list_plugins("trainer")]                  # doctest: +SKIP
        ['standard', 'deepspeed']
    """
    from .registry import get_registry

    kinds = ("survey", "backbone", "adapter", "trainer")
    if kind is not None and kind not in kinds:
        raise UserError(f"unknown plugin kind '{kind}'; use one of {', '.join(kinds)}")
    return [{**e.as_dict(), "description": getattr(e.obj, "description", "")}
            for e in get_registry().all(kind)]


def aggregate_metrics(metrics: list[dict]) -> dict:
    """Mean and standard deviation, leaf by leaf, of several runs' metrics (e.g. seeds).

    Args:
        metrics: dicts as `Run.metrics` or `Run.evaluate` return them, of the same shape.

    Returns:
        ``{"mean": tree, "std": tree, "n_runs": k}`` with the input's keys.

    Example:
        >>> per_seed = [m.metrics("des.zarr") for m in job.members]       # doctest: +SKIP
        >>> aggregate_metrics(per_seed)["mean"]["accuracy"]              # doctest: +SKIP
    """
    from .engine.evaluation.metrics import aggregate_metrics as aggregate

    return aggregate(metrics)


def augmentation(names: str | list[str] = "flip,rotate,shift,zoom"):
    """The training augmentation `train --augment NAMES` uses, to look at or reuse.

    Args:
        names: ``"flip,rot90,rotate,rotate45,shift,zoom"`` (any subset) or a list of them;
            ``"none"`` for none.

    Returns:
        A callable taking a (N, C, H, W) float tensor and returning an augmented one of the
        same shape (each cutout draws its own transform), or None for no augmentation.

    Example:
        >>> aug = augmentation("flip,rotate")                            # doctest: +SKIP
        >>> aug(torch.rand(8, 3, 64, 64)).shape                          # doctest: +SKIP
        torch.Size([8, 3, 64, 64])
    """
    from .config import parse_augment
    from .engine.data import build_augment

    return build_augment(parse_augment(names))
