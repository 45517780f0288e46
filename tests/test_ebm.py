"""Known-answer tests of course_lib.models.ebm (lesson 10): samplers, the likelihood gradient, training."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib import train
from course_lib.checks import lesson10
from course_lib.models import ebm
from course_lib.models.ebm import EBM

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SIGMA = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)  # correlation 0.8
P = torch.linalg.inv(SIGMA)


def gauss_energy(x):
    d = x - MU.to(x.dtype)
    return 0.5 * ((d @ P.to(x.dtype)) * d).sum(-1)


def test_langevin_reproduces_a_correlated_gaussian():
    """ULA on N(mu, Sigma): mean and covariance within 0.05 of the target at step 0.01 (its bias, about
    eps P / 2 relative, is below that), and within 3 standard errors of ULA's exact stationary law."""
    torch.manual_seed(0)
    step, chains = 0.01, 4000
    x = torch.randn(chains, 2, dtype=torch.float64) * 2
    x = ebm.langevin(gauss_energy, x, steps=1500, step_size=step)
    mean, cov = x.mean(0), torch.cov(x.T)
    assert (mean - MU).abs().max() < 0.05, mean
    assert (cov - SIGMA).abs().max() < 0.05, cov
    # ULA's stationary covariance for a Gaussian target, solved exactly: (P - eps P^2 / 2)^{-1}
    ula_cov = torch.linalg.inv(P - step * P @ P / 2)
    se = math.sqrt(2 / chains) * ula_cov.diagonal().max().item()  # standard error of a variance estimate
    assert (cov - ula_cov).abs().max() < 3 * se, (cov, ula_cov)


@pytest.mark.parametrize("step", [0.1, 0.5])
def test_ula_is_biased_at_a_finite_step_exactly_as_derived(step):
    """On N(0, 1) the chain x' = (1 - eps) x + sqrt(2 eps) xi has stationary variance 1 / (1 - eps / 2)."""
    torch.manual_seed(1)
    x = ebm.langevin(lambda z: 0.5 * (z**2).sum(-1), torch.zeros(20000, 1, dtype=torch.float64), steps=300, step_size=step)
    want = 1 / (1 - step / 2)
    assert abs(x.var().item() - want) < 4 * want * math.sqrt(2 / 20000), (x.var().item(), want)


def test_mala_passes_the_lesson_check():
    lesson10.check_mala_step(ebm.mala_step)


def test_mala_removes_the_bias_on_the_correlated_gaussian():
    torch.manual_seed(2)
    x = torch.randn(3000, 2, dtype=torch.float64) @ torch.linalg.cholesky(SIGMA).T + MU
    for _ in range(200):
        x, _ = ebm.mala_step(gauss_energy, x, 0.4)
    assert (torch.cov(x.T) - SIGMA).abs().max() < 0.08
    assert (x.mean(0) - MU).abs().max() < 0.06


def test_log_likelihood_gradient_is_data_term_minus_model_expectation():
    """E_theta(x) = theta1 x + theta2 x^2: a Gaussian with Z in closed form. The gradient of the exact
    log p_theta(x) equals -grad E(x) + E_p[grad E], with E_p by closed form and by quadrature."""
    theta = torch.tensor([0.6, 0.8], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([-1.3, 0.2, 2.0], dtype=torch.float64)

    def energy_of(t):
        return lambda z: t[0] * z.reshape(-1) + t[1] * z.reshape(-1) ** 2

    # p_theta = N(m, s2) with s2 = 1 / (2 theta2), m = -theta1 / (2 theta2); log Z = log sqrt(2 pi s2) + m^2 / (2 s2)
    s2, m = 1 / (2 * theta[1]), -theta[0] / (2 * theta[1])
    log_z = 0.5 * torch.log(2 * math.pi * s2) + m**2 / (2 * s2)
    log_p = -energy_of(theta)(x) - log_z
    grad_exact = torch.stack([torch.autograd.grad(v, theta, retain_graph=True)[0] for v in log_p])
    moments = torch.stack([m, s2 + m**2]).detach()  # E_p[x], E_p[x^2] = E_p[grad_theta E]
    grad_identity = -torch.stack([x, x**2], 1) + moments
    torch.testing.assert_close(grad_exact, grad_identity)
    # the same expectation from the quadrature helper
    pts, logp_grid, log_z_grid = ebm.grid_log_density(energy_of(theta.detach()), -12, 12, 20001, dtype=torch.float64)
    w = logp_grid.exp() * (24 / 20001)
    quad = torch.stack([(w * pts[:, 0]).sum(), (w * pts[:, 0] ** 2).sum()])
    torch.testing.assert_close(quad, moments, atol=1e-7, rtol=1e-7)
    torch.testing.assert_close(log_z_grid, log_z.detach(), atol=1e-7, rtol=1e-7)


def test_cd_loss_gradient_is_the_difference_of_mean_energy_gradients():
    torch.manual_seed(0)
    model = EBM.mlp((2,), hidden=16, layers=2)
    pos, neg = torch.randn(64, 2), torch.randn(64, 2) * 2
    grads = torch.autograd.grad(ebm.cd_loss(model.energy(pos), model.energy(neg)), list(model.parameters()))
    g_pos = torch.autograd.grad(model.energy(pos).mean(), list(model.parameters()))
    g_neg = torch.autograd.grad(model.energy(neg).mean(), list(model.parameters()))
    for g, a, b in zip(grads, g_pos, g_neg):
        torch.testing.assert_close(g, a - b)


@pytest.mark.parametrize("dim", [1, 2])
def test_quadrature_normaliser_of_a_gaussian(dim):
    sigma = 0.7
    _, log_p, log_z = ebm.grid_log_density(lambda z: (z**2).sum(-1) / (2 * sigma**2), -8, 8, 1601 if dim == 1 else 801,
                                           dim=dim, dtype=torch.float64)
    assert abs(log_z.item() - dim * 0.5 * math.log(2 * math.pi * sigma**2)) < 1e-6
    cell = (16 / (1601 if dim == 1 else 801)) ** dim
    assert abs(log_p.exp().sum().item() * cell - 1) < 1e-9


def test_a_trained_1d_ebm_matches_the_data_density():
    """CD with a replay buffer on a two-component 1D mixture: after 600 steps the learned density,
    normalised by quadrature, is within total variation 0.1 of the data's."""
    torch.manual_seed(0)
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(torch.tensor([0.5, 0.5])),
        torch.distributions.Normal(torch.tensor([-1.0, 1.0]), torch.tensor([0.4, 0.4])))
    x = mix.sample((4000, 1))
    model = EBM.mlp((1,), hidden=64, layers=2, box=(-3.0, 3.0), chain_steps=20, step_size=0.01,
                    penalty=0.01, buffer_size=4000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny layers: a second thread only waits (and fights other tests for the CPU)
    try:
        train.fit(model, x, steps=600, batch_size=256, lr=2e-3, device="cpu", verbose=False, progress=False)
    finally:
        torch.set_num_threads(threads)
    pts, log_p, _ = ebm.grid_log_density(model.energy, -3, 3, 600)
    true = mix.log_prob(pts.float()).double().reshape(-1).exp()
    tv = 0.5 * (log_p.exp() - true).abs().sum().item() * (6 / 600)
    assert tv < 0.1, tv


def test_interface_and_errors():
    torch.manual_seed(0)
    model = EBM.mlp((1, 3, 3), hidden=8, layers=2, box=(0.0, 1.0), clamp=True, buffer_size=50, chain_steps=2)
    batch = torch.rand(10, 1, 3, 3)
    loss = model.loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    out = model.sample(7, steps=3)
    assert out.shape == (7, 1, 3, 3) and out.min() >= 0 and out.max() <= 1
    assert all(p.grad is None for p in model.parameters())  # sampling makes no parameter gradients
    assert model.from_buffer(5).shape == (5, 1, 3, 3)
    assert "replay" in model.state_dict()  # the chains are saved with the checkpoint
    with pytest.raises(NotImplementedError, match="no exact log-likelihood"):
        model.log_prob(batch)
    with pytest.raises(ValueError, match="shape"):
        model.energy(torch.rand(4, 9))
    with pytest.raises(ValueError, match="step_size"):
        ebm.langevin(model.energy, batch, steps=1, step_size=0.0)
    with pytest.raises(ValueError, match="reinit"):
        EBM.mlp((2,), reinit=1.5)
    with pytest.raises(ValueError, match="buffer holds"):
        model.from_buffer(51)
    with pytest.raises(ValueError, match="dim 1 or 2"):
        ebm.grid_log_density(model.energy, 0, 1, 10, dim=3)
