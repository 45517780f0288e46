"""What one training step costs, counted, and a log of every ``train.fit`` call of a lesson.

The gpu profile promises that each lesson runs within 10 minutes on a free Colab GPU (a T4).
Until a T4 measurement exists, ``scripts/gpu_estimate.py`` estimates those times from what a
cpu run of the lesson records here. With ``COURSE_FIT_LOG`` set to a file, every
:func:`course_lib.train.fit` call appends one JSON line: the steps it trained and how long they
took, and two counts of one training step:

* ``ops``: the PyTorch operators (aten ops) one forward and backward pass runs. For the course's
  small models the host's work per operator (dispatch, and on a GPU the kernel launch), not the
  arithmetic, sets the pace on a GPU. The count is a proxy: views and ``detach`` launch nothing,
  and the estimate's per-operator cost, calibrated on a GPU run, absorbs the mix.
* ``flops``: the floating-point operations of that pass, by PyTorch's own flop formulas
  (``torch.utils.flop_counter``: matrix products, convolutions, attention; elementwise work is
  not counted).

``budgets`` are the ``runtime.budget`` calls whose value under the running profile equals the
fit's ``steps``: with them the estimate knows how many steps the same call trains under gpu.

Counting runs one extra forward and backward pass on one batch, after training. The weights,
buffers (BatchNorm statistics), gradients and the CPU and device random-number streams are put
back as they were, so a lesson's results are the same with the log on or off (a test checks a
logged training run against an unlogged one; the cpu bench's headline numbers did not change).
Only printed times grow, by the counting's fraction of a second per run.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

LOG_ENV = "COURSE_FIT_LOG"


@dataclass
class StepCount:
    """One forward and backward pass, counted."""

    ops: int  # aten operators run (a proxy for the host's work per step; views launch no kernel)
    flops: int  # floating-point operations of matrix products and convolutions


class _Counter(TorchDispatchMode):
    """Counts every aten operator that runs, and the FLOPs of those PyTorch's flop counter knows
    (its registry, without its module tracking, which autograd.grad inside a loss would break:
    an energy-based model's Langevin chain, a score model's divergence)."""

    _metadata = {"size", "sym_size", "stride", "sym_stride", "numel", "sym_numel", "dim", "is_contiguous",
                 "sym_is_contiguous", "storage_offset", "sym_storage_offset", "is_strides_like_format",
                 "is_non_overlapping_and_dense", "layout"}

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet.__name__ not in self._metadata:
            self.ops += 1
            count = flop_registry.get(packet)
            if count is not None:
                self.flops += int(count(*args, **kwargs, out_val=out))
        return out


def count_pass(loss_fn: Callable[[], Tensor]) -> StepCount:
    """Count the operators and FLOPs of ``loss_fn()`` and its backward pass. This changes the
    gradients: :func:`count_step` is the version that leaves a model as it was."""
    with _Counter() as counter:
        loss = loss_fn()
        loss.backward()
    return StepCount(ops=counter.ops, flops=counter.flops)


def forked_rng(model: nn.Module):
    """The CPU random stream and that of the model's device (CUDA or MPS), restored on exit."""
    kinds = {p.device.type for p in model.parameters()} - {"cpu"}
    kind = kinds.pop() if len(kinds) == 1 else "cuda"
    devices = sorted({p.device.index or 0 for p in model.parameters() if p.device.type == kind})
    return torch.random.fork_rng(devices=devices, device_type=kind)


def count_step(model: nn.Module, passes: list[Callable[[], Tensor]]) -> StepCount:
    """Count one training step of ``model``: each of ``passes`` (one loss per optimiser, e.g. a
    GAN's two players) and its backward. The model and the random streams are put back."""
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    grads = {p: (p.grad.clone() if p.grad is not None else None) for p in model.parameters()}
    modes = {m: m.training for m in model.modules()}
    total = StepCount(0, 0)
    try:
        with forked_rng(model):
            model.train()
            for loss_fn in passes:
                counted = count_pass(loss_fn)
                total.ops += counted.ops
                total.flops += counted.flops
    finally:
        model.load_state_dict(saved)
        for p, g in grads.items():
            p.grad = g
        for m, mode in modes.items():
            m.training = mode
    return total


def matching_budgets(steps: int) -> list[dict]:
    """The budgets of this process whose current value is ``steps`` (see ``runtime.budget``)."""
    from .runtime import budgets_seen

    if type(steps) is not int:
        return []
    return [b for b in budgets_seen() if type(b["value"]) is int and b["value"] == steps]


def record_fit(path: str, *, name: str, model: nn.Module, device: torch.device, steps: int, trained: int,
               seconds: float, batch_size: int, groups: int, count: StepCount | None, count_seconds: float,
               count_error: str | None = None) -> None:
    """Append one fit call to the log at ``path`` (one JSON object per line)."""
    row = {
        "name": name,
        "model": type(model).__name__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "device": device.type,
        "steps": steps,
        "trained": trained,  # steps trained in this call (fewer when it resumed from a checkpoint)
        "seconds": round(seconds, 4),
        "batch_size": batch_size,
        "groups": groups,  # optimisers stepped per step (a GAN: two)
        "count": asdict(count) if count is not None else None,
        "count_error": count_error,  # why the step could not be counted, if it could not
        "count_seconds": round(count_seconds, 4),
        "budgets": matching_budgets(steps),
        "time": time.time(),
    }
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row) + "\n")


def log_path() -> str | None:
    return os.environ.get(LOG_ENV) or None
