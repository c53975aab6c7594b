"""One run: check a TrainConfig, open stores, build the model and adapter, call the trainer.

The loop itself lives in a trainer plugin (`register_trainers`, contract in
`astrotransfer.trainer`), so a distributed or otherwise special loop can replace it without
touching data or model set-up. The jobs made of several runs (`seeds`, `recursive`) call
`train_one` per member; every name, band mapping and stage rule is checked by `preflight`
before the first epoch of the first run, so a typo never costs a finished seed or round.
"""
from __future__ import annotations

import logging
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ... import __version__
from ...adapter import compose
from ...config import TrainConfig, normalize, resolve_epochs
from ...errors import UserError, check_output_folder
from ...interrupt import Stopped
from ...registry import get_registry
from ...store import CutoutStore, locked
from ...trainer import TrainContext
from ..data import build_augment, labelled, load_tensors
from ..matching import bands_for, label_remap, plan_bands, translate
from ..models import build_model
from .warm_start import build_from_run, is_run_dir
from ..runs import RunDir, load_checkpoint
from .small_data import apply_lp_ft
from .stages import check_stages

log = logging.getLogger("astrotransfer")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for a GPU but none is available; use --device cpu")
    return torch.device(name)


def preflight(cfg: TrainConfig) -> dict:
    """Every check that needs no tensor: names, stores, classes, bands. Returns the stores.

    Cheap (registry look-ups and zarr metadata), so multi-run jobs call it once up front
    and `prepare` again per run.
    """
    normalize(cfg)
    reg = get_registry()
    reg.get("trainer", cfg.trainer)
    adapter = make_adapter(cfg)
    from ..models import find_provider
    find_provider(cfg.backbone)
    build_augment(cfg.augment)
    source = CutoutStore.open(cfg.source)
    if len(source.class_names) < 2:
        raise UserError(f"source store {cfg.source} has {len(source.class_names)} class(es); "
                        f"training needs a labelled source with at least 2 classes")
    target = CutoutStore.open(cfg.target) if cfg.target else None
    if adapter.needs_target and target is None:
        raise UserError(f"adapter '{adapter.name}' needs an unlabelled target store; "
                        f"pass --target")
    if cfg.target_labels and target is None:
        raise UserError("--target-labels draws labelled objects from the target; pass --target")
    session_store = CutoutStore.open(cfg.target_labels_from) if cfg.target_labels_from else None
    plan = plan_bands(source, target if target is not None else session_store,
                      getattr(cfg, "band_policy", "auto"))
    view = {"bands": plan["model_bands"], "band_policy": plan}
    smap = bands_for(view, source)
    tmap = bands_for(view, target) if target is not None else None
    lmap = bands_for(view, session_store) if session_store is not None else None
    lut = None
    if target is not None and (cfg.target_labels or cfg.recursive):
        # few-shot labels train the model and recursive rounds score against them: both must
        # mean the source's classes, matched by name (an unlabelled pool passes)
        lut = label_remap(source.class_names, target)
    return {"adapter": adapter, "source": source, "target": target, "tmap": tmap,
            "smap": smap, "band_plan": plan, "lut": lut, "session_store": session_store,
            "lmap": lmap}


def make_adapter(cfg: TrainConfig):
    """The adapter named by --adapt, with the Fisher/entropy add-ons folded in."""
    reg = get_registry()
    base = reg.get("adapter", cfg.adapt)
    if cfg.adapt_weight != 1.0 and hasattr(base, "weight"):
        base = type(base)(weight=cfg.adapt_weight)
    return compose(base, fisher=cfg.fisher, entropy=cfg.entropy)


def target_indices(store: CutoutStore, n_labels: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unlabelled-use rows (train split) and, for few-shot, N labelled ones drawn from them."""
    train = store.indices("train")
    if not n_labels:
        return train, np.array([], dtype=int)
    pool = labelled(train, store.column("label"))
    if len(pool) < n_labels:
        raise UserError(f"--target-labels {n_labels} asks for more labelled objects than the "
                        f"target's train split has ({len(pool)})")
    chosen = np.sort(np.random.default_rng(seed).choice(pool, n_labels, replace=False))
    return np.setdiff1d(train, chosen), chosen


def labelled_budget(train: np.ndarray, n: int, seed: int, where: str = "source"
                    ) -> tuple[np.ndarray, np.ndarray]:
    """N labelled train rows drawn by `seed`, a fifth of them held out for validation.

    Why: a few-shot run that claims N labels must not choose its checkpoint on the store's
    full validation split, which would be hundreds of labels more; a user with N labels
    holds some of them out, and so does this.

    Args:
        train: labelled rows of the store's train split.
        n: the label budget (>= 2).
        seed: draw seed (the run's --seed).
        where: the store, for the error message.

    Returns:
        ``(train_rows, val_rows)``, sorted, disjoint, together N rows.

    Example:
        >>> tr, va = labelled_budget(np.arange(100), 25, seed=0)
        >>> len(tr), len(va)
        (20, 5)
    """
    if n < 2:
        raise UserError(f"--source-labels {n}: at least 2 objects are needed (one to train, "
                        f"one to validate)")
    if n > len(train):
        raise UserError(f"--source-labels {n} asks for more labelled objects than the train "
                        f"split of {where} has ({len(train)})")
    chosen = np.random.default_rng(seed).choice(train, n, replace=False)
    n_val = max(1, int(round(n * 0.2)))
    return np.sort(chosen[n_val:]), np.sort(chosen[:n_val])


def _pseudo_labelled(path: str, target: CutoutStore) -> tuple[np.ndarray, np.ndarray]:
    """Target rows and the labels a previous round's model gave them (recursive training)."""
    import json
    try:
        data = json.loads(Path(path).read_text())
        rows = np.asarray(data["rows"], dtype=np.int64)
        labels = np.asarray(data["labels"], dtype=np.int64)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"pseudo-label file {path} is unreadable ({type(exc).__name__}); "
                        f"rerun the recursive job to rebuild it") from None
    if len(rows) != len(labels) or (len(rows) and (rows.max() >= target.n or rows.min() < 0)):
        raise UserError(f"pseudo-label file {path} does not fit target store {target.path}; "
                        f"rerun the recursive job to rebuild it")
    return rows, labels


def _session_labelled(store: CutoutStore, bands, image_size: int, class_names: list[str]):
    """Images and labels people gave in the store's labelling sessions (matched to the
    source's classes by name): what `--target-labels-from` adds to the training set."""
    from ...label_store import collect_labels

    rows, labels = collect_labels(store.path, class_names)
    if len(rows) == 0:
        raise UserError(f"store {store.path} has no labels from labelling sessions; label "
                        f"some with `astrotransfer label {store.path}` first")
    x, _ = load_tensors(store, rows, bands, image_size)
    log.info("--target-labels-from: %d labelled objects of %s added to training", len(rows),
             store.path)
    return x, torch.from_numpy(labels)


def prepare(cfg: TrainConfig, resume: bool = False) -> TrainContext:
    checked = preflight(cfg)  # fail fast on unknown names and unmappable bands, before any work
    adapter, source, target, tmap, smap, plan = (
        checked[k] for k in ("adapter", "source", "target", "tmap", "smap", "band_plan"))
    class_names = source.class_names
    labels = source.column("label")
    tr, va = labelled(source.indices("train"), labels), labelled(source.indices("val"), labels)
    if len(tr) == 0:
        raise UserError(f"source store {cfg.source} has no labelled objects in its train split")
    if cfg.source_labels:
        tr, va = labelled_budget(tr, cfg.source_labels, cfg.seed, cfg.source)
    elif len(va) == 0:  # tiny stores: hold out a slice of train rather than fail
        cut = max(1, len(tr) // 10)
        tr, va = tr[cut:], tr[:cut]
    bands = plan["model_bands"]
    image_size = cfg.image_size or source.image_shape[-1]
    cfg.image_size = image_size
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    if is_run_dir(cfg.pretrained):
        model, provenance = build_from_run(cfg.pretrained, cfg.backbone, len(bands), class_names,
                                           cfg.drop_rate, cfg.head_init)
    else:
        model, provenance = build_model(cfg.backbone, in_chans=len(bands),
                                        num_classes=len(class_names), pretrained=cfg.pretrained,
                                        drop_rate=cfg.drop_rate, head_init=cfg.head_init)
    check_stages(model, cfg.stages)
    x_tr, y_tr = load_tensors(source, tr, smap, image_size)
    x_va, y_va = load_tensors(source, va, smap, image_size)
    x_t = None
    if target is not None:
        t_unl, t_lab = target_indices(target, cfg.target_labels, cfg.seed)
        if adapter.needs_target:
            x_t, _ = load_tensors(target, t_unl, tmap, image_size)
        if len(t_lab):
            xl, yl = load_tensors(target, t_lab, tmap, image_size)
            yl = torch.from_numpy(translate(yl.numpy(), checked["lut"]))  # by class name
            x_tr, y_tr = torch.cat([x_tr, xl]), torch.cat([y_tr, yl])
        if cfg.pseudo_labels:
            rows, plabels = _pseudo_labelled(cfg.pseudo_labels, target)
            if len(rows):
                order = np.argsort(rows)  # zarr reads want ascending rows
                xp, _ = load_tensors(target, rows[order], tmap, image_size)
                x_tr = torch.cat([x_tr, xp])
                y_tr = torch.cat([y_tr, torch.from_numpy(plabels[order])])
    elif cfg.pseudo_labels:
        raise UserError("--pseudo-labels names target rows; pass the --target they came from")
    if checked["session_store"] is not None:
        xs, ys = _session_labelled(checked["session_store"], checked["lmap"], image_size,
                                   class_names)
        x_tr, y_tr = torch.cat([x_tr, xs]), torch.cat([y_tr, ys])
    if cfg.epochs is None:
        resolve_epochs(cfg, len(y_tr))
        log.info("epochs: %d, chosen for %d training objects (at least --min-steps %d "
                 "optimizer steps; pass --epochs to fix it)", cfg.epochs, len(y_tr), cfg.min_steps)
        normalize(cfg)  # the stages' split of the epochs is checked now that they are known
    # small sets: the probe first (LP-FT); deterministic, so a resumed member re-derives it
    if apply_lp_ft(cfg, len(y_tr), model, not provenance.startswith("random init")):
        normalize(cfg)
    run = RunDir(Path(cfg.out))
    resume_state = _open_run_dir(run, cfg, resume)
    if resume_state is None:
        run.write_config(cfg.to_dict())
        run.write_info({
            "run_id": f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}",
            "backbone": cfg.backbone, "in_chans": len(bands), "num_classes": len(class_names),
            "class_names": class_names, "bands": bands, "image_size": image_size,
            "band_policy": {**plan, "source_mapping": smap.rule,
                            "target_mapping": tmap.rule if tmap is not None else None},
            "drop_rate": cfg.drop_rate, "pretrained": provenance,
            "normalization": source.attrs.get("normalization"),
            "source": {"path": str(Path(cfg.source).resolve()), "survey": source.attrs["survey"]},
            "target": ({"path": str(Path(cfg.target).resolve()), "survey": target.attrs["survey"]}
                       if target is not None else None),
            "toolkit_version": __version__,
        })
    log.info("weights: %s", provenance)
    module = adapter.build(_feature_dim(model), len(class_names))
    return TrainContext(cfg, run, model, adapter, module, x_tr, y_tr, x_va, y_va, x_t,
                        class_names, build_augment(cfg.augment), device, resume_state,
                        {"provenance": provenance, "n_train": len(y_tr), "n_val": len(y_va)})


def _feature_dim(model: nn.Module) -> int:
    from ..models import feature_dim
    return feature_dim(model)


def _open_run_dir(run: RunDir, cfg: TrainConfig, resume: bool) -> dict | None:
    if resume:
        if not run.last.exists():
            raise UserError(f"cannot resume {run.path}: it has no last.pt checkpoint "
                            f"(it never finished an epoch); start it again without --resume")
        return load_checkpoint(run.last)
    if run.path.exists() and any(run.path.iterdir()):
        raise UserError(f"run directory {run.path} already exists and is not empty; "
                        f"choose another --out, or pass --resume to continue it")
    run.path.mkdir(parents=True, exist_ok=True)
    return None


def train_one(cfg: TrainConfig, resume: bool = False) -> RunDir:
    out = Path(cfg.out)
    check_output_folder(out, create=True)  # a file in the way fails here, not in mkdir
    if not resume and out.exists() and any(out.iterdir()):
        raise UserError(f"run directory {out} already exists and is not empty; "
                        f"choose another --out, or pass --resume to continue it")
    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        with locked(out, "run directory"):
            ctx = prepare(cfg, resume)
            get_registry().get("trainer", cfg.trainer).fit(ctx)
    except (UserError, Stopped):
        if fresh and not (out / "last.pt").exists():
            # no half-made run from bad input or a stop before the first checkpoint, so
            # the same command (without --resume) can simply run again
            shutil.rmtree(out, ignore_errors=True)
        raise
    return ctx.run
