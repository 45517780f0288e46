"""course_lib.likelihood: units, dequantisation and KL, each against an answer known in closed form."""

import math

import pytest
import torch

from course_lib import data, likelihood, train
from course_lib.likelihood import Gaussian

MVN = torch.distributions.MultivariateNormal


# ----------------------------------------------------------------------------- units


def test_unit_conversions_by_hand():
    assert likelihood.nats_to_bits(math.log(2)) == pytest.approx(1.0)
    assert likelihood.bits_to_nats(1.0) == pytest.approx(0.693147, abs=1e-6)
    # 100 nats for an 8x8 image: 100 / (64 ln 2) = 100 / 44.3614 = 2.25422 bits per pixel
    assert likelihood.bits_per_dim(100.0, 64) == pytest.approx(2.25422, abs=1e-5)
    # a uniform distribution over 17 levels costs exactly log2(17) bits per pixel
    assert likelihood.bits_per_dim(64 * math.log(17), 64) == pytest.approx(math.log2(17))
    with pytest.raises(ValueError, match="positive int"):
        likelihood.bits_per_dim(1.0, 0)


# ----------------------------------------------------------------------------- KL


def _two_gaussians():
    m0, m1 = torch.tensor([0.0, 1.0]), torch.tensor([0.5, -0.5])
    s0 = torch.tensor([[1.0, 0.6], [0.6, 2.0]])
    s1 = torch.tensor([[0.5, -0.2], [-0.2, 1.5]])
    return m0, s0, m1, s1


def test_gaussian_kl_closed_form():
    m0, s0, m1, s1 = _two_gaussians()
    expected = torch.distributions.kl_divergence(MVN(m0.double(), s0.double()), MVN(m1.double(), s1.double()))
    assert likelihood.gaussian_kl(m0, s0, m1, s1).item() == pytest.approx(expected.item(), rel=1e-10)
    assert likelihood.gaussian_kl(m0, s0, m0, s0).item() == pytest.approx(0.0, abs=1e-12)
    # 1D by hand: KL(N(0,1) || N(1, 4)) = ln 2 + (1 + 1) / 8 - 1/2
    one = likelihood.gaussian_kl(torch.zeros(1), torch.eye(1), torch.ones(1), 4 * torch.eye(1))
    assert one.item() == pytest.approx(math.log(2) + 0.25 - 0.5, rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        likelihood.gaussian_kl(m0, s0, m1, torch.eye(3))


@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_monte_carlo_kl_within_its_standard_error(direction):
    m0, s0, m1, s1 = _two_gaussians()
    p, q = MVN(m0.double(), s0.double()), MVN(m1.double(), s1.double())
    if direction == "reverse":
        p, q = q, p
    exact = torch.distributions.kl_divergence(p, q).item()
    torch.manual_seed(0)
    est = likelihood.mc_kl(p, q, n=20_000)
    assert est.n == 20_000 and est.stderr > 0
    # unbiased estimator: the error is a draw from about N(0, stderr^2); 4 standard errors
    # fail by chance with probability 6e-5, and the seed makes the draw fixed anyway
    assert abs(est.value - exact) < 4 * est.stderr, (est, exact)
    # and the standard error is the right size: 20,000 samples give about 1% of the spread
    assert est.stderr < 0.05 * max(exact, 0.1)


def test_monte_carlo_kl_of_a_distribution_to_itself_is_exactly_zero():
    p = data.gaussian_mixture(modes=3)
    est = likelihood.mc_kl(p, p, n=100)
    assert est.value == 0.0 and est.stderr == 0.0


# ----------------------------------------------------------------------------- dequantisation


def test_uniform_dequantize_lands_in_each_cell():
    torch.manual_seed(0)
    x = torch.randint(0, 17, (500, 1, 8, 8))
    y, log_volume = likelihood.uniform_dequantize(x, 17)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert bool((y * 17 >= x).all()) and bool((y * 17 < x + 1).all())
    assert log_volume.shape == (500,)
    assert torch.allclose(log_volume, torch.full((500,), -64 * math.log(17)))
    # the noise is uniform: the fractional parts have mean 1/2 and variance 1/12
    frac = y * 17 - x
    assert frac.mean().item() == pytest.approx(0.5, abs=0.01)
    assert frac.var().item() == pytest.approx(1 / 12, abs=0.005)


def test_uniform_dequantize_bad_input():
    with pytest.raises(TypeError, match="integer"):
        likelihood.uniform_dequantize(torch.rand(4, 2), 17)
    with pytest.raises(ValueError, match=r"0\.\.16"):
        likelihood.uniform_dequantize(torch.tensor([[0, 17]]), 17)
    with pytest.raises(ValueError, match="levels"):
        likelihood.uniform_dequantize(torch.tensor([[0, 1]]), 1)


LEVELS = 5
P_TRUE = torch.tensor([0.1, 0.4, 0.2, 0.25, 0.05], dtype=torch.float64)  # a known discrete distribution


def _gaussian_bound_closed_form(mu: float, sigma: float) -> torch.Tensor:
    """E_u[-log N((x + u)/L; mu, sigma^2)] - log vol for x = 0..L-1, exactly.

    With a = x/L - mu: E[(a + u/L)^2] = a^2 + a/L + 1/(3 L^2), and -log vol = ln L.
    """
    a = torch.arange(LEVELS, dtype=torch.float64) / LEVELS - mu
    second = a**2 + a / LEVELS + 1 / (3 * LEVELS**2)
    return 0.5 * math.log(2 * math.pi * sigma**2) + second / (2 * sigma**2) + math.log(LEVELS)


def test_dequantisation_bound_against_exact_discrete_probabilities():
    mu, sigma = 0.45, 0.3
    bound = _gaussian_bound_closed_form(mu, sigma)
    normal = torch.distributions.Normal(torch.tensor(mu, dtype=torch.float64), sigma)
    edges = torch.arange(LEVELS + 1, dtype=torch.float64) / LEVELS
    p_cell = normal.cdf(edges[1:]) - normal.cdf(edges[:-1])  # the mass the density puts on each cell
    # Jensen: the bound is above the exact -log P(x) for every x, with a positive gap
    assert bool((bound > -p_cell.log()).all())
    # Cross-entropy >= entropy, and the cells hold at most mass 1: E_x[bound] >= H(P)
    entropy = -(P_TRUE * P_TRUE.log()).sum()
    assert p_cell.sum() <= 1.0
    assert (P_TRUE * bound).sum() >= (P_TRUE * -p_cell.log()).sum() >= entropy
    # The library's dequantisation, averaged over many draws, reproduces the closed form
    torch.manual_seed(0)
    x = torch.arange(LEVELS).repeat_interleave(20_000)[:, None]
    y, log_volume = likelihood.uniform_dequantize(x, LEVELS)
    values = (-(normal.log_prob(y.double()[:, 0]) + log_volume.double())).view(LEVELS, -1)
    stderr = values.std(1) / math.sqrt(values.shape[1])
    assert bool(((values.mean(1) - bound).abs() < 4 * stderr).all())


def test_dequantisation_bound_is_tight_for_a_density_constant_on_cells():
    # p(y) = L * P(floor(L y)): constant on each cell, so Jensen holds with equality and the
    # expected bound is exactly the entropy of P
    torch.manual_seed(0)
    x = torch.multinomial(P_TRUE, 10_000, replacement=True)[:, None]
    y, log_volume = likelihood.uniform_dequantize(x, LEVELS)
    cell = (y[:, 0] * LEVELS).floor().long()
    log_density = math.log(LEVELS) + P_TRUE.log()[cell]
    bound = -(log_density + log_volume.double())
    assert torch.allclose(bound, -P_TRUE.log()[x[:, 0]], atol=1e-6)  # equal point by point


# ----------------------------------------------------------------------------- fitting a Gaussian


def _moments(x):
    x = x.double()
    mean = x.mean(0)
    return mean, (x - mean).T @ (x - mean) / len(x)


def test_forward_kl_fit_is_the_sample_moments_and_gradient_descent_finds_it():
    torch.manual_seed(0)
    target = data.gaussian_mixture(modes=3, radius=2.0, std=0.3)
    x = target.sample((4000,)).float()
    fitted = likelihood.fit_forward_kl(x)
    mean, cov = _moments(x)
    assert torch.allclose(fitted.mean.double(), mean, atol=1e-5)
    assert torch.allclose(fitted.covariance.double(), cov, atol=1e-4)
    # the population answer: mean 0, covariance (std^2 + radius^2 / 2) I for 3 modes on a circle
    assert torch.allclose(mean, torch.zeros(2, dtype=torch.float64), atol=0.1)
    assert torch.allclose(cov, (0.09 + 2.0) * torch.eye(2, dtype=torch.float64), atol=0.15)
    # maximum likelihood by gradient descent lands on the same Gaussian
    torch.manual_seed(0)
    model = Gaussian(2, mean=torch.tensor([1.0, -1.0]), scale=0.5)
    train.fit(model, x, steps=600, batch_size=4000, lr=0.05, lr_schedule="cosine", progress=False, verbose=False)
    assert torch.allclose(model.mean.double(), mean, atol=0.01)
    assert torch.allclose(model.covariance.double(), cov, atol=0.02)
    assert model.loss(x).item() == pytest.approx(fitted.loss(x).item(), abs=1e-3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_reverse_kl_fit_lands_on_one_mode(seed):
    modes, std = 3, 0.3
    target = data.gaussian_mixture(modes=modes, radius=2.0, std=std)
    centres = target.component_distribution.base_dist.loc.float()
    torch.manual_seed(100 + seed)
    model = Gaussian(2, mean=0.5 * torch.randn(2), scale=0.5)  # a random start near the centre
    result = likelihood.fit_reverse_kl(model, lambda z: target.log_prob(z.double()).float(), steps=800, n=256, lr=0.02, seed=seed)
    nearest = (centres - model.mean.detach()).norm(dim=1)
    assert nearest.min() < 0.1  # on a mode's centre
    cov = model.covariance.detach()
    assert torch.allclose(cov, std**2 * torch.eye(2), atol=0.3 * std**2)  # with that mode's shape
    # one mode of an equal mixture of J far-apart modes: KL(q || p) = ln J (to sampling error)
    assert sum(result.history[-100:]) / 100 == pytest.approx(math.log(modes), abs=0.03)


def test_gaussian_model_interface_and_errors():
    model = Gaussian(2)
    assert model.sample(5).shape == (5, 2)
    assert model.log_prob(torch.zeros(3, 2)).shape == (3,)
    assert model.entropy().item() == pytest.approx(MVN(torch.zeros(2), torch.eye(2)).entropy().item())
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        model.loss(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="positive int"):
        model.sample(0)
    with pytest.raises(ValueError, match="scale"):
        Gaussian(2, scale=0.0)
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        likelihood.fit_forward_kl(torch.zeros(5))


# ----------------------------------------------------------------------------- lesson 3's helpers


def test_the_gaussian_kl_exercise_check_passes_on_the_library():
    from course_lib.checks import lesson03

    lesson03.check_gaussian_kl(likelihood.gaussian_kl)


def test_the_gaussian_kl_exercise_check_catches_common_mistakes():
    from course_lib.checks import lesson03

    def swapped(m0, s0, m1, s1):
        return likelihood.gaussian_kl(m1, s1, m0, s0)

    def no_half(m0, s0, m1, s1):
        return 2 * likelihood.gaussian_kl(m0, s0, m1, s1)

    def wrong_trace(m0, s0, m1, s1):  # tr(S0^-1 S1) instead of tr(S1^-1 S0)
        m0, s0, m1, s1 = (t.double() for t in (m0, s0, m1, s1))
        d = len(m0)
        diff = m1 - m0
        return 0.5 * (torch.linalg.solve(s0, s1).trace() + diff @ torch.linalg.solve(s1, diff) - d
                      + torch.logdet(s1) - torch.logdet(s0))

    with pytest.raises(AssertionError, match="other direction"):
        lesson03.check_gaussian_kl(swapped)
    with pytest.raises(AssertionError, match="twice"):
        lesson03.check_gaussian_kl(no_half)
    with pytest.raises(AssertionError, match="expected"):
        lesson03.check_gaussian_kl(wrong_trace)
    with pytest.raises(AssertionError, match="one number"):
        lesson03.check_gaussian_kl(lambda m0, s0, m1, s1: torch.zeros(2))


def test_log_normal_cell_probability_matches_the_cdf_and_survives_the_far_tail():
    mean, std = torch.tensor(0.3, dtype=torch.float64), torch.tensor(0.2, dtype=torch.float64)
    lo = torch.linspace(-1.0, 1.0, 21, dtype=torch.float64)
    hi = lo + 0.1
    normal = torch.distributions.Normal(mean, std)
    direct = (normal.cdf(hi) - normal.cdf(lo)).log()
    got = likelihood.log_normal_cell_probability(lo, hi, mean, std)
    assert torch.allclose(got, direct, rtol=1e-9, atol=1e-12)
    # 20 to 21 standard deviations above the mean: Phi rounds to 1 on both edges, the log does not
    far = likelihood.log_normal_cell_probability(mean + 20 * std, mean + 21 * std, mean, std)
    tail = torch.special.log_ndtr(torch.tensor(-20.0, dtype=torch.float64))  # log P(Z > 20)
    assert torch.isfinite(far) and far.item() == pytest.approx(tail.item(), abs=1e-6)
    below = likelihood.log_normal_cell_probability(mean - 21 * std, mean - 20 * std, mean, std)
    assert below.item() == pytest.approx(far.item(), rel=1e-12)  # the mirror image


def test_gaussian_expectation_by_quadrature():
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64)
    a = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=torch.float64)
    cov = a @ a.T
    # second moments exactly, and E[log N(z; mean, cov)] = -H
    assert likelihood.gaussian_expectation(lambda z: z[:, 0] * z[:, 1], mean, a).item() == pytest.approx(
        (cov[0, 1] + mean[0] * mean[1]).item(), rel=1e-12)
    mvn = MVN(mean, scale_tril=a)
    assert likelihood.gaussian_expectation(mvn.log_prob, mean, a).item() == pytest.approx(-mvn.entropy().item(), rel=1e-12)
    # a non-polynomial: E[exp(z_0)] = exp(mean + var / 2)
    assert likelihood.gaussian_expectation(lambda z: z[:, 0].exp(), mean, a).item() == pytest.approx(
        math.exp(0.5 + 0.5), rel=1e-10)
    # in 1D too, and differentiable: d/dmu E[z^2] = 2 mu
    mu = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    e = likelihood.gaussian_expectation(lambda z: z[:, 0] ** 2, mu, torch.eye(1, dtype=torch.float64) * 0.5)
    e.backward()
    assert e.item() == pytest.approx(0.49 + 0.25) and mu.grad.item() == pytest.approx(1.4)


def test_monte_carlo_kl_standard_error_is_unreliable_with_heavy_tails():
    # KL(t_3 || N(0, 1)) is finite, but log p - log q ~ x^2 / 2 has infinite variance under t_3:
    # the estimate is usually below the truth by more than the standard error it reports
    p = torch.distributions.StudentT(torch.tensor(3.0, dtype=torch.float64))
    q = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    exact = (-p.entropy() + 0.5 * math.log(2 * math.pi) + 0.5 * 3.0).item()  # E[x^2] = 3
    torch.manual_seed(0)
    estimates = [likelihood.mc_kl(p, q, n=1000) for _ in range(200)]
    misses = sum(abs(e.value - exact) > 2 * e.stderr for e in estimates)
    assert misses > 0.15 * len(estimates)  # an honest 2-standard-error interval misses about 5%
    # a light-tailed pair for contrast: the interval is honest
    q_wide = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 2.0)
    p_n = torch.distributions.Normal(torch.tensor(0.0, dtype=torch.float64), 1.0)
    exact_n = torch.distributions.kl_divergence(p_n, q_wide).item()
    estimates = [likelihood.mc_kl(p_n, q_wide, n=1000) for _ in range(200)]
    assert sum(abs(e.value - exact_n) > 2 * e.stderr for e in estimates) < 0.1 * len(estimates)
