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

from latent_sculpting.model.state import Layout, check_layout

__all__ = ["LatentDensity", "flow_layout"]


def flow_layout(features: int, transforms: int, hidden: int, layers: int) -> Layout:
    """The state layout of ``LatentDensity(features, ...)``, computed without building it.

    zuko's MAF computes its masks from data, so it cannot be built on the meta device. Each
    MADE maps the ``features`` inputs through ``layers`` masked hidden layers to a shift and a
    scale per feature; ``tests/test_model_files.py`` compares this layout with built flows.
    """
    layout: Layout = {}
    sizes = [features, *[hidden] * layers, 2 * features]
    for t in range(transforms):
        prefix = f"maf.transform.transforms.{t}."
        layout[prefix + "order"] = ((features,), torch.int64)
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
            # Layer i of the MADE's Sequential sits at 2 i, its activation at 2 i + 1.
            layer = f"{prefix}hyper.{2 * i}."
            layout[layer + "weight"] = ((n_out, n_in), torch.float32)
            layout[layer + "bias"] = ((n_out,), torch.float32)
            layout[layer + "mask"] = ((n_out, n_in), torch.bool)
    layout["maf.base.loc"] = ((features,), torch.float32)
    layout["maf.base.scale"] = ((features,), torch.float32)
    return layout


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

    @classmethod
    def from_state(
        cls,
        state: dict[str, torch.Tensor],
        features: int,
        *,
        transforms: int,
        hidden_features: int,
        hidden_layers: int,
    ) -> LatentDensity:
        """The flow holding the stored tensors ``state``, checked first against its
        :func:`flow_layout` (so that building it allocates no more than ``state`` holds); its
        masks, orders and base must be those its parameters define (tampered, the density
        would be silently wrong).

        Raises
        ------
        ValueError
            Naming the tensor that is missing, unknown, of another shape or dtype, not finite,
            or not the one the parameters define.
        """
        check_layout(flow_layout(features, transforms, hidden_features, hidden_layers), state)
        flow = cls(
            features,
            transforms=transforms,
            hidden_features=hidden_features,
            hidden_layers=hidden_layers,
        )
        for name, buffer in flow.named_buffers():
            if not torch.equal(buffer, state[name]):
                raise ValueError(f"{name} is not the one its parameters define")
        flow.load_state_dict(state, strict=True, assign=True)
        return flow.eval()

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Exact log-density of each code, shape ``(batch,)``."""
        return self.maf().log_prob(z)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each code: the Stage-2 anomaly score."""
        return -self.log_prob(z)
