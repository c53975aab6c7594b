"""Looking at a run's feature space: 2-D/3-D maps, k-means clusters, nearest neighbours.

Features come from `embed` (runs/<run_id>/ in the store), so a map or a neighbour search
never reruns the network once a store is embedded. Maps are coloured by the true label, or by
the predicted class where the store has no labels: the question a map answers is whether
the classes separate, and in a new survey the predicted classes are what one has.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import UserError
from ...store import CutoutStore
from ..inference.streaming import as_text
from ..runs import RunDir, atomic_write_text

MAX_MAP_POINTS = 5000  # t-SNE is O(n log n) but slow in practice past a few thousand points
_MAP_NAMES = {"tsne": "t-SNE", "umap": "UMAP"}


@dataclass
class Embedded:
    rows: np.ndarray
    feats: np.ndarray
    probs: np.ndarray
    labels: np.ndarray  # -1 unknown
    ids: np.ndarray
    class_names: list[str]
    run_id: str


def load_embedding(store: CutoutStore, run_id: str, class_names: list[str]) -> Embedded | None:
    """What `embed` wrote for this run, or None when the store was never embedded by it."""
    key = f"runs/{run_id}"
    if key not in store.group or "embeddings" not in store.group[key]:
        return None
    grp = store.group[key]
    rows = np.asarray(grp["rows"][:]).astype(np.int64)
    if len(rows) and rows.max() >= store.n:
        return None  # the store was rebuilt since; the rows no longer mean the same objects
    from ..matching import run_labels

    return Embedded(rows, np.asarray(grp["embeddings"][:]), np.asarray(grp["probabilities"][:]),
                    run_labels(class_names, store, rows), as_text(store.column("object_id")[rows]),
                    class_names, run_id)


def embedding_for(run_path: Path, data: Path, split: str = "all",
                  batch_size: int = 256) -> Embedded:
    """Stored features if `embed` ran for this run and split, else computed in memory."""
    info = RunDir(Path(run_path)).info()
    store = CutoutStore.open(data)
    emb = load_embedding(store, info["run_id"], info["class_names"])
    want = store.indices(split)
    if emb is not None and np.isin(want, emb.rows).all():
        keep = np.isin(emb.rows, want)
        return Embedded(emb.rows[keep], emb.feats[keep], emb.probs[keep], emb.labels[keep],
                        emb.ids[keep], emb.class_names, emb.run_id)
    from ..inference.streaming import load_run_model
    from ..inference.observe import observe

    model, info, _ = load_run_model(run_path)
    obs = observe(model, info, store, want, batch_size)
    return Embedded(obs.rows, obs.feats, obs.probs, obs.labels,
                    as_text(store.column("object_id")[want]), info["class_names"],
                    info["run_id"])


def out_dir_for(run_path: Path, kind: str, data: Path, split: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{Path(data).name}_{split}")
    path = Path(run_path) / kind / slug
    path.mkdir(parents=True, exist_ok=True)
    return path


# --------------------------------------------------------------------------- maps
def check_map(method: str | None, dims: int = 2) -> None:
    """Refuse a map that cannot be drawn before any features are computed."""
    if method is None:
        return
    if method not in _MAP_NAMES:
        raise UserError(f"unknown --map '{method}'; use tsne or umap")
    if dims not in (2, 3):
        raise UserError(f"--dims must be 2 or 3, got {dims}")
    if method == "umap":
        import importlib.util
        if importlib.util.find_spec("umap") is None:
            raise UserError("--map umap needs the umap-learn package, which is not installed; "
                            "pip install umap-learn, or use --map tsne")


def project(feats: np.ndarray, method: str, dims: int, seed: int = 0) -> np.ndarray:
    """t-SNE (scikit-learn) or UMAP (umap-learn, optional) coordinates of the features.

    Features are first reduced to 50 principal components, the usual t-SNE preprocessing:
    it removes noise dimensions and makes the neighbour search much cheaper.
    """
    check_map(method, dims)
    n = len(feats)
    if n < 5:
        raise UserError(f"a {method} map needs at least 5 objects, the split has {n}")
    x = feats.astype(np.float64)
    if x.shape[1] > 50 and n > 50:
        from sklearn.decomposition import PCA
        x = PCA(n_components=50, random_state=seed).fit_transform(x)
    if method == "tsne":
        from sklearn.manifold import TSNE
        perplexity = float(min(30.0, (n - 1) / 3))
        return TSNE(n_components=dims, perplexity=perplexity, init="pca",
                    random_state=seed).fit_transform(x)
    import umap
    return umap.UMAP(n_components=dims, n_neighbors=min(15, n - 1),
                     random_state=seed).fit_transform(x)


def cluster_purity(feats: np.ndarray, labels: np.ndarray, k: int, seed: int = 0) -> dict:
    """k-means on the features; purity = share of labelled objects in their cluster's
    majority class (1 = every cluster is one class). NMI and ARI come with it because
    purity alone rewards many small clusters."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if not 2 <= k <= len(feats):
        raise UserError(f"--clusters must be between 2 and the number of objects "
                        f"({len(feats)}), got {k}")
    assign = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(
        feats.astype(np.float64))
    out = {"k": k, "sizes": np.bincount(assign, minlength=k).tolist(), "assignments": assign}
    lab = labels >= 0
    if lab.any():
        y, c = labels[lab], assign[lab]
        table = np.zeros((k, int(y.max()) + 1), dtype=int)
        np.add.at(table, (c, y), 1)
        out.update(purity=float(table.max(axis=1).sum() / lab.sum()),
                   nmi=float(normalized_mutual_info_score(y, c)),
                   ari=float(adjusted_rand_score(y, c)), n_labelled=int(lab.sum()),
                   majority_class=[int(r.argmax()) if r.sum() else None for r in table])
    else:
        out.update(purity=None, nmi=None, ari=None, n_labelled=0,
                   note="the store has no labels; purity needs them")
    return out


def map_embedding(run_path: Path, data: Path, split: str = "all", method: str | None = "tsne",
                  dims: int = 2, clusters: int | None = None, max_points: int = MAX_MAP_POINTS,
                  seed: int = 0) -> dict:
    """Map and/or cluster a run's features of a store; writes a PNG and embedding.json."""
    from .figures import plot_map

    emb = embedding_for(run_path, data, split)
    out_dir = out_dir_for(run_path, "embedding", data, split)
    res: dict = {"run_id": emb.run_id, "store": str(data), "split": split,
                 "n_objects": int(len(emb.rows))}
    cl = None
    if clusters:
        cl = cluster_purity(emb.feats, emb.labels, clusters, seed)
        res["clusters"] = {k: v for k, v in cl.items() if k != "assignments"}
    if method:
        pick = np.arange(len(emb.rows))
        if len(pick) > max_points:
            pick = np.sort(np.random.default_rng(seed).choice(pick, max_points, replace=False))
        coords = project(emb.feats[pick], method, dims, seed)
        labelled = bool((emb.labels[pick] >= 0).any())
        colour = emb.labels[pick] if labelled else emb.probs[pick].argmax(1)
        png = out_dir / f"{method}_{dims}d.png"
        by = "label" if labelled else "predicted class"
        title = (f"{_MAP_NAMES.get(method, method)} of run {emb.run_id} features, "
                 f"{Path(data).name} ({split})")
        plot_map(coords, colour, emb.class_names, png, coloured_by=by, title=title,
                 clusters=None if cl is None else cl["assignments"][pick])
        res.update(map=method, dims=dims, n_points=int(len(pick)), png=str(png), coloured_by=by)
    atomic_write_text(out_dir / "embedding.json", json.dumps(res, indent=2))
    res["json"] = str(out_dir / "embedding.json")
    return res


# --------------------------------------------------------------------------- neighbours
def similar_objects(run_path: Path, data: Path, object_id: str, k: int = 10,
                    metric: str = "cosine", out: Path | None = None) -> dict:
    """The k objects nearest to `object_id` in feature space, the query itself first.

    The query is always row 1 at distance 0 (an exact duplicate image elsewhere in the
    store may tie with it, and it is the query the reader wants to see first).
    """
    from sklearn.neighbors import NearestNeighbors

    from .figures import plot_neighbours

    if k < 1:
        raise UserError(f"-k must be at least 1, got {k}")
    emb = embedding_for(run_path, data, "all")
    where = np.flatnonzero(emb.ids == str(object_id))
    if len(where) == 0:
        sample = ", ".join(emb.ids[:3])
        raise UserError(f"object id '{object_id}' is not in store {data} (ids look like "
                        f"{sample}); check --id")
    q = int(where[0])
    k = min(k, len(emb.ids))
    nn = NearestNeighbors(n_neighbors=k, metric=metric).fit(emb.feats)
    dist, idx = nn.kneighbors(emb.feats[q:q + 1])
    order = [q] + [int(i) for i in idx[0] if i != q][:k - 1]
    dists = [0.0] + [float(d) for i, d in zip(idx[0], dist[0]) if i != q][:k - 1]
    store = CutoutStore.open(data)
    names = emb.class_names
    neighbours = [{"rank": r, "object_id": str(emb.ids[i]), "distance": d,
                   "label": names[emb.labels[i]] if emb.labels[i] >= 0 else None,
                   "predicted": names[int(emb.probs[i].argmax())],
                   "p_max": float(emb.probs[i].max()), "row": int(emb.rows[i])}
                  for r, (i, d) in enumerate(zip(order, dists), 1)]
    out_dir = out_dir_for(run_path, "similar", data, "all")
    png = Path(out) if out else out_dir / f"{_safe(object_id)}.png"
    images = store.read_images(np.array([n["row"] for n in neighbours]))
    plot_neighbours(images, neighbours, store.bands, png, metric)
    res = {"query": str(object_id), "metric": metric, "k": k, "store": str(data),
           "run_id": emb.run_id, "neighbours": neighbours, "png": str(png)}
    atomic_write_text(png.with_suffix(".json"), json.dumps(res, indent=2))
    res["json"] = str(png.with_suffix(".json"))
    return res


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def summary_lines(res: dict) -> list[str]:
    """What `embed --map/--clusters` prints."""
    lines = []
    if "png" in res:
        lines.append(f"[green]map[/] {res['png']}: {res['n_points']} objects, "
                     f"coloured by {res['coloured_by']}")
    c = res.get("clusters")
    if c:
        if c["purity"] is None:
            lines.append(f"k-means k={c['k']}: sizes {c['sizes']}; {c['note']}")
        else:
            lines.append(f"k-means k={c['k']}: purity {c['purity']:.3f}, NMI {c['nmi']:.3f}, "
                         f"ARI {c['ari']:.3f} over {c['n_labelled']} labelled objects; "
                         f"sizes {c['sizes']}")
    lines.append(f"details in {res['json']}")
    return lines
