"""Where a run meets a store: classes matched by name, bands mapped by one policy.

Classes. A store numbers its classes in the order its ingest met them (or the order of
`--label-map`), so the same objects ingested twice can carry label 0 = spiral in one store
and 0 = elliptical in the other. Comparing a run's predictions with a store's labels by
index would then score every label flipped, silently. Every place that reads a store's
labels for a run (evaluate, the studies, few-shot and pseudo-label training, recursive
rounds, rank, embedding maps) therefore goes through `label_remap`/`run_labels`: a store
whose class names are the run's set in another order is translated into the run's order;
a store with another set is refused with one line that names both lists and the fix.
A store without class names (an unlabelled pool) passes: it has no labels to compare.

Bands. A model's input channels are fixed when it is trained; `plan_bands` decides them
from the source and (if given) the target store, and the decision is written to run.json
as `band_policy`, so `bands_for` applies the very same mapping to any store later. Rules,
in order:

1. by name (case-insensitive): the model keeps the source bands, which every other store
   must provide by name; a store's extra bands are dropped, and that is said;
2. the `mean` view, when the target has one band and the source several with no name in
   common (a colour survey → a one-band survey, e.g. SDSS gri → JWST F200W): the model is
   trained on one channel, the equal-weight mean of the source bands. Chosen over copying
   the target band into three channels because then the network would be trained on
   colour and tested on images whose channels are always equal, a shift it never saw;
   with the mean view source and target images look alike to it (one broad band), every
   store band is min-max scaled at ingest so equal weights give no band more say, and it
   works for any number of source bands, not only RGB. `band_policy: mean` forces it
   without a target (e.g. a zero-shot run meant for a one-band survey);
3. by position, when no name is shared and the band counts agree (e.g. unnamed
   composites): printed as a warning and recorded;
4. anything else is refused with one line naming the fix.
"""
from __future__ import annotations

import logging

import numpy as np

from ..errors import UserError
from ..store import CutoutStore

log = logging.getLogger("astrotransfer")
BAND_POLICIES = ("auto", "mean")
_ANNOUNCED: set = set()


# --------------------------------------------------------------------------- classes
def label_remap(run_classes: list[str], store: CutoutStore) -> np.ndarray:
    """Lookup table: store label index → run label index (identity when orders agree).

    Raises a one-line UserError when the store's class set differs from the run's. A store
    without class names gives an empty table (it holds no labels, every label is -1).
    """
    have = [str(c) for c in store.class_names]
    want = [str(c) for c in run_classes]
    if not have:
        return np.zeros(0, dtype=np.int64)
    if sorted(have) != sorted(want):
        raise UserError(
            f"store {store.path} has {len(have)} classes ({','.join(have)}) but the run was "
            f"trained on {len(want)} ({','.join(want)}); classes are matched by name: "
            f"re-ingest the store with --label-map naming the run's classes, or train a run "
            f"on these")
    key = (str(store.path), tuple(have), tuple(want))
    if have != want and key not in _ANNOUNCED:  # once per store and run classes, not per read
        _ANNOUNCED.add(key)
        log.info("classes of %s matched by name: its order %s translated to the run's %s",
                 store.path, ",".join(have), ",".join(want))
    return np.array([want.index(c) for c in have], dtype=np.int64)


def translate(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """Labels through a `label_remap` table; -1 (unknown) stays -1."""
    labels = np.asarray(labels).astype(np.int64)
    out = np.full(labels.shape, -1, dtype=np.int64)
    known = labels >= 0
    if known.any():
        out[known] = lut[labels[known]]
    return out


def run_labels(run_classes: list[str], store: CutoutStore, rows: np.ndarray,
               lut: np.ndarray | None = None) -> np.ndarray:
    """The store's labels of `rows` in the run's class order (-1 where unknown)."""
    lut = label_remap(run_classes, store) if lut is None else lut
    return translate(store.column("label")[rows], lut)


# --------------------------------------------------------------------------- bands
class BandMap(list):
    """Store band indices to read, in model order, plus optional mixing weights.

    A plain list for selection by name or position (so it indexes arrays as before);
    `weights` (model channels × listed bands) when each model channel is a weighted sum
    of store bands (the `mean` view). Apply with `take_bands`.
    """

    def __init__(self, indices, weights=None, rule: str = "name"):
        super().__init__(int(i) for i in indices)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
        self.rule = rule


def take_bands(images: np.ndarray, bands) -> np.ndarray:
    """(N, model channels, H, W) from (N, store bands, H, W) through a band mapping."""
    x = images[:, list(bands)]
    weights = getattr(bands, "weights", None)
    if weights is not None:
        x = np.einsum("oc,nchw->nohw", weights, x, optimize=True).astype(np.float32)
    return x


def _lower(names) -> list[str]:
    return [str(b).lower() for b in names]


def _mean_record(source_bands: list[str], why: str) -> dict:
    k = len(source_bands)
    return {"rule": "mean", "model_bands": [f"mean({','.join(source_bands)})"],
            "source_bands": list(source_bands), "weights": [[1.0 / k] * k], "why": why}


def plan_bands(source: CutoutStore, target: CutoutStore | None, policy: str = "auto") -> dict:
    """The run's `band_policy` record: which channels the model gets, and from what.

    Logged as one line whenever it is not the plain identity, and stored in run.json.
    """
    if policy not in BAND_POLICIES:
        raise UserError(f"unknown --band-policy '{policy}'; use one of {', '.join(BAND_POLICIES)}")
    src = list(source.bands)
    if policy == "mean":
        rec = _mean_record(src, "--band-policy mean")
    elif target is None or _lower(target.bands) == _lower(src):
        return {"rule": "identity", "model_bands": src, "source_bands": src, "weights": None}
    else:
        tgt = list(target.bands)
        shared = [b for b in src if b.lower() in _lower(tgt)]
        if shared == src:  # rule 1; the target's extra bands are announced by bands_for
            return {"rule": "name", "model_bands": src, "source_bands": src, "weights": None}
        if not shared and len(tgt) == 1 and len(src) > 1:
            rec = _mean_record(src, f"target {target.path} has one band ({tgt[0]}) and the "
                                    f"source {len(src)} with no name shared")
        elif not shared and len(tgt) == len(src):
            rec = {"rule": "order", "model_bands": src, "source_bands": src, "weights": None,
                   "why": f"no band name shared with target {target.path} "
                          f"({','.join(tgt)}); channels taken in order"}
        else:
            bands_for({"bands": src}, target)  # raises the one-line error naming the fix
            raise UserError(f"target {target.path} has bands {','.join(tgt)}, source "
                            f"{','.join(src)}; re-ingest one of them with --bands")
    log.warning("band policy: %s -> model input %s (%s)", rec["rule"],
                ",".join(rec["model_bands"]), rec["why"])
    return rec


def bands_for(info: dict, store: CutoutStore) -> BandMap:
    """The mapping of `store`'s bands onto a run's inputs, by the run's recorded policy.

    `info` is run.json (or any dict with `bands` and optionally `band_policy`); runs from
    before band policies were recorded map by name, then by position.
    """
    policy = info.get("band_policy") or {}
    model = list(info["bands"])
    have = _lower(store.bands)
    if policy.get("rule") == "mean":
        src = policy["source_bands"]
        if all(b.lower() in have for b in src):
            return BandMap([have.index(b.lower()) for b in src], policy["weights"], "mean")
        if len(have) == 1:
            return BandMap([0], None, "mean")
        raise UserError(f"store {store.path} has bands {','.join(store.bands)}; the run's "
                        f"input is {model[0]}, so a store needs one band or all of "
                        f"{','.join(src)}; re-ingest it with those bands")
    if _lower(model) == have:
        return BandMap(range(len(have)), None, "identity")
    missing = [b for b in model if b.lower() not in have]
    if not missing:
        idx = [have.index(b.lower()) for b in model]
        dropped = [b for b in store.bands if b.lower() not in _lower(model)]
        log.warning("band mapping for %s: using its bands %s for the model's %s%s", store.path,
                    ",".join(store.bands[i] for i in idx), ",".join(model),
                    f"; dropping {','.join(dropped)}" if dropped else "")
        return BandMap(idx, None, "name")
    if len(have) == len(model) and not set(have) & set(_lower(model)):
        log.warning("band mapping for %s: no band names shared (%s vs %s); using channels in "
                    "order", store.path, ",".join(store.bands), ",".join(model))
        return BandMap(range(len(have)), None, "order")
    hint = (" (a one-band store: train the run with --target this store, or --band-policy "
            "mean, so the source is seen in one band)" if len(have) == 1 else "")
    raise UserError(f"store {store.path} has bands {','.join(store.bands)} but the model needs "
                    f"{','.join(model)} (missing {','.join(missing)}); ingest those bands "
                    f"or train on a source with bands the target shares{hint}")
