"""latent-sculpting: zero-day attack detection in network flows.

Stage 1 sculpts a latent space in which benign flows form a dense hypersphere and known attacks lie
a margin away; Stage 2 learns the exact density of benign codes with a Masked Autoregressive Flow
and flags flows of low likelihood (Chhetri, Thapa, Kumar, Chen, arXiv:2512.22179).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("latent-sculpting")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from .estimator import PERCENTILES, LatentSculpting
from .presets import PRESETS, preset

__all__ = ["PERCENTILES", "PRESETS", "LatentSculpting", "__version__", "preset"]
