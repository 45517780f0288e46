"""One training loop for every model in the course.

A model tells the loop what to minimise through the interface of
:class:`course_lib.models.base.GenerativeModel`: ``loss(batch)`` for a model with one
optimiser, or ``optimizer_groups()`` + ``group_loss(group, batch)`` for a model that needs
several (a GAN's discriminator and generator, stepped in turn on every batch).

The loop adds what every lesson needs and none should repeat: mini-batches from tensors,
Adam, gradient clipping, an optional learning-rate schedule, an optional EMA of the weights,
mixed precision on CUDA (bf16, or fp16 with a gradient scaler), ``channels_last`` for conv
nets on CUDA, optional ``torch.compile``, a progress bar, the loss history, checkpoints that a
later call resumes from exactly (same numbers as an uninterrupted run, on CPU), and data
parallelism: started under ``torchrun``, the same call trains one model on several processes
with DistributedDataParallel (NCCL on GPUs, Gloo on CPUs), each taking its share of the batch.

:func:`fit` reads as the algorithm (batch, loss, backward, clip, step, EMA); the set-up,
checkpointing and bookkeeping live in the named helpers below it.
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

from . import stepcost
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

        self._pairs: tuple[nn.Module, list[Tensor], list[Tensor]] | None = None

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """One step of the average, and the buffers (BatchNorm statistics, say) copied over."""
        self.update_weights(model)
        self.copy_buffers(model)

    @torch.no_grad()
    def update_weights(self, model: nn.Module) -> None:
        """The parameters' average alone: ``fit`` calls this every step and copies the buffers only
        when the average is used (a checkpoint, the end), which saves a copy per buffer per step."""
        if self._pairs is None or self._pairs[0] is not model:  # the two lists, made once per model
            self._pairs = (model, list(self.model.parameters()), [p.detach() for p in model.parameters()])
        _, ema_params, params = self._pairs
        if ema_params:
            torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)

    @torch.no_grad()
    def copy_buffers(self, model: nn.Module) -> None:
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
    channels_last: bool | None = None,
    compile: bool = False,
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
    On CUDA: mixed precision (``amp``), ``channels_last`` (default: on for models with 2D
    convolutions), ``compile=True`` for ``torch.compile``; losses are read back to the CPU only
    every few steps, so the GPU never waits for Python. Under ``torchrun`` each process takes
    ``batch_size / world_size`` examples of the same global batch and the gradients are averaged
    (DistributedDataParallel), so the run equals one process on the whole batch for a loss that
    draws no randomness of its own. The model is left in ``eval()`` mode on ``device``.
    """
    run = _Setup(model, data, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                 lr_schedule=lr_schedule, warmup=warmup, ema_decay=ema_decay, device=device, amp=amp,
                 channels_last=channels_last, compile=compile, seed=seed, name=name, callback=callback)
    ckpt = _Checkpoint(checkpoint, run) if checkpoint is not None else None
    start, history = ckpt.resume(verbose) if ckpt is not None and resume else (0, None)
    log = _Log(run, start, history, progress, log_every, verbose)

    model.train()
    t0 = time.perf_counter()
    try:
        for step in range(start, steps):
            batch = run.batch(step)
            for g, opt in run.optimizers.items():
                model.zero_grad(set_to_none=True)  # all of them: a GAN's generator step fills D's too
                with autocast(run.device, run.use_amp):
                    loss = run.loss(g, batch)
                run.backward(loss, opt)
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(run.groups[g], grad_clip)
                run.optimiser_step(opt)
                run.schedulers[g].step()
                log.add(g, loss)
            if run.ema is not None:
                run.ema.update_weights(model)
            log.step_done(step + 1)  # reads the losses back every few steps, checks they are finite
            if ckpt is not None and checkpoint_every and (step + 1) % checkpoint_every == 0:
                ckpt.save(step + 1, log.flush())
            if callback is not None:
                callback(step + 1, log.last)
    finally:
        log.close()
        model.eval()
        if run.ema is not None:
            run.ema.copy_buffers(model)
    seconds = time.perf_counter() - t0
    if ckpt is not None and steps > start:
        ckpt.save(steps, log.flush())
    result = TrainResult(history=log.history, steps=steps, seconds=seconds, device=run.device,
                         ema_model=run.ema.model if run.ema is not None else None, resumed_from=start,
                         unit=run.unit)
    log.summary(result, steps - start)
    if stepcost.log_path() is not None and run.rank == 0:  # make bench sets it (scripts/gpu_estimate.py)
        _log_fit_cost(run, model, steps, start, seconds)
    return result


def _log_fit_cost(run: "_Setup", model: nn.Module, steps: int, start: int, seconds: float) -> None:
    """Append this call to the ``COURSE_FIT_LOG`` file, with one step counted (stepcost.py).

    The count runs the model's own loss (not the compiled or data-parallel wrapper) on the first
    batch, with the random streams forked (a batch function may draw from them too): the
    lesson's later numbers do not change."""
    t0 = time.perf_counter()
    count, error = None, None
    if steps > 0 and run.world_size == 1:
        try:
            with stepcost.forked_rng(model):
                batch = run.batch(0)
                passes = [lambda g=g: _autocast_loss(run, model, g, batch) for g in run.optimizers]
                count = stepcost.count_step(model, passes)  # puts the model back, even when it fails
        except Exception as err:  # a measurement aid must not stop the lesson: the log says what failed
            error = f"{type(err).__name__}: {err}"[:300]
    try:
        stepcost.record_fit(stepcost.log_path(), name=run.label, model=model, device=run.device, steps=steps,
                            trained=steps - start, seconds=seconds, batch_size=run.batch_size,
                            groups=len(run.optimizers), count=count, count_error=error,
                            count_seconds=time.perf_counter() - t0)
    except (OSError, TypeError, ValueError) as err:  # the log is a measurement aid: say so, go on
        print(f"fit log not written ({type(err).__name__}: {err})")


def _autocast_loss(run: "_Setup", model: nn.Module, group: str, batch: Batch) -> Tensor:
    with autocast(run.device, run.use_amp):
        return _group_loss(model, group, batch)


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


# ----------------------------------------------------------------------------------------------
# Data parallelism under torchrun


def world() -> tuple[int, int, int]:
    """``(rank, world_size, local_rank)`` of this process: ``(0, 1, 0)`` unless started by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0"))


def _init_distributed(dev: torch.device) -> torch.device:
    """Join torchrun's process group (once) and return this process's device."""
    import torch.distributed as dist

    rank, size, local = world()
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise RuntimeError(
                f"torchrun started {size} processes but this machine has {torch.cuda.device_count()} GPU(s); "
                "pass --nproc_per_node at most the number of GPUs"
            )
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise RuntimeError(f"data parallelism runs on CUDA (NCCL) or on CPUs (Gloo), not on {dev.type}")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return dev


class _LossModule(nn.Module):
    """Wraps a model so that DistributedDataParallel sees its loss as ``forward``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, group: str, batch: Batch) -> Tensor:
        return _group_loss(self.model, group, batch)


# ----------------------------------------------------------------------------------------------
# Set-up: device, optimisers, batches, precision


class _Setup:
    """Everything :func:`fit` needs before its first step, and the per-step mechanics it calls."""

    def __init__(self, model: nn.Module, data: Data, *, steps: int, batch_size: int, lr: float,
                 weight_decay: float, lr_schedule: str, warmup: int, ema_decay: float | None,
                 device, amp: bool, channels_last: bool | None, compile: bool, seed: int,
                 name: str | None, callback) -> None:
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model, self.steps = model, steps
        self.rank, self.world_size, _ = world()
        dev = get_device(device)
        if self.world_size > 1:
            dev = _init_distributed(dev)
            if batch_size % self.world_size:
                raise ValueError(
                    f"batch_size {batch_size} does not split evenly over {self.world_size} processes; "
                    f"use a multiple of {self.world_size}"
                )
        self.device = dev
        self.label = name or type(model).__name__
        self.unit = getattr(model, "loss_unit", "nats")
        self.channels_last = (dev.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())
                              if channels_last is None else channels_last)
        model.to(dev)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)

        self.tensors = _as_tensors(data)
        if self.tensors is None and not callable(data):
            raise TypeError(
                "data must be a tensor, a tuple of tensors, or a function (batch_size, generator) -> batch; "
                f"got {type(data).__name__}"
            )
        if self.tensors is not None:  # data that fits is kept on the device: no copy per step
            self.tensors = tuple(self._layout(t.to(dev)) for t in self.tensors)
        self.data, self.batch_size, self.seed = data, batch_size, seed
        self._perm: tuple[int, Tensor] | None = None
        self._gen = torch.Generator().manual_seed(seed)

        self.groups = _groups(model)
        overrides = getattr(model, "optimizer_overrides", {}) or {}
        self.optimizers = {
            g: torch.optim.Adam(params, **{"lr": lr, "weight_decay": weight_decay, **overrides.get(g, {})})
            for g, params in self.groups.items()
        }
        self.schedulers = {
            g: torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(lr_schedule, steps, warmup))
            for g, opt in self.optimizers.items()
        }
        self.ema = EMA(model, ema_decay) if ema_decay is not None else None
        self.use_amp = amp and amp_dtype(dev) is not None
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp and amp_dtype(dev) == torch.float16 else None

        wrapped: nn.Module = _LossModule(model)
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(wrapped, device_ids=[dev.index] if dev.type == "cuda" else None,
                                              find_unused_parameters=True)  # a GAN's D step leaves G unused
        self._loss_fn = torch.compile(wrapped) if compile else wrapped
        self.sync_each_step = dev.type != "cuda" or callback is not None  # a callback sees every loss

    def _layout(self, t: Tensor) -> Tensor:
        return t.contiguous(memory_format=torch.channels_last) if self.channels_last and t.dim() == 4 else t

    def batch(self, step: int) -> Batch:
        """The batch of ``step`` (this process's share of it under torchrun)."""
        if self.tensors is not None:
            idx = self._indices(step)
            batch: Batch = self.tensors[0][idx] if len(self.tensors) == 1 else tuple(t[idx] for t in self.tensors)
        else:
            self._gen.manual_seed(self.seed * 1_000_003 + step)
            batch = _move(self.data(self.batch_size, self._gen), self.device)  # type: ignore[operator]
            batch = self._layout(batch) if isinstance(batch, Tensor) else tuple(self._layout(t) for t in batch)
        if self.world_size > 1:
            batch = _shard(batch, self.rank, self.world_size)
        return batch

    def _indices(self, step: int) -> Tensor:
        n = len(self.tensors[0])  # type: ignore[index]
        if self.batch_size >= n:
            return torch.arange(n, device=self.device)
        per_epoch = n // self.batch_size
        epoch, pos = divmod(step, per_epoch)
        if self._perm is None or self._perm[0] != epoch:  # one permutation per epoch, kept on the device
            self._perm = (epoch, _epoch_permutation(n, self.seed, epoch).to(self.device))
        return self._perm[1][pos * self.batch_size : (pos + 1) * self.batch_size]

    def loss(self, group: str, batch: Batch) -> Tensor:
        loss = self._loss_fn(group, batch)
        if not isinstance(loss, Tensor) or loss.dim() != 0:
            raise ValueError(
                f"the loss of group {group!r} must be a scalar tensor, got "
                f"{type(loss).__name__} of shape {getattr(loss, 'shape', None)}"
            )
        return loss

    def backward(self, loss: Tensor, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)  # so that clipping sees the true gradients
        else:
            loss.backward()

    def optimiser_step(self, opt: torch.optim.Optimizer) -> None:
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()


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


def _epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def _batch_indices(n: int, batch_size: int, step: int, seed: int) -> Tensor:
    """Indices of the batch used at ``step``: epochs of seeded permutations, so resuming is exact."""
    if batch_size >= n:
        return torch.arange(n)
    epoch, pos = divmod(step, n // batch_size)
    return _epoch_permutation(n, seed, epoch)[pos * batch_size : (pos + 1) * batch_size]


def _shard(batch: Batch, rank: int, size: int) -> Batch:
    if isinstance(batch, Tensor):
        return batch.chunk(size)[rank]
    return tuple(t.chunk(size)[rank] for t in batch)


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
    return fn(group, batch) if fn is not None else model.loss(batch)


# ----------------------------------------------------------------------------------------------
# Bookkeeping: loss history, progress bar, log lines, checkpoints


def _progress_default() -> bool:
    return os.environ.get("COURSE_PROGRESS", "1") not in ("0", "false", "no")


class _Log:
    """The loss history, read back from the device every ``sync_every`` steps and checked finite."""

    def __init__(self, run: _Setup, start: int, history: dict[str, list[float]] | None,
                 progress: bool | None, log_every: int | None, verbose: bool) -> None:
        self.run, self.log_every = run, log_every
        # On the CPU reading a loss back costs nothing; on a GPU it makes the CPU wait for the GPU.
        self.sync_every = 1 if run.sync_each_step else 25
        self.verbose = verbose and run.rank == 0
        self.history: dict[str, list[float]] = history or {g: [] for g in run.groups}
        self.pending: dict[str, list[Tensor]] = {g: [] for g in run.groups}
        self.last: dict[str, float] = {}
        self.step = start
        show = (_progress_default() if progress is None else progress) and run.rank == 0
        self.bar = None
        if show and start < run.steps:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=run.steps, initial=start, desc=run.label, leave=False)

    def add(self, group: str, loss: Tensor) -> None:
        self.pending[group].append(loss.detach())

    def step_done(self, step: int) -> None:
        self.step = step
        if step % self.sync_every == 0 or step == self.run.steps:
            self.flush()
        if self.bar is not None:
            self.bar.update(1)
            if step % 25 == 1 and self.last:
                self.bar.set_postfix({g: f"{v:.3f}" for g, v in self.last.items()})
        if self.verbose and self.log_every and step % self.log_every == 0:
            self.flush()
            shown = ", ".join(f"{g} {v:.4f}" for g, v in self.last.items())
            print(f"{self.run.label}: step {step:,}/{self.run.steps:,}: {shown} {self.run.unit}")

    def flush(self) -> dict[str, list[float]]:
        """Move the pending losses into the history (one device-to-CPU copy per group)."""
        for g, losses in self.pending.items():
            if not losses:
                continue
            values = torch.stack(losses).float()
            if self.run.world_size > 1:  # the history holds the loss of the whole batch
                import torch.distributed as dist

                dist.all_reduce(values)
                values /= self.run.world_size
            values = values.cpu().tolist()
            first = self.step - len(values)
            for i, v in enumerate(values):
                if not math.isfinite(v):
                    raise FloatingPointError(
                        f"{self.run.label}: the loss of group {g!r} became {v} at step {first + i}; "
                        "lower the learning rate or tighten grad_clip"
                    )
            self.history[g].extend(values)
            self.last[g] = values[-1]
            losses.clear()
        return self.history

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def summary(self, result: TrainResult, trained: int) -> None:
        if self.verbose and trained > 0:
            parts = [f"{g} {result.initial(g):.3f} -> {result.final(g):.3f}" for g in result.history if result.history[g]]
            print(
                f"{self.run.label}: {trained:,} steps in {result.seconds:.1f} s on {result.device.type}; "
                f"loss ({self.run.unit}, first 10 -> last 50 steps): {'; '.join(parts)}"
            )


class _Checkpoint:
    """Save and resume a run: model, optimisers, schedules, EMA, scaler, history, step and RNG."""

    def __init__(self, path: str | os.PathLike, run: _Setup) -> None:
        self.path, self.run = Path(path), run

    def resume(self, verbose: bool) -> tuple[int, dict[str, list[float]] | None]:
        run = self.run
        if not self.path.exists():
            return 0, None
        state = torch.load(self.path, map_location=run.device, weights_only=True)
        run.model.load_state_dict(state["model"])
        for g in run.groups:
            run.optimizers[g].load_state_dict(state["optimizers"][g])
            run.schedulers[g].load_state_dict(state["schedulers"][g])
        if run.ema is not None and state.get("ema") is not None:
            run.ema.model.load_state_dict(state["ema"])
        if run.scaler is not None and state.get("scaler"):
            run.scaler.load_state_dict(state["scaler"])
        start = int(state["step"])
        torch.set_rng_state(state["rng_cpu"])
        if run.device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], run.device)
        if verbose and run.rank == 0:
            print(f"{run.label}: resumed from step {start:,} of {run.steps:,} ({self.path})")
        return start, {g: list(v) for g, v in state["history"].items()}

    def save(self, step: int, history: dict[str, list[float]]) -> None:
        run = self.run
        if run.rank == 0:  # one writer; the others wait below until the file is complete
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if run.ema is not None:
                run.ema.copy_buffers(run.model)
            state = {
                "model": run.model.state_dict(),
                "optimizers": {g: o.state_dict() for g, o in run.optimizers.items()},
                "schedulers": {g: s.state_dict() for g, s in run.schedulers.items()},
                "ema": run.ema.model.state_dict() if run.ema is not None else None,
                "scaler": run.scaler.state_dict() if run.scaler is not None else None,
                "history": history,
                "step": step,
                "rng_cpu": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(run.device) if run.device.type == "cuda" else None,
            }
            tmp = self.path.with_name(self.path.name + ".tmp")
            torch.save(state, tmp)
            os.replace(tmp, self.path)
        if run.world_size > 1:
            import torch.distributed as dist

            dist.barrier()
