"""Stage 2: a Masked Autoregressive Flow for the exact density of benign latent codes.

The flow is zuko's :class:`zuko.flows.MAF` (Papamakarios et al., 2017): a stack of MADE
transforms whose feature order reverses between layers. We keep zuko's implementation because it
is maintained, tested and exact; our tests still check its inverse, its log-determinant and its
autoregressive mask on the configuration we use (``tests/test_flows.py``).

References
----------
.. [1] Chhetri, Thapa, Kumar, Chen. arXiv:2512.22179, Stage 2.
.. [2] Papamakarios, Pavlakou, Murray. "Masked Autoregressive Flow for Density Estimation."
   NeurIPS 2017.
"""

from __future__ import annotations

import torch
import zuko
from torch import nn

__all__ = ["LatentDensity"]


class LatentDensity(nn.Module):
    """Density model of latent codes: a MAF with a standard normal base.

    The reference code uses 16 MADE transforms, each with one hidden layer of width 512.

    Parameters
    ----------
    features : int
        Dimension of the latent codes.
    transforms : int, default=16
        Number of MADE transforms.
    hidden_features : int, default=512
        Width of each MADE hidden layer.
    hidden_layers : int, default=1
        Hidden layers per MADE.
    """

    def __init__(
        self,
        features: int,
        *,
        transforms: int = 16,
        hidden_features: int = 512,
        hidden_layers: int = 1,
    ) -> None:
        super().__init__()
        if transforms < 1 or hidden_features < 1 or hidden_layers < 1:
            raise ValueError(
                "transforms, hidden_features and hidden_layers must be positive, got "
                f"{transforms=}, {hidden_features=}, {hidden_layers=}"
            )
        self.maf = zuko.flows.MAF(
            features,
            transforms=transforms,
            hidden_features=(hidden_features,) * hidden_layers,
        )

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Exact log-density of each code, shape ``(batch,)``."""
        return self.maf().log_prob(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each code: the Stage-2 anomaly score."""
        return -self.log_prob(z)
