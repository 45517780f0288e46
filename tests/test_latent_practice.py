"""Lesson 6's pieces against known answers: active units, free bits and annealing, the
importance-weighted bound on a model with an exact log p(x), the autoregressive (MADE) decoder's
masks and normalisation, the conditional VAE, and the VQ-VAE's quantiser, straight-through
gradient, losses, code-usage measures and prior."""

import itertools
import math

import pytest
import torch

from course_lib import train
from course_lib.checks import lesson06
from course_lib.models import vae_image as V
from course_lib.models import vqvae as Q


# ----------------------------------------------------------------------------- collapse measures


def test_active_units_of_a_constructed_encoder():
    gen = torch.Generator().manual_seed(0)
    n = 5000
    mu = torch.zeros(n, 5)
    mu[:, 0] = torch.randn(n, generator=gen)  # variance 1: active
    mu[:, 1] = 0.2 * torch.randn(n, generator=gen)  # variance 0.04: active
    mu[:, 2] = 0.05 * torch.randn(n, generator=gen)  # variance 0.0025: inactive
    mu[:, 3] = 3.0  # constant, however far from 0: inactive
    act = V.activity(mu)
    torch.testing.assert_close(act[0], torch.tensor(1.0), atol=0.06, rtol=0)
    assert act[3] == 0 and act[4] == 0
    assert V.active_units(mu) == 2
    assert V.active_units(mu, threshold=0.001) == 3


def test_free_bits_and_annealing_values():
    kl = torch.tensor([0.0, 0.1, 0.5, 2.0])
    assert V.free_bits_rate(kl, 0.0).item() == pytest.approx(2.6)
    assert V.free_bits_rate(kl, 0.25).item() == pytest.approx(0.25 + 0.25 + 0.5 + 2.0)
    # below the floor a coordinate gets no gradient; above it, gradient 1
    k = kl.clone().requires_grad_(True)
    V.free_bits_rate(k, 0.25).backward()
    assert k.grad.tolist() == [0.0, 0.0, 1.0, 1.0]
    assert [V.kl_annealing_weight(s, 100) for s in (0, 25, 100, 500)] == [0.0, 0.25, 1.0, 1.0]
    assert V.kl_annealing_weight(3, 0) == 1.0
    with pytest.raises(ValueError):
        V.kl_annealing_weight(3, -1)


def test_beta_vae_loss_at_beta_one_is_the_negative_elbo():
    torch.manual_seed(0)
    model = V.ImageVAE(latent_dim=4, hidden=(32,))
    x = torch.randint(0, 17, (16, 1, 8, 8))
    torch.manual_seed(1)
    a = V.beta_vae_loss(model, x, 1.0, 0.0)
    torch.manual_seed(1)
    b = -V.elbo(model, x).mean()
    torch.testing.assert_close(a, b)
    # beta scales the rate: the difference of two betas is (difference) * rate, same draws
    torch.manual_seed(1)
    c = V.beta_vae_loss(model, x, 3.0, 0.0)
    with torch.no_grad():
        rate = V.gaussian_kl(*model.encode(x)).mean()
    torch.testing.assert_close(c - a, 2.0 * rate)


def test_set_objective_switches_the_loss_and_rejects_nonsense():
    torch.manual_seed(0)
    model = V.ImageVAE(latent_dim=4, hidden=(32,))
    x = torch.randint(0, 17, (8, 1, 8, 8))
    assert model.set_objective(k=5) is model and model.train_k == 5
    torch.manual_seed(2)
    torch.testing.assert_close(model.loss(x), -V.iwae_bound(model, x, 5).mean().detach(), rtol=0, atol=1e9)  # runs
    for bad in (dict(beta=-1.0), dict(free_bits=-0.1), dict(k=0), dict(k=5, beta=2.0)):
        with pytest.raises(ValueError):
            V.ImageVAE(latent_dim=4, hidden=(32,)).set_objective(**bad)
    assert V.ImageVAE.beta == 1.0 and V.ImageVAE.train_k == 1  # the class defaults stay the ELBO (lesson 5)


# ----------------------------------------------------------------------------- the importance-weighted bound


def test_library_iwae_bound_passes_the_exercise_check():
    lesson06.check_iwae_bound(V.iwae_bound)


def test_iwae_bound_approaches_exact_log_px_and_never_falls_on_average():
    torch.manual_seed(0)
    model = V.LinearGaussian(data_dim=5, latent_dim=3, sigma=0.5, seed=0)
    with torch.no_grad():
        model.enc_log_var.fill_(math.log(0.5))
    x = model.sample(4, generator=torch.Generator().manual_seed(3))
    log_px = model.log_prob(x).mean().item()
    with torch.no_grad():
        means = [V.iwae_bound(model, x.repeat(200, 1), k).mean().item() for k in (1, 5, 50, 500)]
        elbo = model.elbo_exact(x).mean().item()
        ones = V.iwae_bound(model, x.repeat(4000, 1), 1)
    assert abs(ones.mean().item() - elbo) < 5 * ones.std().item() / math.sqrt(len(ones))  # K = 1: the ELBO
    assert all(a < b for a, b in zip(means, means[1:]))
    assert means[-1] < log_px + 0.01 and log_px - means[-1] < 0.05 * (log_px - elbo)


# ----------------------------------------------------------------------------- the autoregressive decoder


def test_made_masks_make_every_logit_depend_on_earlier_pixels_only():
    torch.manual_seed(0)
    made = V.ConditionalMADE(data_dim=6, levels=3, latent_dim=2, hidden=(16, 16))
    x = torch.rand(1, 6, requires_grad=True)
    z = torch.randn(1, 2, requires_grad=True)
    for d in range(6):
        g_x, g_z = torch.autograd.grad(made(x, z)[0, d].sum(), [x, z])
        assert (g_x[0, d:] == 0).all(), f"logits of pixel {d} see pixel {d} or later"
        if d > 0:
            assert (g_x[0, :d] != 0).any(), f"logits of pixel {d} see no earlier pixel"
        assert (g_z != 0).any()  # the latent reaches every pixel


def test_ar_decoder_is_normalised_and_its_sampler_matches_it():
    torch.manual_seed(0)
    vae = V.ARDecoderVAE(image_shape=(1, 2, 2), levels=2, latent_dim=2, hidden=(8,), decoder_hidden=(16, 16))
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(3.0)  # a peaked decoder, far from uniform
    images = torch.tensor(list(itertools.product(range(2), repeat=4)))  # all 16 images
    z = torch.randn(1, 2).expand(len(images), 2)
    with torch.no_grad():
        probs = vae.log_px_given_z(images, z).exp()
    torch.testing.assert_close(probs.sum(), torch.tensor(1.0))
    torch.manual_seed(1)
    draws = vae.sample(20000, z=z[:1].expand(20000, 2)).reshape(20000, 4)
    codes = (draws * torch.tensor([8, 4, 2, 1])).sum(1)
    freq = torch.bincount(codes, minlength=16).float() / 20000
    order = (images * torch.tensor([8, 4, 2, 1])).sum(1)
    torch.testing.assert_close(freq[order], probs, atol=0.015, rtol=0)


def test_ar_decoder_vae_trains_and_refuses_one_pass_means():
    torch.manual_seed(0)
    vae = V.ARDecoderVAE(latent_dim=4, hidden=(32,), decoder_hidden=(64,))
    x = torch.randint(0, 17, (64, 1, 8, 8))
    run = train.fit(vae, x, steps=30, batch_size=32, lr=3e-3, verbose=False, progress=False, device="cpu")
    assert run.history["loss"][-1] < run.history["loss"][0]
    with pytest.raises(NotImplementedError):
        vae.decode_mean(torch.zeros(1, 4))
    assert vae.sample(3).shape == (3, 1, 8, 8)


# ----------------------------------------------------------------------------- the conditional VAE


def test_conditional_vae_loss_samples_and_label_errors():
    torch.manual_seed(0)
    cvae = V.ConditionalImageVAE(latent_dim=4, hidden=(32,))
    x, y = torch.randint(0, 17, (8, 1, 8, 8)), torch.arange(8)
    torch.manual_seed(1)
    loss = cvae.loss((x, y))
    torch.manual_seed(1)
    torch.testing.assert_close(loss, -cvae.elbo(x, y).mean())
    # changing the label changes the decoder's distribution: the label is used
    z = torch.zeros(2, 4)
    means = cvae.decode_mean(z, torch.tensor([0, 7]))
    assert not torch.allclose(means[0], means[1])
    s = cvae.sample(6, torch.tensor([1, 1, 2, 2, 3, 3]))
    assert s.shape == (6, 1, 8, 8) and s.dtype == torch.long
    with pytest.raises(ValueError):
        cvae.sample(2, torch.tensor([0, 10]))
    with pytest.raises(TypeError):
        cvae.loss(x)


# ----------------------------------------------------------------------------- VQ-VAE


def test_library_quantiser_passes_the_exercise_check():
    def library(z_e, codebook):
        z_q, indices = Q.quantise(z_e, codebook)
        return Q.straight_through(z_e, z_q), indices

    lesson06.check_vector_quantiser(library)


def test_quantiser_returns_exact_codes_and_the_losses_route_their_gradients():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    z_e = torch.tensor([[0.1, -0.1], [0.9, 0.3], [0.2, 1.5], [0.4, 0.0]])
    z_q, idx = Q.quantise(z_e, codebook)
    assert idx.tolist() == [0, 1, 2, 0]
    torch.testing.assert_close(z_q, codebook[idx])
    ze = z_e.clone().requires_grad_(True)
    book = codebook.clone().requires_grad_(True)
    zq = book[idx]
    cb, commit = Q.vq_losses(ze, zq)
    torch.testing.assert_close(cb, ((z_e - codebook[idx]) ** 2).sum(1).mean())
    torch.testing.assert_close(commit, cb)
    g_ze, g_book = torch.autograd.grad(cb, [ze, book], allow_unused=True)
    assert g_ze is None and g_book.abs().sum() > 0  # the codebook loss moves only the codes
    g_ze, g_book = torch.autograd.grad(commit, [ze, book], allow_unused=True)
    assert g_book is None and g_ze.abs().sum() > 0  # the commitment loss moves only the encoder


def test_perplexity_and_dead_codes():
    assert Q.perplexity(torch.arange(16).repeat(5), 16) == pytest.approx(16.0)
    assert Q.perplexity(torch.zeros(50, dtype=torch.long), 16) == pytest.approx(1.0)
    assert Q.perplexity(torch.tensor([0, 1]), 8) == pytest.approx(2.0)
    assert Q.dead_codes(torch.tensor([0, 1, 1, 5]), 8) == 5
    # two codes used with shares 3/4 and 1/4: exp(entropy)
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert Q.perplexity(torch.tensor([2, 2, 2, 7]), 8) == pytest.approx(math.exp(h))


def test_vqvae_trains_its_encoder_through_the_straight_through_gradient_and_its_prior_counts():
    torch.manual_seed(0)
    vq = Q.VQVAE(num_codes=8, code_dim=4, channels=8)
    x = (torch.rand(16, 1, 28, 28) > 0.7).long()
    vq.loss(x).backward()
    assert vq.encoder[0].weight.grad.abs().sum() > 0  # the reconstruction reaches the encoder
    assert vq.codebook.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        vq.loss(torch.rand(2, 1, 28, 28))
    codes = torch.zeros(4, 7, 7, dtype=torch.long)
    codes[:3, 0, 0] = 5  # position 0: code 5 three times, code 0 once
    vq.fit_prior(codes, smoothing=0.0)
    p0 = torch.softmax(vq.prior_logits[0], -1)
    assert p0[5].item() == pytest.approx(0.75) and p0[0].item() == pytest.approx(0.25)
    assert vq.prior_log_prob(codes[3:]).item() == pytest.approx(math.log(0.25))
    with torch.no_grad():
        out = vq(x)
        torch.testing.assert_close(vq.elbo(x), -out["nll"] + vq.prior_log_prob(out["indices"]))
    s = vq.sample(5)
    assert s.shape == (5, 1, 28, 28) and set(s.unique().tolist()) <= {0, 1}
