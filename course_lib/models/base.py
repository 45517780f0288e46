"""The interface every model in the course shares.

``loss(batch)``     the training objective, a scalar in ``loss_unit`` (usually nats per example)
``sample(n)``       ``n`` new data points
``log_prob(x)``     exact log-likelihood per example where the paradigm has one; a model with
                    only a bound names it ``elbo`` (or similar) and says so; a GAN has neither
``sampling_network``  the network whose calls count as "network evaluations" when sampling

A model that needs more than one optimiser (a GAN) returns several named parameter groups
from ``optimizer_groups`` and a loss per group from ``group_loss``; the training loop
(:func:`course_lib.train.fit`) steps them in the order given, on every batch.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn


class GenerativeModel(nn.Module):
    paradigm: ClassVar[str] = "unspecified"
    loss_unit: ClassVar[str] = "nats"

    def loss(self, batch: Tensor) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def sample(self, n: int) -> Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} ({self.paradigm}) has no exact log-likelihood"
        )

    @property
    def sampling_network(self) -> nn.Module:  # pragma: no cover - interface
        raise NotImplementedError

    def optimizer_groups(self) -> dict[str, list[nn.Parameter]]:
        return {"loss": list(self.parameters())}

    def group_loss(self, group: str, batch: Tensor) -> Tensor:
        return self.loss(batch)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def check_points(x: Tensor, dim: int, who: str) -> None:
    """Raise a clear error unless ``x`` is a float batch of shape (N, dim)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(
            f"{who} expects a batch of shape (N, {dim}), got {tuple(x.shape)}; "
            f"reshape with x.view(-1, {dim})"
        )
    if not x.is_floating_point():
        raise TypeError(f"{who} expects floating-point data, got {x.dtype}; use x.float()")


def check_n(n: int, who: str) -> None:
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"{who}.sample(n) needs a positive int n, got {n!r}")


def mlp(sizes: list[int], act: type[nn.Module] = nn.SiLU) -> nn.Sequential:
    """A plain MLP: Linear layers of the given sizes with ``act`` between them (none at the end)."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)
