"""Known-answer checks for lesson 13 (diffusion in practice: DDIM, guidance, latent diffusion).

``check_ddim_step(fn)`` grades ``fn(schedule, x_t, eps, t, t_prev, eta, z) -> x_prev``, one DDIM
step from step index ``t`` to the earlier index ``t_prev`` (-1 stands for x_0), counted from 0 as
in lesson 12. Three known answers:

1. With eta = 0 and the exact noise of a single clean image x_0 (x_t = sqrt(abar_t) x_0 +
   sqrt(1 - abar_t) eps), the step lands exactly on sqrt(abar_t') x_0 + sqrt(1 - abar_t') eps: the
   same image with the same noise at the earlier step's level (and on x_0 itself at t_prev = -1).
2. With eta = 1 the step is lesson 12's ancestral step: its mean is the posterior mean
   q(x_t' | x_t, x0_hat) and its noise has the posterior's standard deviation (beta tilde for one
   step; the respaced formula for a jump), computed here by :func:`course_lib.models.diffusion.q_posterior`.
3. In between, the noise's standard deviation is eta times that of eta = 1.

The library's :func:`course_lib.models.guidance.ddim_step` passes the same check (``tests/test_guidance.py``).
"""

from __future__ import annotations

import torch

from ..models.diffusion import DDPMSchedule, predict_x0, q_posterior

__all__ = ["check_ddim_step"]


def _call(fn, s, x_t, eps, t, t_prev, eta, z):
    out = fn(s, x_t, eps, t, t_prev, eta, z)
    assert isinstance(out, torch.Tensor), f"the DDIM step must return a tensor (x at step t_prev), got {type(out).__name__}"
    assert out.shape == x_t.shape, f"the DDIM step must return a tensor of the shape of x_t, {tuple(x_t.shape)}; got {tuple(out.shape)}"
    return out.double()


def check_ddim_step(fn) -> None:
    """``fn(schedule, x_t, eps, t, t_prev, eta, z)`` must return x at step index ``t_prev`` (DDIM)."""
    s = DDPMSchedule(steps=50).double()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1
    eps = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    z = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
    for t, t_prev in ((49, 48), (30, 10), (5, 0), (12, -1), (0, -1)):
        x_t = s.abar[t].sqrt() * x0 + (1 - s.abar[t]).sqrt() * eps
        out = _call(fn, s, x_t, eps, t, t_prev, 0.0, z)
        ab_prev = s.abar[t_prev] if t_prev >= 0 else torch.ones((), dtype=torch.float64)
        target = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        err = (out - target).abs().max().item()
        assert err < 1e-6, (
            f"eta = 0, from index t={t} to t_prev={t_prev}, with the exact noise of a known x_0: the step should "
            f"land on sqrt(abar_t') x0 + sqrt(1 - abar_t') eps (largest error {err:.3g}). Check x0_hat = "
            "(x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t), the two coefficients, and that t_prev = -1 means abar = 1"
        )
        other = _call(fn, s, x_t, eps, t, t_prev, 0.0, torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64))
        assert torch.allclose(out, other, atol=1e-12), "with eta = 0 the step is deterministic: it must not use z"

    for t, t_prev in ((40, 39), (10, 9), (30, 12), (8, 2)):
        x_t = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
        eps_hat = torch.randn(4, 1, 8, 8, generator=gen, dtype=torch.float64)
        mean_ref, var_ref = q_posterior(s, predict_x0(s, x_t, t, eps_hat), x_t, t, t_prev)
        at_zero = _call(fn, s, x_t, eps_hat, t, t_prev, 1.0, torch.zeros_like(x_t))
        with_z = _call(fn, s, x_t, eps_hat, t, t_prev, 1.0, z)
        err = (at_zero - mean_ref).abs().max().item()
        assert err < 1e-6, (
            f"eta = 1, index t={t} -> {t_prev}: the mean of the step should be the posterior mean of lesson 12, "
            f"q(x_t' | x_t, x0_hat) (largest error {err:.3g}). The noise term is sigma * z; the direction term has "
            "sqrt(1 - abar_t' - sigma^2), not sqrt(1 - abar_t')"
        )
        sigma = ((with_z - at_zero) / z).median().item()
        assert abs(sigma - var_ref.sqrt().item()) < 1e-6, (
            f"eta = 1, index t={t} -> {t_prev}: the noise's standard deviation should be sqrt(beta tilde) = "
            f"{var_ref.sqrt().item():.6f}, got {sigma:.6f}. sigma = eta sqrt((1 - abar_t') / (1 - abar_t)) "
            "sqrt(1 - abar_t / abar_t')"
        )
        half = _call(fn, s, x_t, eps_hat, t, t_prev, 0.5, z) - _call(fn, s, x_t, eps_hat, t, t_prev, 0.5, torch.zeros_like(z))
        sigma_half = (half / z).median().item()
        assert abs(sigma_half - 0.5 * var_ref.sqrt().item()) < 1e-6, (
            f"eta = 0.5, index t={t} -> {t_prev}: sigma should be half of eta = 1's, {0.5 * var_ref.sqrt().item():.6f}; "
            f"got {sigma_half:.6f}"
        )
