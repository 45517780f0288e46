"""Known-answer checks for lesson 12 (diffusion models: DDPM).

``check_q_posterior(fn)`` grades ``fn(schedule, x0, x_t, t) -> (mean, var)``, the Gaussian
posterior q(x_{t-1} | x_t, x_0) of the forward process, for one step index ``t`` (counted from
0: index t is step t + 1 of the math). The known answer is Bayes' rule computed numerically on a
fine 1D grid: q(x_{t-1} | x_t, x_0) is proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0), whose
mean and variance a grid gives to many digits. The library's own
:func:`course_lib.models.diffusion.q_posterior` passes the same check (``tests/test_ddpm.py``).
"""

from __future__ import annotations

import math

import torch

from ..models.diffusion import DDPMSchedule

__all__ = ["bayes_posterior_on_grid", "check_q_posterior"]


def bayes_posterior_on_grid(s: DDPMSchedule, x0: float, x_t: float, t: int, points: int = 200_001) -> tuple[float, float]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) for scalar data, by Bayes' rule on a grid (t >= 1 as an index).

    Prior over x_{t-1}: q(x_{t-1} | x_0) = N(sqrt(abar_{t-1}) x_0, 1 - abar_{t-1}); likelihood of x_t:
    q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t). Their product, normalised on the grid.
    """
    if t < 1:
        raise ValueError("at index 0 (step 1) the posterior is a point mass at x_0; use t >= 1")
    beta, abar_prev = s.betas.double()[t].item(), s.abar_prev.double()[t].item()
    alpha = 1 - beta
    centre, spread = math.sqrt(abar_prev) * x0, math.sqrt(1 - abar_prev)
    # the grid covers both factors: the prior around its centre, the likelihood around x_t / sqrt(alpha_t)
    pull, width = x_t / math.sqrt(alpha), math.sqrt(beta / alpha)
    lo, hi = min(centre - 12 * spread, pull - 12 * width), max(centre + 12 * spread, pull + 12 * width)
    u = torch.linspace(lo, hi, points, dtype=torch.float64)
    log_prior = -((u - centre) ** 2) / (2 * (1 - abar_prev))
    log_lik = -((x_t - math.sqrt(alpha) * u) ** 2) / (2 * beta)
    w = torch.softmax(log_prior + log_lik, dim=0)
    mean = (w * u).sum().item()
    return mean, (w * (u - mean) ** 2).sum().item()


def _call(fn, s, x0, x_t, t):
    out = fn(s, x0, x_t, t)
    assert isinstance(out, tuple) and len(out) == 2, (
        f"q_posterior must return a pair (mean, var), got {type(out).__name__}"
    )
    mean, var = (torch.as_tensor(v, dtype=torch.float64) for v in out)
    assert mean.shape == x0.shape, f"the mean must have the shape of x0, {tuple(x0.shape)}; got {tuple(mean.shape)}"
    return mean, var


def check_q_posterior(fn) -> None:
    """``fn(schedule, x0, x_t, t)`` must return the mean and variance of q(x_{t-1} | x_t, x_0).

    1. For scalar data, at several steps of a cosine and a linear schedule, the mean and variance
       match Bayes' rule on a grid (to 1e-4).
    2. At index 0 (step 1) the posterior is x_0 itself: mean x_0, variance 0.
    3. On a batch of images it acts pixel by pixel (same shape; each pixel as in 1).
    """
    for kind in ("cosine", "linear"):
        s = DDPMSchedule(steps=20 if kind == "cosine" else 50, kind=kind).double()  # linear: beta_t < 1 needs T > 20
        for t, x0, x_t in ((1, 0.7, -0.3), (7, -0.9, 1.4), (19, 0.25, 0.1)):
            mean, var = _call(fn, s, torch.tensor([x0], dtype=torch.float64), torch.tensor([x_t], dtype=torch.float64), t)
            m_ref, v_ref = bayes_posterior_on_grid(s, x0, x_t, t)
            assert abs(float(var.reshape(-1)[0]) - v_ref) < 1e-4 * max(1.0, v_ref), (
                f"{kind} schedule, index t={t}: the variance should be {v_ref:.6f} (Bayes' rule on a grid), "
                f"got {float(var.reshape(-1)[0]):.6f}. It is beta_t (1 - abar_(t-1)) / (1 - abar_t): use "
                "schedule.betas[t], schedule.abar[t] and schedule.abar_prev[t]"
            )
            assert abs(float(mean[0]) - m_ref) < 1e-4, (
                f"{kind} schedule, index t={t}, x0={x0}, x_t={x_t}: the mean should be {m_ref:.6f} (Bayes' rule), "
                f"got {float(mean[0]):.6f}. Check both coefficients: sqrt(abar_(t-1)) beta_t / (1 - abar_t) on x0 "
                "and sqrt(alpha_t) (1 - abar_(t-1)) / (1 - abar_t) on x_t"
            )
        x0, x_t = torch.tensor([0.3], dtype=torch.float64), torch.tensor([-1.2], dtype=torch.float64)
        mean, var = _call(fn, s, x0, x_t, 0)
        assert abs(float(mean[0]) - 0.3) < 1e-3 and float(var.abs().max()) < 1e-6, (  # float32 schedule buffers
            "at index 0 (the first step) the posterior of x_0 given x_1 and x_0 is x_0 itself: mean x0, variance 0; "
            f"got mean {float(mean[0]):.4f}, variance {float(var.abs().max()):.3g}"
        )
    s = DDPMSchedule(steps=20).double()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, 1, 8, 8, generator=gen, dtype=torch.float64) * 2 - 1
    x_t = torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    mean, var = _call(fn, s, x0, x_t, 5)
    i = (1, 0, 2, 6)
    m_ref, v_ref = bayes_posterior_on_grid(s, float(x0[i]), float(x_t[i]), 5)
    assert abs(float(mean[i]) - m_ref) < 1e-4, "on a batch of images each pixel's posterior mean must follow the formula"
    assert abs(float(torch.broadcast_to(var, mean.shape)[i]) - v_ref) < 1e-4, "the variance must be the same for every pixel"
