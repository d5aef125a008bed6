"""Side channels: the forest's out-of-sample scores, its state, and the registry (the boosted
trees' channel is tested in test_boost.py)."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from latent_sculpting.model.channels.registry import (
    SIDE_CHANNELS,
    BoostChannel,
    ForestChannel,
    NeighbourChannel,
    enabled_channels,
)

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


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
    assert SIDE_CHANNELS == {
        "forest": ForestChannel,
        "boost": BoostChannel,
        "knn": NeighbourChannel,
    }
    assert enabled_channels({"forest_trees": 0}) == []
    assert enabled_channels({"forest_trees": 3}) == ["forest"]
    assert enabled_channels({"forest_trees": 3, "knn_prototypes": 8}) == ["forest", "knn"]
    assert ForestChannel.supervised and BoostChannel.supervised
    assert not NeighbourChannel.supervised
    assert all(isinstance(cls.supervised, bool) for cls in SIDE_CHANNELS.values())


def test_neighbour_distance_known_answers_and_held_out_rows_unused():
    Z = np.array([[0, 0], [3, 4], [10, 10], [0, 1], [5, 5]], dtype=np.float32)
    y = np.array([0, 0, 1, 0, 0])
    channel = NeighbourChannel(8)
    # Rows 3 and 4 are held out: their distances are to the prototypes (rows 0 and 1) alone.
    held = channel.fit(Z, y, np.array([3, 4]))
    assert sorted(map(tuple, channel.prototypes_)) == [(0.0, 0.0), (3.0, 4.0)]
    np.testing.assert_allclose(held, [1.0, np.hypot(2, 1)])
    np.testing.assert_allclose(channel.score(np.array([[3, 4], [6, 8]], np.float32)), [0.0, 5.0])


def test_neighbour_prototypes_are_k_means_centres_when_benign_rows_are_many():
    rng = np.random.default_rng(0)
    Z = np.vstack([rng.normal(size=(300, 3)) + c for c in ([0, 0, 0], [20, 0, 0])])
    channel = NeighbourChannel(2, random_state=0)
    channel.fit(Z.astype(np.float32), np.zeros(600, int), np.array([], int))
    centres = np.sort(channel.prototypes_[:, 0])
    np.testing.assert_allclose(centres, [0, 20], atol=0.5)


def test_neighbour_state_round_trips_and_is_checked():
    Z = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    channel = NeighbourChannel(16, random_state=0)
    channel.fit(Z, np.zeros(50, int), np.arange(5))
    config, arrays = channel.get_state()
    again = NeighbourChannel.from_state(config, arrays)
    np.testing.assert_array_equal(again.score(Z), channel.score(Z))
    for bad, message in (
        ({"prototypes": arrays["prototypes"][0]}, "shape"),
        ({"prototypes": arrays["prototypes"].astype(np.float64)}, "float32"),
        ({"prototypes": np.full((2, 4), np.nan, np.float32)}, "finite"),
        ({"prototypes": np.zeros((17, 4), np.float32)}, "at most 16"),
    ):
        with pytest.raises(ValueError, match=message):
            NeighbourChannel.from_state(config, bad)


def direct_least(Z: np.ndarray, P: np.ndarray) -> np.ndarray:
    """The distance to the nearest prototype, every distance computed directly in float64."""
    wide = P.astype(np.float64)
    return np.array([np.sqrt(((z.astype(np.float64) - wide) ** 2).sum(axis=1).min()) for z in Z])


@pytest.mark.parametrize("prototypes", [1, 13, 1024])
def test_the_distance_is_the_least_direct_one(prototypes):
    """The one-pass search gives the least direct float64 distance to any prototype."""
    rng = np.random.default_rng(prototypes)
    Z = rng.normal(size=(300, 20)).astype(np.float32)
    # Prototypes near some rows (distances near 0, where rounding shows) and far from others.
    near = Z[rng.integers(len(Z), size=prototypes)]
    P = (near + rng.normal(scale=1e-3, size=near.shape)).astype(np.float32)
    channel = NeighbourChannel.from_state({"n_prototypes": prototypes}, {"prototypes": P})
    out = channel.score(Z)
    np.testing.assert_allclose(out, direct_least(Z, P), rtol=1e-13, atol=0)
    # Near a prototype the direct distance keeps its digits; the expanded form loses them.
    assert np.all(out[out < 0.01] > 0)


def test_prototypes_closer_than_float32_can_tell_apart():
    """Pairs of prototypes 1e-3 apart, far from the origin: the expanded distance's rounding
    (about 1e-2 here) is larger than the gap between the pair's squared distances, so it picks
    either. A flow on a prototype is at distance 0 however it is batched (it was not: a Zeek
    flow's score moved by 0.05 with its batch, failing CI's test_watch)."""
    rng = np.random.default_rng(7)
    base = (50.0 + rng.normal(size=(32, 27))).astype(np.float32)
    twin = base.copy()
    twin[:, 0] += np.float32(1e-3)
    P = np.concatenate([base, twin])
    channel = NeighbourChannel.from_state({"n_prototypes": len(P)}, {"prototypes": P})
    together = channel.score(P)
    alone = np.concatenate([channel.score(P[i : i + 1]) for i in range(len(P))])
    assert np.all(together == 0.0) and np.all(alone == 0.0)
    Z = (P + rng.normal(scale=3e-4, size=P.shape)).astype(np.float32)
    np.testing.assert_allclose(channel.score(Z), direct_least(Z, P), rtol=1e-13, atol=0)


def test_the_distance_of_a_flow_does_not_depend_on_its_batch():
    rng = np.random.default_rng(5)
    Z = rng.normal(size=(400, 30)).astype(np.float32)
    P = (Z[:64] + rng.normal(scale=1e-4, size=(64, 30))).astype(np.float32)
    channel = NeighbourChannel.from_state({"n_prototypes": 64}, {"prototypes": P})
    together = channel.score(Z)
    alone = np.concatenate([channel.score(Z[i : i + 1]) for i in range(len(Z))])
    np.testing.assert_allclose(alone, together, rtol=1e-12, atol=1e-15)


def test_a_stored_channel_must_be_the_models_size_and_width():
    # A model file's channel is loaded with the model's size parameter and scaled width; one
    # of another size (the trees) or width is refused when loading, not when scoring.
    X, y = toy()
    held_out = np.flatnonzero(y == 0)[:50]
    for cls, size in ((ForestChannel, 5), (BoostChannel, 4), (NeighbourChannel, 16)):
        channel = cls(size, random_state=0)
        channel.fit(X, y, held_out)
        config, arrays = channel.get_state()
        cls.from_state(config, arrays, size=size, n_features=5)
        with pytest.raises(ValueError, match="reads 5 features; the model has 6"):
            cls.from_state(config, arrays, size=size, n_features=6)
        if cls is NeighbourChannel:
            # merged prototypes (adapt --keep-training-prototypes) outnumber the parameter
            cls.from_state(config, arrays, size=size + 1, n_features=5)
            continue
        with pytest.raises(ValueError, match=f"{size}.*{size + 1}"):
            cls.from_state(config, arrays, size=size + 1, n_features=5)
