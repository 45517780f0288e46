"""Score-based models: score matching and the noise-conditional score network (NCSN).

The *score* of a density is s(x) = grad_x log p(x). It does not depend on the normalising
constant, so a network s_theta(x) can model it directly. Three objectives train one:

* explicit score matching (Hyvarinen, 2005):  E_p[ tr(grad_x s_theta(x)) + 1/2 ||s_theta(x)||^2 ]
  (the Fisher divergence up to a constant, after integration by parts; D backward passes);
* sliced score matching (Song et al., 2019):  E_p E_v[ v^T grad_x s_theta(x) v + 1/2 ||s_theta(x)||^2 ]
  (the trace by Hutchinson's estimator; one backward pass per projection v);
* denoising score matching (Vincent, 2011):  E[ 1/2 ||s_theta(x + sigma eps) + eps / sigma||^2 ]
  (no derivative of the network at all; its minimiser is the score of the *noised* data).

The NCSN (Song & Ermon, 2019) learns s_theta(x, sigma) for a geometric ladder of noise levels
with a sigma^2-weighted denoising loss and samples by annealed Langevin dynamics: Langevin steps
with the score at the largest sigma, then the next, down to the smallest.

For a mixture of isotropic Gaussians every score is known in closed form (``mixture_score``),
and the noised mixture is again such a mixture (``noised_mixture_score``): the known answers
the lesson and the tests compare learned scores with.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from .base import GenerativeModel, check_n, check_points, mlp

ScoreFn = Callable[[Tensor], Tensor]

# ----------------------------------------------------------------------------- known scores


def _weights(means: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return torch.full((len(means),), 1.0 / len(means), dtype=means.dtype, device=means.device)
    weights = torch.as_tensor(weights, dtype=means.dtype, device=means.device)
    if weights.shape != (len(means),) or (weights < 0).any() or abs(float(weights.sum()) - 1) > 1e-6:
        raise ValueError(f"weights must be {len(means)} non-negative numbers summing to 1, got {weights.tolist()}")
    return weights


def mixture_log_prob(x: Tensor, means: Tensor, std: float, weights: Tensor | None = None) -> Tensor:
    """log p(x) of the mixture sum_k w_k N(mu_k, std^2 I), one value per row of x (N, D)."""
    w = _weights(means, weights)
    d = x.shape[1]
    sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)  # (N, K)
    log_norm = -0.5 * d * math.log(2 * math.pi * std**2)
    return torch.logsumexp(w.log()[None] + log_norm - sq / (2 * std**2), dim=1)


def mixture_score(x: Tensor, means: Tensor, std: float, weights: Tensor | None = None) -> Tensor:
    """grad_x log p(x) of sum_k w_k N(mu_k, std^2 I): sum_k r_k(x) (mu_k - x) / std^2.

    r_k(x) = w_k N(x; mu_k) / p(x) are the responsibilities, computed with a softmax of logits.
    """
    w = _weights(means, weights)
    diff = means[None] - x[:, None, :]  # (N, K, D)
    r = torch.softmax(w.log()[None] - (diff**2).sum(-1) / (2 * std**2), dim=1)  # (N, K)
    return (r[..., None] * diff).sum(1) / std**2


def noised_mixture_score(x: Tensor, means: Tensor, std: float, sigma: float, weights: Tensor | None = None) -> Tensor:
    """The score of the mixture convolved with N(0, sigma^2 I): the same mixture with std^2 + sigma^2."""
    return mixture_score(x, means, math.sqrt(std**2 + sigma**2), weights)


def relative_score_error(learned: Tensor, true: Tensor) -> float:
    """sum ||s_theta - s||^2 / sum ||s||^2 over points drawn from the density: a density-weighted relative MSE."""
    return float(((learned - true) ** 2).sum() / (true**2).sum())


# ----------------------------------------------------------------------------- the three objectives


def hutchinson_trace(matvec: Callable[[Tensor], Tensor], v: Tensor) -> Tensor:
    """v^T A v for each probe v (rows of ``v``), given ``matvec(v) = A v``: unbiased for tr(A) when E[v v^T] = I."""
    return (v * matvec(v)).sum(-1)


def exact_score_matching_loss(score_fn: ScoreFn, x: Tensor) -> Tensor:
    """Hyvarinen's objective, mean over the batch: tr(grad_x s(x)) + 1/2 ||s(x)||^2 (D backward passes)."""
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    trace = torch.zeros(len(x), device=x.device, dtype=s.dtype)
    for d in range(x.shape[1]):  # the diagonal of the Jacobian, one coordinate at a time
        trace = trace + torch.autograd.grad(s[:, d].sum(), x, create_graph=True)[0][:, d]
    return (trace + 0.5 * (s**2).sum(1)).mean()


def sliced_score_matching_loss(score_fn: ScoreFn, x: Tensor, v: Tensor) -> Tensor:
    """Sliced score matching, mean over batch and projections: v^T grad_x s(x) v + 1/2 ||s(x)||^2.

    ``v`` holds the projections, shape (M, N, D): M probes per point with E[v v^T] = I
    (standard Gaussian, or random signs). One backward pass per probe.
    """
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    vjv = []
    for vm in v:  # grad_x (v . s) = J^T v per point; (J^T v) . v = v^T J v
        jt_v = torch.autograd.grad((vm * s).sum(), x, create_graph=True)[0]
        vjv.append((jt_v * vm).sum(1))
    return (torch.stack(vjv).mean(0) + 0.5 * (s**2).sum(1)).mean()


def dsm_loss(score_fn: ScoreFn, x: Tensor, sigma: Tensor | float, eps: Tensor) -> Tensor:
    """Denoising score matching, one value per example: 1/2 ||s(x + sigma eps) + eps / sigma||^2.

    -eps / sigma is the score of the noising kernel N(x_noisy; x, sigma^2 I) at x_noisy.
    ``sigma``: a number, or one level per example (shape (N,)).
    """
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.dim() - 1)))
    x_noisy = x + sigma * eps
    return 0.5 * ((score_fn(x_noisy) + eps / sigma) ** 2).flatten(1).sum(1)


# ----------------------------------------------------------------------------- samplers


def langevin(score_fn: ScoreFn, x: Tensor, step: float, steps: int) -> Tensor:
    """Unadjusted Langevin dynamics: x <- x + step/2 * s(x) + sqrt(step) * z, ``steps`` times."""
    for _ in range(steps):
        x = x + 0.5 * step * score_fn(x) + math.sqrt(step) * torch.randn_like(x)
    return x


def annealed_langevin(
    score_fn: Callable[[Tensor, float], Tensor],
    x: Tensor,
    sigmas: list[float],
    steps_per_level: int,
    step_scale: float,
    denoise: bool = True,
    stages: list[Tensor] | None = None,
) -> Tensor:
    """Song & Ermon's annealed Langevin dynamics, from the largest sigma to the smallest.

    At level i the step is alpha_i = step_scale * sigma_i^2: the same fraction of each level's
    noise variance (Song & Ermon write it epsilon * sigma_i^2 / sigma_L^2, epsilon = step_scale * sigma_L^2). ``denoise``: end with
    one step x + sigma_L^2 s(x, sigma_L), the mean of the clean point given x (Tweedie's formula).
    ``stages``: a list to which the state after each level is appended.
    """
    sigma_last = sigmas[-1]
    for sigma in sigmas:
        alpha = step_scale * sigma**2
        for _ in range(steps_per_level):
            x = x + 0.5 * alpha * score_fn(x, sigma) + math.sqrt(alpha) * torch.randn_like(x)
        if stages is not None:
            stages.append(x.clone())
    if denoise:
        x = x + sigma_last**2 * score_fn(x, sigma_last)
    return x


def geometric_sigmas(sigma_max: float, sigma_min: float, levels: int) -> list[float]:
    """A geometric ladder sigma_max = sigma_1 > ... > sigma_L = sigma_min (constant ratio)."""
    if not sigma_max > sigma_min > 0 or levels < 1:
        raise ValueError(f"need sigma_max > sigma_min > 0 and levels >= 1, got {sigma_max}, {sigma_min}, {levels}")
    if levels == 1:
        return [float(sigma_min)]
    ratio = (sigma_min / sigma_max) ** (1 / (levels - 1))
    return [float(sigma_max * ratio**i) for i in range(levels)]


# ----------------------------------------------------------------------------- networks and models


class SigmaMLP(nn.Module):
    """s_theta(x, sigma) = net([x, features of log sigma]) / sigma, for flat data (N, D).

    Dividing by sigma (Song & Ermon, 2020) lets the network output something of order one at
    every level: sigma * s is minus the expected noise, which has unit size per coordinate.
    """

    def __init__(self, data_dim: int = 2, hidden: int = 128, layers: int = 3, features: int = 16):
        super().__init__()
        self.features = features
        self.net = mlp([data_dim + features] + [hidden] * layers + [data_dim])

    def embed(self, sigma: Tensor) -> Tensor:
        freqs = torch.arange(1, self.features // 2 + 1, device=sigma.device, dtype=sigma.dtype)
        angles = torch.log(sigma)[:, None] * freqs[None] / 2
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.net(torch.cat([x, self.embed(sigma)], dim=-1)) / sigma[:, None]


def _per_example(sigma: Tensor | float, x: Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    return sigma.expand(len(x)) if sigma.dim() == 0 else sigma


class NCSN(GenerativeModel):
    """A noise-conditional score network over a ladder of noise levels, sampled by annealed Langevin.

    ``loss``: the sigma^2-weighted denoising score matching loss of Song & Ermon (2019), a level
    drawn uniformly per example: mean of sigma^2 * 1/2 ||s(x + sigma eps, sigma) + eps / sigma||^2.
    With one level it is plain denoising score matching at that sigma. No likelihood.
    """

    paradigm = "score-based"
    loss_unit = "sigma^2-weighted DSM (per example)"

    def __init__(self, net: nn.Module, sigmas: list[float], data_dim: int):
        super().__init__()
        if any(a <= b for a, b in zip(sigmas, sigmas[1:])):
            raise ValueError(f"sigmas must decrease strictly (largest first), got {sigmas}")
        self.net, self.data_dim = net, data_dim
        self.register_buffer("sigmas", torch.tensor(sigmas, dtype=torch.float32))

    @classmethod
    def for_points(cls, sigmas: list[float], data_dim: int = 2, hidden: int = 128, layers: int = 3) -> "NCSN":
        return cls(SigmaMLP(data_dim, hidden, layers), sigmas, data_dim)

    def score(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        """s_theta(x, sigma) ~ grad_x log p_sigma(x); ``sigma`` a number or one per row."""
        return self.net(x, _per_example(sigma, x))

    def loss(self, x: Tensor) -> Tensor:
        check_points(x, self.data_dim, type(self).__name__)
        sigma = self.sigmas[torch.randint(len(self.sigmas), (len(x),), device=x.device)]
        per_example = dsm_loss(lambda y: self.score(y, sigma), x, sigma, torch.randn_like(x))
        return (sigma**2 * per_example).mean()

    @property
    def sampling_network(self) -> nn.Module:
        return self.net

    @torch.inference_mode()
    def sample(
        self,
        n: int,
        steps_per_level: int = 100,
        step_scale: float = 0.1,
        denoise: bool = True,
        x_init: Tensor | None = None,
        stages: list[Tensor] | None = None,
    ) -> Tensor:
        """Annealed Langevin from x ~ N(0, sigma_1^2 I) (or ``x_init``): L * steps_per_level network calls.

        ``step_scale``: each level's Langevin step as a fraction of its noise variance, alpha_i = step_scale * sigma_i^2.
        """
        check_n(n, type(self).__name__)
        sigmas = self.sigmas.tolist()
        x = x_init.to(self.device) if x_init is not None else sigmas[0] * torch.randn(n, self.data_dim, device=self.device)
        return annealed_langevin(self.score, x, sigmas, steps_per_level, step_scale, denoise, stages)


class ScoreModel(GenerativeModel):
    """An unconditional score s_theta(x) = mlp(x), trained by ``objective``:

    ``"exact"`` (Hyvarinen), ``"sliced"`` (``projections`` Gaussian probes per point), or
    ``"denoising"`` at one noise level ``sigma`` (it then learns the score of the noised data).
    """

    paradigm = "score-based"
    loss_unit = "score-matching objective (a Fisher divergence up to a constant)"

    def __init__(self, data_dim: int = 2, hidden: int = 128, layers: int = 3, objective: str = "sliced",
                 sigma: float | None = None, projections: int = 1):
        super().__init__()
        if objective not in ("exact", "sliced", "denoising"):
            raise ValueError(f"unknown objective {objective!r}: use 'exact', 'sliced' or 'denoising'")
        if (objective == "denoising") != (sigma is not None):
            raise ValueError("give a noise level sigma for objective='denoising', and only for it")
        self.data_dim, self.objective, self.sigma, self.projections = data_dim, objective, sigma, projections
        self.net = mlp([data_dim] + [hidden] * layers + [data_dim])

    def score(self, x: Tensor) -> Tensor:
        return self.net(x)

    def loss(self, x: Tensor) -> Tensor:
        check_points(x, self.data_dim, type(self).__name__)
        if self.objective == "exact":
            return exact_score_matching_loss(self.score, x)
        if self.objective == "sliced":
            return sliced_score_matching_loss(self.score, x, torch.randn(self.projections, *x.shape, device=x.device))
        return dsm_loss(self.score, x, self.sigma, torch.randn_like(x)).mean()

    @property
    def sampling_network(self) -> nn.Module:
        return self.net

    @torch.inference_mode()
    def sample(self, n: int, steps: int = 1000, step: float = 1e-3, x_init: Tensor | None = None) -> Tensor:
        """Plain Langevin dynamics with the learned score from ``x_init`` (default N(0, I))."""
        check_n(n, type(self).__name__)
        x = x_init.to(self.device) if x_init is not None else torch.randn(n, self.data_dim, device=self.device)
        return langevin(self.score, x, step, steps)


__all__ = [
    "mixture_log_prob", "mixture_score", "noised_mixture_score", "relative_score_error", "hutchinson_trace",
    "exact_score_matching_loss", "sliced_score_matching_loss", "dsm_loss", "langevin", "annealed_langevin",
    "geometric_sigmas", "SigmaMLP", "NCSN", "ScoreModel",
]
