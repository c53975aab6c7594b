"""Built-in selection strategies, registered through `register_selectors` like any plugin's.

- random: the baseline every strategy must beat.
- uncertainty / margin: the objects the model is least sure of (highest predictive entropy,
  or smallest gap between the two most probable classes); cheap, but a batch of them tends
  to be many near-copies of one confusing kind of object.
- diversity: k-center greedy (the core-set rule of Sener & Savarese 2018) on the run's
  embeddings: each pick is the candidate farthest from everything labelled or picked so far,
  so a batch covers the survey instead of one corner of it.
- hybrid: uncertain *and* diverse: the `factor` x n most uncertain candidates are clustered
  (k-means, n clusters) on their embeddings, and each cluster gives its most uncertain
  member.
- badge: uncertain *and* diverse without a candidate cut-off (Ash et al. 2020, BADGE):
  k-means++ seeding on each candidate's gradient embedding, the gradient of the loss a
  linear head would take if its prediction were right ((p - onehot(argmax p)) x features).
  An object's embedding is long when the head is unsure of it, and k-means++ spreads the
  picks, so a batch is uncertain and spread, in proportions the pool itself sets.
- density: uncertainty weighted by how typical an object is (information density, Settles
  & Craven 2008): entropy x mean cosine similarity to its nearest pool neighbours. Plain
  uncertainty spends labels on outliers (artefacts, blends) that teach the head little.
- balanced: class-balanced seeding for a first batch, when there are no labels yet: an equal
  share per predicted class, each share spread by k-center, so a rare class is seen at once.
"""
from __future__ import annotations

import numpy as np

from astrotransfer.hookspecs import hookimpl
from astrotransfer.selector import Pool, Selector


def entropy(probs: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def margin_uncertainty(probs: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2): larger is less sure, so both measures sort the same way."""
    top = np.sort(np.asarray(probs, dtype=np.float64), axis=1)
    return 1.0 - (top[:, -1] - (top[:, -2] if top.shape[1] > 1 else 0.0))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def k_center(feats: np.ndarray, n: int, rng: np.random.Generator,
             centers: np.ndarray | None = None) -> np.ndarray:
    """Greedy k-center on unit-normalised features: O(N n) distance updates, no N x N matrix.

    Without `centers`, the first pick is drawn at random (by `rng`).
    """
    x = _unit(feats)
    n = min(n, len(x))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if centers is not None and len(centers):
        c = _unit(centers)
        dist = np.full(len(x), np.inf)
        for b in range(0, len(c), 1024):  # unit vectors: |x - c|^2 = 2 - 2 x.c, one matmul
            dist = np.minimum(dist, np.maximum(2.0 - 2.0 * (x @ c[b:b + 1024].T).max(1), 0.0))
        picks: list[int] = []
    else:
        first = int(rng.integers(len(x)))
        picks = [first]
        dist = ((x - x[first]) ** 2).sum(1)
    while len(picks) < n:
        nxt = int(np.argmax(dist))
        picks.append(nxt)
        dist = np.minimum(dist, ((x - x[nxt]) ** 2).sum(1))
        dist[nxt] = -1.0  # never twice, even among exact duplicates
    return np.asarray(picks, dtype=np.int64)


class RandomSelector(Selector):
    name = "random"
    description = "uniformly at random (the baseline)"

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.permutation(len(pool))[:n]


class UncertaintySelector(Selector):
    def __init__(self, name: str = "uncertainty", measure: str = "entropy"):
        self.name = name
        self.measure = measure
        self.description = ("least sure first: highest predictive entropy" if measure == "entropy"
                            else "least sure first: smallest top-2 probability margin")

    def score(self, probs: np.ndarray) -> np.ndarray:
        return entropy(probs) if self.measure == "entropy" else margin_uncertainty(probs)

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        score = self.score(pool.probs)
        tie = rng.random(len(score)) * 1e-9  # random order among exact ties, reproducibly
        return np.argsort(-(score + tie), kind="stable")[:n]


class DiversitySelector(Selector):
    name = "diversity"
    description = "k-center / core-set on the run's embeddings, around what is labelled"

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        return k_center(pool.feats, n, rng, pool.labelled_feats)


class HybridSelector(Selector):
    name = "hybrid"
    description = "uncertain and diverse: k-means on the most uncertain, one per cluster"

    def __init__(self, factor: int = 5):
        self.factor = factor

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        from sklearn.cluster import KMeans

        n = min(n, len(pool))
        score = entropy(pool.probs)
        cand = np.argsort(-score, kind="stable")[:max(n, self.factor * n)]
        if n <= 1 or len(cand) <= n:
            return cand[:n]
        km = KMeans(n_clusters=n, n_init=1, random_state=int(rng.integers(2**31 - 1)))
        assign = km.fit_predict(_unit(pool.feats[cand]))
        picks = [cand[assign == c][np.argmax(score[cand[assign == c]])]
                 for c in range(n) if (assign == c).any()]
        if len(picks) < n:  # empty clusters: fill with the next most uncertain
            rest = [i for i in cand if i not in set(picks)]
            picks += rest[:n - len(picks)]
        picks = np.asarray(picks, dtype=np.int64)
        return picks[np.argsort(-score[picks], kind="stable")]


def _standardised(feats: np.ndarray) -> np.ndarray:
    """Features centred and scaled per dimension over the pool (what the retrained head
    sees), so no single large-valued dimension decides distances."""
    x = np.asarray(feats, dtype=np.float64)
    return (x - x.mean(0)) / np.maximum(x.std(0), 1e-12)


class BadgeSelector(Selector):
    name = "badge"
    description = "k-means++ on gradient embeddings: uncertain and diverse in one draw (BADGE)"

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        n = min(n, len(pool))
        if n <= 0:
            return np.zeros(0, dtype=np.int64)
        x = _standardised(pool.feats)
        g = np.array(pool.probs, dtype=np.float64)
        g[np.arange(len(g)), g.argmax(1)] -= 1.0
        # |g_i (x) x_i - g_j (x) x_j|^2 = |g_i|^2|x_i|^2 + |g_j|^2|x_j|^2 - 2 (g_i.g_j)(x_i.x_j):
        # distances to one centre cost O(N (K + D)), never the N x K*D embedding matrix
        sq = (g ** 2).sum(1) * (x ** 2).sum(1)
        picks = [int(np.argmax(sq))]  # BADGE's first centre: the largest gradient
        dist = np.full(len(x), np.inf)
        while len(picks) < n:
            c = picks[-1]
            dist = np.minimum(dist, np.maximum(sq + sq[c] - 2.0 * (g @ g[c]) * (x @ x[c]), 0.0))
            dist[picks] = 0.0
            total = dist.sum()
            if total <= 0:  # every remaining candidate sits on a centre: fill at random
                rest = np.setdiff1d(np.arange(len(x)), picks)
                picks += [int(i) for i in rng.permutation(rest)[:n - len(picks)]]
                break
            picks.append(int(rng.choice(len(x), p=dist / total)))
        return np.asarray(picks, dtype=np.int64)


class DensitySelector(Selector):
    name = "density"
    description = "uncertainty x typicality: entropy weighted by similarity to near neighbours"

    def __init__(self, k: int = 10, reference: int = 2000):
        self.k = k
        self.reference = reference  # neighbours are sought among at most this many objects

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        x = _unit(_standardised(pool.feats))
        ref = x if len(x) <= self.reference else x[rng.choice(len(x), self.reference, False)]
        k = min(self.k, len(ref))
        density = np.empty(len(x))
        for b in range(0, len(x), 1024):
            sims = x[b:b + 1024] @ ref.T
            density[b:b + 1024] = np.partition(sims, -k, axis=1)[:, -k:].mean(1)
        score = entropy(pool.probs) * np.clip(density, 0.0, None)
        tie = rng.random(len(score)) * 1e-9
        return np.argsort(-(score + tie), kind="stable")[:n]


class BalancedSelector(Selector):
    name = "balanced"
    description = "class-balanced seeding: an equal share per predicted class, spread by k-center"

    def select(self, pool: Pool, n: int, rng: np.random.Generator) -> np.ndarray:
        n = min(n, len(pool))
        pred = np.argmax(pool.probs, axis=1)
        classes = np.unique(pred)
        share = {c: n // len(classes) + (i < n % len(classes)) for i, c in enumerate(classes)}
        picks: list[int] = []
        for c in classes:
            members = np.flatnonzero(pred == c)
            chosen = members[k_center(pool.feats[members], share[c], rng)]
            picks.extend(int(i) for i in chosen)
        if len(picks) < n:  # a small predicted class: top up by k-center over the rest
            rest = np.setdiff1d(np.arange(len(pool)), picks)
            centers = pool.feats[picks] if picks else None
            picks.extend(int(i) for i in rest[k_center(pool.feats[rest], n - len(picks), rng,
                                                      centers)])
        order = rng.permutation(len(picks))  # interleave classes in the queue
        return np.asarray(picks, dtype=np.int64)[order]


@hookimpl
def register_selectors(register):
    register(RandomSelector())
    register(UncertaintySelector("uncertainty", "entropy"))
    register(UncertaintySelector("margin", "margin"))
    register(DiversitySelector())
    register(HybridSelector())
    register(BadgeSelector())
    register(DensitySelector())
    register(BalancedSelector())
