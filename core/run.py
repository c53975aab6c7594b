"""`Run`: a trained run (or a seed / recursive job) as a Python object.

A `Run` is a thin handle on a run directory: its facts (run.json, config.yaml,
metrics.jsonl) are read on demand and the model is built once, on first use, then kept, so
a notebook can call `predict_array` in a loop without rebuilding it. Every method calls the
same engine function as the matching CLI command.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UserError
from .store import CutoutStore


class Run:
    """A run directory written by `astrotransfer.train` (or the `train` command).

    Attributes:
        path: the run (or job) folder.
        kind: ``"run"``, ``"seeds"`` (a seed ensemble) or ``"recursive"`` (pseudo-label
            rounds); a job's ``members`` are ordinary runs.

    Example:
        >>> run = Run("runs/ft")                                          # doctest: +SKIP
        >>> probs = run.predict_array(images)                            # doctest: +SKIP
    """

    def __init__(self, path: str | Path):
        from .engine.runs import job_kind

        self.path = Path(path)  # checked when first used, with the same message as the CLI's
        self.kind = job_kind(self.path)
        self._model = None

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, kind={self.kind!r})"

    # ------------------------------------------------------------------ facts

    @property
    def members(self) -> list["Run"]:
        """The member runs of a seed or recursive job (in seed / round order); ``[self]``
        for a single run."""
        from .engine.runs import member_runs

        return [Run(p) for p in member_runs(self.path)] if self.kind != "run" else [self]

    @property
    def rounds(self) -> list[dict]:
        """A recursive job's per-round records (pseudo-labels added, their accuracy, target
        test accuracy); ``[]`` for other runs."""
        from .engine.runs import read_rounds

        return [r for _, r in sorted(read_rounds(self.path).items())]

    @cached_property
    def info(self) -> dict[str, Any]:
        """run.json: backbone, bands, class names, image size, weights provenance, ..."""
        return self._single("info").run_dir.info()

    @property
    def config(self) -> dict[str, Any]:
        """The resolved training config (config.yaml) as a dict."""
        import yaml

        path = self.path / "config.yaml"
        return yaml.safe_load(path.read_text()) if path.exists() else {}

    @property
    def class_names(self) -> list[str]:
        return list(self.info["class_names"])

    @property
    def bands(self) -> list[str]:
        return list(self.info["bands"])

    @property
    def epochs(self) -> list[dict]:
        """One record per finished epoch (metrics.jsonl): losses, accuracies, lr."""
        return self._single("epochs").run_dir.epochs()

    @property
    def best_epoch(self) -> dict:
        """The epoch record with the lowest validation loss ({} if none finished)."""
        done = self.epochs
        return min(done, key=lambda r: r["val_loss"]) if done else {}

    @property
    def run_dir(self):
        from .engine.runs import RunDir

        return RunDir(self.path)

    def _single(self, what: str) -> "Run":
        if self.kind != "run":
            from .engine.runs import member_runs

            first = next(iter(member_runs(self.path)), None)
            example = f"pass one member run, e.g. {first}" if first else "pass one member run"
            raise UserError(f"{self.path} is a {self.kind} job, not one run; {what} takes one "
                            f"of its members: {example} (in Python: run.members[i])")
        return self

    @property
    def model(self):
        """The trained network (best.pt, else last.pt) in eval mode on the CPU, built once:
        a `torch.nn.Module` taking (N, C, H, W) float32 and giving logits."""
        from .engine.inference.streaming import load_run_model

        if self._model is None:
            self._model, _, _ = load_run_model(self._single("model").path)
        return self._model

    # ------------------------------------------------------------------ applying it

    def evaluate(self, store: str | Path, split: str = "test", report: bool = True,
                 tta: int = 1) -> dict:
        """Metrics, calibration and label-free scores on a store (ensemble for seed jobs).

        Args:
            store: a cutout store with the run's bands (labels optional).
            split: ``"test"``, ``"val"``, ``"train"`` or ``"all"``.
            report: also write report.html/report.md and plots beside metrics.json.
            tta: test-time augmentation: the mean over 1 (off), 2 (flip), 4 (rotations)
                or 8 (both) views of each cutout; costs that many forward passes.

        Returns:
            The metrics dict (``accuracy``, ``macro_f1``, ``calibration``, ``label_free``,
            ``report_dir``, ...), as written to metrics.json.

        Example:
            >>> run.evaluate("des.zarr", split="test")["accuracy"]        # doctest: +SKIP
        """
        from .engine.evaluation.evaluate import evaluate_run

        return evaluate_run(self.path, Path(store), split, report, tta=tta)

    def metrics(self, store: str | Path, split: str = "test", tta: int = 1) -> dict:
        """The labelled metrics alone (accuracy, recall, AUC, confusion, ECE, ...): what
        `evaluate` computes first, without calibration, label-free scores or a report, so
        studies can score many runs cheaply.

        Args:
            store: a store with labels in `split`.
            split: ``"test"``, ``"val"``, ``"train"`` or ``"all"``.
            tta: test-time augmentation views (1, 2, 4 or 8), as for `evaluate`.

        Returns:
            The metrics dict (``accuracy``, ``macro``, ``recall``, ``confusion``, ...).

        Example:
            >>> run.metrics("des.zarr")["macro"]["recall"]                # doctest: +SKIP
        """
        from .engine.evaluation.evaluate import split_metrics

        return split_metrics(self._single("metrics").path, CutoutStore.open(store), split,
                             tta=tta)

    def label_free_scores(self, store: str | Path, source: str | Path | None = None,
                          split: str = "all") -> dict:
        """Scores that rank runs on an unlabelled target (all lower is better): mean
        prediction entropy, information maximisation, feature MMD and DEV.

        Args:
            store: the target store (labels, if any, are not used for the scores).
            source: the source store; default the one recorded in run.json (MMD and DEV
                need it).
            split: which target objects.

        Returns:
            ``{"entropy", "im", "mmd", "dev", "target_accuracy" (None without labels),
            "run", "run_id", ...}`` as `astrotransfer rank` computes them.

        Example:
            >>> run.label_free_scores("des.zarr")["im"]                  # doctest: +SKIP
        """
        from .engine.evaluation.label_free import score_run

        return score_run(self._single("label_free_scores").path, Path(store),
                         None if source is None else Path(source), split)

    def predict(self, store: str | Path, out: str | Path, split: str = "all",
                batch_size: int = 256, overwrite: bool = False,
                embedding: bool = False, tta: int = 1, precision: str | None = None,
                device: str | None = None) -> dict:
        """Write a catalog of class probabilities for every object of a store (resumable;
        under `astrotransfer launch` each rank predicts a shard and rank 0 merges).

        Args:
            store: the cutout store to classify.
            out: the catalog to write: ``.fits``, ``.parquet`` or ``.csv``.
            split: which objects: ``"all"``, ``"train"``, ``"val"`` or ``"test"``.
            batch_size: objects per chunk (memory is flat in the store size).
            overwrite: replace an existing catalog.
            embedding: add ``emb_*`` feature columns.
            tta: test-time augmentation: the mean over 1 (off), 2 (flip), 4 (rotations)
                or 8 (both) views of each cutout; costs that many forward passes.
            precision: ``"auto"`` (ONNX Runtime fp32 on the CPU when installed, else torch
                fp32), ``"fp32"``, ``"bf16"`` (autocast) or ``"onnx"``; None reads
                $ASTROTRANSFER_PRECISION.
            device: ``"cpu"``, ``"cuda"`` or None (a GPU when there is one, else the CPU).

        Returns:
            ``{"catalog": path or None on ranks > 0, "n": rows, "resumed_chunks": k}``.

        Example:
            >>> run.predict("des.zarr", out="des_pred.parquet")          # doctest: +SKIP
        """
        from .engine.distributed.options import ranks
        from .engine.inference.catalog import predict_catalog

        rank, world, _ = ranks()
        return predict_catalog(self._single("predict").path, Path(store), Path(out), split,
                               batch_size, overwrite, embedding, rank=rank, world=world,
                               tta=tta, precision=precision, device=device)

    def export(self, out: str | Path, format: str = "onnx") -> Path:
        """Write the run's model for other runtimes; only ``format="onnx"`` so far.

        Args:
            out: the file to write (``.onnx``).
            format: ``"onnx"``: inputs ``images`` (N, C, H, W) float32 scaled as the store's
                cutouts and resized to the run's image size; outputs ``features`` and
                ``probabilities`` (equal to the run's within 1e-4).

        Returns:
            The path written.

        Example:
            >>> run.export("gz1.onnx")                                     # doctest: +SKIP
        """
        from .engine.inference.export import export_run

        if format != "onnx":
            raise UserError(f"--format {format} is not supported; use onnx")
        return export_run(self._single("export").path, Path(out))

    def predict_array(self, images: np.ndarray, batch_size: int = 256,
                      tta: int = 1) -> np.ndarray:
        """Class probabilities for in-memory cutouts, without a store.

        Args:
            images: (N, C, H, W) or one (C, H, W) cutout, float, with the run's bands in the
                run's order (``run.bands``) and normalised as its source store was (e.g.
                rows of ``open_store(path).read_images(...)``); resized to the run's
                image size like store cutouts are.
            batch_size: cutouts per forward pass.
            tta: test-time augmentation: the mean over 1 (off), 2 (flip), 4 (rotations)
                or 8 (both) views of each cutout; costs that many forward passes.

        Returns:
            (N, K) float32 probabilities, columns in ``run.class_names`` order; the same
            numbers `predict` writes for the same cutouts.

        Example:
            >>> x = open_store("des.zarr").read_images(np.arange(8))[:, :3]  # doctest: +SKIP
            >>> run.predict_array(x).argmax(1)                           # doctest: +SKIP
        """
        probs, _ = self._apply(images, batch_size, False, tta)
        return probs

    def features_array(self, images: np.ndarray, batch_size: int = 256,
                       tta: int = 1) -> np.ndarray:
        """Penultimate-layer features of in-memory cutouts (as `embed` stores them).

        Args:
            images: as for `predict_array`.
            batch_size: cutouts per forward pass.
            tta: test-time augmentation: the mean over 1 (off), 2 (flip), 4 (rotations)
                or 8 (both) views of each cutout; costs that many forward passes.

        Returns:
            (N, D) float32 features.

        Example:
            >>> run.features_array(x).shape                              # doctest: +SKIP
        """
        _, feats = self._apply(images, batch_size, True, tta)
        return feats

    def embed(self, store: str | Path, split: str = "all", map: str | None = None,
              dims: int = 2, clusters: int | None = None, tta: int = 1) -> dict:
        """Write penultimate features into the store (``runs/<run_id>/embeddings``);
        optionally draw a t-SNE/UMAP map and cluster them.

        Args:
            store: the cutout store (opened for writing; it is locked meanwhile).
            split: which objects to embed.
            map: ``"tsne"`` or ``"umap"`` to draw a map (PNG), None for none.
            dims: map dimensions, 2 or 3.
            clusters: k-means K; with labels, the purity of the clusters.
            tta: test-time augmentation: the mean over 1 (off), 2 (flip), 4 (rotations)
                or 8 (both) views of each cutout; costs that many forward passes.

        Returns:
            ``{"run_id", "n", "dim"}`` and, with a map or clusters, ``"map"``: what
            `map_embedding` returns (files written, purity).

        Example:
            >>> run.embed("des.zarr", map="tsne", clusters=2)             # doctest: +SKIP
        """
        from .engine.analysis.embedding import check_map, map_embedding
        from .engine.inference.catalog import embed_store

        check_map(map, dims)
        res = embed_store(self._single("embed").path, Path(store), split, tta=tta)
        if map or clusters:
            res["map"] = map_embedding(self.path, Path(store), split, map, dims, clusters)
        return res

    def observe(self, store: str | Path, split: str = "all", tta: int = 1) -> dict:
        """Probabilities, features and labels of a store's objects in one pass (what the
        selection strategies and head-only retraining work on).

        Args:
            store: a store with the run's bands (by the run's band policy).
            split: which objects.
            tta: test-time augmentation views for the probabilities (1, 2, 4 or 8).

        Returns:
            ``{"rows", "probs" (N, K), "feats" (N, D), "labels" (run's class order, -1
            unknown)}``.

        Example:
            >>> seen = run.observe("ceers.zarr", split="train")          # doctest: +SKIP
        """
        from .engine.active.selection import observe_rows
        from .engine.matching import run_labels

        st = CutoutStore.open(store)
        seen = observe_rows(self._single("observe").path, st, st.indices(split), tta)
        return {"rows": seen.rows, "probs": seen.probs, "feats": seen.feats,
                "labels": run_labels(self.class_names, st, seen.rows)}

    def _apply(self, images, batch_size: int, with_features: bool, tta: int):
        from .engine.inference.streaming import predict_images
        from .engine.models import set_tta

        model = set_tta(self.model, tta)
        x = np.asarray(images)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or x.shape[1] != self.info["in_chans"]:
            raise UserError(f"images must be (N, {self.info['in_chans']}, H, W) with bands "
                            f"{','.join(self.bands)}; got shape {tuple(x.shape)}")
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {batch_size}")
        return predict_images(model, x, self.info["image_size"], batch_size, with_features)

    def similar(self, store: str | Path, object_id: str, k: int = 10, metric: str = "cosine",
                out: str | Path | None = None) -> dict:
        """The k objects nearest to one object in the run's feature space (what
        `astrotransfer similar` prints), with an image grid.

        Args:
            store: the cutout store holding the query and its candidates.
            object_id: the query object's id.
            k: objects to return, the query itself first.
            metric: ``"cosine"`` or ``"euclidean"``.
            out: PNG path (default: under the run directory).

        Returns:
            ``{"query", "k", "neighbours": [{"rank", "object_id", "distance", "label",
            "predicted", "p_max"}, ...], "png", "json"}``.

        Example:
            >>> run.similar("des.zarr", "obj_42", k=5)["neighbours"][1]  # doctest: +SKIP
        """
        from .engine.analysis.embedding import similar_objects

        return similar_objects(self._single("similar").path, Path(store), object_id, k, metric,
                               None if out is None else Path(out))

    def band_study(self, store: str | Path, split: str = "test", batch_size: int = 256) -> dict:
        """Accuracy with each band zeroed in turn at test time: which bands the run uses.

        Args:
            store: a labelled store with the run's bands.
            split: which objects to score.
            batch_size: objects per chunk.

        Returns:
            ``{"baseline_accuracy", "n", "accuracy": {band: acc}, "drops": {band: drop},
            "png", "json"}``.

        Example:
            >>> run.band_study("des.zarr")["drops"]                      # doctest: +SKIP
        """
        from .engine.analysis.studies import band_study

        return band_study(self._single("band_study").path, Path(store), split, batch_size)

    def summary(self) -> str:
        """One line per member: epochs done and the best validation accuracy (what the
        `train` command prints)."""
        lines = []
        for m in self.members:
            best = m.best_epoch
            lines.append(f"trained {m.path}: {len(m.epochs)} epochs, best val acc "
                         f"{best.get('val_acc', float('nan')):.3f} at epoch "
                         f"{best.get('epoch', '-')}")
        for r in self.rounds:
            acc = r["target_test_accuracy"]
            lines.append(f"round {r['round']}: {r['n_pseudo']} pseudo-labels, target test "
                         f"accuracy {'n/a' if acc is None else f'{acc:.3f}'}")
        return "\n".join(lines)
