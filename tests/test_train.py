"""The training loop: learning, exact resume, same-seed repeatability, EMA, bad input."""

import pytest
import torch
from torch import nn

from course_lib import data, train
from course_lib.models import VAE, GAN


class Quadratic(nn.Module):
    """A model whose loss is ||w - 3||^2 plus batch noise: the loop must drive w to 3."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(4))

    def loss(self, batch):
        return ((self.w - 3.0) ** 2).sum() + 0.0 * batch.sum() + 0.01 * (self.w * torch.randn(4)).sum()


def test_loop_minimises_a_known_loss():
    model = Quadratic()
    result = train.fit(model, torch.zeros(100, 1), steps=400, lr=0.05, progress=False, verbose=False)
    assert torch.allclose(model.w, torch.full((4,), 3.0), atol=0.05)
    assert result.final() < 0.01 * result.initial()


def _vae_run(tmp_path, steps, interrupt_at=None, name="run.pt"):
    torch.manual_seed(0)
    model = VAE(hidden=32)
    x = data.toy2d("moons", 300, verbose=False)

    def stop(step, losses):
        if interrupt_at is not None and step == interrupt_at:
            raise KeyboardInterrupt  # a disconnect, right after a checkpoint

    path = tmp_path / name
    try:
        train.fit(model, x, steps=steps, batch_size=64, checkpoint=path, checkpoint_every=5,
                  callback=stop, progress=False, verbose=False, ema_decay=0.9)
    except KeyboardInterrupt:
        torch.manual_seed(123)  # whatever happens in between must not matter
        model = VAE(hidden=32)
        result = train.fit(model, x, steps=steps, batch_size=64, checkpoint=path, checkpoint_every=5,
                           progress=False, verbose=False, ema_decay=0.9)
        assert result.resumed_from == interrupt_at
        return model, result
    return model, None


def test_resumed_run_equals_uninterrupted(tmp_path):
    straight, _ = _vae_run(tmp_path, 30, name="a.pt")
    resumed, result = _vae_run(tmp_path, 30, interrupt_at=15, name="b.pt")
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    assert len(result.history["loss"]) == 30
    full = torch.load(tmp_path / "a.pt", weights_only=True)
    assert full["history"] == torch.load(tmp_path / "b.pt", weights_only=True)["history"]


def test_same_seed_same_run():
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = GAN(hidden=32)
        r = train.fit(model, data.toy2d("moons", 256, verbose=False), steps=20, batch_size=64,
                      progress=False, verbose=False)
        runs.append((r.history, [p.clone() for p in model.parameters()]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))


def test_ema_lags_the_weights():
    model = Quadratic()
    result = train.fit(model, torch.zeros(10, 1), steps=50, lr=0.1, ema_decay=0.95, progress=False, verbose=False)
    ema_w = result.ema_model.w
    assert (ema_w < model.w).all() and (ema_w > 0).all()


class Normed(nn.Module):
    """A model with a buffer that training changes (BatchNorm's running mean)."""

    def __init__(self):
        super().__init__()
        self.lin, self.norm = nn.Linear(3, 3), nn.BatchNorm1d(3)

    def loss(self, batch):
        return self.norm(self.lin(batch)).square().mean()


def test_ema_is_the_average_of_the_weights_and_keeps_the_latest_buffers():
    """The EMA equals the recursion ema <- d ema + (1 - d) w over the steps, and its buffers are the
    model's at the end (fit copies them when the average is used, not every step)."""
    torch.manual_seed(0)
    model, x, d = Normed(), torch.randn(64, 3) + 2.0, 0.9
    start = [p.detach().clone() for p in model.parameters()]
    manual = [p.clone() for p in start]

    def follow(step, _):
        for m, p in zip(manual, model.parameters()):
            m.mul_(d).add_(p.detach(), alpha=1 - d)

    result = train.fit(model, x, steps=30, batch_size=16, lr=0.05, ema_decay=d, callback=follow,
                       progress=False, verbose=False)
    for m, e in zip(manual, result.ema_model.parameters()):
        torch.testing.assert_close(e, m)
    torch.testing.assert_close(result.ema_model.norm.running_mean, model.norm.running_mean)
    assert model.norm.running_mean.abs().sum() > 0.1  # the buffer did change during training


def test_two_optimiser_groups_are_both_trained():
    torch.manual_seed(0)
    model = GAN(hidden=16)
    before = {n: p.clone() for n, p in model.named_parameters()}
    result = train.fit(model, data.toy2d("moons", 128, verbose=False), steps=3, batch_size=32,
                       progress=False, verbose=False)
    assert set(result.history) == {"discriminator", "generator"}
    assert all(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_bad_input_is_a_clear_error():
    with pytest.raises(TypeError, match="data must be"):
        train.fit(Quadratic(), "moons", steps=1, progress=False)
    with pytest.raises(ValueError, match="first dimension"):
        train.fit(Quadratic(), (torch.zeros(5), torch.zeros(6)), steps=1, progress=False)
    with pytest.raises(ValueError, match="steps"):
        train.fit(Quadratic(), torch.zeros(5), steps=-1)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        train.fit(VAE(), torch.zeros(10, 3), steps=1, progress=False, verbose=False)


def test_diverging_loss_is_reported():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def loss(self, batch):
            return self.w.sum() * float("nan")

    with pytest.raises(FloatingPointError, match="learning rate"):
        train.fit(Bad(), torch.zeros(4, 1), steps=2, progress=False, verbose=False)


def test_evaluate_averages_per_example_values():
    x = torch.arange(10.0)
    assert train.evaluate(lambda b: b * 2, x, batch_size=3, device="cpu") == pytest.approx(9.0)
