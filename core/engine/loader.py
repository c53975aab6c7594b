"""A torch.utils.data pipeline over a cutout store: chunk-aligned batches, worker
processes, pinned memory and prefetch, sharded over ranks.

Why chunk-aligned: zarr decompresses whole chunks. A batch that straddles a chunk boundary
makes two readers decode the same chunk, and a random-access sampler decodes each chunk
once per object. Here the unit of work is a run of whole chunks, read with one slice by one
worker, so every chunk is decoded exactly once per pass however batches are shuffled.

Ranks take every world-th unit and DataLoader workers every num_workers-th unit of that, so
the shards are disjoint and together cover every requested row once.

On GPU, `to_device` gives bf16 and channels_last (NHWC) batches, the layout tensor cores
want. torch.compile is not applied here or in the trainers by default: its benefit could
not be measured on a GPU for this project yet (see docs/benchmarks.md).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..store import CutoutStore
from .data import resize


class ChunkBatches(IterableDataset):
    """Yields dicts {x: (B,C,H,W) float32, y: (B,) int64, rows: (B,) int64}.

    `rows` defaults to every committed row; `bands` selects and orders channels (a band
    mapping from `data.band_mapping`); `image_size` resizes. `shuffle` permutes units and
    rows inside units per epoch (`set_epoch`), identically on every rank.
    """

    def __init__(self, store: str | Path, rows: np.ndarray | None = None,
                 bands: list[int] | None = None, image_size: int | None = None,
                 batch_size: int = 256, rank: int = 0, world: int = 1,
                 shuffle: bool = False, seed: int = 0):
        super().__init__()
        opened = CutoutStore.open(store)
        self.path = str(store)
        self.rows = np.unique(np.arange(opened.n) if rows is None else np.asarray(rows, np.int64))
        self.bands = bands
        self.image_size = image_size
        self.batch_size = int(batch_size)
        self.rank, self.world = rank, world
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.chunk = int(opened.images.chunks[0])
        per_unit = max(1, self.batch_size // self.chunk)  # whole chunks per read
        unit_of_row = self.rows // (self.chunk * per_unit)
        cuts = np.flatnonzero(np.diff(unit_of_row)) + 1
        self.units = [u for u in np.split(self.rows, cuts) if len(u)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def my_units(self, worker: int = 0, workers: int = 1) -> list[np.ndarray]:
        order = np.arange(len(self.units))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        return [self.units[i] for i in order[self.rank::self.world][worker::workers]]

    def __len__(self) -> int:
        """Batches this rank yields per pass (over all of its workers)."""
        return sum(-(-len(u) // self.batch_size) for u in self.my_units())

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        store = CutoutStore.open(self.path)  # per worker: zarr handles are not shared
        labels = store.group["label"]
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        for unit in self.my_units(worker, workers):
            lo, hi = int(unit[0]), int(unit[-1]) + 1
            block = np.asarray(store.images[lo:hi], dtype=np.float32)
            ys = np.asarray(labels[lo:hi]).astype(np.int64)
            rows = rng.permutation(unit) if self.shuffle else unit
            for start in range(0, len(rows), self.batch_size):
                r = rows[start:start + self.batch_size]
                x = block[r - lo]
                if self.bands is not None:
                    from .matching import take_bands
                    x = take_bands(x, self.bands)
                yield {"x": resize(torch.from_numpy(np.ascontiguousarray(x)), self.image_size),
                       "y": torch.from_numpy(ys[r - lo]), "rows": torch.from_numpy(r)}


def make_loader(dataset: ChunkBatches, num_workers: int = 2, prefetch: int = 4,
                pin_memory: bool | None = None) -> DataLoader:
    """Workers decode chunks ahead of the model; `prefetch` batches queue up per worker.
    Pinned (page-locked) host memory lets the copy to a GPU run asynchronously."""
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                      prefetch_factor=prefetch if num_workers else None,
                      persistent_workers=False)


def to_device(batch: dict, device: torch.device, bf16: bool | None = None,
              channels_last: bool | None = None) -> dict:
    """Move a batch; on GPU default to bf16 and channels_last (NHWC) images."""
    gpu = device.type == "cuda"
    bf16 = gpu if bf16 is None else bf16
    channels_last = gpu if channels_last is None else channels_last
    x = batch["x"].to(device, non_blocking=True)
    if bf16:
        x = x.to(torch.bfloat16)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return {**batch, "x": x, "y": batch["y"].to(device, non_blocking=True)}
