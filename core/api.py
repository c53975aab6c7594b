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
from .engine.active.head import FrozenHead
from .errors import UserError
from .run import Run
from .store import CutoutStore

__all__ = ["ingest", "train", "load_run", "open_store", "list_plugins", "aggregate_metrics",
           "augmentation", "rank", "crop_study", "select", "choose", "label_page",
           "store_labels", "FrozenHead", "Run", "CutoutStore", "TrainConfig"]

DTYPES = ("auto", "float32", "float16", "uint8")
INGEST_DEFAULTS = {"split_fractions": (0.8, 0.1, 0.1), "split_seed": 0, "batch_size": 256,
                   "strict": False, "overwrite": False, "dtype": "auto", "workers": None}


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
            ``overwrite``, ``dtype`` (``"auto"``: 8-bit codes for JPEG stamps, else
            ``"float32"``; or ``"float32"``, ``"float16"``, ``"uint8"``), ``workers``
            (decode processes; None: one per core for surveys that allow it).

    Returns:
        The finished store, opened read-only; ``store.attrs["ingest"]`` records the run.

    Example:
        >>> store = ingest("sim", "des.zarr", instrument="des", n=200)     # doctest: +SKIP
    """
    from .ingestion import parse_split_fractions, run_ingest
    from .registry import get_registry

    common = {k: options.pop(k, v) for k, v in INGEST_DEFAULTS.items()}
    if common["dtype"] not in DTYPES:
        raise UserError(f"--dtype {common['dtype']} is not supported; use one of "
                        f"{', '.join(DTYPES)}")
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
        kind: ``"survey"``, ``"backbone"``, ``"adapter"``, ``"trainer"`` or
            ``"selector"``; None for all.

    Returns:
        One dict per entry: ``kind``, ``name``, ``dist`` (distribution), ``version``,
        ``description``.

    Example:
        >>> [p["name"] for p in list_plugins("trainer")]                  # doctest: +SKIP
        ['standard', 'deepspeed']
    """
    from .registry import get_registry

    kinds = ("survey", "backbone", "adapter", "trainer", "selector")
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


def label_errors(labels, probs) -> dict:
    """Estimate how many of `labels` a model contradicts with confidence (confident
    learning, Northcutt et al. 2021): what `evaluate` reports as "labels the model
    contradicts", on arrays.

    Args:
        labels: (N,) given class indices (e.g. Galaxy Zoo's majority answer).
        probs: (N, K) probabilities from a model that never trained on these objects.

    Returns:
        ``{"error_rate", "ambiguous", "joint", "counts", "thresholds", "issues",
        "issue_classes", "n"}``: the estimated share of wrong labels, the share of objects
        the model is unsure of (counted as neither), and the suspects' indices, most
        confident first, with the class the model gives them.

    Example:
        >>> est = label_errors(store_labels, run.predict_array(images))  # doctest: +SKIP
        >>> est["error_rate"], est["issues"][:10]                        # doctest: +SKIP
    """
    from .engine.evaluation.label_noise import confident_joint

    return confident_joint(labels, probs)


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


def rank(runs: list[str | Path], target: str | Path, score: str = "dev",
         source: str | Path | None = None, split: str = "all", max_objects: int = 2000,
         out: str | Path | None = None) -> dict:
    """Rank runs by a label-free score on a target survey, lower is better (model selection
    without target labels; what `astrotransfer rank` prints).

    Args:
        runs: run directories; a seed or recursive job stands for each of its members.
        target: the target store (its labels, if any, are never used for the ranking).
        score: ``"dev"``, ``"entropy"``, ``"im"`` or ``"mmd"``.
        source: the source store (default: each run's own, from run.json).
        split: which target objects.
        max_objects: objects per domain, drawn at random (bounded cost on big stores).
        out: also write the ranking as JSON there.

    Returns:
        ``{"score", "runs": [{"rank", "run", "dev", "entropy", "im", "mmd",
        "target_accuracy"}, ...]}``, best first.

    Example:
        >>> rank(["runs/mmd", "runs/dann"], "des.zarr")["runs"][0]["run"]  # doctest: +SKIP
    """
    from .engine.evaluation.label_free import rank_runs

    return rank_runs([Path(r) for r in runs], Path(target), score,
                     None if source is None else Path(source), split, max_objects,
                     out=None if out is None else Path(out))


def crop_study(source: str | Path, out: str | Path, target: str | Path | None = None,
               sizes: tuple[int, ...] = (25, 50, 100), progress=None, **train_options) -> dict:
    """Train and score one run per centre-crop size of the stored cutouts (how much of the
    stamp around the object the classifier should see).

    Args:
        source: the labelled source store.
        out: the study folder (reused to resume).
        target: a target store, scored too when given.
        sizes: crop sizes in pixels.
        progress: optional callable receiving one line per finished size.
        **train_options: `train` options for every run (backbone, epochs, lr, ...).

    Returns:
        ``{"results": [{"crop", "source_test", "target_test", "run"}, ...],
        "evaluated_on", "png", "json"}``.

    Example:
        >>> crop_study("sdss.zarr", "study_crops", sizes=(32, 48))      # doctest: +SKIP
    """
    from .engine.analysis.studies import crop_study as study

    return study(Path(source), Path(out), None if target is None else Path(target),
                 tuple(sizes), train_options, progress=progress)


def select(run: str | Path, data: str | Path, n: int = 50, strategy: str = "hybrid",
           out: str | Path | None = None, split: str = "all", tta: int = 1,
           seed: int = 0) -> dict:
    """Choose the objects of a store most worth labelling next (active learning).

    Args:
        run: the run whose probabilities and embeddings guide the choice.
        data: the store to label; objects any labelling session answered are left out.
        n: how many objects to queue.
        strategy: a registered selector (``list_plugins("selector")``): ``random``,
            ``uncertainty``, ``margin``, ``diversity``, ``hybrid`` or ``balanced``.
        out: the queue file (JSON) to write; None to only return it.
        split: which objects are candidates.
        tta: test-time augmentation views for the probabilities (1, 2, 4 or 8).
        seed: the strategy's random seed.

    Returns:
        The queue: ``rows``, ``object_ids``, ``entropy``, ``strategy``, ``run``, ...

    Example:
        >>> q = select("runs/gz1", "ceers.zarr", n=50, strategy="hybrid",
        ...            out="queue.json")                                  # doctest: +SKIP
        >>> len(q["rows"])                                                # doctest: +SKIP
        50
    """
    from .engine.active.selection import select_queue

    return select_queue(Path(run), Path(data), n, strategy, None if out is None else Path(out),
                        split, tta, seed)


def choose(strategy: str, probs, feats, n: int, labelled_feats=None, labelled_labels=None,
           seed: int = 0):
    """Run a selection strategy on arrays (what `select` does after applying the run).

    Args:
        strategy: a registered selector name.
        probs: (N, K) current class probabilities of the candidates.
        feats: (N, D) their embeddings.
        n: how many to choose.
        labelled_feats, labelled_labels: embeddings and labels of objects already labelled.
        seed: the strategy's random seed.

    Returns:
        Distinct positions into the candidates, most useful first.

    Example:
        >>> picks = choose("diversity", probs, feats, 25)                 # doctest: +SKIP
    """
    import numpy as np

    from .engine.active.selection import choose as run_choose
    from .selector import Pool

    feats = np.asarray(feats)
    lf = np.zeros((0, feats.shape[1])) if labelled_feats is None else np.asarray(labelled_feats)
    ll = np.zeros(0, np.int64) if labelled_labels is None else np.asarray(labelled_labels)
    return run_choose(strategy, Pool(np.asarray(probs), feats, lf, ll), n, seed)


def label_page(data: str | Path, run: str | Path | None = None,
               classes: str | list[str] | None = None, *, keys: str | list[str] | None = None,
               queue: str | Path | None = None, session: str | None = None,
               who: str | None = None, strategy: str = "hybrid", batch: int = 50,
               split: str = "all", tta: int = 1, host: str = "127.0.0.1", port: int = 8765,
               ready=None) -> None:
    """Serve the labelling page for a store until interrupted (what `astrotransfer label`
    runs); answers are committed to a labelling session in the store as they are clicked.

    Args:
        data: the store to label.
        run: a run for probabilities, embeddings and head-only retraining; optional.
        classes: the answers (default: the run's, else the store's classes).
        keys: one key per class (default 1..K).
        queue: a queue file from `select`; default: chosen with `strategy` (with a run) or
            every unanswered object in store order.
        session: a session name to continue or create (default ``<user>-<UTC time>``).
        who: the labeller's name recorded in the session (default the login name).
        strategy, batch: the re-queue after each batch.
        split, tta: candidates and test-time augmentation views.
        host, port: where to listen (127.0.0.1 by default; port 0 picks a free one).
        ready: called with the page's URL once it is listening.

    Returns:
        None, when the server stops.

    Example:
        >>> label_page("ceers.zarr", run="runs/gz1", port=8765)           # doctest: +SKIP
    """
    from .engine.active.desk import parse_classes
    from .engine.active.server import open_desk, serve

    def build():
        return open_desk(Path(data), None if run is None else Path(run), parse_classes(classes),
                         keys, None if queue is None else Path(queue), session, who, strategy,
                         batch, split, tta)

    serve(build, host, port, ready)


def store_labels(data: str | Path, classes: list[str] | None = None) -> dict:
    """The labels people made in a store's labelling sessions (never the survey's own).

    Args:
        data: the store.
        classes: class order wanted (default the store's, else the first session's).

    Returns:
        ``{"rows", "object_ids", "labels", "classes", "sessions": [{name, who, created,
        strategy, n_entries, n_labels}]}``.

    Example:
        >>> store_labels("ceers.zarr")["sessions"][0]["who"]                 # doctest: +SKIP
    """
    from .label_store import LabelSession, collect_labels, list_sessions

    store = CutoutStore.open(data)
    names = list_sessions(store.path)
    sessions = [LabelSession.open(store.path, n) for n in names]
    classes = classes or store.class_names or (sessions[0].classes if sessions else [])
    rows, labels = collect_labels(store.path, list(classes)) if sessions else ([], [])
    ids = store.column("object_id")
    return {"rows": [int(r) for r in rows], "object_ids": [str(ids[r]) for r in rows],
            "labels": [int(v) for v in labels], "classes": list(classes),
            "sessions": [{"name": s.name, "who": s.attrs.get("who"),
                          "created": s.attrs.get("created"), "strategy": s.attrs.get("strategy"),
                          "n_entries": s.n,
                          "n_labels": sum(1 for v in s.current().values() if v >= 0)}
                         for s in sessions]}
