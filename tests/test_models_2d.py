"""The four lesson-1 models: each learns its toy problem, and each one's math has a known answer."""

import math

import pytest
import torch
from torch import nn

from course_lib import data, metrics, train
from course_lib.models import GAN, VAE, DDPMSchedule, Diffusion, DiscretizedAR

MOONS = None


def moons():
    global MOONS
    if MOONS is None:
        MOONS = data.toy2d("moons", 4000, seed=0, verbose=False)
    return MOONS


# name -> (constructor, training settings); the same settings lesson 1 uses under the cpu profile
CASES = {
    "autoregressive": (lambda: DiscretizedAR(), dict(steps=1500, lr=2e-3)),
    "vae": (lambda: VAE(), dict(steps=1500, lr=2e-3)),
    "gan": (lambda: GAN(), dict(steps=1500, lr=1e-3)),
    "diffusion": (lambda: Diffusion.for_points(), dict(steps=1500, lr=2e-3)),
}

# Tolerances on the moments of 4,000 samples against the data (each axis has std about 1):
# the largest error of a mean and of a covariance entry.
MEAN_TOL, COV_TOL = 0.1, 0.1


@pytest.mark.parametrize("family", list(CASES))
def test_model_learns_moons(family):
    torch.manual_seed(0)
    make, settings = CASES[family]
    model = make()
    result = train.fit(model, moons(), batch_size=256, lr_schedule="cosine", progress=False, verbose=False, **settings)
    torch.manual_seed(1)
    samples = model.sample(4000)
    assert samples.shape == (4000, 2) and torch.isfinite(samples).all()
    mean_gap, cov_gap = metrics.moment_gap(samples, moons())
    assert mean_gap < MEAN_TOL and cov_gap < COV_TOL, (mean_gap, cov_gap)
    if family == "gan":
        # The game's losses do not fall; the discriminator must end far from "certain" (loss 0).
        assert result.final("discriminator") > 0.8
    elif family == "diffusion":
        # Noise-prediction MSE starts near 1 (predicting zero) and must fall well below.
        assert result.final() < 0.6 * result.initial()
    else:
        assert result.final() < result.initial() - 0.5  # nats per point


@pytest.mark.parametrize("family", list(CASES))
def test_bad_input_shapes(family):
    model = CASES[family][0]()
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        model.loss(torch.zeros(8, 3))
    with pytest.raises(ValueError, match="positive int"):
        model.sample(0)


def test_ar_density_integrates_to_one():
    torch.manual_seed(0)
    model = DiscretizedAR(bins=20, low=-2, high=2, hidden=16)
    xs = torch.linspace(-2, 2, 401)[:-1] + 0.005  # one point per 0.01 cell
    xx, yy = torch.meshgrid(xs, xs, indexing="xy")
    dens = model.log_prob(torch.stack([xx.flatten(), yy.flatten()], 1)).exp()
    assert dens.sum().item() * 0.01**2 == pytest.approx(1.0, abs=1e-4)


def test_ar_sampling_is_sequential_and_teacher_forcing_is_one_pass():
    model = DiscretizedAR(dim=3)
    with metrics.count_calls(model.net) as calls:
        model.sample(10)
    assert calls[0] == 3
    with metrics.count_calls(model.net) as calls:
        model.loss(torch.randn(10, 3))
    assert calls[0] == 1


def test_ar_conditionals_see_only_the_past():
    torch.manual_seed(0)
    model = DiscretizedAR(dim=3, hidden=16)
    b = torch.randint(0, model.bins, (1, 3))
    base = model.logits(b)
    b2 = b.clone()
    b2[0, 2] = (b2[0, 2] + 7) % model.bins  # change the last coordinate
    changed = model.logits(b2)
    assert torch.equal(base[:, :3], changed[:, :3])  # no conditional depends on x_3 itself
    b3 = b.clone()
    b3[0, 0] = (b3[0, 0] + 7) % model.bins
    assert torch.equal(base[:, 0], model.logits(b3)[:, 0])  # p(x_1) sees nothing
    assert not torch.equal(base[:, 1], model.logits(b3)[:, 1])  # p(x_2 | x_1) sees x_1


def _linear_gaussian_vae():
    """A VAE whose decoder is linear with a fixed noise level: log p(x) is then exact,
    p(x) = N(b, W W^T + s^2 I)."""
    torch.manual_seed(0)
    vae = VAE(data_dim=2, latent_dim=2, hidden=32)
    lin = nn.Linear(2, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.5], [-0.3, 0.8], [0, 0], [0, 0]]))
        lin.bias.copy_(torch.tensor([0.2, -0.1, math.log(0.4), math.log(0.4)]))
    vae.decoder = lin
    W, b, s = lin.weight[:2].detach(), lin.bias[:2].detach(), 0.4
    exact = torch.distributions.MultivariateNormal(b, W @ W.T + s**2 * torch.eye(2))
    return vae, exact


def test_elbo_is_below_the_exact_log_likelihood_and_iwae_closes_the_gap():
    vae, exact = _linear_gaussian_vae()
    torch.manual_seed(1)
    x = exact.sample((200,))
    log_p = exact.log_prob(x).mean()
    with torch.no_grad():
        elbo = torch.stack([vae.elbo(x) for _ in range(200)]).mean()  # expectation of the estimator
        iw1 = vae.log_prob_iw(x, k=1).mean()
        iw_many = vae.log_prob_iw(x, k=4096).mean()
    assert elbo < log_p  # Jensen: for an untrained encoder the gap is large
    assert iw1 < iw_many <= log_p + 0.02
    assert log_p - iw_many < 0.3 * (log_p - elbo)


def test_ddpm_closed_form_matches_the_iterated_chain():
    sched = DDPMSchedule(steps=50)
    torch.manual_seed(0)
    x0 = torch.full((200_000, 1), 1.5)
    x = x0.clone()
    for t in range(30):  # x_{t} from x_{t-1}, one small noising step at a time
        x = (1 - sched.betas[t]).sqrt() * x + sched.betas[t].sqrt() * torch.randn_like(x)
    closed = sched.q_sample(x0, torch.full((len(x0),), 29), torch.randn_like(x0))
    assert x.mean().item() == pytest.approx(closed.mean().item(), abs=0.01)
    assert x.var().item() == pytest.approx(closed.var().item(), abs=0.01)
    assert x.mean().item() == pytest.approx(1.5 * sched.abar[29].sqrt().item(), abs=0.01)


def test_schedule_ends_in_noise():
    for kind in ("cosine", "linear"):
        s = DDPMSchedule(steps=100, kind=kind)
        assert s.abar[-1] < 0.01 and torch.all(s.betas > 0) and torch.all(s.betas < 1)
    with pytest.raises(ValueError, match="cosine"):
        DDPMSchedule(kind="quadratic")


def test_sampling_cost_counts_network_evaluations():
    costs = {
        "ar": metrics.sampling_cost(DiscretizedAR(), 100, repeats=1),
        "vae": metrics.sampling_cost(VAE(), 100, repeats=1),
        "gan": metrics.sampling_cost(GAN(), 100, repeats=1),
        "ddpm": metrics.sampling_cost(Diffusion.for_points(steps=40), 100, repeats=1),
    }
    assert {k: c.network_evaluations for k, c in costs.items()} == {"ar": 2, "vae": 1, "gan": 1, "ddpm": 40}
    assert all(c.seconds_per_batch > 0 for c in costs.values())


def test_ar_density_is_zero_outside_the_box_and_bins_differ_by_log_width():
    model = DiscretizedAR(bins=50, low=-2, high=2, hidden=16)
    x = torch.tensor([[0.3, -0.4], [2.5, 0.0], [0.0, -2.01], [2.0, -2.0]])
    with torch.no_grad():
        lp = model.log_prob(x)
        lp_bins = model.log_prob_bins(x)
    assert torch.isneginf(lp[1]) and torch.isneginf(lp[2])  # outside [low, high]^2: density 0
    assert torch.isfinite(lp[[0, 3]]).all()  # the box's edges are inside
    inside = [0, 3]
    torch.testing.assert_close(lp[inside] - lp_bins[inside], torch.full((2,), 2 * math.log(1 / model.width)))


def test_diffusion_sampler_is_the_ancestral_step_with_fresh_noise():
    from course_lib.models.diffusion import ancestral_step

    torch.manual_seed(0)
    model = Diffusion.for_points(steps=5, hidden=16)
    s = model.schedule
    assert s.posterior_var[0] == 0 and torch.all(s.posterior_var[1:] > 0)  # no noise at the last step only
    torch.manual_seed(1)
    got = model.sample(7)
    torch.manual_seed(1)
    x = torch.randn(7, 2)
    with torch.no_grad():
        for t in reversed(range(5)):
            eps = model.eps_model(x, torch.full((7,), t))
            mean = (x - s.betas[t] / (1 - s.abar[t]).sqrt() * eps) / s.alphas[t].sqrt()
            x = mean + s.posterior_var[t].sqrt() * torch.randn_like(x) if t > 0 else mean
    torch.testing.assert_close(got, x)
    # the step itself: z = 0 gives the mean, and the noise enters with std sqrt(beta_tilde_t)
    x_t, eps, z = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)
    mean = ancestral_step(s, x_t, eps, 3, torch.zeros_like(z))
    torch.testing.assert_close(ancestral_step(s, x_t, eps, 3, z) - mean, s.posterior_var[3].sqrt() * z)


def test_gan_trains_on_the_functions_it_shows():
    from course_lib.models.gan import discriminator_loss, generator_loss

    torch.manual_seed(0)
    gan = GAN(hidden=16)
    x = torch.randn(32, 2)
    torch.manual_seed(1)
    got = gan.discriminator_loss(x)
    torch.manual_seed(1)
    want = discriminator_loss(gan.discriminator(x), gan.discriminator(gan.fake(32)))
    torch.testing.assert_close(got, want)
    torch.manual_seed(2)
    got = gan.generator_loss(32)
    torch.manual_seed(2)
    torch.testing.assert_close(got, generator_loss(gan.discriminator(gan.fake(32))))
