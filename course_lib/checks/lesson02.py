"""Known-answer checks for lesson 2 (autoregressive models).

``check_causal_attention(impl)`` grades an implementation of causal self-attention,
``impl(q, k, v) -> out`` for tensors of shape ``(..., T, d_h)``. The unit tests run it on
``course_lib.models.autoregressive.causal_attention``; Exercise 4 runs it on the student's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def reference_attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """The formula, one position at a time: out_t = sum_{s<=t} a_ts v_s, a_t = softmax_s(q_t.k_s / sqrt d)."""
    T, d = q.shape[-2], q.shape[-1]
    out = torch.empty_like(v)
    for t in range(T):
        scores = (q[..., t : t + 1, :] * k[..., : t + 1, :]).sum(-1) / math.sqrt(d)  # (..., t+1)
        weights = torch.softmax(scores, dim=-1)
        out[..., t, :] = (weights[..., None] * v[..., : t + 1, :]).sum(-2)
    return out


def _run(impl, q, k, v) -> Tensor:
    out = impl(q, k, v)
    assert isinstance(out, Tensor), f"causal_attention must return a tensor, got {type(out).__name__}"
    assert out.shape == v.shape, (
        f"causal_attention returned shape {tuple(out.shape)} for q, k, v of shape {tuple(q.shape)}; "
        "it should return one d_h-vector per position, the shape of v"
    )
    return out


def check_causal_attention(impl) -> None:
    """Raise AssertionError unless ``impl(q, k, v)`` is causal scaled dot-product attention."""
    gen = torch.Generator().manual_seed(0)
    B, H, T, d = 2, 3, 6, 4
    q, k, v = (torch.randn(B, H, T, d, generator=gen, dtype=torch.float64) for _ in range(3))
    out = _run(impl, q, k, v)

    # 1. Position 0 sees only itself: its output is v_0, whatever the scores.
    torch.testing.assert_close(
        out[..., 0, :], v[..., 0, :],
        msg="position 0 may attend only to itself, so out[..., 0, :] must equal v[..., 0, :]: "
            "is the causal mask applied (scores of later positions set to -inf before the softmax)?",
    )
    # 2. Equal scores (q = 0): position t averages v_0 .. v_t.
    flat = _run(impl, torch.zeros_like(q), k, v)
    means = v.cumsum(-2) / torch.arange(1, T + 1, dtype=v.dtype)[:, None]
    torch.testing.assert_close(
        flat, means,
        msg="with q = 0 every allowed score is equal, so position t must average v_0 .. v_t "
            "(weights 1/(t+1)): check the mask and that the softmax runs over the keys (the last dim)",
    )
    # 3. Causality: changing the key and value at position j moves no output before j.
    for j in range(1, T):
        k2, v2 = k.clone(), v.clone()
        k2[..., j, :] += 5.0
        v2[..., j, :] -= 3.0
        moved = (_run(impl, q, k2, v2) - out)[..., :j, :].abs().max().item()
        assert moved < 1e-9, (
            f"changing position {j}'s key and value changed an output before position {j} "
            f"(by {moved:.3g}): a position must not attend to later ones"
        )
    # 4. The numbers: the formula computed position by position.
    torch.testing.assert_close(
        out, reference_attention(q, k, v),
        msg="causal, but not the formula: the scores are q_t . k_s / sqrt(d_h) (did you divide by "
            "sqrt(d_h)?), softmax over s <= t, then the weighted sum of the v_s",
    )
    # 5. Works in float32 and on any leading shape (a model calls it on (B, H, T, d_h)).
    small = _run(impl, q[0, 0].float(), k[0, 0].float(), v[0, 0].float())
    torch.testing.assert_close(small, out[0, 0].float(), rtol=1e-4, atol=1e-5,
                               msg="inputs of shape (T, d_h) in float32 should work too")
