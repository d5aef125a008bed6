"""The fast scoring path gives the reference path's scores, for every encoder family."""

import numpy as np
import pytest
import torch
from small import FUSED_FAST

from latent_sculpting import LatentSculpting
from latent_sculpting.fastpath import FastMAF, run_chunked
from latent_sculpting.flows import LatentDensity

# One epoch a stage: the models only need non-trivial weights, not a good fit.
TINY = {
    **FUSED_FAST,
    "feature_transform": "none",
    "epochs": 1,
    "flow_epochs": 1,
    "batch_size": 64,
    "flow_batch_size": 64,
    "latent_dim": 8,
}
FAMILIES = {
    "cnn_transformer": {
        "encoder": "cnn_transformer",
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 1,
        "d_ffn": 32,
        "score": "two_stage",
        "forest_trees": 0,
    },
    "ft_transformer": {
        "encoder": "ft_transformer",
        "d_model": 8,
        "n_heads": 2,
        "n_layers": 1,
        "d_ffn": 16,
        "score": "two_stage",
        "forest_trees": 0,
    },
    "mlp": {
        "encoder": "mlp",
        "d_model": 32,
        "n_layers": 1,
        "score": "nll",
        "forest_trees": 0,
        "calibration": "holdout",
    },
    "no_stage1": {"stage1": False, "score": "nll", "forest_trees": 0, "flow_hidden_layers": 2},
    "fused": {
        "encoder": "mlp",
        "d_model": 32,
        "n_layers": 1,
        "score": "fisher",
        "calibration": "holdout",
    },
}


def toy(seed=0, n=300, d=16):
    rng = np.random.default_rng(seed)
    benign = rng.normal(size=(n, d))
    attack = rng.normal(size=(n // 3, d)) + 4 * np.eye(d)[0]
    X = np.vstack([benign, attack]).astype(np.float32)
    y = np.r_[np.zeros(n), np.ones(n // 3)].astype(int)
    test = rng.normal(scale=2.0, size=(700, d)).astype(np.float32)  # > one encoder chunk
    return X, y, test


def assert_close(fast, ref):
    # Relative where NLLs and Stage-1 offsets are large, absolute 1e-4 near zero.
    np.testing.assert_allclose(fast, ref, rtol=1e-4, atol=1e-4)


def both_paths(model, method, X):
    fast = getattr(model, method)(X)
    model._reference_scoring = True
    try:
        ref = getattr(model, method)(X)
    finally:
        del model._reference_scoring
    return fast, ref


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def fitted(request):
    X, y, test = toy()
    params = {**TINY, **FAMILIES[request.param]}
    if not params.get("stage1", True):
        X, y = X[y == 0], None
    return LatentSculpting(**params, random_state=0).fit(X, y), test


def test_fast_scores_match_reference(fitted):
    model, test = fitted
    fast, ref = both_paths(model, "decision_function", test)
    assert_close(fast, ref)
    fast, ref = both_paths(model, "score_details", test)
    assert fast.keys() == ref.keys()
    for key in fast:
        assert_close(fast[key], ref[key])


def test_fast_scores_match_reference_after_save_load(fitted, tmp_path):
    model, test = fitted
    loaded = LatentSculpting.load(model.save(tmp_path / "model.safetensors"))
    fast, ref = both_paths(loaded, "decision_function", test)
    assert_close(fast, ref)
    np.testing.assert_allclose(fast, model.decision_function(test), rtol=1e-5, atol=1e-5)


def test_environment_variable_selects_reference_path(fitted, monkeypatch):
    model, test = fitted
    monkeypatch.setenv("LATENT_SCULPTING_REFERENCE_SCORING", "1")
    assert not model._use_fastpath()
    monkeypatch.setenv("LATENT_SCULPTING_REFERENCE_SCORING", "0")
    assert model._use_fastpath()


def test_fast_flow_follows_parameter_updates(fitted):
    model, test = fitted
    before = model.score_details(test[:5])["nll"]
    with torch.no_grad():
        bias = next(p for name, p in model.flow_.named_parameters() if name.endswith("bias"))
        bias.add_(1.0)
    try:
        fast, ref = both_paths(model, "score_details", test[:5])
        assert_close(fast["nll"], ref["nll"])
        assert not np.allclose(fast["nll"], before)
    finally:
        with torch.no_grad():
            bias.sub_(1.0)


@pytest.mark.parametrize("hidden_layers", [1, 2])
def test_fast_maf_equals_zuko_log_prob(hidden_layers):
    torch.manual_seed(0)
    flow = LatentDensity(5, transforms=3, hidden_features=16, hidden_layers=hidden_layers)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    z = torch.randn(50, 5)
    with torch.inference_mode():
        np.testing.assert_allclose(FastMAF(flow.maf)(z), -flow.log_prob(z), rtol=1e-5, atol=1e-5)


def test_run_chunked_is_row_independent():
    x = torch.randn(10, 3)
    assert torch.equal(run_chunked(torch.nn.Identity(), x, 3), x)
