"""Stage-1 encoders: map a row of scaled flow features to a latent code.

Every encoder here is a pure :class:`torch.nn.Module`: ``forward`` maps a float tensor of shape
``(batch, n_features)`` to ``(batch, latent_dim)``. Training loops, devices and I/O live in
:mod:`latent_sculpting.model.stage1.train` and :mod:`latent_sculpting.model.training`.

References
----------
.. [1] Chhetri, Thapa, Kumar, Chen. "Latent Sculpting for Zero-Shot Generalization: A Manifold
   Learning Approach to Out-of-Distribution Anomaly Detection." arXiv:2512.22179.
.. [2] Gorishniy, Rubachev, Khrulkov, Babenko. "Revisiting Deep Learning Models for Tabular
   Data." NeurIPS 2021 (the FT-Transformer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from latent_sculpting.model.state import Layout, assign, check_layout, meta_layout, meta_module

__all__ = [
    "ENCODERS",
    "CNNTransformerEncoder",
    "FTTransformerEncoder",
    "MLPEncoder",
    "build_encoder",
    "encoder_from_state",
    "encoder_layout",
]


#: Stage-1 encoders :func:`build_encoder` accepts.
ENCODERS = ("cnn_transformer", "ft_transformer", "mlp")
#: The estimator's parameters that size an encoder (:func:`build_encoder`'s keywords).
ENCODER_SIZES = ("latent_dim", "d_model", "n_heads", "n_layers", "d_ffn", "dropout")
#: Encoders whose ``d_model`` is split over ``n_heads`` attention heads.
ATTENTION_ENCODERS = ("cnn_transformer", "ft_transformer")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{name} must be positive, got {name}={value}")


class CNNTransformerEncoder(nn.Module):
    """The first version's hybrid encoder: a 1D-CNN front end feeding a Transformer [1]_.

    The feature vector is read as a one-channel sequence. Five ``Conv1d`` layers of kernel size 2
    (1 -> 32 -> 16 -> 16 -> 16 -> 16 channels, ReLU), dropout and ``MaxPool1d(2)`` turn it into a
    shorter sequence of local patterns; each position is projected to ``d_model``, given a learned
    positional embedding, passed through a post-norm Transformer encoder and mean-pooled. A head of
    LayerNorm, ReLU and Linear gives the latent code.

    Parameters
    ----------
    n_features : int
        Width of the input rows.
    latent_dim : int, default=32
        Size of the latent code.
    conv_channels : sequence of int, default=(32, 16, 16, 16, 16)
        Output channels of the convolutions, in order.
    kernel_size : int, default=2
    d_model : int, default=64
    n_heads : int, default=4
    n_layers : int, default=3
    d_ffn : int, default=256
        Width of the Transformer feed-forward block.
    dropout : float, default=0.1
    """

    def __init__(
        self,
        n_features: int,
        *,
        latent_dim: int = 32,
        conv_channels: Sequence[int] = (32, 16, 16, 16, 16),
        kernel_size: int = 2,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 3,
        d_ffn: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_positive(n_features=n_features, latent_dim=latent_dim, d_model=d_model)
        if d_model % n_heads:
            raise ValueError(f"d_model must be divisible by n_heads, got {d_model=}, {n_heads=}")
        seq_len = n_features
        layers: list[nn.Module] = []
        in_channels = 1
        for out_channels in conv_channels:
            layers += [nn.Conv1d(in_channels, out_channels, kernel_size), nn.ReLU()]
            in_channels = out_channels
            seq_len -= kernel_size - 1
        layers += [nn.Dropout(dropout), nn.MaxPool1d(2)]
        seq_len //= 2
        if seq_len < 1:
            raise ValueError(
                f"n_features={n_features} is too small for {len(conv_channels)} convolutions "
                f"of kernel size {kernel_size} and a max-pool of 2"
            )
        self.conv = nn.Sequential(*layers)
        self.project = nn.Linear(in_channels, d_model)
        self.position = nn.Parameter(torch.randn(1, seq_len, d_model))
        block = nn.TransformerEncoderLayer(d_model, n_heads, d_ffn, dropout, batch_first=True)
        # enable_nested_tensor only pays off with padding masks, which tabular rows never have.
        self.transformer = nn.TransformerEncoder(block, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d_model), nn.ReLU(), nn.Linear(d_model, latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x.unsqueeze(1)).transpose(1, 2)  # (batch, positions, channels)
        h = self.transformer(self.project(h) + self.position)
        return self.head(h.mean(dim=1))


class FTTransformerEncoder(nn.Module):
    """FT-Transformer encoder for the paper's later version [1]_ [2]_.

    Each feature becomes its own token (``x_j * w_j + b_j``), a learned CLS token is prepended, a
    stack of pre-norm Transformer blocks mixes the tokens, and the CLS output goes through
    LayerNorm, ReLU and Linear to the latent code, as in the rtdl package.

    Parameters
    ----------
    n_features : int
    latent_dim : int, default=32
    d_token : int, default=32
    n_heads : int, default=4
    n_layers : int, default=2
    d_ffn : int, default=64
    dropout : float, default=0.1
        Dropout inside the Transformer blocks (attention and feed-forward).
    """

    def __init__(
        self,
        n_features: int,
        *,
        latent_dim: int = 32,
        d_token: int = 32,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ffn: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_positive(n_features=n_features, latent_dim=latent_dim, d_token=d_token)
        if d_token % n_heads:
            raise ValueError(f"d_token must be divisible by n_heads, got {d_token=}, {n_heads=}")
        # rtdl initialises token weights uniformly in +-1/sqrt(d_token).
        bound = d_token**-0.5
        self.weight = nn.Parameter(torch.empty(n_features, d_token).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(n_features, d_token).uniform_(-bound, bound))
        self.cls = nn.Parameter(torch.empty(1, 1, d_token).uniform_(-bound, bound))
        block = nn.TransformerEncoderLayer(
            d_token, n_heads, d_ffn, dropout, batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(block, n_layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(d_token), nn.ReLU(), nn.Linear(d_token, latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.unsqueeze(-1) * self.weight + self.bias  # (batch, features, d_token)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        return self.head(self.transformer(tokens)[:, 0])


class MLPEncoder(nn.Module):
    """A residual MLP encoder: the fast encoder of the default preset.

    ``Linear -> [LayerNorm -> Linear -> GELU -> Dropout -> Linear] x n_blocks (residual) ->
    LayerNorm -> ReLU -> Linear``. Its cost per flow is a small fraction of the
    CNN-Transformer's (``BENCHMARKS.md``), which is what makes the default preset fast to score.

    Parameters
    ----------
    n_features : int
    latent_dim : int, default=32
    d_hidden : int, default=256
    n_blocks : int, default=2
    dropout : float, default=0.1
    """

    def __init__(
        self,
        n_features: int,
        *,
        latent_dim: int = 32,
        d_hidden: int = 256,
        n_blocks: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        _check_positive(n_features=n_features, latent_dim=latent_dim, d_hidden=d_hidden)
        self.stem = nn.Linear(n_features, d_hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(d_hidden),
                nn.Linear(d_hidden, d_hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(d_hidden, d_hidden),
            )
            for _ in range(n_blocks)
        )
        self.head = nn.Sequential(
            nn.LayerNorm(d_hidden), nn.ReLU(), nn.Linear(d_hidden, latent_dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def build_encoder(
    kind: str,
    n_features: int,
    *,
    latent_dim: int,
    d_model: int,
    n_heads: int,
    n_layers: int,
    d_ffn: int,
    dropout: float,
) -> nn.Module:
    """Build a Stage-1 encoder from the estimator's flat hyperparameters.

    ``d_model`` is the Transformer width (``d_token`` for the FT-Transformer, the hidden width for
    the MLP); ``n_layers`` counts Transformer layers or residual MLP blocks.
    """
    if kind == "cnn_transformer":
        return CNNTransformerEncoder(
            n_features,
            latent_dim=latent_dim,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            d_ffn=d_ffn,
            dropout=dropout,
        )
    if kind == "ft_transformer":
        return FTTransformerEncoder(
            n_features,
            latent_dim=latent_dim,
            d_token=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            d_ffn=d_ffn,
            dropout=dropout,
        )
    if kind == "mlp":
        return MLPEncoder(
            n_features, latent_dim=latent_dim, d_hidden=d_model, n_blocks=n_layers, dropout=dropout
        )
    raise ValueError(f"unknown encoder {kind!r}; expected one of {ENCODERS}")


def encoder_layout(kind: str, n_features: int, **sizes: Any) -> Layout:
    """The state layout of ``build_encoder(kind, n_features, **sizes)``, built on PyTorch's
    meta device (no memory)."""
    return meta_layout(lambda: build_encoder(kind, n_features, **sizes))


def encoder_from_state(
    kind: str, n_features: int, state: dict[str, torch.Tensor], **sizes: Any
) -> nn.Module:
    """The encoder holding the stored tensors ``state`` (in eval mode), checked first against
    :func:`encoder_layout`: built on the meta device, it then holds the file's own tensors, so
    no allocation exceeds what the file holds.

    Raises
    ------
    ValueError
        Naming the tensor that is missing, unknown, of another shape or dtype, or not finite.
    """
    check_layout(encoder_layout(kind, n_features, **sizes), state)
    return assign(meta_module(lambda: build_encoder(kind, n_features, **sizes)), state).eval()
