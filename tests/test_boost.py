"""The boosted trees: scikit-learn's log-odds bit for bit, exact round trips, damaged state,
out-of-sample held-out scores, and the estimator with a boost channel through a model file."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.ensemble import HistGradientBoostingClassifier
from small import FUSED_FAST
from test_forest import fit_width, load_mutated
from threadpoolctl import threadpool_limits

import latent_sculpting.model.calibration as calibration_module
from latent_sculpting import LatentSculpting, preset
from latent_sculpting.errors import ModelFileError
from latent_sculpting.model.channels.boost import (
    EARLY_STOPPING,
    LEARNING_RATE,
    MAX_LEAF_NODES,
    AttackBooster,
    _sklearn_arrays,
    classifier,
)
from latent_sculpting.model.channels.registry import BoostChannel
from latent_sculpting.model.params import check_params
from latent_sculpting.model.preprocessing import FeaturePreprocessor
from latent_sculpting.threads import limit_threads

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def one_thread():
    """scikit-learn's OpenMP threads spin-wait for busy cores; on a shared machine a fit with
    one thread is many times faster (the thread-count test sets its own)."""
    with threadpool_limits(1):
        yield


def _toy(n: int = 2000, seed: int = 0, d: int = 6):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 + rng.normal(size=n) > 0.5).astype(int)
    return X, y


def _twin(max_iter: int, X, y, seed: int = 0) -> HistGradientBoostingClassifier:
    """The booster :meth:`AttackBooster.fit` grows, fitted and used by scikit-learn alone."""
    return classifier(max_iter, seed).fit(X, y)


def test_the_booster_has_the_documented_settings():
    params = classifier(77, 5).get_params()
    assert params["max_iter"] == 77 and params["random_state"] == 5
    assert params["learning_rate"] == LEARNING_RATE == 0.1
    assert params["max_leaf_nodes"] == MAX_LEAF_NODES == 31
    assert params["early_stopping"] == EARLY_STOPPING == "auto"
    assert params["categorical_features"] is None and params["loss"] == "log_loss"


def _probe_rows(booster: AttackBooster, seed: int = 1) -> np.ndarray:
    """Random rows, rows at and next to split thresholds (float32 and float64), NaN and inf."""
    rng = np.random.default_rng(seed)
    d = booster.n_features_in_
    rows = [rng.normal(size=(300, d))]
    arrays = booster.arrays_
    split = np.flatnonzero(arrays["left_child"] != -1)
    for node in rng.choice(split, 60, replace=False):
        edge = np.repeat(rng.normal(size=(1, d)), 5, axis=0)
        at = arrays["threshold"][node]
        at32 = np.float32(at)
        edge[:, arrays["feature"][node]] = [
            np.nextafter(at, -np.inf),
            at,
            np.nextafter(at, np.inf),
            np.nextafter(at32, np.float32(-np.inf)),
            np.nextafter(at32, np.float32(np.inf)),
        ]
        rows.append(edge)
    special = rng.normal(size=(30, d))
    special[:10, 0], special[10:20, 1], special[20:, 2] = np.nan, np.inf, -np.inf
    rows.append(special)
    return np.vstack(rows)


@pytest.fixture(scope="module")
def small():
    """A fitted 5-tree booster and its state, for the tests that damage a state."""
    X, y = _toy(400, seed=2)
    booster = AttackBooster(5, random_state=0).fit(X, y)
    return booster, *booster.get_state()


# ------------------------------------------------------------------------------- equality


def test_log_odds_equal_scikit_learn_bit_for_bit_on_random_data():
    # Over 10,000 rows, so that early stopping holds rows out and stops before max_iter.
    X, y = _toy(12_000)
    booster = AttackBooster(100, random_state=0).fit(X, y)
    twin = _twin(100, X, y)
    assert booster.n_iter_ == twin.n_iter_ < 100
    rows = _probe_rows(booster)
    expected = twin.decision_function(rows)
    assert len(np.unique(expected)) > 300
    np.testing.assert_array_equal(booster.decision_function(rows), expected)
    # Float32 rows are compared in float64 by both, unrounded (the features are float32).
    rows32 = rows.astype(np.float32)
    np.testing.assert_array_equal(booster.decision_function(rows32), twin.decision_function(rows32))
    assert np.isnan(rows).any()  # NaN routing is part of what is compared


def test_log_odds_equal_scikit_learn_bit_for_bit_on_the_embedded_sample(sample_table):
    rng = np.random.default_rng(0)
    Z = FeaturePreprocessor(feature_transform="log1p").fit_transform(sample_table.X)
    y = (sample_table.labels != "BENIGN").astype(int)
    train = rng.choice(len(Z), 8000, replace=False)
    booster = AttackBooster(100, random_state=0).fit(Z[train], y[train])
    expected = _twin(100, Z[train], y[train]).decision_function(Z)
    np.testing.assert_array_equal(booster.decision_function(Z), expected)


def test_the_fit_does_not_depend_on_the_thread_count():
    X, y = _toy(12_000, seed=4)
    with threadpool_limits(1):
        one = AttackBooster(10, random_state=0).fit(X, y).get_state()
    with threadpool_limits(2):
        two = AttackBooster(10, random_state=0).fit(X, y).get_state()
    assert one[0] == two[0]
    for name, array in one[1].items():
        np.testing.assert_array_equal(two[1][name], array, err_msg=name)


def test_categorical_splits_are_refused():
    rng = np.random.default_rng(0)
    X = np.c_[rng.integers(0, 6, 1000), rng.normal(size=1000)]
    y = np.isin(X[:, 0], [1, 4]).astype(int)
    model = HistGradientBoostingClassifier(max_iter=3, categorical_features=[0]).fit(X, y)
    with pytest.raises(ValueError, match=r"boost tree 0 node 0 splits on categories \(feature 0"):
        _sklearn_arrays(model)


def test_round_trip_is_exact_and_state_is_copied(small):
    booster, config, arrays = small
    assert config == {"max_iter": 5, "n_iter_": 5, "n_features_in_": 6}
    restored = AttackBooster.from_state(config, arrays)
    rows = _probe_rows(booster)
    np.testing.assert_array_equal(restored.decision_function(rows), booster.decision_function(rows))
    config_again, arrays_again = restored.get_state()
    assert config_again == config
    assert set(arrays_again) == set(arrays)
    for name, array in arrays.items():
        assert arrays_again[name].dtype == array.dtype
        np.testing.assert_array_equal(arrays_again[name], array)
    arrays_again["baseline"][:] = 10.0
    np.testing.assert_array_equal(restored.decision_function(rows), booster.decision_function(rows))
    assert not booster.arrays_["values"].flags.writeable


def test_predict_and_fit_refuse_bad_input(small):
    booster, _, _ = small
    with pytest.raises(ValueError, match="6 columns"):
        booster.decision_function(np.zeros((3, 5)))
    with pytest.raises(ValueError, match="not fitted"):
        AttackBooster(3).decision_function(np.zeros((1, 6)))
    with pytest.raises(ValueError, match="max_iter must be between 1 and"):
        AttackBooster(0)
    with pytest.raises(ValueError, match="benign \\(0\\) and attack \\(1\\)"):
        AttackBooster(3).fit(np.zeros((4, 2)), np.ones(4))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_iter_": 6}, "boost config: n_iter_ 6 above max_iter 5"),
        ({"n_iter_": 4}, r"inconsistent: offsets has shape \(6,\), expected \(5,\)"),
        ({"max_iter": 0}, "boost config: max_iter 0 outside 1-"),
        ({"n_estimators": 5}, "boost config: expected keys"),
    ],
)
def test_a_damaged_config_is_refused(small, change, message):
    _, config, arrays = small
    with pytest.raises(ModelFileError, match=message):
        AttackBooster.from_state({**config, **change}, arrays)


# Derandomised, without an example database: the same examples on every run and machine.
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_any_mutation_loads_and_gives_finite_log_odds_or_is_refused_clearly(small, data):
    booster, config, arrays = small
    loaded = load_mutated(data.draw, AttackBooster.from_state, config, arrays, "boost")
    if loaded is None:
        return
    rows = np.vstack([_toy(400, seed=2)[0], _probe_rows(booster, seed=3)])
    scores = loaded.decision_function(fit_width(rows, loaded.n_features_in_))
    assert scores.shape == (len(rows),) and np.all(np.isfinite(scores))


# -------------------------------------------------------------------------------- channel


def test_held_out_rows_are_scored_by_a_booster_that_never_saw_them():
    # Attacks fill x0 > 1; the held-out rows are benign rows in the middle of them. A booster
    # that saw them learns their corner as benign, one that did not calls them attacks.
    rng = np.random.default_rng(0)
    X = rng.normal(size=(1500, 4)).astype(np.float32)
    y = (X[:, 0] > 1).astype(int)
    held_out = np.arange(80)
    X[held_out, 0] = rng.uniform(2, 3, size=80)
    y[held_out] = 0
    channel = BoostChannel(30, random_state=3)
    scores = channel.fit(X, y, held_out)
    assert np.all(scores > 0)
    train = np.ones(len(X), dtype=bool)
    train[held_out] = False
    twin = _twin(30, X[train], y[train], seed=3)
    np.testing.assert_array_equal(scores, twin.decision_function(X[held_out]))
    assert channel.booster_.decision_function(X[held_out]).tolist() == scores.tolist()
    in_sample = _twin(30, X, y, seed=3).decision_function(X[held_out])
    assert np.mean(in_sample < 0) > 0.9


def test_channel_state_round_trips():
    X, y = _toy(600, seed=5)
    channel = BoostChannel(8, random_state=0)
    channel.fit(X, y, np.flatnonzero(y == 0)[:50])
    config, arrays = channel.get_state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    restored = BoostChannel.from_state(config, arrays)
    np.testing.assert_array_equal(restored.score(X), channel.score(X))
    assert restored.n_iter == 8 and restored.resolution == channel.resolution == 0.0
    assert (BoostChannel.name, BoostChannel.column) == ("boost", "boost_logit")


# ------------------------------------------------------------------------------ estimator


def _flows(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(size=(300, 4)), rng.normal(size=(150, 4)) + 3]).astype(np.float32)
    return X, np.r_[np.zeros(300), np.ones(150)].astype(int)


@pytest.fixture(scope="module")
def boosted():
    """A model fused with a boost channel alone, fitted (one thread) while recording the rows
    held out of every fit and those the booster was fitted on."""
    log = {}
    with pytest.MonkeyPatch.context() as patch:
        for owner, name in ((calibration_module, "holdout_split"), (AttackBooster, "fit")):
            original = getattr(owner, name)

            def wrapper(*args, original=original, name=name, **kwargs):
                log[name] = (args, original(*args, **kwargs))
                return log[name][1]

            patch.setattr(owner, name, wrapper)
        X, y = _flows()
        params = {**FUSED_FAST, "score": "fisher", "boost_iter": 50, "forest_trees": 0}
        with limit_threads(1):
            model = LatentSculpting(**params, random_state=0, device="cpu").fit(X, y)
    return model, X, log


def test_the_booster_in_the_estimator_never_sees_a_held_out_row(boosted):
    model, X, log = boosted
    _, held_out = log["holdout_split"][1]
    Z = model.preprocessor_.transform(X)
    fitted_on = log["fit"][0][1]
    assert len(fitted_on) == len(X) - len(held_out) and len(held_out) > 40
    seen = {row.tobytes() for row in fitted_on}
    assert not any(Z[row].tobytes() in seen for row in held_out)
    # The boost tail's reference is out-of-sample log-odds of held-out rows.
    reference = model.fusion_.tails_["boost"].reference_
    scores = model.channels_["boost"].score(Z[held_out])
    assert np.isin(reference, scores).all()


def test_an_estimator_with_a_boost_channel_saves_loads_and_scores_identically(boosted, tmp_path):
    model, X, _ = boosted
    assert list(model.channels_) == ["boost"]
    assert list(model.fusion_.tails_) == ["nll", "boost"]
    path = model.save(tmp_path / "model.sculpt")
    with safe_open(str(path), framework="pt") as opened:
        assert "channel.boost.baseline" in opened.keys()  # noqa: SIM118
    loaded = LatentSculpting.load(path)
    assert loaded.get_params()["boost_iter"] == 50
    rows = np.vstack([X, _flows(1)[0]])
    np.testing.assert_array_equal(loaded.decision_function(rows), model.decision_function(rows))
    details, again = model.score_details(rows), loaded.score_details(rows)
    np.testing.assert_array_equal(again["boost_logit"], details["boost_logit"])
    booster = model.channels_["boost"].booster_
    Z = model.preprocessor_.transform(rows)
    np.testing.assert_array_equal(details["boost_logit"], booster.decision_function(Z))
    assert "forest_probability" not in details


def test_a_format_3_file_written_before_boost_iter_existed_loads(tmp_path):
    X, y = _flows(2)
    with limit_threads(1):
        model = LatentSculpting(**{**FUSED_FAST, "forest_trees": 5}, random_state=0)
        model.fit(X, y)
    path = model.save(tmp_path / "model.sculpt")
    with safe_open(str(path), framework="pt") as opened:
        metadata = opened.metadata()
    params = json.loads(metadata["params"])
    del params["boost_iter"]
    metadata["params"] = json.dumps(params)
    save_file(load_file(path), path, metadata=metadata)
    loaded = LatentSculpting.load(path)
    assert loaded.boost_iter == 0 and list(loaded.channels_) == ["forest"]
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))


def test_boost_iter_is_checked_with_the_other_parameters():
    params = LatentSculpting(**preset("default")).get_params()
    check_params({**params, "boost_iter": 20})
    nll = {**params, "knn_prototypes": 0, "stack_folds": 0, "score": "nll"}
    with pytest.raises(ValueError, match="boost_iter=20 fits a boost channel that score='nll'"):
        check_params({**nll, "boost_iter": 20})
    with pytest.raises(ValueError, match="'boost_iter' parameter"):
        check_params({**params, "boost_iter": -1})
    with pytest.raises(ValueError, match="forest_trees >= 1 or boost_iter >= 1"):
        check_params({**params, "boost_iter": 0, "knn_prototypes": 0})
