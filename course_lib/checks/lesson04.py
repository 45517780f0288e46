"""Known-answer checks for lesson 4 (normalizing flows).

``check_affine_coupling(cls)`` grades an affine coupling layer: the student's class (a subclass
of ``course_lib.models.AffineCoupling`` that writes ``forward`` and ``inverse`` itself) and the
library's own ``AffineCoupling`` pass the same checks (``tests/test_flows.py``).
"""

from __future__ import annotations

import torch
from torch.autograd.functional import jacobian

__all__ = ["check_affine_coupling"]


def _layer(cls, mask: torch.Tensor, seed: int):
    """A layer of ``cls`` in double precision with random weights (a new coupling is the identity)."""
    torch.manual_seed(seed)
    layer = cls(mask, hidden=16, scale_limit=2.0).double().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return layer


def _pair(out, what: str):
    assert isinstance(out, tuple) and len(out) == 2, f"{what} must return a pair (values, logdet), got {type(out).__name__}"
    return out


def check_affine_coupling(cls) -> None:
    """``cls(mask, hidden=..., scale_limit=...)`` must be a correct affine coupling layer.

    Checked on random weights, in double precision, for two masks: ``forward(x)`` returns
    ``(y, logdet)`` with y_a = x_a (the kept half unchanged), y_b = x_b exp(s) + t with
    ``(s, t) = self.scale_shift(x * mask)``, and ``logdet`` equal to log|det| of the Jacobian that
    autograd computes; ``inverse(y)`` recovers x and returns minus the forward log-det.
    """
    masks = [torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0])]
    for k, mask in enumerate(masks):
        layer = _layer(cls, mask, seed=k)
        m = mask.double()
        x = torch.randn(4, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(10 + k))
        y, logdet = _pair(layer(x), "forward(x)")
        assert y.shape == x.shape, f"forward(x) must keep the shape {tuple(x.shape)}, got {tuple(y.shape)}"
        assert logdet.shape == (len(x),), (
            f"the log-det must hold one value per example, shape ({len(x)},), got {tuple(logdet.shape)}: "
            "sum the log-scales over the coordinates (dim=-1)"
        )
        kept = m.bool()
        assert torch.equal(y[:, kept], x[:, kept]), "the kept coordinates (mask = 1) must pass through unchanged"
        assert not torch.allclose(y[:, ~kept], x[:, ~kept]), (
            "the transformed coordinates (mask = 0) did not change: scale and shift them by s and t"
        )
        s, t = layer.scale_shift(x * m)
        expected = x * m + (1 - m) * (x * s.exp() + t)
        torch.testing.assert_close(
            y, expected, msg="y_b must be x_b * exp(s) + t, with (s, t) = self.scale_shift(x * self.mask)"
        )
        for i in range(len(x)):
            jac = jacobian(lambda v: layer(v[None])[0][0], x[i])
            want = torch.linalg.slogdet(jac)[1]
            assert torch.allclose(logdet[i], want, atol=1e-8), (
                f"example {i}: your log-det {logdet[i].item():.6f}, autograd's log|det J| {want.item():.6f}"
            )
        x_back, logdet_inv = _pair(layer.inverse(y), "inverse(y)")
        torch.testing.assert_close(x_back, x, msg="inverse(forward(x)) must give back x")
        torch.testing.assert_close(
            logdet_inv, -logdet, msg="the inverse's log-det must be minus the forward's (the Jacobians are inverses)"
        )
