"""The fit log behind the gpu estimate: counts with known answers, and no trace on the run."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from course_lib import runtime, stepcost, train
from course_lib.models import GAN

ROOT = Path(__file__).resolve().parents[1]


class Linear(nn.Module):
    """One linear layer, squared-output loss: its FLOPs have a closed form."""

    def __init__(self, d_in=32, d_out=16):
        super().__init__()
        self.lin = nn.Linear(d_in, d_out)

    def loss(self, batch):
        return self.lin(batch).pow(2).mean()


class Noisy(nn.Module):
    """BatchNorm (running statistics) and dropout plus noise in the loss (random draws)."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 1))

    def loss(self, batch):
        return (self.net(batch + 0.1 * torch.randn_like(batch)) ** 2).mean()


def test_flops_of_a_linear_layer_match_the_closed_form():
    model = Linear(32, 16)
    x = torch.randn(64, 32)
    count = stepcost.count_step(model, [lambda: model.loss(x)])
    # forward x @ W^T: 2*B*I*O; backward: the weight's gradient only (x needs none): 2*B*I*O more
    assert count.flops == 2 * (2 * 64 * 32 * 16)
    assert count.ops > 3  # linear, pow, mean and their backward ops at least


def test_a_loss_that_calls_autograd_grad_is_counted():
    """Energy-based and score models differentiate inside their loss (Langevin, divergences)."""
    model = Linear(4, 1)
    x = torch.randn(16, 4, requires_grad=True)

    def loss():
        energy = model.lin(x).sum()
        (grad_x,) = torch.autograd.grad(energy, x, create_graph=True)
        return grad_x.pow(2).sum()

    count = stepcost.count_step(model, [loss])
    assert count.ops > 0 and count.flops > 0
    assert all(p.grad is None for p in model.parameters())


def test_counting_leaves_weights_gradients_buffers_and_random_streams_alone():
    torch.manual_seed(0)
    model = Noisy()
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(32, 4)
    torch.manual_seed(5)
    stepcost.count_step(model, [lambda: model.loss(x)])
    after_draw = torch.rand(3)
    torch.manual_seed(5)
    expected_draw = torch.rand(3)
    assert torch.equal(after_draw, expected_draw)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # BatchNorm's running mean included
    assert all(p.grad is None for p in model.parameters())
    assert not model.training


def _train_gan(tmp_path, log):
    torch.manual_seed(0)
    model = GAN(data_dim=2, latent_dim=2, hidden=16)
    data = torch.randn(256, 2)
    if log:
        runtime.budget(smoke=25, cpu=25, gpu=100)  # the lesson's budget, remembered by runtime
    result = train.fit(model, data, steps=25, batch_size=32, progress=False, verbose=False, ema_decay=0.9)
    after = torch.rand(4)  # the lesson's next random draw
    return model, result, after


def test_a_fit_logs_one_line_and_its_results_do_not_change(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "_BUDGETS", [])  # this test's budget stays in this test
    plain_model, plain, plain_after = _train_gan(tmp_path, log=False)
    path = tmp_path / "fits.jsonl"
    monkeypatch.setenv(stepcost.LOG_ENV, str(path))
    logged_model, logged, logged_after = _train_gan(tmp_path, log=True)
    for a, b in zip(plain_model.state_dict().values(), logged_model.state_dict().values()):
        assert torch.equal(a, b)
    assert plain.history == logged.history
    assert torch.equal(plain_after, logged_after)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    assert row["steps"] == row["trained"] == 25 and row["model"] == "GAN" and row["device"] == "cpu"
    assert row["count"]["flops"] > 0 and row["count"]["ops"] > 0
    assert {"smoke": 25, "cpu": 25, "gpu": 100, "value": 25} in row["budgets"]


def _estimator():
    spec = importlib.util.spec_from_file_location("gpu_estimate", ROOT / "scripts" / "gpu_estimate.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_estimate"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_estimate_of_a_lesson_adds_its_fits_and_the_rest():
    est = _estimator()
    fits = [
        # a GPU fit whose budget quadruples under gpu: 2,000 ops and 1e9 FLOPs a step
        {"name": "a", "device": "cpu", "steps": 1000, "trained": 1000, "seconds": 50.0, "count": {"ops": 2000, "flops": 1e9},
         "count_seconds": 0.5, "budgets": [{"smoke": 10, "cpu": 1000, "gpu": 4000, "value": 1000}], "model": "M"},
        # the digits classifier (evaluation.CLASSIFIER_STEPS: 1,000 under cpu, 1,500 under gpu), which
        # trains on the CPU under every profile: its measured CPU time scales with its steps
        {"name": "DigitClassifier", "device": "cpu", "steps": 1000, "trained": 1000, "seconds": 20.0, "count": {"ops": 100, "flops": 1e6},
         "count_seconds": 0.1, "budgets": [], "model": "DigitClassifier"},
    ]
    lesson = est.estimate_lesson("99", wall=100.0, fits=fits)
    step = est.HOST_FACTOR * (est.A_S + 2000 * est.B_S) + 1e9 / est.T4_FLOPS
    assert lesson.fits[0].gpu_steps == 4000
    assert lesson.fits[0].seconds == pytest.approx(4000 * step)
    assert lesson.fits[1].gpu_steps == 1500
    assert lesson.fits[1].seconds == pytest.approx(est.COLAB_CPU * 1500 * 20.0 / 1000)  # stays on the CPU
    other = est.COLAB_CPU * (100.0 - (50.0 + 0.5) - (20.0 + 0.1))
    assert lesson.other == pytest.approx(other)
    assert lesson.total == pytest.approx(est.STARTUP_S + other + 4000 * step + est.COLAB_CPU * 30.0)


def test_a_fit_whose_steps_match_no_budget_keeps_its_steps_and_says_so():
    est = _estimator()
    fits = [{"name": "b", "device": "cpu", "steps": 123, "trained": 123, "seconds": 1.0, "count": {"ops": 10, "flops": 0},
             "count_seconds": 0.0, "budgets": [], "model": "M"}]
    lesson = est.estimate_lesson("99", wall=10.0, fits=fits)
    assert lesson.fits[0].gpu_steps == 123 and "no budget" in lesson.fits[0].note


def test_every_lesson_prints_its_t4_estimate_labelled_as_one():
    """The first cell's time line carries the estimate, said to be one, for every lesson of the book."""
    lessons = sorted((ROOT / "lessons").glob("[0-9][0-9]_*.md"))
    estimates = json.loads((ROOT / "course_lib" / "estimated_times.json").read_text())["gpu (T4, estimated)"]
    assert sorted(estimates) == [p.stem for p in lessons], "run python scripts/gpu_estimate.py after the cpu bench"
    assert all(0 < row["seconds"] <= 600 for row in estimates.values())  # the gpu profile's promise
    line = runtime.describe_times("12")
    assert "gpu on a free Colab T4 about" in line and "estimated from the cpu run, not measured" in line


def test_the_calibration_solves_a_line_through_two_points():
    est = _estimator()
    a, b = est.solve([(100, 0.003 + 100 * 2e-5), (700, 0.003 + 700 * 2e-5)])
    assert a == pytest.approx(0.003) and b == pytest.approx(2e-5)
    with pytest.raises(ValueError, match="same operator count"):
        est.solve([(100, 0.01), (100, 0.02)])


def test_gpu_steps_follow_the_lesson_source_for_every_matching_budget(tmp_path, monkeypatch):
    est = _estimator()
    (tmp_path / "98_fake.md").write_text("STEPS = rt.budget(smoke=30, cpu=4000, gpu=9000)\n"
                                         "N = rt.budget(smoke=1000, cpu=4000)\n")
    monkeypatch.setattr(est, "LESSONS", tmp_path)
    steps_budget = {"smoke": 30, "cpu": 4000, "gpu": 20000, "value": 4000}  # gpu lowered in the source since
    other = {"smoke": 1000, "cpu": 4000, "gpu": 4000, "value": 4000}  # an unrelated budget of the same value
    fit = {"model": "DDPM", "steps": 4000, "budgets": [steps_budget]}
    assert est.gpu_steps(fit, "98") == (9000, "")
    steps, note = est.gpu_steps({**fit, "budgets": [other, steps_budget]}, "98")
    assert steps == 9000 and "several budgets" in note


def test_wall_time_and_fit_log_from_different_runs_is_an_error():
    est = _estimator()
    fits = [{"name": "a", "device": "cpu", "steps": 10, "trained": 10, "seconds": 50.0, "count": {"ops": 10, "flops": 0},
             "count_seconds": 0.0, "budgets": [], "model": "M"}]
    with pytest.raises(ValueError, match="different runs"):
        est.estimate_lesson("99", wall=20.0, fits=fits)


def test_an_uncounted_step_is_charged_at_least_the_costliest_counted_one():
    est = _estimator()
    counted = {"name": "a", "device": "cpu", "steps": 10, "trained": 10, "seconds": 0.01, "count": {"ops": 1000, "flops": 0},
               "count_seconds": 0.0, "budgets": [], "model": "M"}
    uncounted = {**counted, "name": "b", "count": None, "count_error": "RuntimeError: boom"}
    lesson = est.estimate_lesson("99", wall=10.0, fits=[counted, uncounted])
    assert est.step_seconds(1000, 0) > 0.001  # the counted step costs more than the uncounted one's CPU step
    assert lesson.fits[1].step_s == pytest.approx(est.step_seconds(1000, 0))
    assert "not counted (RuntimeError: boom)" in lesson.fits[1].note


@pytest.mark.parametrize("capability, dtype", [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_mixed_precision_uses_bf16_only_where_the_gpu_has_it(monkeypatch, capability, dtype):
    """A T4 (7.5) emulates bf16 (slow, no cuDNN convolutions): it trains in fp16 with a scaler."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert runtime.amp_dtype(torch.device("cuda")) == dtype
    assert runtime.amp_dtype(torch.device("cpu")) is None
