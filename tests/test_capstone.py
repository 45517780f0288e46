"""Lesson 15's race: known answers for the instruments (calls, clocks, budget, units) and the procedure."""

from __future__ import annotations

import json
import math
import time

import pytest
import torch
from torch import nn

from course_lib import capstone, data, likelihood, train
from course_lib.checks import lesson15
from course_lib.checks.lesson15 import FakeClock
from course_lib.models import DDPM, GAN, DigitsFlow, PixelCNN
from course_lib.models.vae_image import ConvImageVAE


def test_measure_sampling_passes_the_exercise_check():
    lesson15.check_measure_sampling(capstone.measure_sampling)


def test_the_check_rejects_wrong_counters():
    """A counter that hooks every submodule, or one that forgets to remove its hook, fails the check."""

    def every_module(sample, network, n, clock=time.perf_counter):
        counts = [0]
        handles = [m.register_forward_pre_hook(lambda *_: counts.__setitem__(0, counts[0] + 1)) for m in network.modules()]
        start = clock()
        samples = sample(n)
        seconds = clock() - start
        for h in handles:
            h.remove()
        return samples, counts[0], seconds / n

    with pytest.raises(AssertionError, match="submodules"):
        lesson15.check_measure_sampling(every_module)

    def leaky(sample, network, n, clock=time.perf_counter):
        counts = [0]
        network.register_forward_pre_hook(lambda *_: counts.__setitem__(0, counts[0] + 1))
        start = clock()
        samples = sample(n)
        return samples, counts[0], (clock() - start) / n

    with pytest.raises(AssertionError):
        lesson15.check_measure_sampling(leaky)


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_ddpm_makes_one_call_per_sampling_step(steps):
    torch.manual_seed(0)
    ddpm = DDPM.for_images((1, 8, 8), steps=10, channels=(4, 8)).eval()
    cost = capstone.measure_sampling(lambda n: ddpm.sample(n, steps=steps), ddpm.sampling_network, 3)
    assert cost.evaluations == steps
    assert cost.samples.shape == (3, 1, 8, 8) and cost.samples.dtype == torch.long
    assert cost.seconds_per_sample > 0


def test_the_race_models_count_their_known_calls(one_thread):
    """PixelCNN on 8x8: 64 sequential passes; the flow, the VAE and the GAN: one pass each."""
    torch.manual_seed(0)
    x = torch.randint(0, 17, (40, 1, 8, 8))
    gan = GAN(data_dim=64, latent_dim=4, hidden=8)
    models = {
        "pixelcnn": (PixelCNN(channels=4, blocks=1, dropout=0.0), 64),
        "flow": (DigitsFlow(couplings=2, hidden=8).initialize(x), 1),
        "vae": (ConvImageVAE(image_shape=(1, 8, 8), levels=17, latent_dim=2, channels=4, hidden=8), 1),
        "gan": (gan, 1),
    }
    for name, (model, expected) in models.items():
        model.eval()
        cost = capstone.measure_sampling(model.sample, model.sampling_network, 5)
        assert cost.evaluations == expected, name
        assert len(cost.samples) == 5, name


def test_count_network_calls_removes_its_hook_on_error():
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError):
        with capstone.count_network_calls(net) as calls:
            net(torch.zeros(1, 2))
            raise ValueError("boom")
    assert calls[0] == 1 and not net._forward_pre_hooks


class CostlyModel(nn.Module):
    """A one-parameter model whose loss costs exactly ``cost`` seconds of a fake clock."""

    def __init__(self, clock: FakeClock, cost: float, groups: int = 1):
        super().__init__()
        self.clock, self.cost = clock, cost
        self.weights = nn.ParameterList([nn.Parameter(torch.zeros(1)) for _ in range(groups)])

    def optimizer_groups(self):
        return {f"g{i}": [w] for i, w in enumerate(self.weights)}

    def group_loss(self, group, batch):
        self.clock.advance(self.cost)
        return ((self.weights[int(group[1:])] - batch.mean()) ** 2).sum()


def test_seconds_per_step_is_the_known_cost_and_the_plan_divides_the_budget():
    clock = FakeClock()
    x = torch.randn(64, 3)
    one = capstone.seconds_per_step(lambda: CostlyModel(clock, 0.05), x, {"batch_size": 16}, clock=clock)
    assert one == pytest.approx(0.05, abs=1e-9)
    two = capstone.seconds_per_step(lambda: CostlyModel(clock, 0.05, groups=2), x, {"batch_size": 16}, clock=clock)
    assert two == pytest.approx(0.10, abs=1e-9)  # a GAN's step: both optimiser groups
    assert capstone.planned_steps(3.0, one) == 60
    assert capstone.planned_steps(3.0, two) == 30
    assert capstone.planned_steps(0.01, 1.0) == 2  # never fewer than the minimum
    with pytest.raises(ValueError):
        capstone.planned_steps(0.0, 0.1)


def test_a_longer_probe_for_a_fast_step():
    clock = FakeClock()
    built = []

    def build():
        built.append(1)
        return CostlyModel(clock, 0.001)

    step = capstone.seconds_per_step(build, torch.randn(64, 3), {"batch_size": 16}, probe=8, clock=clock,
                                     min_seconds=0.5)
    assert step == pytest.approx(0.001, abs=1e-12)
    assert len(built) == 2  # the short probe lasted 4 ms, so a second one ran for about 0.5 s
    assert clock.now - 100.0 > 0.5


def test_seconds_per_step_with_a_real_clock(one_thread):
    """A loss that sleeps 5 ms, timed with the wall clock: a step takes at least that, and not ten times more."""

    class Sleepy(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def loss(self, batch):
            time.sleep(0.005)
            return ((self.w - batch.mean()) ** 2).sum()

    step = capstone.seconds_per_step(Sleepy, torch.randn(32, 2), {"batch_size": 8}, clock=time.perf_counter)
    assert 0.005 <= step < 0.05


def test_bits_per_dim_known_answers():
    assert capstone.bits_per_dim(64 * math.log(17), 64) == pytest.approx(math.log2(17))
    assert capstone.bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0)
    assert capstone.bits_per_dim(100.0, 64) == pytest.approx(likelihood.bits_per_dim(100.0, 64))
    with pytest.raises(ValueError):
        capstone.bits_per_dim(1.0, 0)


def test_plan_round_trips_through_json(tmp_path):
    path = tmp_path / "deeper" / "plan.json"
    assert capstone.load_plan(path) == {"entries": {}}
    plan = {"entries": {"GAN": {"key": "a1_b2", "seconds_per_step": 0.0071, "steps": 3521, "trained_seconds": 24.9}}}
    capstone.save_plan(path, plan)
    assert capstone.load_plan(path) == plan
    assert json.loads(path.read_text())["entries"]["GAN"]["steps"] == 3521
    path.write_text("{not json")
    with pytest.raises(RuntimeError, match="damaged"):
        capstone.load_plan(path)


def test_snapshot_ema_is_an_exact_copy_of_fits(one_thread):
    """The callback's EMA is built and updated as train.fit's own: after the run the two are equal."""
    torch.manual_seed(0)
    x = torch.randn(256, 2)
    model = GAN(data_dim=2, latent_dim=2, hidden=8)
    snaps = capstone.Snapshots(model, steps=20, fractions=(0.25, 0.5), n=6, draw=lambda m, n: m.sample(n),
                               ema_decay=0.9, clock=time.process_time)
    run = train.fit(model, x, steps=20, batch_size=32, ema_decay=0.9, callback=snaps, progress=False, verbose=False)
    for a, b in zip(snaps.ema.model.parameters(), run.ema_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert sorted(snaps.samples) == [0.25, 0.5] and snaps.samples[0.25].shape == (6, 2)
    assert 0 < snaps.elapsed[0.25] <= snaps.elapsed[0.5]
    # the same seed every time: the same noise, so two snapshots of one model differ only by training
    a, b = snaps.take(run.ema_model), snaps.take(run.ema_model)
    torch.testing.assert_close(a, b)


def test_train_under_budget_plans_trains_and_reloads(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    x = torch.randn(256, 4)
    entrant = capstone.Entrant(
        name="Tiny GAN", paradigm="adversarial", build=lambda: GAN(data_dim=4, latent_dim=2, hidden=8), data=x,
        settings={"hidden": 8}, fit={"batch_size": 32, "lr": 1e-3, "seed": 0}, draw=lambda m, n: m.sample(n),
    )
    plan_path = data.cache_dir() / "plan.json"
    first = capstone.train_under_budget(entrant, 0.5, plan_path, "smoke", torch.device("cpu"), snapshot_n=5, probe=6)
    plan = capstone.load_plan(plan_path)["entries"]["Tiny GAN"]
    assert first.steps == plan["steps"] == capstone.planned_steps(0.5, plan["seconds_per_step"])
    assert not first.reloaded and first.trained_seconds == plan["trained_seconds"] > 0
    assert first.checkpoint.exists() and "steps" in first.checkpoint.name
    assert first.steps >= 16, "a step of this tiny GAN takes milliseconds: 0.5 s holds many"
    assert sorted(first.snapshots) == [0.125, 0.25, 0.5, 1.0]
    again = capstone.train_under_budget(entrant, 0.5, plan_path, "smoke", torch.device("cpu"), snapshot_n=5, probe=6)
    assert again.reloaded and again.steps == first.steps and again.trained_seconds == first.trained_seconds
    assert capstone.load_plan(plan_path)["entries"]["Tiny GAN"] == plan  # no new calibration
    for a, b in zip(first.model.parameters(), again.model.parameters()):
        torch.testing.assert_close(a, b)
    for f in first.snapshots:
        torch.testing.assert_close(first.snapshots[f], again.snapshots[f])
    assert "reloaded" in str(again) and "trained in" in str(first)


def test_a_reference_plan_is_used_as_given_without_calibrating(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))
    entrant = capstone.Entrant(
        name="Tiny GAN", paradigm="adversarial", build=lambda: GAN(data_dim=4, latent_dim=2, hidden=8),
        data=torch.randn(256, 4), settings={"hidden": 8}, fit={"batch_size": 32, "lr": 1e-3, "seed": 0},
        draw=lambda m, n: m.sample(n),
    )

    def no_calibration(*args, **kwargs):
        raise AssertionError("a reference plan must not be recalibrated")

    monkeypatch.setattr(capstone, "seconds_per_step", no_calibration)
    plan_path = data.cache_dir() / "plan.json"
    run = capstone.train_under_budget(entrant, 0.5, plan_path, "cpu", torch.device("cpu"), snapshot_n=5,
                                      reference=(37, 0.01))
    assert run.steps == 37 and run.reference and abs(run.planned_seconds - 0.37) < 1e-9
    assert "reference machine" in str(run)
    assert capstone.load_plan(plan_path)["entries"]["Tiny GAN"]["reference"] is True
    with pytest.raises(ValueError, match="reference"):
        capstone.train_under_budget(entrant, 0.5, plan_path, "cpu", torch.device("cpu"), reference=(0, 0.01))


def test_race_table_prints_every_kind_of_row():
    common = dict(parameters=1000, steps=10, planned_seconds=1.0, trained_seconds=1.1, evaluations=1,
                  seconds_per_sample=1e-4, frechet=2.0, frechet_spread=0.1, precision=0.8, recall=0.7,
                  coverage=0.6, confident=0.5, balance=0.2)
    rows = [capstone.RaceRow("PixelCNN", "autoregressive", nats=80.0, kind="exact", **common),
            capstone.RaceRow("GAN", "adversarial", nats=None, kind="none", **common)]
    text = capstone.race_table(rows)
    assert "PixelCNN" in text and "exact" in text and f"{capstone.bits_per_dim(80.0, 64):.3f}" in text
    gan_line = next(line for line in text.splitlines() if line.startswith("GAN"))
    assert "--" in gan_line and "none" in gan_line
    assert rows[1].bits_per_dim is None


def test_clock_for_devices():
    clock, name = capstone.clock_for("cpu")
    assert clock is time.process_time and "CPU" in name
    with pytest.raises(ValueError):
        capstone.clock_for("meta")
