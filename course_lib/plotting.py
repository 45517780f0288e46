"""Figures the lessons share: point clouds, densities, image grids and loss curves.

Importing this module sets the course's figure style once: the Okabe-Ito palette, which
readers with any common colour-vision deficiency can tell apart, cycled together with line
styles, so that curves differ by more than colour ("C0", "C1", ... name these colours).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import torch
from cycler import cycler
from torch import Tensor

# Okabe & Ito (2008), "Color Universal Design": blue, orange, green, vermillion, purple, sky
# blue, black, yellow (yellow last: it is faint on white).
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
LINESTYLES = ("-", "--", "-.", ":", "-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # for scatter series: pass marker=MARKERS[i]


def use_course_style() -> None:
    """Colour-blind-safe colours cycled with line styles (called once, on import)."""
    mpl.rcParams["axes.prop_cycle"] = cycler(color=PALETTE) + cycler(linestyle=LINESTYLES)
    mpl.rcParams["image.cmap"] = "viridis"  # perceptually uniform, readable in grey


use_course_style()


def _np(x: Tensor | np.ndarray) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


def scatter2d(ax, points: Tensor, title: str | None = None, lim: float = 3.0, color: str = "C0", s: float = 2.0):
    """Points (N, 2) on square axes of half-width ``lim``."""
    p = _np(points)
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"scatter2d expects points of shape (N, 2), got {p.shape}")
    ax.scatter(p[:, 0], p[:, 1], s=s, alpha=0.5, color=color, linewidths=0)
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def compare_samples(
    panels: Mapping[str, Tensor], lim: float = 3.0, size: float = 2.6, title: str | None = None
) -> plt.Figure:
    """One row of 2D scatter plots, one per named point set (data first, then each model)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels), size), squeeze=False)
    for i, (ax, (name, pts)) in enumerate(zip(axes[0], panels.items())):
        scatter2d(ax, pts, name, lim=lim, color=f"C{i}")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@torch.no_grad()
def density2d(
    ax,
    log_prob: Callable[[Tensor], Tensor],
    lim: float = 3.0,
    grid: int = 200,
    title: str | None = None,
    device: torch.device | str = "cpu",
):
    """Heat map of exp(log_prob) on a grid over [-lim, lim]^2. Returns the grid of densities."""
    xs = torch.linspace(-lim, lim, grid)
    xx, yy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([xx.flatten(), yy.flatten()], dim=1).to(device)
    dens = log_prob(pts).exp().reshape(grid, grid).cpu()
    ax.imshow(_np(dens), origin="lower", extent=(-lim, lim, -lim, lim), cmap="magma")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    return dens


def image_grid(
    images: Tensor,
    nrow: int = 8,
    ax=None,
    title: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "gray_r",
):
    """Show images (N, H, W) or (N, 1, H, W) as a grid with ``nrow`` images per row."""
    imgs = _np(images).astype(np.float64)
    if imgs.ndim == 4:
        if imgs.shape[1] != 1:
            raise ValueError(f"image_grid shows one-channel images, got {imgs.shape[1]} channels")
        imgs = imgs[:, 0]
    if imgs.ndim != 3:
        raise ValueError(f"image_grid expects (N, H, W) or (N, 1, H, W), got shape {imgs.shape}")
    n, h, w = imgs.shape
    rows = int(np.ceil(n / nrow))
    lo = imgs.min() if vmin is None else vmin
    canvas = np.full((rows * (h + 1) + 1, nrow * (w + 1) + 1), lo, dtype=np.float64)
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = imgs[i]
    if ax is None:
        _, ax = plt.subplots(figsize=(nrow * 0.6, rows * 0.6))
    ax.imshow(canvas, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def loss_curves(
    histories: Mapping[str, Sequence[float]],
    ax=None,
    smooth: int = 25,
    ylabel: str = "loss",
    title: str | None = None,
):
    """Loss histories, each smoothed by a running mean over ``smooth`` steps (raw values faint)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    for i, (name, values) in enumerate(histories.items()):
        v = np.asarray(values, dtype=np.float64)
        ax.plot(v, color=f"C{i}", alpha=0.2, linewidth=0.8)
        if len(v) >= smooth > 1:
            k = np.ones(smooth) / smooth
            ax.plot(np.arange(smooth - 1, len(v)), np.convolve(v, k, mode="valid"), color=f"C{i}", label=name)
        else:
            ax.plot(v, color=f"C{i}", label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return ax
