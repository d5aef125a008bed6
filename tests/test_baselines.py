"""Baselines and ablations: every method scores real flows, and each honours its contract."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from small import FUSED_FAST

from latent_sculpting import preset
from latent_sculpting.data import zero_shot_splits
from latent_sculpting.io.table import cap_per_class
from latent_sculpting.research.baselines import (
    BASELINES,
    DeepSAD,
    EstimatorMethod,
    InductiveECOD,
    Method,
    SculptingMethod,
    make_method,
    method_names,
    parse_method,
    preserve_global_rng,
)
from latent_sculpting.threads import limit_threads

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

FAST_METHODS = ["fast", "fast-stage2", "fast-noboost", "fast-noknn", "fast-fisher", "fast-forest"]


@pytest.fixture(scope="module")
def tiny_splits(sample_table):
    return zero_shot_splits(cap_per_class(sample_table, 200), seed=0)


@pytest.mark.parametrize("name", [*BASELINES, *FAST_METHODS])
def test_every_method_gives_finite_non_constant_scores(name, tiny_splits):
    train, test = tiny_splits.train, tiny_splits.zero_shot
    with limit_threads(1):
        method = make_method(name, random_state=0, shared={})
        assert isinstance(method, Method)
        method.fit(train.X, train.y, train.labels)
        scores = method.decision_function(test.X)
    assert scores.shape == (len(test),)
    assert np.isfinite(scores).all()
    assert np.unique(scores).size > 1, f"{name} scores are constant"
    # Known attacks rank above benign flows for every method: a floor, not a benchmark.
    known = tiny_splits.internal_test
    assert roc_auc_score(known.y, method.decision_function(known.X)) > 0.5


def test_method_names_parse_and_reject():
    assert parse_method("knn@none") == ("knn", "none")
    assert parse_method("paper-v1-stage2") == ("paper-v1-stage2", None)
    assert {"knn", "rf", "paper-v1", "paper-v2", "default", "fused-stage1"} <= set(method_names())
    # An ablation that does not apply to a preset is no method: the default has no Stage 1.
    assert "default-stage1" not in method_names() and "paper-v1-noboost" not in method_names()
    with pytest.raises(ValueError, match="unknown method 'svm'"):
        parse_method("svm")
    with pytest.raises(ValueError, match="unknown feature transform 'log'"):
        parse_method("knn@log")


def test_make_method_applies_transform_and_ablation():
    assert make_method("knn").feature_transform == "log1p"
    assert make_method("knn@none").feature_transform == "none"
    stage2 = make_method("default-stage2")
    assert isinstance(stage2, SculptingMethod)
    assert stage2.params["stage1"] is False and stage2.params["score"] == "nll"
    assert stage2.trains_on == "benign"
    assert make_method("default").trains_on == "benign+attacks"  # the booster sees attacks
    assert make_method("paper-v1-nosep").params["gamma"] == 0.0
    assert make_method("fused-ce").params["loss"] == "cross_entropy"
    assert make_method("default-noknn").params["knn_prototypes"] == 0
    assert make_method("paper-v2@quantile").params["feature_transform"] == "quantile"
    # Every preset with every ablation is a valid set of parameters.
    assert all(make_method(name) for name in method_names())


def test_make_method_applies_overrides_before_the_ablation():
    assert make_method("default", overrides={"boost_iter": 7}).params["boost_iter"] == 7
    noboost = make_method("default-noboost", overrides={"boost_iter": 7, "flow_epochs": 1})
    assert noboost.params["boost_iter"] == 0 and noboost.params["flow_epochs"] == 1
    assert make_method("knn", overrides={"epochs": 1}).feature_transform == "log1p"
    with pytest.raises(ValueError, match="method default: .*score='nll'"):
        make_method("default", overrides={"score": "nll"})


class _Recorder:
    """A stand-in model that records what it was fitted on."""

    def __init__(self) -> None:
        self.fit_args: tuple = ()

    def fit(self, *args):
        self.fit_args = args
        return self

    def decision_function(self, Z):
        return Z.sum(axis=1)


def test_benign_only_method_never_sees_attacks():
    rng = np.random.default_rng(0)
    X = rng.lognormal(size=(60, 4)).astype(np.float32)
    y = np.r_[np.zeros(40), np.ones(20)].astype(int)
    recorder = _Recorder()
    method = EstimatorMethod("rec", lambda seed: recorder, trains_on="benign").fit(X, y, None)
    (Z,) = recorder.fit_args
    assert Z.shape == (40, 4)
    # The scaler was fitted on exactly those benign rows: they are standardised.
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-5)
    assert method.native_threshold_ is None


def test_supervised_method_scores_probability_with_native_half(tiny_splits):
    train = tiny_splits.train
    method = make_method("rf", random_state=0).fit(train.X, train.y, train.labels)
    scores = method.decision_function(tiny_splits.zero_shot.X)
    assert method.native_threshold_ == 0.5
    assert scores.min() >= 0 and scores.max() <= 1


def test_estimator_method_validates():
    with pytest.raises(ValueError, match="trains_on must be one of"):
        EstimatorMethod("x", lambda s: None, trains_on="attacks")
    with pytest.raises(ValueError, match="feature_transform must be one of"):
        EstimatorMethod("x", lambda s: None, trains_on="benign", feature_transform="log")
    with pytest.raises(ValueError, match="not fitted"):
        make_method("knn").decision_function(np.zeros((2, 3)))


def test_max_fit_rows_caps_the_fit():
    X = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    recorder = _Recorder()
    EstimatorMethod(
        "rec", lambda seed: recorder, trains_on="benign", max_fit_rows=30, random_state=0
    ).fit(X, np.zeros(100, int), None)
    assert recorder.fit_args[0].shape == (30, 3)


def test_stage1_ablation_reuses_the_fitted_preset(tiny_splits):
    train = tiny_splits.train
    shared: dict = {}
    with limit_threads(1):
        small = {k: v for k, v in FUSED_FAST.items() if v != preset("fused")[k]}
        full = make_method("fused", random_state=0, shared=shared, overrides=small).fit(
            train.X, train.y, train.labels
        )
        stage1 = make_method("fused-stage1", random_state=0, shared=shared, overrides=small).fit(
            train.X, train.y, train.labels
        )
    assert stage1.model_ is full.model_ and stage1.reused_fit_
    assert stage1.native_threshold_ == 0.0
    details = full.model_.score_details(tiny_splits.zero_shot.X)
    np.testing.assert_allclose(
        stage1.decision_function(tiny_splits.zero_shot.X),
        details["distance_benign"] - details["distance_attack"],
    )


def test_inductive_ecod_scores_do_not_depend_on_the_batch():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(200, 5))
    test = rng.normal(size=(50, 5))
    test[0] = 8.0  # far in every coordinate
    ecod = InductiveECOD().fit(train)
    alone = ecod.decision_function(test[:1])
    together = ecod.decision_function(test)
    np.testing.assert_allclose(alone, together[:1])
    assert together.argmax() == 0


def test_deep_sad_ranks_outliers_and_uses_labels():
    rng = np.random.default_rng(0)
    inliers = rng.normal(size=(300, 6)).astype(np.float32)
    known = (rng.normal(size=(60, 6)) + 4).astype(np.float32)
    X = np.vstack([inliers, known])
    y = np.r_[np.zeros(300), np.ones(60)].astype(int)
    test_in = rng.normal(size=(50, 6)).astype(np.float32)
    test_out = (rng.normal(size=(50, 6)) + 4).astype(np.float32)
    truth = np.r_[np.zeros(50), np.ones(50)]
    for eta, labels in ((0.0, None), (1.0, y)):
        model = DeepSAD(eta=eta, epochs=15, random_state=0)
        model.fit(X[y == 0] if labels is None else X, labels)
        scores = model.decision_function(np.vstack([test_in, test_out]))
        assert roc_auc_score(truth, scores) > 0.9
        assert np.isfinite(model.history_).all()
    with pytest.raises(ValueError, match="eta must be non-negative"):
        DeepSAD(eta=-1).fit(X, y)


def test_preserve_global_rng_restores_state():
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002
    torch.manual_seed(1)
    expected = (random.random(), np.random.random(), torch.rand(1).item())  # noqa: NPY002
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002
    torch.manual_seed(1)
    with preserve_global_rng():
        random.seed(99)
        np.random.seed(99)  # noqa: NPY002
        torch.manual_seed(99)
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected  # noqa: NPY002
