"""Domain-adaptation losses against closed forms, and the adapters built on them."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from astrotransfer.plugins import adapters as A
from astrotransfer import losses as L


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _shifted_gaussians(n, d, s, mu, seed, dtype=torch.float64):
    g = _gen(seed)
    x = torch.randn(n, d, generator=g, dtype=dtype) * s
    y = torch.randn(n, d, generator=g, dtype=dtype) * s
    y[:, 0] += mu
    return x, y


# ----------------------------------------------------------------------------- MMD

def test_mmd_of_a_sample_with_itself_is_zero():
    x = torch.randn(200, 32, generator=_gen(0))
    assert L.mmd(x, x).item() == pytest.approx(0.0, abs=1e-6)
    # the U-statistic is only centred on 0: its bias here is O(1/n)
    assert abs(L.mmd(x, x, unbiased=True).item()) < 2.0 / 200
    # two independent draws from one distribution are close too
    y = torch.randn(200, 32, generator=_gen(1))
    assert abs(L.mmd(x, y, unbiased=True).item()) < 0.02


@pytest.mark.parametrize("d,s,mu,sigma", [(2, 1.0, 1.0, 1.0), (5, 1.0, 1.5, 2.0), (3, 0.5, 0.5, 0.7)])
def test_single_kernel_mmd_matches_closed_form(d, s, mu, sigma):
    # Unbiased estimates, averaged over 4 draws of n=2000: the standard error is ≈ 0.004,
    # so 0.015 is about 4 standard errors.
    est = sum(L.mmd(*_shifted_gaussians(2000, d, s, mu, seed), sigmas=[sigma], unbiased=True).item()
              for seed in range(4)) / 4
    assert est == pytest.approx(L.gaussian_mmd2_closed_form(sigma, s, mu, d), abs=0.015)


def test_closed_form_itself():
    # d=2, s=σ=1, ‖μ‖=1: 2·(1/3)·(1 − e^{−1/6})
    assert L.gaussian_mmd2_closed_form(1.0, 1.0, 1.0, 2) == pytest.approx(
        2 / 3 * (1 - math.exp(-1 / 6)))
    assert L.gaussian_mmd2_closed_form(1.3, 0.7, 0.0, 4) == 0.0


def test_multi_kernel_mmd_is_mean_of_single_kernel_closed_forms():
    d, s, mu, sigmas = 3, 1.0, 1.2, [0.5, 1.0, 4.0]
    expected = sum(L.gaussian_mmd2_closed_form(sg, s, mu, d) for sg in sigmas) / len(sigmas)
    est = sum(L.mmd(*_shifted_gaussians(2000, d, s, mu, seed), sigmas=sigmas, unbiased=True).item()
              for seed in range(4)) / 4
    assert est == pytest.approx(expected, abs=0.015)


def test_biased_estimator_exceeds_unbiased_by_its_diagonal_terms():
    x, y = _shifted_gaussians(300, 4, 1.0, 1.0, seed=3)
    n = x.shape[0]
    b = L.mmd(x, y, sigmas=[1.5]).item()
    u = L.mmd(x, y, sigmas=[1.5], unbiased=True).item()
    kxx = L.gaussian_kernel(L.pairwise_sq_dists(x, x), [1.5])
    kyy = L.gaussian_kernel(L.pairwise_sq_dists(y, y), [1.5])
    offdiag = lambda k: (k.sum() - k.trace()).item() / (n * (n - 1))  # noqa: E731
    # V-stat within-block mean = ((n−1)·offdiag + 1)/n
    expected_gap = (1 - offdiag(kxx)) / n + (1 - offdiag(kyy)) / n
    assert b - u == pytest.approx(expected_gap, rel=1e-6)


def test_data_driven_bandwidths_follow_the_joint_mean_distance():
    x, y = _shifted_gaussians(100, 6, 1.0, 2.0, seed=4)
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z).pow(2)
    h = d2.sum() / (len(z) * (len(z) - 1))
    sigmas = [math.sqrt(m * h.item() / 2) for m in L.DEFAULT_MULTIPLIERS]
    assert L.mmd(x, y).item() == pytest.approx(L.mmd(x, y, sigmas=sigmas).item(), rel=1e-9)
    # so the loss cannot be lowered by shrinking the features
    assert L.mmd(0.01 * x, 0.01 * y).item() == pytest.approx(L.mmd(x, y).item(), rel=1e-9)


def test_mmd_handles_unequal_batches_and_grows_with_the_shift():
    g = _gen(5)
    x = torch.randn(64, 16, generator=g)
    vals = [L.mmd(x, torch.randn(48, 16, generator=g) + shift).item() for shift in (0.0, 0.5, 1.0, 2.0)]
    assert vals == sorted(vals) and vals[0] < 0.05 < vals[-1]


# ----------------------------------------------------------------------------- DANN

@pytest.mark.parametrize("lambd", [0.0, 0.3, 1.0, 2.5])
def test_gradient_reversal_negates_and_scales(lambd):
    x = torch.randn(7, 5, generator=_gen(6), requires_grad=True)
    upstream = torch.randn(7, 5, generator=_gen(7))
    y = L.grad_reverse(x, lambd)
    assert torch.equal(y, x)
    (y * upstream).sum().backward()
    assert torch.allclose(x.grad, -lambd * upstream)


def test_dann_lambda_schedule():
    assert L.dann_lambda(0.0) == 0.0
    assert L.dann_lambda(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert L.dann_lambda(1.0) == pytest.approx(0.9999, abs=1e-4)
    ps = [i / 50 for i in range(51)]
    lams = [L.dann_lambda(p) for p in ps]
    assert all(b > a for a, b in zip(lams, lams[1:]))
    assert L.dann_lambda(0.5) == pytest.approx(math.tanh(2.5))  # 2σ(2x)−1 = tanh(x)


# ----------------------------------------------------------------------------- CORAL

def test_coral_zero_for_equal_covariances_positive_otherwise():
    x = torch.randn(128, 20, generator=_gen(8), dtype=torch.float64)
    assert L.coral(x, x + 3.7).item() == pytest.approx(0.0, abs=1e-12)
    assert L.coral(x, 2.0 * x).item() > 0.0
    # and it is exactly ‖C_s − C_t‖²_F / (4d²) with the (n−1) covariance
    y = torch.randn(90, 20, generator=_gen(9), dtype=torch.float64) @ torch.diag(torch.linspace(0.5, 2, 20, dtype=torch.float64))
    cs, ct = torch.cov(x.T), torch.cov(y.T)
    assert L.coral(x, y).item() == pytest.approx(((cs - ct) ** 2).sum().item() / (4 * 20**2), rel=1e-10)


# ----------------------------------------------------------------------------- regularisers

def test_scatter_traces_add_up_to_total_variance():
    g = _gen(10)
    labels = torch.randint(0, 4, (300,), generator=g)
    x = torch.randn(300, 8, generator=g, dtype=torch.float64) + labels[:, None].double()
    within, between = L.scatter_traces(x, labels)
    total = (x - x.mean(0)).pow(2).sum(1).mean()
    assert (within + between).item() == pytest.approx(total.item(), rel=1e-10)


@pytest.mark.parametrize("form", ["ratio", "difference"])
def test_fisher_loss_falls_as_classes_separate(form):
    g = _gen(11)
    noise = torch.randn(200, 10, generator=g)
    labels = torch.arange(200) % 2
    direction = torch.zeros(10)
    direction[0] = 1.0
    vals = []
    for sep in (0.0, 0.5, 1.0, 2.0, 4.0, 8.0):
        feats = noise + (labels[:, None] - 0.5) * sep * direction
        vals.append(L.fisher_loss(feats, labels, form=form).item())
    assert all(b < a for a, b in zip(vals, vals[1:])), vals


def test_fisher_loss_ratio_with_one_class_is_zero_and_keeps_graph():
    x = torch.randn(16, 4, requires_grad=True)
    out = L.fisher_loss(x, torch.zeros(16, dtype=torch.long))
    assert out.item() == 0.0
    out.backward()


def test_entropy_one_hot_zero_uniform_log_k():
    k = 7
    one_hot = 100.0 * torch.eye(k)[torch.tensor([0, 3, 6, 2])]
    assert L.entropy_loss(one_hot).item() == pytest.approx(0.0, abs=1e-6)
    assert L.entropy_loss(torch.zeros(5, k)).item() == pytest.approx(math.log(k), rel=1e-6)
    assert L.entropy_loss(torch.full((3, k), 1e4) * torch.eye(k)[:3]).isfinite()


# ----------------------------------------------------------------------------- adapters

def test_registered_builtins():
    seen = []
    A.register_adapters(register=seen.append)
    names = {a.name: a for a in seen}
    assert set(names) >= {"finetune", "mmd", "dann", "coral"}
    for name in ("mmd", "dann", "coral"):
        a = names[name]
        assert a.needs_target and a.description and a.weight == 1.0


def test_adapters_need_a_target_batch():
    f = torch.randn(8, 4)
    for cls in (A.MMD, A.CORAL):
        with pytest.raises(ValueError, match="target"):
            cls().loss(f, None, None, None, 0.5, None)


def test_mmd_training_reduces_mmd():
    torch.manual_seed(0)
    d = 8
    xs, xt = _shifted_gaussians(256, d, 1.0, 3.0, seed=12, dtype=torch.float32)
    feat = nn.Linear(d, d)
    adapter = A.MMD(weight=1.0)
    opt = torch.optim.Adam(feat.parameters(), lr=0.05)
    with torch.no_grad():
        before = L.mmd(feat(xs), feat(xt)).item()
    for _ in range(60):
        opt.zero_grad()
        loss = adapter.loss(feat(xs), None, feat(xt), None, 0.5, None)
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = L.mmd(feat(xs), feat(xt)).item()
    assert after < 0.3 * before, (before, after)


def test_dann_discriminator_and_grl_train():
    torch.manual_seed(0)
    d = 16
    xs, xt = _shifted_gaussians(64, d, 1.0, 2.0, seed=13, dtype=torch.float32)
    feat = nn.Linear(d, d)
    adapter = A.DANN(weight=1.0, hidden=32, dropout=0.0)
    disc = adapter.build(d, num_classes=2)

    # the discriminator alone learns to tell the domains apart (features frozen)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        with torch.no_grad():
            fs, ft = feat(xs), feat(xt)
        loss = adapter.loss(fs, None, ft, None, 1.0, disc)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]

    # jointly: the reversed gradient reaches the extractor, opposite to the discriminator's
    fs, ft = feat(xs), feat(xt)
    fs.retain_grad()
    adapter.loss(fs, None, ft, None, 1.0, disc).backward()
    reversed_grad = fs.grad.clone()
    fs2 = feat(xs).detach().requires_grad_()
    logits = disc(torch.cat([fs2, feat(xt)]))
    L.domain_bce(logits[:64], logits[64:]).backward()
    assert torch.allclose(reversed_grad, -L.dann_lambda(1.0) * fs2.grad, atol=1e-6)

    opt = torch.optim.SGD([*feat.parameters(), *disc.parameters()], lr=1e-2)
    for step in range(5):
        opt.zero_grad()
        loss = adapter.loss(feat(xs), None, feat(xt), None, step / 4, disc)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)


def test_compose_adds_weighted_regularisers():
    g = _gen(14)
    fs, ft = torch.randn(32, 6, generator=g), torch.randn(24, 6, generator=g) + 1
    ls, lt = torch.randn(32, 3, generator=g), torch.randn(24, 3, generator=g)
    labels = torch.randint(0, 3, (32,), generator=g)
    base = A.MMD(weight=0.7)
    comp = A.compose(base, fisher=0.2, entropy=0.05)
    got = comp.loss(fs, ls, ft, lt, 0.3, None, src_labels=labels)
    want = (0.7 * L.mmd(fs, ft) + 0.2 * L.fisher_loss(fs, labels) + 0.05 * L.entropy_loss(lt))
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert comp.name == "mmd+fisher+entropy" and comp.needs_target
    with pytest.raises(ValueError, match="src_labels"):
        comp.loss(fs, ls, ft, lt, 0.3, None)

    assert A.compose(base) is base
    ft_only = A.compose(A.FineTune(), fisher=1.0)
    assert not ft_only.needs_target  # Fisher reads the source only
    assert A.compose(A.FineTune(), entropy=1.0).needs_target
    dann = A.compose(A.DANN(hidden=8), entropy=0.1)
    assert isinstance(dann.build(6, 3), nn.Module)


def test_compose_accepts_adapters_written_before_src_labels():
    class Legacy(A.Adapter):
        name = "legacy"

        def loss(self, src_feats, src_logits, tgt_feats, tgt_logits, progress, module):
            return src_feats.sum() * 0 + 1.0

    f = torch.randn(10, 3)
    labels = torch.arange(10) % 2
    out = A.compose(Legacy(), fisher=1.0).loss(f, None, None, None, 0.0, None, src_labels=labels)
    assert out.item() == pytest.approx(1.0 + L.fisher_loss(f, labels).item())
