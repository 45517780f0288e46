"""Known-answer checks for lesson 9 (evaluating generative models).

``check_frechet_from_moments(impl)`` grades an implementation of the Fréchet distance between
two Gaussians, ``impl(mu1, cov1, mu2, cov2) -> float``; the unit tests run it on
``course_lib.evaluation.frechet_from_moments``.
"""

from __future__ import annotations

import math

import torch


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(a)
    return vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T


def _random_cov(d: int, gen: torch.Generator) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def check_frechet_from_moments(impl) -> None:
    """Raise AssertionError unless ``impl`` computes |mu1-mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2)."""
    gen = torch.Generator().manual_seed(0)
    d = 6
    mu = torch.randn(d, generator=gen, dtype=torch.float64)
    cov = _random_cov(d, gen)

    def call(*args) -> float:
        out = impl(*args)
        value = float(out)
        assert math.isfinite(value), f"the distance must be a finite number, got {out!r}"
        return value

    same = call(mu, cov, mu, cov)
    assert abs(same) < 1e-6, f"a Gaussian is at distance 0 from itself; got {same:.3g}"

    shift = torch.full((d,), 0.5, dtype=torch.float64)
    got = call(mu, cov, mu + shift, cov)
    assert abs(got - float(shift @ shift)) < 1e-6, (
        f"equal covariances, means apart by m: the distance is |m|^2 = {float(shift @ shift):.4f}; got {got:.4f}. "
        "Check the mean term: the squared Euclidean norm of the difference, summed over coordinates."
    )

    one = torch.ones(1, dtype=torch.float64)
    got = call(0 * one, torch.tensor([[4.0]], dtype=torch.float64), one, torch.tensor([[1.0]], dtype=torch.float64))
    assert abs(got - 2.0) < 1e-6, (
        f"in one dimension the distance is (m1 - m2)^2 + (s1 - s2)^2 = 1 + (2 - 1)^2 = 2; got {got:.4f}. "
        "The covariance term takes the trace of a *matrix* square root, not of elementwise roots or of the product."
    )

    eye = torch.eye(d, dtype=torch.float64)
    got = call(mu, eye, mu, 2 * eye)
    exact = d * (3 - 2 * math.sqrt(2))
    assert abs(got - exact) < 1e-6, f"N(m, I) against N(m, 2I) in {d} dimensions: {exact:.4f} expected, got {got:.4f}"

    # covariances that do not commute: the cross term needs (S1^1/2 S2 S1^1/2)^1/2
    cov2 = _random_cov(d, gen)
    s1 = _sqrt_psd(cov)
    exact = float(cov.trace() + cov2.trace() - 2 * _sqrt_psd(s1 @ cov2 @ s1).trace())
    got = call(mu, cov, mu, cov2)
    assert abs(got - exact) < 1e-6 * max(1.0, abs(exact)), (
        f"two covariances that do not commute: {exact:.6f} expected, got {got:.6f}. "
        "tr((S1 S2)^1/2) is right, but sqrt of the elementwise product or of each trace is not."
    )
    back = call(mu, cov2, mu, cov)
    assert abs(back - got) < 1e-6 * max(1.0, abs(got)), f"the distance is symmetric: {got:.6f} one way, {back:.6f} the other"

    # float32 input works too
    got32 = call(mu.float(), cov.float(), (mu + shift).float(), cov.float())
    assert abs(got32 - float(shift @ shift)) < 1e-3, f"float32 moments should give the same answer; got {got32:.4f}"
