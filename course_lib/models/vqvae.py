"""VQ-VAE: a discrete codebook between encoder and decoder (van den Oord et al., 2017), lesson 6.

The encoder maps an image to a grid of vectors z_e (one per position); each is replaced by the
nearest of K codebook vectors e_1..e_K, z_q; the decoder reconstructs the image from z_q. The
nearest-neighbour step has no useful gradient, so the *straight-through* estimator copies the
decoder's gradient at z_q onto z_e:

    z_q_st = z_e + (z_q - z_e).detach()      # forward: z_q; backward: d/dz_e = identity

and two squared distances train the codebook and keep the encoder near it:

    codebook loss    || sg[z_e] - z_q ||^2     (moves the codes to the encoder's outputs)
    commitment loss  || z_e - sg[z_q] ||^2     (times beta: keeps z_e near its code)

Generation needs a prior over the code grid; :class:`VQVAE` carries the simplest one, an
independent categorical distribution at every position, fitted by counting. Lesson 15 puts an
autoregressive prior there instead.

The functions a lesson shows (``quantise``, ``straight_through``, ``vq_losses``, ``perplexity``)
are the math only; argument checks live in helpers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GenerativeModel, check_n
from .vae_image import bernoulli_log_likelihood


# ----------------------------------------------------------------------------- the quantiser's math


def quantise(z_e: Tensor, codebook: Tensor) -> tuple[Tensor, Tensor]:
    """Nearest code for every vector: z_e (..., d), codebook (K, d) -> z_q (..., d), indices (...)."""
    flat = z_e.reshape(-1, z_e.shape[-1])
    distances = (flat**2).sum(1, keepdim=True) - 2 * flat @ codebook.T + (codebook**2).sum(1)  # (n, K)
    indices = distances.argmin(1)
    return codebook[indices].reshape(z_e.shape), indices.reshape(z_e.shape[:-1])


def straight_through(z_e: Tensor, z_q: Tensor) -> Tensor:
    """Forward: the value of z_q. Backward: the gradient passes to z_e unchanged (identity Jacobian)."""
    return z_e + (z_q - z_e).detach()


def vq_losses(z_e: Tensor, z_q: Tensor) -> tuple[Tensor, Tensor]:
    """(codebook loss, commitment loss): mean over vectors of ||sg[z_e] - z_q||^2 and ||z_e - sg[z_q]||^2."""
    codebook_loss = ((z_e.detach() - z_q) ** 2).sum(-1).mean()
    commitment_loss = ((z_e - z_q.detach()) ** 2).sum(-1).mean()
    return codebook_loss, commitment_loss


def perplexity(indices: Tensor, num_codes: int) -> float:
    """exp(entropy of the codes' usage): K when all K codes are used equally, 1 when only one is."""
    p = torch.bincount(indices.reshape(-1), minlength=num_codes).cpu().double()
    p = p / p.sum()
    return math.exp(-(p[p > 0] * p[p > 0].log()).sum().item())


def dead_codes(indices: Tensor, num_codes: int) -> int:
    """How many of the codebook's vectors are never the nearest one for these indices."""
    return int((torch.bincount(indices.reshape(-1), minlength=num_codes) == 0).sum())


# ----------------------------------------------------------------------------- the model


class VQVAE(GenerativeModel):
    """A small convolutional VQ-VAE for binarised 28x28 images, with a Bernoulli decoder.

    Encoder: two stride-2 4x4 convolutions (28 -> 14 -> 7) and a 1x1 convolution to ``code_dim``
    channels: a 7x7 grid of vectors. Codebook: ``num_codes`` vectors. Decoder: the mirror image,
    ending in one logit per pixel. ``loss(x)`` = -log p(x | z_q) (nats per image) + codebook
    loss + ``beta`` * commitment loss, the last two scaled by the 49 positions so that they
    weigh per image as the reconstruction does.
    """

    paradigm = "latent-variable"
    loss_unit = "nats + VQ terms"

    def __init__(self, num_codes: int = 64, code_dim: int = 16, channels: int = 32, beta: float = 0.25,
                 image_size: int = 28):
        super().__init__()
        if image_size % 4:
            raise ValueError(f"VQVAE needs an image side divisible by 4, got {image_size}")
        if num_codes < 2 or code_dim < 1:
            raise ValueError(f"num_codes must be >= 2 and code_dim >= 1, got {num_codes} and {code_dim}")
        self.num_codes, self.code_dim, self.beta, self.image_size = num_codes, code_dim, float(beta), image_size
        self.grid = image_size // 4
        self.encoder = nn.Sequential(
            nn.Conv2d(1, channels, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(channels, channels, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(channels, code_dim, 1),
        )
        self.codebook = nn.Parameter(torch.empty(num_codes, code_dim).uniform_(-1 / num_codes, 1 / num_codes))
        self.decoder = nn.Sequential(
            nn.Conv2d(code_dim, channels, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(channels, channels, 4, stride=2, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(channels, 1, 4, stride=2, padding=1),
        )
        # the prior over codes: independent categorical logits per position (uniform until fit_prior)
        self.register_buffer("prior_logits", torch.zeros(self.grid * self.grid, num_codes))

    @property
    def sampling_network(self) -> nn.Module:
        return self.decoder

    def _check(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            raise TypeError(f"VQVAE expects a torch.Tensor, got {type(x).__name__}")
        s = self.image_size
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, s, s):
            raise ValueError(f"VQVAE expects binary images of shape (B, 1, {s}, {s}), got {tuple(x.shape)}")
        if not torch.equal(x, x.bool().to(x.dtype)):
            raise ValueError("VQVAE models binary pixels (0 or 1): binarise first, e.g. (x > 127).long()")
        return x.float()

    # -- the three steps
    def encode(self, x: Tensor) -> Tensor:
        """z_e: (B, grid, grid, code_dim), the encoder's continuous vectors."""
        return self.encoder(self._check(x)).permute(0, 2, 3, 1)

    def codes(self, x: Tensor) -> Tensor:
        """The code index at every position, (B, grid, grid), int64."""
        return quantise(self.encode(x), self.codebook)[1]

    def decode_logits(self, z_q: Tensor) -> Tensor:
        """One Bernoulli logit per pixel, (B, 1, H, W), from quantised vectors (B, grid, grid, code_dim)."""
        return self.decoder(z_q.permute(0, 3, 1, 2))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Everything one training step needs: reconstruction NLL per image, the two VQ losses, the indices."""
        z_e = self.encode(x)
        z_q, indices = quantise(z_e, self.codebook)
        codebook_loss, commitment_loss = vq_losses(z_e, z_q)
        logits = self.decode_logits(straight_through(z_e, z_q))
        nll = -bernoulli_log_likelihood(logits.flatten(1), x.flatten(1).float())
        return {"nll": nll, "codebook": codebook_loss, "commitment": commitment_loss, "indices": indices}

    def loss(self, x: Tensor) -> Tensor:
        """Batch mean of -log p(x | z_q) + sum over positions of (codebook + beta * commitment loss)."""
        out = self(x)
        positions = self.grid * self.grid
        return out["nll"].mean() + positions * (out["codebook"] + self.beta * out["commitment"])

    # -- the prior over codes, and generation
    @torch.no_grad()
    def fit_prior(self, codes: Tensor, smoothing: float = 0.5) -> "VQVAE":
        """Fit the independent categorical prior: code counts at each position, plus ``smoothing``."""
        flat = codes.reshape(len(codes), -1)
        if flat.shape[1] != self.grid * self.grid:
            raise ValueError(f"codes must be (N, {self.grid}, {self.grid}), got {tuple(codes.shape)}")
        counts = torch.stack([torch.bincount(flat[:, i], minlength=self.num_codes) for i in range(flat.shape[1])])
        self.prior_logits.copy_((counts.cpu().double() + smoothing).log().float())
        return self

    def prior_log_prob(self, codes: Tensor) -> Tensor:
        """log p(codes) under the independent prior, summed over positions: (N, grid, grid) -> (N,)."""
        log_p = F.log_softmax(self.prior_logits, -1)  # (positions, K)
        flat = codes.reshape(len(codes), -1)
        return log_p.gather(1, flat.T).sum(0)

    @torch.no_grad()
    def elbo(self, x: Tensor) -> Tensor:
        """A lower bound on log p(x), nats per image: log p(x | z_q(x)) + log p_prior(codes(x)).

        It is the ELBO with q(codes | x) putting all its mass on the nearest codes (its entropy is 0,
        so the KL to the prior is -log p_prior(codes)).
        """
        out = self(x)
        return -out["nll"] + self.prior_log_prob(out["indices"])

    @torch.inference_mode()
    def decode_mean(self, codes: Tensor) -> Tensor:
        """Pixel probabilities (N, 1, H, W) for a grid of code indices (N, grid, grid)."""
        return self.decode_logits(self.codebook[codes]).sigmoid()

    @torch.inference_mode()
    def sample_codes(self, n: int) -> Tensor:
        """n code grids drawn from the prior, (n, grid, grid)."""
        check_n(n, type(self).__name__)
        draws = torch.distributions.Categorical(logits=self.prior_logits).sample((n,))  # (n, positions)
        return draws.reshape(n, self.grid, self.grid)

    @torch.inference_mode()
    def sample(self, n: int) -> Tensor:
        """Codes from the prior, one decoder pass, then every pixel drawn: (n, 1, H, W) binary, int64."""
        return torch.bernoulli(self.decode_mean(self.sample_codes(n))).long()
