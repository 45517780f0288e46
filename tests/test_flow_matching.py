"""Lesson 14's flow matching: the conditional target, the exact marginal velocity, the loss's constant gap."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import train
from course_lib.checks import lesson14
from course_lib.models.flow_matching import (
    FlowMatching,
    cfm_loss,
    conditional_path,
    conditional_velocity,
    gaussian_marginal_velocity,
    mixture_marginal_velocity,
    standard_normal_log_prob,
)
from course_lib.models.sde import ode_log_prob, ode_solve


def test_conditional_path_and_its_velocity():
    gen = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(5, 3, generator=gen), torch.randn(5, 3, generator=gen)
    torch.testing.assert_close(conditional_path(x0, x1, 0.0), x0)
    torch.testing.assert_close(conditional_path(x0, x1, 1.0), x1)
    t, h = torch.rand(5, generator=gen, dtype=torch.float64), 1e-6
    x0, x1 = x0.double(), x1.double()
    fd = (conditional_path(x0, x1, t + h) - conditional_path(x0, x1, t - h)) / (2 * h)
    torch.testing.assert_close(fd, conditional_velocity(x0, x1))


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9])
def test_gaussian_marginal_velocity_is_the_regression_of_the_conditional_one(t):
    """x_t and x_1 - x_0 are jointly Gaussian, so E[x_1 - x_0 | x_t] is the least-squares line."""
    mean, std, n = 1.5, 0.5, 400_000
    gen = torch.Generator().manual_seed(1)
    x0 = mean + std * torch.randn(n, generator=gen, dtype=torch.float64)
    x1 = torch.randn(n, generator=gen, dtype=torch.float64)
    xt, target = (1 - t) * x0 + t * x1, x1 - x0
    design = torch.stack([torch.ones(n, dtype=torch.float64), xt], 1)
    coef = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
    probe = torch.tensor([[-1.0], [0.0], [2.0]], dtype=torch.float64)
    exact = gaussian_marginal_velocity(probe, t, mean, std)[:, 0]
    torch.testing.assert_close(coef[0] + coef[1] * probe[:, 0], exact, rtol=0, atol=0.02)


def test_mixture_velocity_reduces_to_the_gaussian_one_and_matches_a_local_average():
    x = torch.tensor([[0.3, -0.2], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(mixture_marginal_velocity(x, 0.4, torch.tensor([[0.5, 0.5]]), 0.3),
                               gaussian_marginal_velocity(x, 0.4, torch.tensor([0.5, 0.5], dtype=torch.float64), 0.3))
    # two components, 1D: E[x1 - x0 | x_t near x*] by Monte Carlo in a narrow window
    means, std, w, t, n = torch.tensor([[-1.0], [2.0]]), 0.3, torch.tensor([0.3, 0.7]), 0.6, 2_000_000
    gen = torch.Generator().manual_seed(2)
    k = torch.multinomial(w, n, replacement=True, generator=gen)
    x0 = means[k, 0].double() + std * torch.randn(n, generator=gen, dtype=torch.float64)
    x1 = torch.randn(n, generator=gen, dtype=torch.float64)
    xt = (1 - t) * x0 + t * x1
    for x_star in (-0.2, 0.4, 1.0):
        near = (xt - x_star).abs() < 0.01
        mc = (x1 - x0)[near].mean()
        exact = mixture_marginal_velocity(torch.tensor([[x_star]], dtype=torch.float64), t, means, std, w)[0, 0]
        assert abs(mc - exact) < 5 * (x1 - x0)[near].std() / math.sqrt(int(near.sum())) + 0.02, (x_star, mc, exact)


def test_the_exact_velocity_ode_moves_noise_to_the_gaussian_and_gives_its_density():
    mean, std = 0.8, 0.4
    field = lambda x, t: gaussian_marginal_velocity(x, t, mean, std)
    z = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x0, _ = ode_solve(field, z, 1.0, 0.0, rtol=1e-7, atol=1e-7)
    assert abs(x0.mean() - mean) < 0.01 and abs(x0.std() - std) < 0.01
    # the straight-line map: x_0 = mean + std * z at t = 0, exactly
    torch.testing.assert_close(x0, mean + std * z, rtol=0, atol=1e-4)
    x = torch.tensor([[0.0], [0.8], [1.5]], dtype=torch.float64)
    logp, _, _ = ode_log_prob(field, x, standard_normal_log_prob, 0.0, 1.0, divergence="exact", rtol=1e-8, atol=1e-8)
    want = torch.distributions.Normal(mean, std).log_prob(x[:, 0])
    torch.testing.assert_close(logp, want, rtol=0, atol=1e-4)


def test_conditional_and_marginal_losses_differ_by_a_constant():
    """L_CFM(v) - L_FM(v) does not depend on v: the same gradients, the same minimiser."""
    mean, std, n = 0.5, 0.6, 400_000
    gen = torch.Generator().manual_seed(4)
    x0 = mean + std * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    x1 = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    t = torch.rand(n, generator=gen, dtype=torch.float64)
    xt = conditional_path(x0, x1, t)
    u = gaussian_marginal_velocity(xt, t, mean, std)
    gaps = []
    for v in (lambda x, s: torch.zeros_like(x), lambda x, s: 2 * x - 1, lambda x, s: torch.sin(3 * x) * s[:, None]):
        cfm = cfm_loss(v, x0, x1, t).item()
        fm = (v(xt, t) - u).square().mean().item()
        gaps.append(cfm - fm)
    assert max(gaps) - min(gaps) < 0.02, gaps
    # the constant is E Var(x1 - x0 | x_t) > 0: the loss never reaches zero
    assert min(gaps) > 0.1
    assert cfm_loss(lambda x, s: gaussian_marginal_velocity(x, s, mean, std), x0, x1, t).item() == pytest.approx(gaps[0], abs=0.02)


def test_a_trained_velocity_is_close_to_the_exact_one():
    mean, std = 1.0, 0.5
    torch.manual_seed(0)
    model = FlowMatching.for_points(1, hidden=32, layers=2)
    data = lambda b, g: mean + std * torch.randn(b, 1, generator=g)
    train.fit(model, data, steps=700, batch_size=512, lr=5e-3, lr_schedule="cosine", seed=0, verbose=False, progress=False)
    for t in (0.2, 0.5, 0.8):
        sd_t = math.sqrt((1 - t) ** 2 * std**2 + t**2)
        x = (1 - t) * mean + sd_t * torch.linspace(-2, 2, 9)[:, None]  # where p_t has its mass
        with torch.no_grad():
            err = (model.velocity(x, torch.full((9,), t)) - gaussian_marginal_velocity(x, t, mean, std)).abs().max()
        assert err < 0.15, (t, err)
    with torch.no_grad():
        samples = model.sample(4000, rtol=1e-4, atol=1e-4)
    assert abs(samples.mean() - mean) < 0.05 and abs(samples.std() - std) < 0.05
    logp = model.log_prob(torch.tensor([[1.0]]))
    assert abs(logp.item() - torch.distributions.Normal(mean, std).log_prob(torch.tensor(1.0)).item()) < 0.1


def test_flow_matching_model_interface():
    torch.manual_seed(0)
    model = FlowMatching.for_points(2, hidden=16, layers=2)
    x = torch.randn(32, 2)
    assert model.loss(x).dim() == 0 and model.loss((x, torch.randn(32, 2))).dim() == 0
    s = model.sample(5, steps=3)
    assert s.shape == (5, 2)
    x0, x1 = model.reflow_pairs(7, rtol=1e-3, atol=1e-3)
    assert x0.shape == x1.shape == (7, 2)
    z, nfe = model.encode(x0, steps=4)
    assert nfe == 4 and z.shape == (7, 2)
    with pytest.raises(ValueError):
        model.loss(torch.randn(4, 3))


def test_cfm_loss_passes_the_exercise_check():
    lesson14.check_cfm_loss(cfm_loss)


def test_cfm_check_rejects_the_reversed_target():
    def wrong(velocity, x0, x1, t):  # the velocity of the path from noise to data, the wrong direction here
        xt = conditional_path(x0, x1, t)
        return (velocity(xt, t) - (x0 - x1)).square().mean()

    with pytest.raises(AssertionError):
        lesson14.check_cfm_loss(wrong)
