"""Known-answer checks for lesson 11 (score matching and score-based models).

``check_noised_mixture_score`` grades the exercise in which the reader writes the score of a
Gaussian mixture convolved with N(0, sigma^2 I); ``check_dsm_loss`` the one in which the reader
writes the denoising score matching loss. ``tests/test_score.py`` runs both on
:mod:`course_lib.models.score`'s own versions.
"""

from __future__ import annotations

import math

import torch


def _as_tensor(value, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise AssertionError(f"{what}: expected a torch.Tensor, got {type(value).__name__}")
    return value


def _autograd_score(x: torch.Tensor, means: torch.Tensor, std: float, weights: torch.Tensor) -> torch.Tensor:
    """grad_x log p(x) by autograd through torch.distributions: an independent reference."""
    mix = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=weights),
        torch.distributions.Independent(torch.distributions.Normal(means, torch.full_like(means, std)), 1),
    )
    x = x.clone().requires_grad_(True)
    return torch.autograd.grad(mix.log_prob(x).sum(), x)[0]


def check_noised_mixture_score(impl) -> None:
    """``impl(x, means, std, sigma, weights)`` must return grad_x log p_sigma(x), p_sigma = mixture * N(0, sigma^2 I)."""
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([[-2.0, 0.0], [2.0, 0.5], [0.0, 2.0]], dtype=torch.float64)
    weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    x = 3 * torch.randn(200, 2, generator=gen, dtype=torch.float64)
    for std, sigma in ((0.3, 0.0), (0.3, 0.5), (0.5, 2.0)):
        got = _as_tensor(impl(x, means, std, sigma, weights), "noised_mixture_score")
        if tuple(got.shape) != tuple(x.shape):
            raise AssertionError(f"noised_mixture_score: expected one score per point, shape {tuple(x.shape)}, got {tuple(got.shape)}")
        want = _autograd_score(x, means, math.sqrt(std**2 + sigma**2), weights)
        err = (got.double() - want).abs().max().item()
        if not err < 1e-6:
            hint = ("at sigma = 0 it is the mixture's own score" if sigma == 0 else
                    "convolving N(mu_k, std^2 I) with N(0, sigma^2 I) gives N(mu_k, (std^2 + sigma^2) I): "
                    "use the variance std^2 + sigma^2, not the standard deviations added")
            raise AssertionError(f"noised_mixture_score (std={std}, sigma={sigma}): off by up to {err:.3g} "
                                 f"from grad_x log p_sigma(x) by autograd; {hint}")
    # equal weights by default
    got = _as_tensor(impl(x, means, 0.3, 0.5, None), "noised_mixture_score with weights=None")
    want = _autograd_score(x, means, math.sqrt(0.3**2 + 0.5**2), torch.full((3,), 1 / 3, dtype=torch.float64))
    if not (got.double() - want).abs().max().item() < 1e-6:
        raise AssertionError("noised_mixture_score: with weights=None the components must have equal weights")
    # far from every mode the densities underflow; the score does not (it is about -(x - mu_nearest) / var)
    far = torch.tensor([[60.0, 0.0], [0.0, -80.0]], dtype=torch.float64)
    got = _as_tensor(impl(far, means, 0.3, 0.0, weights), "noised_mixture_score far from the modes")
    if not torch.isfinite(got).all():
        raise AssertionError("noised_mixture_score: NaN or inf at points far from every mode, where every density "
                             "underflows to 0; compute the responsibilities with a softmax of log-weights and "
                             "log-densities (torch.softmax), never by dividing densities")
    want = _autograd_score(far, means, 0.3, weights)
    if not torch.allclose(got.double(), want, rtol=1e-6, atol=1e-6):
        raise AssertionError(f"noised_mixture_score far from the modes: expected {want.tolist()}, got {got.tolist()}")


def check_dsm_loss(impl) -> None:
    """``impl(score_fn, x, sigma, eps)`` must return 1/2 ||s(x + sigma eps) + eps / sigma||^2 per example."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(64, 3, generator=gen, dtype=torch.float64)

    def linear(y):
        return -0.7 * y + 0.1

    for sigma in (0.5, torch.linspace(0.1, 2.0, 64, dtype=torch.float64)):
        got = _as_tensor(impl(linear, x, sigma, eps), "dsm_loss")
        if tuple(got.shape) != (64,):
            raise AssertionError(f"dsm_loss: expected one value per example, shape (64,), got {tuple(got.shape)}")
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        want = 0.5 * ((linear(x + s * eps) + eps / s) ** 2).sum(1)
        err = (got.double() - want).abs().max().item()
        if not err < 1e-8:
            kind = "one sigma for all" if not isinstance(sigma, torch.Tensor) else "one sigma per example, shape (N,)"
            raise AssertionError(f"dsm_loss ({kind}): off by up to {err:.3g}; the noisy point is x + sigma * eps, the "
                                 "target is the noising kernel's score -eps / sigma, and the loss is half the squared "
                                 "distance summed over coordinates")
    # the kernel's own score, -(y - x) / sigma^2, scores exactly zero
    zero = _as_tensor(impl(lambda y: -(y - x) / 0.3**2, x, 0.3, eps), "dsm_loss")
    if not zero.abs().max().item() < 1e-8:
        raise AssertionError("dsm_loss: the score of N(y; x, sigma^2 I), -(y - x) / sigma^2, must give a loss of 0 "
                             f"at every example, got up to {zero.abs().max().item():.3g}")
    # Gaussian data N(0, 1) in 2D: E[loss] for s(y) = -a y is (D/2)(a^2 (1 + sigma^2) - 2a + 1/sigma^2), least at a = 1/(1 + sigma^2)
    gen = torch.Generator().manual_seed(2)
    data = torch.randn(200_000, 2, generator=gen, dtype=torch.float64)
    noise = torch.randn(200_000, 2, generator=gen, dtype=torch.float64)
    sigma = 0.5
    for a in (0.5, 1 / (1 + sigma**2), 1.2):
        got = float(_as_tensor(impl(lambda y: -a * y, data, sigma, noise), "dsm_loss").mean())
        want = (a**2 * (1 + sigma**2) - 2 * a + 1 / sigma**2)
        if abs(got - want) > 0.05:
            raise AssertionError(f"dsm_loss on N(0, I) data, sigma = 0.5, s(y) = -{a:.3f} y: expected a mean of "
                                 f"{want:.3f} (closed form), got {got:.3f}")
