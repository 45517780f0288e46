"""Where and how a lesson runs: the device, the seed, the profile and its budget.

Every lesson starts with ``setup()``, which prints one line that says what the run uses, so
that nothing about the hardware or the budget is ever chosen silently.

Profiles (environment variable ``COURSE_PROFILE``):

* ``smoke`` - tests and CI: every lesson in seconds; it proves the code runs, not that it learns.
* ``cpu``   - default without a GPU: a lesson in minutes on a 2-core CPU.
* ``gpu``   - default with CUDA (Colab): bigger models and data.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, TypeVar

import numpy as np
import torch

PROFILES = ("smoke", "cpu", "gpu")
DEVICES = ("cpu", "cuda", "mps")

T = TypeVar("T")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def get_device(name: str | torch.device | None = None) -> torch.device:
    """The device to run on.

    ``name`` (or the environment variable ``COURSE_DEVICE``) forces one of ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``; without it the first available of cuda, mps, cpu is taken.
    Asking for a device that is not there is an error, never a silent fallback.
    """
    if name is None:
        name = os.environ.get("COURSE_DEVICE") or None
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICES:
        raise ValueError(f"unknown device {str(name)!r}: use one of {', '.join(DEVICES)}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError(
                f"device {str(name)!r} was asked for, but this machine has no CUDA GPU that "
                "PyTorch can use. In Colab choose Runtime > Change runtime type > GPU; "
                "elsewhere pass device='cpu' (or unset COURSE_DEVICE)."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RuntimeError(
                f"device {str(name)!r} was asked for, but only {torch.cuda.device_count()} "
                "CUDA device(s) exist; use 'cuda:0'."
            )
    if device.type == "mps" and not _mps_available():
        raise RuntimeError(
            f"device {str(name)!r} was asked for, but the Apple MPS backend is not available "
            "here; pass device='cpu' (or unset COURSE_DEVICE)."
        )
    return device


def get_profile(name: str | None = None, device: torch.device | None = None) -> str:
    """The run's budget profile: ``name``, else ``COURSE_PROFILE``, else gpu on CUDA, else cpu."""
    if name is None:
        name = os.environ.get("COURSE_PROFILE") or None
    if name is None:
        device = device if device is not None else get_device()
        return "gpu" if device.type == "cuda" else "cpu"
    name = name.strip().lower()
    if name not in PROFILES:
        raise ValueError(
            f"unknown profile {name!r}: set COURSE_PROFILE to one of {', '.join(PROFILES)}"
        )
    return name


def budget(smoke: T, cpu: T, gpu: T | None = None, profile: str | None = None) -> T:
    """Pick a value for the current profile: ``budget(smoke=50, cpu=2000, gpu=20000)``.

    ``gpu`` defaults to the cpu value.
    """
    profile = get_profile(profile)
    value = smoke if profile == "smoke" else gpu if profile == "gpu" and gpu is not None else cpu
    # remembered, so that a training run can say what it would be under each profile (stepcost.py)
    _BUDGETS.append({"smoke": smoke, "cpu": cpu, "gpu": cpu if gpu is None else gpu, "value": value})
    return value


_BUDGETS: list[dict] = []


def budgets_seen() -> list[dict]:
    """Every budget this process has asked for: ``{"smoke", "cpu", "gpu", "value"}`` each."""
    return list(_BUDGETS)


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and PyTorch (all devices) so that a run repeats exactly on CPU."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype mixed precision uses on ``device``, or None where we do not use it (CPU, MPS)."""
    if device.type != "cuda":
        return None
    # bf16 only where the GPU has it natively (compute capability 8.0 and up: A100, H100, L4, ...).
    # torch.cuda.is_bf16_supported() also says yes on a T4 (7.5), where bf16 is emulated: slow
    # matrix products and no cuDNN bf16 convolutions. A T4 gets fp16 with a gradient scaler.
    major, _ = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if major >= 8 else torch.float16


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """Mixed precision on CUDA (bf16 where supported, else fp16); a no-op elsewhere."""
    dtype = amp_dtype(device)
    if not enabled or dtype is None:
        yield
        return
    with torch.autocast(device_type="cuda", dtype=dtype):
        yield


@dataclass(frozen=True)
class Runtime:
    """What a lesson runs with. Printed by ``setup`` so that every run says what it used."""

    device: torch.device
    profile: str
    seed: int

    def __str__(self) -> str:
        where = self.device.type
        if self.device.type == "cuda":
            where = f"cuda ({torch.cuda.get_device_name(self.device)})"
        from . import __version__, data  # here: course_lib/__init__ imports this module

        return (
            f"course_lib {__version__} runtime: profile={self.profile}, device={where}, seed={self.seed}, "
            f"torch={torch.__version__}, threads={torch.get_num_threads()}, cache={data.cache_dir()}"
        )

    def budget(self, smoke: T, cpu: T, gpu: T | None = None) -> T:
        return budget(smoke, cpu, gpu, profile=self.profile)


MEASURED_TIMES = Path(__file__).with_name("measured_times.json")


def measured_times(lesson: str) -> dict[str, dict]:
    """The run times ``make bench`` measured for a lesson ("02" or "02_autoregressive_models"):
    ``{profile: {"seconds": ..., "date": ..., "machine": ...}}``, shipped with the package."""
    if not MEASURED_TIMES.exists():
        return {}
    table = json.loads(MEASURED_TIMES.read_text(encoding="utf-8"))
    return {
        profile: row
        for profile, rows in table.items()
        for stem, row in rows.items()
        if stem == lesson or stem.split("_")[0] == lesson
    }


ESTIMATED_TIMES = Path(__file__).with_name("estimated_times.json")


def estimated_gpu_seconds(lesson: str) -> float | None:
    """The lesson's estimated time under gpu on a free Colab T4 (``scripts/gpu_estimate.py``), if any."""
    if not ESTIMATED_TIMES.exists():
        return None
    rows = json.loads(ESTIMATED_TIMES.read_text(encoding="utf-8")).get("gpu (T4, estimated)", {})
    return next((row["seconds"] for stem, row in rows.items() if stem == lesson or stem.split("_")[0] == lesson), None)


def _took(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def describe_times(lesson: str) -> str:
    times = measured_times(lesson)
    parts = [f"{profile} {_took(times[profile]['seconds'])} ({times[profile]['machine']}, {times[profile]['date']})"
             for profile in PROFILES if profile in times]
    line = (f"measured run time of lesson {lesson} (make bench): " + "; ".join(parts) if parts
            else f"measured run time of lesson {lesson}: none yet (make bench)")
    estimate = estimated_gpu_seconds(lesson)
    if "gpu" not in times and estimate is not None:
        line += f"; gpu on a free Colab T4 about {_took(estimate)} (estimated from the cpu run, not measured)"
    return line


def setup(
    seed: int = 0,
    device: str | torch.device | None = None,
    profile: str | None = None,
    verbose: bool = True,
    threads: int | None = None,
    lesson: str | None = None,
) -> Runtime:
    """Choose device and profile, seed everything, print what was chosen, return it.

    ``threads`` sets PyTorch's CPU threads; by default a CPU with at most 2 cores uses one
    (unless OMP_NUM_THREADS says otherwise). The printed line shows the number in use.
    ``lesson`` ("02") adds a line with the lesson's measured run time under each profile.
    """
    dev = get_device(device)
    if dev.type == "cpu" and threads is None and (os.cpu_count() or 1) <= 2 and "OMP_NUM_THREADS" not in os.environ:
        # Measured on 2-core machines: the course's small models train several times faster on
        # one thread than on two (the second thread mostly waits), so a 2-core CPU uses one.
        threads = 1
    if threads is not None:
        torch.set_num_threads(threads)
    rt = Runtime(device=dev, profile=get_profile(profile, dev), seed=seed)
    seed_everything(seed)
    if verbose:
        print(rt)
        if lesson is not None:
            print(describe_times(lesson))
    return rt


HEADLINE = "★"


def headline(label: str, value: float, unit: str = "", fmt: str = ".3f") -> None:
    """Print one of the lesson's headline results as a labelled line the bench collects.

    ``headline("PixelCNN test NLL", 78.3, "nats/image")`` prints
    ``★ PixelCNN test NLL = 78.300 nats/image``; ``make bench`` gathers these lines of
    every lesson into its table, so the numbers there are the ones the runs printed.
    """
    print(f"{HEADLINE} {label} = {value:{fmt}} {unit}".rstrip())
