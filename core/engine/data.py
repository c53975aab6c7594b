"""From a cutout store to tensors: band mapping, splits, resizing and augmentation."""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from ..errors import UserError
from ..store import CutoutStore

log = logging.getLogger("astrotransfer")


def band_mapping(model_bands: list[str], store: CutoutStore) -> list[int]:
    """Indices of the store's bands that feed the model's input channels, in model order.

    By name first, then by position when no name is shared and the counts agree; the
    policy and its one-band `mean` view live in `matching` (kept here for callers that
    know only the model's band names).
    """
    from .matching import bands_for
    return bands_for({"bands": list(model_bands)}, store)


def load_tensors(store: CutoutStore, indices: np.ndarray, bands: list[int],
                 image_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) float32 and labels (N,) for the given rows, held in memory."""
    from .matching import take_bands
    x = torch.from_numpy(np.ascontiguousarray(take_bands(store.read_images(indices), bands)))
    x = resize(x, image_size)
    y = torch.from_numpy(store.column("label")[indices].astype(np.int64))
    return x, y


def resize(x: torch.Tensor, image_size: int | None) -> torch.Tensor:
    if image_size is None or x.shape[-1] == image_size:
        return x
    return F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                         antialias=True, align_corners=False)


class Rot90:
    """A random multiple of 90°: exact on the pixel grid, so no interpolation blur."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 4, ()).item())
        return torch.rot90(x, k, dims=(-2, -1))


def build_augment(names: list[str]) -> v2.Compose | None:
    """Augmentations for N-band tensors; all optional, as in the seed papers."""
    known = {
        "flip": [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip()],
        "rot90": [v2.Lambda(Rot90())],
        "rotate": [v2.RandomRotation(180)],
        "rotate45": [v2.RandomRotation(45)],
        "shift": [v2.RandomAffine(degrees=0, translate=(0.05, 0.05))],
        "zoom": [v2.RandomAffine(degrees=0, scale=(1.0, 1.3))],
    }
    steps = []
    for name in names:
        if name not in known:
            raise UserError(f"unknown augmentation '{name}'; choose from {', '.join(known)}")
        steps += known[name]
    return v2.Compose(steps) if steps else None


def labelled(indices: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return indices[labels[indices] >= 0]
