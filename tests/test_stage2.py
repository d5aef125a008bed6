"""Stage 2: fitting the flow, assembling its input, and scoring by its NLL."""

import numpy as np
import pytest
import torch

from latent_sculpting.model.density.fastpath import FastMAF
from latent_sculpting.model.density.train import (
    STAGE2_PARAMETERS,
    fit_flow,
    flow_inputs,
    negative_log_likelihood,
)
from latent_sculpting.model.fusion import NLL_CAP
from latent_sculpting.model.preprocessing import FeaturePreprocessor

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

PARAMS = {
    "flow_transforms": 2,
    "flow_hidden": 16,
    "flow_hidden_layers": 1,
    "flow_lr": 5e-3,
    "flow_epochs": 8,
    "flow_batch_size": 64,
    "grad_clip": 1.0,
}
CPU = torch.device("cpu")


def test_fit_flow_learns_the_density_of_its_inputs():
    assert set(STAGE2_PARAMETERS) == set(PARAMS)
    rng = np.random.default_rng(0)
    inputs = (rng.normal(size=(500, 3)) * [1.0, 0.1, 3.0] + [0.0, 5.0, -2.0]).astype(np.float32)
    torch.manual_seed(0)
    flow, losses = fit_flow(inputs, **PARAMS, device=CPU)
    assert not flow.training and len(losses) == 8 and losses[-1] < losses[0]
    inside = negative_log_likelihood(flow, inputs[:50], device=CPU, fast_flow=None)
    outside = negative_log_likelihood(flow, inputs[:50] + 10, device=CPU, fast_flow=None)
    assert (outside > inside).all()
    fast = negative_log_likelihood(flow, inputs[:50], device=CPU, fast_flow=FastMAF(flow.maf))
    np.testing.assert_allclose(fast, inside, rtol=1e-5, atol=1e-5)


def test_non_finite_nll_is_capped():
    torch.manual_seed(0)
    flow, _ = fit_flow(
        np.zeros((20, 2), np.float32) + 1, **{**PARAMS, "flow_epochs": 1}, device=CPU
    )
    nll = negative_log_likelihood(
        flow, np.array([[np.inf, 0.0], [0.0, 0.0]], np.float32), device=CPU, fast_flow=None
    )
    assert nll[0] == NLL_CAP and np.isfinite(nll[1])


def test_flow_inputs_put_the_embedding_beside_the_codes_then_scale():
    codes = np.arange(6, dtype=np.float32).reshape(3, 2)
    embedding = np.full((3, 1), 7.0, np.float32) + np.arange(3)[:, None]
    np.testing.assert_array_equal(flow_inputs(codes, None, None), codes)
    both = flow_inputs(codes, embedding, None)
    np.testing.assert_array_equal(both, np.hstack([codes, embedding]))
    scaler = FeaturePreprocessor().fit(both)
    np.testing.assert_allclose(flow_inputs(codes, embedding, scaler).mean(axis=0), 0, atol=1e-6)
