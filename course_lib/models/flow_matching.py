"""Flow matching with straight paths (rectified flow): the ODE family trained directly.

Time convention (the same as the SDEs of :mod:`course_lib.models.sde`): t = 0 is the data,
t = 1 the noise. A data point x_0 and a noise draw x_1 ~ N(0, I) are joined by the straight line

    x_t = (1 - t) x_0 + t x_1,       whose velocity is  d x_t / dt = x_1 - x_0       (the conditional velocity).

The *marginal* velocity u_t(x) = E[x_1 - x_0 | x_t = x] moves the whole distribution p_t along the
same path of marginals, so the ODE dx/dt = u_t(x), run from t = 1 to t = 0, turns noise into data.
u_t is unknown, but regressing a network v_theta(x, t) on the conditional velocity,

    L_CFM(theta) = E_{t ~ U[0, 1], x_0, x_1} || v_theta(x_t, t) - (x_1 - x_0) ||^2,

has the same minimiser and the same gradient as regressing it on u_t (the two losses differ by a
constant). Lipman et al. (2023) and Liu et al. (2023) write the same path with the roles of the
ends swapped (t = 0 noise, t = 1 data); only the direction of time differs.

The trained model samples with any ODE solver (a few Euler steps, or dopri5) and has an exact
log-likelihood through the ODE machinery of :mod:`course_lib.models.sde`.
For Gaussian data and Gaussian mixtures u_t has a closed form (:func:`gaussian_marginal_velocity`,
:func:`mixture_marginal_velocity`): the known answers of the tests and of the lesson.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .base import GenerativeModel, check_n, check_points, mlp
from .sde import ode_log_prob, ode_solve

VelocityFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "conditional_path", "conditional_velocity", "cfm_loss", "gaussian_marginal_velocity",
    "mixture_marginal_velocity", "VelocityMLP", "FlowMatching", "standard_normal_log_prob",
]


def _col(t: Tensor | float, like: Tensor) -> Tensor:
    t = torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return t.view((-1,) + (1,) * (like.dim() - 1)) if t.dim() == 1 else t


def conditional_path(x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
    """The straight line from data x_0 (t = 0) to noise x_1 (t = 1): x_t = (1 - t) x_0 + t x_1."""
    t = _col(t, x0)
    return (1 - t) * x0 + t * x1


def conditional_velocity(x0: Tensor, x1: Tensor) -> Tensor:
    """d x_t / dt along the straight line: x_1 - x_0, the same at every t."""
    return x1 - x0


def cfm_loss(velocity: VelocityFn, x0: Tensor, x1: Tensor, t: Tensor) -> Tensor:
    """The conditional flow matching loss: mean over the batch and the coordinates of
    (v(x_t, t) - (x_1 - x_0))^2, with x_t = (1 - t) x_0 + t x_1 and one time t per row."""
    x_t = conditional_path(x0, x1, t)
    return (velocity(x_t, t) - conditional_velocity(x0, x1)).square().mean()


def gaussian_marginal_velocity(x: Tensor, t: Tensor | float, mean: Tensor | float, std: float) -> Tensor:
    """The exact u_t(x) = E[x_1 - x_0 | x_t = x] for data N(mean, std^2 I) and noise N(0, I).

    x_0, x_1 and x_t are jointly Gaussian: E[x_1 - x_0] = -mean, and per coordinate
    Cov(x_1 - x_0, x_t) = t - (1 - t) std^2, Var(x_t) = (1 - t)^2 std^2 + t^2, so
    u_t(x) = -mean + (t - (1 - t) std^2) / ((1 - t)^2 std^2 + t^2) * (x - (1 - t) mean).
    """
    t = _col(t, x)
    mean = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
    var_t = (1 - t) ** 2 * std**2 + t**2
    return -mean + (t - (1 - t) * std**2) / var_t * (x - (1 - t) * mean)


def mixture_marginal_velocity(x: Tensor, t: Tensor | float, means: Tensor, std: float,
                              weights: Tensor | None = None) -> Tensor:
    """The exact u_t(x) for data from the mixture sum_k w_k N(mu_k, std^2 I) (``means`` (K, D)), x (N, D).

    Given the component k, x_t is N((1 - t) mu_k, v_t I) with v_t = (1 - t)^2 std^2 + t^2, and
    :func:`gaussian_marginal_velocity` holds within it; u_t averages those velocities with the
    responsibilities r_k(x) = P(k | x_t = x). Computed in float64.
    """
    x64, means = x.cpu().double(), torch.as_tensor(means).cpu().double()  # float64 on the CPU (MPS has none)
    t = torch.as_tensor(t).detach().cpu().double()
    t = (t.expand(len(x)) if t.dim() == 0 else t).reshape(-1, 1, 1)           # (N, 1, 1)
    var_t = (1 - t) ** 2 * std**2 + t**2
    centres = (1 - t) * means[None]                                           # (N, K, D)
    w = torch.full((len(means),), 1.0 / len(means), dtype=torch.float64) if weights is None \
        else torch.as_tensor(weights).detach().cpu().double()
    diff = x64[:, None, :] - centres                                          # (N, K, D)
    resp = torch.softmax(w.log()[None] - diff.square().sum(-1) / (2 * var_t[..., 0]), dim=1)  # (N, K)
    per_k = -means[None] + (t - (1 - t) * std**2) / var_t * diff              # (N, K, D)
    return (resp[..., None] * per_k).sum(1).to(x.device, x.dtype)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I), one value per row."""
    d = z[0].numel()
    return -0.5 * z.flatten(1).square().sum(1) - 0.5 * d * math.log(2 * math.pi)


class VelocityMLP(nn.Module):
    """v_theta(x, t) for flat data: an MLP on x and smooth features of t in [0, 1], sin and cos of k pi t."""

    def __init__(self, data_dim: int = 2, hidden: int = 128, layers: int = 3, time_features: int = 16):
        super().__init__()
        if time_features % 2:
            raise ValueError(f"time_features must be even, got {time_features}")
        self.register_buffer("freqs", math.pi * torch.arange(1, time_features // 2 + 1, dtype=torch.float32))
        self.net = mlp([data_dim + time_features] + [hidden] * layers + [data_dim])

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        t = t.expand(len(x)) if t.dim() == 0 else t
        angles = t[:, None] * self.freqs[None]
        return self.net(torch.cat([x, angles.sin(), angles.cos()], dim=-1))


class FlowMatching(GenerativeModel):
    """A velocity field v_theta(x, t) trained by conditional flow matching on straight paths.

    ``loss(x0)``: :func:`cfm_loss` at t ~ U[0, 1] and fresh noise x_1 ~ N(0, I); ``loss((x0, x1))``
    with given pairs (a reflow step trains on pairs the previous model coupled). ``sample``: the
    ODE from x_1 ~ N(0, I) at t = 1 to t = 0, by ``steps`` Euler steps or by dopri5. ``log_prob``:
    exact through the ODE (the divergence computed exactly, D backward passes per call).
    """

    paradigm = "flow (ODE)"
    loss_unit = "squared velocity error per coordinate"

    def __init__(self, net: nn.Module, data_dim: int):
        super().__init__()
        self.net, self.data_dim = net, data_dim

    @classmethod
    def for_points(cls, data_dim: int = 2, hidden: int = 128, layers: int = 3) -> "FlowMatching":
        return cls(VelocityMLP(data_dim, hidden, layers), data_dim)

    @property
    def sampling_network(self) -> nn.Module:
        return self.net

    def velocity(self, x: Tensor, t) -> Tensor:
        return self.net(x, torch.as_tensor(t, dtype=x.dtype, device=x.device))

    def loss(self, batch: Tensor | tuple[Tensor, Tensor] | list[Tensor]) -> Tensor:
        x0, x1 = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
        check_points(x0, self.data_dim, type(self).__name__)
        x1 = torch.randn_like(x0) if x1 is None else x1
        t = torch.rand(len(x0), device=x0.device)
        return cfm_loss(self.velocity, x0, x1, t)

    def decode(self, z: Tensor, steps: int | None = None, rtol: float = 1e-5, atol: float = 1e-5) -> tuple[Tensor, int]:
        """Noise -> data: the ODE from t = 1 to t = 0, ``steps`` Euler steps or dopri5 (None); and NFE."""
        method = "dopri5" if steps is None else "euler"
        return ode_solve(self.velocity, z, 1.0, 0.0, method=method, rtol=rtol, atol=atol, steps=steps)

    def encode(self, x: Tensor, steps: int | None = None, rtol: float = 1e-5, atol: float = 1e-5) -> tuple[Tensor, int]:
        """Data -> noise: the ODE from t = 0 to t = 1; and NFE."""
        method = "dopri5" if steps is None else "euler"
        return ode_solve(self.velocity, x, 0.0, 1.0, method=method, rtol=rtol, atol=atol, steps=steps)

    @torch.inference_mode()
    def sample(self, n: int, steps: int | None = None, rtol: float = 1e-5, atol: float = 1e-5,
               z: Tensor | None = None) -> Tensor:
        check_n(n, type(self).__name__)
        z = torch.randn(n, self.data_dim, device=self.device) if z is None else z.to(self.device)
        return self.decode(z, steps, rtol, atol)[0]

    def log_prob_nfe(self, x: Tensor, rtol: float = 1e-5, atol: float = 1e-5) -> tuple[Tensor, int]:
        """log p_0(x) through the ODE (exact divergence), and the number of velocity calls."""
        check_points(x, self.data_dim, type(self).__name__)
        logp, _, nfe = ode_log_prob(self.velocity, x, standard_normal_log_prob, 0.0, 1.0,
                                    divergence="exact", rtol=rtol, atol=atol)
        return logp, nfe

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density of the model at x (up to the ODE solver's error), one value per row."""
        return self.log_prob_nfe(x)[0]

    @torch.inference_mode()
    def reflow_pairs(self, n: int, rtol: float = 1e-5, atol: float = 1e-5) -> tuple[Tensor, Tensor]:
        """(x0, x1) pairs coupled by this model's ODE: x1 ~ N(0, I), x0 its image at t = 0 (reflow)."""
        x1 = torch.randn(n, self.data_dim, device=self.device)
        return self.decode(x1, None, rtol, atol)[0], x1

