"""Normalizing flows: RealNVP (Dinh et al., 2017) with affine coupling layers.

A flow is an invertible map f from data x to a latent z with a simple density (here N(0, I)).
The change-of-variables formula gives the exact log-density of the data:

    log p(x) = log N(f(x); 0, I) + log |det df/dx|.

f is a stack of layers, each invertible with a cheap log-determinant, and the log-dets add.
Every layer here has ``forward(x) -> (y, logdet)`` and ``inverse(y) -> (x, logdet)``, where
``logdet`` is log |det| of the Jacobian of that direction, one value per example:

* ``AffineCoupling``: keep the coordinates where ``mask`` is 1, scale and shift the others by
  amounts computed from the kept ones: y = x_keep + (1 - mask) * (x * exp(s(x_keep)) + t(x_keep)).
  The Jacobian is triangular, so log |det| = sum of the log-scales s.
* ``ActNorm``: a per-coordinate affine map, set from the first batch so outputs start standardised.
* ``Permutation``: a fixed shuffle of the coordinates (log-det 0), so that the coordinates that
  condition and the coordinates that are transformed change from one coupling to the next.
* ``LogitTransform``: (0, 1) -> the box (logit alpha, logit(1 - alpha)), used as pre-processing of
  image data; its log-det counts.

``RealNVP`` stacks them into a model of points in R^dim. ``DigitsFlow`` wraps one around integer
images: it dequantises (uniform noise), applies the logit transform and reports, in nats per
image, an upper bound on the *discrete* negative log-likelihood, comparable with the exact NLL
of a discrete model (an autoregressive one, say). It has no exact ``log_prob`` of an integer
image, only ``log_prob_bound``.

The functions a lesson shows (``AffineCoupling.scale_shift/forward/inverse``, ``RealNVP.forward``,
``RealNVP.sample``, ``DigitsFlow.log_prob_bound``) are the math; their argument checks live in
the small decorators below.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
from torch import Tensor, nn

from .base import GenerativeModel, check_n, check_points

LOG_2PI = math.log(2 * math.pi)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI


def _zeros(x: Tensor) -> Tensor:
    return x.new_zeros(x.shape[0])


# ----------------------------------------------------------------------------- argument checks


def checks_points(method):
    """Decorator: ``method(self, x, ...)`` gets a float batch of shape (N, self.dim), or a clear error."""

    @functools.wraps(method)
    def wrapper(self, x, *args, **kwargs):
        check_points(x, self.dim, type(self).__name__)
        return method(self, x, *args, **kwargs)

    return wrapper


def checks_n(method):
    """Decorator: ``method(self, n, ...)`` gets a positive int ``n``, or a clear error."""

    @functools.wraps(method)
    def wrapper(self, n, *args, **kwargs):
        check_n(n, type(self).__name__)
        return method(self, n, *args, **kwargs)

    return wrapper


def checks_images(method):
    """Decorator: ``method(self, x, samples=1)`` gets integer images of ``self.shape`` in 0..levels-1."""

    @functools.wraps(method)
    def wrapper(self, x, samples=1, *args, **kwargs):
        self._check(x)
        if not isinstance(samples, int) or isinstance(samples, bool) or samples < 1:
            raise ValueError(f"samples must be a positive int, got {samples!r}")
        return method(self, x, samples, *args, **kwargs)

    return wrapper


# ----------------------------------------------------------------------------- layers


class AffineCoupling(nn.Module):
    """y = x_a + (1 - m) * (x * exp(s(x_a)) + t(x_a)), with x_a = m * x the kept coordinates.

    ``s`` is soft-clamped to (-scale_limit, scale_limit) by ``scale_limit * tanh(s / scale_limit)``
    so that no single layer can blow a coordinate up by more than exp(scale_limit). The last
    layer of the conditioner starts at zero: a new coupling is the identity.
    """

    def __init__(
        self, mask: Tensor, hidden: int = 128, depth: int = 2, scale_limit: float = 3.0, dropout: float = 0.0
    ):
        super().__init__()
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.dim() != 1 or not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError("mask must be a 1D tensor of zeros and ones")
        if mask.sum() == 0 or mask.sum() == len(mask):
            raise ValueError("mask must keep some coordinates and transform the others")
        if scale_limit <= 0:
            raise ValueError(f"scale_limit must be positive, got {scale_limit}")
        dim = len(mask)
        self.register_buffer("mask", mask)
        self.scale_limit = scale_limit
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(dim if i == 0 else hidden, hidden), nn.SiLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(hidden, 2 * dim))
        self.net = nn.Sequential(*layers)
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def scale_shift(self, x_kept: Tensor) -> tuple[Tensor, Tensor]:
        """The log-scale s and shift t, functions of the kept coordinates only."""
        s, t = self.net(x_kept).chunk(2, dim=-1)
        s = self.scale_limit * torch.tanh(s / self.scale_limit)  # soft clamp: |s| < scale_limit
        free = 1 - self.mask
        return s * free, t * free  # kept coordinates: scale 1 (log 0), shift 0

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_kept = x * self.mask
        s, t = self.scale_shift(x_kept)
        y = x_kept + (1 - self.mask) * x * s.exp() + t  # y_a = x_a, y_b = x_b exp(s) + t
        return y, s.sum(-1)  # log|det J| = sum of the log-scales

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        y_kept = y * self.mask  # the kept coordinates pass unchanged, so s and t can be recomputed
        s, t = self.scale_shift(y_kept)
        x = y_kept + (1 - self.mask) * (y - t) * (-s).exp()  # x_b = (y_b - t) exp(-s)
        return x, -s.sum(-1)


class ActNorm(nn.Module):
    """y = (x + loc) * exp(log_scale) per coordinate (Kingma & Dhariwal, 2018).

    On its first forward pass in training mode it sets loc and log_scale from the batch so that
    its outputs have mean 0 and variance 1; after that they are ordinary parameters.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def _init(self, x: Tensor) -> None:
        self.loc.copy_(-x.mean(0))
        self.log_scale.copy_(-(x.std(0) + 1e-6).log())
        self.initialized.fill_(True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.training and not bool(self.initialized) and len(x) > 1:
            self._init(x)
        y = (x + self.loc) * self.log_scale.exp()
        return y, self.log_scale.sum().expand(len(x))

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y * (-self.log_scale).exp() - self.loc, (-self.log_scale.sum()).expand(len(y))


class Permutation(nn.Module):
    """y = x[:, perm]: a fixed reordering of the coordinates; |det| = 1."""

    def __init__(self, perm: Tensor):
        super().__init__()
        perm = torch.as_tensor(perm, dtype=torch.long)
        if not torch.equal(perm.sort().values, torch.arange(len(perm))):
            raise ValueError("perm must be a permutation of 0..dim-1")
        self.register_buffer("perm", perm)
        self.register_buffer("inv", perm.argsort())

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], _zeros(x)

    def inverse(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y[:, self.inv], _zeros(y)


class LogitTransform(nn.Module):
    """(0, 1)^D -> the box (logit alpha, logit(1 - alpha))^D: s = logit(alpha + (1 - 2 alpha) y).

    Squeezing by alpha keeps y = 0 and y = 1 away from logit's infinities, so the image is a box,
    not all of R^D: the mass a flow on s puts outside the box belongs to no y in (0, 1)^D and is
    lost (the probabilities of the discrete images then sum to less than 1). Pixel values near
    the ends of their range (very common in digit images) go to the faces of the box, where an
    affine flow can place sharp peaks of mass cheaply.
    """

    def __init__(self, alpha: float = 0.05):
        super().__init__()
        if not 0.0 < alpha < 0.5:
            raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
        self.alpha = alpha

    def forward(self, y: Tensor) -> tuple[Tensor, Tensor]:
        p = self.alpha + (1 - 2 * self.alpha) * y
        s = p.log() - (-p).log1p()
        logdet = (math.log(1 - 2 * self.alpha) - p.log() - (-p).log1p()).sum(-1)
        return s, logdet

    def inverse(self, s: Tensor) -> tuple[Tensor, Tensor]:
        p = torch.sigmoid(s)
        y = (p - self.alpha) / (1 - 2 * self.alpha)
        logdet = (p.log() + (-p).log1p() - math.log(1 - 2 * self.alpha)).sum(-1)
        return y, logdet

    @property
    def bounds(self) -> tuple[float, float]:
        """The box the logit maps (0, 1) onto, per coordinate: (logit alpha, logit(1 - alpha))."""
        edge = math.log(self.alpha) - math.log1p(-self.alpha)
        return edge, -edge


def half_masks(dim: int, n: int) -> list[Tensor]:
    """n masks alternating between 'keep the first half' and 'keep the second half'."""
    if dim < 2:
        raise ValueError(f"a coupling flow needs at least 2 dimensions, got dim={dim}")
    first = (torch.arange(dim) < (dim + 1) // 2).float()
    return [first if i % 2 == 0 else 1 - first for i in range(n)]


def checkerboard_masks(height: int, width: int, n: int) -> list[Tensor]:
    """n flattened masks alternating between a checkerboard and its complement."""
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    board = ((rows + cols) % 2 == 0).float().flatten()
    return [board if i % 2 == 0 else 1 - board for i in range(n)]


class RealNVP(GenerativeModel):
    """A RealNVP flow on R^dim with a standard-normal base density.

    Layers, for each of ``couplings`` blocks: ActNorm (if ``actnorm``), an affine coupling with
    the next of ``masks`` (default: alternating halves of the coordinates), and (if ``permute``)
    a fixed random permutation drawn from ``seed``. ``forward(x)`` maps data to latents with the
    log-det; ``forward(z, reverse=True)`` (or ``inverse``) maps back. One sample is one pass.

    Without ``permute``, alternating half masks transform every coordinate in every other
    coupling. With ``permute``, the permutations decide which input coordinates land in the
    transformed half, and nothing guarantees that each one does: ``transformed_counts()`` says
    how many couplings transform each input coordinate (the unit tests check the digits flow's).
    """

    paradigm = "flow"
    loss_unit = "nats"

    def __init__(
        self,
        dim: int = 2,
        couplings: int = 8,
        hidden: int = 128,
        depth: int = 2,
        scale_limit: float = 3.0,
        actnorm: bool = True,
        permute: bool = False,
        masks: Sequence[Tensor] | None = None,
        dropout: float = 0.0,
        seed: int = 0,
    ):
        super().__init__()
        if couplings < 1:
            raise ValueError(f"a flow needs at least one coupling layer, got {couplings}")
        self.dim = dim
        masks = list(masks) if masks is not None else half_masks(dim, couplings)
        if len(masks) != couplings:
            raise ValueError(f"got {len(masks)} masks for {couplings} coupling layers")
        gen = torch.Generator().manual_seed(seed)
        layers: list[nn.Module] = []
        for i, mask in enumerate(masks):
            if len(mask) != dim:
                raise ValueError(f"mask {i} has {len(mask)} entries, the flow has dim={dim}")
            if actnorm:
                layers.append(ActNorm(dim))
            layers.append(AffineCoupling(mask, hidden, depth, scale_limit, dropout))
            if permute and i < couplings - 1:
                layers.append(Permutation(torch.randperm(dim, generator=gen)))
        self.layers = nn.ModuleList(layers)

    def forward(self, x: Tensor, reverse: bool = False) -> tuple[Tensor, Tensor]:
        """x -> (z, log|det dz/dx|); with ``reverse=True``, z -> (x, log|det dx/dz|)."""
        logdet = _zeros(x)
        if not reverse:  # data -> noise: z = f_K(...f_1(x))
            for layer in self.layers:
                x, ld = layer(x)
                logdet = logdet + ld  # the log-dets of a stack add up
        else:  # noise -> data: the inverses, last layer first
            for layer in reversed(self.layers):
                x, ld = layer.inverse(x)
                logdet = logdet + ld
        return x, logdet

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z -> (x, log|det dx/dz|), the same as ``self(z, reverse=True)``."""
        return self(z, reverse=True)

    @checks_points
    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density per point: log N(f(x); 0, I) + log|det df/dx|."""
        z, logdet = self(x)
        return standard_normal_log_prob(z) + logdet

    def loss(self, x: Tensor) -> Tensor:
        """Negative log-likelihood, nats per point."""
        return -self.log_prob(x).mean()

    @torch.no_grad()
    def initialize(self, x: Tensor) -> "RealNVP":
        """Set the ActNorm layers from a batch (before training, and before an EMA copy is made)."""
        check_points(x, self.dim, type(self).__name__)
        was_training = self.training
        self.train()
        self(x)
        self.train(was_training)
        return self

    def transformed_counts(self) -> Tensor:
        """For each input coordinate, how many couplings transform it (0: it only ever conditions)."""
        where = torch.arange(self.dim)  # which input coordinate sits at each position now
        counts = torch.zeros(self.dim, dtype=torch.long)
        for layer in self.layers:
            if isinstance(layer, AffineCoupling):
                counts[where[layer.mask.cpu() == 0]] += 1
            elif isinstance(layer, Permutation):
                where = where[layer.perm.cpu()]
        return counts

    @property
    def sampling_network(self) -> nn.Module:
        return self

    @torch.no_grad()
    @checks_n
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """z ~ N(0, temperature^2 I), then one pass of the inverse flow."""
        z = temperature * torch.randn(n, self.dim, device=self.device)
        x, _ = self(z, reverse=True)
        return x


class DigitsFlow(GenerativeModel):
    """A RealNVP for integer images, scored as an upper bound on the discrete NLL.

    x in {0..levels-1}^D  ->  y = (x + u) / levels, u ~ U[0,1)^D     (uniform dequantisation)
                          ->  s = logit(alpha + (1 - 2 alpha) y)     (log-det counted)
                          ->  z = RealNVP(s)                          (log-det counted)

    ``log_prob_bound(x)`` = log N(z) + both log-dets + log vol, where log vol = -D ln(levels)
    is the log-volume of x's cell in y-space. By Jensen, its expectation over u is a lower
    bound on log P(x), the probability the continuous model puts on x's cell; ``loss`` is
    minus its batch mean: nats per image, an upper bound on the discrete NLL (in expectation).
    There is no exact ``log_prob`` of an integer image (it raises, naming ``log_prob_bound``);
    ``continuous_log_prob(y)`` is the exact density of dequantised points.
    ``flow_kwargs`` go to :class:`RealNVP`. The default ``alpha = 0.01`` was chosen by the
    validation bound in earlier runs of the lesson's flow (those runs are not part of the course).
    """

    paradigm = "flow"
    loss_unit = "nats (bound on the discrete NLL)"

    def __init__(self, shape: Sequence[int] = (1, 8, 8), levels: int = 17, alpha: float = 0.01, **flow_kwargs):
        super().__init__()
        self.shape = tuple(shape)
        self.levels = levels
        self.dim = math.prod(self.shape)
        self.logit = LogitTransform(alpha)
        self.flow = RealNVP(dim=self.dim, **flow_kwargs)

    def _check(self, x: Tensor) -> None:
        who = type(self).__name__
        if not isinstance(x, Tensor):
            raise TypeError(f"{who} expects a torch.Tensor, got {type(x).__name__}")
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"{who} expects images of shape (N, {', '.join(map(str, self.shape))}), got {tuple(x.shape)}")
        if x.is_floating_point() or x.dtype == torch.bool:
            raise TypeError(
                f"{who} expects the integer pixel levels 0..{self.levels - 1} (it dequantises them "
                f"itself), got {x.dtype}; pass the images from data.digits() unchanged"
            )
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.levels):
            raise ValueError(
                f"{who} expects pixel levels 0..{self.levels - 1}, got min {int(x.min())}, max {int(x.max())}"
            )

    def continuous_log_prob(self, y: Tensor) -> Tensor:
        """Exact log-density of points y in (0, 1)^D (flattened): flow + logit log-dets."""
        s, ld_logit = self.logit(y)
        return self.flow.log_prob(s) + ld_logit

    @checks_images
    def log_prob_bound(self, x: Tensor, samples: int = 1) -> Tensor:
        """A lower bound on log P(x) per image (nats), from ``samples`` = K dequantisations.

        K = 1: log p(y) + log vol, Jensen's bound. K > 1: log of the mean of the K values
        p(y_k) vol, a tighter bound (still below log P(x) in expectation).
        """
        flat = x.flatten(1).repeat(samples, 1)  # K copies of every image
        u = torch.rand(flat.shape, device=flat.device)  # uniform noise in each pixel's cell
        y = (flat + u) / self.levels  # dequantised, in [0, 1)^D
        log_volume = -self.dim * math.log(self.levels)  # log |C| = log L^-D
        s, logdet_logit = self.logit(y)  # into logit space
        log_w = self.flow.log_prob(s) + logdet_logit + log_volume  # log p_Y(y) + log |C|
        return torch.logsumexp(log_w.view(samples, len(x)), 0) - math.log(samples)  # log mean_k w_k

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no exact log-probability of an integer image: "
            "log_prob_bound(x, samples=K) is a stochastic lower bound on log P(x) (nats per image), "
            "and continuous_log_prob(y) the exact density of dequantised points y in (0, 1)^D"
        )

    def loss(self, x: Tensor) -> Tensor:
        """Upper bound on the discrete NLL, nats per image (one dequantisation per image)."""
        return -self.log_prob_bound(x).mean()

    @torch.no_grad()
    def initialize(self, x: Tensor) -> "DigitsFlow":
        """Set the flow's ActNorm layers from a batch of integer images (call before training)."""
        self._check(x)
        flat = x.flatten(1)
        y = (flat + torch.rand(flat.shape, device=flat.device)) / self.levels
        self.flow.initialize(self.logit(y)[0])
        return self

    @property
    def sampling_network(self) -> nn.Module:
        return self.flow

    @torch.no_grad()
    @checks_n
    def sample(self, n: int, temperature: float = 1.0) -> Tensor:
        """Integer images: z -> inverse flow -> inverse logit -> the level whose cell holds y.

        Values outside [0, 1) (the flow's mass outside the logit box) are clamped into levels 0
        and levels-1, so every sampled image's probability is at least the model's P(x).
        """
        s = self.flow.sample(n, temperature)
        y, _ = self.logit.inverse(s)
        x = (y * self.levels).floor().clamp(0, self.levels - 1).long()
        return x.view(n, *self.shape)
