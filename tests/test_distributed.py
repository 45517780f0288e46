"""The training loop under torchrun: two Gloo processes equal one process on the same global batch."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "fixtures" / "ddp_worker.py"


def run(args: list[str], out: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COURSE_DEVICE": "cpu", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *args, str(WORKER), str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return time.perf_counter() - t0


def test_two_processes_equal_one_on_the_same_global_batch(tmp_path):
    single, double = tmp_path / "single.pt", tmp_path / "ddp.pt"
    run([], single)
    seconds = run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"], double)
    a, b = torch.load(single, weights_only=True), torch.load(double, weights_only=True)
    assert (a["world_size"], b["world_size"]) == (1, 2)
    # Each process saw half of every batch; averaged gradients make the steps those of the whole
    # batch, up to float32 rounding of the two half-sums (measured: ~1e-7 after 30 steps).
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")
    assert len(b["history"]["loss"]) == 30
    torch.testing.assert_close(torch.tensor(b["history"]["loss"]), torch.tensor(a["history"]["loss"]), rtol=1e-4, atol=1e-5)
    print(f"torchrun with 2 Gloo processes: {seconds:.1f} s")


def test_uneven_batch_is_a_clear_error(monkeypatch):
    from course_lib import train

    monkeypatch.setattr(train, "world", lambda: (0, 2, 0))
    monkeypatch.setattr(train, "_init_distributed", lambda dev: dev)
    with pytest.raises(ValueError, match="multiple of 2"):
        train.fit(torch.nn.Linear(1, 1), torch.zeros(10, 1), steps=1, batch_size=5, progress=False, verbose=False)
