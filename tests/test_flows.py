"""course_lib.models.flows: every log-determinant against autograd, exact inverses, normalised
densities, the digits bound by hand, and a flow that learns a Gaussian it can represent."""

import math

import pytest
import torch
from torch.autograd.functional import jacobian

from course_lib import likelihood, metrics, train
from course_lib.checks import lesson04
from course_lib.models import ActNorm, AffineCoupling, DigitsFlow, LogitTransform, Permutation, RealNVP
from course_lib.models.flows import checkerboard_masks, half_masks


def _randomise(module: torch.nn.Module, std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Give every parameter random values (a new coupling is the identity, which tests nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(std * torch.randn(p.shape, generator=gen))
    return module


def _check_logdet(layer, x: torch.Tensor, tol: float = 1e-8) -> None:
    """log|det J| from autograd, point by point, against the layer's own logdet, both directions."""
    y, logdet = layer(x)
    x_back, logdet_inv = layer.inverse(y)
    for i in range(len(x)):
        jac = jacobian(lambda v: layer(v[None])[0][0], x[i])
        assert torch.linalg.slogdet(jac)[1].item() == pytest.approx(logdet[i].item(), abs=tol)
        jac_inv = jacobian(lambda v: layer.inverse(v[None])[0][0], y[i])
        assert torch.linalg.slogdet(jac_inv)[1].item() == pytest.approx(logdet_inv[i].item(), abs=tol)
    assert torch.allclose(logdet_inv, -logdet, atol=tol)
    assert torch.allclose(x_back, x, atol=1e-10)


def test_logdet_of_each_layer_matches_autograd():
    torch.manual_seed(0)
    dim = 5
    x = torch.randn(4, dim, dtype=torch.float64)
    mask = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0])
    _check_logdet(_randomise(AffineCoupling(mask, hidden=16, scale_limit=2.0)).double().eval(), x)
    act = ActNorm(dim).double()
    act.train()(torch.randn(64, dim, dtype=torch.float64) * 3 + 1)  # sets itself from its first batch
    assert bool(act.initialized) and act.log_scale.abs().sum() > 1.0
    _check_logdet(act.eval(), x)
    _check_logdet(Permutation(torch.tensor([3, 0, 4, 1, 2])).double(), x)
    _check_logdet(LogitTransform(0.05).double(), torch.rand(4, dim, dtype=torch.float64))


@pytest.mark.parametrize("permute", [False, True])
def test_logdet_of_the_whole_flow_matches_autograd(permute):
    torch.manual_seed(0)
    flow = _randomise(RealNVP(dim=6, couplings=4, hidden=16, permute=permute), std=0.2).double().eval()
    _check_logdet(flow, torch.randn(3, 6, dtype=torch.float64))
    # log_prob is the change of variables: base density at f(x) plus the log-det
    x = torch.randn(3, 6, dtype=torch.float64)
    z, logdet = flow(x)
    base = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    assert torch.allclose(flow.log_prob(x), base + logdet)


def test_inverse_recovers_the_input_in_float32():
    torch.manual_seed(0)
    flow = _randomise(RealNVP(dim=64, couplings=8, hidden=64, permute=True), std=0.1).eval()
    x = torch.randn(256, 64)
    z, _ = flow(x)
    assert (flow.inverse(z)[0] - x).abs().max().item() < 1e-5
    two = _randomise(RealNVP(dim=2, couplings=6, hidden=32)).eval()
    x2 = torch.randn(256, 2)
    assert (two.inverse(two(x2)[0])[0] - x2).abs().max().item() < 1e-5
    logit = LogitTransform(0.01)
    y = torch.rand(256, 64)
    assert (logit.inverse(logit(y)[0])[0] - y).abs().max().item() < 1e-5


def test_density_integrates_to_one():
    torch.manual_seed(0)
    flow = _randomise(RealNVP(dim=2, couplings=4, hidden=32), std=0.2).eval()
    step = 0.04
    xs = torch.arange(-10, 10, step) + step / 2
    xx, yy = torch.meshgrid(xs, xs, indexing="xy")
    with torch.no_grad():
        dens = flow.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    mass = dens.sum().item() * step**2
    assert mass == pytest.approx(1.0, abs=0.01)


def test_masks():
    assert half_masks(5, 2)[0].tolist() == [1, 1, 1, 0, 0]
    assert half_masks(5, 2)[1].tolist() == [0, 0, 0, 1, 1]
    board = checkerboard_masks(2, 2, 2)
    assert board[0].tolist() == [1, 0, 0, 1] and board[1].tolist() == [0, 1, 1, 0]


def test_every_coordinate_is_transformed():
    """Alternating halves transform each coordinate in every other coupling; after random
    permutations nothing guarantees it, so the digits flow's configuration is checked here."""
    assert RealNVP(dim=5, couplings=4).transformed_counts().tolist() == [2, 2, 2, 2, 2]
    same = RealNVP(dim=2, couplings=3, masks=[torch.tensor([1.0, 0.0])] * 3)
    assert same.transformed_counts().tolist() == [0, 3]  # the first coordinate is never transformed
    # the lesson's digits flow (12 couplings, permute=True, seed 0): every pixel transformed at least twice
    digits = DigitsFlow(couplings=12, hidden=8, permute=True)
    counts = digits.flow.transformed_counts()
    assert counts.sum().item() == 12 * 32 and counts.min().item() >= 2, counts
    # the count follows the permutations: check it against a brute-force trace of one coordinate
    flow = RealNVP(dim=6, couplings=5, hidden=8, permute=True, seed=3)
    for coord in range(6):
        pos, n = coord, 0
        for layer in flow.layers:
            if isinstance(layer, AffineCoupling):
                n += int(layer.mask[pos] == 0)
            elif isinstance(layer, Permutation):
                pos = int((layer.perm == pos).nonzero())
        assert flow.transformed_counts()[coord].item() == n


def test_affine_coupling_passes_the_lesson_check():
    """The known-answer check of the lesson's coding exercise, on the library's own layer."""
    lesson04.check_affine_coupling(AffineCoupling)


class _WrongLogdet(AffineCoupling):
    def forward(self, x):
        y, logdet = super().forward(x)
        return y, -logdet


class _ConditionsOnEverything(AffineCoupling):
    def forward(self, x):
        s, t = self.scale_shift(x)  # wrong: s and t must depend on the kept half only
        return x * self.mask + (1 - self.mask) * x * s.exp() + t, s.sum(-1)


class _NoInverse(AffineCoupling):
    def inverse(self, y):
        return y, torch.zeros(len(y), dtype=y.dtype)


@pytest.mark.parametrize("wrong", [_WrongLogdet, _ConditionsOnEverything, _NoInverse])
def test_lesson_check_catches_wrong_couplings(wrong):
    with pytest.raises(AssertionError):
        lesson04.check_affine_coupling(wrong)


def test_logit_box():
    logit = LogitTransform(0.01)
    lo, hi = logit.bounds
    assert lo == pytest.approx(math.log(0.01 / 0.99)) and hi == pytest.approx(-lo)
    s, _ = logit(torch.tensor([[0.0, 1.0 - 1e-7, 0.5]]))
    assert s[0, 0].item() == pytest.approx(lo, abs=1e-5) and s[0, 1].item() == pytest.approx(hi, abs=1e-4)


# ----------------------------------------------------------------------------- digits


def test_digits_bound_by_hand_on_a_tiny_case():
    """With an identity flow the bound is log N(s) + logit log-det - D ln L, which we compute here."""
    alpha, levels = 0.05, 3
    model = DigitsFlow(shape=(1, 1, 2), levels=levels, alpha=alpha, couplings=2, actnorm=False)
    x = torch.tensor([[[[0, 2]]], [[[1, 1]]]])
    z, logdet = model.flow(torch.randn(5, 2))
    assert logdet.abs().max() == 0  # new couplings are the identity
    torch.manual_seed(3)
    got = model.log_prob_bound(x)
    torch.manual_seed(3)
    u = torch.rand(2, 2)
    y = (x.flatten(1).float() + u) / levels
    p = alpha + (1 - 2 * alpha) * y
    s = torch.log(p / (1 - p))
    log_normal = (-0.5 * s**2 - 0.5 * math.log(2 * math.pi)).sum(1)
    log_det_logit = (math.log(1 - 2 * alpha) - torch.log(p) - torch.log(1 - p)).sum(1)
    expected = log_normal + log_det_logit - 2 * math.log(levels)
    assert torch.allclose(got, expected, atol=1e-5)
    torch.manual_seed(3)
    assert model.loss(x).item() == pytest.approx(-expected.mean().item(), abs=1e-5)


def test_digits_bound_is_above_the_exact_discrete_nll():
    """On 2 pixels with 3 levels, integrate the model's density over each cell numerically."""
    levels, k = 3, 60  # k x k midpoints per cell
    model = DigitsFlow(shape=(1, 1, 2), levels=levels, couplings=4, hidden=16, actnorm=False)
    _randomise(model.flow, std=0.3).eval()
    offsets = (torch.arange(k) + 0.5) / k
    ou, ov = torch.meshgrid(offsets, offsets, indexing="ij")
    inner = torch.stack([ou.flatten(), ov.flatten()], 1)
    total = 0.0
    for a in range(levels):
        for b in range(levels):
            y = (torch.tensor([a, b]) + inner) / levels
            with torch.no_grad():
                log_p = model.continuous_log_prob(y).double()
            log_cell = torch.logsumexp(log_p, 0) - math.log(k * k) - 2 * math.log(levels)  # log P(x)
            expected_bound = -(log_p.mean() - 2 * math.log(levels))  # E_u[-log p(y)] - log vol
            total += log_cell.exp().item()
            assert expected_bound >= -log_cell  # Jensen
            x = torch.tensor([[[[a, b]]]]).repeat(4000, 1, 1, 1)
            torch.manual_seed(a * levels + b)
            with torch.no_grad():
                mc = -model.log_prob_bound(x)
            err = mc.std().item() / math.sqrt(len(mc))
            assert abs(mc.mean().item() - expected_bound.item()) < 4 * err + 1e-3
            with torch.no_grad():  # the importance-weighted version is tighter
                iw = -model.log_prob_bound(x[:1], samples=4000).item()
            # it estimates -log P(x) itself, to a relative error std(p) / (mean(p) sqrt(K))
            p = log_p.exp()
            spread = (p.std() / p.mean()).item() / math.sqrt(4000)
            assert iw < expected_bound.item()
            assert iw == pytest.approx(-log_cell.item(), abs=4 * spread + 1e-3)
    assert total <= 1.0 + 1e-3  # mass the logit squeeze leaves outside [0, 1]^2 is lost, never gained


def test_digits_flow_interface():
    torch.manual_seed(0)
    model = DigitsFlow(couplings=2, hidden=16, permute=True)
    x = torch.randint(0, 17, (32, 1, 8, 8))
    model.initialize(x)
    assert model.loss(x).dim() == 0
    assert model.log_prob_bound(x).shape == (32,)
    assert model.log_prob_bound(x, samples=3).shape == (32,)
    with pytest.raises(NotImplementedError, match="log_prob_bound"):
        model.log_prob(x)  # a bound is not a log-probability: generic code must not take one for the other
    with metrics.count_calls(model.sampling_network) as calls:
        s = model.sample(10)
    assert calls[0] == 1  # a flow samples in one pass
    assert s.shape == (10, 1, 8, 8) and s.dtype == torch.long and s.min() >= 0 and s.max() <= 16


def test_bad_input_errors():
    flow = RealNVP(dim=2)
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        flow.loss(torch.zeros(8, 3))
    with pytest.raises(ValueError, match="positive int"):
        flow.sample(0)
    digits = DigitsFlow(couplings=2, hidden=8)
    with pytest.raises(TypeError, match="integer"):
        digits.loss(torch.rand(4, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\(N, 1, 8, 8\)"):
        digits.loss(torch.zeros(4, 64, dtype=torch.long))
    with pytest.raises(ValueError, match=r"0\.\.16"):
        digits.loss(torch.full((4, 1, 8, 8), 17))
    with pytest.raises(ValueError, match="positive int"):
        digits.log_prob_bound(torch.zeros(4, 1, 8, 8, dtype=torch.long), samples=0)
    with pytest.raises(ValueError, match="mask"):
        AffineCoupling(torch.ones(4))
    with pytest.raises(ValueError, match="alpha"):
        LogitTransform(0.5)
    with pytest.raises(ValueError, match="at least 2"):
        RealNVP(dim=1)


# ----------------------------------------------------------------------------- learning


def test_small_flow_learns_a_gaussian():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -0.5])
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    true = torch.distributions.MultivariateNormal(mean, cov)
    x, held_out = true.sample((4000,)), true.sample((4000,))
    flow = RealNVP(dim=2, couplings=4, hidden=32)
    flow.initialize(x[:512])
    train.fit(flow, x, steps=800, batch_size=256, lr=5e-3, lr_schedule="cosine", progress=False, verbose=False)
    with torch.no_grad():
        nll = -flow.log_prob(held_out).mean().item()
        exact = -true.log_prob(held_out).mean().item()
        samples = flow.sample(20_000)
    assert nll == pytest.approx(exact, abs=0.03)  # nats per point; the entropy is 2.33
    mean_gap, cov_gap = metrics.moment_gap(samples, true.sample((20_000,)))
    assert mean_gap < 0.05 and cov_gap < 0.08
    assert likelihood.gaussian_kl(*metrics.mean_cov(samples), mean, cov).item() < 0.01
