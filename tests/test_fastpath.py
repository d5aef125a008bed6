"""The fast scoring path gives the reference path's scores, for every encoder family."""

import copy

import numpy as np
import pytest
import torch
from small import FUSED_FAST

from latent_sculpting import LatentSculpting
from latent_sculpting.model.density.fastpath import (
    SCORE_BLOCK,
    SCORING_WORKERS_ENV,
    FastMAF,
    map_blocks,
    run_chunked,
    scoring_workers,
    set_scoring_workers,
)
from latent_sculpting.model.density.maf import LatentDensity

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

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
    model.parts_.reference_path = True
    try:
        ref = getattr(model, method)(X)
    finally:
        model.parts_.reference_path = False
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
    assert not model.parts_.fast
    monkeypatch.setenv("LATENT_SCULPTING_REFERENCE_SCORING", "0")
    assert model.parts_.fast


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


# --------------------------------------------------------------------------- scoring workers


@pytest.fixture
def workers():
    """Set the scoring workers for one test; the process setting is restored after it."""
    previous = set_scoring_workers(None)
    yield set_scoring_workers
    set_scoring_workers(previous)


def several_blocks(test):
    """Rows enough for three blocks and a partial one, drawn from ``test``'s distribution."""
    rng = np.random.default_rng(1)
    rows = test[rng.integers(len(test), size=3 * SCORE_BLOCK + 777)]
    return rows * rng.uniform(0.5, 1.5, size=rows.shape).astype(np.float32)


def test_workers_give_one_thread_scores_to_the_bit(fitted, workers):
    model, test = fitted
    X = several_blocks(test)
    workers(1)
    alone, details = model.decision_function(X), model.score_details(X)
    for n in (2, 3):
        workers(n)
        np.testing.assert_array_equal(model.decision_function(X), alone)
        parallel = model.score_details(X)
        for key in details:
            np.testing.assert_array_equal(parallel[key], details[key], err_msg=key)
    np.testing.assert_array_equal(details["score"], alone)


@pytest.fixture(scope="module")
def fast_preset(sample_table):
    """``preset("fast")`` (the ``default`` design, small) fitted on a slice of the sample."""
    from latent_sculpting import preset
    from latent_sculpting.io.table import cap_per_class

    table = cap_per_class(sample_table, 150, seed=0)
    model = LatentSculpting(**preset("fast"), random_state=0)
    model.fit(table.X, table.y, groups=table.labels, spec=table.spec)
    return model, sample_table.X[::5]


def test_workers_score_the_default_design_to_the_bit(fast_preset, workers):
    model, X = fast_preset
    assert len(X) > 2 * SCORE_BLOCK
    workers(1)
    alone = model.decision_function(X)
    workers(2)
    np.testing.assert_array_equal(model.decision_function(X), alone)
    np.testing.assert_array_equal(model.score_details(X)["score"], alone)
    np.testing.assert_array_equal(model.predict(X), (alone > model.threshold_).astype(int))


def test_a_channel_weighted_zero_is_not_computed(fast_preset, monkeypatch):
    model, X = fast_preset
    model = copy.deepcopy(model)
    model.fusion_.weights_ = {**model.fusion_.weights_, "nll": 0.0, "knn": 1.0}
    every_channel = model.parts_.channel_scores(model.preprocessor_.transform(X[:300]))
    expected = model.fusion_.combine(every_channel)
    assert model.fusion_.channels_read() == {"boost", "knn"}

    def no_flow(inputs):
        raise AssertionError("the flow was run for a channel weighted 0")

    monkeypatch.setattr(model.parts_, "nll", no_flow)
    np.testing.assert_array_equal(model.decision_function(X[:300]), expected)
    with pytest.raises(AssertionError, match="weighted 0"):
        model.score_details(X[:3])


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_scoring_workers_refuses_a_bad_count(bad, workers):
    with pytest.raises(ValueError, match="integer >= 1"):
        workers(bad)


def test_scoring_workers_come_from_the_environment(workers, monkeypatch):
    monkeypatch.setenv(SCORING_WORKERS_ENV, "3")
    assert scoring_workers() == 3
    workers(2)
    assert scoring_workers() == 2  # the setting wins over the environment
    workers(None)
    monkeypatch.setenv(SCORING_WORKERS_ENV, "two")
    with pytest.raises(ValueError, match=SCORING_WORKERS_ENV):
        scoring_workers()
    monkeypatch.delenv(SCORING_WORKERS_ENV)
    assert scoring_workers() == 1


def test_map_blocks_keeps_the_order_of_the_blocks():
    blocks = list(range(20))
    assert map_blocks(lambda b: b * b, blocks, 3) == [b * b for b in blocks]
    assert map_blocks(lambda b: -b, blocks, 1) == [-b for b in blocks]


def test_scorer_scores_without_the_channels_weighted_zero(fast_preset, monkeypatch):
    """``sculpt score``'s scorer takes the score alone (no Stage 1): the same numbers as
    ``score_details``, without running a channel the rule weights 0."""
    import pyarrow as pa

    from latent_sculpting.io.encoding import FlowBatch
    from latent_sculpting.serve.scoring import Scorer

    model, X = fast_preset
    model = copy.deepcopy(model)
    model.fusion_.weights_ = {**model.fusion_.weights_, "nll": 0.0, "knn": 1.0}
    X = X[:500]
    expected = model.score_details(X)["score"]
    monkeypatch.setattr(model, "score_details", None)  # the scorer must not need it
    monkeypatch.setattr(model.parts_, "nll", None)
    scorer = Scorer(model, explain=False)
    batch = FlowBatch(X, list(scorer.spec.feature_names), pa.table({"i": np.arange(len(X))}))
    out = scorer.score(batch)
    np.testing.assert_array_equal(out["score"].to_numpy(), expected)
    assert set(out["flagged_by"]) <= {"", "stage2"}
