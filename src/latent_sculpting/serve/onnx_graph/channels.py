"""The side channels as ONNX: the forest and the boosted trees as ``TreeEnsemble`` nodes, the
distance to the nearest benign prototype; :data:`CHANNEL_EXPORTERS` maps a channel's name to
its function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from onnx import numpy_helper

from latent_sculpting.serve.onnx_graph.builder import DOUBLE, GraphBuilder

__all__ = ["CHANNEL_EXPORTERS", "boost", "forest", "neighbours", "tree_ensemble"]


def tree_ensemble(
    g: GraphBuilder,
    arrays: dict[str, np.ndarray],
    leaf_values: np.ndarray,
    z: str,
    *,
    first: float | None = None,
) -> str:
    """The sum over trees of each row's leaf value (float64): one ``TreeEnsemble``
    (``ai.onnx.ml`` 5, ``SUM``) on the node arrays of :mod:`latent_sculpting.model.channels.trees`.

    ``x <= threshold`` compares the float32 feature widened to float64 with the float64
    threshold, as the native kernel compares. A tree that is one leaf becomes a split whose
    branches both reach it. ``first``, when given, is a one-leaf tree put before the others:
    the sum then starts from it and adds the trees in order, as the native kernel adds them to
    a booster's baseline (a ``base_values`` would be added after them, in another order).
    """
    left, right = arrays["left_child"], arrays["right_child"]
    offsets, values = arrays["offsets"], np.asarray(leaf_values, np.float64)
    feature, threshold = arrays["feature"], arrays["threshold"]
    if first is not None:
        left, right = np.r_[-1, left], np.r_[-1, right]
        feature, threshold = np.r_[0, feature], np.r_[0.0, threshold]
        values, offsets = np.r_[first, values], np.r_[0, offsets + 1]
    leaf = left == -1
    # Global indices: split nodes count in node order, leaves in leaf order.
    split_index = np.cumsum(~leaf) - 1
    leaf_index = np.cumsum(leaf) - 1
    features = list(feature[~leaf].astype(np.int64))
    splits = list(threshold[~leaf].astype(np.float64))
    true_ids, true_leaf, false_ids, false_leaf, roots = [], [], [], [], []
    lone_leaves = []
    for tree in range(len(offsets) - 1):
        start = int(offsets[tree])
        for node in np.flatnonzero(~leaf[start : offsets[tree + 1]]) + start:
            for child, ids, leafs in ((left, true_ids, true_leaf), (right, false_ids, false_leaf)):
                target = start + int(child[node])
                leafs.append(int(leaf[target]))
                ids.append(int(leaf_index[target] if leaf[target] else split_index[target]))
        if leaf[start]:
            # A one-leaf tree: a dummy split after every real one (the node fields are indexed
            # by split, so the dummies go at the end, once all real splits are in).
            roots.append(len(features) + len(lone_leaves))
            lone_leaves.append(int(leaf_index[start]))
        else:
            roots.append(int(split_index[start]))
    for target in lone_leaves:
        features.append(0)
        splits.append(0.0)
        for ids, leafs in ((true_ids, true_leaf), (false_ids, false_leaf)):
            ids.append(target)
            leafs.append(1)
    ensemble = g.op(
        "TreeEnsemble",
        g.cast(z, DOUBLE),
        domain="ai.onnx.ml",
        aggregate_function=1,  # SUM
        post_transform=0,
        n_targets=1,
        tree_roots=roots,
        nodes_featureids=[int(f) for f in features],
        nodes_splits=numpy_helper.from_array(np.asarray(splits, np.float64)),
        nodes_modes=numpy_helper.from_array(np.zeros(len(features), np.uint8)),  # BRANCH_LEQ
        nodes_truenodeids=true_ids,
        nodes_trueleafs=true_leaf,
        nodes_falsenodeids=false_ids,
        nodes_falseleafs=false_leaf,
        leaf_targetids=[0] * int(leaf.sum()),
        leaf_weights=numpy_helper.from_array(values[leaf]),
    )
    return g.op("Reshape", ensemble, g.const(np.array([-1], np.int64)))


def forest(g: GraphBuilder, channel: Any, z: str) -> str:
    """The forest's attack probability (float64) of scaled features ``z``: each tree's leaf
    share summed in float64 and divided by the number of trees, as
    :class:`~latent_sculpting.model.channels.forest.AttackForest` does (:func:`tree_ensemble`)."""
    state = channel.forest_.arrays_
    values = state["values"]
    leaf = state["left_child"] == -1
    share = np.zeros(len(values))
    share[leaf] = values[leaf, 1] / values[leaf].sum(axis=1)
    total = tree_ensemble(g, state, share, z)
    return g.op("Div", total, g.const(np.float64(channel.forest_.n_estimators)))


def boost(g: GraphBuilder, channel: Any, z: str) -> str:
    """The boosted trees' log-odds (float64) of scaled features ``z``: the baseline, then each
    tree's leaf value added in order, as
    :class:`~latent_sculpting.model.channels.boost.AttackBooster` does
    (:func:`tree_ensemble`)."""
    state = channel.booster_.arrays_
    baseline = float(state["baseline"][0])
    return tree_ensemble(g, state, state["values"], z, first=baseline)


#: Prototypes nearest by the expanded distance whose direct distance the export computes.
#: The model takes those within the product's rounding bound of the nearest (a few at most on
#: every model we hold); more than this many within it would be prototypes closer together
#: than float32 can tell at that distance.
NEIGHBOUR_CANDIDATES = 16


def neighbours(g: GraphBuilder, channel: Any, z: str) -> str:
    """The distance (float64) of scaled features ``z`` to the nearest benign prototype, as
    :meth:`~latent_sculpting.model.channels.registry.NeighbourChannel.score` finds it: the
    prototypes least by ``|z|^2 - 2 z.p + |p|^2`` (the product in float32, the rest in
    float64) are the candidates, and the least of their direct float64 distances is taken."""
    prototypes = np.asarray(channel.prototypes_, np.float32)
    norms = (prototypes.astype(np.float64) ** 2).sum(axis=1)
    axis = g.const(np.array([1], np.int64))
    cross = g.op("MatMul", z, g.const(prototypes.T.copy(), "prototypes"))
    z64 = g.cast(z, DOUBLE)
    squares = g.op("ReduceSum", g.op("Mul", z64, z64), axis, keepdims=1)
    twice = g.op("Mul", g.const(np.float64(2.0)), g.cast(cross, DOUBLE))
    d2 = g.op("Add", g.op("Sub", squares, twice), g.const(norms, "prototype_norms"))
    k = g.const(np.array([min(NEIGHBOUR_CANDIDATES, len(prototypes))], np.int64))
    topk = g.ops("TopK", d2, k, outputs=2, axis=1, largest=0, sorted=1)[1]
    chosen = g.op("Gather", g.const(prototypes.astype(np.float64), "prototypes_wide"), topk)
    difference = g.op("Sub", g.op("Unsqueeze", z64, axis), chosen)
    total = g.op(
        "ReduceSum",
        g.op("Mul", difference, difference),
        g.const(np.array([2], np.int64)),
        keepdims=0,
    )
    return g.op("Sqrt", g.op("ReduceMin", total, axis, keepdims=0))


#: Side channel name -> function adding its score (float64) of the scaled features.
CHANNEL_EXPORTERS: dict[str, Callable[[GraphBuilder, Any, str], str]] = {
    "forest": forest,
    "boost": boost,
    "knn": neighbours,
}
