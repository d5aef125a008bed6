"""Stage-1 encoders: shapes, the reference architecture, gradients, bad sizes."""

import pytest
import torch

from latent_sculpting.model.stage1.encoders import (
    ENCODERS,
    CNNTransformerEncoder,
    FTTransformerEncoder,
    MLPEncoder,
    build_encoder,
)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ENCODERS)
def test_every_encoder_maps_rows_to_latent_codes_and_trains(kind):
    torch.manual_seed(0)
    encoder = build_encoder(
        kind, 79, latent_dim=8, d_model=16, n_heads=2, n_layers=1, d_ffn=32, dropout=0.0
    )
    x = torch.randn(5, 79)
    z = encoder(x)
    assert z.shape == (5, 8)
    z.pow(2).sum().backward()
    assert all(p.grad is not None for p in encoder.parameters())
    # Rows are encoded independently: a row's code does not depend on its batch.
    encoder.eval()
    with torch.no_grad():
        assert torch.allclose(encoder(x)[:2], encoder(x[:2]), atol=1e-5)


def test_cnn_transformer_follows_the_reference_layout():
    encoder = CNNTransformerEncoder(79)
    convs = [m for m in encoder.conv if isinstance(m, torch.nn.Conv1d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
        (1, 32, 2),
        (32, 16, 2),
        (16, 16, 2),
        (16, 16, 2),
        (16, 16, 2),
    ]
    # 79 features -> 74 positions after five kernel-2 convolutions -> 37 after max-pooling.
    assert encoder.position.shape == (1, 37, 64)
    assert len(encoder.transformer.layers) == 3
    assert encoder.head[-1].out_features == 32


def test_ft_transformer_has_a_token_per_feature_and_a_cls_token():
    encoder = FTTransformerEncoder(10, d_token=8, n_heads=2)
    assert encoder.weight.shape == (10, 8)
    assert encoder.cls.shape == (1, 1, 8)
    assert encoder.transformer.layers[0].norm_first


def test_bad_sizes_name_the_value():
    with pytest.raises(ValueError, match="n_features=3"):
        CNNTransformerEncoder(3)
    with pytest.raises(ValueError, match="n_heads"):
        FTTransformerEncoder(10, d_token=10, n_heads=4)
    with pytest.raises(ValueError, match="d_hidden=0"):
        MLPEncoder(10, d_hidden=0)
    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder(
            "rnn", 10, latent_dim=2, d_model=4, n_heads=1, n_layers=1, d_ffn=4, dropout=0.0
        )
