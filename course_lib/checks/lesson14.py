"""Known-answer checks for lesson 14 (the SDE view, the probability-flow ODE, flow matching).

``check_probability_flow_drift(fn)`` grades ``fn(sde, score_fn, x, t) -> dx/dt``, the drift of the
probability-flow ODE f(x, t) - 1/2 g(t)^2 s(x, t). Known answers: for Gaussian data the score of
every marginal is known in closed form, so the drift is too (for the VP and the VE SDE); and the
ODE built from it carries the prior N(0, I) at t = 1 back to the data's Gaussian at t = 0.

``check_cfm_loss(fn)`` grades ``fn(velocity, x0, x1, t) -> loss``, the conditional flow matching
loss, mean over the batch and the coordinates of (v(x_t, t) - (x_1 - x_0))^2 with
x_t = (1 - t) x_0 + t x_1. Known answers: a velocity field that returns zero, one that returns its
input, and the value at the exact marginal velocity of a Gaussian, where the loss equals its floor
E Var(x_1 - x_0 | x_t) in closed form.

The library's own :func:`course_lib.models.sde.probability_flow_drift` and
:func:`course_lib.models.flow_matching.cfm_loss` pass the same checks (``tests/test_sde.py``,
``tests/test_flow_matching.py``).
"""

from __future__ import annotations

import math

import torch

from ..models.flow_matching import gaussian_marginal_velocity
from ..models.sde import VESDE, VPSDE, gaussian_score, ode_solve

__all__ = ["check_probability_flow_drift", "check_cfm_loss", "gaussian_cfm_floor"]


def _gaussian_drift(sde, x: torch.Tensor, t: float, std: float) -> torch.Tensor:
    """The probability-flow drift for data N(0, std^2 I), written out by hand."""
    if isinstance(sde, VPSDE):
        beta, ab = sde.beta(t).item(), sde.abar(t).item()
        return -0.5 * beta * x + 0.5 * beta * x / (ab * std**2 + 1 - ab)
    g2 = sde.g(t).item() ** 2
    var = std**2 + sde.sigma(t).item() ** 2 - sde.sigma_min**2
    return 0.5 * g2 * x / var


def check_probability_flow_drift(fn) -> None:
    """``fn(sde, score_fn, x, t)`` must return f(x, t) - 1/2 g(t)^2 score_fn(x, t), the shape of x.

    1. VP (cosine and linear) and VE SDEs with the exact score of Gaussian data: the drift equals
       its closed form, for a batch of points and a batch of images, at several t (a 0-dim tensor).
    2. With a score that is not a Gaussian's (sin x), it is still f - 1/2 g^2 s.
    3. Solved from N(0, I) at t = 1 to t = 0 (VP, Gaussian data N(0.5, 0.3^2)), it gives that Gaussian.
    """
    std = 0.3
    sdes = {"VP cosine": VPSDE("cosine", steps=100), "VP linear": VPSDE("linear"), "VE": VESDE(0.01, 5.0)}
    gen = torch.Generator().manual_seed(0)
    for name, sde in sdes.items():
        score = gaussian_score(sde, torch.zeros(2, dtype=torch.float64), std)
        for t in (0.05, 0.4, 0.9):
            x = torch.randn(5, 2, generator=gen, dtype=torch.float64)
            out = fn(sde, score, x, torch.tensor(t, dtype=torch.float64))
            assert torch.is_tensor(out) and out.shape == x.shape, (
                f"{name}: the drift must have the shape of x, {tuple(x.shape)}; got {getattr(out, 'shape', type(out))}"
            )
            want = _gaussian_drift(sde, x, t, std)
            assert torch.allclose(out.double(), want, rtol=1e-4, atol=1e-6), (
                f"{name} SDE at t={t}: for Gaussian data the drift should be {want[0].tolist()} at the first point, "
                f"got {out[0].tolist()}. It is sde.drift(x, t) - 0.5 * sde.g(t)**2 * score_fn(x, t)"
            )
    sde = sdes["VP cosine"]
    t = torch.tensor(0.3, dtype=torch.float64)
    images = torch.randn(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    out = fn(sde, lambda y, tt: torch.sin(y), images, t)
    want = sde.drift(images, t) - 0.5 * sde.g(t) ** 2 * torch.sin(images)
    assert torch.is_tensor(out) and out.shape == images.shape, "the drift of a batch of images must keep its shape (B, 1, 8, 8)"
    assert torch.allclose(out.double(), want, rtol=1e-4, atol=1e-6), (
        "with the score sin(x) the drift should be f(x, t) - 1/2 g(t)^2 sin(x); check the factor 1/2 and the sign"
    )
    mean = torch.tensor([0.5], dtype=torch.float64)
    score = gaussian_score(sde, mean, std)
    z = torch.randn(20_000, 1, generator=gen, dtype=torch.float64)
    x0, _ = ode_solve(lambda y, tt: fn(sde, score, y, tt), z, 1.0, 0.0, method="rk4", steps=200)
    m, s = x0.mean().item(), x0.std().item()
    assert abs(m - 0.5) < 0.03 and abs(s - std) < 0.03, (
        f"the ODE with your drift, run from N(0, 1) at t = 1 back to t = 0, should give N(0.5, 0.3^2); "
        f"got mean {m:.3f}, std {s:.3f}"
    )


def gaussian_cfm_floor(mean: float, std: float, t: float) -> float:
    """E Var(x_1 - x_0 | x_t) per coordinate for data N(mean, std^2), noise N(0, 1), at time t: the value
    of the conditional flow matching loss at the exact marginal velocity (the loss's floor at t).

    Var(x_1 - x_0) = 1 + std^2; Cov(x_1 - x_0, x_t) = t - (1 - t) std^2; Var(x_t) = (1 - t)^2 std^2 + t^2.
    """
    return 1 + std**2 - (t - (1 - t) * std**2) ** 2 / ((1 - t) ** 2 * std**2 + t**2)


def check_cfm_loss(fn) -> None:
    """``fn(velocity, x0, x1, t)`` must return the mean over batch and coordinates of
    (velocity(x_t, t) - (x1 - x0))^2 with x_t = (1 - t) x0 + t x1, one t per row.

    1. velocity = 0: the loss is mean (x1 - x0)^2.
    2. velocity(x, t) = x: the loss is mean (x_t - (x1 - x0))^2, which needs x_t built with the right t
       (a (N,) tensor, one time per row).
    3. It calls the velocity at x_t and the times t, once, with a batch.
    4. At the exact marginal velocity of Gaussian data, at a fixed t, it equals the floor
       E Var(x_1 - x_0 | x_t) in closed form (Monte Carlo, 200,000 pairs).
    """
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(64, 3, generator=gen, dtype=torch.float64) * 0.5 + 1.0
    x1 = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    t = torch.rand(64, generator=gen, dtype=torch.float64)
    x_t = (1 - t[:, None]) * x0 + t[:, None] * x1
    target = x1 - x0

    def value(out) -> float:
        assert torch.is_tensor(out) and out.numel() == 1, f"the loss must be a scalar tensor, got {getattr(out, 'shape', type(out))}"
        return float(out)

    got = value(fn(lambda x, tt: torch.zeros_like(x), x0, x1, t))
    want = target.square().mean().item()
    assert math.isclose(got, want, rel_tol=1e-6), (
        f"with a velocity field that returns 0 the loss is the mean of (x1 - x0)^2 = {want:.6f}, got {got:.6f}; "
        "average over the batch and the coordinates"
    )
    got = value(fn(lambda x, tt: x, x0, x1, t))
    want = (x_t - target).square().mean().item()
    assert math.isclose(got, want, rel_tol=1e-6), (
        f"with velocity(x, t) = x the loss should be {want:.6f}, got {got:.6f}: build x_t = (1 - t) x0 + t x1 "
        "with one t per row (reshape t to (N, 1)), and compare with the target x1 - x0"
    )
    seen = []

    def spy(x, tt):
        seen.append((x.detach().clone(), torch.as_tensor(tt).detach().clone()))
        return torch.zeros_like(x)

    fn(spy, x0, x1, t)
    assert len(seen) == 1, f"call the velocity once, with the whole batch; it was called {len(seen)} times"
    assert torch.allclose(seen[0][0], x_t), "the velocity must be evaluated at x_t = (1 - t) x0 + t x1"
    assert seen[0][1].numel() == len(t) and torch.allclose(seen[0][1].reshape(-1).double(), t), (
        "pass the velocity the times t, one per row (shape (N,))"
    )
    mean, std, tau, n = 0.7, 0.4, 0.35, 200_000
    a = mean + std * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    b = torch.randn(n, 1, generator=gen, dtype=torch.float64)
    tt = torch.full((n,), tau, dtype=torch.float64)
    got = value(fn(lambda x, s: gaussian_marginal_velocity(x, s, mean, std), a, b, tt))
    want = gaussian_cfm_floor(mean, std, tau)
    assert abs(got - want) < 0.02, (
        f"at the exact marginal velocity of Gaussian data the loss is E Var(x1 - x0 | x_t) = {want:.4f}, got {got:.4f}"
    )
