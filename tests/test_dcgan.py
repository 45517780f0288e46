"""Lesson 8's convolutional GANs: shapes, spectral normalisation, the conditional models, learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from course_lib import train
from course_lib.checks import lesson08
from course_lib.models import dcgan
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


def test_any_number_of_classes_conditions_every_part():
    """num_classes sizes the generator's one-hot input, the projection's embedding and the auxiliary head."""
    torch.manual_seed(0)
    model = DCGAN(latent_dim=8, width=8, spectral=True, conditional=True, aux_weight=1.0, num_classes=40).eval()
    assert model.generator.project[0].in_features == 8 + 40
    assert model.discriminator.embed.num_embeddings == 40 and model.discriminator.classify.out_features == 40
    y = torch.tensor([0, 17, 39])
    x = model.generator(torch.randn(3, 8), y)
    for group in ("discriminator", "generator"):
        assert torch.isfinite(model.group_loss(group, (x, y)))
    with pytest.raises((IndexError, RuntimeError)):
        model.generator(torch.randn(1, 8), torch.tensor([40]))  # a group that does not exist


def test_conditional_sample_needs_labels():
    model = DCGAN(latent_dim=8, width=8, conditional=True)
    with pytest.raises(ValueError, match="labels"):
        model.sample(4)


LAYERS = {"linear": lambda: nn.Linear(30, 20), "conv": lambda: nn.Conv2d(3, 8, 4, stride=2, padding=1),
          "embedding": lambda: nn.Embedding(10, 40)}


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_spectral_norm_gives_unit_largest_singular_value(make):
    # The layer is made after seeding: PyTorch seeds each process at random, and about one random
    # weight in 200 has its top two singular values so close that 100 power steps are not enough.
    torch.manual_seed(0)
    layer = make()
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


def test_hinge_losses_known_values():
    real = torch.tensor([2.0, 0.5, -1.0])  # margins: 0, 0.5, 2 -> mean 2.5 / 3
    fake = torch.tensor([-2.0, 0.0])  # margins: 0, 1 -> mean 0.5
    loss = dcgan.hinge_discriminator_loss(real, fake)
    torch.testing.assert_close(loss, torch.tensor(2.5 / 3 + 0.5))
    torch.testing.assert_close(dcgan.hinge_generator_loss(fake), torch.tensor(1.0))
    model = DCGAN(latent_dim=8, width=8, loss_type="hinge")
    assert model.loss_unit.startswith("hinge")
    with pytest.raises(ValueError, match="loss_type"):
        DCGAN(loss_type="wasserstein")


def test_translate_shifts_each_image_by_at_most_the_shift():
    torch.manual_seed(0)
    x = -torch.ones(64, 1, 28, 28)
    x[:, :, 14, 14] = 1.0  # one bright pixel in the middle of each image
    shifted = dcgan.translate(x, shift=2)
    assert shifted.shape == x.shape
    rows, cols = (shifted[:, 0] == 1).nonzero()[:, 1:].T
    assert len(rows) == 64  # the pixel survives in every image, moved by at most 2 in each direction
    assert (rows - 14).abs().max() <= 2 and (cols - 14).abs().max() <= 2
    assert len(set(zip(rows.tolist(), cols.tolist()))) > 10  # offsets differ between images
    z = torch.zeros(4, 1, 28, 28, requires_grad=True)
    dcgan.translate(z).sum().backward()
    assert z.grad is not None  # differentiable: the generator learns through it


def test_optimizer_overrides_and_auxiliary_classifier():
    model = DCGAN(latent_dim=8, width=8, g_width=4, d_width=12, betas=(0.0, 0.9), lr_d=4e-4, lr_g=1e-4)
    assert model.generator.width == 4 and model.discriminator.conv1.out_channels == 12
    assert model.optimizer_overrides == {"discriminator": {"betas": (0.0, 0.9), "lr": 4e-4},
                                         "generator": {"betas": (0.0, 0.9), "lr": 1e-4}}
    with pytest.raises(ValueError, match="conditional"):
        DCGAN(aux_weight=1.0)
    torch.manual_seed(0)
    model = DCGAN(latent_dim=8, width=8, conditional=True, aux_weight=0.5)
    x, y = torch.rand(6, 1, 28, 28) * 2 - 1, torch.arange(6)
    D = model.discriminator
    torch.manual_seed(1)
    d_loss = model.group_loss("discriminator", (x, y))
    torch.manual_seed(1)
    fake = model.fake(6, y)
    logit, classes = D.scores(x, y)
    expected = gan_lib.discriminator_loss(logit, D(fake, y)) + 0.5 * torch.nn.functional.cross_entropy(classes, y)
    torch.testing.assert_close(d_loss, expected)
    torch.manual_seed(2)
    g_loss = model.group_loss("generator", (x, y))
    torch.manual_seed(2)
    logit, classes = D.scores(model.fake(6, y), y)
    expected = gan_lib.generator_loss(logit) + 0.5 * torch.nn.functional.cross_entropy(classes, y)
    torch.testing.assert_close(g_loss, expected)
