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

import math
from dataclasses import dataclass

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


# ----------------------------------------------------------------------------- the game in 1D


def optimal_discriminator(log_p: Tensor, log_q: Tensor) -> Tensor:
    """D*(x) = p(x) / (p(x) + q(x)) = sigma(log p(x) - log q(x)), from the two log-densities."""
    return torch.sigmoid(log_p - log_q)


def js_divergence(log_p: Tensor, log_q: Tensor, dx: float) -> Tensor:
    """JS(p, q) = KL(p || m)/2 + KL(q || m)/2 with m = (p + q)/2, by quadrature on a grid of spacing dx."""
    log_m = torch.logaddexp(log_p, log_q) - math.log(2)
    kl_pm = (log_p.exp() * (log_p - log_m)).sum() * dx
    kl_qm = (log_q.exp() * (log_q - log_m)).sum() * dx
    return 0.5 * (kl_pm + kl_qm)


def game_value(logits: Tensor, log_p: Tensor, log_q: Tensor, dx: float) -> Tensor:
    """V(D, G) = E_p[log D(x)] + E_q[log(1 - D(x))] with D = sigma(logits), by quadrature on a grid."""
    return (log_p.exp() * F.logsigmoid(logits) + log_q.exp() * F.logsigmoid(-logits)).sum() * dx


# ----------------------------------------------------------------------------- mode coverage


@dataclass
class ModeCoverage:
    """Where the samples of a model of a mixture fall: per mode, and in all."""

    counts: Tensor  # high-quality samples nearest to each mode
    covered: Tensor  # bool per mode: at least ``min_share`` of its fair share of samples
    high_quality: float  # share of all samples within ``within`` standard deviations of a mode

    @property
    def modes_covered(self) -> int:
        return int(self.covered.sum())


@torch.no_grad()
def mode_coverage(samples: Tensor, means: Tensor, std: float, within: float = 3.0, min_share: float = 0.25) -> ModeCoverage:
    """Count the samples near each mode of a mixture of isotropic Gaussians.

    A sample is *high quality* when it lies within ``within`` standard deviations of its nearest
    mode. A mode is *covered* when it holds at least ``min_share`` of its fair share of the
    samples (``n / modes``) as high-quality samples.
    """
    distance, nearest = torch.cdist(samples.double().cpu(), means.double().cpu()).min(dim=1)
    good = distance <= within * std
    counts = torch.bincount(nearest[good], minlength=len(means))
    covered = counts >= min_share * len(samples) / len(means)
    return ModeCoverage(counts=counts, covered=covered, high_quality=good.cpu().double().mean().item())


# ----------------------------------------------------------------------------- the model


GENERATOR_OBJECTIVES = {"non-saturating": generator_loss, "minimax": minimax_generator_loss}


class GAN(GenerativeModel):
    paradigm = "adversarial"
    loss_unit = "nats (binary cross-entropy)"
    # Adam with a short memory of momentum is the usual choice for the game (Radford et al., 2016).
    optimizer_overrides = {"discriminator": {"betas": (0.5, 0.999)}, "generator": {"betas": (0.5, 0.999)}}

    def __init__(
        self,
        data_dim: int = 2,
        latent_dim: int = 8,
        hidden: int = 128,
        generator_objective: str = "non-saturating",
        generator_lr: float | None = None,
    ):
        """``generator_objective``: "non-saturating" (trained with) or "minimax" (the saturating
        loss of the original game); ``generator_lr``: the generator's own learning rate (by
        default the one ``train.fit`` is given, shared with the discriminator)."""
        super().__init__()
        if generator_objective not in GENERATOR_OBJECTIVES:
            raise ValueError(f"generator_objective must be one of {list(GENERATOR_OBJECTIVES)}, got {generator_objective!r}")
        self.data_dim, self.latent_dim = data_dim, latent_dim
        self.generator_objective = generator_objective
        if generator_lr is not None:
            self.optimizer_overrides = {
                **type(self).optimizer_overrides,
                "generator": {**type(self).optimizer_overrides["generator"], "lr": generator_lr},
            }
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
        return GENERATOR_OBJECTIVES[self.generator_objective](self.discriminator(self.fake(n)))

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
