"""Domain-adaptation losses as pure functions of a batch.

They hold no state and build no modules, so they can be checked against closed forms and
reused by any adapter. Inputs are cast to float32 (float64 stays float64): covariances and
kernel sums lose too much in half precision, and autocast may hand us bf16 features.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

#: Bandwidth multipliers of the multi-kernel MMD, 2**k for k in -2..2 (DAN / TLlib use 2**k
#: around a data-driven base): a spread of scales so the loss still has gradient both when
#: the domains are far apart and when they nearly overlap.
DEFAULT_MULTIPLIERS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)

#: Fisher loss weights of the DeepMerge II runs (intra_loss_coef=0.01, inter_loss_coef=1.0).
FISHER_INTRA_WEIGHT = 0.01
FISHER_INTER_WEIGHT = 1.0

_EPS = 1e-12


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _flat(x: torch.Tensor) -> torch.Tensor:
    # Penultimate features may still carry spatial axes; every loss here treats a sample as
    # one vector.
    return _as_float(x).reshape(x.shape[0], -1)


# ----------------------------------------------------------------------------- MMD

def pairwise_sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances, via the Gram matrix.

    The expansion ||a||² + ||b||² − 2ab is a single matmul (cdist's backward is far slower),
    and the clamp absorbs the small negative values cancellation leaves near zero.
    """
    d2 = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1).unsqueeze(0) - 2.0 * a @ b.T
    return d2.clamp_min(0.0)


def gaussian_kernel(d2: torch.Tensor, sigmas: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Mean over bandwidths of exp(−d²/(2σ²)).

    The mean (not DAN's sum) keeps the combined kernel in [0, 1], so the MMD stays in [0, 2]
    whatever the number of kernels and the loss weight keeps one meaning.
    """
    sig = torch.as_tensor(sigmas, dtype=d2.dtype, device=d2.device).reshape(-1, 1, 1)
    return torch.exp(-d2.unsqueeze(0) / (2.0 * sig.pow(2))).mean(0)


def _mmd2_from_blocks(kxx, kyy, kxy, unbiased: bool) -> torch.Tensor:
    n, m = kxx.shape[0], kyy.shape[0]
    if unbiased:
        if n < 2 or m < 2:
            raise ValueError("the unbiased MMD estimate needs at least 2 samples per domain")
        xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        xx, yy = kxx.mean(), kyy.mean()
    return xx + yy - 2.0 * kxy.mean()


def data_bandwidth(dxx: torch.Tensor, dyy: torch.Tensor, dxy: torch.Tensor) -> torch.Tensor:
    """Mean squared distance between distinct points of the joint batch, detached.

    Tying the kernel scale to the data makes the loss invariant to a global rescaling of the
    features, so the network cannot lower it by shrinking them; detaching keeps the
    bandwidth a measuring stick rather than something the optimiser can move.
    """
    n, m = dxx.shape[0], dyy.shape[0]
    total = dxx.sum() + dyy.sum() + 2.0 * dxy.sum()  # diagonals of dxx, dyy are zero
    pairs = (n + m) * (n + m - 1)
    return (total / max(pairs, 1)).detach().clamp_min(_EPS)


def mmd(src: torch.Tensor, tgt: torch.Tensor, *, sigmas: Sequence[float] | None = None,
        multipliers: Sequence[float] = DEFAULT_MULTIPLIERS, unbiased: bool = False) -> torch.Tensor:
    """Squared multi-kernel Gaussian MMD between two feature batches (what DAN minimises).

    Bandwidths: with `sigmas` None, the kernels are exp(−d²/(m·h)) for m in `multipliers`
    and h the mean pairwise squared distance of the joint batch (σ² = m·h/2); fixed
    `sigmas` override that, which is what the closed-form tests use.

    Estimator: biased (V-statistic, diagonals included) by default, as in DAN and
    DeepMerge II: it is never negative and is exactly 0 for identical batches, which suits
    a loss; its O(1/n) upward bias is the same for every step so it does not distort the
    gradient's direction much. `unbiased=True` gives the U-statistic (diagonals of the
    within-domain blocks dropped): centred on the true MMD², but can dip below zero.
    """
    x, y = _flat(src), _flat(tgt)
    dxx, dyy, dxy = pairwise_sq_dists(x, x), pairwise_sq_dists(y, y), pairwise_sq_dists(x, y)
    if sigmas is None:
        h = data_bandwidth(dxx, dyy, dxy)
        sig = torch.sqrt(torch.as_tensor(multipliers, dtype=x.dtype, device=x.device) * h / 2.0)
    else:
        sig = torch.as_tensor(sigmas, dtype=x.dtype, device=x.device)
    return _mmd2_from_blocks(gaussian_kernel(dxx, sig), gaussian_kernel(dyy, sig),
                             gaussian_kernel(dxy, sig), unbiased)


def gaussian_mmd2_closed_form(sigma: float, s: float, mu_norm: float, d: int) -> float:
    """MMD² of N(0, s²I_d) vs N(μ, s²I_d) under k = exp(−‖x−y‖²/(2σ²)).

    E k(X,X') = (σ²/(σ²+2s²))^{d/2} and E k(X,Y) carries the extra factor
    exp(−‖μ‖²/(2(σ²+2s²))); kept beside the estimator so tests and docs share one formula.
    """
    a = sigma**2 + 2 * s**2
    return 2.0 * (sigma**2 / a) ** (d / 2) * (1.0 - math.exp(-mu_norm**2 / (2 * a)))


# ----------------------------------------------------------------------------- CORAL

def covariance(x: torch.Tensor) -> torch.Tensor:
    """Unbiased (n−1) feature covariance, as Deep CORAL defines it."""
    x = _flat(x)
    if x.shape[0] < 2:
        raise ValueError("a covariance needs at least 2 samples")
    xc = x - x.mean(0, keepdim=True)
    return xc.T @ xc / (x.shape[0] - 1)


def coral(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Deep CORAL: ‖C_s − C_t‖²_F / (4d²).

    The 1/(4d²) of Sun & Saenko makes the value comparable across feature widths; it only
    matches second moments, so a pure shift of the mean costs nothing (MMD sees that).
    """
    cs, ct = covariance(src), covariance(tgt)
    d = cs.shape[0]
    return (cs - ct).pow(2).sum() / (4.0 * d * d)


# ----------------------------------------------------------------------------- DANN

class GradientReversal(torch.autograd.Function):
    """Identity forward, −λ·grad backward (Ganin & Lempitsky 2015).

    One backward pass then trains the domain classifier to separate the domains while
    pushing the feature extractor to make them inseparable.
    """

    @staticmethod
    def forward(ctx, x, lambd):
        ctx.lambd = float(lambd)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.lambd * grad, None


def grad_reverse(x: torch.Tensor, lambd: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, lambd)


def dann_lambda(progress: float, gamma: float = 10.0) -> float:
    """Ganin's schedule 2/(1+exp(−γp)) − 1, rising from 0 to ≈1.

    Early on the domain classifier is random and its reversed gradient is noise that would
    wreck the freshly transferred features, so the reversal is faded in.
    """
    p = min(max(float(progress), 0.0), 1.0)
    return 2.0 / (1.0 + math.exp(-gamma * p)) - 1.0


def domain_bce(src_domain_logits: torch.Tensor, tgt_domain_logits: torch.Tensor) -> torch.Tensor:
    """BCE of a source(1)-vs-target(0) classifier, each domain averaged on its own.

    Averaging per domain keeps the two halves equally weighted when the source and target
    batches differ in size.
    """
    ls = F.binary_cross_entropy_with_logits(
        src_domain_logits.reshape(-1), torch.ones_like(src_domain_logits.reshape(-1)))
    lt = F.binary_cross_entropy_with_logits(
        tgt_domain_logits.reshape(-1), torch.zeros_like(tgt_domain_logits.reshape(-1)))
    return 0.5 * (ls + lt)


# ----------------------------------------------------------------------------- regularisers

def scatter_traces(feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample traces of the within- and between-class scatter of a labelled batch.

    within = mean ‖x_i − μ_{y_i}‖², between = Σ_k (n_k/n) ‖μ_k − μ‖²; with these
    normalisations they add up to the total variance trace (Huygens), independent of the
    batch size. Class means come from the batch itself, not learned centres as in
    DeepMerge II, so the function stays stateless; classes absent from the batch drop out.
    """
    x = _flat(feats)
    labels = labels.reshape(-1).long().to(x.device)
    classes, inv, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    k = classes.numel()
    sums = x.new_zeros(k, x.shape[1]).index_add_(0, inv, x)
    means = sums / counts.unsqueeze(1).to(x.dtype)
    within = (x - means[inv]).pow(2).sum(1).mean()
    weights = counts.to(x.dtype) / x.shape[0]
    between = (weights * (means - x.mean(0)).pow(2).sum(1)).sum()
    return within, between


def fisher_loss(feats: torch.Tensor, labels: torch.Tensor, *,
                intra_weight: float = FISHER_INTRA_WEIGHT,
                inter_weight: float = FISHER_INTER_WEIGHT,
                form: str = "ratio") -> torch.Tensor:
    """DeepMerge II's Fisher loss: compact classes, separated class means (source only).

    form="ratio": intra·tr(S_w) / (inter·tr(S_b)), the trace-ratio form DeepMerge II runs
    by default. It is scale-invariant and bounded below by 0; with fewer than two classes in
    the batch the ratio is undefined and the loss is 0.
    form="difference": intra·tr(S_w) − inter·tr(S_b). Unbounded below, because inflating
    the features inflates tr(S_b): use it only with a small weight or bounded features.
    """
    within, between = scatter_traces(feats, labels)
    if form == "difference":
        return intra_weight * within - inter_weight * between
    if form != "ratio":
        raise ValueError(f"unknown Fisher loss form {form!r} (use 'ratio' or 'difference')")
    if torch.unique(labels).numel() < 2:
        return within * 0.0
    return intra_weight * within / (inter_weight * between).clamp_min(_EPS)


def entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean Shannon entropy (nats) of softmax(logits).

    Minimising it on the unlabelled target pushes decision boundaries into low-density
    regions (DeepMerge II's entropy minimisation). log_softmax keeps confident logits
    finite where log(softmax) would give 0·log 0 = NaN.
    """
    logp = F.log_softmax(_as_float(logits), dim=1)
    return -(logp.exp() * logp).sum(1).mean()
