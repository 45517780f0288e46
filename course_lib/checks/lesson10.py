"""Known-answer checks for lesson 10 (energy-based models).

``check_mala_step`` grades the exercise in which the reader writes one step of the
Metropolis-adjusted Langevin algorithm; ``tests/test_ebm.py`` runs it on
:func:`course_lib.models.ebm.mala_step`.
"""

from __future__ import annotations

import math

import torch

# A correlated 2D Gaussian target: E(x) = (x - mu)^T P (x - mu) / 2, P the precision.
_MU = torch.tensor([0.5, -1.0], dtype=torch.float64)
_SIGMA = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
_P = torch.linalg.inv(_SIGMA)


def _gauss_energy(x: torch.Tensor) -> torch.Tensor:
    d = x - _MU.to(x.dtype)
    return 0.5 * ((d @ _P.to(x.dtype)) * d).sum(-1)


def _reference(x, step, noise, uniform):
    """MALA written out with the closed-form gradient P (x - mu): an independent known answer."""
    grad = lambda z: (z - _MU) @ _P  # noqa: E731
    y = x - step * grad(x) + math.sqrt(2 * step) * noise
    log_q_yx = -((y - x + step * grad(x)) ** 2).sum(-1) / (4 * step)
    log_q_xy = -((x - y + step * grad(y)) ** 2).sum(-1) / (4 * step)
    log_a = _gauss_energy(x) - _gauss_energy(y) + log_q_xy - log_q_yx
    acc = torch.log(uniform) < log_a
    return torch.where(acc[:, None], y, x), acc


def _call(impl, energy, x, step, noise, uniform):
    out = impl(energy, x, step, noise=noise, uniform=uniform)
    if not (isinstance(out, tuple) and len(out) == 2):
        raise AssertionError("mala_step must return a pair (new x, accepted), accepted a boolean tensor of shape (N,)")
    new, acc = out
    if not isinstance(new, torch.Tensor) or tuple(new.shape) != tuple(x.shape):
        raise AssertionError(f"mala_step: the new x must have the shape of x, {tuple(x.shape)}; got {getattr(new, 'shape', None)}")
    if not isinstance(acc, torch.Tensor) or tuple(acc.shape) != (x.shape[0],) or acc.dtype != torch.bool:
        raise AssertionError(f"mala_step: accepted must be a bool tensor of shape ({x.shape[0]},), one entry per chain; "
                             f"got {getattr(acc, 'dtype', None)} of shape {getattr(acc, 'shape', None)}")
    return new.detach(), acc


def check_mala_step(impl) -> None:
    """``impl(energy, x, step_size, noise=..., uniform=...) -> (x_new, accepted)`` must be MALA at T = 1."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(500, 2, generator=gen, dtype=torch.float64) * 1.5
    noise = torch.randn(500, 2, generator=gen, dtype=torch.float64)
    uniform = torch.rand(500, generator=gen, dtype=torch.float64)

    # 1. the step itself, against the formula with the exact gradient
    for step in (0.05, 0.8):
        new, acc = _call(impl, _gauss_energy, x.clone(), step, noise, uniform)
        want_new, want_acc = _reference(x, step, noise, uniform)
        if not 0 < int(want_acc.sum()) < len(x):
            raise AssertionError("internal: the reference should accept some proposals and reject others")
        wrong = int((acc != want_acc).sum())
        if wrong:
            raise AssertionError(
                f"mala_step (step {step}): {wrong} of {len(x)} accept/reject decisions differ from MALA's. "
                "Accept when log(uniform) < E(x) - E(y) + log q(x | y) - log q(y | x), with "
                "q(y | x) = N(y; x - eps grad E(x), 2 eps I), so log q(y | x) = -|y - x + eps grad E(x)|^2 / (4 eps) + const")
        err = (new - want_new).abs().max().item()
        if not err < 1e-8:
            raise AssertionError(
                f"mala_step (step {step}): the new points are off by up to {err:.3g}. The proposal is "
                "y = x - eps * grad E(x) + sqrt(2 eps) * noise; an accepted chain moves to y, a rejected one stays at x")

    # 2. a flat energy: the proposal is symmetric, so every move is accepted
    flat = lambda z: 0.0 * z.sum(-1)  # noqa: E731
    _, acc = _call(impl, flat, x.clone(), 0.3, noise, torch.full_like(uniform, 0.999))
    if not bool(acc.all()):
        raise AssertionError("mala_step: with a constant energy the proposal is symmetric and every move must be accepted")

    # 3. no bias at a large step: 1D standard Gaussian, step 0.6, where ULA's variance is 1 / (1 - 0.3)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(4000, 1, generator=gen, dtype=torch.float64)
    std_normal = lambda u: 0.5 * (u**2).sum(-1)  # noqa: E731
    for _ in range(150):
        z, _ = _call(impl, std_normal, z, 0.6,
                     torch.randn(z.shape, generator=gen, dtype=torch.float64),
                     torch.rand(len(z), generator=gen, dtype=torch.float64))
    var = z.var().item()
    if not abs(var - 1.0) < 0.08:
        raise AssertionError(
            f"mala_step: chains on N(0, 1) at step 0.6 reach variance {var:.3f}; MALA's stationary law is exact (1.0), "
            f"while unadjusted Langevin gives {1 / (1 - 0.3):.3f}. Is the accept/reject step applied?")
