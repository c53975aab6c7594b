"""From a cutout store to tensors: band mapping, splits, resizing and augmentation."""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..store import CutoutStore

log = logging.getLogger("astrotransfer")


def band_mapping(model_bands: list[str], store: CutoutStore) -> list[int]:
    """Indices of the store's bands that feed the model's input channels, in model order.

    The rule: the model keeps the source survey's bands; another store must provide each of
    them by name (case-insensitive). Extra bands in that store are dropped. When names do not
    match but the band counts do (e.g. unnamed RGB composites), channels are taken in order.
    """
    have = [b.lower() for b in store.bands]
    if [b.lower() for b in model_bands] == have:
        return list(range(len(have)))
    missing = [b for b in model_bands if b.lower() not in have]
    if not missing:
        idx = [have.index(b.lower()) for b in model_bands]
        dropped = [b for b in store.bands if b.lower() not in {m.lower() for m in model_bands}]
        log.warning("band mapping for %s: using its bands %s for the model's %s%s", store.path,
                    ",".join(store.bands[i] for i in idx), ",".join(model_bands),
                    f"; dropping {','.join(dropped)}" if dropped else "")
        return idx
    if len(have) == len(model_bands) and not set(have) & {b.lower() for b in model_bands}:
        log.warning("band mapping for %s: no band names shared (%s vs %s); using channels in order",
                    store.path, ",".join(store.bands), ",".join(model_bands))
        return list(range(len(have)))
    raise UserError(f"store {store.path} has bands {','.join(store.bands)} but the model needs "
                    f"{','.join(model_bands)} (missing {','.join(missing)}); ingest those bands "
                    f"or train on a source with bands the target shares")


def load_tensors(store: CutoutStore, indices: np.ndarray, bands: list[int],
                 image_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) float32 and labels (N,) for the given rows, held in memory."""
    x = torch.from_numpy(store.read_images(indices)[:, bands])
    x = resize(x, image_size)
    y = torch.from_numpy(store.column("label")[indices].astype(np.int64))
    return x, y


def resize(x: torch.Tensor, image_size: int | None) -> torch.Tensor:
    if image_size is None or x.shape[-1] == image_size:
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                         antialias=True, align_corners=False)


AUGMENTATIONS = ("flip", "rot90", "rotate", "rotate45", "shift", "zoom")


class SkyAugment:
    """Random geometric augmentation of N-band cutouts, a new draw per sample, whole batch
    at once.

    Why geometric only: a galaxy or cluster has no up, no handedness and no fixed pixel
    centre, but its colours are physics (band ratios), so nothing here touches pixel values.
    Flips and multiples of 90° are exact pixel permutations. Any-angle rotation, shifts and
    zooms are one affine map per sample applied by one `grid_sample` call (bilinear,
    reflection padding, so no black corners appear around a rotated stamp); per-sample
    torchvision transforms in a Python loop cost more than the network's forward at 64 px.
    Draws come from torch's global generator, which the trainers reseed per epoch.

    Args:
        names: any of flip, rot90, rotate (any angle), rotate45 (±45°), shift (±5 % of the
            stamp), zoom (1-1.3x).
    Example:
        >>> aug = SkyAugment(["flip", "rotate"])
        >>> aug(torch.rand(8, 5, 32, 32)).shape
        torch.Size([8, 5, 32, 32])
    """

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.max_angle = 180.0 if "rotate" in names else 45.0 if "rotate45" in names else 0.0
        self.shift = 0.05 if "shift" in names else 0.0
        self.zoom = 1.3 if "zoom" in names else 1.0

    def __repr__(self) -> str:
        return f"SkyAugment({','.join(self.names)})"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        single = x.ndim == 3
        x = x[None] if single else x
        if "flip" in self.names:
            x = _where(torch.rand(len(x)) < 0.5, x.flip(-1), x)
            x = _where(torch.rand(len(x)) < 0.5, x.flip(-2), x)
        if "rot90" in self.names:
            k = torch.randint(0, 4, (len(x),))
            x = torch.stack([torch.rot90(xi, int(ki), dims=(-2, -1)) for xi, ki in zip(x, k)])
        if self.max_angle or self.shift or self.zoom > 1.0:
            x = self._affine(x)
        return x[0] if single else x

    def _affine(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        angle = (torch.rand(n) * 2 - 1) * math.radians(self.max_angle)
        scale = 1.0 + torch.rand(n) * (self.zoom - 1.0)  # >1 zooms in
        shift = (torch.rand(n, 2) * 2 - 1) * self.shift * 2  # grid units span [-1, 1]
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection",
                             align_corners=False)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.where(mask[:, None, None, None], a, b)


def build_augment(names: list[str]) -> SkyAugment | None:
    """The training augmentation for `names` (see SkyAugment), or None for none."""
    for name in names:
        if name not in AUGMENTATIONS:
            raise UserError(f"unknown augmentation '{name}'; choose from "
                            f"{', '.join(AUGMENTATIONS)}")
    return SkyAugment(names) if names else None


def labelled(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return indices[labels[indices] >= 0]
