"""The attack forest: scikit-learn's probabilities bit for bit, exact round trips, damaged state.

``data/forest_v2_state.npz`` holds the state of a forest saved by this module as it was before
it had its own evaluator (commit 5e8fa46, which predicted with scikit-learn's ``Tree``), with
rows and the probabilities that version gave them. It was written by::

    git show 5e8fa46:src/latent_sculpting/forest.py > old_forest.py
    # then, with old_forest importable:
    rng = np.random.default_rng(0)
    X = np.repeat(np.round(rng.normal(size=(150, 6)), 1), 3, axis=0)
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 + rng.normal(size=len(X)) > 0.5).astype(int)
    forest = old_forest.AttackForest(10, random_state=0).fit(X, y)
    rows = rng.normal(size=(200, 6)).astype(np.float32)
    rows[::17, 3] = np.nan
    # saved: get_state()'s config and arrays, rows, forest.predict_proba(rows)
"""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from sklearn.ensemble import RandomForestClassifier
from small import FUSED_FAST

from latent_sculpting import LatentSculpting
from latent_sculpting.errors import ModelFileError
from latent_sculpting.model.channels.forest import MAX_DEPTH, MAX_FEATURES, MAX_TREES, AttackForest
from latent_sculpting.model.preprocessing import FeaturePreprocessor

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

V2_STATE = Path(__file__).parent / "data" / "forest_v2_state.npz"


def _toy(seed: int = 0, n_distinct: int = 150, d: int = 6):
    """Rows repeated three times with noisy labels, so that many leaves hold both classes."""
    rng = np.random.default_rng(seed)
    X = np.repeat(np.round(rng.normal(size=(n_distinct, d)), 1), 3, axis=0)
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 + rng.normal(size=len(X)) > 0.5).astype(int)
    return X, y


def _sklearn_twin(n_trees: int, X, y) -> RandomForestClassifier:
    """The forest :meth:`AttackForest.fit` grows, fitted by scikit-learn alone."""
    forest = RandomForestClassifier(n_trees, n_jobs=1, oob_score=True, random_state=0)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Some inputs do not have OOB scores")
        return forest.fit(X, y)


def _sklearn_proba(forest: RandomForestClassifier, rows: np.ndarray) -> np.ndarray:
    """``forest.predict_proba(rows)[:, 1]`` as scikit-learn computes it, inf allowed.

    ``RandomForestClassifier.predict_proba`` refuses infinite values (not NaN) in its input
    check, then sums its trees' ``predict_proba(rows, check_input=False)`` in order and divides
    by their number; this does the same without the check.
    """
    finite = ~np.isinf(rows).any(axis=1)
    total = np.zeros((len(rows), 2))
    for tree in forest.estimators_:
        total += tree.predict_proba(rows, check_input=False)
    total /= len(forest.estimators_)
    np.testing.assert_array_equal(total[finite], forest.predict_proba(rows[finite]))
    return total[:, 1]


def _probe_rows(forest: AttackForest, seed: int = 1) -> np.ndarray:
    """Random rows, rows exactly at and next to split thresholds (in float32), NaN and inf."""
    rng = np.random.default_rng(seed)
    d = forest.n_features_in_
    rows = [rng.normal(size=(300, d)).astype(np.float32)]
    arrays = forest.arrays_
    split = np.flatnonzero(arrays["left_child"] != -1)
    for node in rng.choice(split, 60, replace=False):
        edge = np.repeat(rng.normal(size=(1, d)).astype(np.float32), 3, axis=0)
        at = np.float32(arrays["threshold"][node])
        edge[:, arrays["feature"][node]] = [
            np.nextafter(at, np.float32(-np.inf)),
            at,
            np.nextafter(at, np.float32(np.inf)),
        ]
        rows.append(edge)
    special = rng.normal(size=(30, d)).astype(np.float32)
    special[:10, 0], special[10:20, 1], special[20:, 2] = np.nan, np.inf, -np.inf
    rows.append(special)
    return np.vstack(rows)


@pytest.fixture(scope="module")
def small():
    """A fitted 4-tree forest and its state, for the tests that damage a state."""
    X, y = _toy(2)
    forest = AttackForest(4, random_state=0).fit(X, y)
    return forest, *forest.get_state()


# ------------------------------------------------------------------------------- equality


def test_probabilities_equal_scikit_learn_bit_for_bit_on_random_data():
    X, y = _toy()
    forest = AttackForest(30, random_state=0).fit(X, y)
    rows = _probe_rows(forest)
    expected = _sklearn_proba(_sklearn_twin(30, X.astype(np.float32), y), rows)
    assert len(np.unique(expected)) > 50  # uneven leaf shares, not just votes
    np.testing.assert_array_equal(forest.predict_proba(rows), expected)
    # Float64 input is rounded to float32 first, as scikit-learn does.
    np.testing.assert_array_equal(forest.predict_proba(rows.astype(np.float64)), expected)


def test_probabilities_equal_scikit_learn_bit_for_bit_on_the_embedded_sample(sample_table):
    rng = np.random.default_rng(0)
    Z = FeaturePreprocessor(feature_transform="log1p").fit_transform(sample_table.X)
    y = (sample_table.labels != "BENIGN").astype(int)
    train = rng.choice(len(Z), 8000, replace=False)
    forest = AttackForest(10, random_state=0).fit(Z[train], y[train])
    expected = _sklearn_twin(10, Z[train].astype(np.float32), y[train]).predict_proba(Z)[:, 1]
    np.testing.assert_array_equal(forest.predict_proba(Z), expected)


def test_a_state_saved_before_the_own_evaluator_loads_and_predicts_the_same():
    saved = np.load(V2_STATE, allow_pickle=False)
    config = {k.split("/")[1]: int(saved[k]) for k in saved.files if k.startswith("config/")}
    arrays = {k.split("/")[1]: saved[k] for k in saved.files if k.startswith("arrays/")}
    forest = AttackForest.from_state(config, arrays)
    np.testing.assert_array_equal(forest.predict_proba(saved["rows"]), saved["proba"])
    assert np.isnan(saved["rows"]).any()  # NaN routing is part of what is compared
    _, again = forest.get_state()
    for name, array in arrays.items():
        assert again[name].dtype == array.dtype
        np.testing.assert_array_equal(again[name], array)


def test_round_trip_is_exact_and_state_is_copied(small):
    forest, config, arrays = small
    restored = AttackForest.from_state(config, arrays)
    rows = _probe_rows(forest)
    np.testing.assert_array_equal(restored.predict_proba(rows), forest.predict_proba(rows))
    config_again, arrays_again = restored.get_state()
    assert config_again == config == {"n_estimators": 4, "n_features_in_": 6}
    assert set(arrays_again) == set(arrays)
    for name, array in arrays.items():
        assert arrays_again[name].dtype == array.dtype
        np.testing.assert_array_equal(arrays_again[name], array)
    # Neither the caller's arrays nor those handed out are the forest's own.
    arrays_again["feature"][:] = 10**6
    mine = {k: v.copy() for k, v in arrays.items()}
    copy = AttackForest.from_state(config, mine)
    mine["threshold"][:] = np.nan
    np.testing.assert_array_equal(copy.predict_proba(rows), forest.predict_proba(rows))
    assert not forest.arrays_["threshold"].flags.writeable


def test_predict_and_fit_refuse_bad_input(small):
    forest, _, _ = small
    with pytest.raises(ValueError, match="6 columns"):
        forest.predict_proba(np.zeros((3, 5)))
    assert forest.predict_proba(np.zeros((0, 6))).shape == (0,)
    with pytest.raises(ValueError, match="not fitted"):
        AttackForest(3).predict_proba(np.zeros((1, 6)))
    with pytest.raises(ValueError, match=f"between 1 and {MAX_TREES}"):
        AttackForest(MAX_TREES + 1)
    with pytest.raises(ValueError, match="benign \\(0\\) and attack \\(1\\)"):
        AttackForest(3).fit(np.zeros((4, 2)), np.zeros(4))


# --------------------------------------------------------------------------- damaged state


def _node(arrays, tree: int, nth_split: int = 1) -> tuple[int, int]:
    """Global and local index of the ``nth_split``-th split node of ``tree`` (0: its root)."""
    start, stop = arrays["offsets"][tree], arrays["offsets"][tree + 1]
    local = np.flatnonzero(arrays["left_child"][start:stop] != -1)[nth_split]
    return int(start + local), int(local)


def _leaf(arrays, tree: int) -> tuple[int, int]:
    start = arrays["offsets"][tree]
    local = int(np.flatnonzero(arrays["left_child"][start:] == -1)[0])
    return int(start + local), local


def _set(name, value, where=_node):
    """A damage: ``arrays[name]`` at a node of tree 1 set to ``value``; its message's prefix."""

    def damage(config, arrays):
        index, local = where(arrays, 1)
        arrays[name][index] = value(arrays, index) if callable(value) else value
        return f"forest tree 1 node {local}: "

    return damage


def _size(arrays, index):
    """The first index past the node's tree."""
    return int(np.diff(arrays["offsets"])[np.searchsorted(arrays["offsets"], index, "right") - 1])


def _replace(name, make):
    def damage(config, arrays):
        arrays[name] = make(arrays[name])
        return ""

    return damage


def _config(key, value):
    def damage(config, arrays):
        config[key] = value
        return "forest config: "

    return damage


def _drop(name):
    def damage(config, arrays):
        del arrays[name]
        return ""

    return damage


def _offsets(change):
    def damage(config, arrays):
        change(arrays["offsets"])
        return ""

    return damage


def _depth(change):
    def damage(config, arrays):
        change(arrays["max_depth"])
        return "forest tree 1: "

    return damage


def _share(config, arrays):
    """Point a node's right child at its left child: that one has two parents."""
    index, _ = _node(arrays, 1)
    left = arrays["right_child"][index] = arrays["left_child"][index]
    return f"forest tree 1 node {left}: "


def _cut(config, arrays):
    """Make a split node a leaf: its subtree is left without a parent."""
    index, _ = _node(arrays, 1)
    left = arrays["left_child"][index]
    arrays["left_child"][index] = arrays["right_child"][index] = -1
    return f"forest tree 1 node {left}: "


def _fewer_features(config, arrays):
    config["n_features_in_"] = 3
    return "forest tree "


DAMAGES = {
    "left child far outside": (_set("left_child", 10**9), r"left child 1000000000 outside "),
    "right child just outside": (_set("right_child", _size), r"right child \d+ outside the tree"),
    "negative child": (_set("right_child", -5), "right child -5 negative"),
    "one child a leaf": (_set("left_child", -1), r"left child -1 but the other child \d+"),
    "cycle to the root": (_set("left_child", 0), "left child 0 does not come after the node"),
    "self loop": (
        _set("right_child", lambda a, i: i - a["offsets"][1]),
        r"right child \d+ does not come after the node",
    ),
    "shared node": (_share, r"the child of 2 nodes"),
    "unreachable subtree": (_cut, "not the child of any node"),
    "feature just out of range": (_set("feature", 6), "feature 6 outside 0-5"),
    "feature far out of range": (_set("feature", 999), "feature 999 outside 0-5"),
    "negative feature": (_set("feature", -2), "feature -2 outside 0-5"),
    "NaN threshold": (_set("threshold", np.nan), "threshold nan is not finite"),
    "infinite threshold": (_set("threshold", -np.inf), "threshold -inf is not finite"),
    "missing_go_to_left not 0/1": (_set("missing_go_to_left", 7), "missing_go_to_left 7 is not"),
    "negative value": (_set("values", [-1.0, 2.0], _leaf), r"leaf values \[-1.0, 2.0\]"),
    "NaN value": (_set("values", [np.nan, 1.0], _leaf), r"leaf values \[nan, 1.0\]"),
    "zero row sum": (_set("values", [0.0, 0.0], _leaf), r"leaf values \[0.0, 0.0\]"),
    "overflowing row sum": (_set("values", [1e308, 1e308], _leaf), r"with a sum > 0"),
    "offsets not from 0": (_offsets(lambda o: o.__setitem__(0, 1)), "offsets must start at 0"),
    "empty tree": (_offsets(lambda o: o.__setitem__(2, o[1])), "increase strictly"),
    "offsets past the nodes": (_offsets(lambda o: o.__setitem__(-1, o[-1] + 1)), "end at"),
    "max_depth too large": (_depth(lambda d: d.__setitem__(1, d[1] + 1)), r"leaves reach depth"),
    "max_depth too small": (_depth(lambda d: d.__setitem__(1, d[1] - 1)), r"leaves reach depth"),
    "max_depth over the cap": (
        _depth(lambda d: d.__setitem__(1, MAX_DEPTH + 1)),
        f"max_depth {MAX_DEPTH + 1} outside",
    ),
    "missing array": (_drop("values"), r"lacks \['values'\]"),
    "unknown array": (
        lambda c, a: (a.__setitem__("impurity", a["threshold"]), "")[1],
        r"unknown arrays \['impurity'\]",
    ),
    "float children": (
        _replace("left_child", lambda a: a.astype(np.float64)),
        "forest left_child: expected integer dtype, got float64",
    ),
    "integer thresholds": (
        _replace("threshold", lambda a: a.astype(np.int64)),
        "forest threshold: expected floating dtype",
    ),
    "boolean missing_go_to_left": (
        _replace("missing_go_to_left", lambda a: a.astype(bool)),
        "expected integer dtype, got bool",
    ),
    "unsigned child that would wrap": (
        _replace("right_child", lambda a: np.where(a == -1, 2**64 - 1, a).astype(np.uint64)),
        r"forest right_child\[\d+\]: 18446744073709551615 outside",
    ),
    "values 1-D": (_replace("values", lambda a: a[:, 1].copy()), "forest values: expected 2-D"),
    "threshold 2-D": (
        _replace("threshold", lambda a: a[:, None]),
        "forest threshold: expected 1-D",
    ),
    "short threshold": (_replace("threshold", lambda a: a[:-1]), "inconsistent: threshold"),
    "three value columns": (
        _replace("values", lambda a: np.hstack([a, a[:, :1]])),
        r"inconsistent: values has shape \(\d+, 3\)",
    ),
    "offsets for fewer trees": (_replace("offsets", lambda a: a[:-1]), "inconsistent: offsets"),
    "not an array": (_replace("feature", lambda a: a.tolist()), "expected a NumPy array"),
    "too many trees": (_config("n_estimators", 10**9), f"1000000000 outside 1-{MAX_TREES}"),
    "too many features": (_config("n_features_in_", MAX_FEATURES + 1), "outside 1-"),
    "fewer features than used": (_fewer_features, r"feature [345] outside 0-2"),
    "config count not an int": (_config("n_estimators", 4.0), "must be an integer"),
    "config bool": (_config("n_features_in_", True), "must be an integer"),
    "config with other keys": (
        lambda c, a: (c.__setitem__("max_depth", 3), "forest config: ")[1],
        "expected keys",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES.values(), ids=DAMAGES.keys())
def test_a_damaged_state_is_refused_naming_tree_node_and_field(small, damage):
    forest, config, arrays = small
    config, arrays = dict(config), {k: v.copy() for k, v in arrays.items()}
    make, message = damage
    prefix = make(config, arrays)
    with pytest.raises(ModelFileError, match=f"^{re.escape(prefix)}.*{message}"):
        AttackForest.from_state(config, arrays)


def test_the_child_index_that_crashed_scoring_is_refused_in_a_model_file(tmp_path):
    # A model file whose forest points outside its tree used to crash `sculpt score` and
    # `sculpt serve` with a segmentation fault on the first flow.
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(300, 4)), rng.normal(size=(150, 4)) + 6]).astype(np.float32)
    y = np.r_[np.zeros(300), np.ones(150)].astype(int)
    model = LatentSculpting(**{**FUSED_FAST, "forest_trees": 5}, random_state=0).fit(X, y)
    path = model.save(tmp_path / "model.sculpt")
    with safe_open(str(path), framework="pt") as opened:
        metadata = opened.metadata()
    tensors = load_file(path)
    tensors["channel.forest.left_child"][0] = 10**9
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(ValueError, match="forest tree 0 node 0: left child 1000000000 outside"):
        LatentSculpting.load(path)
    tensors["channel.forest.left_child"][0] = 1
    tensors["channel.forest.feature"][0] = 999
    save_file(tensors, path, metadata=metadata)
    with pytest.raises(ValueError, match="forest tree 0 node 0: feature 999 outside 0-3"):
        LatentSculpting.load(path)


# ------------------------------------------------------------------------- property based


def _mutate(draw, config: dict, arrays: dict) -> None:
    """One change to a valid state: a value, a dtype, a length, a missing array or the config.

    Most changes are to one value, at a position drawn over the whole array, so that leaves,
    split nodes and every tree are hit alike.
    """
    kind = draw(st.sampled_from(["value"] * 5 + ["dtype", "length", "drop", "config"]))
    if kind == "config":
        key = draw(st.sampled_from(sorted(config)))
        config[key] = draw(st.one_of(st.integers(-2, 10**7), st.floats(), st.none()))
        return
    name = draw(st.sampled_from(sorted(arrays)))
    if kind == "drop":
        del arrays[name]
    elif kind == "length":
        array = arrays[name]
        longer = draw(st.booleans())
        arrays[name] = np.concatenate([array, array[-1:]]) if longer else array[:-1]
    elif kind == "dtype":
        dtype = draw(st.sampled_from(["int8", "int32", "uint64", "float32", "bool", "float64"]))
        with np.errstate(invalid="ignore", over="ignore"):
            arrays[name] = arrays[name].astype(dtype)
    else:
        flat = arrays[name].reshape(-1)
        if flat.size == 0:  # a one-element array (a booster's baseline) shortened before
            return
        position = draw(st.integers(0, flat.size - 1))
        integer = np.issubdtype(flat.dtype, np.integer)
        if integer:
            info = np.iinfo(flat.dtype)
            small = st.integers(max(-3, info.min), min(40, info.max))
            value = draw(st.one_of(small, st.integers(info.min, info.max)))
        else:
            value = draw(st.one_of(st.sampled_from([np.nan, np.inf, -1.0, 0.0]), st.floats()))
        with np.errstate(invalid="ignore", over="ignore"):
            flat[position] = value


def load_mutated(draw, load, config: dict, arrays: dict, name: str):
    """``load`` of a copy of a valid state changed once or twice (:func:`_mutate`); None when
    it was refused, as a damaged state must be, by a ModelFileError that starts with ``name``."""
    config, arrays = dict(config), {k: v.copy() for k, v in arrays.items()}
    for _ in range(draw(st.integers(1, 2))):
        if arrays:
            _mutate(draw, config, arrays)
    try:
        return load(config, arrays)
    except ModelFileError as error:
        assert str(error).startswith(f"{name} ")
        return None


def fit_width(rows: np.ndarray, width: int) -> np.ndarray:
    """``rows`` cut or padded with zeros to ``width`` columns (a mutated config may name more
    columns than were fitted)."""
    return np.pad(rows, ((0, 0), (0, max(0, width - rows.shape[1]))))[:, :width]


# Derandomised, without an example database: the same examples on every run and machine.
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(data=st.data())
def test_any_mutation_loads_and_predicts_probabilities_or_is_refused_clearly(small, data):
    forest, config, arrays = small
    loaded = load_mutated(data.draw, AttackForest.from_state, config, arrays, "forest")
    if loaded is None:
        return
    # Every leaf holds training rows, so a damaged leaf reached by none cannot go unnoticed.
    rows = np.vstack([_toy(2)[0].astype(np.float32), _probe_rows(forest, seed=3)])
    rows = fit_width(rows, loaded.n_features_in_)
    proba = loaded.predict_proba(rows)
    assert proba.shape == (len(rows),)
    assert np.all(np.isfinite(proba)) and np.all((proba >= 0) & (proba <= 1))
