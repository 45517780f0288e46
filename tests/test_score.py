"""Lesson 11: score matching's known answers (the mixture scores, Hutchinson's estimator, the
integration by parts, the minimiser of denoising score matching), annealed Langevin dynamics
on a mixture with unequal weights, and an NCSN whose learned score matches the analytic one."""

import math

import pytest
import torch

from course_lib import data, train
from course_lib.checks import lesson11
from course_lib.models import score as S


def test_checks_pass_on_the_library():
    lesson11.check_noised_mixture_score(S.noised_mixture_score)
    lesson11.check_dsm_loss(S.dsm_loss)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda x, m, std, sigma, w: S.mixture_score(x, m, std + sigma, w),  # standard deviations added
        lambda x, m, std, sigma, w: S.mixture_score(x, m, math.sqrt(std**2 + sigma**2), None),  # weights ignored
        lambda x, m, std, sigma, w: S.mixture_score(x, m, std, w),  # no noise
        lambda x, m, std, sigma, w: -S.noised_mixture_score(x, m, std, sigma, w),  # sign
    ],
)
def test_mixture_score_check_fails_on_wrong_versions(wrong):
    with pytest.raises(AssertionError):
        lesson11.check_noised_mixture_score(wrong)


def test_mixture_score_check_catches_underflow():
    def naive(x, means, std, sigma, weights):
        var = std**2 + sigma**2
        w = torch.full((len(means),), 1 / len(means), dtype=x.dtype) if weights is None else weights
        dens = w * torch.exp(-((x[:, None] - means[None]) ** 2).sum(-1) / (2 * var))  # underflows far away
        r = dens / dens.sum(1, keepdim=True)
        return (r[..., None] * (means[None] - x[:, None])).sum(1) / var

    with pytest.raises(AssertionError, match="far"):
        lesson11.check_noised_mixture_score(naive)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda f, x, s, e: 0.5 * ((f(x + s * e) - e / s) ** 2).sum(1),  # target sign
        lambda f, x, s, e: 0.5 * ((f(x) + e / s) ** 2).sum(1),  # score at the clean point
        lambda f, x, s, e: ((f(x + s * e) + e / s) ** 2).mean(1),  # mean over coordinates, no 1/2
    ],
)
def test_dsm_check_fails_on_wrong_versions(wrong):
    with pytest.raises(AssertionError):
        lesson11.check_dsm_loss(lambda f, x, s, e: wrong(f, x, torch.as_tensor(s, dtype=x.dtype).reshape(-1, 1), e))


def test_hutchinson_is_unbiased_exactly_over_all_sign_vectors():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    signs = torch.tensor([[(i >> k) & 1 for k in range(4)] for i in range(16)], dtype=torch.float64) * 2 - 1
    estimates = S.hutchinson_trace(lambda v: v @ a.T, signs)
    assert torch.allclose(estimates.mean(), torch.trace(a), atol=1e-12)
    # Gaussian probes: unbiased too, within a few standard errors
    v = torch.randn(200_000, 4, generator=gen, dtype=torch.float64)
    est = S.hutchinson_trace(lambda u: u @ a.T, v)
    assert abs(est.mean().item() - torch.trace(a).item()) < 5 * est.std().item() / math.sqrt(len(v))


def test_sliced_objective_averages_to_the_exact_one():
    """For any network, sliced score matching over all 2^D sign probes equals Hyvarinen's objective."""
    torch.manual_seed(0)
    net = S.mlp([3, 16, 16, 3]).double()
    x = torch.randn(32, 3, dtype=torch.float64)
    signs = torch.tensor([[(i >> k) & 1 for k in range(3)] for i in range(8)], dtype=torch.float64) * 2 - 1
    v = signs[:, None, :].expand(8, 32, 3)
    exact = S.exact_score_matching_loss(net, x)
    sliced = S.sliced_score_matching_loss(net, x, v)
    assert torch.allclose(exact, sliced, atol=1e-10)
    # and the trace in the exact objective is the trace of the autograd Jacobian
    jac = torch.stack([torch.autograd.functional.jacobian(net, xi) for xi in x])
    want = (jac.diagonal(dim1=1, dim2=2).sum(1) + 0.5 * (net(x) ** 2).sum(1)).mean()
    assert torch.allclose(exact, want, atol=1e-10)


def test_integration_by_parts_on_gaussian_data(one_thread):
    """Hyvarinen: E[tr J + 1/2 ||s||^2] + 1/2 E||grad log p||^2 = 1/2 E||s - grad log p||^2 (Fisher divergence)."""
    gen = torch.Generator().manual_seed(3)
    x = 1.5 * torch.randn(400_000, 2, generator=gen, dtype=torch.float64)  # p = N(0, 1.5^2 I)
    for a in (0.2, 1 / 1.5**2, 1.0):
        esm = S.exact_score_matching_loss(lambda y: -a * y, x).item()
        true_score = -x / 1.5**2
        fisher = 0.5 * ((-a * x - true_score) ** 2).sum(1).mean().item()
        assert abs(esm + 0.5 * (true_score**2).sum(1).mean().item() - fisher) < 0.02
    assert abs(S.exact_score_matching_loss(lambda y: -y / 1.5**2, x).item() + 1 / 1.5**2) < 0.01  # minimum -D/(2 s^2)


def test_dsm_is_minimised_by_the_noised_score_on_gaussian_data(one_thread):
    """Data N(0, s^2 I), s(y) = -a y: the DSM loss is (D/2)(a^2 (s^2 + sigma^2) - 2a + 1/sigma^2), least at a = 1/(s^2 + sigma^2)."""
    gen = torch.Generator().manual_seed(4)
    s, sigma, d = 0.8, 0.6, 2
    x = s * torch.randn(400_000, d, generator=gen, dtype=torch.float64)
    eps = torch.randn(400_000, d, generator=gen, dtype=torch.float64)
    grid = torch.linspace(0.5, 2.5, 41, dtype=torch.float64)
    mc = torch.stack([S.dsm_loss(lambda y: -a * y, x, sigma, eps).mean() for a in grid])
    closed = d / 2 * (grid**2 * (s**2 + sigma**2) - 2 * grid + 1 / sigma**2)
    assert (mc - closed).abs().max() < 0.03
    assert abs(grid[mc.argmin()].item() - 1 / (s**2 + sigma**2)) <= 0.05


def test_mixture_log_prob_matches_torch_and_integrates_to_one():
    ring = data.gaussian_mixture()
    means = ring.component_distribution.base_dist.loc
    x = torch.randn(100, 2, dtype=torch.float64) * 2
    assert torch.allclose(S.mixture_log_prob(x, means, 0.2), ring.log_prob(x), atol=1e-10)
    axis = torch.linspace(-4, 4, 401, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    mass = S.mixture_log_prob(grid, means, 0.2).exp().sum() * (8 / 400) ** 2
    assert abs(mass.item() - 1) < 1e-3


def test_annealed_langevin_recovers_unequal_weights_and_plain_langevin_does_not(one_thread):
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    weights = torch.tensor([0.2, 0.8])
    torch.manual_seed(0)
    start = torch.rand(4000, 2) * 8 - 4
    plain = S.langevin(lambda y: S.mixture_score(y, means, 0.3, weights), start, step=0.01, steps=500)
    sigmas = S.geometric_sigmas(4.0, 0.05, 10)
    annealed = S.annealed_langevin(lambda y, s: S.noised_mixture_score(y, means, 0.3, s, weights), start, sigmas,
                                   steps_per_level=50, step_scale=0.3)
    share_plain = (plain[:, 0] < 0).float().mean().item()
    share_annealed = (annealed[:, 0] < 0).float().mean().item()
    assert abs(share_plain - 0.5) < 0.05  # each point stays in the basin it started in
    assert abs(share_annealed - 0.2) < 0.05  # it freezes a little above 0.2 (the lesson says why)
    # and within a mode the spread is right
    right = annealed[annealed[:, 0] > 0]
    assert abs(right.std(0).mean().item() - 0.3) < 0.03


def test_langevin_samples_a_gaussian(one_thread):
    torch.manual_seed(1)
    x = S.langevin(lambda y: -(y - 1.0) / 0.5**2, torch.zeros(20000, 1), step=0.005, steps=600)
    assert abs(x.mean().item() - 1.0) < 0.02
    assert abs(x.std().item() - 0.5) < 0.02


def test_learned_ncsn_score_matches_the_analytic_noised_mixture_score(one_thread):
    ring = data.gaussian_mixture()
    means, std = ring.component_distribution.base_dist.loc.float(), 0.2
    x_train = data.toy2d("gaussian_mixture", n=10000, seed=0, verbose=False)
    sigmas = S.geometric_sigmas(3.0, 0.05, 10)
    torch.manual_seed(0)
    model = S.NCSN.for_points(sigmas)
    train.fit(model, x_train, steps=3000, batch_size=512, lr=2e-3, lr_schedule="cosine", device="cpu",
              verbose=False, progress=False)
    x_eval = data.toy2d("gaussian_mixture", n=4000, seed=1, verbose=False)
    torch.manual_seed(5)
    for sigma in sigmas:
        noisy = x_eval + sigma * torch.randn_like(x_eval)  # drawn from p_sigma: the error is density-weighted
        with torch.no_grad():
            err = S.relative_score_error(model.score(noisy, sigma), S.noised_mixture_score(noisy, means, std, sigma))
        assert err < 0.1, (sigma, err)  # the bound the lesson states


def test_ncsn_interface():
    sigmas = S.geometric_sigmas(1.0, 0.1, 4)
    assert len(sigmas) == 4 and sigmas[0] == 1.0 and abs(sigmas[-1] - 0.1) < 1e-12
    ratios = [a / b for a, b in zip(sigmas, sigmas[1:])]
    assert max(ratios) - min(ratios) < 1e-9
    torch.manual_seed(0)
    model = S.NCSN.for_points(sigmas, hidden=16)
    loss = model.loss(torch.randn(8, 2))
    assert loss.dim() == 0 and torch.isfinite(loss)
    stages = []
    x = model.sample(5, steps_per_level=3, stages=stages)
    assert x.shape == (5, 2) and len(stages) == 4 and not x.requires_grad
    assert model.score(torch.randn(3, 2), 0.5).shape == (3, 2)
    with pytest.raises(ValueError, match="decrease"):
        S.NCSN.for_points([0.1, 1.0])
    with pytest.raises(ValueError, match="shape"):
        model.loss(torch.randn(8, 3))
    with pytest.raises(ValueError, match="positive"):
        model.sample(0)
    with pytest.raises(ValueError, match="objective"):
        S.ScoreModel(objective="denoise")
    with pytest.raises(ValueError, match="sigma"):
        S.ScoreModel(objective="denoising")
    for objective, sigma in (("exact", None), ("sliced", None), ("denoising", 0.1)):
        m = S.ScoreModel(objective=objective, sigma=sigma, hidden=16)
        assert torch.isfinite(m.loss(torch.randn(8, 2)))
        assert m.sample(4, steps=3).shape == (4, 2)
