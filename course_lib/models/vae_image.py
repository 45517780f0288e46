"""Variational autoencoders on images, and the pieces of the ELBO they are built from (lesson 5).

A VAE's generative model is z ~ p(z) = N(0, I), then x ~ p(x | z). Its encoder
q(z | x) = N(mu(x), diag exp(log_var(x))) approximates the posterior. Everything here works on
any object with the three methods below (the image VAE, and the linear-Gaussian model that the
tests and the lesson's checks use because its log p(x) is exact):

    encode(x)             -> (mu, log_var), each (B, d_z)
    log_px_given_z(x, z)  -> log p(x | z) summed over pixels; z of shape (..., B, d_z) gives (..., B)
    latent_dim            d_z

The functions a lesson shows (``gaussian_kl``, ``elbo``, ``elbo_mc``, ``elbo_stl``, ``iwae_bound`` and the
decoders' log-likelihoods) are the math and nothing else; argument checks live in helpers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GenerativeModel, check_n

LOG_2PI = math.log(2 * math.pi)
LIKELIHOODS = ("categorical", "bernoulli")


# ----------------------------------------------------------------------------- the ELBO's pieces


def gaussian_kl(mu: Tensor, log_var: Tensor) -> Tensor:
    """KL( N(mu, diag exp(log_var)) || N(0, I) ) in closed form, summed over the last dimension."""
    return 0.5 * (mu**2 + log_var.exp() - 1.0 - log_var).sum(-1)


def log_normal(z: Tensor, mu: Tensor, log_var: Tensor) -> Tensor:
    """log N(z; mu, diag exp(log_var)), summed over the last dimension."""
    return -0.5 * (LOG_2PI + log_var + (z - mu) ** 2 / log_var.exp()).sum(-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I), summed over the last dimension."""
    return -0.5 * (LOG_2PI + z**2).sum(-1)


def reparameterise(mu: Tensor, log_var: Tensor, samples: int | None = None) -> Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a draw from q that is differentiable in mu and log_var.

    With ``samples`` = K, K independent draws stacked in a new first dimension, (K, B, d_z).
    """
    shape = mu.shape if samples is None else (samples, *mu.shape)
    eps = torch.randn(shape, device=mu.device, dtype=mu.dtype)
    return mu + (0.5 * log_var).exp() * eps


def elbo(model, x: Tensor) -> Tensor:
    """One-sample ELBO per example, (B,): E_q[log p(x|z)] estimated at one z, minus the exact KL."""
    mu, log_var = model.encode(x)
    z = reparameterise(mu, log_var)
    return model.log_px_given_z(x, z) - gaussian_kl(mu, log_var)


def elbo_mc(model, x: Tensor) -> Tensor:
    """One-sample ELBO per example, (B,), with the KL estimated too: log p(x, z) - log q(z|x) at one z."""
    mu, log_var = model.encode(x)
    z = reparameterise(mu, log_var)
    return model.log_px_given_z(x, z) + log_standard_normal(z) - log_normal(z, mu, log_var)


def elbo_stl(model, x: Tensor) -> Tensor:
    """:func:`elbo_mc` with q's parameters detached inside log q ("sticking the landing").

    The same value, and the same expectation of the gradient; but the score term
    -grad_phi log q(z | x) at fixed z, which has mean zero, is dropped from the gradient, so at
    the true posterior every single-draw gradient is exactly zero (Roeder et al., 2017).
    """
    mu, log_var = model.encode(x)
    z = reparameterise(mu, log_var)
    return model.log_px_given_z(x, z) + log_standard_normal(z) - log_normal(z, mu.detach(), log_var.detach())


def iwae_bound(model, x: Tensor, k: int) -> Tensor:
    """Importance-weighted bound per example, (B,): log (1/K) sum_k p(x, z_k) / q(z_k | x), z_k ~ q."""
    mu, log_var = model.encode(x)
    z = reparameterise(mu, log_var, samples=k)  # (K, B, d_z)
    log_w = model.log_px_given_z(x, z) + log_standard_normal(z) - log_normal(z, mu, log_var)  # (K, B)
    return torch.logsumexp(log_w, dim=0) - math.log(k)


@torch.no_grad()
def iwae_bound_batched(model, x: Tensor, k: int, chunk: int = 100, batch_size: int = 64) -> Tensor:
    """:func:`iwae_bound` for large K without running out of memory: the K samples in chunks.

    The result is the same estimator (log-mean-exp over all K weights), computed by a running
    log-sum-exp over chunks of ``chunk`` samples and batches of ``batch_size`` images.
    """
    _check_k(k)
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size]
        mu, log_var = model.encode(xb)
        parts = []
        for start in range(0, k, chunk):
            kk = min(chunk, k - start)
            z = reparameterise(mu, log_var, samples=kk)
            parts.append(torch.logsumexp(model.log_px_given_z(xb, z) + log_standard_normal(z) - log_normal(z, mu, log_var), 0))
        out.append(torch.logsumexp(torch.stack(parts), 0) - math.log(k))
    return torch.cat(out)


def beta_vae_loss(model, x: Tensor, beta: float = 1.0, free_bits: float = 0.0) -> Tensor:
    """Batch mean of distortion + beta * rate, nats per image; each coordinate's rate floored at free_bits.

    Distortion -log p(x|z) at one reparameterised z; rate = KL(q(z|x) || p(z)) per coordinate,
    averaged over the batch, then :func:`free_bits_rate`. beta = 1, free_bits = 0: the -ELBO.
    """
    mu, log_var = model.encode(x)
    z = reparameterise(mu, log_var)
    distortion = -model.log_px_given_z(x, z).mean()
    kl_per_coordinate = (0.5 * (mu**2 + log_var.exp() - 1.0 - log_var)).mean(0)  # (d_z,)
    return distortion + beta * free_bits_rate(kl_per_coordinate, free_bits)


def free_bits_rate(kl_per_coordinate: Tensor, free_bits: float) -> Tensor:
    """sum_j max(free_bits, KL_j): a coordinate's first free_bits nats cost nothing (and get no gradient)."""
    return kl_per_coordinate.clamp(min=free_bits).sum(-1)


def kl_annealing_weight(step: int, warmup: int) -> float:
    """KL annealing: the rate's weight rises linearly from 0 at step 0 to 1 at step ``warmup``, then stays 1."""
    if warmup < 0:
        raise ValueError(f"warmup must be a non-negative number of steps, got {warmup}")
    return 1.0 if warmup == 0 else min(1.0, step / warmup)


def activity(mu: Tensor) -> Tensor:
    """Burda et al.'s activity of each latent coordinate: Cov_x(E_q[z_j | x]), the variance over the
    images of the encoder's mean, (N, d_z) -> (d_z,)."""
    return mu.var(0, correction=0)


def active_units(mu: Tensor, threshold: float = 0.01) -> int:
    """How many coordinates have an activity above ``threshold`` (0.01 in Burda et al., 2016)."""
    return int((activity(mu) > threshold).sum())


def _check_objective(beta, free_bits, k) -> None:
    if not (isinstance(beta, (int, float)) and beta >= 0 and math.isfinite(beta)):
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    if not (isinstance(free_bits, (int, float)) and free_bits >= 0):
        raise ValueError(f"free_bits must be a number of nats >= 0, got {free_bits!r}")
    _check_k(k)
    if k > 1 and (beta != 1.0 or free_bits > 0):
        raise ValueError("the importance-weighted objective (k > 1) has no beta or free bits: use one or the other")


def _check_k(k) -> None:
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"the number of importance samples K must be a positive int, got {k!r}")


# ----------------------------------------------------------------------------- decoders' likelihoods


def categorical_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | z) for integer pixels: logits (..., D, L) over L levels, x (B, D) in 0..L-1 -> (..., B)."""
    log_p = F.log_softmax(logits, dim=-1)
    index = x.expand(*logits.shape[:-1]).unsqueeze(-1)
    return log_p.gather(-1, index).squeeze(-1).sum(-1)


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | z) for binary pixels: logits (..., D), x (B, D) in {0, 1} -> (..., B)."""
    return -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none").sum(-1)


# ----------------------------------------------------------------------------- the image VAE


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear layers with SiLU between them, and dropout after each hidden activation when dropout > 0."""
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.SiLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class ImageVAE(GenerativeModel):
    """An MLP VAE on small one-channel images, with a discrete decoder.

    ``likelihood="categorical"``: integer pixels 0..levels-1, one softmax over the levels per
    pixel (the sklearn digits: levels=17), so -ELBO is an upper bound on a discrete NLL in nats
    per image. ``likelihood="bernoulli"``: binary pixels (binarised MNIST), levels=2.
    Images go in as (B, 1, H, W) or (B, D); the encoder sees them scaled to [0, 1].
    """

    paradigm = "latent-variable"
    loss_unit = "nats"

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        levels: int = 17,
        latent_dim: int = 16,
        hidden: tuple[int, ...] = (512, 256),
        likelihood: str = "categorical",
        dropout: float = 0.0,
    ):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"unknown likelihood {likelihood!r}: use one of {', '.join(LIKELIHOODS)}")
        if likelihood == "bernoulli" and levels != 2:
            raise ValueError(f"a Bernoulli decoder models binary pixels: levels must be 2, got {levels}")
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(f"latent_dim must be a positive int, got {latent_dim!r}")
        self.image_shape = tuple(image_shape)
        self.data_dim = math.prod(self.image_shape)
        self.levels, self.latent_dim, self.likelihood = levels, latent_dim, likelihood
        out = self.data_dim * levels if likelihood == "categorical" else self.data_dim
        self.encoder = _mlp([self.data_dim, *hidden, 2 * latent_dim], dropout)
        self.decoder = _mlp([latent_dim, *reversed(hidden), out], dropout)

    # -- shapes and checks
    def _flat(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"{type(self).__name__} expects a torch.Tensor, got {type(x).__name__}")
        if x.shape[1:] == self.image_shape:
            x = x.reshape(len(x), -1)
        if x.dim() != 2 or x.shape[1] != self.data_dim:
            raise ValueError(
                f"{type(self).__name__} expects images of shape (B, {', '.join(map(str, self.image_shape))}) "
                f"or (B, {self.data_dim}), got {tuple(x.shape)}"
            )
        if x.is_floating_point():
            if not torch.equal(x, x.round()):
                raise ValueError("pixels must be integer levels (a discrete decoder); binarise or quantise first")
            x = x.long()
        if int(x.min()) < 0 or int(x.max()) >= self.levels:
            raise ValueError(f"pixel values must lie in 0..{self.levels - 1}, got {int(x.min())}..{int(x.max())}")
        return x

    # -- the two networks
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x) = N(mu, diag exp(log_var)): the encoder's two outputs, each (B, d_z)."""
        x = self._flat(x)
        mu, log_var = self.encoder(x.float() / (self.levels - 1)).chunk(2, dim=-1)
        return mu, log_var

    def decoder_logits(self, z: Tensor) -> Tensor:
        """The decoder's logits: (..., D, levels) for a categorical decoder, (..., D) for a Bernoulli one."""
        logits = self.decoder(z)
        if self.likelihood == "categorical":
            logits = logits.unflatten(-1, (self.data_dim, self.levels))
        return logits

    def log_px_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) per image, summed over pixels; z (..., B, d_z) -> (..., B)."""
        x = self._flat(x)
        logits = self.decoder_logits(z)
        if self.likelihood == "categorical":
            return categorical_log_likelihood(logits, x)
        return bernoulli_log_likelihood(logits, x.float())

    # -- objectives and bounds
    def elbo(self, x: Tensor) -> Tensor:
        """One-sample ELBO per image (nats), (B,): a stochastic lower bound on log p(x)."""
        return elbo(self, x)

    # The training objective; the defaults give the ELBO. Lesson 6 changes them with set_objective.
    beta: float = 1.0  # weight of the rate (KL) term: a beta-VAE for beta != 1
    free_bits: float = 0.0  # nats per latent coordinate that cost nothing (free bits)
    train_k: int = 1  # importance samples in the training bound: an IWAE for K > 1

    def set_objective(self, beta: float = 1.0, free_bits: float = 0.0, k: int = 1) -> "ImageVAE":
        """Train on distortion + beta * rate (rate floored at ``free_bits`` nats per coordinate), or, for k > 1,
        on the importance-weighted bound with K = k. Defaults: the ELBO. Returns the model."""
        _check_objective(beta, free_bits, k)
        self.beta, self.free_bits, self.train_k = float(beta), float(free_bits), int(k)
        return self

    def loss(self, x: Tensor) -> Tensor:
        """Negative ELBO, nats per image (an upper bound on the NLL, in expectation); or the objective
        chosen with :meth:`set_objective` (beta-VAE, free bits, or the negative IWAE bound)."""
        if self.train_k > 1:
            return -iwae_bound(self, x, self.train_k).mean()
        if self.beta != 1.0 or self.free_bits > 0:
            return beta_vae_loss(self, x, self.beta, self.free_bits)
        return -elbo(self, x).mean()

    def iwae_bound(self, x: Tensor, k: int = 500, chunk: int = 100, batch_size: int = 64) -> Tensor:
        """Importance-weighted bound with K samples per image, (B,), no gradients."""
        return iwae_bound_batched(self, x, k, chunk=chunk, batch_size=batch_size)

    # -- sampling
    @property
    def sampling_network(self) -> nn.Module:
        return self.decoder

    def decode_mean(self, z: Tensor) -> Tensor:
        """The decoder's mean image E[x | z], shape (B, *image_shape), in pixel levels (a picture of p(x|z))."""
        logits = self.decoder_logits(z)
        if self.likelihood == "categorical":
            levels = torch.arange(self.levels, device=z.device, dtype=logits.dtype)
            mean = (logits.softmax(-1) * levels).sum(-1)
        else:
            mean = logits.sigmoid()
        return mean.reshape(*z.shape[:-1], *self.image_shape)

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """z ~ N(0, I), one decoder pass, then every pixel drawn from its distribution: (n, *image_shape), int64."""
        check_n(n, type(self).__name__)
        z = torch.randn(n, self.latent_dim, device=self.device)
        logits = self.decoder_logits(z)
        if self.likelihood == "categorical":
            x = torch.distributions.Categorical(logits=logits).sample()
        else:
            x = torch.bernoulli(logits.sigmoid()).long()
        return x.reshape(n, *self.image_shape)


# ----------------------------------------------------------------------------- a model with an exact log p(x)


class LinearGaussian(nn.Module):
    """Probabilistic PCA, x = W z + b + sigma * noise, z ~ N(0, I), with a diagonal-Gaussian encoder.

    Its log p(x) and posterior p(z | x) are exact, so every bound can be checked against them.
    The posterior is N(M^-1 W^T (x - b), sigma^2 M^-1) with M = W^T W + sigma^2 I. For a general
    W its covariance is not diagonal and no diagonal q can equal it; here W is chosen with
    orthogonal columns, so M is diagonal and the encoder can equal the posterior exactly:
    ``set_exact_posterior()``. ``encode`` is a linear map of x, with
    parameters ``enc_A``, ``enc_c`` and ``enc_log_var`` (shared by all x, as in the posterior).
    """

    def __init__(self, data_dim: int = 5, latent_dim: int = 3, sigma: float = 0.5, seed: int = 0,
                 dtype: torch.dtype = torch.float64):
        super().__init__()
        if latent_dim > data_dim:
            raise ValueError(f"latent_dim ({latent_dim}) must not exceed data_dim ({data_dim})")
        gen = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(data_dim, latent_dim, generator=gen, dtype=dtype))
        scales = torch.linspace(2.0, 0.7, latent_dim, dtype=dtype)
        self.register_buffer("W", q * scales)  # orthogonal columns of lengths `scales`
        self.register_buffer("b", 0.5 * torch.randn(data_dim, generator=gen, dtype=dtype))
        self.sigma = float(sigma)
        self.latent_dim, self.data_dim = latent_dim, data_dim
        self.enc_A = nn.Parameter(0.3 * torch.randn(latent_dim, data_dim, generator=gen, dtype=dtype))
        self.enc_c = nn.Parameter(torch.zeros(latent_dim, dtype=dtype))
        self.enc_log_var = nn.Parameter(torch.zeros(latent_dim, dtype=dtype))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.W.dtype)
        noise = torch.randn(n, self.data_dim, generator=generator, dtype=self.W.dtype)
        return z @ self.W.T + self.b + self.sigma * noise

    def log_prob(self, x: Tensor) -> Tensor:
        """The exact log p(x) = log N(x; b, W W^T + sigma^2 I)."""
        cov = self.W @ self.W.T + self.sigma**2 * torch.eye(self.data_dim, dtype=self.W.dtype)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov).log_prob(x)

    def posterior(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The exact p(z | x) = N(mean, diag var): mean (B, d_z), var (d_z,)."""
        wtw = (self.W**2).sum(0)  # W^T W is diagonal
        var = self.sigma**2 / (wtw + self.sigma**2)
        mean = (x - self.b) @ self.W * (1.0 / (wtw + self.sigma**2))
        return mean, var

    @torch.no_grad()
    def set_exact_posterior(self) -> "LinearGaussian":
        """Make q(z | x) equal p(z | x): the ELBO then equals log p(x)."""
        wtw = (self.W**2).sum(0)
        self.enc_A.copy_((self.W / (wtw + self.sigma**2)).T)
        self.enc_c.copy_(-(self.enc_A @ self.b))
        self.enc_log_var.copy_((self.sigma**2 / (wtw + self.sigma**2)).log())
        return self

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        mu = x @ self.enc_A.T + self.enc_c
        return mu, self.enc_log_var.expand_as(mu)

    def log_px_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        mean = z @ self.W.T + self.b
        return -0.5 * (LOG_2PI + 2 * math.log(self.sigma) + ((x - mean) / self.sigma) ** 2).sum(-1)

    def elbo_exact(self, x: Tensor) -> Tensor:
        """The ELBO in closed form (no sampling): E_q[log p(x|z)] - KL(q || p(z)), per example."""
        mu, log_var = self.encode(x)
        mean = mu @ self.W.T + self.b
        trace = (log_var.exp() * (self.W**2).sum(0)).sum(-1)  # E_q ||W (z - mu)||^2
        expected = -0.5 * (
            self.data_dim * (LOG_2PI + 2 * math.log(self.sigma)) + (((x - mean) ** 2).sum(-1) + trace) / self.sigma**2
        )
        return expected - gaussian_kl(mu, log_var)


class ConvImageVAE(ImageVAE):
    """:class:`ImageVAE` with small convolutional networks: for the 8x8 digits, where weight sharing generalises.

    Encoder: 3x3 convolution, a stride-2 3x3 convolution (H/2 x W/2), then an MLP to (mu, log_var).
    Decoder: an MLP to ``channels`` maps of H/2 x W/2, nearest upsampling, two 3x3 convolutions;
    the last gives the per-pixel logits (``levels`` channels for a categorical decoder, one for a
    Bernoulli one), so the same filters produce every pixel's distribution.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        levels: int = 17,
        latent_dim: int = 16,
        channels: int = 32,
        hidden: int = 256,
        likelihood: str = "categorical",
        dropout: float = 0.0,
    ):
        super().__init__(image_shape, levels, latent_dim, (hidden,), likelihood, dropout)
        c, h, w = self.image_shape
        if h % 2 or w % 2:
            raise ValueError(f"ConvImageVAE needs even image sides, got {h}x{w}")
        small = channels * (h // 2) * (w // 2)
        out = levels if likelihood == "categorical" else 1

        def drop() -> nn.Module:
            return nn.Dropout(dropout) if dropout > 0 else nn.Identity()

        self.encoder = nn.Sequential(
            nn.Unflatten(1, self.image_shape),
            nn.Conv2d(c, channels, 3, padding=1), nn.SiLU(), drop(),
            nn.Conv2d(channels, channels, 3, stride=2, padding=1), nn.SiLU(), drop(),
            nn.Flatten(), nn.Linear(small, hidden), nn.SiLU(), drop(),
            nn.Linear(hidden, 2 * latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.SiLU(), drop(),
            nn.Linear(hidden, small), nn.SiLU(),
            nn.Unflatten(-1, (channels, h // 2, w // 2)), nn.Upsample(scale_factor=2),
            nn.Conv2d(channels, channels, 3, padding=1), nn.SiLU(), drop(),
            nn.Conv2d(channels, out * c, 3, padding=1),
        )

    def decoder_logits(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        maps = self.decoder(z.reshape(-1, self.latent_dim))  # (n, levels * C, H, W)
        if self.likelihood == "categorical":
            maps = maps.unflatten(1, (self.image_shape[0], self.levels)).movedim(2, -1)  # (n, C, H, W, levels)
            return maps.reshape(*lead, self.data_dim, self.levels)
        return maps.reshape(*lead, self.data_dim)


# ----------------------------------------------------------------------------- lesson 6: a strong decoder, a label


class MaskedLinear(nn.Linear):
    """A linear layer whose weight is multiplied by a fixed 0/1 mask (out_features, in_features)."""

    def __init__(self, in_features: int, out_features: int, mask: Tensor):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask.float())

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight * self.mask, self.bias)


class ConditionalMADE(nn.Module):
    """Logits of every conditional p(x_d | x_<d, z), shape (..., D, levels), in one pass (MADE).

    Masks (Germain et al., 2015): pixel d has degree d (raster order, 1..D), hidden unit k a degree
    m_k in 1..D-1; a unit sees an input or unit of degree at most its own, and the logits of
    pixel d see only units of degree below d. The latent z reaches every hidden layer and the
    logits unmasked (so the first pixel, which sees no other pixel, still sees z).
    """

    def __init__(self, data_dim: int, levels: int, latent_dim: int, hidden: tuple[int, ...] = (512, 512)):
        super().__init__()
        self.data_dim, self.levels = data_dim, levels
        d_in = torch.arange(1, data_dim + 1)
        degrees = [d_in] + [torch.arange(h) % max(data_dim - 1, 1) + 1 for h in hidden]
        self.hidden = nn.ModuleList(
            MaskedLinear(len(a), len(b), b[:, None] >= a[None, :]) for a, b in zip(degrees, degrees[1:])
        )
        self.condition = nn.ModuleList(nn.Linear(latent_dim, h) for h in hidden)
        d_out = d_in.repeat_interleave(levels)  # the levels logits of pixel d all have degree d
        self.out = MaskedLinear(hidden[-1], data_dim * levels, d_out[:, None] > degrees[-1][None, :])
        self.condition_out = nn.Linear(latent_dim, data_dim * levels)  # so that the first pixel sees z too
        # a direct (masked linear) path from the earlier pixels to the logits: a linear autoregressive model
        self.direct = MaskedLinear(data_dim, data_dim * levels, d_out[:, None] > d_in[None, :])

    def forward(self, x_scaled: Tensor, z: Tensor) -> Tensor:
        h = x_scaled
        for layer, cond in zip(self.hidden, self.condition):
            h = F.silu(layer(h) + cond(z))
        return (self.out(h) + self.direct(x_scaled) + self.condition_out(z)).unflatten(-1, (self.data_dim, self.levels))


class ARDecoderVAE(ImageVAE):
    """A VAE whose decoder is autoregressive: p(x | z) = prod_d p(x_d | x_<d, z), a conditional MADE.

    The encoder is :class:`ImageVAE`'s MLP. Such a decoder can model the pixels' dependencies
    without z, which is what makes posterior collapse likely (lesson 6). Sampling draws the D
    pixels one after another (D decoder passes).
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        levels: int = 17,
        latent_dim: int = 16,
        hidden: tuple[int, ...] = (512, 256),
        decoder_hidden: tuple[int, ...] = (512, 512),
    ):
        super().__init__(image_shape, levels, latent_dim, hidden, "categorical", 0.0)
        self.decoder = ConditionalMADE(self.data_dim, levels, latent_dim, decoder_hidden)

    # True: ``loss`` trains the decoder alone, as a plain autoregressive model of x with z = 0
    # (the encoder is not used); a way to start a VAE from a decoder that already models the data.
    decoder_only: bool = False

    def loss(self, x: Tensor) -> Tensor:
        if self.decoder_only:
            x = self._flat(x)
            return -self.log_px_given_z(x, torch.zeros(len(x), self.latent_dim, device=x.device)).mean()
        return super().loss(x)

    def log_px_given_z(self, x: Tensor, z: Tensor) -> Tensor:
        """log p(x | z) = sum_d log p(x_d | x_<d, z) per image; z (..., B, d_z) -> (..., B)."""
        x = self._flat(x)
        x_scaled = (x.float() / (self.levels - 1)).expand(*z.shape[:-1], self.data_dim)
        return categorical_log_likelihood(self.decoder(x_scaled, z), x)

    def decoder_logits(self, z: Tensor) -> Tensor:
        raise NotImplementedError(
            "an autoregressive decoder has no logits from z alone: each pixel's distribution depends on the "
            "pixels before it; use log_px_given_z(x, z) or sample(n)"
        )

    def decode_mean(self, z: Tensor) -> Tensor:
        raise NotImplementedError("E[x | z] of an autoregressive decoder has no one-pass formula; draw samples instead")

    @torch.inference_mode()
    def sample(self, n: int, z: Tensor | None = None) -> Tensor:
        """z ~ N(0, I) (or the given z, (n, d_z)), then the pixels one at a time: (n, *image_shape), int64."""
        check_n(n, type(self).__name__)
        if z is None:
            z = torch.randn(n, self.latent_dim, device=self.device)
        x = torch.zeros(n, self.data_dim, dtype=torch.long, device=self.device)
        for d in range(self.data_dim):
            logits = self.decoder(x.float() / (self.levels - 1), z)[:, d]
            x[:, d] = torch.distributions.Categorical(logits=logits).sample()
        return x.reshape(n, *self.image_shape)


class ConditionalImageVAE(ImageVAE):
    """A conditional VAE: q(z | x, y) and p(x | z, y), the label y given one-hot to both MLPs.

    ``loss((x, y))`` is the negative conditional ELBO, a bound on -log p(x | y) in nats per image;
    ``sample(n, labels)`` draws images of the asked-for classes.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        levels: int = 17,
        latent_dim: int = 16,
        hidden: tuple[int, ...] = (512, 256),
        classes: int = 10,
        dropout: float = 0.0,
    ):
        super().__init__(image_shape, levels, latent_dim, hidden, "categorical", dropout)
        self.classes = classes
        self.encoder = _mlp([self.data_dim + classes, *hidden, 2 * latent_dim], dropout)
        self.decoder = _mlp([latent_dim + classes, *reversed(hidden), self.data_dim * levels], dropout)

    def _one_hot(self, y: Tensor) -> Tensor:
        if not isinstance(y, Tensor) or y.is_floating_point() or y.dim() != 1:
            raise TypeError("labels must be a 1-D integer tensor, one class index per image")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.classes):
            raise ValueError(f"labels must lie in 0..{self.classes - 1}, got {int(y.min())}..{int(y.max())}")
        return F.one_hot(y.long(), self.classes).float()

    def encode(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._flat(x)
        h = torch.cat([x.float() / (self.levels - 1), self._one_hot(y).to(x.device)], -1)
        mu, log_var = self.encoder(h).chunk(2, dim=-1)
        return mu, log_var

    def log_px_given_z(self, x: Tensor, z: Tensor, y: Tensor) -> Tensor:
        x = self._flat(x)
        y1 = self._one_hot(y).to(z.device).expand(*z.shape[:-1], self.classes)
        return categorical_log_likelihood(self.decoder_logits(torch.cat([z, y1], -1)), x)

    def elbo(self, x: Tensor, y: Tensor) -> Tensor:
        """One-sample conditional ELBO per image: E_q[log p(x | z, y)] - KL(q(z | x, y) || p(z))."""
        mu, log_var = self.encode(x, y)
        z = reparameterise(mu, log_var)
        return self.log_px_given_z(x, z, y) - gaussian_kl(mu, log_var)

    def loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError("a conditional VAE trains on (images, labels) pairs: pass train.fit(model, (x, y), ...)")
        x, y = batch
        return -self.elbo(x, y).mean()

    @torch.inference_mode()
    def sample(self, n: int, labels: Tensor | None = None) -> Tensor:
        """n images of the classes in ``labels`` (n of them; default: classes 0, 1, 2, ... in turn), int64."""
        check_n(n, type(self).__name__)
        if labels is None:
            labels = torch.arange(n) % self.classes
        if len(labels) != n:
            raise ValueError(f"labels must hold one class per sample: {n} wanted, got {len(labels)}")
        z = torch.randn(n, self.latent_dim, device=self.device)
        y1 = self._one_hot(labels).to(self.device)
        logits = self.decoder_logits(torch.cat([z, y1], -1))
        return torch.distributions.Categorical(logits=logits).sample().reshape(n, *self.image_shape)

    @torch.inference_mode()
    def decode_mean(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """E[x | z, y] in pixel levels, (n, *image_shape)."""
        if labels is None:
            raise ValueError("a conditional decoder needs the labels: decode_mean(z, labels)")
        logits = self.decoder_logits(torch.cat([z, self._one_hot(labels).to(z.device)], -1))
        levels = torch.arange(self.levels, device=z.device, dtype=logits.dtype)
        return (logits.softmax(-1) * levels).sum(-1).reshape(len(z), *self.image_shape)
