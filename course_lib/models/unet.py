"""A small U-Net: the noise predictor eps_theta(x_t, t) of lesson 12's image diffusion model.

The shape of the networks of Ho et al. (2020), shrunk for 8x8 (or 28x28) grey images on a CPU:

    x (1 x H x W) --conv--> c0 --ResBlock--> c0 ------------------------------- skip --+
                                 |  down (stride-2 conv, H/2)                            |
                                 +--ResBlock--> c1 ---------------- skip --+             |
                                                 |  (one more level per entry of channels) |
                                                 +-- middle ResBlocks -- up, concat skip, ResBlock
                                                                              up, concat skip, ResBlock --> conv --> eps

Every residual block also receives the step t, as a sinusoidal embedding passed through a small
MLP and added to its feature maps, so one network serves every noise level. Skip connections
carry the fine detail of each resolution past the bottleneck, which is what a denoiser at low
noise levels mostly needs.

With ``num_classes`` set (lesson 13), the network is class-conditional, eps_theta(x_t, t, c): a
learned embedding of the label c is added to the step's embedding, and one extra label, index
``num_classes``, is the "null" label of the unconditional mode (classifier-free guidance). The
default (``num_classes=None``) builds lesson 12's network, parameter for parameter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
import torch.nn.functional as F


def timestep_embedding(t: Tensor, dim: int, steps: int) -> Tensor:
    """Sinusoidal features of the step index t (as in a transformer's positions), shape (B, dim).

    The index is rescaled to [0, 1000) first, so the frequencies mean the same for any T."""
    if dim % 2:
        raise ValueError(f"the time embedding needs an even dimension, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = (t.float() * (1000.0 / steps))[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, channels), channels)


class ResBlock(nn.Module):
    """norm -> SiLU -> conv, add the step's embedding, norm -> SiLU -> dropout -> conv, plus the input."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, dropout: float = 0.0):
        super().__init__()
        self.block1 = nn.Sequential(_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(t_dim, c_out))
        self.block2 = nn.Sequential(_norm(c_out), nn.SiLU(), nn.Dropout(dropout), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        h = self.block1(x) + self.time(t_emb)[:, :, None, None]
        return self.block2(h) + self.skip(x)


class UNet(nn.Module):
    """eps_theta(x, t) for images (B, C, H, W); ``t`` holds one step index per image, 0..steps-1.

    ``channels[i]`` feature maps at resolution H / 2^i; H must be divisible by 2^(len(channels) - 1).
    ``num_classes``: if set, ``forward(x, t, y)`` also takes one label per image, 0..num_classes-1,
    or ``num_classes`` itself for the null label (unconditional).
    """

    def __init__(self, image_channels: int = 1, channels: tuple[int, ...] = (32, 64), steps: int = 100,
                 t_dim: int = 64, dropout: float = 0.0, middle_blocks: int = 1, num_classes: int | None = None):
        super().__init__()
        if not channels:
            raise ValueError("channels needs at least one entry, e.g. (32, 64)")
        self.steps, self.t_dim, self.levels = steps, t_dim, len(channels)
        self.time_mlp = nn.Sequential(nn.Linear(t_dim, 2 * t_dim), nn.SiLU(), nn.Linear(2 * t_dim, t_dim))
        self.inp = nn.Conv2d(image_channels, channels[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c_prev = channels[0]
        for i, c in enumerate(channels):
            self.down.append(ResBlock(c_prev, c, t_dim, dropout))
            c_prev = c
            if i < len(channels) - 1:
                self.downsample.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        self.middle = nn.ModuleList(ResBlock(c_prev, c_prev, t_dim, dropout) for _ in range(middle_blocks))
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i in reversed(range(len(channels))):
            self.up.append(ResBlock(c_prev + channels[i], channels[i], t_dim, dropout))
            c_prev = channels[i]
            if i > 0:
                self.upsample.append(nn.Conv2d(channels[i], channels[i - 1], 3, padding=1))
                c_prev = channels[i - 1]
        self.out = nn.Sequential(_norm(c_prev), nn.SiLU(), nn.Conv2d(c_prev, image_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)  # the untrained network predicts zero noise
        nn.init.zeros_(self.out[-1].bias)
        self.num_classes = num_classes
        if num_classes is not None:  # created last: the layers above are initialised as without labels
            if not isinstance(num_classes, int) or num_classes < 1:
                raise ValueError(f"num_classes must be a positive int (or None), got {num_classes!r}")
            self.label_emb = nn.Embedding(num_classes + 1, t_dim)  # row num_classes: the null label

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        size = x.shape[-1]
        if size % 2 ** (self.levels - 1):
            raise ValueError(f"image size {size} is not divisible by 2^{self.levels - 1}: use fewer channel levels")
        emb = self.time_mlp(timestep_embedding(t, self.t_dim, self.steps))
        if self.num_classes is not None:
            emb = emb + self.label_emb(self._labels(y, len(x)))
        elif y is not None:
            raise ValueError("this U-Net was built without num_classes: it takes no labels")
        h = self.inp(x)
        skips = []
        for i, block in enumerate(self.down):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsample):
                h = self.downsample[i](h)
        for block in self.middle:
            h = block(h, emb)
        for j, block in enumerate(self.up):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if j < len(self.upsample):
                h = self.upsample[j](F.interpolate(h, scale_factor=2, mode="nearest"))
        return self.out(h)

    def _labels(self, y: Tensor | None, batch: int) -> Tensor:
        if y is None:
            raise ValueError(
                f"this U-Net is class-conditional: pass labels y (0..{self.num_classes - 1}, "
                f"or {self.num_classes} for the null label, the unconditional mode)"
            )
        if y.dtype != torch.long or y.shape != (batch,):
            raise ValueError(f"labels must be an int64 tensor of shape ({batch},), got {y.dtype} {tuple(y.shape)}")
        if y.device.type == "cpu" and (int(y.min()) < 0 or int(y.max()) > self.num_classes):  # no sync on a GPU
            raise ValueError(f"labels must lie in 0..{self.num_classes} ({self.num_classes}: the null label)")
        return y
