"""The course's training loop against a minimal plain PyTorch loop: steps per second, same run.

    python scripts/loop_bench.py                    # the default device (cuda if there, else cpu)
    python scripts/loop_bench.py --device cpu --steps 200

Two of the course's models, as lesson 2 trains them: a conv net (the PixelCNN on the sklearn
digits) and a transformer (the character transformer on census first names). For each, the
same initial weights, data and device go through

* ``train.fit`` with everything a lesson turns on: an EMA of the weights, a checkpoint written
  during the run, the progress bar, mixed precision on CUDA; and
* a plain loop: random batch, loss, backward, gradient clipping (the same clipping ``fit`` does:
  part of the algorithm, not of the bookkeeping), Adam step; mixed precision on CUDA as well.

The two alternate, ``--rounds`` times each after a warm-up, and the table gives the median
throughput of each and their ratio. The course's target: ``fit`` at least 0.95 times the plain
loop. The table goes to ``bench/loop-<device>.md``; the command exits 1 when a ratio is under
the target. Measure on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_lib import data, runtime, train  # noqa: E402
from course_lib.models import CharTransformer, PixelCNN, TransformerConfig  # noqa: E402
from course_lib.text import CharVocab  # noqa: E402

TARGET = 0.95


def models() -> dict[str, tuple[callable, torch.Tensor, int]]:
    """name -> (constructor, training data, batch size), as lesson 2 sets them."""
    digits, _ = data.digits("train", verbose=False)
    names = data.names("first", "train", verbose=False)
    vocab = CharVocab.from_names(names)
    x_names = vocab.encode(names)
    cfg = TransformerConfig(vocab_size=vocab.size, max_len=vocab.max_len, n_layer=4, n_head=4, n_embd=64, dropout=0.0)
    return {
        "PixelCNN (conv), digits 8×8": (lambda: PixelCNN(levels=17, height=8, width=8, channels=64, blocks=4, dropout=0.5), digits, 64),
        "char transformer, names": (lambda: CharTransformer(cfg), x_names, 64),
    }


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def plain_loop(model: nn.Module, x: torch.Tensor, steps: int, batch_size: int, dev: torch.device) -> float:
    """The loop a reader would write by hand; returns seconds for ``steps`` steps."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = x.to(dev)
    model.train()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        batch = x[torch.randint(len(x), (batch_size,), device=dev)]
        with runtime.autocast(dev):
            loss = model.loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    sync(dev)
    return time.perf_counter() - t0


def course_loop(model: nn.Module, x: torch.Tensor, steps: int, batch_size: int, dev: torch.device, folder: str) -> float:
    """``train.fit`` with EMA, a checkpoint half-way and at the end, and the progress bar."""
    ckpt = Path(folder) / f"run-{time.perf_counter_ns()}.pt"
    sync(dev)
    t0 = time.perf_counter()
    train.fit(model, x, steps=steps, batch_size=batch_size, lr=1e-3, device=dev, ema_decay=0.999,
              checkpoint=ckpt, checkpoint_every=max(1, steps // 2), progress=True, verbose=False)
    sync(dev)
    return time.perf_counter() - t0


def measure(name: str, make, x, batch_size: int, dev: torch.device, steps: int, rounds: int, folder: str) -> dict:
    torch.manual_seed(0)
    model_a, model_b = make(), make()
    model_b.load_state_dict(model_a.state_dict())
    model_a.to(dev), model_b.to(dev)
    course_loop(model_a, x, max(5, steps // 10), batch_size, dev, folder)  # warm-up: kernels, allocator
    plain_loop(model_b, x, max(5, steps // 10), batch_size, dev)
    fit_s, plain_s = [], []
    for _ in range(rounds):
        fit_s.append(course_loop(model_a, x, steps, batch_size, dev, folder))
        plain_s.append(plain_loop(model_b, x, steps, batch_size, dev))
    fit_rate, plain_rate = steps / statistics.median(fit_s), steps / statistics.median(plain_s)
    row = {"model": name, "params": sum(p.numel() for p in model_a.parameters()), "batch": batch_size,
           "fit": fit_rate, "plain": plain_rate, "ratio": fit_rate / plain_rate}
    print(f"{name}: fit {fit_rate:.1f} steps/s, plain {plain_rate:.1f} steps/s, ratio {row['ratio']:.3f}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--steps", type=int, default=None, help="steps per timed run (default: 200 on CPU, 1000 on GPU)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    dev = runtime.get_device(args.device)
    if dev.type == "cpu" and (os.cpu_count() or 1) <= 2:
        torch.set_num_threads(1)  # as the lessons run on a 2-core machine
    steps = args.steps or (200 if dev.type == "cpu" else 1000)
    os.environ.setdefault("COURSE_PROGRESS", "1")
    with tempfile.TemporaryDirectory(prefix="loop-bench-") as folder:
        rows = [measure(name, make, x, bs, dev, steps, args.rounds, folder) for name, (make, x, bs) in models().items()]
    device = f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} thread(s) of {os.cpu_count()} cores)"
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, device {device}, torch {torch.__version__}: "
        f"{steps} steps per timed run, median of {args.rounds} alternating runs each.",
        "",
        "| model | parameters | batch | `train.fit` (steps/s) | plain loop (steps/s) | ratio | ≥ 0.95 |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['params']:,} | {r['batch']} | {r['fit']:.1f} | {r['plain']:.1f} | "
                     f"{r['ratio']:.3f} | {'yes' if r['ratio'] >= TARGET else '**no**'} |")
    out = args.out or ROOT / "bench" / f"loop-{dev.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    slow = [r["model"] for r in rows if r["ratio"] < TARGET]
    if slow:
        print(f"UNDER THE TARGET OF {TARGET}x: {', '.join(slow)}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
