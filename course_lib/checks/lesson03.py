"""Known-answer checks for lesson 3 (maximum likelihood and KL).

``check_gaussian_kl(impl)`` grades an implementation of the closed-form KL divergence between
two Gaussians, ``impl(mean0, cov0, mean1, cov1) -> KL(N(mean0, cov0) || N(mean1, cov1))`` in
nats. The unit tests run it on ``course_lib.likelihood.gaussian_kl``; Exercise 3 of the lesson
runs it on the student's function.
"""

from __future__ import annotations

import math

import torch

MVN = torch.distributions.MultivariateNormal


def _value(impl, m0, s0, m1, s1) -> float:
    out = impl(m0, s0, m1, s1)
    if isinstance(out, torch.Tensor):
        assert out.numel() == 1, (
            f"the KL of two Gaussians is one number, but your function returned a tensor of shape "
            f"{tuple(out.shape)}: sum the terms into a scalar"
        )
        out = out.item()
    out = float(out)
    assert math.isfinite(out), f"your function returned {out} for two well-conditioned Gaussians"
    return out


def _pairs():
    """Gaussian pairs with known KL: (description, m0, s0, m1, s1, exact)."""
    g = torch.Generator().manual_seed(3)
    yield "KL(N(0, 1) || N(1, 4)) in 1D", torch.zeros(1), torch.eye(1), torch.ones(1), 4 * torch.eye(1), (
        math.log(2) + (1 + 1) / 8 - 0.5  # ln(s1/s0) + (s0^2 + (m0-m1)^2) / (2 s1^2) - 1/2
    )
    m = torch.tensor([0.3, -1.2])
    s = torch.tensor([[1.0, 0.4], [0.4, 0.5]])
    yield "KL(p || p) for a correlated 2D Gaussian", m, s, m.clone(), s.clone(), 0.0
    # KL(N(0, I) || N(0, c I)) in D dimensions: (D/2) (1/c - 1 + ln c)
    yield "KL(N(0, I) || N(0, 3 I)) in 3D", torch.zeros(3), torch.eye(3), torch.zeros(3), 3 * torch.eye(3), (
        1.5 * (1 / 3 - 1 + math.log(3))
    )
    # a shift only: half the squared Mahalanobis distance
    s1 = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    yield "a shift of (1, 1) against covariance diag(2, 0.5)", torch.zeros(2), s1, torch.ones(2), s1.clone(), (
        0.5 * (1 / 2 + 1 / 0.5)
    )
    for d in (2, 4):  # random correlated pairs, against torch.distributions
        a0 = torch.randn(d, d, generator=g, dtype=torch.float64)
        a1 = torch.randn(d, d, generator=g, dtype=torch.float64)
        s0 = a0 @ a0.T + 0.5 * torch.eye(d, dtype=torch.float64)
        s1 = a1 @ a1.T + 0.5 * torch.eye(d, dtype=torch.float64)
        m0 = torch.randn(d, generator=g, dtype=torch.float64)
        m1 = torch.randn(d, generator=g, dtype=torch.float64)
        exact = torch.distributions.kl_divergence(MVN(m0, s0), MVN(m1, s1)).item()
        yield f"a random correlated pair in {d}D", m0, s0, m1, s1, exact


def check_gaussian_kl(impl) -> None:
    """Assert that ``impl`` computes KL(N(mean0, cov0) || N(mean1, cov1)) in nats."""
    for what, m0, s0, m1, s1, exact in _pairs():
        got = _value(impl, m0, s0, m1, s1)
        if abs(got - exact) <= 1e-5 * max(1.0, abs(exact)):
            continue
        hint = ""
        try:
            swapped = _value(impl, m1, s1, m0, s0)
        except Exception:  # noqa: BLE001 - only a hint
            swapped = float("nan")
        if exact != 0 and abs(swapped - exact) <= 1e-5 * max(1.0, abs(exact)):
            hint = " (your value is the KL in the other direction: the expectation is under the first Gaussian)"
        elif exact != 0 and abs(got - 2 * exact) <= 1e-5 * max(1.0, abs(exact)):
            hint = " (twice the answer: the closed form has a factor 1/2 in front)"
        raise AssertionError(f"{what}: expected {exact:.6f} nats, got {got:.6f}{hint}")
    # a float32 input must work as well as float64, and the KL is never negative
    m0, s0 = torch.tensor([0.0, 0.0]), torch.tensor([[1.0, 0.9], [0.9, 1.0]])
    m1, s1 = torch.tensor([0.5, 0.0]), torch.eye(2)
    forward, reverse = _value(impl, m0, s0, m1, s1), _value(impl, m1, s1, m0, s0)
    assert forward >= 0 and reverse >= 0, f"a KL divergence is never negative; got {forward:.4f} and {reverse:.4f}"
    assert abs(forward - reverse) > 0.1, (
        "KL(p || q) and KL(q || p) came out (nearly) equal for a correlated p and a round q: "
        "the KL is not symmetric, so one of the terms uses the wrong covariance"
    )
