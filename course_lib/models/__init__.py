"""One module per family; every model follows :class:`base.GenerativeModel`."""

from .autoregressive import CharBigram, CharMLP, CharModel, CharTransformer, DiscretizedAR, TransformerConfig, sample_next
from .base import GenerativeModel
from .diffusion import DDPM, DDPMSchedule, Diffusion, TimeMLP
from .ebm import EBM
from .flows import ActNorm, AffineCoupling, DigitsFlow, LogitTransform, Permutation, RealNVP
from .gan import GAN
from .guidance import ConditionalDDPM, LatentDiffusion
from .pixelcnn import MaskedConv2d, PixelCNN
from .score import NCSN, ScoreModel
from .sde import VESDE, VPSDE, DiffusionSDE
from .flow_matching import FlowMatching
from .unet import UNet
from .vae import VAE
from .vqvae import VQVAE

__all__ = ["GenerativeModel", "DiscretizedAR", "CharModel", "CharBigram", "CharMLP", "CharTransformer", "TransformerConfig", "sample_next", "VAE", "GAN", "Diffusion", "DDPMSchedule", "TimeMLP",
           "RealNVP", "DigitsFlow", "AffineCoupling", "ActNorm", "Permutation", "LogitTransform",
           "PixelCNN", "MaskedConv2d", "VQVAE", "EBM", "NCSN", "ScoreModel", "DDPM", "UNet",
           "ConditionalDDPM", "LatentDiffusion", "VPSDE", "VESDE", "DiffusionSDE", "FlowMatching"]
