"""Lesson 13: known answers for DDIM, classifier-free guidance, the conditional U-Net and latent diffusion."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from course_lib.checks import lesson13
from course_lib.models.diffusion import (
    DDPMSchedule,
    Diffusion,
    TimeMLP,
    noised_mixture_score,
    q_posterior,
)
from course_lib.models.guidance import (
    ConditionalDDPM,
    GuidedEps,
    LatentDiffusion,
    cfg_eps,
    ddim_sample,
    ddim_step,
    drop_labels,
    multiply_adds,
    reconstruction_scores as guidance_reconstruction_scores,
    respaced_times,
)
from course_lib.models.unet import UNet


# ----------------------------------------------------------------------------- DDIM


def test_ddim_step_passes_the_lessons_check():
    lesson13.check_ddim_step(ddim_step)


@pytest.mark.parametrize("which", ["ignores the direction's sigma", "noise too large", "no x0 coefficient"])
def test_ddim_check_rejects_wrong_steps(which):
    def wrong(s, x_t, eps, t, t_prev, eta, z):
        ab = s.abar[t]
        ab_prev = s.abar[t_prev] if t_prev >= 0 else torch.ones_like(ab)
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
        if which == "ignores the direction's sigma":
            return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps + sigma * z
        if which == "noise too large":
            return ab_prev.sqrt() * x0 + (1 - ab_prev - sigma**2).sqrt() * eps + 2 * sigma * z
        return x0 + (1 - ab_prev - sigma**2).sqrt() * eps + sigma * z

    with pytest.raises(AssertionError):
        lesson13.check_ddim_step(wrong)


class ExactEps(nn.Module):
    """The best noise predictor E[eps | x_t] for data from an equal-weight Gaussian mixture, from its exact
    noised score: eps*(x_t, t) = -sqrt(1 - abar_t) grad log q_t(x_t) (lesson 12)."""

    def __init__(self, schedule: DDPMSchedule, means: torch.Tensor, std: float):
        super().__init__()
        self.schedule, self.means, self.std = schedule, means, std

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        i = int(t[0])
        abar = self.schedule.abar[i].item()
        return -math.sqrt(1 - abar) * noised_mixture_score(x, self.means, self.std, abar).to(x.dtype)


def _exact_model(means, std, T=200):
    s = DDPMSchedule(T).double()
    return Diffusion(ExactEps(s, means.double(), std), s, (means.shape[1],))


def test_ddim_eta0_is_deterministic():
    model = _exact_model(torch.tensor([[0.5, -0.3]]), 0.4, T=50)
    x_T = torch.randn(100, 2, dtype=torch.float64)
    torch.manual_seed(1)
    a = ddim_sample(model, 100, steps=20, x_T=x_T)
    torch.manual_seed(2)
    b = ddim_sample(model, 100, steps=20, x_T=x_T)
    assert torch.equal(a, b)


@pytest.mark.parametrize("steps", [200, 50])
def test_ddim_with_the_exact_eps_maps_noise_to_gaussian_data(steps):
    """Data N(m, s^2 I): DDIM (eta = 0) with the exact noise predictor carries N(0, I) to the data's moments."""
    m, s_data = torch.tensor([[0.8, -0.5]]), 0.3
    model = _exact_model(m, s_data)
    torch.manual_seed(0)
    n = 10_000
    x = ddim_sample(model, n, steps=steps, x_T=torch.randn(n, 2, dtype=torch.float64))
    se_mean = s_data / math.sqrt(n)
    assert (x.mean(0) - m[0]).abs().max() < 5 * se_mean + 0.01, x.mean(0)
    assert (x.std(0) / s_data - 1).abs().max() < 0.05, x.std(0)


def test_ddim_with_the_exact_eps_finds_every_mode_of_a_mixture():
    """Eight Gaussians on a circle: each mode gets about 1/8 of the samples, with the mode's own spread."""
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = 2.0 * torch.stack([angles.cos(), angles.sin()], 1)
    model = _exact_model(means, 0.2)
    torch.manual_seed(0)
    n = 8000
    x = ddim_sample(model, n, steps=100, x_T=torch.randn(n, 2, dtype=torch.float64))
    nearest = torch.cdist(x, means).argmin(1)
    shares = torch.bincount(nearest, minlength=8).double() / n
    assert (shares - 1 / 8).abs().max() < 0.03, shares
    spread = (x - means[nearest]).std(0)
    assert (spread / 0.2 - 1).abs().max() < 0.15, spread


def test_ddim_eta1_at_full_T_is_the_ancestral_sampler():
    """eta = 1, every step: the same chain as lesson 12's ancestral sampler, draw for draw."""
    torch.manual_seed(0)
    model = Diffusion.for_points(data_dim=2, steps=30, hidden=32)
    for p in model.parameters():  # a network that predicts something non-trivial
        nn.init.normal_(p, std=0.3)
    x_T = torch.randn(64, 2)
    torch.manual_seed(5)
    ancestral = model.reverse_chain(x_T.clone())
    torch.manual_seed(5)
    ddim = ddim_sample(model, 64, steps=30, eta=1.0, x_T=x_T.clone())
    torch.testing.assert_close(ddim, ancestral, rtol=1e-4, atol=1e-4)


def test_ddim_eta1_noise_is_beta_tilde_at_every_step():
    s = DDPMSchedule(40).double()
    x_t, eps, z = (torch.randn(3, 5, dtype=torch.float64) for _ in range(3))
    for t in range(1, 40):
        sigma = (ddim_step(s, x_t, eps, t, t - 1, 1.0, z) - ddim_step(s, x_t, eps, t, t - 1, 1.0, 0 * z)) / z
        torch.testing.assert_close(sigma, s.posterior_var[t].sqrt().expand_as(sigma), rtol=1e-5, atol=1e-7)  # float32 buffers


def test_respaced_times():
    assert respaced_times(100, 100) == list(range(99, -1, -1))
    t5 = respaced_times(100, 5)
    assert t5[0] == 99 and t5[-1] == 0 and len(t5) == 5
    with pytest.raises(ValueError, match="steps must be"):
        respaced_times(100, 0)


def test_clipping_keeps_the_closed_form():
    """With clipping, DDIM eta = 1 still takes lesson 12's step: the posterior at the clipped x0_hat."""
    from course_lib.models.guidance import clipped_eps
    from course_lib.models.diffusion import predict_x0

    s = DDPMSchedule(20).double()
    x_t = 3 * torch.randn(6, 4, dtype=torch.float64)
    eps = torch.randn(6, 4, dtype=torch.float64)
    e = clipped_eps(s, x_t, 10, eps)
    x0c = predict_x0(s, x_t, 10, e)
    assert x0c.abs().max() <= 1 + 1e-9
    torch.testing.assert_close(x0c, predict_x0(s, x_t, 10, eps).clamp(-1, 1))
    mean, _ = q_posterior(s, x0c, x_t, 10, 4)
    torch.testing.assert_close(ddim_step(s, x_t, e, 10, 4, 1.0, torch.zeros_like(x_t)), mean)


# ----------------------------------------------------------------------------- guidance


def test_cfg_combination_known_values():
    c, u = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(cfg_eps(c, u, 0.0), c)
    torch.testing.assert_close(cfg_eps(c, u, -1.0), u)
    torch.testing.assert_close(cfg_eps(c, u, 2.0), 3 * c - 2 * u)


def test_label_dropout_drops_the_stated_share():
    y = torch.randint(0, 10, (200_000,))
    for p in (0.1, 0.2, 0.5):
        dropped = drop_labels(y, p, null=10, generator=torch.Generator().manual_seed(0))
        share = (dropped == 10).double().mean().item()
        assert abs(share - p) < 5 * math.sqrt(p * (1 - p) / len(y)), (p, share)
        kept = dropped != 10
        assert torch.equal(dropped[kept], y[kept])


def test_guided_eps_is_the_combination_of_two_calls():
    torch.manual_seed(0)
    net = UNet(channels=(8, 16), steps=20, num_classes=10)
    nn.init.normal_(net.out[-1].weight, std=0.1)
    x, t = torch.randn(6, 1, 8, 8), torch.randint(0, 20, (6,))
    labels = torch.arange(6)
    with torch.no_grad():
        e_c, e_u = net(x, t, labels), net(x, t, torch.full((6,), 10))
        for w in (0.0, 1.5):
            torch.testing.assert_close(GuidedEps(net, labels, w, 10)(x, t), e_c + w * (e_c - e_u), rtol=1e-5, atol=1e-5)


def test_conditional_model_trains_and_samples():
    torch.manual_seed(0)
    m = ConditionalDDPM.for_images(steps=10, channels=(8, 16), p_uncond=0.2)
    x = torch.randint(0, 17, (16, 1, 8, 8))
    y = torch.randint(0, 10, (16,))
    assert torch.isfinite(m.loss((x, y)))
    with pytest.raises(TypeError, match="pairs"):
        m.loss(x)
    for sampler in ("ancestral", "ddim"):
        s = m.sample(4, labels=torch.tensor([0, 1, 2, 3]), w=1.0, steps=5, sampler=sampler)
        assert s.shape == (4, 1, 8, 8) and s.dtype == torch.long and 0 <= s.min() and s.max() <= 16
    with pytest.raises(ValueError, match="needs labels"):
        m.sample(4, w=1.0)
    with pytest.raises(ValueError, match="labels were given"):
        m.guided(torch.tensor([1, 2]), 1.0).sample(3, steps=2)


def test_unet_without_classes_is_lesson_12s_network():
    """num_classes=None builds the same network as before (parameter count, names, initial weights)."""
    torch.manual_seed(0)
    plain = UNet(channels=(16, 32), steps=100)
    assert sum(p.numel() for p in plain.parameters()) == 107_585  # lesson 12's U-Net (16, 32)
    assert not any("label" in k for k in plain.state_dict())
    torch.manual_seed(0)
    cond = UNet(channels=(16, 32), steps=100, num_classes=10)
    extra = {k for k in cond.state_dict()} - set(plain.state_dict())
    assert extra == {"label_emb.weight"}
    for k, v in plain.state_dict().items():
        assert torch.equal(v, cond.state_dict()[k]), k
    # with the label embedding at zero the conditional network computes the plain one
    for net in (plain, cond):
        nn.init.normal_(net.out[-1].weight, std=0.1)
    cond.out[-1].weight.data.copy_(plain.out[-1].weight.data)
    nn.init.zeros_(cond.label_emb.weight)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 50, 99])
    with torch.no_grad():
        torch.testing.assert_close(cond(x, t, torch.tensor([1, 2, 10])), plain(x, t))
    with pytest.raises(ValueError, match="takes no labels"):
        plain(x, t, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="class-conditional"):
        cond(x, t)
    with pytest.raises(ValueError, match="lie in"):
        cond(x, t, torch.tensor([1, 2, 11]))


# ----------------------------------------------------------------------------- latent diffusion and cost


class StubAutoencoder(nn.Module):
    """A fixed linear 'autoencoder' on 2x2 images: codes 3 * pixels + 1 (almost deterministic)."""

    latent_dim = 4
    image_shape = (1, 2, 2)

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode(self, x):
        mu = 3 * x.reshape(len(x), -1).float() + 1
        return mu, torch.full_like(mu, -20.0)

    def decode_mean(self, z):
        return ((z - 1) / 3).reshape(len(z), *self.image_shape)

    def decoder_logits(self, z):  # pragma: no cover - not used with decode="mean"
        raise NotImplementedError


def test_latent_diffusion_standardises_codes_and_decodes_back():
    x = torch.randint(0, 17, (500, 1, 2, 2))
    ld = LatentDiffusion.on(StubAutoencoder(), x, steps=10, hidden=16)
    codes = ld.encode(x)
    torch.testing.assert_close(codes.mean(0), torch.zeros(4), atol=1e-3, rtol=0)
    torch.testing.assert_close(codes.std(0), torch.ones(4), atol=1e-3, rtol=0)
    assert torch.equal(ld.decode(codes), x)                      # decode(encode(x)) = x
    assert not any(p.requires_grad for p in ld.autoencoder.parameters())
    assert torch.isfinite(ld.loss(ld.codes(x)))
    with pytest.raises(TypeError, match="codes"):
        ld.loss(x)
    ld.train()
    assert not ld.autoencoder.training and ld.prior.training


def test_multiply_adds_known_counts():
    assert multiply_adds(nn.Linear(10, 20), torch.zeros(3, 10)) == 200
    assert multiply_adds(nn.Conv2d(1, 4, 3, padding=1), torch.zeros(2, 1, 8, 8)) == 64 * 4 * 9
    net = nn.Sequential(nn.Linear(8, 16), nn.SiLU(), nn.Linear(16, 2))
    assert multiply_adds(net, torch.zeros(5, 8)) == 8 * 16 + 16 * 2
    assert multiply_adds(TimeMLP(2, 32, 16, 10), torch.zeros(4, 2), torch.zeros(4, dtype=torch.long)) == 18 * 32 + 32 * 32 * 2 + 32 * 2


def test_reconstruction_scores_with_the_identity_are_the_real_baseline():
    """Reconstructing nothing (the identity) must give lesson 9's real-vs-real baseline, number for number."""
    from course_lib import data, evaluation

    x_test, _ = data.digits("test", verbose=False)
    torch.manual_seed(0)
    clf = evaluation.DigitClassifier(8).eval()   # untrained features are enough to compare two computations
    ours = guidance_reconstruction_scores(lambda x: x, x_test, clf, n=150, repeats=2)
    ref = evaluation.real_baseline(x_test, clf, n=150, repeats=2)
    for name in ("frechet", "precision", "recall", "coverage", "confident"):
        assert getattr(ours.mean, name) == pytest.approx(getattr(ref.mean, name), rel=1e-9, abs=1e-12), name


def test_ddim_with_eta_one_is_lesson_12s_clipped_ancestral_chain():
    """eta = 1 (sigma^2 = beta tilde) with the clipped x0: the same chain as DDPM.sample, draw for draw,
    up to the last step (where DDPM adds its discrete decoder's noise and DDIM returns x0_hat)."""
    from course_lib.models import DDPM
    from course_lib.models.guidance import clipped_eps, ddim_step, respaced_times

    torch.manual_seed(0)
    ddpm = DDPM.for_images((1, 8, 8), steps=12, channels=(8, 16)).eval()
    torch.nn.init.normal_(ddpm.eps_model.out[-1].weight, std=0.2)  # a non-zero (untrained) noise predictor
    torch.manual_seed(1)
    _, chain = ddpm.sample(5, keep=True)
    torch.manual_seed(1)
    s, times = ddpm.schedule, respaced_times(12)
    x = torch.randn(5, 1, 8, 8, dtype=s.abar.dtype)
    with torch.no_grad():
        for i, t in enumerate(times[:-1]):
            torch.testing.assert_close(x, chain[i][1], rtol=1e-4, atol=1e-5)
            eps = clipped_eps(s, x, t, ddpm.eps_model(x, torch.full((5,), t)))
            x = ddim_step(s, x, eps, t, times[i + 1], eta=1.0)
    torch.testing.assert_close(x, chain[-1][1], rtol=1e-4, atol=1e-5)
