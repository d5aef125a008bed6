"""A random forest's attack probability, held as validated arrays and evaluated without sklearn.

The ``default`` preset fuses the flow's likelihood with a supervised channel: a random forest on
the same scaled features, trained on benign flows against the *known* attacks. On the zero-shot
protocol such a forest ranks most withheld attacks well, because they resemble known ones in the
directions its axis-aligned splits use, and it misses what resembles nothing known (withheld
Infiltration, a withheld port scan), which the flow catches (docs/presets.md).

scikit-learn fits. The fitted trees are then copied, through the public ``tree_`` attributes,
into flat node arrays (the arrays a model file stores), and this module predicts from those
arrays itself: no private scikit-learn structure is ever filled from a file. A model file's
arrays are validated one by one before anything is built from them
(:meth:`AttackForest.from_state`); a damaged one raises
:class:`~latent_sculpting.errors.ModelFileError` naming the tree, node and field.

The evaluator is a numba kernel, compiled on first use and cached on disk. It takes a block of
rows through one tree at a time, level by level down to the tree's depth, every leaf being its
own child: each step is the same branch-free load, compare and load for every row of the block,
so the rows proceed independently and the processor never waits on the data-dependent branch
that bounds a row-by-row walk such as scikit-learn's ``Tree.predict``.
``benchmarks/bench_forest.py`` measures the candidates on one thread: scikit-learn's walk, the
same walk in numba, the level-by-level walk in NumPy (one array pass per level over every tree
and row costs far more than it saves) and treelite's GTIL (a further compiled dependency, and
slower than scikit-learn there). The block walk is the fastest and exact; numba, which the
``baselines`` extra already needed through PyOD, becomes a core dependency for it.

The kernel computes what scikit-learn computes, bit for bit: a float32 feature against a
float64 threshold (left when ``x <= threshold``; a NaN goes where ``missing_go_to_left`` says),
a leaf's attack weight over its row sum (scikit-learn's leaf values are already shares, so the
division changes nothing for a forest it fits; it keeps every saved model's probabilities as
they were), and the trees summed in order and the sum divided by their number. Tests compare it
with ``RandomForestClassifier.predict_proba``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numba
import numpy as np
from sklearn.ensemble import RandomForestClassifier

from .errors import ModelFileError

__all__ = ["MAX_DEPTH", "MAX_FEATURES", "MAX_NODES_PER_TREE", "MAX_TREES", "AttackForest"]

#: Size budget of a forest, checked from the config and the arrays' shapes before any array is
#: read. Trees grown to purity on the embedded sample have a few hundred nodes and depth below
#: 30; the caps leave room for the full dataset (a tree cannot have more than twice as many
#: nodes as it has distinct training rows) and refuse what no fit here produces.
MAX_TREES = 10_000
MAX_FEATURES = 100_000
MAX_NODES_PER_TREE = 2**23
#: A tree's depth bounds the kernel's work per row, so it is capped too.
MAX_DEPTH = 512

#: The arrays of :meth:`AttackForest.get_state`: (number of dimensions, dtype kind, canonical
#: dtype). Node fields are concatenated over the trees; each tree's node indices are local
#: (0 is its root) and ``offsets[t]:offsets[t + 1]`` are tree ``t``'s rows. As in scikit-learn,
#: a leaf has both children -1; ``values`` holds each node's benign and attack weights.
_ARRAYS = {
    "left_child": (1, "i", np.int64),
    "right_child": (1, "i", np.int64),
    "feature": (1, "i", np.int64),
    "threshold": (1, "f", np.float64),
    "missing_go_to_left": (1, "i", np.uint8),
    "values": (2, "f", np.float64),
    "offsets": (1, "i", np.int64),
    "max_depth": (1, "i", np.int64),
}
_NODE_ARRAYS = ("left_child", "right_child", "feature", "threshold", "missing_go_to_left")
_CONFIG_KEYS = {"n_estimators": MAX_TREES, "n_features_in_": MAX_FEATURES}
#: Rows taken through a tree together by the kernel: enough independent walks to keep the
#: processor busy, few enough that their node indices stay in the first-level cache.
_BLOCK = 64


class AttackForest:
    """Random forest probability that a flow is an attack, kept as plain validated arrays.

    Parameters
    ----------
    n_estimators : int, default=100
        Trees, between 1 and :data:`MAX_TREES`.
    random_state : int or None, default=None

    Attributes
    ----------
    n_features_in_ : int
    arrays_ : dict of str to numpy.ndarray
        The fitted trees as validated node arrays, those of :meth:`get_state` (read-only).
    oob_proba_ : numpy.ndarray
        Out-of-bag attack probability of each training row: the vote of the trees whose
        bootstrap sample left the row out, an honest score for a row the forest was fitted on
        (NaN where no tree left it out). Set by :meth:`fit` only; not stored.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> forest = AttackForest(10, random_state=0).fit(X, (X[:, 0] > 0).astype(int))
    >>> forest.predict_proba(np.array([[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0]])).tolist()
    [1.0, 0.0]
    >>> copy = AttackForest.from_state(*forest.get_state())
    >>> bool(np.array_equal(copy.predict_proba(X), forest.predict_proba(X)))
    True
    """

    def __init__(self, n_estimators: int = 100, *, random_state: int | None = None) -> None:
        if not 1 <= n_estimators <= MAX_TREES:
            raise ValueError(f"n_estimators must be between 1 and {MAX_TREES}, got {n_estimators}")
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> AttackForest:
        """Fit on scaled features ``X`` with 0 (benign) / 1 (known attack) targets ``y``."""
        y = np.asarray(y)
        if set(np.unique(y).tolist()) != {0, 1}:
            raise ValueError("the forest needs benign (0) and attack (1) rows")
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2 or not 1 <= X.shape[1] <= MAX_FEATURES:
            raise ValueError(f"X must have 1 to {MAX_FEATURES} columns, got shape {X.shape}")
        forest = RandomForestClassifier(
            self.n_estimators, n_jobs=1, oob_score=True, random_state=self.random_state
        )
        with warnings.catch_warnings():
            # With few trees some rows are in every bootstrap sample; oob_proba_ says so (NaN).
            warnings.filterwarnings("ignore", "Some inputs do not have OOB scores")
            forest.fit(X, y)
        config = {"n_estimators": self.n_estimators, "n_features_in_": X.shape[1]}
        self._load(config, _sklearn_arrays(forest))
        self.oob_proba_ = forest.oob_decision_function_[:, 1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Mean over trees of the attack share in each flow's leaf (``predict_proba[:, 1]``)."""
        if not hasattr(self, "arrays_"):
            raise ValueError("the forest is not fitted; call fit or from_state first")
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns, got shape {X.shape}")
        out = np.zeros(len(X))
        # Scaled flows hold no NaN; knowing so up front lets the kernel skip their routing.
        _walk(X, bool(np.isnan(X).any()), *self._walk_arrays, out)
        return out

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Config and flat arrays: every tree's nodes concatenated, with offsets."""
        config = {"n_estimators": self.n_estimators, "n_features_in_": self.n_features_in_}
        return config, {name: array.copy() for name, array in self.arrays_.items()}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> AttackForest:
        """Rebuild a fitted forest from :meth:`get_state` output, validating every array.

        Checked, in this order, before anything is allocated from the arrays' contents: the
        config's keys and its size budget (:data:`MAX_TREES`, :data:`MAX_FEATURES`); that every
        array is present, a NumPy array of the expected dimensions and integer or float dtype,
        and of lengths that agree with each other and with :data:`MAX_NODES_PER_TREE`; that the
        offsets start at 0, increase strictly and end at the node total. Then each tree: every
        node is a leaf (both children -1) or has both children inside its tree and after
        itself, every node but the root is the child of exactly one node (so the nodes form one
        tree, with no cycle and no shared node), split nodes read a feature in
        ``[0, n_features_in_)`` and compare with a finite threshold, leaves hold finite,
        non-negative values with a positive sum, and the stored depth is the tree's own (at most
        :data:`MAX_DEPTH`).

        Raises
        ------
        ModelFileError
            A :class:`ValueError` naming the tree, node, field and value at fault.
        """
        model = cls.__new__(cls)
        model._load(config, arrays)
        model.random_state = None
        return model

    def _load(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Validate ``config`` and ``arrays`` and set the fitted state from them."""
        n_trees, n_features = _check_config(config)
        state = _check_arrays(arrays, n_trees, n_features)
        for array in state.values():
            array.flags.writeable = False
        self.n_estimators = n_trees
        self.n_features_in_ = n_features
        self.arrays_ = state
        self._walk_arrays = _walk_arrays(state)


def _sklearn_arrays(forest: RandomForestClassifier) -> dict[str, np.ndarray]:
    """The node arrays of a fitted two-class forest, read through public ``tree_`` attributes."""
    trees = [estimator.tree_ for estimator in forest.estimators_]
    return {
        "left_child": np.concatenate([tree.children_left for tree in trees]),
        "right_child": np.concatenate([tree.children_right for tree in trees]),
        "feature": np.concatenate([tree.feature for tree in trees]),
        "threshold": np.concatenate([tree.threshold for tree in trees]),
        "missing_go_to_left": np.concatenate([tree.missing_go_to_left for tree in trees]),
        "values": np.concatenate([tree.value[:, 0, :] for tree in trees]),
        "offsets": np.cumsum([0] + [tree.node_count for tree in trees]),
        "max_depth": np.asarray([tree.max_depth for tree in trees]),
    }


def _check_config(config: dict[str, Any]) -> tuple[int, int]:
    """The number of trees and of features, each an integer within its cap."""
    if not isinstance(config, dict) or set(config) != set(_CONFIG_KEYS):
        keys = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ModelFileError(f"forest config: expected keys {sorted(_CONFIG_KEYS)}, got {keys}")
    values = []
    for key, cap in _CONFIG_KEYS.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ModelFileError(f"forest config: {key} must be an integer, got {value!r}")
        if not 1 <= value <= cap:
            raise ModelFileError(f"forest config: {key} {value} outside 1-{cap}")
        values.append(int(value))
    return values[0], values[1]


def _check_arrays(
    arrays: dict[str, np.ndarray], n_trees: int, n_features: int
) -> dict[str, np.ndarray]:
    """Validated copies of ``arrays`` in their canonical dtypes (see :meth:`from_state`)."""
    missing = sorted(set(_ARRAYS) - set(arrays))
    if missing:
        raise ModelFileError(f"forest state lacks {missing}")
    extra = sorted(set(arrays) - set(_ARRAYS))
    if extra:
        raise ModelFileError(f"forest state has unknown arrays {extra}")
    for name, (ndim, kind, _) in _ARRAYS.items():
        array = arrays[name]
        if not isinstance(array, np.ndarray):
            raise ModelFileError(f"forest {name}: expected a NumPy array, got {type(array)}")
        if array.ndim != ndim:
            raise ModelFileError(f"forest {name}: expected {ndim}-D, got shape {array.shape}")
        wanted = np.integer if kind == "i" else np.floating
        if not np.issubdtype(array.dtype, wanted):
            raise ModelFileError(
                f"forest {name}: expected {wanted.__name__} dtype, got {array.dtype}"
            )
    n_nodes = len(arrays["left_child"])
    expected = {"offsets": (n_trees + 1,), "max_depth": (n_trees,), "values": (n_nodes, 2)}
    expected.update({name: (n_nodes,) for name in _NODE_ARRAYS})
    for name, shape in expected.items():
        if arrays[name].shape != shape:
            raise ModelFileError(
                f"forest state is inconsistent: {name} has shape {arrays[name].shape}, expected "
                f"{shape} for {n_trees} trees of {n_nodes} nodes in all"
            )
    if n_nodes > n_trees * MAX_NODES_PER_TREE:
        raise ModelFileError(
            f"forest state: {n_nodes} nodes, above the cap of {MAX_NODES_PER_TREE} per tree"
        )
    state = {name: _canonical(name, arrays[name]) for name in _ARRAYS}
    offsets = state["offsets"]
    counts = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != n_nodes or np.any(counts < 1):
        raise ModelFileError(
            f"forest offsets must start at 0, increase strictly and end at {n_nodes} "
            f"(the node total), got {_show(offsets)}"
        )
    if np.any(counts > MAX_NODES_PER_TREE):
        tree = int(np.argmax(counts > MAX_NODES_PER_TREE))
        raise ModelFileError(
            f"forest tree {tree}: {counts[tree]} nodes, above the cap of {MAX_NODES_PER_TREE}"
        )
    depth = state["max_depth"]
    bad = (depth < 0) | (depth > np.minimum(counts - 1, MAX_DEPTH))
    if bad.any():
        tree = int(np.argmax(bad))
        raise ModelFileError(
            f"forest tree {tree}: max_depth {depth[tree]} outside 0-"
            f"{min(counts[tree] - 1, MAX_DEPTH)} (at most one less than its {counts[tree]} "
            f"nodes, and at most {MAX_DEPTH})"
        )
    _check_nodes(state, n_features)
    return state


def _canonical(name: str, array: np.ndarray) -> np.ndarray:
    """A copy of ``array`` in ``name``'s canonical dtype, refusing integers that would wrap."""
    dtype = _ARRAYS[name][2]
    if np.issubdtype(array.dtype, np.integer) and array.size:
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
        if int(array.min()) < low or int(array.max()) > high:
            out = (array < low) | (array > high) if array.dtype.kind == "i" else array > high
            index = np.unravel_index(int(np.argmax(out)), array.shape)
            raise ModelFileError(f"forest {name}[{index[0]}]: {array[index]} outside {low}-{high}")
    return np.array(array, dtype=dtype, order="C")


def _check_nodes(state: dict[str, np.ndarray], n_features: int) -> None:
    """Check each tree's structure and the fields its nodes use (see :meth:`from_state`)."""
    offsets = state["offsets"]
    counts = np.diff(offsets)
    tree_of = np.repeat(np.arange(len(counts)), counts)
    local = np.arange(offsets[-1]) - offsets[tree_of]
    size = counts[tree_of]

    def fail(node: int, what: str) -> None:
        tree = int(tree_of[node])
        raise ModelFileError(f"forest tree {tree} node {int(local[node])}: {what}")

    left, right = state["left_child"], state["right_child"]
    leaf = (left == -1) & (right == -1)
    for name, child in (("left", left), ("right", right)):
        inside = (child > local) & (child < size)
        bad = ~leaf & ~inside
        if bad.any():
            node = int(np.argmax(bad))
            value, last = int(child[node]), int(size[node]) - 1
            if value == -1:
                other = int(right[node] if name == "left" else left[node])
                fail(node, f"{name} child -1 but the other child {other}: a leaf has both -1")
            if value < -1:
                fail(node, f"{name} child {value} negative (only -1, for a leaf, is allowed)")
            if value > last:
                fail(node, f"{name} child {value} outside the tree (nodes 0-{last})")
            fail(node, f"{name} child {value} does not come after the node (a cycle)")
    split = ~leaf
    children = np.concatenate([left[split], right[split]]) + np.tile(offsets[tree_of[split]], 2)
    parents = np.bincount(children, minlength=len(left))
    bad = (local > 0) & (parents != 1)
    if bad.any():
        node = int(np.argmax(bad))
        if parents[node] == 0:
            fail(node, "not the child of any node (unreachable from the root)")
        fail(node, f"the child of {parents[node]} nodes (a tree's nodes have one parent)")

    feature = state["feature"]
    bad = split & ((feature < 0) | (feature >= n_features))
    if bad.any():
        node = int(np.argmax(bad))
        fail(node, f"feature {feature[node]} outside 0-{n_features - 1}")
    threshold = state["threshold"]
    bad = split & ~np.isfinite(threshold)
    if bad.any():
        node = int(np.argmax(bad))
        fail(node, f"threshold {threshold[node]} is not finite")
    missing_left = state["missing_go_to_left"]
    bad = split & (missing_left > 1)
    if bad.any():
        node = int(np.argmax(bad))
        fail(node, f"missing_go_to_left {missing_left[node]} is not 0 or 1")
    values = state["values"]
    with np.errstate(over="ignore", invalid="ignore"):
        total = values.sum(axis=1)
        good = np.isfinite(values).all(axis=1) & (values >= 0).all(axis=1)
        good &= np.isfinite(total) & (total > 0)
    bad = leaf & ~good
    if bad.any():
        node = int(np.argmax(bad))
        fail(node, f"leaf values {values[node].tolist()} must be finite, >= 0, with a sum > 0")

    # Depth by levels: children come after their parent, so each level is the previous one's
    # children. The loop stops at the deepest stored max_depth (at most MAX_DEPTH).
    depth = np.zeros(len(left), dtype=np.int64)
    level = offsets[:-1][split[offsets[:-1]]]
    stored = state["max_depth"]
    for d in range(1, int(stored.max()) + 2):
        if level.size == 0:
            break
        level = np.concatenate([left[level], right[level]]) + np.tile(offsets[tree_of[level]], 2)
        depth[level] = d
        level = level[split[level]]
    actual = np.maximum.reduceat(depth, offsets[:-1])
    bad = actual != stored
    if bad.any():
        tree = int(np.argmax(bad))
        raise ModelFileError(
            f"forest tree {tree}: max_depth {stored[tree]} stored, but its leaves reach depth "
            f"{actual[tree]}" + (" or more" if actual[tree] > stored.max() else "")
        )


def _show(array: np.ndarray, limit: int = 6) -> str:
    """``array`` as a short list for a message."""
    shown = ", ".join(str(v) for v in array[:limit].tolist())
    return f"[{shown}{', ...' if len(array) > limit else ''}]"


def _walk_arrays(state: dict[str, np.ndarray]) -> tuple[np.ndarray, ...]:
    """The kernel's arrays: global child pairs (a leaf is its own child), and leaf shares."""
    offsets = state["offsets"]
    counts = np.diff(offsets)
    node = np.arange(offsets[-1])
    start = np.repeat(offsets[:-1], counts)
    leaf = state["left_child"] == -1
    children = np.empty((len(node), 2), dtype=np.uintp)
    children[:, 0] = np.where(leaf, node, state["left_child"] + start)
    children[:, 1] = np.where(leaf, node, state["right_child"] + start)
    features = np.where(leaf, 0, state["feature"]).astype(np.uintp)
    values = state["values"]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(leaf, values[:, 1] / values.sum(axis=1), 0.0)
    return (
        offsets[:-1].astype(np.uintp),
        state["max_depth"].astype(np.uintp),
        children.ravel(),
        features,
        state["threshold"],
        state["missing_go_to_left"],
        share,
    )


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _walk(X, has_nan, roots, depths, children, features, thresholds, nan_left, share, out):
    """Add each row's mean over trees of its leaf's attack share to ``out`` (zeros).

    The arrays are :func:`_walk_arrays`'s, validated: every index read here is inside its array,
    which is why bounds checks are off. Indices are unsigned so that numba does not wrap
    negative ones around on every load; ``has_nan`` False lets it drop the NaN test from the
    inner loop.
    """
    n_rows = X.shape[0]
    n_columns = np.uintp(X.shape[1])
    flat = X.ravel()
    nodes = np.empty(_BLOCK, dtype=np.uintp)
    for start in range(0, n_rows, _BLOCK):
        rows = min(_BLOCK, n_rows - start)
        base = np.uintp(start) * n_columns
        for tree in range(roots.shape[0]):
            nodes[:rows] = roots[tree]
            for _ in range(depths[tree]):
                for j in range(rows):
                    node = nodes[j]
                    x = flat[base + np.uintp(j) * n_columns + features[node]]
                    go_right = np.uintp(not x <= thresholds[node])
                    if has_nan and x != x:
                        go_right = np.uintp(1 - nan_left[node])
                    nodes[j] = children[np.uintp(2) * node + go_right]
            for j in range(rows):
                out[start + j] += share[nodes[j]]
    for i in range(n_rows):
        out[i] /= roots.shape[0]
