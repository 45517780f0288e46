"""Convolutional GANs on 28x28 digits (lesson 8): DCGAN, spectral normalisation, a conditional GAN.

* :class:`ConvGenerator` maps noise z ~ N(0, I) (and, when conditional, a class label) to an
  image in [-1, 1] through a linear layer and two transposed convolutions (7x7 -> 14x14 -> 28x28).
* :class:`ConvDiscriminator` maps an image to a logit through two strided convolutions; when
  conditional it is a *projection* discriminator (Miyato & Koyama, 2018): the logit is
  psi(phi(x)) + embed(y) . phi(x).
* :func:`power_iteration` and :class:`SpectralNorm`: spectral normalisation (Miyato et al.,
  2018), W / sigma_max(W) with sigma_max estimated by one step of power iteration per call.
* :class:`DCGAN` puts them together for :func:`course_lib.train.fit`, with the losses of
  :mod:`course_lib.models.gan` (the discriminator's cross-entropy and the non-saturating
  generator loss) or the hinge loss. Its batches are images in [-1, 1], or (images, labels)
  when conditional. Options measured for lesson 8: separate widths for the two players, Adam's
  betas and a learning rate per player, translation augmentation (Zhao et al., 2020) and an
  auxiliary classifier in the conditional discriminator (Odena et al., 2017).

``sample`` returns images in [0, 1], the range :mod:`course_lib.evaluation` takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .base import GenerativeModel, check_n
from .gan import discriminator_loss, generator_loss

NUM_CLASSES = 10


# ----------------------------------------------------------------------------- spectral normalisation


def power_iteration(W: Tensor, u: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One step of power iteration on the matrix W (m x n) from u (m,): returns (u, v, sigma).

    v = W^T u / |W^T u|,  u = W v / |W v|,  sigma = u^T W v  (-> the largest singular value).
    """
    v = F.normalize(W.t() @ u, dim=0)
    u = F.normalize(W @ v, dim=0)
    sigma = u @ W @ v
    return u, v, sigma


class SpectralNorm(nn.Module):
    """A parametrisation W -> W / sigma_max(W), with the weight viewed as a matrix (out, rest).

    ``u`` and ``v`` are kept between calls, so one power-iteration step per training-mode call
    is enough: the weights change slowly, and the estimate follows them. The gradient flows
    through sigma = u^T W v with u and v held fixed, as in Miyato et al. (2018).
    """

    def __init__(self, weight: Tensor, seed: int = 0):
        super().__init__()
        W = weight.detach().flatten(1)
        gen = torch.Generator().manual_seed(seed)
        u = F.normalize(torch.randn(W.shape[0], generator=gen), dim=0).to(W)
        self.register_buffer("u", u)
        self.register_buffer("v", F.normalize(W.t() @ u, dim=0))

    def forward(self, weight: Tensor) -> Tensor:
        W = weight.flatten(1)
        if self.training:
            with torch.no_grad():
                u, v, _ = power_iteration(W, self.u)
                self.u.copy_(u)
                self.v.copy_(v)
        # clones: the next training-mode call updates u and v in place, while this graph still needs them
        sigma = self.u.clone() @ W @ self.v.clone()
        return weight / sigma


def spectral_norm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Normalise ``module.weight`` by its largest singular value (in place; returns the module)."""
    parametrize.register_parametrization(module, "weight", SpectralNorm(module.weight, seed=seed))
    return module


def largest_singular_value(module: nn.Module) -> float:
    """sigma_max of the weight ``module`` uses now (normalised, if spectral norm is on), exactly (SVD)."""
    return float(torch.linalg.matrix_norm(module.weight.detach().flatten(1).cpu().double(), ord=2))  # float64 on the CPU


# ----------------------------------------------------------------------------- the networks


class ConvGenerator(nn.Module):
    """z (latent_dim) [+ one-hot label] -> Linear -> 2w x 7 x 7 -> 14 x 14 (w) -> 28 x 28, in [-1, 1]."""

    def __init__(self, latent_dim: int = 64, width: int = 32, conditional: bool = False, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.latent_dim, self.width, self.conditional, self.num_classes = latent_dim, width, conditional, num_classes
        extra = num_classes if conditional else 0
        self.project = nn.Sequential(
            nn.Linear(latent_dim + extra, 2 * width * 7 * 7), nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU()
        )
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1), nn.Tanh(),
        )

    def forward(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        if self.conditional:
            z = torch.cat([z, F.one_hot(y, self.num_classes).to(z)], dim=1)
        return self.up(self.project(z).view(-1, 2 * self.width, 7, 7))


class ConvDiscriminator(nn.Module):
    """28 x 28 -> 14 x 14 (w) -> 7 x 7 (2w) -> features phi(x) -> logit; LeakyReLU(0.2), no batch norm.

    ``spectral=True`` puts spectral normalisation on every layer. ``conditional=True`` adds the
    projection term embed(y) . phi(x) to the logit. ``auxiliary=True`` adds a second head that
    classifies phi(x) into the ten digits (an auxiliary classifier, as in AC-GAN).
    """

    def __init__(self, width: int = 32, spectral: bool = False, conditional: bool = False, auxiliary: bool = False,
                 num_classes: int = NUM_CLASSES):
        super().__init__()
        self.conditional = conditional
        layers = [
            nn.Conv2d(1, width, 4, stride=2, padding=1),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1),
            nn.Linear(2 * width * 7 * 7, 1),
        ]
        self.embed = nn.Embedding(num_classes, 2 * width * 7 * 7) if conditional else None
        # auxiliary classifier (AC-GAN, Odena et al. 2017): class logits from the same features
        self.classify = nn.Linear(2 * width * 7 * 7, num_classes) if auxiliary else None
        if spectral:
            for k, layer in enumerate(layers):
                spectral_norm(layer, seed=k)
            if self.embed is not None:
                spectral_norm(self.embed, seed=len(layers))
            if self.classify is not None:
                spectral_norm(self.classify, seed=len(layers) + 1)
        self.conv1, self.conv2, self.head = layers

    def features(self, x: Tensor) -> Tensor:
        h = F.leaky_relu(self.conv1(x), 0.2)
        return F.leaky_relu(self.conv2(h), 0.2).flatten(1)

    def scores(self, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The logit (real vs fake) and, with an auxiliary classifier, the ten class logits."""
        phi = self.features(x)
        logit = self.head(phi).squeeze(1)
        if self.conditional:
            logit = logit + (self.embed(y) * phi).sum(1)  # the projection term
        class_logits = self.classify(phi) if self.classify is not None else None
        return logit, class_logits

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.scores(x, y)[0]


# ----------------------------------------------------------------------------- the model


def hinge_discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """The hinge loss: E[max(0, 1 - a_real)] + E[max(0, 1 + a_fake)] (no logarithms, no saturation)."""
    return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()


def hinge_generator_loss(fake_logits: Tensor) -> Tensor:
    """The generator's side of the hinge game: -E[a_fake], raise the critic's score of the fakes."""
    return -fake_logits.mean()


def translate(x: Tensor, shift: int = 2) -> Tensor:
    """Shift each image by its own random offset of up to ``shift`` pixels in each direction,
    filling with the background (-1): the "translation" of differentiable augmentation
    (Zhao et al., 2020). Gradients flow through it to the generator."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift, shift, shift, shift), value=-1.0)
    dy = torch.randint(0, 2 * shift + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * shift + 1, (n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(n, h, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded[batch, 0, rows, cols].unsqueeze(1)


LOSSES = {
    "non-saturating": (discriminator_loss, generator_loss),
    "hinge": (hinge_discriminator_loss, hinge_generator_loss),
}


class DCGAN(GenerativeModel):
    """A convolutional GAN for 28x28 digits; ``spectral``: spectral norm in D; ``conditional``: p(x | y).

    ``width`` sets both networks' channels unless ``g_width`` / ``d_width`` are given;
    ``loss_type`` is "non-saturating" (binary cross-entropy, nats) or "hinge"; ``betas`` are
    Adam's for both players; ``lr_d`` / ``lr_g`` override the learning rate of
    :func:`course_lib.train.fit` for one player (two time-scales when they differ);
    ``augment`` shifts real and fake images alike by a few pixels before the discriminator sees
    them (:func:`translate`); ``aux_weight`` > 0 (conditional only) adds an auxiliary classifier
    to the discriminator and its cross-entropy, times the weight, to both players' losses.
    """

    paradigm = "adversarial"
    loss_unit = "nats (binary cross-entropy)"

    def __init__(self, latent_dim: int = 64, width: int = 32, spectral: bool = False, conditional: bool = False,
                 g_width: int | None = None, d_width: int | None = None, loss_type: str = "non-saturating",
                 betas: tuple[float, float] = (0.5, 0.999), lr_d: float | None = None, lr_g: float | None = None,
                 augment: bool = False, aux_weight: float = 0.0, num_classes: int = NUM_CLASSES):
        super().__init__()
        if loss_type not in LOSSES:
            raise ValueError(f"unknown loss_type {loss_type!r}: use one of {', '.join(LOSSES)}")
        self.latent_dim, self.conditional, self.loss_type, self.augment = latent_dim, conditional, loss_type, augment
        self.generator = ConvGenerator(latent_dim, g_width or width, conditional, num_classes)
        if aux_weight and not conditional:
            raise ValueError("aux_weight needs conditional=True: the auxiliary classifier predicts the label")
        self.aux_weight = aux_weight
        self.discriminator = ConvDiscriminator(d_width or width, spectral, conditional, auxiliary=aux_weight > 0,
                                               num_classes=num_classes)
        if loss_type == "hinge":
            self.loss_unit = "hinge loss (no unit)"
        lrs = {"discriminator": lr_d, "generator": lr_g}
        self.optimizer_overrides = {
            g: {"betas": tuple(betas), **({"lr": lr} if lr is not None else {})} for g, lr in lrs.items()
        }

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"discriminator": list(self.discriminator.parameters()), "generator": list(self.generator.parameters())}

    def _split(self, batch) -> tuple[Tensor, Tensor | None]:
        if self.conditional:
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise TypeError("a conditional DCGAN trains on (images, labels) batches")
            return batch[0], batch[1]
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        return batch, None

    def fake(self, n: int, y: Tensor | None = None) -> Tensor:
        return self.generator(torch.randn(n, self.latent_dim, device=self.device), y)

    def group_loss(self, group: str, batch) -> Tensor:
        x, y = self._split(batch)
        if x.dim() != 4 or x.shape[1:] != (1, 28, 28) or not x.is_floating_point():
            raise ValueError(f"DCGAN trains on float images (N, 1, 28, 28) in [-1, 1], got {x.dtype} {tuple(x.shape)}")
        d_loss, g_loss = LOSSES[self.loss_type]
        aug = translate if self.augment else (lambda t: t)
        D = self.discriminator
        if group == "discriminator":
            fake = self.fake(len(x), y).detach()  # this step trains the discriminator only
            real_logit, real_class = D.scores(aug(x), y)
            loss = d_loss(real_logit, D(aug(fake), y))
            if self.aux_weight:  # the auxiliary head learns the labels of the real images
                loss = loss + self.aux_weight * F.cross_entropy(real_class, y)
            return loss
        if group == "generator":
            fake_logit, fake_class = D.scores(aug(self.fake(len(x), y)), y)
            loss = g_loss(fake_logit)
            if self.aux_weight:  # and the generator is rewarded when its fakes are read as the label asked for
                loss = loss + self.aux_weight * F.cross_entropy(fake_class, y)
            return loss
        raise KeyError(f"DCGAN has groups 'discriminator' and 'generator', not {group!r}")

    def loss(self, batch) -> Tensor:
        return self.group_loss("discriminator", batch)

    @property
    def sampling_network(self) -> nn.Module:
        return self.generator

    @torch.inference_mode()
    def sample(self, n: int, y: Tensor | None = None, noise_scale: float = 1.0) -> Tensor:
        """``n`` images in [0, 1] from z ~ N(0, noise_scale^2 I) (labels ``y`` when conditional).

        A ``noise_scale`` below 1 samples a *different* distribution than the one trained (the
        "truncation trick"): less varied, often cleaner."""
        check_n(n, type(self).__name__)
        if self.conditional:
            if y is None or len(y) != n:
                raise ValueError(f"a conditional DCGAN needs n={n} labels y to sample")
            y = y.to(self.device)
        z = noise_scale * torch.randn(n, self.latent_dim, device=self.device)
        return (self.generator(z, y) + 1) / 2
