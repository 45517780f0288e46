"""Lesson 8's convolutional GANs: shapes, spectral normalisation, the conditional models, learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib import train
from course_lib.checks import lesson08
from course_lib.models import gan as gan_lib
from course_lib.models.dcgan import (
    DCGAN,
    ConvDiscriminator,
    ConvGenerator,
    SpectralNorm,
    largest_singular_value,
    power_iteration,
    spectral_norm,
)


def test_power_iteration_passes_the_exercise_check():
    lesson08.check_power_iteration(power_iteration)


def test_check_rejects_a_wrong_power_iteration():
    def unnormalised(W, u):
        v = W.t() @ u
        u = W @ v
        return u, v, u @ W @ v

    with pytest.raises(AssertionError):
        lesson08.check_power_iteration(unnormalised)


@pytest.mark.parametrize("conditional", [False, True])
def test_shapes_and_ranges(conditional):
    torch.manual_seed(0)
    model = DCGAN(latent_dim=16, width=8, spectral=True, conditional=conditional).eval()
    y = torch.arange(5) if conditional else None
    fake = model.generator(torch.randn(5, 16), y)
    assert fake.shape == (5, 1, 28, 28)
    assert fake.min() >= -1 and fake.max() <= 1
    assert model.discriminator(fake, y).shape == (5,)
    samples = model.sample(5, y=y)
    assert samples.shape == (5, 1, 28, 28) and samples.min() >= 0 and samples.max() <= 1
    batch = (fake, y) if conditional else fake
    for group in ("discriminator", "generator"):
        loss = model.group_loss(group, batch)
        assert loss.dim() == 0 and torch.isfinite(loss)


def test_conditional_sample_needs_labels():
    model = DCGAN(latent_dim=8, width=8, conditional=True)
    with pytest.raises(ValueError, match="labels"):
        model.sample(4)


@pytest.mark.parametrize("layer", [nn.Linear(30, 20), nn.Conv2d(3, 8, 4, stride=2, padding=1), nn.Embedding(10, 40)])
def test_spectral_norm_gives_unit_largest_singular_value(layer):
    torch.manual_seed(0)
    with torch.no_grad():
        layer.weight.mul_(5.0)
    assert largest_singular_value(layer) > 2.0
    spectral_norm(layer)
    layer.train()
    for _ in range(100):  # one power-iteration step per call, as in training
        _ = layer.weight
    assert largest_singular_value(layer) == pytest.approx(1.0, abs=1e-3)
    # in eval mode the estimate is frozen: the weight does not change between calls
    layer.eval()
    torch.testing.assert_close(layer.weight, layer.weight)


def test_spectral_norm_gradient_flows_and_state_dict_round_trips():
    torch.manual_seed(0)
    D = ConvDiscriminator(width=8, spectral=True)
    x = torch.randn(4, 1, 28, 28)
    D(x).sum().backward()
    grads = [p.grad for p in D.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(isinstance(m, SpectralNorm) for m in D.modules())
    D2 = ConvDiscriminator(width=8, spectral=True)
    D2.load_state_dict(D.state_dict())
    D.eval(), D2.eval()
    torch.testing.assert_close(D(x), D2(x))


def test_losses_are_the_gan_modules():
    torch.manual_seed(0)
    model = DCGAN(latent_dim=8, width=8)
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    torch.manual_seed(1)
    d_loss = model.group_loss("discriminator", x)
    torch.manual_seed(1)
    fake = model.fake(6)
    expected = gan_lib.discriminator_loss(model.discriminator(x), model.discriminator(fake))
    torch.testing.assert_close(d_loss, expected)
    torch.manual_seed(2)
    g_loss = model.group_loss("generator", x)
    torch.manual_seed(2)
    torch.testing.assert_close(g_loss, gan_lib.generator_loss(model.discriminator(model.fake(6))))


def test_the_label_changes_the_conditional_output():
    torch.manual_seed(0)
    G = ConvGenerator(latent_dim=8, width=8, conditional=True).eval()
    z = torch.randn(1, 8).repeat(10, 1)
    images = G(z, torch.arange(10))
    # same noise, ten labels: ten different images
    gaps = torch.cdist(images.flatten(1), images.flatten(1))
    assert gaps[~torch.eye(10, dtype=torch.bool)].min() > 1e-3
    D = ConvDiscriminator(width=8, conditional=True)
    with torch.no_grad():
        D.embed.weight.normal_()
    x = images[:1].repeat(10, 1, 1, 1).detach()
    logits = D(x, torch.arange(10))
    assert logits.std() > 1e-3  # the discriminator's verdict depends on the label asked for


def test_a_short_run_learns_the_mean_image():
    """Untrained, the generator paints grey; after a short run its mean image is close to the data's."""
    torch.manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    blob = torch.exp(-((yy - 14) ** 2 + (xx - 14) ** 2) / 30.0)  # a bright blob on black, in [-1, 1]
    data = (2 * blob - 1).expand(512, 1, 28, 28) + 0.05 * torch.randn(512, 1, 28, 28)
    target = (data.mean(0) + 1) / 2
    model = DCGAN(latent_dim=8, width=8, spectral=True)

    def gap():
        model.eval()
        return float(((model.sample(256).mean(0) - target) ** 2).mean())

    before = gap()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is several times faster on a busy 2-core machine
    try:
        train.fit(model, data.clamp(-1, 1), steps=100, batch_size=32, lr=2e-3, device="cpu", verbose=False, progress=False)
    finally:
        torch.set_num_threads(threads)
    after = gap()
    assert after < 0.25 * before, (before, after)
