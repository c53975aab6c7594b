"""What a selection-strategy plugin provides: which unlabelled objects to show a person next.

A labelling campaign pays minutes per label, so the order objects are shown in matters
more than anything else in it. A strategy sees the pool as arrays only (the current model's
class probabilities and embeddings of every candidate, and the embeddings of the objects
already labelled) and returns positions into the pool, best first. Everything that needs a
model or a store (running the network, test-time augmentation, excluding objects already
answered, writing the queue) is done before and after, by `engine/active/selection.py`, so
a strategy is a few lines of numpy and testable without a network.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Pool:
    """The candidates a strategy chooses from.

    Attributes:
        probs: (N, K) class probabilities of the current model (the run's head, or a head
            retrained on the labels so far), test-time augmented when asked.
        feats: (N, D) embeddings (the run's penultimate features) of the same objects.
        labelled_feats: (M, D) embeddings of objects already labelled; diversity strategies
            cover the space around them first. M may be 0.
        labelled_labels: (M,) their class indices.
    """

    probs: np.ndarray
    feats: np.ndarray
    labelled_feats: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    labelled_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    def __len__(self) -> int:
        return len(self.probs)


class Selector:
    """Base class: a `name`, a `description` and `select`.

    Example:
        >>> class Newest(Selector):
        ...     name, description = "first", "the pool in store order"
        ...     def select(self, pool, n, rng):
        ...         return np.arange(min(n, len(pool)))
    """

    name: str = ""
    description: str = ""

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        """Positions into the pool (distinct, at most `n`), the most useful first.

        Args:
            pool: the candidates (see `Pool`).
            n: how many to choose.
            rng: the only source of randomness a strategy may use (reproducible queues).

        Returns:
            An int array of positions into `pool`.
        """
        raise NotImplementedError
