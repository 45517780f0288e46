"""Known-answer checks for lesson 7 (GANs: the two-player game).

``check_optimal_discriminator`` and ``check_js_divergence`` grade the exercise in which the
reader writes the optimal discriminator D* = p / (p + q) and the Jensen-Shannon divergence by
quadrature; ``tests/test_gan_game.py`` runs both on :mod:`course_lib.models.gan`'s own versions.
"""

from __future__ import annotations

import math

import torch


def _grid(lo: float = -12.0, hi: float = 12.0, n: int = 4801):
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    return x, (hi - lo) / (n - 1)


def _normal_log_prob(x, mean, std):
    return torch.distributions.Normal(mean, std).log_prob(x)


def _as_tensor(value, what: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        try:
            value = torch.as_tensor(value, dtype=torch.float64)
        except (TypeError, ValueError) as err:
            raise AssertionError(f"{what}: expected a tensor or a number, got {type(value).__name__}") from err
    return value


def check_optimal_discriminator(impl) -> None:
    """``impl(log_p, log_q)`` must return D*(x) = p(x) / (p(x) + q(x)) elementwise, without overflow."""
    x, _ = _grid(-6, 6, 121)
    log_p, log_q = _normal_log_prob(x, 1.0, 0.5), _normal_log_prob(x, -0.5, 1.0)
    got = _as_tensor(impl(log_p, log_q), "optimal_discriminator")
    if tuple(got.shape) != tuple(x.shape):
        raise AssertionError(f"optimal_discriminator: expected one value per grid point, shape {tuple(x.shape)}, got {tuple(got.shape)}")
    p, q = log_p.exp(), log_q.exp()
    want = p / (p + q)
    err = (got.double() - want).abs().max().item()
    if not err < 1e-6:
        raise AssertionError(f"optimal_discriminator: off by up to {err:.3g} from p / (p + q) on two Gaussians")
    same = _as_tensor(impl(log_p, log_p), "optimal_discriminator")
    if not torch.allclose(same.double(), torch.full_like(x, 0.5)):
        raise AssertionError("optimal_discriminator: when p = q, D* must be 1/2 everywhere")
    # far in the tails the densities underflow to 0 in float64: work with the log-densities
    far = _as_tensor(impl(torch.tensor([-800.0, -2000.0], dtype=torch.float64),
                          torch.tensor([-900.0, -1990.0], dtype=torch.float64)), "optimal_discriminator")
    if not torch.isfinite(far).all():
        raise AssertionError(
            "optimal_discriminator: NaN or inf where both densities underflow (log p = -800, log q = -900); "
            "write p / (p + q) with the log-densities only: it is sigma(log p - log q)")
    want_far = torch.sigmoid(torch.tensor([100.0, -10.0], dtype=torch.float64))
    if not torch.allclose(far.double(), want_far, atol=1e-9):
        raise AssertionError(f"optimal_discriminator: with log p = (-800, -2000) and log q = (-900, -1990), "
                             f"expected {want_far.tolist()}, got {far.tolist()}")


def check_js_divergence(impl) -> None:
    """``impl(log_p, log_q, dx)`` must return JS(p, q) in nats, by quadrature on a uniform grid."""
    x, dx = _grid()

    def js(log_p, log_q, what):
        value = _as_tensor(impl(log_p, log_q, dx), what)
        if value.numel() != 1:
            raise AssertionError(f"{what}: expected one number (a 0-dim tensor), got shape {tuple(value.shape)}")
        value = float(value)
        if not math.isfinite(value):
            raise AssertionError(f"{what}: got {value}; 0 log 0 counts as 0, and log m = logaddexp(log p, log q) - log 2 stays finite")
        return value

    log_p = _normal_log_prob(x, 0.0, 1.0)
    same = js(log_p, log_p, "JS(p, p)")
    if abs(same) > 1e-9:
        raise AssertionError(f"JS(p, p) must be 0, got {same:.3g}")
    # two Gaussians 40 standard deviations apart: no overlap, JS = log 2
    far = js(_normal_log_prob(x, -8.0, 0.2), _normal_log_prob(x, 0.0, 0.2), "JS of two far-apart Gaussians")
    if abs(far - math.log(2)) > 1e-6:
        raise AssertionError(f"two distributions that do not overlap have JS = log 2 = {math.log(2):.6f}; got {far:.6f}")
    # uniform on [0, 2] and on [1, 3]: they share half their mass, JS = (1/2) log 2
    inside_p, inside_q = (x >= 0) & (x <= 2), (x >= 1) & (x <= 3)
    log_u_p = torch.where(inside_p, torch.tensor(-math.log(2.0), dtype=torch.float64), torch.tensor(-1e4, dtype=torch.float64))
    log_u_q = torch.where(inside_q, torch.tensor(-math.log(2.0), dtype=torch.float64), torch.tensor(-1e4, dtype=torch.float64))
    half = js(log_u_p, log_u_q, "JS of U[0, 2] and U[1, 3]")
    if abs(half - 0.5 * math.log(2)) > 5e-3:
        raise AssertionError(f"U[0, 2] and U[1, 3] overlap on half their mass: JS = (1/2) log 2 = {0.5 * math.log(2):.4f}; got {half:.4f}")
    # a generic pair, against a direct computation, and symmetry
    a, b = _normal_log_prob(x, 1.0, 0.5), _normal_log_prob(x, -0.5, 1.0)
    p, q = a.exp(), b.exp()
    m = (p + q) / 2
    want = 0.5 * (torch.xlogy(p, p / m).sum() + torch.xlogy(q, q / m).sum()).item() * dx
    ab, ba = js(a, b, "JS(p, q)"), js(b, a, "JS(q, p)")
    if abs(ab - want) > 1e-6:
        raise AssertionError(f"JS of N(1, 0.5^2) and N(-0.5, 1): expected {want:.6f}, got {ab:.6f}; "
                             "it is KL(p || m)/2 + KL(q || m)/2 with m = (p + q)/2, each KL a sum times dx")
    if abs(ab - ba) > 1e-9:
        raise AssertionError(f"JS is symmetric, but JS(p, q) = {ab:.6f} and JS(q, p) = {ba:.6f}")
