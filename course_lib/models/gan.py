"""Adversarial models: the generative adversarial network (GAN).

A generator G maps noise z ~ N(0, I) to a data point; a discriminator D outputs a logit, the
log-odds that its input is real. They are trained in turn on every batch:

    discriminator: minimise  -E_data[log sigma(D(x))] - E_z[log(1 - sigma(D(G(z))))]
    generator:     minimise  -E_z[log sigma(D(G(z)))]          (the "non-saturating" loss)

The minimax game of Goodfellow et al. (2014) would have the generator minimise
E_z[log(1 - sigma(D(G(z))))] instead (``minimax_generator_loss``): the same fixed point, but a
gradient that vanishes when the discriminator rejects the fakes confidently, as it does early on.
The three losses are functions of the discriminator's logits, so the math is all in them.

There is no likelihood: the model can only sample. The two losses are in nats (binary
cross-entropies) but neither measures how good the samples are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GenerativeModel, check_n, check_points, mlp


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """-E[log sigma(a_real)] - E[log(1 - sigma(a_fake))], with log(1 - sigma(a)) = log sigma(-a)."""
    return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """The non-saturating generator loss, -E[log sigma(a_fake)]: make the fakes look real."""
    return -F.logsigmoid(fake_logits).mean()


def minimax_generator_loss(fake_logits: Tensor) -> Tensor:
    """The generator's side of the minimax game, E[log(1 - sigma(a_fake))] (not used for training)."""
    return F.logsigmoid(-fake_logits).mean()


class GAN(GenerativeModel):
    paradigm = "adversarial"
    loss_unit = "nats (binary cross-entropy)"
    # Adam with a short memory of momentum is the usual choice for the game (Radford et al., 2016).
    optimizer_overrides = {"discriminator": {"betas": (0.5, 0.999)}, "generator": {"betas": (0.5, 0.999)}}

    def __init__(self, data_dim: int = 2, latent_dim: int = 8, hidden: int = 128):
        super().__init__()
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.generator = mlp([latent_dim, hidden, hidden, data_dim], act=nn.LeakyReLU)
        self.discriminator = mlp([data_dim, hidden, hidden, 1], act=nn.LeakyReLU)

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        # The order is the order of the steps on each batch: discriminator first.
        return {
            "discriminator": list(self.discriminator.parameters()),
            "generator": list(self.generator.parameters()),
        }

    def fake(self, n: int) -> Tensor:
        return self.generator(torch.randn(n, self.latent_dim, device=self.device))

    def discriminator_loss(self, x: Tensor) -> Tensor:
        check_points(x, self.data_dim, type(self).__name__)
        # .detach(): this step trains the discriminator only
        return discriminator_loss(self.discriminator(x), self.discriminator(self.fake(len(x)).detach()))

    def generator_loss(self, n: int) -> Tensor:
        return generator_loss(self.discriminator(self.fake(n)))

    def group_loss(self, group: str, batch: Tensor) -> Tensor:
        if group == "discriminator":
            return self.discriminator_loss(batch)
        if group == "generator":
            return self.generator_loss(len(batch))
        raise KeyError(f"GAN has groups 'discriminator' and 'generator', not {group!r}")

    def loss(self, batch: Tensor) -> Tensor:
        """The discriminator's loss: the game's value from its side (not a measure of sample quality)."""
        return self.discriminator_loss(batch)

    @property
    def sampling_network(self) -> nn.Module:
        return self.generator

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """One generator pass on fresh noise."""
        check_n(n, type(self).__name__)
        return self.fake(n)
