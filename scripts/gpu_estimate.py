"""Estimate each lesson's run time under the gpu profile on a free Colab GPU (a T4), from a cpu run.

    python scripts/bench.py --profile cpu        # records every fit call (bench/fits-cpu.json)
    python scripts/gpu_estimate.py               # writes bench/gpu-estimate.md; exits 1 if one is over

The gpu profile promises each lesson within 10 minutes on a T4. Until a T4 has run them, this
is the estimate, built from what the cpu bench measured and counted (``course_lib/stepcost.py``):

* **Training.** Each ``train.fit`` call of the cpu run logged its steps, its measured seconds,
  the ``runtime.budget`` its steps came from (so the estimate knows the steps under gpu), and
  one step counted: PyTorch operators and FLOPs. On a GPU a small model's step costs what its
  host needs to launch the kernels, plus the arithmetic:

      seconds per step = HOST_FACTOR * (A * optimisers + B * operators) + FLOPs / T4_FLOPS

  A and B are solved from the two models of the loop benchmark measured on an H200
  (``bench/loop-cuda.md``), counted here the same way: two points, two unknowns, so the fit is
  exact and has no residual to check it by (a third benchmarked model would give one). B is
  the host's cost per counted operator; A is the per-step intercept (the batch, Adam, clipping,
  the EMA, the loss log), charged once per optimiser, so a GAN's two players pay it twice.
  Host time and GPU time are added, not overlapped: deliberately on the long side. Not in the
  calibration: on a T4 the course trains in fp16 with a gradient scaler (``runtime.amp_dtype``;
  the H200 ran bf16), whose per-step overflow check waits for the GPU. HOST_FACTOR = 2 allows
  for Colab's slower host CPU (a 2.2 GHz server core against a newer one); T4_FLOPS = 2e12 is a
  quarter of the T4's FP32 peak (8.1 TFLOPS), no credit taken for its tensor cores.
* **Work on the CPU.** Fits that run on the CPU under every profile (the digit classifiers) take
  their measured CPU seconds per step, for their gpu number of steps, times COLAB_CPU = 1.5 (a
  Colab vCPU is slower than a core of this machine). **The rest** of the lesson (sampling,
  metrics, figures) is the cpu run's wall time minus its training, times COLAB_CPU. That is an
  assumption, not a measurement: the metrics run on Colab's CPU, and the sampling loops are
  taken to run on the GPU no slower than here, which for the smallest 2D models (hundreds of
  tiny kernels) may not hold. Time inside a training run's callback (validation passes,
  snapshots) is counted in neither part.
* **Start-up**: ``STARTUP_S`` for the CUDA context and the first kernels.
* A fit whose step could not be counted is charged the larger of its CPU step time and the
  lesson's costliest counted step; the table says so.

What the estimate cannot see is listed per lesson: settings other than steps that the gpu
profile changes (lesson 8's wider networks: FLOPs scaled by 4; lesson 5's full MNIST).
A measured T4 table replaces this page when one exists.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BENCH = ROOT / "bench"
ESTIMATES = ROOT / "course_lib" / "estimated_times.json"  # shipped with the package
LIMIT_S = 600.0  # the gpu profile's promise: 10 minutes a lesson on a T4
HOST_FACTOR = 2.0
T4_FLOPS = 2e12
STARTUP_S = 30.0
COLAB_CPU = 1.5  # a Colab CPU-second against one of this machine's
RACE_PROBE_S = 5.0  # lesson 15 under gpu: the two timing probes of an entrant (12 steps, then about 0.8 s)
# Calibration, solved by calibrate() from the H200 loop benchmark; these are the values it gave
# (2026-11-30), used when the benchmark file or its models are not at hand.
A_S, B_S = 3.2e-3, 15.9e-6
FLOP_SCALE = {"08": 4.0}  # gpu doubles the DCGANs' widths: convolution FLOPs x4 (ops unchanged)
NOTES = {
    "05": "full MNIST when online: its ELBO over 10,000 test images not counted",
    "08": "widths doubled under gpu: FLOPs × 4",
    "15": "each entrant trains for the gpu time budget",
}


@dataclass
class FitEstimate:
    name: str
    device: str
    cpu_steps: int
    gpu_steps: int
    step_s: float
    seconds: float
    note: str = ""


@dataclass
class LessonEstimate:
    lesson: str
    wall_cpu: float
    other: float
    fits: list[FitEstimate] = field(default_factory=list)
    extra: float = 0.0  # time-budgeted training (lesson 15's race)
    note: str = ""

    @property
    def training(self) -> float:
        return sum(f.seconds for f in self.fits) + self.extra

    @property
    def total(self) -> float:
        return STARTUP_S + self.other + self.training


def step_seconds(ops: int, flops: float, groups: int = 1, a: float | None = None, b: float | None = None) -> float:
    """Estimated seconds of one training step on a T4 (see the module's docstring)."""
    a = A_S if a is None else a
    b = B_S if b is None else b
    return HOST_FACTOR * (a * groups + b * ops) + flops / T4_FLOPS


LESSONS = ROOT / "lessons"


def source_budgets(lesson: str) -> dict[tuple[str, str], int]:
    """``rt.budget(smoke=S, cpu=C, gpu=G)`` lines of a lesson's source: (S, C) -> G.

    The fit log records the budget a run's steps came from as it was when the bench ran; a gpu
    value changed since (and nothing else) is read from the source, so that lowering a gpu budget
    needs no new cpu bench."""
    src = next(LESSONS.glob(f"{lesson}_*.md"), None)
    if src is None:
        return {}
    found = re.findall(r"rt\.budget\(smoke=([0-9.]+), cpu=([0-9.]+), gpu=([0-9.]+)\)", src.read_text(encoding="utf-8"))
    return {(smoke, cpu): int(float(gpu)) for smoke, cpu, gpu in found}


def gpu_steps(fit: dict, lesson: str | None = None) -> tuple[int, str]:
    """The steps the same fit call trains under gpu, from the budget its steps came from."""
    if fit["model"] == "DigitClassifier":  # its steps come from evaluation.CLASSIFIER_STEPS, not rt.budget
        from course_lib.evaluation import CLASSIFIER_STEPS

        gpu = {by["gpu"] for by in CLASSIFIER_STEPS.values() if by["cpu"] == fit["steps"]}
        if len(gpu) == 1:
            return gpu.pop(), ""
    now = source_budgets(lesson) if lesson is not None else {}
    # every matching budget, with its gpu value as the lesson's source says now
    gpu = {now.get((str(b["smoke"]), str(b["cpu"])), b["gpu"]) for b in fit.get("budgets", [])}
    if len(gpu) == 1:
        return int(gpu.pop()), ""
    if not gpu:
        return fit["steps"], "a run's steps match no budget: same steps assumed"
    return max(gpu), f"a run's steps match several budgets: the largest ({max(gpu):,}) assumed"


def race_budget(lesson: str) -> float | None:
    """Lesson 15's seconds of training per entrant under gpu, read from its BUDGET line."""
    src = next((p for p in (ROOT / "lessons").glob(f"{lesson}_*.md")), None)
    if src is None:
        return None
    m = re.search(r"^BUDGET = rt\.budget\([^)]*gpu=([0-9.]+)", src.read_text(encoding="utf-8"), re.M)
    return float(m.group(1)) if m else None


def counted_step(fit: dict, lesson: str) -> float:
    """T4 seconds of one step of a counted fit (its operators, FLOPs and optimisers)."""
    count = fit["count"]
    return step_seconds(count["ops"], count["flops"] * FLOP_SCALE.get(lesson, 1.0), fit.get("groups", 1))


def estimate_lesson(lesson: str, wall: float, fits: list[dict], race_entrants: set[str] | None = None,
                    race_seconds: float | None = None) -> LessonEstimate:
    out = LessonEstimate(lesson=lesson, wall_cpu=wall, other=wall, note=NOTES.get(lesson, ""))
    counted = [counted_step(f, lesson) for f in fits if f.get("count") and f["model"] != "DigitClassifier"]
    for fit in fits:
        out.other -= fit["seconds"] + fit.get("count_seconds", 0.0)
        if race_entrants and fit["name"] in race_entrants and race_seconds is not None:
            out.extra += race_seconds + RACE_PROBE_S  # under gpu the race calibrates each entrant first
            continue
        steps, note = gpu_steps(fit, lesson)
        if fit["model"] == "DigitClassifier":  # trains on the CPU under every profile
            per = COLAB_CPU * fit["seconds"] / max(fit["trained"], 1)
        elif fit.get("count"):
            per = counted_step(fit, lesson)
        else:  # not counted: the larger of its CPU step and the lesson's costliest counted step
            per = max([fit["seconds"] / max(fit["trained"], 1)] + counted)
            note = "; ".join(filter(None, [note, f"a step not counted ({fit.get('count_error') or 'no count'})"]))
        out.fits.append(FitEstimate(fit["name"], fit["device"], fit["steps"], steps, per, steps * per, note))
    if out.other < 0:
        raise ValueError(f"lesson {lesson}: its training took longer than its run ({wall:.0f} s): "
                         "the wall time and the fit log are from different runs; rerun its cpu bench")
    out.other = COLAB_CPU * out.other
    return out


def solve(points: list[tuple[int, float]]) -> tuple[float, float]:
    """A and B of ``seconds = A + B * operators`` through two measured (operators, seconds) points."""
    (o1, t1), (o2, t2) = points
    if o1 == o2:
        raise ValueError("the two calibration models have the same operator count: A and B cannot be told apart")
    b = (t2 - t1) / (o2 - o1)
    return t1 - b * o1, b


def calibrate() -> tuple[float, float, str]:
    """Solve A and B from the H200 loop benchmark: two models, two unknowns."""
    path = BENCH / "loop-cuda.md"
    if not path.exists():
        return A_S, B_S, "calibration file bench/loop-cuda.md missing: stored constants used"
    rows = re.findall(r"^\| (PixelCNN[^|]*|char transformer[^|]*) \|[^|]*\|[^|]*\| ([0-9.]+) \|", path.read_text(), re.M)
    rates = {name.split()[0]: float(v) for name, v in rows}
    sys.path.insert(0, str(ROOT / "scripts"))
    import torch

    import loop_bench
    from course_lib import stepcost

    ops = {}
    for name, (make, x, bs) in loop_bench.models().items():
        torch.manual_seed(0)
        model = make()
        batch = x[:bs]
        ops[name.split()[0]] = stepcost.count_step(model, [lambda m=model, b=batch: m.loss(b)]).ops
    (o1, t1), (o2, t2) = [(ops[k], 1.0 / rates[k]) for k in ("PixelCNN", "char")]
    a, b = solve([(o1, t1), (o2, t2)])
    line = (f"calibrated on {path.name}: PixelCNN {o1} ops at {rates['PixelCNN']} steps/s, transformer {o2} ops at "
            f"{rates['char']} steps/s -> A = {a * 1e3:.2f} ms per optimiser step, B = {b * 1e6:.1f} µs per operator (H200 host)")
    return a, b, line


def main(argv: list[str] | None = None) -> int:
    global A_S, B_S
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=BENCH / "gpu-estimate.md")
    args = ap.parse_args(argv)
    fits_path = BENCH / "fits-cpu.json"
    if not fits_path.exists():
        print("no bench/fits-cpu.json: run python scripts/bench.py --profile cpu first", file=sys.stderr)
        return 2
    logged = json.loads(fits_path.read_text())  # lesson -> wall time, date, machine, fits: one run each
    A_S, B_S, calibration = calibrate()
    rows = []
    walls = {lesson: entry["wall"] for lesson, entry in logged.items()}
    fits = {lesson: entry["fits"] for lesson, entry in logged.items()}
    for lesson in sorted(walls):
        if lesson not in fits:
            continue
        short = lesson[:2]
        race = race_budget(short) if short == "15" else None
        entrants = {"PixelCNN", "RealNVP", "VAE", "GAN", "DDPM"} if race is not None else None
        rows.append(estimate_lesson(short, walls[lesson], fits[lesson], entrants, race))
    missing = sorted(p.stem for p in LESSONS.glob("[0-9][0-9]_*.md") if p.stem not in logged)
    over = [r for r in rows if r.total > LIMIT_S]
    lines = [
        "Estimated, not measured: each lesson under the **gpu** profile on a free Colab T4, from the cpu bench's "
        "measured times and counted training steps (`scripts/gpu_estimate.py`, which says how). "
        f"The promise is {LIMIT_S / 60:.0f} min a lesson.",
        "",
        f"Step cost = {HOST_FACTOR:g} × (A × optimisers + B × operators) + FLOPs / {T4_FLOPS:.0e} FLOP/s; {calibration}. "
        f"CPU work (the classifiers' training, the rest of the lesson) × {COLAB_CPU:g} for Colab's CPU. Start-up {STARTUP_S:.0f} s a lesson.",
        "",
        "| lesson | cpu run (s) | gpu training steps | T4 training (s) | rest of the lesson (s) | T4 estimate (s) | within 10 min | notes |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        steps = sum(f.gpu_steps for f in r.fits)
        notes = "; ".join(filter(None, [r.note] + sorted({f.note for f in r.fits if f.note})))
        lines.append(f"| {r.lesson} | {r.wall_cpu:.0f} | {steps:,} | {r.training:.0f} | {r.other:.0f} | {r.total:.0f} | "
                     f"{'yes' if r.total <= LIMIT_S else '**no**'} | {notes} |")
    lines += ["", "Per training run (the largest first in each lesson):", "",
              "| lesson | run | trains on | steps cpu → gpu | T4 s/step | T4 seconds |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        for f in sorted(r.fits, key=lambda f: -f.seconds):
            where = "CPU (under every profile)" if f.name == "DigitClassifier" else "GPU"
            lines.append(f"| {r.lesson} | {f.name} | {where} | {f.cpu_steps:,} → {f.gpu_steps:,} | {f.step_s * 1e3:.1f} ms | {f.seconds:.0f} |")
        if r.extra:
            lines.append(f"| {r.lesson} | the race's five entrants | GPU | by time | | {r.extra:.0f} |")
    if missing:
        lines += ["", f"No fit log for: {', '.join(missing)} (rerun their cpu bench)."]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    if args.out == BENCH / "gpu-estimate.md":  # the lessons' first cells print it (runtime.describe_times)
        stems = {lesson[:2]: lesson for lesson in walls}
        shipped = {stems[r.lesson]: {"seconds": round(r.total), "bench_date": logged[stems[r.lesson]]["date"],
                                     "estimated": time.strftime("%Y-%m-%d")} for r in rows}
        ESTIMATES.write_text(json.dumps({"gpu (T4, estimated)": shipped}, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print("\n".join(lines))
    for r in over:
        print(f"lesson {r.lesson}: estimated {r.total:.0f} s on a T4, over the {LIMIT_S:.0f} s promise", file=sys.stderr)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
