"""Known-answer checks for lesson 5 (variational autoencoders).

``check_elbo_estimator(fn)`` grades a single-sample, reparameterised ELBO estimator with the KL
term estimated by Monte Carlo too: ``fn(model, x)`` returns log p(x, z) - log q(z | x) at one
z = mu + sigma * eps per example. It is checked on probabilistic PCA
(:class:`course_lib.models.vae_image.LinearGaussian`), where log p(x), the posterior and the
ELBO are all known in closed form. The library's own ``vae_image.elbo_mc`` passes the same
checks (``tests/test_vae_image.py``).
"""

from __future__ import annotations

import math

import torch

from ..models.vae_image import LinearGaussian

__all__ = ["check_elbo_estimator"]


def _estimate(fn, model, x):
    out = fn(model, x)
    assert isinstance(out, torch.Tensor), f"the estimator must return a tensor, got {type(out).__name__}"
    assert out.shape == (len(x),), (
        f"the estimator must return one value per example, shape ({len(x)},), got {tuple(out.shape)}: "
        "sum the log-densities over the latent (and data) dimensions, not over the batch"
    )
    return out


def check_elbo_estimator(fn) -> None:
    """``fn(model, x)`` must be the one-sample estimate log p(x|z) + log p(z) - log q(z|x), z reparameterised.

    Checked on a linear-Gaussian model (data dimension 5, latent dimension 3, float64):
    1. at the exact posterior every single estimate equals log p(x) (zero variance);
    2. with a wrong encoder, the estimates vary from draw to draw and their mean matches the
       closed-form ELBO, which lies below log p(x);
    3. the gradient of the mean estimate with respect to the encoder's parameters matches the
       gradient of the closed-form ELBO: it flows through z (the reparameterisation trick).
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LinearGaussian(data_dim=5, latent_dim=3, sigma=0.5, seed=0)
        x = model.sample(6, generator=torch.Generator().manual_seed(1))
        log_px = model.log_prob(x)

        # 1. q = p(z | x): log p(x, z) - log q(z | x) = log p(x) for every z.
        model.set_exact_posterior()
        with torch.no_grad():
            for _ in range(3):
                est = _estimate(fn, model, x)
                err = (est - log_px).abs().max().item()
                assert err < 1e-8, (
                    "with q(z|x) equal to the true posterior, log p(x|z) + log p(z) - log q(z|x) equals "
                    f"log p(x) for every z, but your estimate is off by up to {err:.3g}. Estimate the KL at the "
                    "sampled z (log p(z) - log q(z|x)) instead of using its closed form, and check the signs."
                )

        # 2. A wrong encoder: random estimates whose mean is the exact ELBO.
        fresh = LinearGaussian(data_dim=5, latent_dim=3, sigma=0.5, seed=0)
        with torch.no_grad():
            fresh.enc_log_var.fill_(math.log(0.3))
        repeats = 4000
        xr = x.repeat(repeats, 1)  # (repeats * 6, 5): every example many times
        with torch.no_grad():
            first, second = _estimate(fn, fresh, x), _estimate(fn, fresh, x)
            assert not torch.allclose(first, second), (
                "two calls gave the same estimates: draw a fresh eps ~ N(0, I) on every call (torch.randn_like)"
            )
            est = _estimate(fn, fresh, xr).view(repeats, len(x))
            exact = fresh.elbo_exact(x)
        assert (exact < log_px).all(), "internal: the closed-form ELBO must lie below log p(x)"
        mean, se = est.mean(0), est.std(0) / math.sqrt(repeats)
        worst = ((mean - exact).abs() / (se + 1e-12)).max().item()
        assert worst < 5.0, (
            f"the mean of your estimates is {worst:.1f} standard errors from the exact ELBO "
            f"(yours {mean.tolist()[0]:.3f}, exact {exact.tolist()[0]:.3f} for the first example). "
            "Draw z = mu + exp(log_var / 2) * eps, and use log N(z; mu, diag exp(log_var)) for log q(z|x)."
        )

        # 3. The gradient flows through z.
        params = [fresh.enc_A, fresh.enc_c, fresh.enc_log_var]
        grads = torch.autograd.grad(_estimate(fn, fresh, xr).mean(), params, allow_unused=True)
        want = torch.autograd.grad(fresh.elbo_exact(x).mean(), params)
        for name, g, w in zip(("enc_A", "enc_c", "enc_log_var"), grads, want):
            assert g is not None, (
                f"your estimate does not depend on the encoder's {name}: build z from the encoder's outputs, "
                "z = mu + exp(log_var / 2) * eps, so that gradients reach the encoder"
            )
            gap = (g - w).abs().max().item()
            assert gap < 0.05 * (1.0 + w.abs().max().item()), (
                f"the gradient with respect to the encoder's {name} is off by {gap:.3f} from the exact ELBO's: "
                "the sample must be z = mu + exp(log_var / 2) * eps with eps ~ N(0, I), not a detached draw "
                "(no .sample(), no .detach()), so that the gradient flows through z"
            )
