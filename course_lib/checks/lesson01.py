"""Known-answer checks for lesson 1 (the four-paradigm map).

``check_forward_process`` grades the exercise in which the reader writes the diffusion forward
process in closed form; ``tests/test_checks_lesson01.py`` runs it on
:func:`course_lib.models.diffusion.q_sample`. ``capped_cosine_abar`` is the known answer of the
few-step diffusion exercise.
"""

from __future__ import annotations

import math

import torch


def _close(got, want, what: str, atol: float = 1e-5) -> None:
    if not isinstance(got, torch.Tensor):
        raise AssertionError(f"{what}: expected a tensor, got {type(got).__name__}")
    if tuple(got.shape) != tuple(want.shape):
        raise AssertionError(f"{what}: expected shape {tuple(want.shape)}, got {tuple(got.shape)}")
    err = (got.double() - want.double()).abs().max().item()
    if not err <= atol:
        raise AssertionError(f"{what}: off by up to {err:.3g}\nexpected {want}\ngot      {got}")


def check_forward_process(impl) -> None:
    """``impl(x0, t, eps, betas)`` must return x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps.

    ``t`` has one step index per row, counted from 0 (index i is step i + 1 of the math), and
    abar_t = (1 - beta_1) ... (1 - beta_t): the product up to and including index t.
    """
    betas = torch.tensor([0.1, 0.2, 0.3])
    abar = torch.tensor([0.9, 0.9 * 0.8, 0.9 * 0.8 * 0.7])
    t = torch.tensor([0, 1, 2])
    ones, zeros = torch.ones(3, 2), torch.zeros(3, 2)
    # the data term alone: x0 = 1, eps = 0 gives sqrt(abar_t) in every coordinate
    _close(impl(ones, t, zeros, betas), abar.sqrt()[:, None].expand(3, 2),
           "with x0 = 1 and eps = 0 (the data term alone, sqrt(abar_t); abar_t includes step t itself)")
    # the noise term alone: x0 = 0, eps = 1 gives sqrt(1 - abar_t)
    _close(impl(zeros, t, ones, betas), (1 - abar).sqrt()[:, None].expand(3, 2),
           "with x0 = 0 and eps = 1 (the noise term alone, sqrt(1 - abar_t))")
    # rows with different steps, in any order, and data of any shape (images: (N, 1, 8, 8))
    gen = torch.Generator().manual_seed(0)
    betas = torch.linspace(0.01, 0.4, 12)
    abar = torch.cumprod(1 - betas.double(), 0)
    for shape in [(6, 2), (6, 1, 8, 8)]:
        x0, eps = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        t = torch.tensor([11, 0, 5, 5, 3, 7])
        ab = abar[t].view((-1,) + (1,) * (len(shape) - 1))
        want = ab.sqrt() * x0.double() + (1 - ab).sqrt() * eps.double()
        _close(impl(x0, t, eps, betas), want, f"for data of shape {shape} with steps {t.tolist()}")


def capped_cosine_abar(steps: int, max_beta: float = 0.5, s: float = 0.008) -> float:
    """abar_T of the cosine schedule with every beta_t capped at ``max_beta``, computed in float64."""
    f = [math.cos((i / steps + s) / (1 + s) * math.pi / 2) ** 2 for i in range(steps + 1)]
    abar = 1.0
    for i in range(1, steps + 1):
        abar *= 1 - min(1 - f[i] / f[i - 1], max_beta)
    return abar


def check_capped_abar(value: float, steps: int) -> None:
    """``value`` must be abar_T of the course's capped cosine schedule with ``steps`` steps."""
    want = capped_cosine_abar(steps)
    if not isinstance(value, (int, float)):
        value = float(value)
    if not math.isclose(value, want, rel_tol=1e-3):
        raise AssertionError(
            f"abar_T for T = {steps} should be {want:.4g} (the product of (1 - beta_t) with every "
            f"beta_t capped at 0.5), got {value:.4g}"
        )
