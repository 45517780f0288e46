"""Lesson 7: the GAN game's known answers (optimal discriminator, value at the optimum, the two
generator losses' gradients, mode coverage) and a ring GAN that covers all eight modes."""

import math

import pytest
import torch
import torch.nn.functional as F

from course_lib import data, train
from course_lib.checks import lesson07
from course_lib.models import GAN
from course_lib.models.gan import (
    game_value,
    generator_loss,
    js_divergence,
    minimax_generator_loss,
    mode_coverage,
    optimal_discriminator,
)

X = torch.linspace(-10, 10, 4001, dtype=torch.float64)
DX = 20 / 4000


def normal(mean, std):
    return torch.distributions.Normal(mean, std).log_prob(X)


def test_checks_pass_on_the_library():
    lesson07.check_optimal_discriminator(optimal_discriminator)
    lesson07.check_js_divergence(js_divergence)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda lp, lq: lp.exp() / (lp.exp() + lq.exp()),  # right on the body, NaN where both underflow
        lambda lp, lq: torch.sigmoid(lq - lp),  # p and q swapped
        lambda lp, lq: lp.exp() / lq.exp(),  # the density ratio, not D*
    ],
)
def test_optimal_discriminator_check_fails_on_wrong_versions(wrong):
    with pytest.raises(AssertionError):
        lesson07.check_optimal_discriminator(wrong)


@pytest.mark.parametrize(
    "wrong",
    [
        lambda lp, lq, dx: (lp.exp() * (lp - lq)).sum() * dx,  # KL(p || q), not JS
        lambda lp, lq, dx: 0.5 * (lp.exp() * (lp - torch.logaddexp(lp, lq))).sum() * dx,  # m without the 1/2, one half only
        lambda lp, lq, dx: (lp.exp() * (lp - torch.logaddexp(lp, lq) + math.log(2))).sum() * dx,  # one KL only
    ],
)
def test_js_check_fails_on_wrong_versions(wrong):
    with pytest.raises(AssertionError):
        lesson07.check_js_divergence(wrong)


def test_optimal_discriminator_is_p_over_p_plus_q_and_beats_every_other():
    log_p, log_q = normal(1.0, 0.5), normal(-0.5, 1.0)
    d = optimal_discriminator(log_p, log_q)
    torch.testing.assert_close(d, log_p.exp() / (log_p.exp() + log_q.exp()))
    best = game_value(log_p - log_q, log_p, log_q, DX)
    torch.manual_seed(0)
    for _ in range(20):  # any other discriminator has a lower value
        other = log_p - log_q + 0.5 * torch.randn_like(X)
        assert game_value(other, log_p, log_q, DX) < best


def test_a_trained_discriminator_approaches_d_star():
    """A small network trained on samples of two known 1D Gaussians learns p / (p + q)."""
    torch.manual_seed(0)
    p, q = torch.distributions.Normal(1.0, 0.5), torch.distributions.Normal(-0.5, 1.0)
    net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.LeakyReLU(), torch.nn.Linear(32, 32),
                              torch.nn.LeakyReLU(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(800):
        real, fake = p.sample((512, 1)), q.sample((512, 1))
        loss = -F.logsigmoid(net(real)).mean() - F.logsigmoid(-net(fake)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = torch.linspace(-2, 2.5, 200)
    with torch.no_grad():
        got = torch.sigmoid(net(x[:, None]))[:, 0]
    want = optimal_discriminator(p.log_prob(x), q.log_prob(x))
    assert (got - want).abs().max() < 0.08


def test_value_at_d_star_is_minus_log_4_plus_2_js():
    for mean, std in [(0.0, 1.0), (1.0, 0.5), (3.0, 1.5), (8.0, 0.3)]:
        log_p, log_q = normal(0.0, 1.0), normal(mean, std)
        value = game_value(log_p - log_q, log_p, log_q, DX)
        assert value.item() == pytest.approx(-math.log(4) + 2 * js_divergence(log_p, log_q, DX).item(), abs=1e-5)
    same = normal(0.0, 1.0)
    assert game_value(torch.zeros_like(X), same, same, DX).item() == pytest.approx(-math.log(4), abs=1e-6)


def test_generator_gradients_at_d_star_follow_js_and_kl_minus_2js():
    """At D* (held fixed), the minimax loss's gradient is that of 2 JS; the non-saturating
    loss's is that of KL(q || p) - 2 JS (Arjovsky and Bottou, 2017)."""
    log_p = normal(0.0, 1.0)
    for mu0 in (0.5, 2.0, 4.0):
        mu = torch.tensor(mu0, dtype=torch.float64, requires_grad=True)
        log_q = torch.distributions.Normal(mu, 1.0).log_prob(X)
        logit_star = (log_p - log_q).detach()
        q = log_q.exp()
        (g_minimax,) = torch.autograd.grad((q * F.logsigmoid(-logit_star)).sum() * DX, mu, retain_graph=True)
        (g_ns,) = torch.autograd.grad((q * -F.logsigmoid(logit_star)).sum() * DX, mu, retain_graph=True)
        (g_js,) = torch.autograd.grad(js_divergence(log_p, log_q, DX), mu, retain_graph=True)
        (g_kl,) = torch.autograd.grad((q * (log_q - log_p)).sum() * DX, mu)
        assert g_minimax.item() == pytest.approx(2 * g_js.item(), rel=1e-6, abs=1e-10)
        assert g_ns.item() == pytest.approx(g_kl.item() - 2 * g_js.item(), rel=1e-6, abs=1e-10)


def test_non_saturating_gradient_is_larger_where_d_rejects_the_fakes():
    logits = torch.linspace(-8, -3, 11, requires_grad=True)  # D(G(z)) between 3e-4 and 0.05
    (g_ns,) = torch.autograd.grad(generator_loss(logits), logits)
    (g_mm,) = torch.autograd.grad(minimax_generator_loss(logits), logits)
    n = len(logits)
    torch.testing.assert_close(g_ns, -(1 - torch.sigmoid(logits.detach())) / n)
    torch.testing.assert_close(g_mm, -torch.sigmoid(logits.detach()) / n)
    assert (g_ns.abs() > 10 * g_mm.abs()).all()


def test_mode_coverage_counts_what_it_says():
    means = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
    pts = torch.cat([means[0] + 0.1 * torch.randn(70, 2), means[1] + 0.1 * torch.randn(30, 2),
                     torch.tensor([[0.0, 0.0]] * 20), means[2] + torch.tensor([[0.3, 0.3]]).expand(5, 2)])
    report = mode_coverage(pts, means, std=0.2)  # fair share 125 / 4; a quarter of it is 7.8
    assert report.counts.tolist() == [70, 30, 5, 0]  # the origin is 2 from every mode: not high quality
    assert report.covered.tolist() == [True, True, False, False] and report.modes_covered == 2
    assert report.high_quality == pytest.approx(105 / 125)


def test_gan_objective_and_learning_rates():
    with pytest.raises(ValueError, match="generator_objective"):
        GAN(generator_objective="wasserstein")
    g = GAN(generator_lr=5e-3)
    assert g.optimizer_overrides["generator"]["lr"] == 5e-3 and "lr" not in GAN.optimizer_overrides["generator"]
    torch.manual_seed(0)
    mm = GAN(generator_objective="minimax", hidden=16)
    torch.manual_seed(1)
    got = mm.generator_loss(32)
    torch.manual_seed(1)
    torch.testing.assert_close(got, minimax_generator_loss(mm.discriminator(mm.fake(32))))


def test_ring_gan_covers_all_eight_modes(one_thread):
    mix = data.gaussian_mixture()
    means = mix.component_distribution.base_dist.loc.float()
    x = data.toy2d("gaussian_mixture", n=8000, seed=0, verbose=False)
    torch.manual_seed(0)
    gan = GAN()
    train.fit(gan, x, steps=1500, batch_size=256, lr=1e-3, progress=False, verbose=False)
    torch.manual_seed(1)
    report = mode_coverage(gan.sample(4000), means, std=0.2)
    assert report.modes_covered == 8, report.counts
    assert report.high_quality > 0.85, report.high_quality
