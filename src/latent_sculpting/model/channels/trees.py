"""Tree ensembles as plain validated node arrays, and the one evaluator that scores them all.

The supervised side channels are tree ensembles that scikit-learn fits: a random forest
(:mod:`.forest`) and gradient-boosted trees (:mod:`.boost`). Each copies its fitted trees once
into flat node arrays, the arrays a model file stores; from then on this module owns them. It
validates them one by one before anything is built from them (:class:`TreeEnsemble`), a damaged
one raising :class:`~latent_sculpting.errors.ModelFileError` that names the tree, node and
field, and it evaluates them itself: no private scikit-learn structure is ever filled from a
file.

**Layout.** Node fields are concatenated over the trees; ``offsets[t]:offsets[t + 1]`` are tree
``t``'s nodes, whose indices are local (0 is its root). As in scikit-learn, a leaf has both
children -1. A split node sends a row left when ``x <= threshold``, ``x`` being the row's value
of ``feature`` in the ensemble's input dtype (float32 for the forest, float64 for the boosted
trees, as scikit-learn casts each) compared with the float64 threshold; a NaN goes where
``missing_go_to_left`` says. ``max_depth`` is each tree's depth, which bounds the evaluator's
work per row.

**Aggregations** (:data:`AGGREGATIONS`), what a row's leaves add up to:

``"mean_share"``
    ``values`` holds each node's benign and attack weights, shape ``(n_nodes, 2)``; the score
    is the mean over trees of the leaf's attack weight over its row sum, summed in tree order
    and divided by the number of trees: ``RandomForestClassifier.predict_proba[:, 1]``.
    (scikit-learn's leaf values are already shares, so the division changes nothing for a forest
    it fits; it keeps every saved model's probabilities as they were.)
``"sum"``
    ``values`` holds each node's value, shape ``(n_nodes,)``, and ``baseline`` one number; the
    score is the baseline plus the leaves' values, added in tree order:
    ``HistGradientBoostingClassifier.decision_function``, the raw log-odds.

**The evaluator** is a numba kernel, compiled on first use and cached on disk. It takes a block
of rows through one tree at a time, level by level down to the tree's depth, every leaf being
its own child: each step is the same branch-free load, compare and load for every row of the
block, so the rows proceed independently and the processor never waits on the data-dependent
branch that bounds a row-by-row walk such as scikit-learn's. It computes what scikit-learn
computes, bit for bit; the tests of :mod:`.forest` and :mod:`.boost` compare them.
``benchmarks/speed/bench_forest.py`` measured the candidates for the forest on one thread
(scikit-learn's walk, the same walk in numba, a level-by-level walk in NumPy, treelite's GTIL):
the block walk is the fastest and exact. ``benchmarks/speed/bench_trees.py`` measures it on the
boosted trees against scikit-learn's own ``decision_function``.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from latent_sculpting.errors import ModelFileError

__all__ = [
    "AGGREGATIONS",
    "MAX_DEPTH",
    "MAX_FEATURES",
    "MAX_NODES_PER_TREE",
    "MAX_TREES",
    "TreeEnsemble",
    "check_config",
    "check_training_data",
]

#: Size budget of an ensemble, checked from the config and the arrays' shapes before any array
#: is read. Forest trees grown to purity on the embedded sample have a few hundred nodes and
#: depth below 30; the caps leave room for the full dataset (a tree cannot have more than twice
#: as many nodes as it has distinct training rows) and refuse what no fit here produces.
MAX_TREES = 10_000
MAX_FEATURES = 100_000
MAX_NODES_PER_TREE = 2**23
#: A tree's depth bounds the kernel's work per row, so it is capped too.
MAX_DEPTH = 512

#: The node arrays every ensemble has: (number of dimensions, dtype kind, canonical dtype).
_NODE_ARRAYS = {
    "left_child": (1, "i", np.int64),
    "right_child": (1, "i", np.int64),
    "feature": (1, "i", np.int64),
    "threshold": (1, "f", np.float64),
    "missing_go_to_left": (1, "i", np.uint8),
}
_TREE_ARRAYS = {"offsets": (1, "i", np.int64), "max_depth": (1, "i", np.int64)}
#: The arrays of each aggregation, in the order they are checked.
_ARRAYS = {
    "mean_share": {**_NODE_ARRAYS, "values": (2, "f", np.float64), **_TREE_ARRAYS},
    "sum": {
        **_NODE_ARRAYS,
        "values": (1, "f", np.float64),
        **_TREE_ARRAYS,
        "baseline": (1, "f", np.float64),
    },
}
#: How a row's leaves combine into its score (see the module's docstring).
AGGREGATIONS = tuple(_ARRAYS)
#: Rows taken through a tree together by the kernel: enough independent walks to keep the
#: processor busy, few enough that their node indices stay in the first-level cache.
_BLOCK = 64


def check_config(config: Any, caps: dict[str, int], name: str) -> list[int]:
    """The values of ``config``, which must have exactly the keys of ``caps``, each an integer
    between 1 and its cap.

    Raises
    ------
    ModelFileError
        Naming ``name``, the key and the value at fault.
    """
    if not isinstance(config, dict) or set(config) != set(caps):
        keys = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ModelFileError(f"{name} config: expected keys {sorted(caps)}, got {keys}")
    values = []
    for key, cap in caps.items():
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise ModelFileError(f"{name} config: {key} must be an integer, got {value!r}")
        if not 1 <= value <= cap:
            raise ModelFileError(f"{name} config: {key} {value} outside 1-{cap}")
        values.append(int(value))
    return values


def check_training_data(X: Any, y: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``X`` and ``y`` as arrays, once ``y`` is known to hold benign (0) and attack (1) rows
    and ``X`` to have 1 to :data:`MAX_FEATURES` columns; ``name`` is the ensemble's."""
    y = np.asarray(y)
    if set(np.unique(y).tolist()) != {0, 1}:
        raise ValueError(f"the {name} needs benign (0) and attack (1) rows")
    X = np.asarray(X)
    if X.ndim != 2 or not 1 <= X.shape[1] <= MAX_FEATURES:
        raise ValueError(f"X must have 1 to {MAX_FEATURES} columns, got shape {X.shape}")
    return X, y


class TreeEnsemble:
    """Trees held as validated node arrays, scored by one numba kernel.

    Parameters
    ----------
    arrays : dict of str to numpy.ndarray
        The node arrays of the module's layout for ``aggregation``. Copied, never kept.
    n_trees : int
        Trees, between 1 and :data:`MAX_TREES` (the caller has read it from its config).
    n_features : int
        Columns of the input, between 1 and :data:`MAX_FEATURES`.
    aggregation : {"mean_share", "sum"}
        How a row's leaves combine (:data:`AGGREGATIONS`).
    dtype : {numpy.float32, numpy.float64}
        What inputs are cast to before they are compared with the thresholds (the dtype
        scikit-learn's own predict casts them to).
    name : str
        The ensemble's name in error messages (``"forest"``, ``"boost"``).

    Attributes
    ----------
    arrays_ : dict of str to numpy.ndarray
        The validated arrays in their canonical dtypes (read-only).
    n_trees, n_features_in_ : int

    Raises
    ------
    ModelFileError
        When an array is damaged. Checked, in this order, before anything is allocated from
        the arrays' contents: that every array is present and no other, each a NumPy array of
        the expected dimensions and integer or float dtype, of lengths that agree with each
        other and with :data:`MAX_NODES_PER_TREE`; that the offsets start at 0, increase
        strictly and end at the node total. Then each tree: every node is a leaf (both
        children -1) or has both children inside its tree and after itself, every node but the
        root is the child of exactly one node (so the nodes form one tree, with no cycle and no
        shared node), split nodes read a feature in ``[0, n_features)``, compare with a finite
        threshold and route NaN by a 0 or 1, the stored depth is the tree's own (at most
        :data:`MAX_DEPTH`), and leaves hold what the aggregation needs: finite, non-negative
        weights with a positive sum (``"mean_share"``); finite values, and a finite baseline,
        whose largest possible total is finite too (``"sum"``).
    """

    def __init__(
        self,
        arrays: dict[str, np.ndarray],
        *,
        n_trees: int,
        n_features: int,
        aggregation: str,
        dtype: type[np.floating],
        name: str,
    ) -> None:
        if aggregation not in _ARRAYS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}")
        if not 1 <= n_trees <= MAX_TREES or not 1 <= n_features <= MAX_FEATURES:
            raise ValueError(f"{n_trees} trees or {n_features} features outside the caps")
        self.name = name
        self.aggregation = aggregation
        self.dtype = dtype
        self.n_trees = n_trees
        self.n_features_in_ = n_features
        state = _check_arrays(arrays, _ARRAYS[aggregation], n_trees, n_features, name)
        for array in state.values():
            array.flags.writeable = False
        self.arrays_ = state
        self._kernel_arrays = _kernel_arrays(state, aggregation)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The aggregated score of each row of ``X`` (float64)."""
        X = np.ascontiguousarray(X, dtype=self.dtype)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns, got shape {X.shape}")
        if self.aggregation == "sum":
            out = np.full(len(X), self.arrays_["baseline"][0])
        else:
            out = np.zeros(len(X))
        # Scaled flows hold no NaN; knowing so up front lets the kernel skip their routing.
        _add_leaves(X, bool(np.isnan(X).any()), *self._kernel_arrays, out)
        if self.aggregation == "mean_share":
            out /= self.n_trees
        return out

    def get_arrays(self) -> dict[str, np.ndarray]:
        """Writable copies of :attr:`arrays_`."""
        return {name: array.copy() for name, array in self.arrays_.items()}


def _check_arrays(
    arrays: dict[str, np.ndarray],
    spec: dict[str, tuple[int, str, type]],
    n_trees: int,
    n_features: int,
    name: str,
) -> dict[str, np.ndarray]:
    """Validated copies of ``arrays`` in their canonical dtypes (see :class:`TreeEnsemble`)."""
    if not isinstance(arrays, dict):
        raise ModelFileError(f"{name} state: expected a dict of arrays, got {type(arrays)}")
    missing = sorted(set(spec) - set(arrays))
    if missing:
        raise ModelFileError(f"{name} state lacks {missing}")
    extra = sorted(set(arrays) - set(spec))
    if extra:
        raise ModelFileError(f"{name} state has unknown arrays {extra}")
    for key, (ndim, kind, _) in spec.items():
        array = arrays[key]
        if not isinstance(array, np.ndarray):
            raise ModelFileError(f"{name} {key}: expected a NumPy array, got {type(array)}")
        if array.ndim != ndim:
            raise ModelFileError(f"{name} {key}: expected {ndim}-D, got shape {array.shape}")
        wanted = np.integer if kind == "i" else np.floating
        if not np.issubdtype(array.dtype, wanted):
            raise ModelFileError(
                f"{name} {key}: expected {wanted.__name__} dtype, got {array.dtype}"
            )
    n_nodes = len(arrays["left_child"])
    expected = {
        "offsets": (n_trees + 1,),
        "max_depth": (n_trees,),
        "values": (n_nodes, 2) if spec["values"][0] == 2 else (n_nodes,),
    }
    expected.update({key: (n_nodes,) for key in _NODE_ARRAYS})
    if "baseline" in spec:
        expected["baseline"] = (1,)
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise ModelFileError(
                f"{name} state is inconsistent: {key} has shape {arrays[key].shape}, expected "
                f"{shape} for {n_trees} trees of {n_nodes} nodes in all"
            )
    if n_nodes > n_trees * MAX_NODES_PER_TREE:
        raise ModelFileError(
            f"{name} state: {n_nodes} nodes, above the cap of {MAX_NODES_PER_TREE} per tree"
        )
    state = {key: _canonical(name, key, arrays[key], spec[key][2]) for key in spec}
    offsets = state["offsets"]
    counts = np.diff(offsets)
    if offsets[0] != 0 or offsets[-1] != n_nodes or np.any(counts < 1):
        raise ModelFileError(
            f"{name} offsets must start at 0, increase strictly and end at {n_nodes} "
            f"(the node total), got {_show(offsets)}"
        )
    if np.any(counts > MAX_NODES_PER_TREE):
        tree = int(np.argmax(counts > MAX_NODES_PER_TREE))
        raise ModelFileError(
            f"{name} tree {tree}: {counts[tree]} nodes, above the cap of {MAX_NODES_PER_TREE}"
        )
    depth = state["max_depth"]
    bad = (depth < 0) | (depth > np.minimum(counts - 1, MAX_DEPTH))
    if bad.any():
        tree = int(np.argmax(bad))
        raise ModelFileError(
            f"{name} tree {tree}: max_depth {depth[tree]} outside 0-"
            f"{min(counts[tree] - 1, MAX_DEPTH)} (at most one less than its {counts[tree]} "
            f"nodes, and at most {MAX_DEPTH})"
        )
    _check_nodes(state, n_features, name)
    return state


def _canonical(name: str, key: str, array: np.ndarray, dtype: type) -> np.ndarray:
    """A copy of ``array`` in ``dtype``, refusing integers that would wrap."""
    if np.issubdtype(array.dtype, np.integer) and array.size:
        low, high = np.iinfo(dtype).min, np.iinfo(dtype).max
        if int(array.min()) < low or int(array.max()) > high:
            out = (array < low) | (array > high) if array.dtype.kind == "i" else array > high
            index = np.unravel_index(int(np.argmax(out)), array.shape)
            raise ModelFileError(f"{name} {key}[{index[0]}]: {array[index]} outside {low}-{high}")
    return np.array(array, dtype=dtype, order="C")


def _check_nodes(state: dict[str, np.ndarray], n_features: int, name: str) -> None:
    """Check each tree's structure and the fields its nodes use (see :class:`TreeEnsemble`)."""
    offsets = state["offsets"]
    counts = np.diff(offsets)
    tree_of = np.repeat(np.arange(len(counts)), counts)
    local = np.arange(offsets[-1]) - offsets[tree_of]
    size = counts[tree_of]

    def fail(node: int, what: str) -> None:
        tree = int(tree_of[node])
        raise ModelFileError(f"{name} tree {tree} node {int(local[node])}: {what}")

    left, right = state["left_child"], state["right_child"]
    leaf = (left == -1) & (right == -1)
    for side, child in (("left", left), ("right", right)):
        inside = (child > local) & (child < size)
        bad = ~leaf & ~inside
        if bad.any():
            node = int(np.argmax(bad))
            value, last = int(child[node]), int(size[node]) - 1
            if value == -1:
                other = int(right[node] if side == "left" else left[node])
                fail(node, f"{side} child -1 but the other child {other}: a leaf has both -1")
            if value < -1:
                fail(node, f"{side} child {value} negative (only -1, for a leaf, is allowed)")
            if value > last:
                fail(node, f"{side} child {value} outside the tree (nodes 0-{last})")
            fail(node, f"{side} child {value} does not come after the node (a cycle)")
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
    if values.ndim == 2:
        with np.errstate(over="ignore", invalid="ignore"):
            total = values.sum(axis=1)
            good = np.isfinite(values).all(axis=1) & (values >= 0).all(axis=1)
            good &= np.isfinite(total) & (total > 0)
        bad = leaf & ~good
        if bad.any():
            node = int(np.argmax(bad))
            fail(node, f"leaf values {values[node].tolist()} must be finite, >= 0, with a sum > 0")
    else:
        bad = leaf & ~np.isfinite(values)
        if bad.any():
            node = int(np.argmax(bad))
            fail(node, f"leaf value {values[node]} is not finite")
        baseline = state["baseline"][0]
        if not np.isfinite(baseline):
            raise ModelFileError(f"{name} baseline {baseline} is not finite")
        # A row's score adds one leaf per tree to the baseline; bounded here, it cannot
        # overflow to infinity whatever leaves a row reaches.
        largest = np.maximum.reduceat(np.where(leaf, np.abs(values), 0.0), offsets[:-1])
        with np.errstate(over="ignore"):
            bound = abs(baseline) + largest.sum()
        if not np.isfinite(bound):
            raise ModelFileError(
                f"{name} leaf values: the baseline and the largest leaf of every tree add up "
                "to more than the float range"
            )

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
            f"{name} tree {tree}: max_depth {stored[tree]} stored, but its leaves reach depth "
            f"{actual[tree]}" + (" or more" if actual[tree] > stored.max() else "")
        )


def _show(array: np.ndarray, limit: int = 6) -> str:
    """``array`` as a short list for a message."""
    shown = ", ".join(str(v) for v in array[:limit].tolist())
    return f"[{shown}{', ...' if len(array) > limit else ''}]"


def _kernel_arrays(state: dict[str, np.ndarray], aggregation: str) -> tuple[np.ndarray, ...]:
    """The kernel's arrays: tree roots and depths, global child pairs (a leaf is its own
    child), features, thresholds, NaN routing, and what each leaf adds to a row's score."""
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
    if aggregation == "mean_share":
        with np.errstate(invalid="ignore", divide="ignore"):
            added = np.where(leaf, values[:, 1] / values.sum(axis=1), 0.0)
    else:
        added = np.where(leaf, values, 0.0)
    return (
        offsets[:-1].astype(np.uintp),
        state["max_depth"].astype(np.uintp),
        children.ravel(),
        features,
        state["threshold"],
        state["missing_go_to_left"],
        added,
    )


@numba.njit(nogil=True, cache=True, boundscheck=False)
def _add_leaves(X, has_nan, roots, depths, children, features, thresholds, nan_left, added, out):
    """Add to ``out`` what each row's leaf adds, tree after tree in order.

    The arrays are :func:`_kernel_arrays`'s, validated: every index read here is inside its
    array, which is why bounds checks are off. Indices are unsigned so that numba does not wrap
    negative ones around on every load; ``has_nan`` False lets it drop the NaN test from the
    inner loop. ``X`` is float32 or float64; numba compiles one version of each.
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
                out[start + j] += added[nodes[j]]
