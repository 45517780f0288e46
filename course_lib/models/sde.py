"""The SDE view of diffusion (Song et al., 2021): one equation for NCSN and DDPM, and its ODE.

A forward SDE dx = f(x, t) dt + g(t) dw on t in [0, 1] turns data (t = 0) into noise (t = 1):

* VP (variance preserving), the continuous DDPM:  f = -1/2 beta(t) x,  g = sqrt(beta(t)),
  marginals q(x_t | x_0) = N(sqrt(abar(t)) x_0, (1 - abar(t)) I) with abar(t) = exp(-int_0^t beta);
* VE (variance exploding), the continuous NCSN:  f = 0,  g = sqrt(d sigma^2 / dt),
  sigma(t) = sigma_min (sigma_max / sigma_min)^t, marginals N(x_0, (sigma(t)^2 - sigma(0)^2) I).

Given the score s(x, t) ~ grad log p_t(x), two processes run it backwards with the same marginals:

* the reverse-time SDE (Anderson, 1982): dx = [f - g^2 s] dt + g dw_bar, sampled here by
  Euler-Maruyama (:func:`reverse_sde_sample`);
* the probability-flow ODE: dx/dt = f - 1/2 g^2 s (:func:`probability_flow_drift`), solved with
  torchdiffeq (:func:`ode_solve`). It is a continuous normalizing flow, so it has an exact
  log-likelihood by the instantaneous change of variables, d log p(x(t)) / dt = -div F(x(t), t)
  (:func:`ode_log_prob`), the divergence exactly (:func:`divergence_exact`, D backward passes) or
  by Hutchinson's estimator (:func:`divergence_hutchinson`, one).

:class:`DiffusionSDE` puts lesson 12's digits DDPM (its noise network, trained at the integer
steps of a cosine schedule) into this picture: the same network as a score on continuous time,
sampled by the reverse SDE or the ODE, and scored by the ODE's likelihood, turned into an upper
bound on the discrete NLL by uniform dequantisation (:func:`dequantized_nll_bound`).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .base import GenerativeModel, check_n
from .diffusion import DDPM

ScoreFn = Callable[[Tensor, Tensor], Tensor]      # s(x, t): x (B, ...), t a 0-dim tensor or (B,)
VelocityFn = Callable[[Tensor, Tensor], Tensor]   # F(x, t), the right-hand side of an ODE

__all__ = [
    "SDE", "VPSDE", "VESDE", "MixtureMarginals", "ode_trajectory", "euler_maruyama", "reverse_sde_drift", "reverse_sde_sample",
    "probability_flow_drift", "ode_solve", "divergence_exact", "divergence_hutchinson",
    "ode_log_prob", "gaussian_score", "dequantized_nll_bound", "DiffusionSDE",
]


def _rows(v: Tensor, like: Tensor) -> Tensor:
    """A number, a 0-dim tensor or one value per row (B,), shaped to broadcast against ``like`` (B, ...)."""
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return v.view((-1,) + (1,) * (like.dim() - 1)) if v.dim() == 1 else v


def _time(t) -> Tensor:
    """t as a float64 tensor on the CPU (a number, a 0-dim tensor or one time per row): schedules are
    computed there in double precision (Apple's MPS has no float64), then cast by :func:`_rows`."""
    return torch.as_tensor(t).detach().to("cpu", torch.float64)


# ----------------------------------------------------------------------------------------------
# The forward SDEs


class SDE:
    """dx = f(x, t) dt + g(t) dw on t in [0, 1]; t = 0 is the data, t = 1 the prior."""

    def drift(self, x: Tensor, t) -> Tensor:  # f(x, t)
        raise NotImplementedError

    def g(self, t) -> Tensor:  # the diffusion coefficient g(t), a float64 tensor shaped like t
        raise NotImplementedError

    def marginal(self, x0: Tensor, t) -> tuple[Tensor, Tensor]:
        """Mean and standard deviation of q(x_t | x_0), shaped to broadcast against x0."""
        raise NotImplementedError

    def prior_std(self) -> float:
        raise NotImplementedError

    def prior_sample(self, shape: tuple[int, ...], device=None, generator: torch.Generator | None = None) -> Tensor:
        return self.prior_std() * torch.randn(shape, device=device, generator=generator)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_std^2 I), one value per row."""
        s = self.prior_std()
        d = z[0].numel()
        return -0.5 * z.flatten(1).square().sum(1) / s**2 - d * math.log(s) - 0.5 * d * math.log(2 * math.pi)


class VPSDE(SDE):
    """The variance-preserving SDE dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw: DDPM in continuous time.

    ``kind="linear"``: beta(t) = beta_min + t (beta_max - beta_min) (Song et al., 2021).
    ``kind="cosine"``: abar(t) = f(t) / f(0) with f(t) = cos^2((t + s) / (1 + s) * pi / 2), the schedule of
    :class:`course_lib.models.diffusion.DDPMSchedule`, with beta(t) = -d log abar / dt capped at
    ``steps * ln(1 / (1 - max_beta))``: the continuous form of that class's cap beta_t <= max_beta per
    step of length 1 / steps. At t = i / steps, abar(t) is the DDPM's abar_i up to where the cap
    starts (the last three steps for T = 100), and close to it after.
    """

    def __init__(self, kind: str = "cosine", steps: int = 100, beta_min: float = 0.1, beta_max: float = 20.0,
                 s: float = 0.008, max_beta: float | None = 0.5):
        if kind not in ("cosine", "linear"):
            raise ValueError(f"unknown VP schedule {kind!r}: use 'cosine' or 'linear'")
        self.kind, self.steps, self.beta_min, self.beta_max, self.s = kind, steps, beta_min, beta_max, s
        if kind == "cosine":
            if max_beta is None or not 0 < max_beta < 1:
                raise ValueError(f"max_beta must lie in (0, 1) (0.5 as in DDPMSchedule), got {max_beta}")
            self.rate_max = steps * -math.log(1 - max_beta)      # the cap on beta(t), per unit of t
            theta = math.atan(self.rate_max * (1 + s) / math.pi)  # where pi tan(theta) / (1 + s) reaches it
            self.t_cap = min(1.0, theta * 2 * (1 + s) / math.pi - s)

    def _log_cos(self, t: Tensor) -> Tensor:
        return 2 * torch.log(torch.cos((t + self.s) / (1 + self.s) * math.pi / 2))

    def log_abar(self, t) -> Tensor:
        """log abar(t) = -int_0^t beta(u) du (float64)."""
        t = _time(t)
        if self.kind == "linear":
            return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2)
        tc = t.clamp(max=self.t_cap)
        return self._log_cos(tc) - self._log_cos(torch.zeros_like(t)) - self.rate_max * (t - self.t_cap).clamp(min=0)

    def abar(self, t) -> Tensor:
        return self.log_abar(t).exp()

    def beta(self, t) -> Tensor:
        t = _time(t)
        if self.kind == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        cos_rate = math.pi / (1 + self.s) * torch.tan((t.clamp(max=self.t_cap) + self.s) / (1 + self.s) * math.pi / 2)
        return torch.where(t < self.t_cap, cos_rate, torch.full_like(t, self.rate_max))

    def drift(self, x: Tensor, t) -> Tensor:
        return -0.5 * _rows(self.beta(t), x) * x

    def g(self, t) -> Tensor:
        return self.beta(t).sqrt()

    def marginal(self, x0: Tensor, t) -> tuple[Tensor, Tensor]:
        ab = _rows(self.abar(t), x0)
        return ab.sqrt() * x0, (1 - ab).sqrt()

    def prior_std(self) -> float:
        return 1.0


class VESDE(SDE):
    """The variance-exploding SDE dx = sqrt(d sigma^2(t) / dt) dw: the NCSN ladder in continuous time.

    sigma(t) = sigma_min (sigma_max / sigma_min)^t, so g(t) = sigma(t) sqrt(2 ln(sigma_max / sigma_min)).
    Evaluated at t_i = (L - i) / (L - 1), i = 1..L, sigma(t) is lesson 11's geometric ladder
    sigma_1 = sigma_max > ... > sigma_L = sigma_min. Started at x(0) = x_0, the marginal is
    N(x_0, (sigma(t)^2 - sigma_min^2) I); the prior is N(0, sigma_max^2 I).
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0):
        if not sigma_max > sigma_min > 0:
            raise ValueError(f"need sigma_max > sigma_min > 0, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.log_ratio = math.log(sigma_max / sigma_min)

    def sigma(self, t) -> Tensor:
        return self.sigma_min * torch.exp(_time(t) * self.log_ratio)

    def drift(self, x: Tensor, t) -> Tensor:
        return torch.zeros_like(x)

    def g(self, t) -> Tensor:
        return self.sigma(t) * math.sqrt(2 * self.log_ratio)

    def marginal(self, x0: Tensor, t) -> tuple[Tensor, Tensor]:
        var = self.sigma(t) ** 2 - self.sigma_min**2
        return x0, _rows(var.sqrt(), x0)

    def prior_std(self) -> float:
        return self.sigma_max


def gaussian_score(sde: SDE, mean: Tensor, std: Tensor | float) -> ScoreFn:
    """The exact score of p_t for data N(mean, diag(std^2)) (``mean`` of shape (D,)) under a VP or VE SDE.

    p_t is Gaussian too: N(m_t, diag(v_t)) with, for VP, m_t = sqrt(abar) mean, v_t = abar std^2 + 1 - abar,
    and for VE, m_t = mean, v_t = std^2 + sigma(t)^2 - sigma_min^2; its score is -(x - m_t) / v_t.
    """
    mean = torch.as_tensor(mean).detach().cpu().double()  # float64 on the CPU (Apple's MPS has none)
    var0 = torch.as_tensor(std).detach().cpu().double() ** 2

    def score(x: Tensor, t) -> Tensor:
        x64 = x.cpu().double()  # computed on the CPU in float64, returned on x's device and dtype
        m, sd = sde.marginal(mean.expand(len(x64), *mean.shape), t)  # the data mean, carried to t
        if isinstance(sde, VPSDE):
            ab = _rows(sde.abar(t), m)
            var = ab * var0 + (1 - ab)
        else:
            var = var0 + sd**2
        return (-(x64 - m) / var).to(x.device, x.dtype)

    return score


class MixtureMarginals:
    """The exact p_t for data from sum_k w_k N(mu_k, std^2 I) under a VP or VE SDE: again such a mixture,
    with centres sqrt(abar) mu_k and variance abar std^2 + 1 - abar (VP), or mu_k and
    std^2 + sigma(t)^2 - sigma_min^2 (VE). ``score`` and ``log_prob`` at one time t (a number)."""

    def __init__(self, sde: SDE, means: Tensor, std: float, weights: Tensor | None = None):
        self.sde, self.means, self.std = sde, torch.as_tensor(means).detach().cpu().double(), float(std)
        self.weights = None if weights is None else torch.as_tensor(weights).detach().cpu().double()

    def params(self, t) -> tuple[Tensor, float]:
        """The centres (K, D) and the common standard deviation of the components of p_t."""
        m, sd = self.sde.marginal(self.means, _time(t))
        if isinstance(self.sde, VPSDE):
            ab = self.sde.abar(t).item()
            return m, math.sqrt(ab * self.std**2 + 1 - ab)
        return m, math.sqrt(self.std**2 + float(sd) ** 2)

    def score(self, x: Tensor, t) -> Tensor:
        from .score import mixture_score

        centres, sd = self.params(t)
        return mixture_score(x.cpu().double(), centres, sd, self.weights).to(x.device, x.dtype)

    def log_prob(self, x: Tensor, t) -> Tensor:
        from .score import mixture_log_prob

        centres, sd = self.params(t)
        out = mixture_log_prob(x.cpu().double(), centres, sd, self.weights)
        return out.to(x.device, torch.float32 if x.device.type == "mps" else out.dtype)  # cpu float64 to x's device


# ----------------------------------------------------------------------------------------------
# Simulating SDEs: Euler-Maruyama forwards and backwards


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like x, drawn with ``generator`` (a CPU one) and moved to x's device."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)


def euler_maruyama(sde: SDE, x: Tensor, t0: float, t1: float, steps: int,
                   generator: torch.Generator | None = None, keep: list | None = None) -> Tensor:
    """Simulate the forward SDE from time t0 to t1 > t0: x <- x + f dt + g sqrt(dt) z, ``steps`` times.

    ``keep``: a list to which (t, x) is appended before every step and at the end."""
    ts = torch.linspace(t0, t1, steps + 1, dtype=torch.float64)
    for i in range(steps):
        t, dt = ts[i], (ts[i + 1] - ts[i]).item()
        if keep is not None:
            keep.append((t.item(), x.clone()))
        x = x + sde.drift(x, t) * dt + sde.g(t).item() * math.sqrt(dt) * _noise(x, generator)
    if keep is not None:
        keep.append((t1, x.clone()))
    return x


def reverse_sde_drift(sde: SDE, score_fn: ScoreFn, x: Tensor, t) -> Tensor:
    """The drift of Anderson's reverse-time SDE, f(x, t) - g(t)^2 s(x, t) (time running backwards)."""
    return sde.drift(x, t) - _rows(sde.g(t) ** 2, x) * score_fn(x, t)


@torch.inference_mode()
def reverse_sde_sample(sde: SDE, score_fn: ScoreFn, x: Tensor, steps: int, t_start: float = 1.0,
                       t_end: float = 1e-3, generator: torch.Generator | None = None,
                       keep: list | None = None) -> Tensor:
    """Euler-Maruyama for the reverse SDE, from x ~ p_(t_start) down to t_end, ``steps`` score calls:

        x <- x - [f(x, t) - g(t)^2 s(x, t)] dt + g(t) sqrt(dt) z,    dt = (t_start - t_end) / steps,

    with no fresh noise at the last step (it returns that step's mean). ``keep``: a list to which
    (t, x) is appended before every step and at the end.
    """
    ts = torch.linspace(t_start, t_end, steps + 1, dtype=torch.float64)
    for i in range(steps):
        t, dt = ts[i], (ts[i] - ts[i + 1]).item()
        if keep is not None:
            keep.append((t.item(), x.clone()))
        x = x - reverse_sde_drift(sde, score_fn, x, t) * dt
        if i < steps - 1:
            x = x + sde.g(t).item() * math.sqrt(dt) * _noise(x, generator)
    if keep is not None:
        keep.append((t_end, x.clone()))
    return x


# ----------------------------------------------------------------------------------------------
# The probability-flow ODE, solved with torchdiffeq


def probability_flow_drift(sde: SDE, score_fn: ScoreFn, x: Tensor, t) -> Tensor:
    """dx/dt = f(x, t) - 1/2 g(t)^2 s(x, t): the ODE whose marginals are those of the SDE."""
    return sde.drift(x, t) - 0.5 * _rows(sde.g(t) ** 2, x) * score_fn(x, t)


def _options(method: str, t0: float, t1: float, steps: int | None, device, dtype: torch.dtype = torch.float64) -> dict:
    """torchdiffeq options: a fixed step for grid methods; for adaptive ones, land exactly on t1 (by
    default they step past the end and interpolate, calling the field outside [t0, t1])."""
    if method in ("euler", "midpoint", "rk4"):
        if not steps or steps < 1:
            raise ValueError(f"the fixed-step method {method!r} needs steps >= 1")
        return {"step_size": abs(t1 - t0) / steps}
    return {"step_t": torch.tensor([t1], dtype=dtype, device=device)}


def ode_solve(velocity: VelocityFn, x: Tensor, t0: float, t1: float, method: str = "dopri5",
              rtol: float = 1e-5, atol: float = 1e-5, steps: int | None = None) -> tuple[Tensor, int]:
    """x(t1) from x(t0) = x under dx/dt = velocity(x, t), with torchdiffeq; returns (x(t1), NFE).

    ``method="dopri5"`` (adaptive Runge-Kutta 4(5), tolerances ``rtol``, ``atol``) or a fixed-grid
    method (``"euler"``, ``"midpoint"``, ``"rk4"``) with ``steps`` equal steps. NFE counts the calls
    of ``velocity`` for the whole batch (the adaptive solver takes one step size for all rows).
    """
    from torchdiffeq import odeint

    nfe = [0]

    def rhs(t: Tensor, y: Tensor) -> Tensor:
        nfe[0] += 1
        return velocity(y, t)

    options = _options(method, t0, t1, steps, x.device, x.dtype)
    with torch.inference_mode():
        path = odeint(rhs, x, torch.tensor([t0, t1], dtype=x.dtype, device=x.device),
                      rtol=rtol, atol=atol, method=method, options=options)
    return path[-1], nfe[0]


def ode_trajectory(velocity: VelocityFn, x: Tensor, times: Tensor, method: str = "dopri5",
                   rtol: float = 1e-5, atol: float = 1e-5, steps: int | None = None) -> Tensor:
    """The states x(t) at every entry of ``times`` (monotone; times[0] is the start), shape (len(times), *x.shape)."""
    from torchdiffeq import odeint

    times = torch.as_tensor(times, dtype=x.dtype, device=x.device)
    options = _options(method, float(times[0]), float(times[-1]), steps, x.device, x.dtype)
    with torch.inference_mode():
        return odeint(lambda t, y: velocity(y, t), x, times, rtol=rtol, atol=atol, method=method, options=options)


def divergence_exact(velocity: VelocityFn, x: Tensor, t) -> tuple[Tensor, Tensor]:
    """(F(x, t), div_x F(x, t)) per row, the trace of the Jacobian by D backward passes."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = velocity(x, t)
        flat_out, div = out.flatten(1), torch.zeros(len(x), dtype=out.dtype, device=x.device)
        for d in range(flat_out.shape[1]):
            div = div + torch.autograd.grad(flat_out[:, d].sum(), x, retain_graph=True)[0].flatten(1)[:, d]
    return out.detach(), div.detach()


def divergence_hutchinson(velocity: VelocityFn, x: Tensor, t, v: Tensor) -> tuple[Tensor, Tensor]:
    """(F(x, t), v^T (dF/dx) v) per row: one backward pass; unbiased for div F when E[v v^T] = I."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        out = velocity(x, t)
        vjp = torch.autograd.grad(out, x, grad_outputs=v)[0]   # v^T (dF/dx), one row per example
    return out.detach(), (vjp * v).flatten(1).sum(1).detach()


def ode_log_prob(velocity: VelocityFn, x: Tensor, prior_log_prob: Callable[[Tensor], Tensor],
                 t0: float = 0.0, t1: float = 1.0, divergence: str = "hutchinson", method: str = "dopri5",
                 rtol: float = 1e-5, atol: float = 1e-5, steps: int | None = None,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, int]:
    """log p_(t0)(x) of the flow dx/dt = velocity(x, t) whose density at t1 is the prior.

    Solves the augmented ODE from t0 to t1,  d/dt [x, delta] = [F(x, t), div F(x, t)],  delta(t0) = 0,
    and returns (log p_(t0)(x) = prior_log_prob(x(t1)) + delta(t1), x(t1), NFE): the instantaneous
    change of variables, d log p(x(t)) / dt = -div F. ``divergence="exact"`` (D backward passes per
    call) or ``"hutchinson"`` (one Rademacher probe per row, fixed along the path: an unbiased estimate).
    """
    from torchdiffeq import odeint

    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"unknown divergence {divergence!r}: use 'exact' or 'hutchinson'")
    v = None
    if divergence == "hutchinson":
        v = (torch.randint(0, 2, x.shape, generator=generator) * 2 - 1).to(x.device, x.dtype)  # Rademacher
    nfe = [0]

    def rhs(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        nfe[0] += 1
        y = state[0]
        out, div = divergence_exact(velocity, y, t) if v is None else divergence_hutchinson(velocity, y, t, v)
        return out, div

    options = _options(method, t0, t1, steps, x.device, x.dtype)
    state0 = (x.detach(), torch.zeros(len(x), dtype=x.dtype, device=x.device))
    xs, deltas = odeint(rhs, state0, torch.tensor([t0, t1], dtype=x.dtype, device=x.device),
                        rtol=rtol, atol=atol, method=method, options=options)
    z = xs[-1].detach()
    return prior_log_prob(z) + deltas[-1].detach(), z, nfe[0]


# ----------------------------------------------------------------------------------------------
# Discrete data: an upper bound on the NLL from a continuous density


def dequantized_nll_bound(log_density: Callable[[Tensor], Tensor], y: Tensor, bin_width: float,
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One draw of -log p(y + u) - D log(bin_width), u ~ U[-w/2, w/2)^D, per row: in expectation over u
    an upper bound on -log P(y), where P(y) is the mass the density p puts on y's bin (Jensen).

    ``y``: the bin centres (data on a grid of spacing ``bin_width``). Returns (bound per row, y + u).
    """
    u = (torch.rand(y.shape, generator=generator) - 0.5).to(y.device, y.dtype) * bin_width
    d = y[0].numel()
    return -log_density(y + u) - d * math.log(bin_width), y + u


# ----------------------------------------------------------------------------------------------
# Lesson 12's digits DDPM, seen through the VP SDE


class DiffusionSDE(GenerativeModel):
    """A trained :class:`~course_lib.models.diffusion.DDPM` (cosine schedule, T steps) as a score model
    on continuous time t in [1/T, 1], through :class:`VPSDE` ``("cosine", steps=T)``.

    Step t_i = i / T of the SDE is step i of the DDPM (network index i - 1), so the network is called
    at the continuous index t T - 1: between the integer steps it was trained at, it interpolates
    (the lesson measures how well). The score is s(x, t) = -eps_theta(x, tT - 1) / sqrt(1 - abar(t)).

    ``sample_sde``: the reverse SDE by Euler-Maruyama; ``sample_ode``: the probability-flow ODE by
    dopri5; both from t = 1 to t = 1/T, the smallest noise level the network knows. ``log_prob`` (and
    ``log_prob_nfe``): the ODE's log-density at t = 1/T (model space, [-1, 1] per pixel); ``nll_bound``: an upper bound on
    the discrete NLL of integer levels by uniform dequantisation; ``nelbo``: the DDPM's own bound.
    """

    paradigm = "diffusion"
    loss_unit = "MSE of the predicted noise"

    def __init__(self, ddpm: DDPM):
        super().__init__()
        self.ddpm = ddpm
        T = ddpm.schedule.steps
        self.sde = VPSDE("cosine", steps=T)
        grid = self.sde.abar(torch.arange(1, T + 1, dtype=torch.float64) / T).float()
        cap = int(self.sde.t_cap * T)
        if not torch.allclose(grid[:cap], ddpm.schedule.abar[:cap].cpu(), rtol=1e-4, atol=1e-6):
            raise ValueError("DiffusionSDE needs a DDPM with the cosine schedule (DDPM.for_images(kind='cosine'))")
        self.t_min = 1.0 / T

    @property
    def sampling_network(self) -> nn.Module:
        return self.ddpm.eps_model

    def loss(self, batch: Tensor) -> Tensor:
        return self.ddpm.loss(batch)

    def eps(self, x: Tensor, t) -> Tensor:
        """eps_theta at continuous time t (one number, or one per row), network index t T - 1."""
        T = self.ddpm.schedule.steps
        index = (_time(t) * T - 1).to(x.device, x.dtype)
        return self.ddpm.eps_model(x, index.expand(len(x)) if index.dim() == 0 else index)

    def score(self, x: Tensor, t) -> Tensor:
        """s_theta(x, t) = -eps_theta(x, t) / sqrt(1 - abar(t))."""
        return -self.eps(x, t) / _rows((1 - self.sde.abar(t)).sqrt(), x)

    def ode_drift(self, x: Tensor, t) -> Tensor:
        return probability_flow_drift(self.sde, self.score, x, t)

    def decode(self, z: Tensor, rtol: float = 1e-5, atol: float = 1e-5) -> tuple[Tensor, int]:
        """The ODE from t = 1 down to 1/T: noise -> x at the smallest noise level (model space); and NFE."""
        return ode_solve(self.ode_drift, z.to(self.device), 1.0, self.t_min, rtol=rtol, atol=atol)

    def encode(self, x: Tensor, rtol: float = 1e-5, atol: float = 1e-5) -> tuple[Tensor, int]:
        """The ODE from t = 1/T up to 1: x (model space) -> its latent z; and NFE."""
        return ode_solve(self.ode_drift, x.to(self.device), self.t_min, 1.0, rtol=rtol, atol=atol)

    @torch.inference_mode()
    def sample_ode(self, n: int, rtol: float = 1e-5, atol: float = 1e-5, z: Tensor | None = None) -> tuple[Tensor, int]:
        """Integer levels from the probability-flow ODE (deterministic given z ~ N(0, I)); and NFE."""
        check_n(n, type(self).__name__)
        z = torch.randn(n, *self.ddpm.data_shape, device=self.device) if z is None else z
        x, nfe = self.decode(z, rtol, atol)
        return self.ddpm.to_levels(x), nfe

    @torch.inference_mode()
    def sample_sde(self, n: int, steps: int = 100, generator: torch.Generator | None = None) -> tuple[Tensor, int]:
        """Integer levels from the reverse SDE, Euler-Maruyama with ``steps`` score calls; and NFE."""
        check_n(n, type(self).__name__)
        z = torch.randn(n, *self.ddpm.data_shape, generator=generator).to(self.device)
        x = reverse_sde_sample(self.sde, self.score, z, steps, 1.0, self.t_min, generator=generator)
        return self.ddpm.to_levels(x), steps

    def sample(self, n: int, method: str = "ode") -> Tensor:
        if method not in ("ode", "sde", "ancestral"):
            raise ValueError(f"unknown sampler {method!r}: use 'ode', 'sde' or 'ancestral'")
        if method == "ancestral":
            return self.ddpm.sample(n)
        return (self.sample_ode(n) if method == "ode" else self.sample_sde(n))[0]

    def log_prob_nfe(self, x: Tensor, divergence: str = "hutchinson", rtol: float = 1e-5, atol: float = 1e-5,
                     generator: torch.Generator | None = None) -> tuple[Tensor, int]:
        """log p_(1/T)(x) of the ODE model for continuous x in model space (nats per image); and NFE.

        Exact up to the solver's error with ``divergence="exact"``; with Hutchinson's estimator an
        unbiased estimate of it."""
        logp, _, nfe = ode_log_prob(self.ode_drift, x.to(self.device), self.sde.prior_log_prob, self.t_min, 1.0,
                                    divergence=divergence, rtol=rtol, atol=atol, generator=generator)
        return logp, nfe

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_(1/T)(x), one value per image (continuous x in model space), with the exact divergence
        (D vector-Jacobian products per network call: slow, but what the name promises; for the cheap
        unbiased Hutchinson estimate use :meth:`log_prob_nfe`). The solver's tolerances hold for the
        batch as a whole (a root-mean-square error norm), not image by image.

        A density on R^D: for integer levels use :meth:`nll_bound`, a bound on the discrete NLL."""
        return self.log_prob_nfe(x, divergence="exact")[0]

    def nll_bound(self, levels: Tensor, rtol: float = 1e-5, atol: float = 1e-5,
                  generator: torch.Generator | None = None) -> tuple[Tensor, int]:
        """One draw of the dequantised bound on -log P(levels) per image, in nats; and NFE.

        P(x) is the mass the ODE's density puts on the cell of the image x (side w = 2 / (L - 1) in
        model space): -log P(x) <= E_u[-log p(x + u)] - D log w, u uniform on the cell (Jensen)."""
        y = self.ddpm.to_model(levels.to(self.device))
        nfe = [0]

        def log_density(yu: Tensor) -> Tensor:
            logp, n = self.log_prob_nfe(yu, rtol=rtol, atol=atol, generator=generator)
            nfe[0] += n
            return logp

        bound, _ = dequantized_nll_bound(log_density, y, 2.0 / (self.ddpm.levels - 1), generator)
        return bound, nfe[0]

    def nelbo(self, levels: Tensor) -> Tensor:
        """The DDPM's own -ELBO per image (lesson 12), for comparison: an upper bound on its discrete NLL."""
        return self.ddpm.nelbo(levels.to(self.device))
