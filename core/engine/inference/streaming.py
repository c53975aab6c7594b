"""Rebuild a trained model from its run directory and stream a store through it."""
from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch

from ...errors import UserError
from ...store import CutoutStore
from ..data import resize
from ..matching import bands_for, label_remap, take_bands
from ..models import build_model, classify, features, set_tta
from ..runs import RunDir, load_checkpoint
from .onnx_runtime import cached_onnx
from .precision import autocast, resolve_precision

T = TypeVar("T")
_DONE = object()


def load_run_model(run_path: Path | str, device: torch.device | None = None, tta: int = 1,
                   precision: str | None = None):
    """The run's best model in eval mode, and its run.json facts.

    `tta` > 1 averages that many flips/rotations per cutout (`models.set_tta`). The model
    is in channels-last memory format, which oneDNN runs faster on CPU. `precision`
    (auto, fp32, bf16; see `precision.py`) is stored on the model as
    `inference_precision`, and every forward pass (`forward_batch`) follows it.
    """
    inference_precision = resolve_precision(precision, device, tta)
    run = RunDir(Path(run_path))
    info = run.info()
    ckpt_path = run.best if run.best.exists() else run.last
    ckpt = load_checkpoint(ckpt_path)
    model, _ = build_model(info["backbone"], in_chans=info["in_chans"],
                           num_classes=info["num_classes"], pretrained="none",
                           drop_rate=info.get("drop_rate", 0.0))
    try:
        model.load_state_dict(ckpt["model"])
    except (KeyError, RuntimeError) as exc:
        detail = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = detail[1] if len(detail) > 1 else (detail[0] if detail else type(exc).__name__)
        raise UserError(f"checkpoint in {run.path} does not fit the {info['backbone']} model "
                        f"its run.json describes ({detail[:160]}); the run directory is "
                        f"damaged: restore run.json and the checkpoints, or re-train") from None
    model.eval().to(device or torch.device("cpu"))
    model.to(memory_format=torch.channels_last)
    model.inference_precision = inference_precision
    if inference_precision == "onnx":  # exported on first use (forward_batch), then reused
        model.onnx_source = (run.path, ckpt_path,
                             (info["in_chans"], info["image_size"], info["image_size"]))
    set_tta(model, tta)
    return model, info, run


def check_compatible(info: dict, store: CutoutStore) -> list[int]:
    """The band mapping for the model (by the run's recorded policy); refuses a store whose
    class set differs from the run's (same set in another order is fine: labels are read
    through `matching.run_labels`, which translates them into the run's order)."""
    label_remap(info["class_names"], store)
    return bands_for(info, store)


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Run `items` in a background thread, `depth` items ahead of the consumer.

    zarr's decompression and numpy copies release the GIL, so the next chunk is read while
    the model runs on this one. The queue is bounded, so memory holds at most `depth + 1`
    chunks whatever the store size. An exception in the reader is re-raised here, and a
    consumer that stops early (error, kill of the generator) stops the reader too.
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _DONE))
        except BaseException as exc:  # handed to the consumer, which owns error reporting
            put((False, exc))

    thread = threading.Thread(target=work, name="astrotransfer-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def image_chunks(store: CutoutStore, indices: np.ndarray, bands: list[int], image_size: int,
                 batch_size: int, extra: Callable[[np.ndarray], dict] | None = None,
                 pin: bool = False) -> Iterator[tuple[np.ndarray, torch.Tensor, dict]]:
    """(rows, model-ready images, extra columns) per chunk of `batch_size` rows, in order.

    Consecutive chunks whose rows fall within one zarr chunk's span are read together: zarr
    decompresses whole chunks, so reading them batch by batch would decompress the same
    chunk again for every small batch. Memory stays bounded by one span of rows.
    """
    span = max(batch_size, int(store.images.chunks[0]))
    start, n = 0, len(indices)
    while start < n:
        stop = min(n, start + batch_size)
        while stop < n and indices[min(n, stop + batch_size) - 1] - indices[start] < span:
            stop = min(n, stop + batch_size)
        block = indices[start:stop]
        images = store.read_images(block)
        cols = extra(block) if extra is not None else {}
        for b in range(0, len(block), batch_size):
            x = resize(torch.from_numpy(np.ascontiguousarray(
                take_bands(images[b:b + batch_size], bands))), image_size)
            if pin:  # page-locked in the reader thread: the copy to the GPU is asynchronous
                x = x.pin_memory()
            yield block[b:b + batch_size], x, {k: v[b:b + batch_size] for k, v in cols.items()}
        start = stop


@torch.no_grad()
def stream_predictions(model, store: CutoutStore, indices: np.ndarray, bands: list[int],
                       image_size: int, batch_size: int = 256, with_features: bool = False,
                       device: torch.device | None = None, prefetch_depth: int = 2
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    """Yield (rows, probabilities, features) chunk by chunk: memory is flat in store size.

    Rows are read in store order in slabs of `batch_size`, which are contiguous zarr reads,
    by a background thread that keeps the next chunks ready while the model runs.
    """
    for rows, probs, feats, _ in stream_chunks(model, store, indices, bands, image_size,
                                               batch_size, with_features, device,
                                               prefetch_depth):
        yield rows, probs, feats


@torch.no_grad()
def stream_chunks(model, store: CutoutStore, indices: np.ndarray, bands: list[int],
                  image_size: int, batch_size: int = 256, with_features: bool = False,
                  device: torch.device | None = None, prefetch_depth: int = 2,
                  extra: Callable[[np.ndarray], dict] | None = None):
    """`stream_predictions` plus per-chunk `extra(rows)` columns read by the same thread."""
    device = device or torch.device("cpu")
    chunks = image_chunks(store, indices, bands, image_size, batch_size, extra,
                          pin=device.type == "cuda")
    for rows, x, cols in prefetch(chunks, prefetch_depth):
        probs, feats = forward_batch(model, x, device, with_features)
        yield rows, probs, feats, cols


@torch.no_grad()
def forward_batch(model, x: torch.Tensor, device: torch.device, with_features: bool = False
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, features or None) of one model-ready batch: the single forward path
    that stores (`stream_chunks`) and in-memory arrays (`predict_images`) share."""
    onnx = getattr(model, "inference_precision", "fp32") == "onnx"
    if onnx and getattr(model, "tta_views", 1) == 1:
        if getattr(model, "onnx_runner", None) is None:
            model.onnx_runner = cached_onnx(model, *model.onnx_source)
        probs, feats = model.onnx_runner(x.numpy())
        return probs, feats if with_features else None
    with autocast(model, device):
        x = x.to(device, non_blocking=x.is_pinned())
        feats = features(model, x.contiguous(memory_format=torch.channels_last))
        logits = classify(model, feats)
    probs = torch.softmax(logits.float(), dim=1)
    return probs.cpu().numpy(), feats.float().cpu().numpy() if with_features else None


@torch.no_grad()
def predict_images(model, images: np.ndarray, image_size: int, batch_size: int = 256,
                   with_features: bool = False, device: torch.device | None = None
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """(probabilities, features or None) of in-memory (N, C, H, W) cutouts, batch by batch,
    resized as store cutouts are, so the numbers equal `stream_chunks`' for the same pixels."""
    device = device or torch.device("cpu")
    probs, feats = [], []
    for b in range(0, len(images), batch_size):
        x = resize(torch.from_numpy(np.ascontiguousarray(images[b:b + batch_size],
                                                         dtype=np.float32)), image_size)
        p, f = forward_batch(model, x, device, with_features)
        probs.append(p)
        feats.append(f)
    if not probs:
        k = model.num_classes if hasattr(model, "num_classes") else 0
        return np.zeros((0, k), np.float32), (np.zeros((0, 0), np.float32)
                                              if with_features else None)
    return np.concatenate(probs), np.concatenate(feats) if with_features else None


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs, 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def as_text(values) -> np.ndarray:
    """A fixed-width str array from any string array: zarr 3 hands back numpy's variable-width
    StringDType, which numpy refuses to cast straight to str."""
    return np.asarray(values).astype(object).astype(str)
