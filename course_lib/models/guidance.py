"""Diffusion in practice (lesson 13): few-step DDIM sampling, classifier-free guidance, latent diffusion.

* :func:`ddim_step` is one step of DDIM (Song, Meng & Ermon, 2021): from x_t to an earlier step
  t' with the predicted clean image and the predicted noise,
  x_t' = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps_hat + sigma z. With eta = 0
  (sigma = 0) the step is deterministic; with eta = 1 it is the ancestral step of lesson 12.
  :func:`ddim_sample` runs it over K evenly spaced steps of any trained noise predictor.
* :class:`ConditionalDDPM` is lesson 12's DDPM with a class-conditional U-Net, trained with label
  dropout (the null label in a share ``p_uncond`` of the batch), so that one network predicts
  both eps(x, t, c) and eps(x, t, null). :func:`cfg_eps` combines them into the guided noise
  (1 + w) eps(x, t, c) - w eps(x, t, null) (Ho & Salimans, 2021).
* :class:`LatentDiffusion` runs a small diffusion model on the codes of an autoencoder (here
  lesson 5's VAE) and decodes its samples (Rombach et al., 2022).

Step indices count from 0, as in :mod:`course_lib.models.diffusion`: index i is step t = i + 1 of
the math; t_prev = -1 stands for x_0 (abar = 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GenerativeModel, check_n
from .diffusion import DDPM, DDPMSchedule, Diffusion, predict_x0, respaced_times

# ----------------------------------------------------------------------------------------------
# DDIM


def ddim_step(s: DDPMSchedule, x_t: Tensor, eps: Tensor, t: int, t_prev: int, eta: float = 0.0,
              z: Tensor | None = None) -> Tensor:
    """One DDIM step from step index ``t`` to ``t_prev`` (< t; -1 means x_0), given the predicted noise.

    x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)
    sigma  = eta * sqrt((1 - abar_t') / (1 - abar_t)) * sqrt(1 - abar_t / abar_t')
    x_t'   = sqrt(abar_t') x0_hat + sqrt(1 - abar_t' - sigma^2) eps + sigma z,   z ~ N(0, I)
    """
    ab = s.abar[t]
    ab_prev = s.abar[t_prev] if t_prev >= 0 else torch.ones_like(ab)
    x0_hat = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).sqrt()
    x_prev = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma**2).clamp_min(0).sqrt() * eps
    if eta > 0:
        x_prev = x_prev + sigma * (torch.randn_like(x_t) if z is None else z)
    return x_prev


def clipped_eps(s: DDPMSchedule, x_t: Tensor, t: int, eps: Tensor) -> Tensor:
    """The noise that goes with the clipped clean image: clip x0_hat to [-1, 1], then solve the closed
    form for eps again, so that x_t = sqrt(abar_t) x0_hat + sqrt(1 - abar_t) eps still holds."""
    x0_hat = predict_x0(s, x_t, t, eps).clamp(-1, 1)
    return (x_t - s.abar[t].sqrt() * x0_hat) / (1 - s.abar[t]).sqrt()


@torch.inference_mode()
def ddim_sample(model: Diffusion, n: int, steps: int | None = None, eta: float = 0.0,
                x_T: Tensor | None = None) -> Tensor:
    """DDIM with ``steps`` network calls (default T) from x_T ~ N(0, I) (or the given ``x_T``).

    Works with any trained noise predictor of lesson 12 (``model.eps_model(x, t)``, ``model.schedule``);
    a model with ``clip`` set has its predicted x_0 clipped to [-1, 1], as lesson 12's sampler does.
    Returns x_0 in the model's space (floats); ``DDPM.to_levels`` turns images into grey levels.
    """
    check_n(n, "ddim_sample")
    if x_T is not None and len(x_T) != n:
        raise ValueError(f"x_T holds {len(x_T)} starting points for n={n} samples: pass n=len(x_T)")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM's variance), got {eta}")
    s = model.schedule
    times = respaced_times(s.steps, steps)
    device = s.abar.device
    x = torch.randn(n, *model.data_shape, device=device) if x_T is None else x_T.to(device)
    for i, t in enumerate(times):
        t_prev = times[i + 1] if i + 1 < len(times) else -1
        eps = model.eps_model(x, torch.full((len(x),), t, device=x.device))
        if getattr(model, "clip", False):
            eps = clipped_eps(s, x, t, eps)
        x = ddim_step(s, x, eps, t, t_prev, eta)
    return x


# ----------------------------------------------------------------------------------------------
# Classifier-free guidance


def drop_labels(y: Tensor, p_uncond: float, null: int, generator: torch.Generator | None = None) -> Tensor:
    """Label dropout: each label replaced by the null label ``null`` with probability ``p_uncond``."""
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must lie in [0, 1], got {p_uncond}")
    drop = torch.rand(len(y), generator=generator, device="cpu" if generator is not None else y.device)
    return torch.where(drop.to(y.device) < p_uncond, torch.full_like(y, null), y)


def cfg_eps(eps_cond: Tensor, eps_uncond: Tensor, w: float) -> Tensor:
    """The guided noise (1 + w) eps(x, t, c) - w eps(x, t, null): w = 0 conditional, w = -1 unconditional."""
    return eps_cond + w * (eps_cond - eps_uncond)


class GuidedEps(nn.Module):
    """eps~(x, t) = (1 + w) eps(x, t, c) - w eps(x, t, null) for fixed labels c: a noise predictor that the
    samplers of lessons 12 and 13 use as they are. Both predictions come from one batched call."""

    def __init__(self, net: nn.Module, labels: Tensor, w: float, null: int):
        super().__init__()
        self.net, self.w, self.null = net, float(w), null
        self.register_buffer("labels", labels.long())

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        if len(x) != len(self.labels):
            raise ValueError(f"{len(self.labels)} labels were given for {len(x)} images: sample n = len(labels)")
        if self.w == 0:
            return self.net(x, t, self.labels)
        nulls = torch.full_like(self.labels, self.null)
        both = self.net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([self.labels, nulls]))
        eps_cond, eps_uncond = both.chunk(2)
        return cfg_eps(eps_cond, eps_uncond, self.w)


class ConditionalDDPM(DDPM):
    """Lesson 12's DDPM with a class-conditional noise predictor eps_theta(x_t, t, c), trained with label
    dropout so that the same network, given the null label, is an unconditional model.

    ``loss((levels, labels))`` is L_simple with each label replaced by the null label (index
    ``num_classes``) with probability ``p_uncond``. ``guided(labels, w)`` is a plain :class:`DDPM`
    whose noise predictor is the guided one, so lesson 12's ancestral sampler and :func:`ddim_sample`
    run on it unchanged; ``sample(n, labels, w, steps, sampler)`` does that in one call.
    """

    def __init__(self, eps_model: nn.Module, schedule: DDPMSchedule, data_shape: tuple[int, ...],
                 num_classes: int = 10, p_uncond: float = 0.2, levels: int = 17, clip: bool = True):
        super().__init__(eps_model, schedule, data_shape, levels=levels, clip=clip)
        if not 0.0 < p_uncond < 1.0:
            raise ValueError(f"p_uncond must lie strictly between 0 and 1 (both modes trained), got {p_uncond}")
        self.num_classes, self.p_uncond = num_classes, p_uncond

    @classmethod
    def for_images(cls, image_shape: tuple[int, int, int] = (1, 8, 8), steps: int = 100, kind: str = "cosine",
                   channels: tuple[int, ...] = (16, 32), dropout: float = 0.0, levels: int = 17,
                   clip: bool = True, num_classes: int = 10, p_uncond: float = 0.2) -> "ConditionalDDPM":
        """A class-conditional DDPM with lesson 12's U-Net (plus a label embedding)."""
        from .unet import UNet

        net = UNet(image_shape[0], channels=channels, steps=steps, dropout=dropout, num_classes=num_classes)
        return cls(net, DDPMSchedule(steps, kind=kind), image_shape, num_classes, p_uncond, levels, clip)

    @property
    def null(self) -> int:
        """The index of the null label (the unconditional mode)."""
        return self.num_classes

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """L_simple with label dropout: E ||eps - eps_theta(x_t, t, c')||^2, c' = null with probability p_uncond."""
        levels, labels = self._pair(batch)
        x0 = self.to_model(levels)
        t = torch.randint(0, self.schedule.steps, (len(x0),), device=x0.device)
        eps = torch.randn_like(x0)
        labels = drop_labels(labels, self.p_uncond, self.null)
        return F.mse_loss(self.eps_model(self.schedule.q_sample(x0, t, eps), t, labels), eps)

    def _pair(self, batch) -> tuple[Tensor, Tensor]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError("ConditionalDDPM trains on (images, labels) pairs: pass data=(x_train, y_train) to train.fit")
        levels, labels = batch
        if labels.dtype != torch.long or labels.shape != (len(levels),):
            raise ValueError("labels must be an int64 tensor with one class index per image")
        return levels, labels

    def guided(self, labels: Tensor, w: float = 0.0) -> DDPM:
        """A DDPM whose noise predictor is the guided eps~ for these labels (the null label: unconditional)."""
        labels = torch.as_tensor(labels, dtype=torch.long, device=self.device)
        net = GuidedEps(self.eps_model, labels, w, self.null)
        return DDPM(net, self.schedule, self.data_shape, levels=self.levels, clip=self.clip)

    def unconditional(self, n: int) -> DDPM:
        """The same network with the null label for all ``n`` samples: an unconditional DDPM."""
        return self.guided(torch.full((n,), self.null, dtype=torch.long), 0.0)

    @torch.inference_mode()
    def sample(self, n: int, labels: Tensor | None = None, w: float = 0.0, steps: int | None = None,
               sampler: str = "ancestral", eta: float = 0.0) -> Tensor:
        """``n`` images as grey levels: of the given classes (None: unconditional), guidance scale ``w``,
        ``steps`` network calls of the guided predictor, ``sampler`` "ancestral" (lesson 12) or "ddim"."""
        check_n(n, type(self).__name__)
        if labels is None:
            if w != 0:
                raise ValueError("guidance (w != 0) needs labels: pass one class per sample")
            labels = torch.full((n,), self.null, dtype=torch.long)
        model = self.guided(labels, w)
        if sampler == "ancestral":
            return model.sample(n, steps=steps)
        if sampler == "ddim":
            return self.to_levels(ddim_sample(model, n, steps=steps, eta=eta))
        raise ValueError(f"unknown sampler {sampler!r}: use 'ancestral' or 'ddim'")


# ----------------------------------------------------------------------------------------------
# Latent diffusion


class LatentDiffusion(GenerativeModel):
    """A diffusion model on the codes of a trained (frozen) autoencoder, decoded by its decoder.

    ``autoencoder`` needs ``encode(x) -> (mu, log_var)``, ``latent_dim`` and ``decoder_logits(z)``
    (lesson 5's VAEs have them). The codes are standardised per coordinate with the mean and
    spread of the training codes (``shift``, ``scale``), so that the diffusion sees unit-scale data.
    The autoencoder is trained first and frozen; the diffusion trains on its encoder's outputs:
    ``codes(images)`` computes (mu, log_var) once, and ``loss((mu, log_var))`` draws a fresh code
    z ~ q(z | x) per image at every step and returns the diffusion's L_simple on it.
    ``sample(n, steps)`` runs DDIM in the latent space and decodes.
    """

    paradigm = "latent-variable + diffusion"
    loss_unit = "MSE of the predicted noise (latent space)"

    def __init__(self, autoencoder: nn.Module, prior: Diffusion, shift: Tensor, scale: Tensor, decode: str = "mean"):
        super().__init__()
        if decode not in ("mean", "sample"):
            raise ValueError(f"decode must be 'mean' (round the decoder's mean) or 'sample' (draw every pixel), got {decode!r}")
        self.autoencoder, self.prior, self.decode_mode = autoencoder, prior, decode
        for p in self.autoencoder.parameters():
            p.requires_grad_(False)
        self.register_buffer("shift", shift.detach().clone())
        self.register_buffer("scale", scale.detach().clone())

    @classmethod
    def on(cls, autoencoder: nn.Module, x_train: Tensor, steps: int = 100, hidden: int = 128,
           decode: str = "mean") -> "LatentDiffusion":
        """A latent diffusion model with lesson 12's MLP noise predictor (``Diffusion.for_points``) on the
        codes of ``autoencoder``, standardised with the encoder means of ``x_train``."""
        autoencoder.eval()
        with torch.no_grad():
            mu, _ = autoencoder.encode(x_train)
        prior = Diffusion.for_points(data_dim=autoencoder.latent_dim, steps=steps, hidden=hidden)
        return cls(autoencoder, prior, mu.mean(0), mu.std(0).clamp_min(1e-3), decode=decode)

    def train(self, mode: bool = True) -> "LatentDiffusion":
        """Train mode for the diffusion only: the frozen autoencoder stays in eval mode (no dropout)."""
        super().train(mode)
        self.autoencoder.eval()
        return self

    @torch.no_grad()
    def encode(self, levels: Tensor) -> Tensor:
        """One draw z ~ q(z | x) per image, standardised: the data the latent diffusion models."""
        mu, log_var = self.autoencoder.encode(levels.to(self.shift.device))
        z = mu + (0.5 * log_var).exp() * torch.randn_like(mu)
        return (z - self.shift) / self.scale

    def decode(self, codes: Tensor) -> Tensor:
        """Standardised codes -> images as grey levels (the rounded mean image, or a draw of every pixel)."""
        z = codes * self.scale + self.shift
        if self.decode_mode == "mean":
            return self.autoencoder.decode_mean(z).round().long()
        logits = self.autoencoder.decoder_logits(z)
        shape = (len(z), *self.autoencoder.image_shape)
        return torch.distributions.Categorical(logits=logits).sample().reshape(shape)

    @torch.no_grad()
    def codes(self, levels: Tensor) -> tuple[Tensor, Tensor]:
        """The frozen encoder's q(z | x) = N(mu, diag exp(log_var)) of each image: the latent diffusion's data."""
        return self.autoencoder.encode(levels.to(self.shift.device))

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        """L_simple of the latent diffusion at a fresh draw z ~ q(z | x), standardised; batch = (mu, log_var)."""
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError("LatentDiffusion trains on the encoder's outputs: pass data=model.codes(x_train) to train.fit")
        mu, log_var = batch
        z = mu + (0.5 * log_var).exp() * torch.randn_like(mu)
        return self.prior.loss((z - self.shift) / self.scale)

    @property
    def sampling_network(self) -> nn.Module:
        return self.prior.eps_model

    @torch.inference_mode()
    def sample(self, n: int, steps: int | None = None, eta: float = 0.0) -> Tensor:
        """``steps`` calls of the latent noise predictor (DDIM), then one call of the decoder."""
        return self.decode(ddim_sample(self.prior, n, steps=steps, eta=eta))

    @torch.inference_mode()
    def sample_prior(self, n: int) -> Tensor:
        """The autoencoder alone, as a VAE samples: z ~ N(0, I) (unstandardised), one decoder call."""
        z = torch.randn(n, self.autoencoder.latent_dim, device=self.shift.device)
        return self.decode((z - self.shift) / self.scale)


def reconstruction_scores(reconstruct, pool: Tensor, clf, n: int, repeats: int = 5, train: Tensor | None = None,
                          seed: int = 0):
    """Lesson 9's real-vs-real baseline with the "samples" half replaced by its reconstructions.

    Each repeat splits ``pool`` (real held-out images) exactly as :func:`course_lib.evaluation.real_baseline`
    does with the same ``seed``: ``reconstruct`` is applied to the first ``n`` images, which are scored
    against the next ``n`` (the same reference sets as every other row), never against themselves.
    Returns a :class:`course_lib.evaluation.Baseline` (mean and spread over the repeats).
    """
    import numpy as np
    from dataclasses import fields

    from ..evaluation import Baseline, SampleReport, evaluate_samples

    if 2 * n > len(pool):
        raise ValueError(f"the pool has {len(pool)} images: two halves of n={n} need {2 * n}")
    gen = torch.Generator().manual_seed(seed)
    reports = []
    for _ in range(repeats):
        perm = torch.randperm(len(pool), generator=gen)
        rest = pool[perm[2 * n:]] if len(pool) > 2 * n else pool[perm[n:2 * n]]
        reports.append(evaluate_samples(reconstruct(pool[perm[:n]]), pool[perm[n:2 * n]], clf, train=train,
                                        heldout=rest if train is not None else None))
    table = np.array([[getattr(r, f.name) for f in fields(SampleReport)] for r in reports], dtype=float)
    mean = SampleReport(**{f.name: v for f, v in zip(fields(SampleReport), table.mean(0))})
    std = SampleReport(**{f.name: v for f, v in zip(fields(SampleReport), table.std(0, ddof=1))})
    mean.n, std.n = n, 0
    return Baseline(mean=mean, std=std, repeats=repeats, reports=reports)


# ----------------------------------------------------------------------------------------------
# Cost


def multiply_adds(net: nn.Module, *inputs) -> int:
    """Multiply-adds of one forward pass of ``net`` on ``inputs``, per row of the batch, counted on its
    Conv2d and Linear layers (normalisations and activations add a few per cent, not counted)."""
    total = [0]

    def conv(m: nn.Conv2d, _inp, out: Tensor) -> None:
        total[0] += out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def linear(m: nn.Linear, _inp, out: Tensor) -> None:
        total[0] += out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv) for m in net.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(linear) for m in net.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            net(*inputs)
    finally:
        for h in hooks:
            h.remove()
    return total[0] // len(inputs[0])


__all__ = [
    "ddim_step", "ddim_sample", "respaced_times", "clipped_eps", "drop_labels", "cfg_eps", "GuidedEps",
    "ConditionalDDPM", "LatentDiffusion", "reconstruction_scores", "multiply_adds",
]
