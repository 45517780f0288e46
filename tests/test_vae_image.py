"""The image VAE and the ELBO's pieces, against known answers.

Probabilistic PCA (x = W z + b + sigma * noise) has an exact log p(x) and posterior, so the
bounds are checked against the truth: the ELBO lies below log p(x) and equals it at the true
posterior; the importance-weighted bound rises with K towards it. The closed-form Gaussian
KL is checked against Monte Carlo and torch.distributions; the decoders' likelihoods sum to 1
over every possible image.
"""

import itertools
import math

import pytest
import torch

from course_lib import train
from course_lib.checks import lesson05
from course_lib.models import vae_image as V


@pytest.fixture
def ppca():
    model = V.LinearGaussian(data_dim=5, latent_dim=3, sigma=0.5, seed=0)
    x = model.sample(8, generator=torch.Generator().manual_seed(1))
    return model, x


def test_elbo_is_below_log_px_and_equals_it_at_the_true_posterior(ppca):
    model, x = ppca
    log_px = model.log_prob(x)
    with torch.no_grad():
        gap = log_px - model.elbo_exact(x)
    assert (gap > 1e-3).all()  # a wrong encoder: strictly below
    model.set_exact_posterior()
    mean, var = model.posterior(x)
    enc_mu, enc_log_var = model.encode(x)
    torch.testing.assert_close(enc_mu, mean)
    torch.testing.assert_close(enc_log_var.exp(), var.expand_as(enc_mu))
    with torch.no_grad():
        torch.testing.assert_close(model.elbo_exact(x), log_px)
        torch.manual_seed(0)
        torch.testing.assert_close(V.elbo_mc(model, x), log_px)  # every single draw, exactly
        # the closed-form-KL estimator is right on average but not draw by draw
        draws = torch.stack([V.elbo(model, x) for _ in range(4000)])
    assert draws.std(0).min() > 0.01
    se = draws.std(0) / math.sqrt(len(draws))
    assert ((draws.mean(0) - log_px).abs() < 5 * se).all()


def test_single_sample_elbos_average_to_the_exact_elbo(ppca):
    model, x = ppca
    torch.manual_seed(0)
    with torch.no_grad():
        exact = model.elbo_exact(x)
        for fn in (V.elbo, V.elbo_mc):
            draws = torch.stack([fn(model, x) for _ in range(4000)])
            se = draws.std(0) / math.sqrt(len(draws))
            assert ((draws.mean(0) - exact).abs() < 5 * se).all(), fn.__name__


class _FixedEncoder:
    """The linear-Gaussian model with its encoder's outputs replaced by leaves, one row per draw.

    x is one example repeated M times; the gradient of the summed estimates with respect to the
    leaves gives M single-draw gradients with respect to the encoder's mean and log-variance
    (which, for the linear-Gaussian encoder, are its parameters enc_c and enc_log_var).
    """

    def __init__(self, model, x, draws):
        self.model, self.latent_dim = model, model.latent_dim
        mu, log_var = model.encode(x)
        self.mu = mu.detach().expand(draws, -1).clone().requires_grad_(True)
        self.log_var = log_var.detach().expand(draws, -1).clone().requires_grad_(True)

    def encode(self, x):
        return self.mu, self.log_var

    def log_px_given_z(self, x, z):
        return self.model.log_px_given_z(x, z)


def _per_draw_gradients(estimator, model, x_one, draws=4000, seed=0):
    torch.manual_seed(seed)
    fixed = _FixedEncoder(model, x_one, draws)
    value = estimator(fixed, x_one.expand(draws, -1))
    g_mu, g_log_var = torch.autograd.grad(value.sum(), (fixed.mu, fixed.log_var))
    return value.detach(), g_mu, g_log_var


def test_gradients_at_the_true_posterior_mc_kl_stl_and_closed_form(ppca):
    """Exercise 1's facts about the gradient: at the posterior the Monte-Carlo-KL estimate is
    constant, but its reparameterised gradient is not (the score term has mean zero, not
    variance zero); with q's parameters detached inside log q (STL) every gradient is zero; on
    this model the Monte-Carlo-KL gradient is *louder* than the closed-form-KL one."""
    model, x = ppca
    model.set_exact_posterior()
    x_one = x[:1]
    log_px = model.log_prob(x_one)
    v_mc, g_mc, gl_mc = _per_draw_gradients(V.elbo_mc, model, x_one)
    v_stl, g_stl, gl_stl = _per_draw_gradients(V.elbo_stl, model, x_one)
    v_cf, g_cf, gl_cf = _per_draw_gradients(V.elbo, model, x_one)
    torch.testing.assert_close(v_mc, log_px.expand_as(v_mc))  # the value: constant
    torch.testing.assert_close(v_stl, v_mc)  # STL changes the gradient, not the value
    assert v_cf.std() > 0.01
    assert g_stl.abs().max() < 1e-10 and gl_stl.abs().max() < 1e-10  # STL: zero for every draw
    assert g_mc.var(0).min() > 0.1 and gl_mc.var(0).min() > 0.01  # MC-KL: random
    for g in (g_mc, gl_mc, g_cf, gl_cf):  # all unbiased for the true gradient, zero at the optimum
        assert (g.mean(0).abs() < 5 * g.std(0) / math.sqrt(len(g)) + 1e-9).all()
    # the gradient with the Monte-Carlo KL is the noisier one here, though its value is not
    assert g_mc.var(0).sum() > 1.1 * g_cf.var(0).sum()
    assert gl_mc.var(0).sum() > 1.1 * gl_cf.var(0).sum()


def test_gaussian_kl_closed_form_against_monte_carlo_and_torch():
    gen = torch.Generator().manual_seed(0)
    mu = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    log_var = 0.5 * torch.randn(4, 3, generator=gen, dtype=torch.float64)
    kl = V.gaussian_kl(mu, log_var)
    q = torch.distributions.Normal(mu, (0.5 * log_var).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(kl, torch.distributions.kl_divergence(q, p).sum(-1))
    torch.manual_seed(0)
    z = V.reparameterise(mu, log_var, samples=200_000)
    log_ratio = V.log_normal(z, mu, log_var) - V.log_standard_normal(z)
    se = log_ratio.std(0) / math.sqrt(len(z))
    assert ((log_ratio.mean(0) - kl).abs() < 5 * se).all()
    assert (kl >= 0).all() and V.gaussian_kl(torch.zeros(3), torch.zeros(3)).item() == 0.0


def test_iwae_bound_rises_with_k_on_average_and_stays_below_log_px(ppca):
    model, x = ppca
    with torch.no_grad():
        model.set_exact_posterior()
        model.enc_log_var.add_(math.log(4.0))  # a poor encoder: four times too wide, shifted
        model.enc_c.add_(0.3)
        log_px = model.log_prob(x)
        torch.manual_seed(0)
        draws = {k: torch.stack([V.iwae_bound(model, x, k) for _ in range(1000)]) for k in (1, 2, 8, 32)}
        means = {k: d.mean(0) for k, d in draws.items()}
        exact = model.elbo_exact(x)
    se = draws[1].std(0) / math.sqrt(1000)
    assert ((means[1] - exact).abs() < 5 * se).all()  # K = 1 is the ELBO
    for a, b in itertools.pairwise((1, 2, 8, 32)):
        assert (means[b] > means[a] - 0.02).all(), (a, b)
    assert (means[32].mean() > means[1].mean() + 0.3)
    assert (means[32] < log_px + 0.02).all()
    with torch.no_grad():
        big = V.iwae_bound_batched(model, x, k=20_000, chunk=1000, batch_size=3)
    assert (big - log_px).abs().max() < 0.05  # K large: the bound closes on log p(x)
    with pytest.raises(ValueError, match="positive int"):
        V.iwae_bound_batched(model, x, k=0)


def assert_sums_to_one(vae, images, draws):
    """p(x | z) summed over every possible image is 1, for several latents z."""
    z = torch.randn(draws, 1, 2).expand(draws, len(images), 2)
    with torch.no_grad():
        total = torch.logsumexp(vae.log_px_given_z(images, z), dim=-1)
    torch.testing.assert_close(total, torch.zeros(draws), atol=1e-5, rtol=0)


def test_categorical_decoder_sums_to_one_over_all_images():
    torch.manual_seed(0)
    vae = V.ImageVAE(image_shape=(1, 1, 2), levels=17, latent_dim=2, hidden=(8,))
    images = torch.cartesian_prod(torch.arange(17), torch.arange(17))  # all 289 images of 2 pixels
    assert_sums_to_one(vae, images, draws=3)


def test_conv_categorical_decoder_sums_to_one_over_all_images():
    torch.manual_seed(0)
    vae = V.ConvImageVAE(image_shape=(1, 2, 2), levels=3, latent_dim=2, channels=4, hidden=8)
    images = torch.tensor(list(itertools.product(range(3), repeat=4)))  # all 81 images of 2x2 pixels, 3 levels
    assert_sums_to_one(vae, images, draws=2)
    x = torch.randint(0, 17, (3, 1, 8, 8))
    assert V.ConvImageVAE(dropout=0.2).elbo(x).shape == (3,)


def test_bernoulli_decoder_sums_to_one_over_all_images():
    torch.manual_seed(0)
    vae = V.ImageVAE(image_shape=(1, 1, 3), levels=2, latent_dim=2, hidden=(8,), likelihood="bernoulli")
    images = torch.tensor(list(itertools.product([0, 1], repeat=3)))
    assert_sums_to_one(vae, images, draws=2)


def test_image_vae_shapes_samples_and_bad_input():
    torch.manual_seed(0)
    vae = V.ImageVAE(latent_dim=4, hidden=(32,))
    x = torch.randint(0, 17, (5, 1, 8, 8))
    assert vae.elbo(x).shape == (5,) and torch.isfinite(vae.loss(x))
    assert vae.iwae_bound(x, k=10, chunk=3).shape == (5,)
    s = vae.sample(7)
    assert s.shape == (7, 1, 8, 8) and s.dtype == torch.long and 0 <= int(s.min()) and int(s.max()) <= 16
    assert vae.decode_mean(torch.zeros(2, 4)).shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="0..16"):
        vae.elbo(x + 17)
    with pytest.raises(ValueError, match="integer levels"):
        vae.elbo(x.float() / 16)
    with pytest.raises(ValueError, match="shape"):
        vae.elbo(torch.zeros(5, 10, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown likelihood"):
        V.ImageVAE(likelihood="gaussian")


def test_image_vae_learns_under_fit():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 8, 8, dtype=torch.long)
    x[:32, :, 2:6, 3:5] = 16  # two kinds of image
    vae = V.ImageVAE(latent_dim=2, hidden=(64,))
    run = train.fit(vae, x, steps=150, batch_size=32, lr=3e-3, progress=False, verbose=False)
    assert run.final(last=10) < 0.3 * run.initial()


def test_check_passes_on_the_library_and_fails_on_wrong_estimators():
    lesson05.check_elbo_estimator(V.elbo_mc)
    with pytest.raises(AssertionError, match="true posterior"):
        lesson05.check_elbo_estimator(V.elbo)  # closed-form KL: right on average, not zero-variance

    def detached(model, x):
        mu, log_var = model.encode(x)
        z = torch.distributions.Normal(mu, (0.5 * log_var).exp()).sample()
        return model.log_px_given_z(x, z) + V.log_standard_normal(z) - V.log_normal(z, mu, log_var)

    with pytest.raises(AssertionError, match="gradient"):
        lesson05.check_elbo_estimator(detached)

    def summed(model, x):
        return V.elbo_mc(model, x).sum()

    with pytest.raises(AssertionError, match="one value per example"):
        lesson05.check_elbo_estimator(summed)
