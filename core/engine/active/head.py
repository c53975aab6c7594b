"""Head-only retraining on frozen features: the seconds-long update after a labelled batch.

Why a logistic regression on the run's penultimate features and not a fine-tuning run: after
a batch of 25-50 clicks the person waits for the next queue, and a few hundred labels cannot
move a backbone much anyway (docs/results/recipe.md's linear probes); a regularised linear
head on standardised features is the run's own head refitted, trains in well under a second
on CPU, and gives the probabilities the next selection needs. `train --target-labels-from`
is the full retraining, when the campaign is done.
"""
from __future__ import annotations

import numpy as np


class FrozenHead:
    """A linear head fitted on (features, labels); `predict_proba(feats)` → (N, K).

    Classes never labelled get probability 0 (columns kept, so K matches the run's).

    Args:
        n_classes: K, the run's class count.
        c: inverse L2 strength of the logistic regression; 0.01 because a few hundred
            labels of ~1000-d standardised features overfit at C=1 (on CEERS with a GZ1
            run's features, 5-fold CV on the pool: 0.636 at C=1, 0.692 at C=0.01).
        class_weight: "balanced" (default) weighs each class by the inverse of its share
            of the labels, so a rare class the person has labelled a few times still moves
            the boundary; a new survey's classes are rarely balanced, and an unweighted head
            on few labels drifts to answering the majority class (docs/results/active.md).
            None fits every label with weight 1.

    Example:
        >>> head = FrozenHead(2).fit(feats[:50], y[:50])                  # doctest: +SKIP
        >>> head.predict_proba(feats).shape                              # doctest: +SKIP
        (1519, 2)
    """

    def __init__(self, n_classes: int, c: float = 0.01, class_weight: str | None = "balanced"):
        self.n_classes = n_classes
        self.c = c
        self.class_weight = class_weight
        self.model = None

    @staticmethod
    def can_fit(labels: np.ndarray) -> bool:
        """A linear head needs two classes among the labels."""
        return len(np.unique(np.asarray(labels)[np.asarray(labels) >= 0])) >= 2

    def fit(self, feats: np.ndarray, labels: np.ndarray) -> "FrozenHead":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        if not self.can_fit(labels):
            raise ValueError("a head needs labels of at least two classes")
        self.model = make_pipeline(StandardScaler(),
                                   LogisticRegression(C=self.c, max_iter=2000,
                                                      class_weight=self.class_weight))
        self.model.fit(np.asarray(feats, dtype=np.float64), np.asarray(labels))
        return self

    def predict_proba(self, feats: np.ndarray) -> np.ndarray:
        out = np.zeros((len(feats), self.n_classes))
        p = self.model.predict_proba(np.asarray(feats, dtype=np.float64))
        out[:, self.model.classes_.astype(int)] = p
        return out
