"""Diffusion models: DDPM (Ho et al., 2020).

Forward process, fixed: q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I), which has the
closed form q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) with abar_t = prod_{s<=t} (1 - beta_s).
A network eps_theta(x_t, t) learns to predict the noise in x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps
by mean squared error. Sampling runs the reverse chain from pure noise, one network call per step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import GenerativeModel, check_n, check_points, mlp


class DDPMSchedule(nn.Module):
    """The noise schedule and every quantity derived from it, as buffers (they follow ``.to``).

    ``kind="cosine"`` (Nichol & Dhariwal, 2021) works for any number of steps;
    ``kind="linear"`` is the original schedule, beta from 1e-4 to 0.02 scaled to T steps.
    """

    def __init__(self, steps: int = 100, kind: str = "cosine", max_beta: float = 0.5):
        super().__init__()
        if steps < 1:
            raise ValueError(f"a schedule needs at least one step, got {steps}")
        if kind == "cosine":
            s = 0.008
            grid = torch.arange(steps + 1, dtype=torch.float64) / steps
            f = torch.cos((grid + s) / (1 + s) * math.pi / 2) ** 2
            abar = f / f[0]
            # Capped at 0.5 (Nichol & Dhariwal cap at 0.999): a reverse step divides by sqrt(1 - beta_t),
            # and with few steps the last betas of the raw cosine schedule come close to 1.
            betas = (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)
        elif kind == "linear":
            scale = 1000 / steps
            betas = torch.linspace(scale * 1e-4, scale * 0.02, steps, dtype=torch.float64)
        else:
            raise ValueError(f"unknown schedule {kind!r}: use 'cosine' or 'linear'")
        alphas = 1 - betas
        abar = torch.cumprod(alphas, 0)
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        self.steps = steps
        for name, value in {
            "betas": betas,
            "alphas": alphas,
            "abar": abar,
            "abar_prev": abar_prev,
            # variance of q(x_{t-1} | x_t, x_0), the "beta tilde" of the DDPM paper
            "posterior_var": betas * (1 - abar_prev) / (1 - abar),
        }.items():
            self.register_buffer(name, value.float())

    def q_sample(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, for integer steps t in [0, T)."""
        shape = (-1,) + (1,) * (x0.dim() - 1)
        ab = self.abar[t].view(shape)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


def q_sample(x0: Tensor, t: Tensor, eps: Tensor, betas: Tensor) -> Tensor:
    """The forward process in closed form, from the betas alone: x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.

    ``t`` holds one step index per row, counted from 0 (index i is step i + 1 of the math), and
    abar_t = prod_{s <= t} (1 - beta_s). :meth:`DDPMSchedule.q_sample` is the same map with abar
    precomputed; lesson 1 asks the reader to write this function.
    """
    abar = torch.cumprod(1 - betas, dim=0)[t].view((-1,) + (1,) * (x0.dim() - 1))
    return abar.sqrt() * x0 + (1 - abar).sqrt() * eps


def ancestral_step(s: DDPMSchedule, x_t: Tensor, eps_pred: Tensor, t: int, z: Tensor) -> Tensor:
    """One reverse step, x_t -> x_{t-1}: remove the predicted noise, then add fresh noise z ~ N(0, I).

    mean = (x_t - beta_t / sqrt(1 - abar_t) * eps_pred) / sqrt(alpha_t), std = sqrt(beta_tilde_t),
    where beta_tilde_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) is 0 at the last step (t index 0).
    """
    mean = (x_t - s.betas[t] / (1 - s.abar[t]).sqrt() * eps_pred) / s.alphas[t].sqrt()
    return mean + s.posterior_var[t].sqrt() * z


class TimeMLP(nn.Module):
    """eps_theta(x, t) for flat data: an MLP on x concatenated with a sinusoidal embedding of t."""

    def __init__(self, data_dim: int = 2, hidden: int = 128, time_dim: int = 32, steps: int = 100):
        super().__init__()
        self.time_dim, self.steps = time_dim, steps
        self.net = mlp([data_dim + time_dim, hidden, hidden, hidden, data_dim])

    def embed(self, t: Tensor) -> Tensor:
        half = self.time_dim // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, device=t.device) / half)
        angles = (t.float() / self.steps * 1000.0)[:, None] * freqs[None] / 10.0
        return torch.cat([angles.sin(), angles.cos()], dim=-1)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(torch.cat([x, self.embed(t)], dim=-1))


class Diffusion(GenerativeModel):
    paradigm = "diffusion"
    loss_unit = "MSE of the predicted noise"

    def __init__(self, eps_model: nn.Module, schedule: DDPMSchedule, data_shape: tuple[int, ...]):
        super().__init__()
        self.eps_model, self.schedule, self.data_shape = eps_model, schedule, tuple(data_shape)

    @classmethod
    def for_points(cls, data_dim: int = 2, steps: int = 100, hidden: int = 128) -> "Diffusion":
        """A DDPM for points in R^data_dim with an MLP noise predictor."""
        return cls(TimeMLP(data_dim, hidden, steps=steps), DDPMSchedule(steps), (data_dim,))

    def _check(self, x: Tensor) -> None:
        if len(self.data_shape) == 1:
            check_points(x, self.data_shape[0], type(self).__name__)
        elif tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"{type(self).__name__} expects (N, {self.data_shape}), got {tuple(x.shape)}")

    def loss(self, x0: Tensor) -> Tensor:
        """E_{t, eps} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2 (mean per coordinate)."""
        self._check(x0)
        t = torch.randint(0, self.schedule.steps, (len(x0),), device=x0.device)
        eps = torch.randn_like(x0)
        return F.mse_loss(self.eps_model(self.schedule.q_sample(x0, t, eps), t), eps)

    @property
    def sampling_network(self) -> nn.Module:
        return self.eps_model

    @torch.no_grad()
    def sample(self, n: int) -> Tensor:
        """Ancestral sampling: T network calls, from x_T ~ N(0, I) down to x_0."""
        check_n(n, type(self).__name__)
        return self.reverse_chain(torch.randn(n, *self.data_shape, device=self.device))

    @torch.no_grad()
    def reverse_chain(self, x: Tensor) -> Tensor:
        """From x_T (pure noise) to x_0: one network call per step, fresh noise at every step but the last."""
        for t in reversed(range(self.schedule.steps)):
            eps_pred = self.eps_model(x, torch.full((len(x),), t, device=x.device))
            z = torch.randn_like(x) if t > 0 else torch.zeros_like(x)
            x = ancestral_step(self.schedule, x, eps_pred, t, z)
        return x


# ----------------------------------------------------------------------------------------------
# Lesson 12: the posterior, the variational bound, the score, and a DDPM for images.
#
# Step indices in code count from 0: index i is step t = i + 1 of the math, so ``abar[i]`` is
# abar_{i+1} and ``abar_prev[i]`` is abar_i (1 at i = 0).


def _rows(v: Tensor, like: Tensor) -> Tensor:
    """A per-row quantity (B,) or a scalar, shaped to broadcast against ``like`` (B, ...)."""
    v = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return v.view((-1,) + (1,) * (like.dim() - 1)) if v.dim() == 1 else v


def q_posterior(s: DDPMSchedule, x0: Tensor, x_t: Tensor, t: int | Tensor,
                t_prev: int | None = None) -> tuple[Tensor, Tensor]:
    """Mean and variance of q(x_{t-1} | x_t, x_0), for step index ``t`` (an int, or one per row).

    mean = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x_0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t,
    var  = beta_t (1 - abar_{t-1}) / (1 - abar_t)                     (beta tilde; 0 at the first step).
    ``t_prev`` (an int index < t, or -1 for x_0) jumps further back, with 1 - abar_t / abar_{t_prev}
    in place of beta_t: the same formula for a chain that skips steps.
    """
    ab = _rows(s.abar[t], x0)
    if t_prev is None:
        ab_prev = _rows(s.abar_prev[t], x0)
    else:
        ab_prev = s.abar[t_prev] if t_prev >= 0 else torch.ones((), dtype=x0.dtype, device=x0.device)
    beta, alpha = 1 - ab / ab_prev, ab / ab_prev
    mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + alpha.sqrt() * (1 - ab_prev) / (1 - ab) * x_t
    return mean, beta * (1 - ab_prev) / (1 - ab)


def predict_x0(s: DDPMSchedule, x_t: Tensor, t: int | Tensor, eps: Tensor) -> Tensor:
    """Invert the closed form x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for x_0, given a noise estimate."""
    ab = _rows(s.abar[t], x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def score_from_eps(s: DDPMSchedule, eps: Tensor, t: int | Tensor) -> Tensor:
    """The score of the noised data from a noise prediction: grad log q_t(x_t) = -eps / sqrt(1 - abar_t)."""
    return -eps / (1 - _rows(s.abar[t], eps)).sqrt()


def snr(s: DDPMSchedule) -> Tensor:
    """The signal-to-noise ratio abar_t / (1 - abar_t) of every step (index 0 is step 1)."""
    return s.abar / (1 - s.abar)


def noised_mixture_score(x: Tensor, means: Tensor, std: float, abar: float) -> Tensor:
    """Exact score of q_t for data from an equal-weight mixture of isotropic Gaussians N(mu_k, std^2 I).

    Under x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps each component becomes
    N(sqrt(abar) mu_k, (abar std^2 + 1 - abar) I), so q_t is again such a mixture and its score is
    sum_k r_k(x) (sqrt(abar) mu_k - x) / v with responsibilities r_k and v = abar std^2 + 1 - abar.
    """
    like = x
    x, means = x.cpu().double(), means.cpu().double()                   # float64 on the CPU (MPS has none)
    v = abar * std**2 + 1 - abar
    centres = math.sqrt(abar) * means                                   # (K, D)
    diff = centres[None] - x[:, None]                                   # (N, K, D)
    resp = torch.softmax(-diff.square().sum(-1) / (2 * v), dim=1)       # (N, K), equal weights
    return _back((resp[..., None] * diff).sum(1) / v, like)


def normal_kl(mean1: Tensor, var1: Tensor, mean2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) per coordinate (diagonal Gaussians), in nats."""
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2).square()) / var2 - 1)


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor | float, levels: int = 17) -> Tensor:
    """log P(x) per coordinate for data on ``levels`` evenly spaced values in [-1, 1]: the mass that
    N(mean, std^2) puts on the bin of x, bins of width 2 / (levels - 1) centred on the values, the
    two end bins stretched to -infinity and +infinity (Ho et al. 2020 with 256 levels), so that the
    probabilities of the ``levels`` values add up to exactly one. Computed in float64 with log Phi,
    and from the nearer tail, so that a far-off bin gives a finite log-probability.
    """
    half = 1.0 / (levels - 1)
    like = x
    x, mean = x.cpu().double(), mean.cpu().double()                     # float64 on the CPU (MPS has none)
    std = torch.as_tensor(std, dtype=torch.float64, device="cpu")
    lo = torch.where(x < -1 + half, torch.full_like(x, -math.inf), (x - half - mean) / std)
    hi = torch.where(x > 1 - half, torch.full_like(x, math.inf), (x + half - mean) / std)
    # Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi): use the form whose terms are small (the far tail)
    flip = (lo + hi) > 0
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)          # mass = Phi(b) - Phi(a), b > a
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return _back(log_b + torch.log1p(-torch.exp((log_a - log_b).clamp(max=-1e-300))), like)


def _back(result: Tensor, like: Tensor) -> Tensor:
    """A float64 result computed on the CPU, returned on ``like``'s device (as float32 on MPS)."""
    if like.device.type == "cpu":
        return result
    return result.to(like.device, torch.float32 if like.device.type == "mps" else result.dtype)  # cpu float64 to the device


def respaced_times(T: int, steps: int | None = None) -> list[int]:
    """The step indices a K-step sampler visits: K evenly spaced indices from T - 1 down to 0
    (``DDPM.sample(n, steps=K)`` here, and lesson 13's DDIM)."""
    steps = T if steps is None else steps
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"got steps={steps!r}: steps must be an int, and steps must lie in 1..{T} (the model's T)")
    return torch.linspace(T - 1, 0, steps).round().long().unique_consecutive().tolist()


class DDPM(Diffusion):
    """A DDPM for images of ``levels`` grey levels, scaled to [-1, 1] inside the model.

    ``loss(x)`` is L_simple, the noise-prediction MSE (mean per pixel). ``sample(n)`` runs the
    reverse chain and ends with the discrete decoder, so it returns integer levels 0..levels-1,
    like the data. ``nelbo(x)`` is the variational bound in nats per image: an upper bound on the
    discrete negative log-likelihood of the very model that ``sample`` draws from (same mean,
    same clipping of the predicted x_0, variances beta tilde and, at the last step, beta_1).
    """

    def __init__(self, eps_model: nn.Module, schedule: DDPMSchedule, data_shape: tuple[int, ...],
                 levels: int = 17, clip: bool = True):
        super().__init__(eps_model, schedule, data_shape)
        self.levels, self.clip = levels, clip

    @classmethod
    def for_images(cls, image_shape: tuple[int, int, int] = (1, 8, 8), steps: int = 100, kind: str = "cosine",
                   channels: tuple[int, ...] = (32, 64), dropout: float = 0.0, levels: int = 17,
                   clip: bool = True) -> "DDPM":
        """A DDPM with a small U-Net noise predictor (:class:`course_lib.models.unet.UNet`)."""
        from .unet import UNet

        net = UNet(image_shape[0], channels=channels, steps=steps, dropout=dropout)
        return cls(net, DDPMSchedule(steps, kind=kind), image_shape, levels=levels, clip=clip)

    # data <-> model space
    def to_model(self, levels: Tensor) -> Tensor:
        """Integer levels 0..L-1 -> floats in [-1, 1] (the model's space)."""
        if levels.is_floating_point():
            raise TypeError("DDPM expects integer grey levels (e.g. data.digits), got floats: pass the levels")
        if levels.min() < 0 or levels.max() > self.levels - 1:
            raise ValueError(f"grey levels must lie in 0..{self.levels - 1}")
        return levels.to(self.schedule.abar.dtype) * (2.0 / (self.levels - 1)) - 1.0

    def to_levels(self, x: Tensor) -> Tensor:
        """Floats -> the nearest of the L levels (the end levels take everything beyond them)."""
        return ((x.clamp(-1, 1) + 1) * ((self.levels - 1) / 2)).round().long()

    def loss(self, batch: Tensor) -> Tensor:
        """L_simple on integer levels: E_{t, eps} ||eps - eps_theta(x_t, t)||^2, mean per pixel."""
        return super().loss(self.to_model(batch))

    # the reverse model
    def p_mean(self, x_t: Tensor, t: int | Tensor, t_prev: int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Mean and variance of p_theta(x_{t_prev} | x_t), and the predicted x_0 (clipped if ``clip``).

        The reverse step is the posterior q(x_{t_prev} | x_t, x_0) with the network's x_0 in place of
        the unknown one. ``t_prev`` defaults to t - 1 (index); a smaller index skips steps, -1 means x_0.
        """
        t_vec = t if torch.is_tensor(t) and t.dim() == 1 else torch.full((len(x_t),), int(t), device=x_t.device)
        x0_hat = predict_x0(self.schedule, x_t, t_vec, self.eps_model(x_t, t_vec))
        if self.clip:
            x0_hat = x0_hat.clamp(-1, 1)
        mean, var = q_posterior(self.schedule, x0_hat, x_t, t_vec, t_prev)
        return mean, var, x0_hat

    def decoder_std(self) -> Tensor:
        """The last step's noise, sqrt(beta_1): p_theta(x_0 | x_1) is N(mean, beta_1) read on the L bins."""
        return self.schedule.betas[0].sqrt()

    @torch.inference_mode()
    def sample(self, n: int, steps: int | None = None, keep: bool = False):
        """Ancestral sampling, ``steps`` network calls (default T; fewer: evenly spaced respaced steps).

        Returns integer levels (n, *data_shape); with ``keep=True`` also a list of
        (step index, x_t, predicted x_0) before every network call, for pictures of the chain.
        """
        check_n(n, type(self).__name__)
        times = respaced_times(self.schedule.steps, steps)
        x = torch.randn(n, *self.data_shape, device=self.device, dtype=self.schedule.abar.dtype)
        chain = []
        for i, t in enumerate(times):
            t_prev = times[i + 1] if i + 1 < len(times) else -1
            mean, var, x0_hat = self.p_mean(x, t, t_prev)
            if keep:
                chain.append((t, x.cpu(), x0_hat.cpu()))
            if t_prev >= 0:
                x = mean + var.sqrt() * torch.randn_like(x)
            else:  # the decoder: N(mean, beta_1) read on the bins of the L levels
                x = mean + self.decoder_std() * torch.randn_like(x)
        levels = self.to_levels(x)
        return (levels, chain) if keep else levels

    def score(self, x_t: Tensor, t: int | Tensor) -> Tensor:
        """The model's score of the noised data at step index t: -eps_theta(x_t, t) / sqrt(1 - abar_t)."""
        t_vec = t if torch.is_tensor(t) and t.dim() == 1 else torch.full((len(x_t),), int(t), device=x_t.device)
        return score_from_eps(self.schedule, self.eps_model(x_t, t_vec), t_vec)

    # the variational bound
    @torch.no_grad()
    def nelbo_terms(self, levels: Tensor) -> dict[str, Tensor]:
        """One Monte-Carlo draw of every term of -ELBO, per image, in nats (sums over pixels):

        ``prior``   L_T = KL(q(x_T | x_0) || N(0, I)), exact;
        ``steps``   (T - 1,) + batch: L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) for t = 2..T,
                    each at one draw of x_t ~ q(x_t | x_0);
        ``decoder`` L_0 = -log p_theta(x_0 | x_1) on the L bins, at one draw of x_1;
        ``total``   their sum: an unbiased estimate of -ELBO, an upper bound on -log p_theta(x_0).
        """
        x0 = self.to_model(levels)
        s, dims = self.schedule, tuple(range(1, x0.dim()))
        ab_T = s.abar[-1]
        prior = normal_kl(ab_T.sqrt() * x0, 1 - ab_T, torch.zeros_like(x0), torch.ones_like(x0)).sum(dims)
        steps = []
        for t in range(1, s.steps):  # index t is step t + 1 = 2..T
            t_vec = torch.full((len(x0),), t, device=x0.device)
            x_t = s.q_sample(x0, t_vec, torch.randn_like(x0))
            q_mean, q_var = q_posterior(s, x0, x_t, t)
            p_mean, p_var, _ = self.p_mean(x_t, t_vec)
            steps.append(normal_kl(q_mean, q_var, p_mean, p_var).sum(dims))
        steps = torch.stack(steps) if steps else torch.zeros(0, len(x0), device=x0.device)
        x_1 = s.q_sample(x0, torch.zeros(len(x0), dtype=torch.long, device=x0.device), torch.randn_like(x0))
        mean, _, _ = self.p_mean(x_1, 0, -1)
        decoder = -discretized_gaussian_log_prob(x0, mean, self.decoder_std(), self.levels).sum(dims).to(x0.dtype)
        return {"prior": prior, "steps": steps, "decoder": decoder, "total": prior + steps.sum(0) + decoder}

    def nelbo(self, levels: Tensor) -> Tensor:
        """-ELBO per image in nats (one draw of each term): an upper bound on the discrete NLL, in expectation."""
        return self.nelbo_terms(levels)["total"]
