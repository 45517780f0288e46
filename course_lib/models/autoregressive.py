"""Autoregressive models: the chain rule of probability as the architecture.

``DiscretizedAR`` is the smallest honest autoregressive model of continuous points: each
coordinate is cut into ``bins`` equal intervals on ``[low, high]``, and

    p(x_1, ..., x_D) = p(x_1) p(x_2 | x_1) ... p(x_D | x_1, ..., x_{D-1}),

each factor a categorical distribution over bins, given by one shared MLP that sees the
bins chosen so far (one-hot, zeros for those not yet chosen) and which coordinate it is
predicting. Training scores all D conditionals in one batched pass (teacher forcing);
sampling needs D passes, one after another. Inside a bin the density is uniform, so the
model also has an exact continuous density: p(bin) / width^D.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GenerativeModel, check_n, check_points, mlp


class DiscretizedAR(GenerativeModel):
    paradigm = "autoregressive"
    loss_unit = "nats"

    def __init__(self, dim: int = 2, bins: int = 100, low: float = -3.5, high: float = 3.5, hidden: int = 128):
        super().__init__()
        if high <= low:
            raise ValueError(f"need low < high, got low={low}, high={high}")
        self.dim, self.bins, self.low, self.high = dim, bins, low, high
        self.width = (high - low) / bins
        self.net = mlp([dim * bins + dim, hidden, hidden, bins])
        # masks[d] keeps the one-hot blocks of coordinates 0..d-1: what position d may see
        mask = torch.zeros(dim, dim * bins)
        for d in range(dim):
            mask[d, : d * bins] = 1.0
        self.register_buffer("mask", mask)
        self.register_buffer("position", torch.eye(dim))

    def to_bins(self, x: Tensor) -> Tensor:
        """Bin index of every coordinate; points outside [low, high] are clipped to the edge bins."""
        return ((x - self.low) / self.width).floor().long().clamp(0, self.bins - 1)

    def logits(self, b: Tensor) -> Tensor:
        """Logits of every conditional p(x_d | x_<d), shape (N, D, bins), in one pass."""
        onehot = F.one_hot(b, self.bins).float().flatten(1)  # (N, D*bins)
        visible = onehot[:, None, :] * self.mask  # (N, D, D*bins): position d sees only x_<d
        pos = self.position.expand(len(b), -1, -1)
        return self.net(torch.cat([visible, pos], dim=-1))

    def log_prob_bins(self, x: Tensor) -> Tensor:
        """Exact log-probability of each point's bins (a discrete distribution), shape (N,)."""
        check_points(x, self.dim, type(self).__name__)
        b = self.to_bins(x)
        logp = F.log_softmax(self.logits(b), dim=-1)
        return logp.gather(-1, b[..., None]).squeeze(-1).sum(-1)

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact continuous log-density: log p(bins) - D log(width) (uniform inside a bin)."""
        return self.log_prob_bins(x) - self.dim * math.log(self.width)

    def loss(self, x: Tensor) -> Tensor:
        """Negative log-likelihood of the bins, nats per point (teacher forcing: one pass)."""
        return -self.log_prob_bins(x).mean()

    @property
    def sampling_network(self) -> nn.Module:
        return self.net

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """Draw coordinates one at a time: D network passes, each conditioned on the ones before."""
        check_n(n, type(self).__name__)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        b = torch.zeros(n, self.dim, dtype=torch.long, device=self.mask.device)
        for d in range(self.dim):
            onehot = F.one_hot(b, self.bins).float().flatten(1) * self.mask[d]
            pos = self.position[d].expand(n, -1)
            logits = self.net(torch.cat([onehot, pos], dim=-1)) / temperature
            b[:, d] = torch.multinomial(F.softmax(logits, dim=-1), 1).squeeze(-1)
        jitter = torch.rand(n, self.dim, device=b.device)
        return self.low + (b.float() + jitter) * self.width
