"""Latent-variable models: the variational autoencoder (VAE).

Generation: z ~ N(0, I), then x ~ p(x | z) = N(mu_dec(z), diag sigma_dec(z)^2).
Training maximises the evidence lower bound (ELBO), which Jensen's inequality puts below
the log-likelihood:

    log p(x) >= E_{q(z|x)}[log p(x | z)] - KL(q(z | x) || p(z)).

The encoder q(z | x) = N(mu_enc(x), diag sigma_enc(x)^2) makes the KL term exact and the
first term a one-sample Monte-Carlo estimate with the reparameterisation z = mu + sigma * eps.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .base import GenerativeModel, check_n, check_points, mlp

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log N(x; mean, diag exp(log_std)^2), summed over the last dimension."""
    return (-0.5 * ((x - mean) / log_std.exp()) ** 2 - log_std - 0.5 * LOG_2PI).sum(-1)


class VAE(GenerativeModel):
    paradigm = "latent-variable"
    loss_unit = "nats"

    def __init__(self, data_dim: int = 2, latent_dim: int = 2, hidden: int = 128, min_log_std: float = -4.0):
        super().__init__()
        self.data_dim, self.latent_dim, self.min_log_std = data_dim, latent_dim, min_log_std
        self.encoder = mlp([data_dim, hidden, hidden, 2 * latent_dim])
        self.decoder = mlp([latent_dim, hidden, hidden, 2 * data_dim])

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.encoder(x).chunk(2, dim=-1)
        return mean, log_std

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_std = self.decoder(z).chunk(2, dim=-1)
        return mean, log_std.clamp(min=self.min_log_std)

    def elbo(self, x: Tensor) -> Tensor:
        """One-sample estimate of the ELBO per point, shape (N,): a lower bound on log p(x)."""
        check_points(x, self.data_dim, type(self).__name__)
        mu, log_sigma = self.encode(x)
        z = mu + log_sigma.exp() * torch.randn_like(mu)  # reparameterisation
        recon = gaussian_log_prob(x, *self.decode(z))
        kl = 0.5 * (mu**2 + (2 * log_sigma).exp() - 1 - 2 * log_sigma).sum(-1)
        return recon - kl

    def log_prob_iw(self, x: Tensor, k: int = 64) -> Tensor:
        """Importance-weighted bound with k samples (IWAE): below log p(x), tighter as k grows."""
        check_points(x, self.data_dim, type(self).__name__)
        mu, log_sigma = self.encode(x)
        z = mu + log_sigma.exp() * torch.randn(k, *mu.shape, device=mu.device)  # (k, N, latent)
        log_q = gaussian_log_prob(z, mu, log_sigma)
        log_prior = gaussian_log_prob(z, torch.zeros_like(z), torch.zeros_like(z))
        log_lik = gaussian_log_prob(x, *self.decode(z))
        return torch.logsumexp(log_lik + log_prior - log_q, dim=0) - math.log(k)

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO, nats per point: an upper bound on the negative log-likelihood."""
        return -self.elbo(x).mean()

    @property
    def sampling_network(self) -> nn.Module:
        return self.decoder

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """z ~ N(0, I), one decoder pass, then x ~ N(mean, std^2)."""
        check_n(n, type(self).__name__)
        z = torch.randn(n, self.latent_dim, device=self.device)
        mean, log_std = self.decode(z)
        return mean + log_std.exp() * torch.randn_like(mean)
