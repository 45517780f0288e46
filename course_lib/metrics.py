"""Measurements that do not depend on the model family: sample statistics and sampling cost."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor, nn


def mean_cov(x: Tensor) -> tuple[Tensor, Tensor]:
    """Sample mean and covariance of points (N, D), in float64 on the CPU (MPS has no float64)."""
    x = x.detach().cpu().double()
    return x.mean(0), torch.cov(x.T)


def moment_gap(samples: Tensor, data: Tensor) -> tuple[float, float]:
    """(largest |mean difference|, largest |covariance difference|) between two point sets."""
    m1, c1 = mean_cov(samples)
    m2, c2 = mean_cov(data)
    return float((m1 - m2).abs().max()), float((c1 - c2).abs().max())


@contextlib.contextmanager
def count_calls(module: nn.Module) -> Iterator[list[int]]:
    """Count forward calls of ``module`` inside the block: ``with count_calls(net) as c: ...; c[0]``."""
    counter = [0]

    def hook(*_):
        counter[0] += 1

    handle = module.register_forward_pre_hook(hook)
    try:
        yield counter
    finally:
        handle.remove()


@dataclass
class SamplingCost:
    model: str
    paradigm: str
    network_evaluations: int
    seconds_per_batch: float
    batch: int

    @property
    def ms_per_sample(self) -> float:
        return 1000 * self.seconds_per_batch / self.batch


def sampling_cost(model: nn.Module, n: int = 1000, repeats: int = 3, name: str | None = None) -> SamplingCost:
    """Measure one call of ``model.sample(n)``: sequential network evaluations and wall time (best of ``repeats``)."""
    model.eval()
    model.sample(min(n, 8))  # warm-up
    best = float("inf")
    calls = 0
    for _ in range(repeats):
        with count_calls(model.sampling_network) as counter:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model.sample(n)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - t0)
        calls = counter[0]
    return SamplingCost(name or type(model).__name__, getattr(model, "paradigm", "?"), calls, best, n)


@torch.no_grad()
def nearest_distance(a: Tensor, b: Tensor, chunk: int = 2048) -> float:
    """Mean over the points of ``a`` of the Euclidean distance to the nearest point of ``b``.

    With ``a`` = samples and ``b`` = held-out data it is small when every sample lies near real
    data (no points off the data); with the roles swapped it is small when every part of the data
    has samples near it (nothing missed). Unlike means and covariances, it sees the shape.
    """
    a, b = a.detach().cpu().double(), b.detach().cpu().double()  # float64 on the CPU (MPS has none)
    total = 0.0
    for i in range(0, len(a), chunk):
        total += torch.cdist(a[i : i + chunk], b).min(dim=1).values.sum().item()
    return total / len(a)
