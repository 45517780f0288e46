"""Lesson 14's SDEs: known answers for the marginals, the reverse SDE, the probability-flow ODE and its likelihood."""

from __future__ import annotations

import math

import pytest
import torch

from course_lib.checks import lesson14
from course_lib.models.diffusion import DDPM, DDPMSchedule
from course_lib.models.score import geometric_sigmas
from course_lib.models.sde import (
    VESDE,
    VPSDE,
    DiffusionSDE,
    dequantized_nll_bound,
    divergence_exact,
    divergence_hutchinson,
    euler_maruyama,
    gaussian_score,
    ode_log_prob,
    ode_solve,
    probability_flow_drift,
    reverse_sde_sample,
)

SDES = {"VP cosine": lambda: VPSDE("cosine", steps=100), "VP linear": lambda: VPSDE("linear"),
        "VE": lambda: VESDE(0.01, 5.0)}
MEAN = torch.tensor([0.6, -0.4], dtype=torch.float64)
STD = torch.tensor([0.3, 0.5], dtype=torch.float64)


def gaussian_marginal(sde, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std of p_t for data N(MEAN, diag(STD^2))."""
    if isinstance(sde, VPSDE):
        ab = sde.abar(t).item()
        return math.sqrt(ab) * MEAN, (ab * STD**2 + 1 - ab).sqrt()
    return MEAN, (STD**2 + sde.sigma(t).item() ** 2 - sde.sigma_min**2).sqrt()


def log_normal(x, mean, std):
    return (-0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(1)


@pytest.mark.parametrize("name", list(SDES))
def test_marginal_closed_form_matches_euler_maruyama(name):
    """Simulated paths of the forward SDE have the closed-form mean and variance of q(x_t | x_0)."""
    sde = SDES[name]()
    x0 = torch.tensor([1.2, -0.7, 0.0], dtype=torch.float64)
    m = 10_000
    gen = torch.Generator().manual_seed(0)
    x = euler_maruyama(sde, x0.expand(m, 3).clone(), 0.0, 0.5, 250, generator=gen)
    mean, std = sde.marginal(x0[None], torch.tensor(0.5, dtype=torch.float64))
    var = std.squeeze() ** 2
    assert (x.mean(0) - mean[0]).abs().max() < 5 * (var / m).sqrt() + 5e-3, (x.mean(0), mean)
    assert ((x.var(0) - var).abs() / var).max() < 5 * math.sqrt(2 / m) + 1e-2, (x.var(0), var)


def test_cosine_vp_is_the_ddpm_schedule_in_continuous_time():
    """abar(i / T) equals DDPMSchedule's abar_i wherever its cap on beta does not bite, and is close after."""
    for steps in (20, 100, 1000):
        sde = VPSDE("cosine", steps=steps)
        grid = sde.abar(torch.arange(1, steps + 1, dtype=torch.float64) / steps)
        ddpm = DDPMSchedule(steps).double()
        capped = ddpm.betas >= 0.5 - 1e-12
        first_capped = int(capped.nonzero()[0]) if capped.any() else steps
        assert first_capped >= int(sde.t_cap * steps) - 1
        torch.testing.assert_close(grid[:first_capped], ddpm.abar[:first_capped].to(torch.float64), rtol=1e-5, atol=1e-7)
        assert ((grid - ddpm.abar).abs() / ddpm.abar).max() < 0.02
        # beta(t) = -d log abar / dt
        t = torch.tensor([0.1, 0.5, 0.9, 0.99], dtype=torch.float64)
        h = 1e-6
        fd = -(sde.log_abar(t + h) - sde.log_abar(t - h)) / (2 * h)
        torch.testing.assert_close(sde.beta(t), fd, rtol=1e-4, atol=1e-4)


def test_linear_vp_beta_is_minus_the_derivative_of_log_abar():
    sde = VPSDE("linear")
    t = torch.linspace(0.05, 0.95, 7, dtype=torch.float64)
    h = 1e-6
    torch.testing.assert_close(sde.beta(t), -(sde.log_abar(t + h) - sde.log_abar(t - h)) / (2 * h), rtol=1e-6, atol=1e-6)


def test_ve_sde_on_a_grid_is_the_ncsn_ladder():
    sde = VESDE(0.04, 5.0)
    levels = 10
    t = torch.linspace(1, 0, levels, dtype=torch.float64)
    torch.testing.assert_close(sde.sigma(t), torch.tensor(geometric_sigmas(5.0, 0.04, levels), dtype=torch.float64))
    # g^2 = d sigma^2 / dt
    h = 1e-6
    tt = torch.tensor(0.3, dtype=torch.float64)
    assert math.isclose(sde.g(tt).item() ** 2, ((sde.sigma(tt + h) ** 2 - sde.sigma(tt - h) ** 2) / (2 * h)).item(), rel_tol=1e-6)


@pytest.mark.parametrize("name", list(SDES))
def test_probability_flow_ode_carries_p1_to_the_gaussian_data(name):
    """For Gaussian data (exact score) the ODE maps p_1 onto the data: for Gaussians the map is the
    affine one, x_0 = mean + std (x_1 - m_1) / s_1, coordinate by coordinate."""
    sde = SDES[name]()
    gen = torch.Generator().manual_seed(1)
    m1, s1 = gaussian_marginal(sde, 1.0)
    x1 = m1 + s1 * torch.randn(200, 2, generator=gen, dtype=torch.float64)
    score = gaussian_score(sde, MEAN, STD)
    x0, nfe = ode_solve(lambda x, t: probability_flow_drift(sde, score, x, t), x1, 1.0, 0.0, rtol=1e-7, atol=1e-7)
    assert nfe > 10
    torch.testing.assert_close(x0, MEAN + STD * (x1 - m1) / s1, rtol=0, atol=1e-4)


def test_vp_probability_flow_ode_from_the_prior_reaches_the_data():
    """From the prior N(0, I) instead of p_1 (abar(1) is tiny): the data's mean and std, within sampling error."""
    sde = VPSDE("cosine", steps=100)
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(4000, 2, generator=gen, dtype=torch.float64)
    score = gaussian_score(sde, MEAN, STD)
    x0, _ = ode_solve(lambda x, t: probability_flow_drift(sde, score, x, t), z, 1.0, 0.0, rtol=1e-5, atol=1e-5)
    assert ((x0.mean(0) - MEAN).abs() < 5 * STD / math.sqrt(4000) + 0.01).all(), x0.mean(0)
    assert ((x0.std(0) - STD).abs() / STD < 5 / math.sqrt(2 * 4000) + 0.01).all(), x0.std(0)


@pytest.mark.parametrize("name", list(SDES))
def test_ode_log_likelihood_is_the_gaussian_log_density(name):
    """log p_0(x) through the ODE (exact divergence) equals the closed-form Gaussian log-density."""
    sde = SDES[name]()
    score = gaussian_score(sde, MEAN, STD)
    m1, s1 = gaussian_marginal(sde, 1.0)
    x = MEAN + STD * torch.randn(50, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    logp, z, _ = ode_log_prob(lambda y, t: probability_flow_drift(sde, score, y, t), x, lambda z: log_normal(z, m1, s1),
                              0.0, 1.0, divergence="exact", rtol=1e-7, atol=1e-7)
    torch.testing.assert_close(logp, log_normal(x, MEAN, STD), rtol=0, atol=2e-4)
    # the latent is the point's image under the Gaussian-to-Gaussian map
    torch.testing.assert_close(z, m1 + s1 * (x - MEAN) / STD, rtol=0, atol=2e-4)


def test_ode_log_likelihood_with_hutchinson_is_unbiased():
    """Rotated Gaussian data (a full covariance, so the estimate is random): averaged over many probes,
    Hutchinson's estimate through the ODE gives the exact log-density; for a diagonal Jacobian the
    Rademacher probe is exact."""
    sde = VPSDE("cosine", steps=100)
    angle = 0.6
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    base = gaussian_score(sde, MEAN, STD)
    score = lambda x, t: base(x @ rot, t) @ rot.T            # data R y, y ~ N(MEAN, diag(STD^2))
    m1, s1 = gaussian_marginal(sde, 1.0)
    p1 = lambda z: log_normal(z @ rot, m1, s1)
    drift = lambda y, t: probability_flow_drift(sde, score, y, t)
    x = (MEAN + STD * torch.randn(4, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)) @ rot.T
    exact = log_normal(x @ rot, MEAN, STD)
    copies = 2000
    logp, _, _ = ode_log_prob(drift, x.repeat(copies, 1), p1, 0.0, 1.0, divergence="hutchinson", rtol=1e-6,
                              atol=1e-6, generator=torch.Generator().manual_seed(5))
    per_point = logp.view(copies, 4)
    se = per_point.std(0) / math.sqrt(copies)
    assert (per_point.std(0) > 1e-3).all()                   # a random estimate, not the exact value
    assert ((per_point.mean(0) - exact).abs() < 4 * se + 1e-3).all(), (per_point.mean(0), exact, se)
    logp_diag, _, _ = ode_log_prob(lambda y, t: probability_flow_drift(sde, base, y, t), x @ rot,
                                   lambda z: log_normal(z, m1, s1), 0.0, 1.0, divergence="hutchinson",
                                   rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logp_diag, exact, rtol=0, atol=1e-3)


def test_hutchinson_is_unbiased_for_the_divergence():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 32), torch.nn.Tanh(), torch.nn.Linear(32, 5)).double()
    field = lambda x, t: net(x) * (1 + t)
    x = torch.randn(1, 5, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    _, exact = divergence_exact(field, x, t)
    jac = torch.autograd.functional.jacobian(lambda y: field(y, t), x)[0, :, 0, :]
    torch.testing.assert_close(exact[0], torch.trace(jac))
    m = 20_000
    gen = torch.Generator().manual_seed(1)
    for probe in ("rademacher", "gaussian"):
        v = torch.randn(m, 5, generator=gen, dtype=torch.float64)
        if probe == "rademacher":
            v = v.sign()
        _, est = divergence_hutchinson(field, x.expand(m, 5), t, v)
        assert abs(est.mean() - exact[0]) < 4 * est.std() / math.sqrt(m), (probe, est.mean(), exact)


@pytest.mark.parametrize("name", list(SDES))
def test_reverse_sde_with_the_exact_score_recovers_the_data(name):
    sde = SDES[name]()
    gen = torch.Generator().manual_seed(6)
    m1, s1 = gaussian_marginal(sde, 1.0)
    x1 = m1 + s1 * torch.randn(8000, 2, generator=gen, dtype=torch.float64)
    x0 = reverse_sde_sample(sde, gaussian_score(sde, MEAN, STD), x1, steps=200, t_start=1.0, t_end=0.0, generator=gen)
    assert (x0.mean(0) - MEAN).abs().max() < 0.03, x0.mean(0)
    assert ((x0.std(0) - STD).abs() / STD).max() < 0.04, x0.std(0)


def test_ode_solver_never_calls_the_field_outside_the_interval():
    """torchdiffeq's adaptive solvers step past the end by default; ode_solve must land on it."""
    def field(x, t):
        assert 0.1 - 1e-6 <= float(t) <= 1.0 + 1e-6, float(t)
        return -3 * x

    x = torch.ones(3, 2)
    out, _ = ode_solve(field, x, 1.0, 0.1, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out, x * math.exp(3 * 0.9), rtol=1e-2, atol=0)
    ode_log_prob(field, x, lambda z: torch.zeros(len(z)), 0.1, 1.0, divergence="exact", rtol=1e-3, atol=1e-3)


def test_dequantized_bound_lies_above_the_exact_discrete_nll():
    """For a Gaussian density the mass of each bin is known; the dequantised bound is above -log P on average."""
    torch.manual_seed(0)
    w, mean, std = 0.25, torch.tensor([0.1, -0.2, 0.3]), torch.tensor([0.4, 0.2, 0.6])
    normal = torch.distributions.Normal(mean.double(), std.double())
    y = torch.tensor([[0.0, -0.25, 0.5], [0.25, 0.0, 0.0]], dtype=torch.float64)
    exact = -torch.log(normal.cdf(y + w / 2) - normal.cdf(y - w / 2)).sum(1)
    draws = torch.stack([dequantized_nll_bound(lambda v: normal.log_prob(v).sum(1), y, w)[0] for _ in range(4000)])
    mean_bound, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    assert (mean_bound > exact - 3 * se).all() and (mean_bound - exact < 0.2).all(), (mean_bound, exact)
    # and a density uniform on each bin makes it exact: -log P = -D log(w * 1/w) = 0 ... with p = 1/w^D on the bin
    flat = dequantized_nll_bound(lambda v: torch.full((len(v),), -3 * math.log(w), dtype=v.dtype), y, w)[0]
    torch.testing.assert_close(flat, torch.zeros(2, dtype=torch.float64))


def test_probability_flow_drift_passes_the_exercise_check():
    lesson14.check_probability_flow_drift(probability_flow_drift)


def test_drift_check_rejects_the_reverse_sde_drift():
    def wrong(sde, score_fn, x, t):  # the reverse SDE's drift, f - g^2 s: twice the score term
        return sde.drift(x, t) - sde.g(t) ** 2 * score_fn(x, t)

    with pytest.raises(AssertionError):
        lesson14.check_probability_flow_drift(wrong)


def _tiny_ddpm(steps=20, kind="cosine", perturb=0.01):
    """A small untrained DDPM on 4x4 images; its zero-initialised output layer made random (eps != 0)
    with ``perturb`` > 0, or left at zero (eps = 0, so the score is 0 and the ODE is linear)."""
    torch.manual_seed(0)
    model = DDPM.for_images((1, 4, 4), steps=steps, kind=kind, channels=(8, 16)).eval()
    if perturb:
        torch.nn.init.normal_(model.eps_model.out[-1].weight, std=perturb)
    return model


def test_diffusion_sde_wraps_a_cosine_ddpm():
    model = DiffusionSDE(_tiny_ddpm())
    torch.manual_seed(1)
    levels, nfe = model.sample_ode(6, rtol=1e-3, atol=1e-3)
    assert levels.shape == (6, 1, 4, 4) and levels.dtype == torch.int64 and nfe > 0
    assert 0 <= levels.min() and levels.max() <= 16
    levels, nfe = model.sample_sde(6, steps=10)
    assert levels.shape == (6, 1, 4, 4) and nfe == 10
    # the ODE is invertible: encode then decode returns the point (this untrained field shrinks x about
    # 60-fold on the way to t = 1, so decoding amplifies the solver's error as much)
    x = torch.rand(4, 1, 4, 4) * 2 - 1
    z, _ = model.encode(x, rtol=1e-5, atol=1e-5)
    back, _ = model.decode(z, rtol=1e-5, atol=1e-5)
    assert (back - x).abs().max() < 0.05
    # the network is called at index t T - 1: step i of the DDPM at t = i / T
    t = torch.tensor(0.5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model.eps(x, t), model.ddpm.eps_model(x, torch.full((4,), 9.0)))
        torch.testing.assert_close(model.score(x, t), -model.eps(x, t) / (1 - model.sde.abar(t)).sqrt().float())
    data = torch.randint(0, 17, (3, 1, 4, 4))
    bound, nfe = model.nll_bound(data, rtol=1e-3, atol=1e-3, generator=torch.Generator().manual_seed(0))
    assert bound.shape == (3,) and torch.isfinite(bound).all() and nfe > 0
    assert model.nelbo(data).shape == (3,)


def test_diffusion_sde_likelihood_of_a_zero_noise_network_is_the_linear_flow():
    """With eps = 0 the score is 0 and the ODE is dx/dt = -1/2 beta(t) x: x(1) = x sqrt(abar(1) / abar(t_min)),
    and log p(x) = log N(x(1); 0, I) + D log sqrt(abar(1) / abar(t_min)), exactly (both divergences)."""
    model = DiffusionSDE(_tiny_ddpm(perturb=0.0))
    x = torch.rand(3, 1, 4, 4) * 2 - 1
    shrink = math.sqrt((model.sde.abar(1.0) / model.sde.abar(model.t_min)).item())
    z = x * shrink
    want = -0.5 * z.flatten(1).square().sum(1) - 8 * math.log(2 * math.pi) + 16 * math.log(shrink)
    for divergence in ("exact", "hutchinson"):
        got, _ = model.log_prob_nfe(x, divergence=divergence, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(got, want, rtol=0, atol=0.05)
    torch.testing.assert_close(model.log_prob(x), want, rtol=0, atol=0.05)  # log_prob: the exact divergence


def test_diffusion_sde_refuses_a_linear_schedule():
    with pytest.raises(ValueError, match="cosine"):
        DiffusionSDE(_tiny_ddpm(steps=50, kind="linear"))
