"""Likelihood bookkeeping: units, dequantisation, and KL divergences (lesson 3).

Units. A log-likelihood in nats uses the natural log; in bits, log base 2 (1 nat = 1/ln 2 bits).
Image models report *bits per dimension*: the negative log-likelihood of one image in nats,
divided by ``D ln 2`` for D pixel values.

Dequantisation. A density on integer data can grow without bound (squeeze all its mass onto
the integers), so a density model is trained and scored on ``y = (x + u) / levels`` with
``u ~ U[0, 1)^D``. For any density p on y, Jensen's inequality gives

    log P(x) = log( vol * E_u[p(y)] ) >= E_u[log p(y)] + log vol,     vol = levels^(-D),

where P(x) is the mass p puts on x's cell. So ``-log p(y) - log vol`` is, on average over u,
an upper bound on the discrete negative log-likelihood, in the same units as an exact model's.
For a Gaussian density, ``log_normal_cell_probability`` gives log P(x) itself, accurately far
in the tails.

KL. ``gaussian_kl`` is the closed form between two Gaussians; ``mc_kl`` the Monte-Carlo
estimate with its standard error. ``Gaussian`` is a full-covariance Gaussian model, fitted to
samples by forward KL (``fit_forward_kl``: the sample moments, which maximum likelihood also
finds) or to a target density by reverse KL (``fit_reverse_kl``: gradient descent on samples
drawn from the model itself, with the reparameterisation trick; no data is involved).
``gaussian_expectation`` computes E_q[f] for a Gaussian q in 1 or 2 dimensions by quadrature,
so that small reverse-KL problems can be solved, and their stationary points checked, exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .models.base import GenerativeModel, check_n, check_points

LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- units


def nats_to_bits(nats: float | Tensor) -> float | Tensor:
    """1 nat = 1 / ln 2 bits (about 1.4427)."""
    return nats / LN2


def bits_to_nats(bits: float | Tensor) -> float | Tensor:
    return bits * LN2


def bits_per_dim(nats_per_example: float | Tensor, dims: int) -> float | Tensor:
    """Negative log-likelihood of one example in nats -> bits per dimension: divide by D ln 2."""
    if not isinstance(dims, int) or dims <= 0:
        raise ValueError(f"dims must be a positive int (pixels per image, say), got {dims!r}")
    return nats_per_example / (dims * LN2)


# ----------------------------------------------------------------------------- dequantisation


def uniform_dequantize(
    x: Tensor, levels: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Integer data in {0, ..., levels-1} -> continuous points in [0, 1)^D and the cells' log-volume.

    Returns ``(y, log_volume)``: ``y = (x + u) / levels`` with ``u ~ U[0, 1)`` per value
    (float32, same shape as ``x``), and ``log_volume = -D ln(levels)`` per example (shape
    ``(N,)``, D = values per example). For any density p on y,
    ``-(log p(y) + log_volume)`` is on average over u an upper bound on -log P(x) in nats.
    """
    dims = _check_integer_levels(x, levels)
    u = torch.rand(x.shape, generator=generator).to(x.device)  # uniform noise in [0, 1)
    y = (x.float() + u) / levels  # each value spread over its cell [x/L, (x+1)/L)
    log_volume = torch.full((len(x),), -dims * math.log(levels), device=x.device)  # log L^-D
    return y, log_volume


def _check_integer_levels(x: Tensor, levels: int) -> int:
    """Raise a helpful error unless x holds integers in 0..levels-1; return D, the values per example."""
    if not isinstance(x, Tensor):
        raise TypeError(f"uniform_dequantize expects a torch.Tensor, got {type(x).__name__}")
    if x.is_floating_point() or x.dtype == torch.bool:
        raise TypeError(
            f"uniform_dequantize expects integer data (the pixel levels), got {x.dtype}; "
            "pass the integer tensor, e.g. data.digits() images, not x.float()"
        )
    if not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels must be an int >= 2, got {levels!r}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= levels):
        raise ValueError(
            f"values must lie in 0..{levels - 1}, got min {int(x.min())}, max {int(x.max())}"
        )
    return x[0].numel() if x.dim() > 1 else 1


def log_normal_cell_probability(lo: Tensor, hi: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log P(lo <= y < hi) for y ~ N(mean, std^2), elementwise, accurate far in the tails.

    The plain ``log(Phi(b) - Phi(a))`` rounds to log 0 once both CDF values are within 1e-16 of
    1 (a cell far above the mean). Cells above the mean are mirrored to below it, where
    ``Phi(b) - Phi(a) = Phi(-a) - Phi(-b)`` is a difference of tiny numbers that log-space
    keeps: ``log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b)))``.
    """
    a, b = (lo - mean) / std, (hi - mean) / std
    upper = a > 0
    a, b = torch.where(upper, -b, a), torch.where(upper, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp(log_a - log_b))


# ----------------------------------------------------------------------------- KL


def gaussian_kl(mean0: Tensor, cov0: Tensor, mean1: Tensor, cov1: Tensor) -> Tensor:
    """KL( N(mean0, cov0) || N(mean1, cov1) ) in nats, closed form (float64).

    0.5 * [ tr(S1^-1 S0) + (m1 - m0)^T S1^-1 (m1 - m0) - D + ln det S1 - ln det S0 ].
    """
    m0, s0, m1, s1 = _check_gaussian_pair(mean0, cov0, mean1, cov1)
    d = m0.shape[-1]
    a1 = torch.linalg.cholesky(s1)  # S1 = A1 A1^T
    diff = (m1 - m0)[:, None]
    trace = torch.cholesky_solve(s0, a1).diagonal().sum()  # tr(S1^-1 S0)
    maha = (diff * torch.cholesky_solve(diff, a1)).sum()  # (m1 - m0)^T S1^-1 (m1 - m0)
    logdet1 = 2 * a1.diagonal().log().sum()
    logdet0 = torch.linalg.slogdet(s0)[1]
    return 0.5 * (trace + maha - d + logdet1 - logdet0)


def _check_gaussian_pair(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The four arguments of gaussian_kl in float64, after checking their shapes."""
    m0, s0, m1, s1 = (torch.as_tensor(t).cpu().double() for t in tensors)  # float64 on the CPU
    d = m0.shape[-1]
    if m0.shape != (d,) or s0.shape != (d, d) or s1.shape != (d, d) or m1.shape != (d,):
        raise ValueError(
            f"gaussian_kl expects means of shape (D,) and covariances (D, D); got {tuple(m0.shape)}, "
            f"{tuple(s0.shape)}, {tuple(m1.shape)}, {tuple(s1.shape)}"
        )
    return m0, s0, m1, s1


@dataclass
class MCEstimate:
    """A Monte-Carlo estimate: the mean of n values and its standard error (std / sqrt n)."""

    value: float
    stderr: float
    n: int

    @classmethod
    def of(cls, values: Tensor) -> "MCEstimate":
        """The mean of the values and its standard error."""
        n = len(values)
        return cls(values.mean().item(), (values.std() / math.sqrt(n)).item(), n)

    def __str__(self) -> str:
        return f"{self.value:.4f} +/- {self.stderr:.4f} (n={self.n:,})"


def mc_kl(p, q, n: int = 10_000) -> MCEstimate:
    """KL(p || q) = E_{x~p}[log p(x) - log q(x)], estimated from ``n`` samples of ``p``.

    ``p`` and ``q`` are anything with ``sample((n,))`` and ``log_prob`` (torch.distributions,
    or a course model wrapped by ``as_distribution``). Only p must be sampled; both densities
    must be known, normalising constants included. Unbiased; seed torch for a repeatable draw.

    The standard error is the sample standard deviation of the log-ratios over sqrt(n). It means
    something only when the log-ratio has a finite variance under p. When q has lighter tails
    than p (a Gaussian q for a Student-t p with 3 to 4 degrees of freedom, say), the KL can be
    finite while that variance is infinite: the estimate then converges slowly, and the printed
    standard error is typically far too small, because the rare samples that carry the missing
    variance are usually absent.
    """
    _check_n_samples(n)
    with torch.no_grad():
        x = p.sample((n,))
        values = _log_prob(p, x) - _log_prob(q, x)  # log p(x) - log q(x), x ~ p
    return MCEstimate.of(values)


def _check_n_samples(n) -> None:
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"mc_kl needs n >= 2 samples, got {n!r}")


def _log_prob(dist, x: Tensor) -> Tensor:
    """dist.log_prob(x) in float64, with x cast to the dtype dist computes in (float32 or 64)."""
    try:
        dtype = dist.mean.dtype
    except (AttributeError, NotImplementedError):
        dtype = x.dtype
    return dist.log_prob(x.to(dtype)).cpu().double()  # float64 on the CPU (MPS has none)


# ----------------------------------------------------------------------------- a Gaussian model


class Gaussian(GenerativeModel):
    """N(mean, A A^T) in R^dim with A lower-triangular, positive diagonal (stored as its log).

    Its ``loss`` is the negative log-likelihood of data (forward KL up to a constant), so it
    trains with :func:`course_lib.train.fit`; ``reverse_kl`` needs a target density instead.
    """

    paradigm = "explicit density"
    loss_unit = "nats"

    def __init__(self, dim: int = 2, mean: Tensor | None = None, scale: float = 1.0):
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.dim = dim
        self.mean = nn.Parameter(torch.zeros(dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32).clone())
        if self.mean.shape != (dim,):
            raise ValueError(f"mean must have shape ({dim},), got {tuple(self.mean.shape)}")
        self.log_diag = nn.Parameter(torch.full((dim,), math.log(scale)))
        self.off_diag = nn.Parameter(torch.zeros(dim, dim))

    @property
    def scale_tril(self) -> Tensor:
        return torch.tril(self.off_diag, -1) + torch.diag(self.log_diag.exp())

    @property
    def covariance(self) -> Tensor:
        A = self.scale_tril
        return A @ A.T

    def distribution(self) -> torch.distributions.MultivariateNormal:
        return torch.distributions.MultivariateNormal(self.mean, scale_tril=self.scale_tril)

    def log_prob(self, x: Tensor) -> Tensor:
        check_points(x, self.dim, type(self).__name__)
        return self.distribution().log_prob(x)

    def loss(self, x: Tensor) -> Tensor:
        """Negative log-likelihood of the batch, nats per point."""
        return -self.log_prob(x).mean()

    def rsample(self, n: int) -> Tensor:
        """Differentiable samples: mean + A eps, eps ~ N(0, I) (the reparameterisation trick)."""
        eps = torch.randn(n, self.dim, device=self.mean.device)
        return self.mean + eps @ self.scale_tril.T

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        check_n(n, type(self).__name__)
        return self.rsample(n)

    def entropy(self) -> Tensor:
        """H = 0.5 D ln(2 pi e) + sum log diag(A), exact."""
        return 0.5 * self.dim * (1 + math.log(2 * math.pi)) + self.log_diag.sum()

    def reverse_kl(self, target_log_prob: Callable[[Tensor], Tensor], n: int = 256) -> Tensor:
        """Estimate of KL(q || p) = -H(q) - E_q[log p], up to p's normaliser if p has none.

        The entropy is exact; the cross term is averaged over n reparameterised samples.
        """
        z = self.rsample(n)
        return -self.entropy() - target_log_prob(z).mean()

    @property
    def sampling_network(self) -> nn.Module:
        return self


def fit_forward_kl(x: Tensor) -> Gaussian:
    """The Gaussian minimising KL(data || q): mean and covariance of the sample (divided by N).

    Forward KL to the data = cross-entropy - data entropy, so the minimiser is the maximum-
    likelihood Gaussian, whose moments are the sample moments (the 1/N covariance, not 1/(N-1)).
    """
    if not isinstance(x, Tensor) or x.dim() != 2:
        raise ValueError(f"fit_forward_kl expects points of shape (N, D), got {getattr(x, 'shape', type(x))}")
    check_points(x, x.shape[1], "fit_forward_kl")
    xd = x.detach().cpu().double()  # float64 on the CPU (MPS has none)
    mean = xd.mean(0)
    cov = (xd - mean).T @ (xd - mean) / len(xd)
    model = Gaussian(x.shape[1])
    A = torch.linalg.cholesky(cov)
    with torch.no_grad():
        model.mean.copy_(mean.float())
        model.log_diag.copy_(A.diagonal().log().float())
        model.off_diag.copy_(torch.tril(A, -1).float())
    return model


@dataclass
class ReverseKLResult:
    """Per step: the estimate of KL(q || p) (``history``) and the model's mean (``means``, (steps, D))."""

    history: list[float]
    means: Tensor


def fit_reverse_kl(
    model: Gaussian,
    target_log_prob: Callable[[Tensor], Tensor],
    steps: int = 2000,
    n: int = 256,
    lr: float = 0.01,
    seed: int = 0,
) -> ReverseKLResult:
    """Minimise KL(model || target) by Adam on reparameterised samples from the model.

    There is no data here: each step draws ``n`` points from the model itself, scores them
    with the target's log-density and the model's own (exact) entropy, and steps downhill.
    ``history`` holds the estimate of KL(q || p) per step (exact up to p's normaliser).
    """
    _check_steps(steps)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history, means = [], []
    for _ in range(steps):
        opt.zero_grad()
        loss = model.reverse_kl(target_log_prob, n)  # -H(q) - mean of log p(mu + A eps)
        loss.backward()
        opt.step()
        history.append(loss.item())
        means.append(model.mean.detach().clone())
    return ReverseKLResult(history, torch.stack(means) if means else torch.empty(0, model.dim))


def _check_steps(steps) -> None:
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")


def gaussian_expectation(
    f: Callable[[Tensor], Tensor], mean: Tensor, scale_tril: Tensor, step: float = 0.1, lim: float = 8.0
) -> Tensor:
    """E[f(z)] for z ~ N(mean, A A^T), A = scale_tril, by quadrature on a grid (float64).

    z = mean + A eps, with eps on a regular grid of spacing ``step`` over [-lim, lim]^D, each point
    weighted by the standard normal density times step^D (the trapezoid rule; D = 1 or 2). For
    smooth f the error falls faster than any power of the step; it stays reliable where
    Gauss-Hermite quadrature is slow, e.g. for log p of a mixture with narrow modes, which bends
    sharply between them. Differentiable in mean and scale_tril, so a Gaussian can be fitted by
    reverse KL with no sampling noise: minimise -H(q) - gaussian_expectation(log p, ...).
    """
    d = mean.shape[-1]
    x1 = torch.arange(-lim, lim + step / 2, step, dtype=torch.float64)
    w1 = torch.exp(-0.5 * x1**2) / math.sqrt(2 * math.pi) * step
    eps = torch.cartesian_prod(*[x1] * d).reshape(-1, d)
    weights = torch.cartesian_prod(*[w1] * d).reshape(-1, d).prod(1)
    z = mean.cpu().double() + eps @ scale_tril.cpu().double().T  # float64 on the CPU (MPS has none)
    return (weights * f(z)).sum()
