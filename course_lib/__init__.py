"""course_lib: the code behind 'Deep Generative Models: the four-paradigm map'.

    from course_lib import runtime, data, train, plotting, metrics
    from course_lib.models import DiscretizedAR, VAE, GAN, Diffusion
"""

from . import data, metrics, plotting, runtime, train
from .runtime import setup
from .train import fit

# The one place the version is set: pyproject.toml reads it, the first cell of every lesson
# prints it, and the Colab notebooks install the tag v<version> (scripts/release.py).
__version__ = "0.3.0"
__all__ = ["data", "metrics", "plotting", "runtime", "train", "setup", "fit", "__version__"]
