"""Tree ensembles: known answers of both aggregations, input dtypes, and every damaged array.

The forest's damages (``test_forest.DAMAGES``) exercise the validator shared by every ensemble
through a forest's state; here the same structural damages are made to a booster's state, and
the damages only a ``"sum"`` ensemble can have are added.
"""

import re

import numpy as np
import pytest
from test_forest import DAMAGES as FOREST_DAMAGES

from latent_sculpting.errors import ModelFileError
from latent_sculpting.model.channels.boost import AttackBooster
from latent_sculpting.model.channels.trees import AGGREGATIONS, MAX_DEPTH, TreeEnsemble


def _stumps(aggregation: str) -> dict[str, np.ndarray]:
    """Two trees: a stump on feature 0 at 0.1, and a depth-2 tree on features 1 then 0.

    Tree 1: node 0 splits feature 1 at 0; its left child (node 1) is a leaf, its right child
    (node 2) splits feature 0 at -1 into leaves 3 and 4. NaN goes left at the stump, right at
    tree 1's root.
    """
    arrays = {
        "left_child": np.array([1, -1, -1, 1, -1, 3, -1, -1]),
        "right_child": np.array([2, -1, -1, 2, -1, 4, -1, -1]),
        "feature": np.array([0, -2, -2, 1, -2, 0, -2, -2]),
        "threshold": np.array([0.1, -2, -2, 0.0, -2, -1.0, -2, -2]),
        "missing_go_to_left": np.array([1, 0, 0, 0, 0, 0, 0, 0], dtype=np.uint8),
        "offsets": np.array([0, 3, 8]),
        "max_depth": np.array([1, 2]),
    }
    if aggregation == "mean_share":
        # Attack shares: stump 0.25 left, 1.0 right; tree 1: 0.5, then 0.0 / 0.75.
        arrays["values"] = np.array(
            [[1, 1], [3, 1], [0, 2], [1, 1], [1, 1], [1, 1], [4, 0], [1, 3]], dtype=np.float64
        )
    else:
        arrays["values"] = np.array([9.0, -1.0, 2.0, 9.0, 0.5, 9.0, -4.0, 8.0])
        arrays["baseline"] = np.array([0.25])
    return arrays


def _ensemble(aggregation: str, dtype=np.float64, arrays=None) -> TreeEnsemble:
    return TreeEnsemble(
        _stumps(aggregation) if arrays is None else arrays,
        n_trees=2,
        n_features=2,
        aggregation=aggregation,
        dtype=dtype,
        name="trees",
    )


ROWS = np.array([[0.0, -1.0], [0.0, 5.0], [-3.0, 5.0], [0.5, 0.0], [np.nan, np.nan]])


def test_known_answers_of_both_aggregations():
    # Row by row: (stump leaf, tree-1 leaf). NaN: stump left, tree 1 right then right.
    shares = _ensemble("mean_share").predict(ROWS)
    np.testing.assert_array_equal(
        shares, [(0.25 + 0.5) / 2, (0.25 + 0.75) / 2, (0.25 + 0.0) / 2, (1.0 + 0.5) / 2, 0.5]
    )
    sums = _ensemble("sum").predict(ROWS)
    np.testing.assert_array_equal(
        sums, [0.25 - 1 + 0.5, 0.25 - 1 + 8, 0.25 - 1 - 4, 0.25 + 2 + 0.5, 0.25 - 1 + 8]
    )
    assert _ensemble("sum").predict(np.zeros((0, 2))).shape == (0,)


def test_inputs_are_cast_to_the_ensembles_dtype_before_the_comparison():
    # 0.1 in float32 is just above the float64 threshold 0.1: it goes right there.
    row = np.array([[0.1, -1.0]])
    assert _ensemble("sum", np.float64).predict(row)[0] == 0.25 - 1 + 0.5
    assert _ensemble("sum", np.float32).predict(row)[0] == 0.25 + 2 + 0.5
    assert _ensemble("sum", np.float64).predict(row.astype(np.float32))[0] == 0.25 + 2 + 0.5


def test_state_is_copied_and_read_only():
    arrays = _stumps("sum")
    trees = _ensemble("sum", arrays=arrays)
    arrays["baseline"][0] = 100.0
    assert trees.predict(ROWS[:1])[0] == 0.25 - 1 + 0.5
    assert not trees.arrays_["values"].flags.writeable
    copy = trees.get_arrays()
    copy["values"][:] = 0
    assert trees.arrays_["values"][1] == -1.0


def test_bad_arguments_and_inputs_are_refused():
    with pytest.raises(ValueError, match="aggregation must be one of"):
        _ensemble("median")
    with pytest.raises(ValueError, match="dtype must be"):
        _ensemble("sum", np.float16)
    with pytest.raises(ValueError, match="X must have 2 columns"):
        _ensemble("sum").predict(np.zeros((2, 3)))
    assert set(AGGREGATIONS) == {"mean_share", "sum"}


# --------------------------------------------------------------------------- damaged state


def _sum_damage(name, value, where=lambda a: int(np.flatnonzero(a["left_child"] == -1)[0])):
    def damage(arrays):
        arrays[name][where(arrays)] = value

    return damage


def _set_array(name, make):
    def damage(arrays):
        arrays[name] = make(arrays[name])

    return damage


SUM_DAMAGES = {
    "NaN leaf value": (_sum_damage("values", np.nan), r"^trees tree 0 node 1: leaf value nan"),
    "infinite leaf value": (_sum_damage("values", np.inf), "leaf value inf is not finite"),
    "NaN baseline": (_sum_damage("baseline", np.nan, lambda a: 0), "^trees baseline nan"),
    "infinite baseline": (_sum_damage("baseline", -np.inf, lambda a: 0), "baseline -inf"),
    "leaves that overflow together": (
        lambda a: a["values"].__setitem__([1, 6], 1e308),
        "add up to more than the float range",
    ),
    "baseline that overflows with a leaf": (
        lambda a: (a["values"].__setitem__(1, 1e308), a["baseline"].__setitem__(0, 1e308)),
        "add up to more than the float range",
    ),
    "two baselines": (
        _set_array("baseline", lambda b: np.r_[b, b]),
        r"inconsistent: baseline has shape \(2,\)",
    ),
    "no baseline": (lambda a: a.pop("baseline"), r"lacks \['baseline'\]"),
    "integer baseline": (_set_array("baseline", lambda b: b.astype(int)), "expected floating"),
    "values of two columns": (
        _set_array("values", lambda v: np.c_[v, v]),
        "trees values: expected 1-D",
    ),
    "not a dict": (None, "expected a dict of arrays"),
}


@pytest.mark.parametrize("damage", SUM_DAMAGES.values(), ids=SUM_DAMAGES.keys())
def test_damages_only_a_sum_can_have_are_refused(damage):
    make, message = damage
    arrays = _stumps("sum")
    if make is None:
        arrays = list(arrays.items())
    else:
        make(arrays)
    with pytest.raises(ModelFileError, match=message):
        _ensemble("sum", arrays=arrays)


def test_a_split_nodes_value_is_never_read_so_it_may_be_anything():
    arrays = _stumps("sum")
    arrays["values"][[0, 3, 5]] = np.nan
    expected = _ensemble("sum").predict(ROWS)
    np.testing.assert_array_equal(_ensemble("sum", arrays=arrays).predict(ROWS), expected)


@pytest.fixture(scope="module")
def booster_state():
    """A fitted 4-tree booster's state on 6 features (the forest's damages assume 6)."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 6))
    y = (X[:, 0] + 0.5 * X[:, 1] ** 2 + rng.normal(size=len(X)) > 0.5).astype(int)
    config, arrays = AttackBooster(4, random_state=0).fit(X, y).get_state()
    # "fewer features than used" expects a split on feature 3, 4 or 5 to be met first.
    assert np.isin(arrays["feature"][arrays["left_child"] != -1], [3, 4, 5]).any()
    return config, arrays


#: The forest's damages that are not about its two-column weights or its config's tree count.
STRUCTURAL = {
    name: damage
    for name, damage in FOREST_DAMAGES.items()
    if not any(word in name for word in ("value", "row sum", "too many trees", "config count"))
}


@pytest.mark.parametrize("damage", STRUCTURAL.values(), ids=STRUCTURAL.keys())
def test_the_forests_structural_damages_are_refused_in_a_boosters_state(booster_state, damage):
    config, arrays = booster_state
    config, arrays = dict(config), {k: v.copy() for k, v in arrays.items()}
    make, message = damage
    prefix = make(config, arrays).replace("forest", "boost")
    message = message.replace("forest", "boost")
    with pytest.raises(ModelFileError, match=f"^{re.escape(prefix)}.*{message}"):
        AttackBooster.from_state(config, arrays)


def test_only_the_forests_weight_and_tree_count_damages_are_left_out():
    # Guards the filter above: a new structural damage of the forest's is made to boosters too.
    assert set(FOREST_DAMAGES) - set(STRUCTURAL) == {
        "negative value",
        "NaN value",
        "zero row sum",
        "overflowing row sum",
        "values 1-D",
        "three value columns",
        "too many trees",
        "config count not an int",
    }
    assert f"max_depth {MAX_DEPTH + 1} outside" in STRUCTURAL["max_depth over the cap"][1]
