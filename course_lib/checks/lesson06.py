"""Known-answer checks for lesson 6 (latent variables in practice).

``check_iwae_bound(fn)`` grades the importance-weighted bound, ``fn(model, x, k)`` ->
log (1/K) sum_k p(x, z_k) / q(z_k | x) per example, on probabilistic PCA
(:class:`course_lib.models.vae_image.LinearGaussian`), whose log p(x) is exact.
``check_vector_quantiser(fn)`` grades a VQ-VAE quantiser with the straight-through gradient,
``fn(z_e, codebook)`` -> (z_q, indices), against brute-force nearest codes.
``tests/test_latent_practice.py`` runs both on the library's own ``vae_image.iwae_bound`` and
``vqvae.quantise`` + ``vqvae.straight_through``.
"""

from __future__ import annotations

import math

import torch

from ..models.vae_image import LinearGaussian

__all__ = ["check_iwae_bound", "check_vector_quantiser"]


def _bound(fn, model, x, k):
    out = fn(model, x, k)
    assert isinstance(out, torch.Tensor), f"the bound must be a tensor, got {type(out).__name__}"
    assert out.shape == (len(x),), (
        f"the bound must have one value per example, shape ({len(x)},), got {tuple(out.shape)}: "
        "take the log-mean-exp over the K samples (dimension 0), not over the batch"
    )
    assert torch.isfinite(out).all(), "the bound is not finite: use torch.logsumexp, not log(mean(exp(...)))"
    return out


def check_iwae_bound(fn) -> None:
    """``fn(model, x, k)`` must be log (1/K) sum_k w_k, w_k = p(x|z_k) p(z_k) / q(z_k|x), z_k ~ q reparameterised.

    On a linear-Gaussian model (float64): 1. at the exact posterior every estimate equals log p(x),
    for any K; 2. with a wrong encoder, the mean over draws at K = 1 is the closed-form ELBO, and
    the bound rises with K towards log p(x); 3. it stays finite for weights far beyond exp(700);
    4. gradients reach the encoder through the samples.
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = LinearGaussian(data_dim=5, latent_dim=3, sigma=0.5, seed=0)
        x = model.sample(6, generator=torch.Generator().manual_seed(1))
        log_px = model.log_prob(x)

        exact = LinearGaussian(data_dim=5, latent_dim=3, sigma=0.5, seed=0).set_exact_posterior()
        with torch.no_grad():
            for k in (1, 7):
                err = (_bound(fn, exact, x, k) - log_px).abs().max().item()
                assert err < 1e-8, (
                    f"with q equal to the posterior every weight is p(x), so the bound is log p(x) for any K; yours "
                    f"is off by {err:.3g} at K = {k}. Compute log w = log p(x|z) + log p(z) - log q(z|x) and "
                    "return logsumexp(log w, dim=0) - log K"
                )

        with torch.no_grad():
            model.enc_log_var.fill_(math.log(0.3))
            repeats = 3000
            xr = x.repeat(repeats, 1)
            one = _bound(fn, model, xr, 1).view(repeats, len(x))
            elbo = model.elbo_exact(x)
            se = one.std(0) / math.sqrt(repeats)
            worst = ((one.mean(0) - elbo).abs() / se).max().item()
            assert worst < 5, (
                f"at K = 1 the bound is the ELBO in expectation, but your mean is {worst:.1f} standard errors "
                "from it: draw z = mu + exp(log_var / 2) * eps, and subtract log K (log 1 = 0 here)"
            )
            means = []
            for k in (1, 4, 32):
                means.append(_bound(fn, model, x.repeat(400, 1), k).view(400, len(x)).mean().item())
            assert means[0] < means[1] < means[2] < log_px.mean().item() + 0.01, (
                f"the bound should rise with K and stay below log p(x) = {log_px.mean().item():.3f}: "
                f"means at K = 1, 4, 32: {[round(m, 3) for m in means]}. Did you divide by K (subtract log K)?"
            )
            assert log_px.mean().item() - means[2] < 0.5 * (log_px.mean().item() - means[0]), (
                "at K = 32 the bound should have closed most of the gap to log p(x): average the weights "
                "inside the logarithm (logsumexp over the K samples), not the log-weights"
            )

            class Far(LinearGaussian):  # log-weights near +1000: a naive exp overflows
                def log_px_given_z(self, xx, z):
                    return super().log_px_given_z(xx, z) + 1000.0

            far = Far(data_dim=5, latent_dim=3, sigma=0.5, seed=0).set_exact_posterior()
            err = (_bound(fn, far, x, 5) - (log_px + 1000.0)).abs().max().item()
            assert err < 1e-6, f"with log-weights near 1000 the bound must still be exact; off by {err:.3g} (use torch.logsumexp)"

        params = [model.enc_A, model.enc_c, model.enc_log_var]
        grads = torch.autograd.grad(_bound(fn, model, x, 3).sum(), params, allow_unused=True)
        for name, g in zip(("enc_A", "enc_c", "enc_log_var"), grads):
            assert g is not None and g.abs().sum() > 0, (
                f"no gradient reaches the encoder's {name}: build z = mu + exp(log_var / 2) * eps from the encoder's "
                "outputs, without .detach() or torch.no_grad()"
            )


def check_vector_quantiser(fn) -> None:
    """``fn(z_e, codebook)`` must return (z_q, indices): the nearest code to every vector (squared
    Euclidean distance), with the straight-through gradient (d z_q / d z_e = identity, and no
    gradient to the codebook through z_q)."""
    gen = torch.Generator().manual_seed(0)
    codebook = torch.randn(12, 3, generator=gen, dtype=torch.float64)
    z_e = torch.randn(4, 5, 3, generator=gen, dtype=torch.float64).requires_grad_(True)
    book = codebook.clone().requires_grad_(True)
    out = fn(z_e, book)
    assert isinstance(out, tuple) and len(out) == 2, "return a pair (z_q, indices)"
    z_q, indices = out
    assert z_q.shape == z_e.shape, f"z_q must have z_e's shape {tuple(z_e.shape)}, got {tuple(z_q.shape)}"
    assert indices.shape == z_e.shape[:-1], (
        f"indices must have one code per vector, shape {tuple(z_e.shape[:-1])}, got {tuple(indices.shape)}"
    )
    assert not indices.is_floating_point(), "indices must be integers (use argmin)"
    want = torch.cdist(z_e.detach().reshape(-1, 3), codebook).argmin(1).reshape(4, 5)
    assert torch.equal(indices.long(), want), (
        "some indices are not the nearest code: compare every vector with every code by squared distance and "
        "take the argmin over the codes (not over the vectors)"
    )
    torch.testing.assert_close(z_q.detach(), codebook[want], msg="z_q's value must be the nearest code itself")
    weights = torch.randn(z_e.shape, generator=gen, dtype=torch.float64)
    g_ze, g_book = torch.autograd.grad((z_q * weights).sum(), [z_e, book], allow_unused=True)
    assert g_ze is not None, (
        "no gradient reaches z_e: return z_q = z_e + (code - z_e).detach(), so that the gradient passes straight through"
    )
    torch.testing.assert_close(g_ze, weights, msg="the straight-through gradient of z_q with respect to z_e must be the identity")
    assert g_book is None or g_book.abs().max() == 0, (
        "the codebook gets a gradient through z_q: in the straight-through output the code must be detached; the "
        "codebook is trained by its own loss"
    )
