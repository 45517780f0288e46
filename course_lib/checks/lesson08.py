"""Known-answer checks for lesson 8 (GANs in practice).

``check_power_iteration(impl)`` grades one step of power iteration, the estimate of a matrix's
largest singular value that spectral normalisation runs on every call. The student's function
and the library's own ``course_lib.models.dcgan.power_iteration`` pass the same checks
(``tests/test_dcgan.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["check_power_iteration", "known_matrix"]

SINGULAR_VALUES = (3.0, 2.0, 0.5)


def known_matrix(rows: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A (rows x 3) matrix W = U diag(3, 2, 0.5) V^T with known singular vectors, in float64.

    Returns (W, u1, v1): the matrix and its first left and right singular vectors.
    """
    gen = torch.Generator().manual_seed(8)
    U, _ = torch.linalg.qr(torch.randn(rows, 3, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    W = U @ torch.diag(torch.tensor(SINGULAR_VALUES, dtype=torch.float64)) @ V.t()
    return W, U[:, 0], V[:, 0]


def _triple(out):
    assert isinstance(out, tuple) and len(out) == 3, (
        f"power_iteration(W, u) must return a tuple (u, v, sigma), got {type(out).__name__}"
    )
    return out


def check_power_iteration(impl) -> None:
    """``impl(W, u) -> (u_new, v, sigma)``: one step of power iteration on W (m x n) from u (m,).

    v = W^T u / |W^T u|, u_new = W v / |W v|, sigma = u_new^T W v; repeated, sigma must reach
    the largest singular value (3 for the known matrix) and u, v its singular vectors.
    """
    W, u1, v1 = known_matrix()
    u0 = F.normalize(torch.ones(W.shape[0], dtype=torch.float64), dim=0)
    u, v, sigma = _triple(impl(W, u0))
    assert u.shape == (W.shape[0],), f"u must have shape ({W.shape[0]},) like the input u, got {tuple(u.shape)}"
    assert v.shape == (W.shape[1],), f"v must have shape ({W.shape[1]},) (one entry per column of W), got {tuple(v.shape)}"
    assert torch.as_tensor(sigma).dim() == 0, "sigma must be a scalar (a 0-dimensional tensor)"
    torch.testing.assert_close(v.norm(), torch.tensor(1.0, dtype=torch.float64), msg="v must have unit length: normalise W^T u")
    torch.testing.assert_close(u.norm(), torch.tensor(1.0, dtype=torch.float64), msg="u must have unit length: normalise W v")
    v_expected = W.t() @ u0 / (W.t() @ u0).norm()
    torch.testing.assert_close(v, v_expected, msg="v must be W^T u / |W^T u| (with the u passed in)")
    u_expected = W @ v_expected / (W @ v_expected).norm()
    torch.testing.assert_close(u, u_expected, msg="the new u must be W v / |W v| (with the new v)")
    torch.testing.assert_close(
        torch.as_tensor(sigma), u_expected @ W @ v_expected, msg="sigma must be u^T W v, with the new u and v"
    )
    assert float(sigma) <= SINGULAR_VALUES[0] + 1e-9, "sigma = u^T W v can never exceed the largest singular value"
    # repeated, the iteration converges to the top singular triple, at the rate (sigma_2 / sigma_1)^2 per step
    u = u0
    for _ in range(60):
        u, v, sigma = impl(W, u)
    assert abs(float(sigma) - SINGULAR_VALUES[0]) < 1e-8, (
        f"after 60 steps sigma should be the largest singular value {SINGULAR_VALUES[0]}, got {float(sigma):.6f}"
    )
    assert abs(abs(float(u @ u1)) - 1) < 1e-8 and abs(abs(float(v @ v1)) - 1) < 1e-8, (
        "after 60 steps u and v should be the first singular vectors of W (up to sign)"
    )
    # a wide matrix (more columns than rows) works too
    u, v, sigma = _triple(impl(W.t(), F.normalize(torch.ones(3, dtype=torch.float64), dim=0)))
    assert u.shape == (3,) and v.shape == (W.shape[0],), "power_iteration must work for any m x n matrix"
