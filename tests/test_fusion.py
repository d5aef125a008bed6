"""Tail p-values, Fisher's fusion and the forest channel of the ``default`` preset."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from latent_sculpting.forest import AttackForest
from latent_sculpting.fusion import TailPValue, fisher


def test_tail_p_value_is_empirical_below_the_tail_and_exponential_above():
    reference = np.arange(1.0, 101.0)  # 1 .. 100
    tail = TailPValue(tail=0.1).fit(reference[::-1])
    assert tail.threshold_ == 91.0
    assert tail.scale_ == pytest.approx(4.5)  # mean of 0 .. 9
    # Below the tail: -log((1 + #{ref >= s}) / (n + 1)), exactly.
    for s, at_least in ((0.5, 100), (50.0, 51), (90.0, 11)):
        assert tail.neg_log_p(np.array([s]))[0] == pytest.approx(-np.log((1 + at_least) / 101))
    # Continuous at u, then rising by 1 per scale.
    at_u = -np.log((1 + 10) / 101)
    above = tail.neg_log_p(np.array([91.0, 91.0 + 1e-9, 95.5, 1000.0]))
    assert above[0] == pytest.approx(at_u)
    assert above[1] == pytest.approx(at_u, abs=1e-8)
    assert above[2] == pytest.approx(at_u + 1.0)
    assert above[3] == pytest.approx(np.log(101) + 5.0)  # the extrapolation's cap


def test_tail_p_value_is_monotone_and_finite_even_for_tied_references():
    rng = np.random.default_rng(0)
    tail = TailPValue().fit(rng.exponential(size=500))
    grid = np.linspace(-1, 50, 2001)
    values = tail.neg_log_p(grid)
    assert np.all(np.diff(values) >= 0)
    in_tail = (grid > tail.threshold_) & (values < np.log(501) + tail.max_extrapolation)
    assert np.all(np.diff(values[in_tail][:-1]) > 0)  # no ties in the tail below its cap
    tied = TailPValue().fit(np.zeros(100))  # a forest that calls every benign flow 0
    out = tied.neg_log_p(np.array([0.0, 1e-6, 0.01, 1.0]))
    assert np.all(np.isfinite(out)) and out[0] < out[1] < out[2] == out[3]
    assert out[3] == pytest.approx(np.log(101) + 5.0)  # capped extrapolation
    # With a floor at one vote of a 10-tree forest, each vote costs one nat.
    voted = TailPValue(min_scale=0.1).fit(np.zeros(100)).neg_log_p(np.array([0.1, 0.3]))
    np.testing.assert_allclose(voted, [1.0, 3.0])


def test_tail_p_value_state_round_trip_and_bad_input():
    tail = TailPValue().fit(np.random.default_rng(1).normal(size=200))
    copy = TailPValue.from_state(*tail.get_state())
    grid = np.linspace(-5, 10, 101)
    np.testing.assert_array_equal(copy.neg_log_p(grid), tail.neg_log_p(grid))
    with pytest.raises(ValueError, match="at least 10"):
        TailPValue().fit(np.ones(5))
    with pytest.raises(ValueError, match="finite"):
        TailPValue().fit(np.r_[np.ones(20), np.inf])
    with pytest.raises(ValueError, match="tail must be"):
        TailPValue(tail=1.5)


def test_fisher_adds_neg_log_p_values():
    a, b = np.array([0.1, 2.0]), np.array([3.0, 0.5])
    np.testing.assert_array_equal(fisher([a, b]), [3.1, 2.5])


def _toy(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1500, 8)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] ** 2 > 1.5).astype(int)
    return X, y, rng.normal(size=(400, 8))


def test_forest_matches_scikit_learn_and_round_trips_exactly():
    X, y, X_new = _toy()
    forest = AttackForest(25, random_state=0).fit(X, y)
    sklearn_forest = RandomForestClassifier(25, n_jobs=1, random_state=0).fit(X, y)
    expected = sklearn_forest.predict_proba(X_new.astype(np.float32))[:, 1]
    np.testing.assert_allclose(forest.predict_proba(X_new), expected, atol=1e-12)
    config, arrays = forest.get_state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())  # nothing to unpickle
    restored = AttackForest.from_state(config, arrays)
    np.testing.assert_array_equal(restored.predict_proba(X_new), forest.predict_proba(X_new))


def test_forest_refuses_bad_input_and_damaged_state():
    X, y, _ = _toy(1)
    with pytest.raises(ValueError, match="benign \\(0\\) and attack \\(1\\)"):
        AttackForest(5).fit(X, np.zeros(len(X)))
    forest = AttackForest(5, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="8 columns"):
        forest.predict_proba(np.zeros((3, 7)))
    config, arrays = forest.get_state()
    with pytest.raises(ValueError, match="lacks"):
        AttackForest.from_state(config, {k: v for k, v in arrays.items() if k != "threshold"})
    arrays["offsets"] = arrays["offsets"][:-1]
    with pytest.raises(ValueError, match="inconsistent"):
        AttackForest.from_state(config, arrays)
