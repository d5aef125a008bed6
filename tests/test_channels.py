"""Side channels: the forest's out-of-sample scores, its state, and the registry (the boosted
trees' channel is tested in test_boost.py)."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from latent_sculpting.channels import SIDE_CHANNELS, BoostChannel, ForestChannel, enabled_channels


def toy(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(600, 5)).astype(np.float32)
    y = (X[:, 0] + 0.5 * rng.normal(size=600) > 0.8).astype(int)
    return X, y


def test_forest_scores_held_out_rows_out_of_bag():
    X, y = toy()
    held_out = np.flatnonzero(y == 0)[:60]
    channel = ForestChannel(30, random_state=3)
    scores = channel.fit(X, y, held_out)
    forest = RandomForestClassifier(30, n_jobs=1, oob_score=True, random_state=3)
    oob = forest.fit(X, y).oob_decision_function_[held_out, 1]
    np.testing.assert_allclose(scores, oob)
    # In-sample votes of the same rows are another thing (the forest memorised them).
    assert np.abs(channel.score(X[held_out]) - scores).mean() > 0.02
    assert channel.resolution == pytest.approx(1 / 30)


def test_a_row_in_every_bootstrap_sample_gets_the_whole_forests_vote():
    X, y = toy(1)
    held_out = np.arange(len(y))
    scores = ForestChannel(2, random_state=0).fit(X, y, held_out)  # 2 trees: many such rows
    assert np.isfinite(scores).all()


def test_forest_state_round_trips_and_is_checked():
    X, y = toy(2)
    channel = ForestChannel(5, random_state=0)
    channel.fit(X, y, np.arange(10))
    config, arrays = channel.get_state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    restored = ForestChannel.from_state(config, arrays)
    np.testing.assert_array_equal(restored.score(X), channel.score(X))
    assert restored.resolution == channel.resolution
    with pytest.raises(ValueError, match="at least one tree"):
        ForestChannel.from_state({**config, "n_trees": 0}, arrays)


def test_registry_and_switches():
    # The forest first: its seed is drawn first, as before the booster existed.
    assert list(SIDE_CHANNELS.items()) == [("forest", ForestChannel), ("boost", BoostChannel)]
    assert enabled_channels({"forest_trees": 0}) == []
    assert enabled_channels({"forest_trees": 3}) == ["forest"]
    assert enabled_channels({"forest_trees": 0, "boost_iter": 5}) == ["boost"]
    assert enabled_channels({"forest_trees": 3, "boost_iter": 5}) == ["forest", "boost"]
