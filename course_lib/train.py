"""One training loop for every model in the course.

A model tells the loop what to minimise through the interface of
:class:`course_lib.models.base.GenerativeModel`: ``loss(batch)`` for a model with one
optimiser, or ``optimizer_groups()`` + ``group_loss(group, batch)`` for a model that needs
several (a GAN's discriminator and generator, stepped in turn on every batch).

The loop adds what every lesson needs and none should repeat: mini-batches from tensors,
Adam, gradient clipping, an optional learning-rate schedule, an optional EMA of the weights,
mixed precision on CUDA, a progress bar, the loss history, and checkpoints that a later call
resumes from exactly (same numbers as an uninterrupted run, on CPU).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, Union

import torch
from torch import Tensor, nn

from .runtime import amp_dtype, autocast, get_device

Batch = Union[Tensor, tuple]
Data = Union[Tensor, Sequence[Tensor], Callable[[int, torch.Generator], Batch]]


class EMA:
    """Exponential moving average of a model's weights: ``ema = decay * ema + (1 - decay) * w``."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for p_ema, p in zip(self.model.parameters(), model.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - self.decay)
        for b_ema, b in zip(self.model.buffers(), model.buffers()):
            b_ema.copy_(b)


@dataclass
class TrainResult:
    """What a run produced: the loss history per optimiser group, time, and the EMA model if asked."""

    history: dict[str, list[float]]
    steps: int
    seconds: float
    device: torch.device
    ema_model: nn.Module | None = None
    resumed_from: int = 0
    unit: str = "nats"
    extra: dict = field(default_factory=dict)

    def final(self, group: str | None = None, last: int = 50) -> float:
        """Mean loss over the last ``last`` steps of ``group`` (the only group if None)."""
        values = self.history[group or next(iter(self.history))]
        tail = values[-last:]
        return float(sum(tail) / max(len(tail), 1))

    def initial(self, group: str | None = None, first: int = 10) -> float:
        values = self.history[group or next(iter(self.history))]
        head = values[:first]
        return float(sum(head) / max(len(head), 1))


def _as_tensors(data: Data) -> tuple[Tensor, ...] | None:
    if isinstance(data, Tensor):
        return (data,)
    if isinstance(data, (tuple, list)) and data and all(isinstance(t, Tensor) for t in data):
        n = len(data[0])
        if any(len(t) != n for t in data):
            raise ValueError(
                "the tensors passed as data have different lengths "
                f"({[len(t) for t in data]}); they must share their first dimension"
            )
        return tuple(data)
    return None


def _batch_indices(n: int, batch_size: int, step: int, seed: int) -> Tensor:
    """Indices of the batch used at ``step``: epochs of seeded permutations, so resuming is exact."""
    if batch_size >= n:
        return torch.arange(n)
    per_epoch = n // batch_size
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    return perm[pos * batch_size : (pos + 1) * batch_size]


def _move(batch: Batch, device: torch.device) -> Batch:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    return tuple(t.to(device, non_blocking=True) for t in batch)


def _lr_lambda(schedule: str, steps: int, warmup: int) -> Callable[[int], float]:
    if schedule not in ("constant", "cosine"):
        raise ValueError(f"unknown lr_schedule {schedule!r}: use 'constant' or 'cosine'")

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    groups_fn = getattr(model, "optimizer_groups", None)
    groups = groups_fn() if groups_fn is not None else {"loss": list(model.parameters())}
    groups = {name: [p for p in params if p.requires_grad] for name, params in groups.items()}
    empty = [name for name, params in groups.items() if not params]
    if empty:
        raise ValueError(f"optimizer group(s) {empty} have no trainable parameters")
    return groups


def _group_loss(model: nn.Module, group: str, batch: Batch) -> Tensor:
    fn = getattr(model, "group_loss", None)
    loss = fn(group, batch) if fn is not None else model.loss(batch)
    if not isinstance(loss, Tensor) or loss.dim() != 0:
        raise ValueError(
            f"the loss of group {group!r} must be a scalar tensor, got "
            f"{type(loss).__name__} of shape {getattr(loss, 'shape', None)}"
        )
    return loss


def _progress_default() -> bool:
    return os.environ.get("COURSE_PROGRESS", "1") not in ("0", "false", "no")


def fit(
    model: nn.Module,
    data: Data,
    *,
    steps: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    grad_clip: float | None = 1.0,
    lr_schedule: str = "constant",
    warmup: int = 0,
    ema_decay: float | None = None,
    device: str | torch.device | None = None,
    amp: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    seed: int = 0,
    progress: bool | None = None,
    log_every: int | None = None,
    callback: Callable[[int, dict[str, float]], None] | None = None,
    verbose: bool = True,
    name: str | None = None,
) -> TrainResult:
    """Train ``model`` for ``steps`` optimiser steps on ``data``; return the history.

    ``data``: a tensor (or a tuple of tensors sharing their first dimension, batched together),
    or a function ``(batch_size, generator) -> batch`` that draws a fresh batch.
    With ``checkpoint`` set, the run is saved every ``checkpoint_every`` steps and at the end,
    and a later call with the same arguments resumes from the file (``resume=True``).
    The model is left in ``eval()`` mode on ``device``.
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    dev = get_device(device)
    model.to(dev)
    tensors = _as_tensors(data)
    if tensors is None and not callable(data):
        raise TypeError(
            "data must be a tensor, a tuple of tensors, or a function (batch_size, generator) -> batch; "
            f"got {type(data).__name__}"
        )
    if tensors is not None:
        tensors = tuple(t.to(dev) for t in tensors)
    label = name or type(model).__name__
    unit = getattr(model, "loss_unit", "nats")

    groups = _groups(model)
    overrides = getattr(model, "optimizer_overrides", {}) or {}
    optimizers = {
        g: torch.optim.Adam(params, **{"lr": lr, "weight_decay": weight_decay, **overrides.get(g, {})})
        for g, params in groups.items()
    }
    schedulers = {
        g: torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(lr_schedule, steps, warmup))
        for g, opt in optimizers.items()
    }
    ema = EMA(model, ema_decay) if ema_decay is not None else None
    use_amp = amp and amp_dtype(dev) is not None
    scaler = torch.amp.GradScaler("cuda") if use_amp and amp_dtype(dev) == torch.float16 else None
    history: dict[str, list[float]] = {g: [] for g in groups}
    start = 0

    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=True)
        model.load_state_dict(state["model"])
        for g in groups:
            optimizers[g].load_state_dict(state["optimizers"][g])
            schedulers[g].load_state_dict(state["schedulers"][g])
        if ema is not None and state.get("ema") is not None:
            ema.model.load_state_dict(state["ema"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        history = {g: list(v) for g, v in state["history"].items()}
        start = int(state["step"])
        torch.set_rng_state(state["rng_cpu"])
        if dev.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], dev)
        if verbose:
            print(f"{label}: resumed from step {start:,} of {steps:,} ({ckpt_path})")

    def save(step: int) -> None:
        assert ckpt_path is not None
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "model": model.state_dict(),
            "optimizers": {g: o.state_dict() for g, o in optimizers.items()},
            "schedulers": {g: s.state_dict() for g, s in schedulers.items()},
            "ema": ema.model.state_dict() if ema is not None else None,
            "scaler": scaler.state_dict() if scaler is not None else None,
            "history": history,
            "step": step,
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None,
        }
        tmp = ckpt_path.with_name(ckpt_path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, ckpt_path)

    show_bar = _progress_default() if progress is None else progress
    bar = None
    if show_bar and start < steps:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc=label, leave=False)

    model.train()
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    try:
        for step in range(start, steps):
            if tensors is not None:
                idx = _batch_indices(len(tensors[0]), batch_size, step, seed).to(dev)
                batch: Batch = tensors[0][idx] if len(tensors) == 1 else tuple(t[idx] for t in tensors)
            else:
                gen.manual_seed(seed * 1_000_003 + step)
                batch = _move(data(batch_size, gen), dev)  # type: ignore[operator]
            losses: dict[str, float] = {}
            for g, opt in optimizers.items():
                model.zero_grad(set_to_none=True)
                with autocast(dev, use_amp):
                    loss = _group_loss(model, g, batch)
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"{label}: the loss of group {g!r} became {loss.item()} at step {step}; "
                        "lower the learning rate or tighten grad_clip"
                    )
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.unscale_(opt)
                else:
                    loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(groups[g], grad_clip)
                if scaler is not None:
                    scaler.step(opt)
                    scaler.update()
                else:
                    opt.step()
                schedulers[g].step()
                losses[g] = loss.item()
                history[g].append(losses[g])
            if ema is not None:
                ema.update(model)
            if bar is not None:
                bar.update(1)
                if step % 25 == 0:
                    bar.set_postfix({g: f"{v:.3f}" for g, v in losses.items()})
            if verbose and log_every and (step + 1) % log_every == 0:
                shown = ", ".join(f"{g} {v:.4f}" for g, v in losses.items())
                print(f"{label}: step {step + 1:,}/{steps:,}: {shown} {unit}")
            if ckpt_path is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
                save(step + 1)
            if callback is not None:
                callback(step + 1, losses)
    finally:
        if bar is not None:
            bar.close()
        model.eval()
    seconds = time.perf_counter() - t0
    if ckpt_path is not None and steps > start:
        save(steps)
    result = TrainResult(
        history=history,
        steps=steps,
        seconds=seconds,
        device=dev,
        ema_model=ema.model if ema is not None else None,
        resumed_from=start,
        unit=unit,
    )
    if verbose and steps > start:
        parts = [
            f"{g} {result.initial(g):.3f} -> {result.final(g):.3f}" for g in history if history[g]
        ]
        print(
            f"{label}: {steps - start:,} steps in {seconds:.1f} s on {dev.type}; "
            f"loss ({unit}, first 10 -> last 50 steps): {'; '.join(parts)}"
        )
    return result


@torch.no_grad()
def evaluate(
    fn: Callable[[Tensor], Tensor],
    data: Tensor,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
) -> float:
    """Mean over ``data`` of a per-example quantity ``fn(batch) -> (B,)`` (an NLL, say), in batches.

    Each batch is moved to ``device`` (default: where :func:`runtime.get_device` points).
    """
    dev = get_device(device)
    total, count = 0.0, 0
    for i in range(0, len(data), batch_size):
        values = fn(data[i : i + batch_size].to(dev))
        if values.dim() != 1:
            raise ValueError(f"evaluate expects fn to return one value per example, got shape {tuple(values.shape)}")
        total += values.detach().to("cpu", torch.float64).sum().item()  # float64 on the CPU: MPS has none
        count += len(values)
    return total / max(count, 1)
