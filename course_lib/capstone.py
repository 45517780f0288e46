"""Lesson 15's race: the course's models trained on the same digits under one CPU budget, measured side by side.

The race has three instruments and one procedure.

* :func:`clock_for` - what "a second" means here: the process's CPU time on a CPU (so that other
  programs sharing the machine do not change a model's budget), synchronised wall time on a GPU.
* :func:`seconds_per_step` - time a few optimiser steps of :func:`course_lib.train.fit` on a
  throw-away copy of a model; :func:`planned_steps` turns a budget of B seconds into
  ``B / (seconds per step)`` steps. The plan is a small JSON file in the cache
  (:func:`load_plan`, :func:`save_plan`), so a rerun reuses it, and with it the checkpoints.
* :func:`measure_sampling` - draw samples while counting the calls of the sampling network with a
  forward hook (network evaluations, NFE) and timing the whole call (seconds per sample).
* :func:`train_under_budget` - calibrate (or read the plan), train with ``train.fit`` and a
  checkpoint keyed by every setting and the step count, time the training, and keep a few
  sample grids drawn part-way (:class:`Snapshots`), for a picture of the race as it ran.

:class:`RaceRow` holds one model's numbers and :func:`race_table` prints them.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import torch
from torch import Tensor, nn

from . import data as data_mod
from . import train
from . import likelihood
from .metrics import count_calls

Clock = Callable[[], float]


# ----------------------------------------------------------------------------- clocks


def clock_for(device: torch.device | str) -> tuple[Clock, str]:
    """A clock for timing work on ``device``, and its name.

    On a CPU: the process's CPU time (``time.process_time``), which other programs on the machine
    do not inflate; with one PyTorch thread it equals the wall time of a quiet machine. On CUDA or
    MPS: wall time, after waiting for the device to finish its queued work.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return time.process_time, "CPU time of this process"
    if device.type == "cuda":
        def cuda_clock() -> float:
            torch.cuda.synchronize(device)
            return time.perf_counter()
        return cuda_clock, f"wall time on {device.type} (synchronised)"
    if device.type == "mps":
        def mps_clock() -> float:
            torch.mps.synchronize()
            return time.perf_counter()
        return mps_clock, "wall time on mps (synchronised)"
    raise ValueError(f"no clock for device {device.type!r}: use cpu, cuda or mps")


# ----------------------------------------------------------------------------- sampling cost


# The forward-hook counter of lesson 1 (course_lib.metrics), under the name this lesson uses.
count_network_calls = count_calls


class SamplingCost(NamedTuple):
    """What one call of a sampler cost: the samples, the network evaluations, the seconds per sample."""

    samples: Tensor
    evaluations: int  # calls of the sampling network in one call of the sampler (each on the whole batch)
    seconds_per_sample: float


def measure_sampling(sample: Callable[[int], Tensor], network: nn.Module, n: int,
                     clock: Clock = time.perf_counter) -> SamplingCost:
    """Draw ``n`` samples with ``sample(n)``, counting the calls of ``network`` and timing the call.

    Every call of ``network`` processes the whole batch, so the count is the number of
    network evaluations each sample needs, whatever ``n`` is; the time is divided by ``n``.
    """
    with count_network_calls(network) as calls:
        start = clock()
        samples = sample(n)
        seconds = clock() - start
    return SamplingCost(samples, calls[0], seconds / n)


# ----------------------------------------------------------------------------- the budget


def seconds_per_step(build: Callable[[], nn.Module], data, fit: dict, probe: int = 12, skip: int = 3,
                     clock: Clock = time.process_time, min_seconds: float = 0.0,
                     device: torch.device | str | None = None) -> float:
    """Seconds one optimiser step of ``train.fit(build(), data, **fit)`` takes, on average.

    A fresh model from ``build()`` is trained for ``probe`` steps without a checkpoint (a throw-away
    copy). The steps are timed from one call of fit's callback to a later one, so the time holds the
    batch, the loss, the backward pass, every optimiser group's step and the EMA, and not fit's
    set-up; the first ``skip`` steps are left out (the first calls allocate memory). A clock may
    tick in coarse steps (CPU time often advances in ticks of a few milliseconds), so the time of
    many steps divided by their number is the estimate, not any single step's. With
    ``min_seconds`` > 0, a second, longer probe follows, with enough steps to last about that long.
    """
    if probe < skip + 2:
        raise ValueError(f"probe ({probe}) must exceed skip ({skip}) by at least 2 to time a step")
    settings = {k: v for k, v in fit.items() if k not in ("steps", "checkpoint", "callback", "progress", "verbose")}

    def timed(steps: int) -> float:
        stamps: list[float] = []
        train.fit(build(), data, steps=steps, device=device, progress=False, verbose=False,
                  callback=lambda step, losses: stamps.append(clock()), **{"name": "step-time probe", **settings})
        return (stamps[-1] - stamps[skip]) / (len(stamps) - 1 - skip)

    step = timed(probe)
    if min_seconds > 0 and (probe - skip - 1) * step < min_seconds:
        step = timed(skip + 2 + math.ceil(min_seconds / step))
    return step


def planned_steps(budget_seconds: float, step_seconds: float, minimum: int = 2) -> int:
    """How many steps fit in the budget: ``floor(budget / seconds per step)``, at least ``minimum``."""
    if not budget_seconds > 0 or not step_seconds > 0:
        raise ValueError(f"budget and step time must be positive, got {budget_seconds} and {step_seconds}")
    return max(minimum, int(budget_seconds // step_seconds))


def load_plan(path: str | os.PathLike) -> dict:
    """The race plan saved at ``path`` (an empty plan if there is none yet)."""
    path = Path(path)
    if not path.exists():
        return {"entries": {}}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RuntimeError(f"the race plan {path} is damaged ({err}); delete it to calibrate again") from err


def save_plan(path: str | os.PathLike, plan: dict) -> None:
    """Write the plan as JSON, creating its folder (a fresh Colab runtime has none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(plan, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def settings_key(settings: dict) -> str:
    """One string naming a model's settings, for the plan and the checkpoint's name."""
    def word(v) -> str:
        return "-".join(map(str, v)) if isinstance(v, (tuple, list)) else str(v)

    return "_".join(f"{k}{word(v)}" for k, v in settings.items())


# ----------------------------------------------------------------------------- snapshots


class Snapshots:
    """A callback for ``train.fit`` that draws ``n`` samples at given fractions of a run's steps.

    The samples come from an EMA of the weights when the run keeps one (an exact copy of fit's,
    which is built the same way and updated after every step), else from the weights themselves
    in eval mode; always with the same seed, so that the grids of one model differ only by its
    training. The time the callback itself takes is added up in ``spent``, so that it can be
    taken off the measured training time.
    """

    def __init__(self, model: nn.Module, steps: int, fractions: tuple[float, ...], n: int,
                 draw: Callable[[nn.Module, int], Tensor], ema_decay: float | None, clock: Clock, seed: int = 0):
        self.model, self.n, self.draw, self.clock, self.seed = model, n, draw, clock, seed
        self.at = {max(1, round(f * steps)): f for f in fractions if 0 < f < 1}
        self.ema = train.EMA(model, ema_decay) if ema_decay is not None else None
        self.samples: dict[float, Tensor] = {}
        self.elapsed: dict[float, float] = {}
        self.spent = 0.0
        self.start = clock()

    def __call__(self, step: int, losses: dict[str, float]) -> None:
        t0 = self.clock()
        if self.ema is not None:
            self.ema.update(self.model)
        if step in self.at:
            fraction = self.at[step]
            self.elapsed[fraction] = t0 - self.start - self.spent  # training seconds so far
            self.samples[fraction] = self.take()
        self.spent += self.clock() - t0

    def take(self, model: nn.Module | None = None) -> Tensor:
        """``n`` samples with the fixed seed, from ``model`` (default: the EMA copy, else the model in eval mode)."""
        source = model if model is not None else (self.ema.model if self.ema is not None else self.model)
        was_training = source.training
        source.eval()
        devices = [_device_of(source)] if _device_of(source).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            images = self.draw(source, self.n).cpu()
        source.train(was_training)
        return images


def _device_of(model: nn.Module) -> torch.device:
    """The device of a model's first parameter."""
    return next(model.parameters()).device


# ----------------------------------------------------------------------------- one entrant


@dataclass
class Entrant:
    """One model in the race: how to build it, what it trains on, and how to draw integer images from it."""

    name: str
    paradigm: str
    build: Callable[[], nn.Module]
    data: object
    settings: dict
    fit: dict
    draw: Callable[[nn.Module, int], Tensor]


@dataclass
class RaceRun:
    """An entrant after training: the model to use (its EMA copy where it keeps one) and the race's records."""

    entrant: Entrant
    model: nn.Module
    steps: int
    step_seconds: float
    planned_seconds: float
    trained_seconds: float | None  # None: reloaded from a checkpoint whose training time was never recorded
    snapshots: dict[float, Tensor]
    elapsed: dict[float, float]
    checkpoint: Path
    reloaded: bool  # True: the checkpoint was there, nothing was trained in this call
    reference: bool = False  # True: the steps come from the reference machine's plan, not from this machine

    def __str__(self) -> str:
        name = self.entrant.name
        where = " on the reference machine" if self.reference else ""
        plan = f"{self.steps:,} steps planned ({1000 * self.step_seconds:.1f} ms each{where}: {self.planned_seconds:.1f} s)"
        if self.trained_seconds is None:
            return f"{name}: {plan}; reloaded, training time not recorded"
        how = "reloaded; it trained" if self.reloaded else "trained"
        return f"{name}: {plan}; {how} in {self.trained_seconds:.1f} s"


def train_under_budget(entrant: Entrant, budget: float, plan_path: Path, profile: str, device: torch.device,
                       fractions: tuple[float, ...] = (0.125, 0.25, 0.5), snapshot_n: int = 64,
                       probe: int = 12, probe_seconds: float = 0.0,
                       reference: tuple[int, float] | None = None) -> RaceRun:
    """Train ``entrant`` for ``budget`` seconds of its clock, or reload the run a previous call saved.

    1. Steps: from the plan at ``plan_path`` if it holds this entrant with the same settings,
       else ``planned_steps(budget, seconds_per_step(...))`` on a throw-away copy, saved to the plan.
       ``reference=(steps, seconds_per_step)`` skips the calibration and uses a plan measured once
       on a reference machine, so that every run trains the same steps (and can be reproduced).
    2. Training: ``train.fit`` with a checkpoint named by the settings, the fit and the steps
       (a rerun reloads it), timed by the clock, less the time of the snapshot callback.
    3. Records: the measured seconds go into the plan, the snapshots beside the checkpoint.
    """
    clock, _ = clock_for(device)
    key = settings_key({**entrant.settings, **entrant.fit, "budget": budget})
    plan = load_plan(plan_path)
    entry = plan["entries"].get(entrant.name)
    if reference is not None:
        ref_steps, ref_step_s = reference
        if not (isinstance(ref_steps, int) and ref_steps >= 1 and ref_step_s > 0):
            raise ValueError(f"reference must be (steps >= 1, seconds per step > 0), got {reference!r}")
        if entry is None or entry.get("key") != key or entry.get("steps") != ref_steps:
            entry = {"key": key, "seconds_per_step": float(ref_step_s), "steps": ref_steps, "reference": True}
            plan["entries"][entrant.name] = entry
            save_plan(plan_path, plan)
    elif entry is None or entry.get("key") != key or entry.get("reference"):
        torch.manual_seed(1)
        step_s = seconds_per_step(entrant.build, entrant.data, entrant.fit, probe=probe, clock=clock,
                                  min_seconds=probe_seconds, device=device)
        entry = {"key": key, "seconds_per_step": step_s, "steps": planned_steps(budget, step_s)}
        plan["entries"][entrant.name] = entry
        save_plan(plan_path, plan)
    steps = int(entry["steps"])

    fit_key = {("fit_" + k if k in entrant.settings else k): v for k, v in entrant.fit.items()}
    checkpoint = data_mod.checkpoint_path("15", entrant.name.lower().replace(" ", "-"), profile,
                                          **entrant.settings, **fit_key, steps=steps)
    snapshot_path = checkpoint.with_name(checkpoint.stem + ".snapshots.pt")
    torch.manual_seed(0)
    model = entrant.build().to(device)
    done_before = checkpoint.exists()
    snaps = Snapshots(model, steps, fractions, snapshot_n, entrant.draw, entrant.fit.get("ema_decay"), clock)
    start = clock()
    run = train.fit(model, entrant.data, steps=steps, device=device, checkpoint=checkpoint, progress=False,
                    verbose=False, callback=None if done_before else snaps, name=entrant.name, **entrant.fit)
    seconds = clock() - start - snaps.spent
    final = run.ema_model if run.ema_model is not None else model
    final.eval()

    if not done_before:
        snaps.samples[1.0] = snaps.take(final)
        snaps.elapsed[1.0] = seconds
        entry["trained_seconds"] = seconds
        plan = load_plan(plan_path)
        plan["entries"][entrant.name] = entry
        save_plan(plan_path, plan)
        torch.save({"samples": snaps.samples, "elapsed": snaps.elapsed}, snapshot_path)
        samples, elapsed = snaps.samples, snaps.elapsed
    elif snapshot_path.exists():
        saved = torch.load(snapshot_path, weights_only=True)
        samples, elapsed = saved["samples"], saved["elapsed"]
    else:
        samples, elapsed = {1.0: snaps.take(final)}, {}
    return RaceRun(entrant=entrant, model=final, steps=steps, step_seconds=float(entry["seconds_per_step"]),
                   planned_seconds=steps * float(entry["seconds_per_step"]),
                   trained_seconds=entry.get("trained_seconds"), snapshots=samples, elapsed=elapsed,
                   checkpoint=checkpoint, reloaded=done_before, reference=bool(entry.get("reference")))


# ----------------------------------------------------------------------------- the table


bits_per_dim = likelihood.bits_per_dim  # nats / (D ln 2), lesson 3's conversion


@dataclass
class RaceRow:
    """One model's numbers in the race."""

    name: str
    paradigm: str
    parameters: int
    steps: int
    planned_seconds: float
    trained_seconds: float | None
    nats: float | None  # test NLL or a bound on it, nats per image; None where the paradigm has none
    kind: str  # "exact", "upper bound" or "none"
    evaluations: int
    seconds_per_sample: float
    frechet: float
    frechet_spread: float
    precision: float
    recall: float
    coverage: float
    confident: float
    balance: float

    @property
    def bits_per_dim(self) -> float | None:
        return None if self.nats is None else bits_per_dim(self.nats, 64)


def race_table(rows: list[RaceRow]) -> str:
    """The race as text: cost columns, the likelihood with its kind, and the sample metrics."""
    head = (f"{'model':<10}{'paradigm':<16}{'params':>8}{'steps':>7}{'train s':>9}{'NLL nats':>10}{'bits/dim':>9}"
            f"  {'kind':<12}{'NFE':>5}{'ms/sample':>11}{'Fréchet':>15}{'prec.':>7}{'recall':>7}{'cover.':>7}"
            f"{'confid.':>8}{'balance':>8}")
    lines = [head]
    for r in rows:
        trained = f"{r.trained_seconds:.1f}" if r.trained_seconds is not None else "--"
        nats = f"{r.nats:.2f}" if r.nats is not None else "--"
        bpd = f"{r.bits_per_dim:.3f}" if r.nats is not None else "--"
        frechet = f"{r.frechet:.2f} ± {r.frechet_spread:.2f}"
        lines.append(
            f"{r.name:<10}{r.paradigm:<16}{r.parameters:>8,}{r.steps:>7,}{trained:>9}{nats:>10}{bpd:>9}  {r.kind:<12}"
            f"{r.evaluations:>5}{1000 * r.seconds_per_sample:>11.3f}{frechet:>15}{r.precision:>7.3f}{r.recall:>7.3f}"
            f"{r.coverage:>7.3f}{r.confident:>8.3f}{r.balance:>8.3f}"
        )
    return "\n".join(lines)


__all__ = [
    "clock_for", "count_network_calls", "SamplingCost", "measure_sampling", "seconds_per_step", "planned_steps",
    "load_plan", "save_plan", "settings_key", "Snapshots", "Entrant", "RaceRun", "train_under_budget",
    "bits_per_dim", "RaceRow", "race_table",
]
