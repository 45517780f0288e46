"""Energy-based models: p_theta(x) = exp(-E_theta(x)) / Z_theta, with Z_theta never computed.

Lesson 10 teaches this module, top to bottom:

* :func:`langevin_step` and :func:`langevin`: the unadjusted Langevin algorithm (ULA),
  ``x <- x - eps * grad E(x) + sqrt(2 eps T) * noise``, which samples exp(-E/T) as eps -> 0 and
  is biased at a finite step (no Metropolis correction);
* :func:`mala_step`: the same proposal with a Metropolis-Hastings accept/reject, which removes
  that bias (the lesson's coding exercise);
* :func:`cd_loss`: the contrastive-divergence surrogate whose gradient is
  E_data[grad_theta E] - E_model[grad_theta E], the negative log-likelihood gradient, plus
  Du & Mordatch's (2019) penalty on the energies' size;
* :class:`EBM`: an energy network with a replay buffer of persistent Langevin chains, following
  the interface of :class:`course_lib.models.base.GenerativeModel` (``loss``, ``sample``,
  ``energy``; no ``log_prob``: Z is unknown);
* :func:`grid_log_density`: log exp(-E)/Z on a 1D or 2D grid with Z by quadrature, for the
  known-answer checks of low-dimensional models.

Sampling needs gradients with respect to ``x`` (never the parameters): the samplers compute them
with ``torch.autograd.grad`` inside ``torch.enable_grad()``, so they run under ``torch.no_grad()``
(not under ``torch.inference_mode()``, whose tensors cannot enter autograd).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .base import GenerativeModel, check_n, mlp

Energy = Callable[[Tensor], Tensor]


# ----------------------------------------------------------------------------- sampling


def energy_and_grad(energy: Energy, x: Tensor) -> tuple[Tensor, Tensor]:
    """E(x) per example, shape (N,), and its gradient with respect to ``x`` (no parameter gradients)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        e = energy(x)
        (grad,) = torch.autograd.grad(e.sum(), x)
    return e.detach(), grad


def langevin_step(x: Tensor, grad: Tensor, step_size: float, temperature: float = 1.0,
                  noise: Tensor | None = None) -> Tensor:
    """One unadjusted Langevin step: x - eps * grad E(x) + sqrt(2 eps T) * noise, noise ~ N(0, I)."""
    if noise is None:
        noise = torch.randn_like(x)
    return x - step_size * grad + math.sqrt(2 * step_size * temperature) * noise


def _check_sampler(x: Tensor, steps: int, step_size: float, temperature: float) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise TypeError(f"langevin needs a floating-point tensor of starting points, got {type(x).__name__}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature} (T = 1 samples exp(-E) itself)")


def langevin(energy: Energy, x: Tensor, steps: int, step_size: float, temperature: float = 1.0,
             clamp: tuple[float, float] | None = None) -> Tensor:
    """Run ``steps`` Langevin steps from ``x`` (each row one chain); return where the chains end."""
    _check_sampler(x, steps, step_size, temperature)
    for _ in range(steps):
        _, grad = energy_and_grad(energy, x)
        x = langevin_step(x, grad, step_size, temperature)
        if clamp is not None:  # keep images in their pixel range (a projection, not part of Langevin)
            x = x.clamp(*clamp)
    return x.detach()


def mala_step(energy: Energy, x: Tensor, step_size: float, noise: Tensor | None = None,
              uniform: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """One Metropolis-adjusted Langevin step at temperature 1: returns (new x, accepted mask (N,)).

    Proposal y = x - eps grad E(x) + sqrt(2 eps) noise, i.e. q(y | x) = N(x - eps grad E(x), 2 eps I);
    accept with probability min(1, exp(-E(y)) q(x | y) / (exp(-E(x)) q(y | x))).
    """
    if noise is None:
        noise = torch.randn_like(x)
    if uniform is None:
        uniform = torch.rand(x.shape[0], device=x.device, dtype=x.dtype)
    e_x, g_x = energy_and_grad(energy, x)
    y = x - step_size * g_x + math.sqrt(2 * step_size) * noise
    e_y, g_y = energy_and_grad(energy, y)
    dims = tuple(range(1, x.dim()))
    log_q_y_given_x = -((y - x + step_size * g_x) ** 2).sum(dims) / (4 * step_size)
    log_q_x_given_y = -((x - y + step_size * g_y) ** 2).sum(dims) / (4 * step_size)
    log_accept = (e_x - e_y) + log_q_x_given_y - log_q_y_given_x
    accepted = torch.log(uniform) < log_accept
    mask = accepted.view(-1, *([1] * (x.dim() - 1)))
    return torch.where(mask, y, x).detach(), accepted


# ----------------------------------------------------------------------------- training


def cd_loss(energy_data: Tensor, energy_model: Tensor, penalty: float = 0.0) -> Tensor:
    """Contrastive divergence: mean E(data) - mean E(negatives), plus penalty * mean of the squared energies.

    The negatives must be detached samples: then the gradient in theta is
    E_data[grad E] - E_model[grad E] (+ the penalty's), the negative log-likelihood's gradient.
    """
    return energy_data.mean() - energy_model.mean() + penalty * (energy_data**2 + energy_model**2).mean()


class EBM(GenerativeModel):
    """An energy network E_theta(x) with a replay buffer of persistent Langevin chains (Du & Mordatch 2019).

    Every training step takes ``batch`` negatives from the buffer (a share ``reinit`` of them
    restarted from uniform noise on ``box``), moves them ``chain_steps`` Langevin steps, writes
    them back, and returns :func:`cd_loss` on the data batch against them. ``data_noise`` adds
    Gaussian noise of that size to the data (it smooths a data set of discrete values).
    The buffer is a registered buffer: checkpoints save it, and resuming continues the chains.
    """

    paradigm = "energy-based"
    loss_unit = "energy units (CD surrogate, not nats)"

    def __init__(
        self,
        net: nn.Module,
        data_shape: Sequence[int],
        box: tuple[float, float] = (-3.0, 3.0),
        buffer_size: int = 10_000,
        reinit: float = 0.05,
        chain_steps: int = 20,
        step_size: float = 0.01,
        temperature: float = 1.0,
        penalty: float = 0.1,
        data_noise: float = 0.0,
        clamp: bool = False,
    ):
        super().__init__()
        if not 0.0 <= reinit <= 1.0:
            raise ValueError(f"reinit is the share of chains restarted from noise, in [0, 1]; got {reinit}")
        if box[0] >= box[1]:
            raise ValueError(f"box must be (low, high) with low < high, got {box}")
        self.net = net
        self.data_shape = tuple(int(s) for s in data_shape)
        self.box = (float(box[0]), float(box[1]))
        self.reinit, self.chain_steps, self.step_size = reinit, chain_steps, step_size
        self.temperature, self.penalty, self.data_noise = temperature, penalty, data_noise
        self.clamp = self.box if clamp else None
        self.register_buffer("replay", self.noise(buffer_size))

    @classmethod
    def mlp(cls, data_shape: Sequence[int], hidden: int = 128, layers: int = 3, **kwargs) -> "EBM":
        """An MLP energy on the flattened input; SiLU units keep E smooth, so grad E exists everywhere."""
        dim = math.prod(data_shape)
        return cls(nn.Sequential(nn.Flatten(), mlp([dim] + [hidden] * layers + [1])), data_shape=data_shape, **kwargs)

    def noise(self, n: int) -> Tensor:
        """Uniform noise on the box: where chains start."""
        lo, hi = self.box
        device = self.replay.device if hasattr(self, "replay") else None
        return lo + (hi - lo) * torch.rand(n, *self.data_shape, device=device)

    def energy(self, x: Tensor) -> Tensor:
        """E_theta(x), one number per example: shape (N,)."""
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"energy expects a batch of shape (N, {', '.join(map(str, self.data_shape))}), "
                             f"got {tuple(x.shape)}")
        return self.net(x).reshape(len(x))

    def chains(self, x: Tensor, steps: int | None = None, step_size: float | None = None,
               temperature: float | None = None) -> Tensor:
        """Langevin from ``x`` with the model's settings (each overridable)."""
        return langevin(self.energy, x, self.chain_steps if steps is None else steps,
                        self.step_size if step_size is None else step_size,
                        self.temperature if temperature is None else temperature, self.clamp)

    def negatives(self, n: int) -> Tensor:
        """n negatives for one training step: persistent chains from the buffer, moved on and written back."""
        idx = torch.randint(len(self.replay), (n,), device=self.replay.device)
        start = self.replay[idx]
        fresh = torch.rand(n, device=start.device) < self.reinit
        start[fresh] = self.noise(int(fresh.sum()))
        x = self.chains(start)
        self.replay[idx] = x
        return x

    def loss(self, batch: Tensor) -> Tensor:
        """The contrastive-divergence surrogate on a data batch against as many fresh negatives."""
        if self.data_noise > 0:
            batch = batch + self.data_noise * torch.randn_like(batch)
        negatives = self.negatives(len(batch))
        return cd_loss(self.energy(batch), self.energy(negatives), self.penalty)

    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, step_size: float | None = None,
               temperature: float | None = None, x0: Tensor | None = None) -> Tensor:
        """n samples: fresh chains from uniform noise (or from ``x0``), run ``steps`` Langevin steps.

        Langevin needs grad E with respect to x, so this runs under no_grad, not inference_mode.
        """
        check_n(n, "EBM")
        x = self.noise(n) if x0 is None else x0.to(self.replay.device)
        return self.chains(x, steps, step_size, temperature)

    def from_buffer(self, n: int) -> Tensor:
        """n of the persistent chains' current states (the samples this model trains against)."""
        check_n(n, "EBM.from_buffer")
        if n > len(self.replay):
            raise ValueError(f"the buffer holds {len(self.replay)} chains; asked for {n}")
        idx = torch.randperm(len(self.replay), device=self.replay.device)[:n]
        return self.replay[idx].clone()

    @property
    def sampling_network(self) -> nn.Module:
        return self.net


# ----------------------------------------------------------------------------- quadrature (1D, 2D)


@torch.no_grad()
def grid_log_density(energy: Energy, lo: float, hi: float, n: int, dim: int = 1,
                     dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor, Tensor]:
    """log of exp(-E)/Z on a uniform grid over [lo, hi]^dim (dim 1 or 2), Z by the midpoint rule.

    ``energy`` is called on the points in ``dtype`` (a network's float32; float64 for a formula).
    Returns (points (n**dim, dim), log densities (n**dim,), log Z), in float64. Only the box's mass counts:
    a model with mass outside it is normalised as if it had none there.
    """
    if dim not in (1, 2):
        raise ValueError(f"quadrature on a grid is for dim 1 or 2 (the grid grows as n**dim); got dim={dim}")
    h = (hi - lo) / n
    axis = lo + h * (torch.arange(n, dtype=torch.float64) + 0.5)  # cell midpoints
    pts = axis[:, None] if dim == 1 else torch.stack(torch.meshgrid(axis, axis, indexing="xy"), -1).reshape(-1, 2)
    neg_e = -energy(pts.to(dtype)).cpu().double().reshape(-1)
    log_z = torch.logsumexp(neg_e, 0) + dim * math.log(h)
    return pts, neg_e - log_z, log_z
