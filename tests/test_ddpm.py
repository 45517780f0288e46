"""Lesson 12's DDPM: known answers for the forward process, the posterior, the score and the bound."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_lib.checks import lesson12
from course_lib.models.diffusion import (
    DDPM,
    DDPMSchedule,
    discretized_gaussian_log_prob,
    normal_kl,
    noised_mixture_score,
    predict_x0,
    q_posterior,
    score_from_eps,
    snr,
)
from course_lib.models.unet import UNet


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_closed_form_forward_process_matches_the_iterated_chain(kind):
    """x_t from t single steps x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) eps has mean sqrt(abar_t) x_0, variance 1 - abar_t."""
    torch.manual_seed(0)
    s = DDPMSchedule(steps=50, kind=kind).double()
    x0 = torch.tensor([1.5, -0.5, 0.0], dtype=torch.float64)
    m = 200_000
    x = x0.expand(m, -1).clone()
    for t in range(50):
        x = (1 - s.betas[t]).sqrt() * x + s.betas[t].sqrt() * torch.randn_like(x)
        if t in (0, 9, 49):
            mean, var = s.abar[t].sqrt() * x0, 1 - s.abar[t]
            se = (var / m).sqrt()
            assert (x.mean(0) - mean).abs().max() < 5 * se + 1e-12, (t, x.mean(0), mean)
            assert (x.var(0) - var).abs().max() < 5 * var * math.sqrt(2 / m), (t, x.var(0), var)
    # and the library's closed-form sampler draws from the same Gaussian
    xt = s.q_sample(x0.expand(m, -1), torch.full((m,), 49), torch.randn(m, 3, dtype=torch.float64))
    assert (xt.mean(0) - s.abar[49].sqrt() * x0).abs().max() < 5 * ((1 - s.abar[49]) / m).sqrt()


def test_posterior_matches_bayes_rule_on_a_grid():
    lesson12.check_q_posterior(q_posterior)


def test_posterior_check_rejects_a_wrong_posterior():
    def wrong(s, x0, x_t, t):  # the variance beta_t instead of beta tilde
        mean, _ = q_posterior(s, x0, x_t, t)
        return mean, s.betas[t]

    with pytest.raises(AssertionError):
        lesson12.check_q_posterior(wrong)


def test_posterior_with_skipped_steps_is_bayes_rule_for_the_coarser_chain():
    """Jumping from index t to t_prev is the posterior of a chain whose abar are abar[t_prev], abar[t]."""
    s = DDPMSchedule(steps=30).double()
    coarse = DDPMSchedule(steps=2).double()
    t, t_prev = 20, 8
    coarse.abar = torch.stack([s.abar[t_prev], s.abar[t]])
    coarse.abar_prev = torch.stack([torch.ones((), dtype=torch.float64), s.abar[t_prev]])
    coarse.betas = 1 - coarse.abar / coarse.abar_prev
    coarse.posterior_var = coarse.betas * (1 - coarse.abar_prev) / (1 - coarse.abar)
    x0, x_t = torch.tensor([0.4], dtype=torch.float64), torch.tensor([-0.8], dtype=torch.float64)
    mean, var = q_posterior(s, x0, x_t, t, t_prev)
    m_ref, v_ref = lesson12.bayes_posterior_on_grid(coarse, 0.4, -0.8, 1)
    assert abs(mean.item() - m_ref) < 1e-5 and abs(var.item() - v_ref) < 1e-6


def test_eps_to_score_identity_on_gaussian_data():
    """For data N(m, s^2), the best noise predictor E[eps | x_t] (a least-squares fit on samples)
    turned into a score by -eps / sqrt(1 - abar_t) is the exact score of q_t = N(sqrt(abar) m, abar s^2 + 1 - abar)."""
    torch.manual_seed(1)
    sched = DDPMSchedule(steps=20).double()
    m_data, s_data, n = 0.8, 0.5, 400_000
    for t in (2, 10, 18):
        x0 = m_data + s_data * torch.randn(n, dtype=torch.float64)
        eps = torch.randn(n, dtype=torch.float64)
        x_t = sched.q_sample(x0[:, None], torch.full((n,), t), eps[:, None])[:, 0]
        design = torch.stack([x_t, torch.ones_like(x_t)], 1)  # E[eps | x_t] is linear in x_t for Gaussian data
        coef = torch.linalg.lstsq(design, eps[:, None]).solution[:, 0]
        grid = torch.linspace(-2, 2, 9, dtype=torch.float64)
        eps_hat = coef[0] * grid + coef[1]
        learned = score_from_eps(sched, eps_hat, t)
        ab = sched.abar[t]
        exact = -(grid - ab.sqrt() * m_data) / (ab * s_data**2 + 1 - ab)
        torch.testing.assert_close(learned, exact, atol=0.02, rtol=0.01)
        # the same with the mixture formula (one component) used in the lesson
        torch.testing.assert_close(
            noised_mixture_score(grid[:, None], torch.tensor([[m_data]]), s_data, float(ab))[:, 0], exact)


def test_noised_mixture_score_is_the_gradient_of_the_log_density():
    means = torch.tensor([[2.0, 0.0], [-1.0, 1.0], [0.0, -2.0]], dtype=torch.float64)
    std, ab = 0.3, 0.6
    v = ab * std**2 + 1 - ab
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    comp = torch.distributions.Normal(math.sqrt(ab) * means, math.sqrt(v))
    log_q = torch.logsumexp(comp.log_prob(x[:, None]).sum(-1), 1)
    grad = torch.autograd.grad(log_q.sum(), x)[0]
    torch.testing.assert_close(noised_mixture_score(x.detach(), means, std, ab), grad)


def test_discretized_decoder_probabilities_sum_to_one():
    levels = 17
    values = torch.arange(levels, dtype=torch.float64) * (2 / (levels - 1)) - 1
    for mean, std in ((0.0, 0.1), (0.93, 0.01), (-3.0, 0.5), (5.0, 0.02), (0.2, 2.0)):
        logp = discretized_gaussian_log_prob(values, torch.full((levels,), mean), std, levels)
        assert torch.isfinite(logp).all(), (mean, std, logp)
        assert abs(logp.exp().sum().item() - 1) < 1e-9, (mean, std, logp.exp().sum())
    # a bin is the Gaussian's mass between its edges
    p = discretized_gaussian_log_prob(values[5:6], torch.tensor([values[5] + 0.02]), 0.05, levels).exp().item()
    normal = torch.distributions.Normal(torch.tensor(values[5].item() + 0.02, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64))
    assert abs(p - (normal.cdf(values[5] + 1 / 16) - normal.cdf(values[5] - 1 / 16)).item()) < 1e-9


def test_normal_kl_closed_form_against_monte_carlo():
    torch.manual_seed(2)
    m1, v1, m2, v2 = (torch.tensor(v, dtype=torch.float64) for v in (0.3, 0.5, -0.2, 1.3))
    x = m1 + v1.sqrt() * torch.randn(400_000, dtype=torch.float64)
    mc = (torch.distributions.Normal(m1, v1.sqrt()).log_prob(x) - torch.distributions.Normal(m2, v2.sqrt()).log_prob(x)).mean()
    assert abs(mc - normal_kl(m1, v1, m2, v2)) < 0.005


class _Linear(nn.Module):
    """A fixed 'network' eps = a x + b, enough to make the bound's terms computable by hand."""

    def __init__(self, a: float = 0.4, b: float = 0.1):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(a)), nn.Parameter(torch.tensor(b))

    def forward(self, x, t):
        return self.a * x + self.b


def test_bound_terms_at_one_step_against_a_direct_computation():
    """With T = 1 the bound is KL(q(x_1 | x_0) || N(0, 1)) - E_q[log p(x_0 | x_1)]; compute both by quadrature."""
    model = DDPM(_Linear(), DDPMSchedule(steps=1), data_shape=(1, 1, 1), levels=17, clip=False).double()
    ab = model.schedule.abar[0].item()
    level = torch.tensor([[[[12]]]])
    x0 = 12 * 2 / 16 - 1
    # prior term, closed form KL(N(sqrt(ab) x0, 1 - ab) || N(0, 1))
    prior = 0.5 * (ab * x0**2 + (1 - ab) - 1 - math.log(1 - ab))
    # decoder term: average -log P(x0 | mean(x_1)) over x_1 ~ q(x_1 | x0), by quadrature on a grid
    u = torch.linspace(-8, 8, 20_001, dtype=torch.float64)
    x1 = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * u
    w = torch.exp(-u**2 / 2)
    w = w / w.sum()
    eps_hat = 0.4 * x1 + 0.1
    mean = (x1 - math.sqrt(1 - ab) * eps_hat) / math.sqrt(ab)  # the predicted x_0 is the decoder's mean
    std = math.sqrt(model.schedule.betas[0].item())
    nll = -discretized_gaussian_log_prob(torch.full_like(u, x0), mean, std, 17)
    decoder = (w * nll).sum().item()
    torch.manual_seed(3)
    terms = model.nelbo_terms(level.expand(100_000, 1, 1, 1))
    assert terms["steps"].shape[0] == 0
    assert torch.allclose(terms["prior"], torch.tensor(prior, dtype=terms["prior"].dtype), atol=1e-9)
    se = terms["decoder"].double().std().item() / math.sqrt(100_000)
    assert abs(terms["decoder"].double().mean().item() - decoder) < 5 * se + 1e-6, (terms["decoder"].mean(), decoder)
    # and directly from the definition: -E_q[log p(x_0 | x_1) + log p(x_1) - log q(x_1 | x_0)]
    log_q = torch.distributions.Normal(math.sqrt(ab) * x0, math.sqrt(1 - ab)).log_prob(x1)
    log_p1 = torch.distributions.Normal(0.0, 1.0).log_prob(x1)
    direct = (w * (nll - log_p1 + log_q)).sum().item()
    assert abs(prior + decoder - direct) < 1e-6


def test_step_terms_are_the_snr_weighted_x0_error():
    """L_{t-1} with variance beta tilde is (SNR(t-1) - SNR(t)) / 2 * ||x_0 - x0_hat||^2 (exercise 1's answer)."""
    torch.manual_seed(4)
    model = DDPM(_Linear(), DDPMSchedule(steps=10), data_shape=(1, 2, 2), clip=False).double()
    s = model.schedule
    x0 = torch.rand(6, 1, 2, 2, dtype=torch.float64) * 2 - 1
    r = snr(s)
    for t in (1, 4, 9):
        x_t = s.q_sample(x0, torch.full((6,), t), torch.randn_like(x0))
        q_mean, q_var = q_posterior(s, x0, x_t, t)
        p_mean, p_var, x0_hat = model.p_mean(x_t, t)
        kl = normal_kl(q_mean, q_var, p_mean, p_var).sum((1, 2, 3))
        torch.testing.assert_close(kl, 0.5 * (r[t - 1] - r[t]) * (x0 - x0_hat).square().sum((1, 2, 3)))
        # and in the noise parameterisation (Ho et al.): beta^2 / (2 beta tilde alpha (1 - abar)) ||eps - eps_hat||^2
        eps = (x_t - s.abar[t].sqrt() * x0) / (1 - s.abar[t]).sqrt()
        w = s.betas[t] ** 2 / (2 * s.posterior_var[t] * s.alphas[t] * (1 - s.abar[t]))
        torch.testing.assert_close(kl, w * (eps - model.eps_model(x_t, t)).square().sum((1, 2, 3)), rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(predict_x0(s, x_t, t, eps), x0)


def test_ddpm_on_images_runs_and_samples_levels():
    torch.manual_seed(5)
    model = DDPM.for_images(steps=8, channels=(8, 16))
    x = torch.randint(0, 17, (4, 1, 8, 8))
    loss = model.loss(x)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    s = model.sample(3)
    assert s.shape == (3, 1, 8, 8) and s.dtype == torch.int64 and 0 <= s.min() and s.max() <= 16
    s2, chain = model.sample(2, steps=3, keep=True)
    assert [t for t, _, _ in chain] == [7, 4, 0]
    nb = model.nelbo(x)
    assert nb.shape == (4,) and torch.isfinite(nb).all() and (nb > 0).all()
    with pytest.raises(TypeError, match="integer grey levels"):
        model.loss(x.float())
    with pytest.raises(ValueError, match="steps must lie"):
        model.sample(2, steps=9)


def test_unet_keeps_the_shape_and_starts_at_zero():
    net = UNet(1, channels=(8, 16, 16), steps=10)
    x = torch.randn(2, 1, 8, 8)
    out = net(x, torch.tensor([0, 9]))
    assert out.shape == x.shape and out.abs().max() == 0  # zero-initialised output layer
    with pytest.raises(ValueError, match="divisible"):
        UNet(1, channels=(8, 16, 16, 16))(torch.randn(1, 1, 6, 6), torch.tensor([0]))
