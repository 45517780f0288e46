"""One module per family; every model follows :class:`base.GenerativeModel`."""

from .autoregressive import DiscretizedAR
from .base import GenerativeModel
from .diffusion import DDPMSchedule, Diffusion, TimeMLP
from .gan import GAN
from .vae import VAE

__all__ = ["GenerativeModel", "DiscretizedAR", "VAE", "GAN", "Diffusion", "DDPMSchedule", "TimeMLP"]
