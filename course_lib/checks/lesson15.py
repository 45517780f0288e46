"""Known-answer checks for lesson 15 (the map revisited, and the race of the course's models).

``check_measure_sampling(impl)`` grades ``impl(sample, network, n, clock) -> (samples, evaluations,
seconds_per_sample)``: draw ``n`` samples with ``sample(n)``, count the forward calls of ``network``
(the network evaluations each sample needs) and time the call with ``clock``. The known answers
come from a fake network that moves a fake clock by a fixed amount per call, so the count and the
time are exact; then from real models whose samplers make a known number of calls (a PixelCNN one
per pixel, a DDPM one per sampling step, a GAN one). The library's own
:func:`course_lib.capstone.measure_sampling` passes the same check (``tests/test_capstone.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["FakeClock", "TickingNet", "check_measure_sampling"]


class FakeClock:
    """A clock that moves only when told to: ``clock()`` reads it, ``clock.advance(s)`` moves it."""

    def __init__(self, start: float = 100.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class TickingNet(nn.Module):
    """A small network whose every call costs exactly ``cost`` seconds of a :class:`FakeClock`.

    It has submodules of its own (two linear layers), so a counter that hooks every module it
    contains, instead of the network itself, counts too many calls.
    """

    def __init__(self, clock: FakeClock, cost: float):
        super().__init__()
        self.clock, self.cost = clock, cost
        self.body = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))

    def forward(self, x: Tensor) -> Tensor:
        self.clock.advance(self.cost)
        return self.body(x)


def _unpack(out, what: str):
    assert isinstance(out, tuple) and len(out) == 3, (
        f"{what}: return a tuple (samples, evaluations, seconds_per_sample), got {type(out).__name__}"
    )
    samples, evaluations, seconds = out
    assert isinstance(evaluations, int) and not isinstance(evaluations, bool), (
        f"{what}: evaluations must be an int (the number of calls), got {type(evaluations).__name__}"
    )
    return samples, evaluations, float(seconds)


def _hooks(module: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in module.modules())


def check_measure_sampling(impl) -> None:
    """``impl(sample, network, n, clock)`` must return ``(samples, evaluations, seconds_per_sample)``.

    1. A sampler that calls a :class:`TickingNet` k times on its batch: evaluations k, seconds per
       sample k * cost / n exactly, the samples returned unchanged.
    2. Calls of another network inside the sampler are not counted; calls of the network before or
       after the measurement are not counted; two measurements do not add up.
    3. No hook is left on the network afterwards, even when the sampler raises.
    4. Real samplers: a PixelCNN on 2x3 images makes 6 calls, a DDPM sampled with 3 of its 6 steps
       makes 3, a GAN makes 1.
    """
    from ..models import DDPM, GAN, PixelCNN  # here: the models import nothing from the checks

    clock = FakeClock()
    net = TickingNet(clock, cost=0.25)
    other = TickingNet(clock, cost=1.0)

    def sampler(k: int):
        def sample(n: int) -> Tensor:
            x = torch.zeros(n, 3)
            for _ in range(k):
                x = net(x)
            other(x)  # a second network: a decoder, say; it must not be counted
            return torch.arange(n)
        return sample

    for k, n in ((7, 10), (1, 4), (64, 32)):
        net(torch.zeros(1, 3))  # a call before the measurement: not counted
        samples, evaluations, seconds = _unpack(impl(sampler(k), net, n, clock), f"k={k}, n={n}")
        assert torch.equal(torch.as_tensor(samples), torch.arange(n)), "return the samples that sample(n) drew, unchanged"
        assert evaluations == k, (
            f"the sampler called the network {k} times, you counted {evaluations}. Count calls of `network` itself "
            "(one forward pre-hook on it), not of its submodules or of other networks; start from zero each time"
        )
        expected = (k * 0.25 + 1.0) / n  # all the time of the call, the other network's included, per sample
        assert abs(seconds - expected) < 1e-9, (
            f"the call took {k * 0.25 + 1.0} s of the clock for {n} samples: {expected} s per sample; you gave {seconds}. "
            "Read clock() just before and just after sample(n), and divide the difference by n"
        )
        assert _hooks(net) == 0 and _hooks(other) == 0, (
            "a hook was left on the network after the measurement: remove it (handle.remove()) when you are done"
        )

    def broken(n: int) -> Tensor:
        net(torch.zeros(n, 3))
        raise RuntimeError("the sampler failed")

    try:
        impl(broken, net, 2, clock)
    except RuntimeError:
        pass
    assert _hooks(net) == 0, "when the sampler raises, the hook must still be removed: use try/finally (or a with block)"

    torch.manual_seed(0)
    pixel = PixelCNN(levels=3, height=2, width=3, channels=4, blocks=1, dropout=0.0).eval()
    _, evaluations, seconds = _unpack(impl(pixel.sample, pixel.sampling_network, 5, clock), "PixelCNN")
    assert evaluations == 6, f"a PixelCNN on 2x3 images calls its network once per pixel: 6, you counted {evaluations}"
    ddpm = DDPM.for_images((1, 8, 8), steps=6, channels=(4, 8)).eval()
    _, evaluations, _ = _unpack(impl(lambda n: ddpm.sample(n, steps=3), ddpm.sampling_network, 3, clock), "DDPM")
    assert evaluations == 3, f"a DDPM sampled with 3 steps calls its noise network 3 times, you counted {evaluations}"
    gan = GAN(data_dim=4, latent_dim=2, hidden=8).eval()
    _, evaluations, _ = _unpack(impl(gan.sample, gan.sampling_network, 9, clock), "GAN")
    assert evaluations == 1, f"a GAN samples with one generator pass, you counted {evaluations}"
