"""latent-sculpting: zero-day attack detection in network flows.

Stage 1 sculpts a latent space in which benign flows form a dense hypersphere and known attacks lie
a margin away; Stage 2 learns the exact density of benign codes with a Masked Autoregressive Flow
and flags flows of low likelihood (Chhetri, Thapa, Kumar, Chen, arXiv:2512.22179).
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("latent-sculpting")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

# Exported lazily, so that `import latent_sculpting.data` and `sculpt --help` do not pay for
# importing torch.
_EXPORTS = {
    "LatentSculpting": "model.estimator",
    "PERCENTILES": "model.calibration",
    "PRESETS": "model.presets",
    "preset": "model.presets",
}

__all__ = ["PERCENTILES", "PRESETS", "LatentSculpting", "__version__", "preset"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
