"""Statistics of the benchmark: known answers for the spread, the bootstrap and the ranks."""

from __future__ import annotations

import numpy as np
import pytest

from latent_sculpting.research.benchmark.statistics import (
    friedman_nemenyi,
    mean_std,
    paired_bootstrap,
    verdict,
)


def test_mean_std_is_the_sample_std():
    stat = mean_std([1.0, 2.0, 3.0, float("nan")])
    assert stat == {"mean": 2.0, "std": 1.0, "n": 3}  # ddof=1: sqrt(2 / 2); ddof=0 gives 0.816
    one = mean_std([0.5])
    assert one["mean"] == 0.5 and np.isnan(one["std"]) and one["n"] == 1


def test_bootstrap_of_a_constant_difference_is_that_difference():
    a = np.array([0.9, 0.8, 0.7, 0.95])
    out = paired_bootstrap(a, a - 0.1)
    assert out["difference"] == pytest.approx(0.1)
    assert out["low"] == pytest.approx(0.1) and out["high"] == pytest.approx(0.1)
    assert out["verdict"] == "higher" and out["n"] == 4


def test_bootstrap_interval_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    b = rng.uniform(size=400)
    diff = rng.normal(0.5, 1.0, size=400)
    out = paired_bootstrap(b + diff, b, n_resamples=20_000)
    half = 1.96 * diff.std(ddof=1) / np.sqrt(400)  # ~0.098
    assert out["difference"] == pytest.approx(diff.mean())
    assert out["low"] == pytest.approx(diff.mean() - half, abs=0.01)
    assert out["high"] == pytest.approx(diff.mean() + half, abs=0.01)


def test_an_interval_containing_zero_is_a_tie():
    rng = np.random.default_rng(2)
    b = rng.uniform(size=30)
    out = paired_bootstrap(b + rng.normal(0, 0.01, size=30), b)
    assert out["low"] < 0 < out["high"] and out["verdict"] == "tie"
    assert verdict(-0.1, 0.2) == "tie" and verdict(0.01, 0.2) == "higher"
    assert verdict(-0.3, -0.2) == "lower"
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1, 2], [1])


def test_friedman_and_nemenyi_on_a_hand_made_table():
    # Four folds, three methods, A always best and C always worst: ranks 1, 2, 3.
    table = np.array([[0.9, 0.8, 0.7], [0.95, 0.9, 0.5], [0.7, 0.6, 0.2], [0.99, 0.98, 0.97]])
    out = friedman_nemenyi(table, ["A", "B", "C"])
    assert out["mean_rank"] == {"A": 1.0, "B": 2.0, "C": 3.0} and out["n_blocks"] == 4
    # chi2_F = 12 N / (k (k + 1)) * sum(R^2) - 3 N (k + 1) = 4 * 14 - 48 = 8 (Demšar 2006).
    assert out["friedman_statistic"] == pytest.approx(8.0)
    assert out["friedman_p"] == pytest.approx(np.exp(-4.0))  # chi2 with 2 dof: exp(-x / 2)
    # CD = q_0.05 sqrt(k (k + 1) / (6 N)), q_0.05 = 2.343 for k = 3 (Demšar's table 5).
    assert out["critical_difference"] == pytest.approx(2.343 * np.sqrt(12 / 24), abs=1e-3)


def test_friedman_ties_and_missing_blocks():
    table = np.array([[0.5, 0.5, 0.9], [0.4, 0.4, 0.8], [np.nan, 0.1, 0.2]])
    out = friedman_nemenyi(table, ["A", "B", "C"])
    assert out["n_blocks"] == 2  # the block with a missing value is left out
    assert out["mean_rank"] == {"A": 2.5, "B": 2.5, "C": 1.0}
    two = friedman_nemenyi(np.array([[0.1, 0.2], [0.3, 0.4]]), ["A", "B"])
    assert two["friedman_p"] is None and two["critical_difference"] is None
    assert two["mean_rank"] == {"A": 2.0, "B": 1.0}
