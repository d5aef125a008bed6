"""Calibration: held-out splits, thresholds, conformal and tail p-values."""

import numpy as np
import pytest

from latent_sculpting.model.calibration import (
    PERCENTILES,
    TailPValue,
    conformal_p_values,
    conformal_threshold,
    holdout_split,
    reference_split,
    thresholds,
)


def test_holdout_split_holds_out_benign_rows_only_and_is_seeded():
    y = np.r_[np.zeros(200), np.ones(50)].astype(int)
    fit, held = holdout_split(y, 0.25, np.random.default_rng(0))
    assert len(held) == 50 and (y[held] == 0).all()
    np.testing.assert_array_equal(np.sort(np.r_[fit, held]), np.arange(250))
    assert list(held) == sorted(held) and list(fit) == sorted(fit)
    _, again = holdout_split(y, 0.25, np.random.default_rng(0))
    np.testing.assert_array_equal(again, held)
    with pytest.raises(ValueError, match="at least 20 held-out benign rows"):
        holdout_split(y, 0.05, np.random.default_rng(0))
    with pytest.raises(ValueError, match="some left to fit on"):
        holdout_split(y[:30], 0.99, np.random.default_rng(0))


def test_reference_split_halves_the_held_out_rows():
    held = np.arange(10, 51)
    reference, calibration = reference_split(held, np.random.default_rng(1))
    assert len(reference) == 20 and len(calibration) == 21
    np.testing.assert_array_equal(np.sort(np.r_[reference, calibration]), held)


def test_thresholds_at_every_percentile_and_the_conformal_one():
    cal = np.arange(1, 100, dtype=float)
    by_percentile, used = thresholds(cal, 92.5, None)
    assert sorted(by_percentile) == sorted({*PERCENTILES, 92.5})
    assert used == by_percentile[92.5] == np.percentile(cal, 92.5)
    _, conformal = thresholds(cal, 92.5, 0.1)
    assert conformal == 90.0


def test_conformal_helpers_known_answers():
    cal = np.arange(1, 100, dtype=float)  # 99 scores
    assert conformal_threshold(cal, 0.1) == 90.0  # ceil(100 * 0.9) = 90th smallest
    np.testing.assert_allclose(
        conformal_p_values(cal, np.array([0.0, 99.0, 100.0])), [1.0, 2 / 100, 1 / 100]
    )
    # Too few scores for the target: no threshold guarantees it, and none is made up quietly
    # (fit and adapt refuse before this: check_calibration_rows).
    assert conformal_threshold(cal[:5], 0.01) == np.inf
    assert conformal_threshold(cal[:5], 0.01, coarse=True) == 5.0  # at most 1/6 of benign flows


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


def test_tail_p_value_interpolates_between_reference_scores():
    tail = TailPValue(tail=0.1).fit(np.arange(1.0, 101.0))
    # Halfway between the references 50 and 51, half a flow fewer is at least as high.
    assert tail.neg_log_p(np.array([50.5]))[0] == pytest.approx(-np.log((1 + 50.5) / 101))


def test_a_rounding_difference_moves_the_tail_p_value_by_a_rounding_difference():
    # A score computed in another batch can differ in its last bits (a matrix product summed
    # in another order). A step function turns that into a jump of a whole reference rank; the
    # interpolated one moves by about as little as the score did.
    rng = np.random.default_rng(3)
    reference = rng.normal(size=500)
    tail = TailPValue().fit(reference)
    at = np.sort(reference)[:450]  # below the tail, exactly on reference scores
    nudged = np.nextafter(at, np.inf)
    jump = np.abs(tail.neg_log_p(nudged) - tail.neg_log_p(at))
    assert jump.max() < 1e-9


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
    config, arrays = tail.get_state()
    with pytest.raises(ValueError, match="sorted"):
        TailPValue.from_state(config, {"reference": arrays["reference"][::-1]})
    with pytest.raises(ValueError, match="at least 10 finite"):
        TailPValue.from_state(config, {"reference": arrays["reference"][:3]})
    with pytest.raises(ValueError, match="scale must be positive"):
        TailPValue.from_state({**config, "scale_": 0.0}, arrays)


def test_a_refitted_tail_reads_its_own_reference():
    # What neg_log_p reads of the reference is computed once per fitted reference; refitting
    # the same object, or moving its threshold, must not keep the old one.
    rng = np.random.default_rng(3)
    scores = np.linspace(-1, 8, 200)
    tail = TailPValue().fit(rng.normal(size=500))
    before = tail.neg_log_p(scores)
    other = rng.normal(size=800) * 2 + 1
    tail.fit(other)
    np.testing.assert_array_equal(tail.neg_log_p(scores), TailPValue().fit(other).neg_log_p(scores))
    assert not np.array_equal(before, tail.neg_log_p(scores))
    moved = TailPValue().fit(other)
    moved.neg_log_p(scores)  # read once at the fitted threshold
    moved.threshold_ = expected_threshold = float(np.quantile(other, 0.5))
    expected = TailPValue().fit(other)
    expected.threshold_ = expected_threshold  # never read at the fitted one
    np.testing.assert_array_equal(moved.neg_log_p(scores), expected.neg_log_p(scores))
