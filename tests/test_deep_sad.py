"""Deep SVDD / Deep SAD: a bias-free network, seeded fits, and a state that round-trips."""

import numpy as np
import pytest
import torch

from latent_sculpting.model.channels.deep_sad import BiasFreeEncoder, DeepSAD

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


def test_bias_free_encoder_has_no_bias_and_no_affine_norm():
    net = BiasFreeEncoder(6, latent_dim=3, hidden=(8, 4))
    assert all(not name.endswith("bias") for name, _ in net.named_parameters())
    assert net(torch.randn(5, 6)).shape == (5, 3)
    with pytest.raises(ValueError, match="hidden=\\(8, 0\\)"):
        BiasFreeEncoder(6, hidden=(8, 0))


def test_seeded_fit_is_reproducible_and_leaves_the_global_generator_alone():
    X = np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32)
    torch.manual_seed(1)
    expected = torch.rand(1)
    torch.manual_seed(1)
    a = DeepSAD(eta=0.0, rep_dim=3, epochs=2, random_state=5).fit(X)
    assert torch.equal(torch.rand(1), expected)
    b = DeepSAD(eta=0.0, rep_dim=3, epochs=2, random_state=5).fit(X)
    np.testing.assert_array_equal(a.transform(X), b.transform(X))
    assert len(a.history_) == 2


def test_state_round_trip_and_damaged_centre():
    X = np.random.default_rng(1).normal(size=(60, 4)).astype(np.float32)
    model = DeepSAD(eta=0.0, rep_dim=3, epochs=1, random_state=0).fit(X)
    config, tensors = model.get_state()
    restored = DeepSAD.from_state(config, tensors)
    np.testing.assert_array_equal(restored.decision_function(X), model.decision_function(X))
    with pytest.raises(ValueError, match=r"centre must have shape \(3,\)"):
        DeepSAD.from_state(config, {**tensors, "center": torch.zeros(4)})
