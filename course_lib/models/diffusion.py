"""Diffusion models: DDPM (Ho et al., 2020).

Forward process, fixed: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), which has the
closed form q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with abar_t = prod_{s<=t} (1 - beta_s).
A network eps_theta(x_t, t) learns to predict the noise in x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
by mean squared error. Sampling runs the reverse chain from pure noise, one network call per step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GenerativeModel, check_n, check_points, mlp


class DDPMSchedule(nn.Module):
    """The noise schedule and every quantity derived from it, as buffers (they follow ``.to``).

    ``kind="cosine"`` (Nichol & Dhariwal, 2021) works for any number of steps;
    ``kind="linear"`` is the original schedule, beta from 1e-4 to 0.02 scaled to T steps.
    """

    def __init__(self, steps: int = 100, kind: str = "cosine", max_beta: float = 0.5):
        super().__init__()
        if steps < 1:
            raise ValueError(f"a schedule needs at least one step, got {steps}")
        if kind == "cosine":
            s = 0.008
            grid = torch.arange(steps + 1, dtype=torch.float64) / steps
            f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
            abar = f / f[0]
            # Capped at 0.5 (Nichol & Dhariwal cap at 0.999): a reverse step divides by sqrt(1 - beta_t),
            # and with few steps the last betas of the raw cosine schedule come close to 1.
            betas = (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)
        elif kind == "linear":
            scale = 1000 / steps
            betas = torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
        else:
            raise ValueError(f"unknown schedule {kind!r}: use 'cosine' or 'linear'")
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.steps = steps
        for name, value in {
            "betas": betas,
            "alphas": alphas,
            "abar": abar,
            "abar_prev": abar_prev,
            # variance of q(x_{t-1} | x_t, x_0), the "beta tilde" of the DDPM paper
            "posterior_var": betas * (1 - abar_prev) / (1 - abar),
        }.items():
            self.register_buffer(name, value.float())

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, for integer steps t in [0, T)."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        ab = self.abar[t].view(shape)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def q_sample(x0: Tensor, t: Tensor, eps: Tensor, betas: Tensor) -> Tensor:
    """The forward process in closed form, from the betas alone: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

    ``t`` holds one step index per row, counted from 0 (index i is step i + 1 of the math), and
    abar_t = prod_{s <= t} (1 - beta_s). :meth:`DDPMSchedule.q_sample` is the same map with abar
    precomputed; lesson 1 asks the reader to write this function.
    """
    abar = torch.cumprod(1 - betas, dim=0)[t].view((-1,) + (1,) * (x0.dim() - 1))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def ancestral_step(s: DDPMSchedule, x_t: Tensor, eps_pred: Tensor, t: int, z: Tensor) -> Tensor:
    """One reverse step, x_t -> x_{t-1}: remove the predicted noise, then add fresh noise z ~ N(0, I).

    mean = (x_t - beta_t / sqrt(1 - abar_t) * eps_pred) / sqrt(alpha_t), std = sqrt(beta_tilde_t),
    where beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) is 0 at the last step (t index 0).
    """
    mean = (x_t - s.betas[t] / (1 - s.abar[t]).sqrt() * eps_pred) / s.alphas[t].sqrt()
    return mean + s.posterior_var[t].sqrt() * z


class TimeMLP(nn.Module):
    """eps_theta(x, t) for flat data: an MLP on x concatenated with a sinusoidal embedding of t."""

    def __init__(self, data_dim: int = 2, hidden: int = 128, time_dim: int = 32, steps: int = 100):
        super().__init__()
        self.time_dim, self.steps = time_dim, steps
        self.net = mlp([data_dim + time_dim, hidden, hidden, hidden, data_dim])

    def embed(self, t: Tensor) -> Tensor:
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
        angles = (t.float() / self.steps * 1000.0)[:, None] * freqs[None] / 10.0
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, self.embed(t)], dim=-1))


class Diffusion(GenerativeModel):
    paradigm = "diffusion"
    loss_unit = "MSE of the predicted noise"

    def __init__(self, eps_model: nn.Module, schedule: DDPMSchedule, data_shape: tuple[int, ...]):
        super().__init__()
        self.eps_model, self.schedule, self.data_shape = eps_model, schedule, tuple(data_shape)

    @classmethod
    def for_points(cls, data_dim: int = 2, steps: int = 100, hidden: int = 128) -> "Diffusion":
        """A DDPM for points in R^data_dim with an MLP noise predictor."""
        return cls(TimeMLP(data_dim, hidden, steps=steps), DDPMSchedule(steps), (data_dim,))

    def _check(self, x: Tensor) -> None:
        if len(self.data_shape) == 1:
            check_points(x, self.data_shape[0], type(self).__name__)
        elif tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"{type(self).__name__} expects (N, {self.data_shape}), got {tuple(x.shape)}")

    def loss(self, x0: Tensor) -> Tensor:
        """E_{t, eps} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2 (mean per coordinate)."""
        self._check(x0)
        t = torch.randint(0, self.schedule.steps, (len(x0),), device=x0.device)
        eps = torch.randn_like(x0)
        return F.mse_loss(self.eps_model(self.schedule.q_sample(x0, t, eps), t), eps)

    @property
    def sampling_network(self) -> nn.Module:
        return self.eps_model

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Ancestral sampling: T network calls, from x_T ~ N(0, I) down to x_0."""
        check_n(n, type(self).__name__)
        return self.reverse_chain(torch.randn(n, *self.data_shape, device=self.device))

    @torch.no_grad()
    def reverse_chain(self, x: Tensor) -> Tensor:
        """From x_T (pure noise) to x_0: one network call per step, fresh noise at every step but the last."""
        for t in reversed(range(self.schedule.steps)):
            eps_pred = self.eps_model(x, torch.full((len(x),), t, device=x.device))
            z = torch.randn_like(x) if t > 0 else torch.zeros_like(x)
            x = ancestral_step(self.schedule, x, eps_pred, t, z)
        return x
