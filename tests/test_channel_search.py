"""The design search's weight rules (benchmarks/design/channel_search.py): the default's channels
and
weights were chosen with them, so a leak here would have chosen them on the folds they report."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "design"))
import channel_search as cs  # noqa: E402


def _criterion_table(values: dict[tuple[float, ...], float], grid) -> np.ndarray:
    """A fold's table (weightings x AUROC and recall at 5, 1, 0.1 %) whose criterion, the mean
    of AUROC and recall at 1 %, is ``values[weights]`` (0 for a weighting not named)."""
    table = np.zeros((len(grid), 1 + len(cs.FPRS)))
    for weights, value in values.items():
        table[grid.index(weights), 0] = value
        table[grid.index(weights), 1 + cs.FPRS.index("0.01")] = value
    return table


def _logs(rng) -> list[dict[str, np.ndarray]]:
    parts = {"calibration": 300, "test_benign": 300, "test_attack": 100}
    return [{p: rng.exponential(size=n) for p, n in parts.items()} for _ in range(2)]


def test_weights_for_a_fold_are_chosen_on_the_other_folds_only():
    # Folds A and B favour channel 1 alone; fold C favours channel 2 so strongly that, were its
    # own result pooled with the others, the equal weighting (1, 1) would win for C as well.
    grid = cs.weight_grid(2)
    one, both, two = (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)
    folds = {
        Path("X___A-seed0.npz"): {one: 0.8, both: 0.7, two: 0.5},
        Path("X___B-seed0.npz"): {one: 0.8, both: 0.7, two: 0.5},
        Path("X___C-seed0.npz"): {one: 0.5, both: 0.9, two: 1.0},
    }
    rng = np.random.default_rng(0)
    tables = {path: _criterion_table(values, grid) for path, values in folds.items()}
    logs_of = {path: _logs(rng) for path in folds}
    frame = cs.learned(list(folds), ["a", "b"], tables=(grid, logs_of, tables))
    chosen = dict(zip(frame["fold"], frame["weights"], strict=True))
    # A: B and C pooled, (1, 1) 0.80 beats (0, 1) 0.75 and (1, 0) 0.65; C: A and B pooled,
    # (1, 0) 0.80; with C's own row pooled, (1, 1) would have won (0.77 against 0.70).
    assert chosen == {"X___A-seed0": both, "X___B-seed0": both, "X___C-seed0": one}


def test_weight_grid_has_every_weighting_but_all_zeros():
    grid = cs.weight_grid(3)
    assert len(grid) == 3**3 - 1 == len(set(grid))
    assert (1.0, 1.0, 1.0) in grid and (0.0, 0.0, 0.0) not in grid


def test_one_standard_error_rule_keeps_equal_weights_within_noise():
    grid = cs.weight_grid(2)
    equal, best = grid.index((1.0, 1.0)), grid.index((1.0, 0.0))
    noisy = np.zeros((4, len(grid)))
    noisy[:, equal] = [0.5, 0.5, 0.5, 0.5]
    noisy[:, best] = [0.9, 0.2, 0.9, 0.2]  # ahead by 0.05 on average, SE of the gap 0.20
    assert cs.AGGREGATES["one-se"](noisy, grid) == equal
    clear = noisy.copy()
    clear[:, best] = [0.7, 0.71, 0.69, 0.7]  # ahead by 0.2, SE about 0.004
    assert cs.AGGREGATES["one-se"](clear, grid) == best


def test_novel_half_chooses_on_the_folds_the_first_channel_alone_misses():
    grid = cs.weight_grid(2)
    alone, equal = grid.index((1.0, 0.0)), grid.index((1.0, 1.0))
    table = np.zeros((4, len(grid)))
    # Folds 0 and 1: the first channel alone finds the family, and nothing beats it there.
    # Folds 2 and 3: it misses; equal weights are best. Over all four, alone wins (0.6 > 0.55).
    table[:, alone] = [1.0, 1.0, 0.2, 0.2]
    table[:, equal] = [0.5, 0.5, 0.6, 0.6]
    assert cs.AGGREGATES["mean"](table, grid) == alone
    assert cs.AGGREGATES["novel-half"](table, grid) == equal


@pytest.mark.parametrize("rule", ["sum", "max"])
def test_weighted_scores_ignore_channels_of_weight_zero(rule):
    rng = np.random.default_rng(1)
    logs = _logs(rng)
    only_first = cs.weighted(logs, (1.0, 0.0), rule)
    for part, values in only_first.items():
        np.testing.assert_array_equal(values, logs[0][part])
