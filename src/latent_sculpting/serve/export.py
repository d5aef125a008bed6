"""A fitted model's whole scoring path as one ONNX graph (``sculpt export MODEL --onnx``).

The graph takes the model's features (``features``: float32, rows x ``n_features_in_``, in the
order of ``feature_names_in_``; what :meth:`LatentSculpting.decision_function` takes, after a
:class:`~latent_sculpting.io.flowspec.FlowSpec` has turned records into numbers) and answers
``score`` (float64, higher is more anomalous), ``p_value`` (float64, split-conformal against the
benign calibration scores) and ``is_attack`` (bool, ``score > threshold_``), equal to the
native ones within float rounding (``tests/test_export.py``; docs/export.md has the measured
differences and what the graph does not cover).

The graph is written from the model's arrays with :mod:`onnx.helper`, one function per part, in
the order the estimator scores:

========================= =======================================================================
part                      ONNX
========================= =======================================================================
preprocessing             signed ``log1p`` in float64, the support mask (``Gather``), centring and
                          scaling, cast to float32 (:func:`preprocessing`)
Stage-1 encoder           the residual MLP: ``Gemm``, ``LayerNormalization``, erf GELU, ReLU
                          (:func:`mlp_encoder`); ``stage1=False`` passes the scaled features on
Deep SVDD embedding       bias-free ``MatMul``, ``BatchNormalization`` (running statistics),
                          ``LeakyRelu`` (:func:`svdd_embedding`)
flow input                ``Concat`` and the flow's standardisation (:func:`flow_input`)
Stage 2                   the MAF's negative log-likelihood from its masked weights, as
                          :class:`~latent_sculpting.model.density.fastpath.FastMAF` computes it
                          (:func:`maf_nll`)
side channels             one function each, in :data:`CHANNEL_EXPORTERS`: the forest and the
                          boosted trees as one ``ai.onnx.ml`` ``TreeEnsemble`` each over float64
                          inputs (:func:`forest`, :func:`boost`), the distance to the nearest
                          benign prototype (:func:`neighbours`)
score rule                one function each, in :data:`FUSION_EXPORTERS`: Fisher's sum of tail
                          ``-log p`` and its weighted form (``stacked``), each tail an unrolled
                          binary search standing for ``searchsorted`` then the interpolated (or
                          stepped) empirical piece and the exponential tail
                          (:func:`tail_neg_log_p`); the paper's two-stage rule; the NLL alone
p-value and verdict       the conformal p-value (the same search) and ``score > threshold_``
========================= =======================================================================

We write the graph ourselves rather than tracing the modules with ``torch.onnx.export``: the
score is mostly not torch (the trees, the prototypes, the tails, the searches), the default
exporter of torch 2.9 and later needs ``onnxscript``, and a graph built from validated arrays
is exact by construction where a trace is only as good as the trace. The trees are not converted by
skl2onnx or hummingbird either: the model holds plain node arrays, not scikit-learn estimators,
and ``TreeEnsemble`` with float64 thresholds and weights reproduces their comparisons and
their float64 leaf sums exactly, which the float32 ``TreeEnsembleClassifier`` and
``TreeEnsembleRegressor`` that those converters write do not.

Not exported (an :class:`ExportError` names the part): the quantile feature transform, the
CNN-Transformer and FT-Transformer encoders of the paper presets, and any side channel or score
rule without an entry in :data:`CHANNEL_EXPORTERS` or :data:`FUSION_EXPORTERS`; a new one is a
function there. Input checks (a NaN or infinite feature is refused natively) are the caller's:
the graph scores what it is given.

It is long because each part of the scoring path (preprocessing, flow, each channel, each rule,
the tails) is one small graph-building function, kept together so that the graph reads in the
order the native scorer computes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from latent_sculpting.model.density.fastpath import FastMAF
from latent_sculpting.model.fusion import NLL_CAP, STAGE1_OFFSET

__all__ = [
    "CHANNEL_EXPORTERS",
    "FUSION_EXPORTERS",
    "ONNX_OPSET",
    "ExportError",
    "GraphBuilder",
    "boost",
    "export_onnx",
    "flow_input",
    "forest",
    "maf_nll",
    "mlp_encoder",
    "neighbours",
    "preprocessing",
    "svdd_embedding",
    "tail_neg_log_p",
    "to_onnx",
    "tree_ensemble",
]

#: Opsets the graph is written for: LayerNormalization needs 17, TreeEnsemble (float64
#: thresholds and leaf weights) ``ai.onnx.ml`` 5, which came with opset 21.
ONNX_OPSET = 21
ML_OPSET = 5
_DOUBLE, _FLOAT, _INT64 = TensorProto.DOUBLE, TensorProto.FLOAT, TensorProto.INT64


class ExportError(ValueError):
    """A part of the model that the ONNX export does not cover; the message names it."""


class GraphBuilder:
    """Nodes and initializers of one graph, with fresh names for every value."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, value: Any, hint: str = "c", dtype: Any = None) -> str:
        """An initializer holding ``value`` (as ``dtype`` when given); its name."""
        array = np.asarray(value, dtype=dtype)
        name = self._name(hint)
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, **attrs: Any) -> str:
        """Append one node with one output; the output's name."""
        domain = attrs.pop("domain", "")
        out = self._name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], domain=domain, **attrs))
        return out

    def cast(self, value: str, to: int) -> str:
        return self.op("Cast", value, to=to)

    def linear(self, x: str, layer: nn.Linear, hint: str) -> str:
        """``x @ W.T + b`` of a float32 ``nn.Linear`` (``MatMul`` when it has no bias)."""
        weight = layer.weight.detach().cpu().numpy().astype(np.float32)
        if layer.bias is None:
            return self.op("MatMul", x, self.const(weight.T.copy(), f"{hint}_w"), hint=hint)
        bias = layer.bias.detach().cpu().numpy().astype(np.float32)
        w, b = self.const(weight, f"{hint}_w"), self.const(bias, f"{hint}_b")
        return self.op("Gemm", x, w, b, transB=1, hint=hint)

    def searchsorted(self, sorted_values: np.ndarray, x: str, side: str = "left") -> str:
        """``np.searchsorted(sorted_values, x, side=side)`` (int64) for float64 ``x``: a
        binary search unrolled over ``ceil(log2(n + 1))`` steps of ``Gather`` and ``Where``.

        The values are padded with a NaN, which compares false with everything, so that a
        probe at ``n`` never moves the lower bound, whatever ``x`` is (``+inf`` included).
        """
        if side not in ("left", "right"):
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        n = len(sorted_values)
        padded = self.const(np.append(np.asarray(sorted_values, np.float64), np.nan), "sorted")
        zero = self.op("Mul", self.cast(x, _INT64), self.const(0, dtype=np.int64))
        lo, hi = zero, self.op("Add", zero, self.const(n, dtype=np.int64))
        one, two = self.const(1, dtype=np.int64), self.const(2, dtype=np.int64)
        # left: the first index whose value is >= x; right: the first whose value is > x.
        below = "Less" if side == "left" else "LessOrEqual"
        for _ in range(n.bit_length()):
            mid = self.op("Div", self.op("Add", lo, hi), two)
            go_up = self.op(below, self.op("Gather", padded, mid), x)
            lo, hi = (
                self.op("Where", go_up, self.op("Add", mid, one), lo),
                self.op("Where", go_up, hi, mid),
            )
        return lo


# ---------------------------------------------------------------------------- the parts


def preprocessing(g: GraphBuilder, pre: Any, x: str) -> str:
    """Scaled features (float32) of raw features ``x`` (float32), as
    :meth:`FeaturePreprocessor.transform` computes them: in float64, then cast."""
    if pre.feature_transform == "quantile":
        raise ExportError(
            "feature_transform='quantile' is not exported (its interpolation between "
            "quantiles has no ONNX counterpart written here); use 'log1p' or 'none'"
        )
    z = g.cast(x, _DOUBLE)
    if pre.feature_transform == "log1p":
        magnitude = g.op("Log", g.op("Add", g.op("Abs", z), g.const(1.0)))
        z = g.op("Mul", g.op("Sign", z), magnitude)
    kept = np.flatnonzero(pre.support_)
    if len(kept) < len(pre.support_):
        z = g.op("Gather", z, g.const(kept.astype(np.int64), "support"), axis=1)
    z = g.op("Sub", z, g.const(np.asarray(pre.center_, np.float64), "center"))
    z = g.op("Div", z, g.const(np.asarray(pre.scale_, np.float64), "scale"))
    return g.cast(z, _FLOAT)


def _module(g: GraphBuilder, module: nn.Module, x: str, hint: str) -> str:
    """One eval-mode layer of the MLP encoder or the Deep SVDD network."""
    if isinstance(module, nn.Linear):
        return g.linear(x, module, hint)
    if isinstance(module, nn.LayerNorm):
        shape = module.normalized_shape[0]
        weight = np.ones(shape, np.float32) if module.weight is None else _numpy(module.weight)
        bias = np.zeros(shape, np.float32) if module.bias is None else _numpy(module.bias)
        scale, shift = g.const(weight, f"{hint}_ln_w"), g.const(bias, f"{hint}_ln_b")
        return g.op("LayerNormalization", x, scale, shift, axis=-1, epsilon=module.eps)
    if isinstance(module, nn.GELU):
        if module.approximate != "none":
            raise ExportError(f"GELU with approximate={module.approximate!r} is not exported")
        # torch: x * 0.5 * (1 + erf(x / sqrt(2))).
        erf = g.op("Erf", g.op("Mul", x, g.const(np.float32(math.sqrt(0.5)))))
        half = g.op("Mul", x, g.const(np.float32(0.5)))
        return g.op("Mul", half, g.op("Add", erf, g.const(np.float32(1.0))))
    if isinstance(module, nn.ReLU):
        return g.op("Relu", x)
    if isinstance(module, nn.LeakyReLU):
        return g.op("LeakyRelu", x, alpha=float(module.negative_slope))
    if isinstance(module, nn.Dropout):
        return x  # eval mode
    if isinstance(module, nn.BatchNorm1d):
        if module.running_mean is None:
            raise ExportError("a batch norm without running statistics is not exported")
        width = module.num_features
        weight = np.ones(width, np.float32) if module.weight is None else _numpy(module.weight)
        bias = np.zeros(width, np.float32) if module.bias is None else _numpy(module.bias)
        args = [weight, bias, _numpy(module.running_mean), _numpy(module.running_var)]
        names = [g.const(a, f"{hint}_bn") for a in args]
        return g.op("BatchNormalization", x, *names, epsilon=module.eps)
    raise ExportError(f"layer {type(module).__name__} is not exported")


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32)


def mlp_encoder(g: GraphBuilder, encoder: nn.Module, z: str) -> str:
    """Latent codes of scaled features ``z`` through the residual MLP encoder."""
    from latent_sculpting.model.stage1.encoders import MLPEncoder

    if not isinstance(encoder, MLPEncoder):
        raise ExportError(
            f"the {type(encoder).__name__} encoder is not exported; only the residual MLP "
            "encoder (encoder='mlp', the default preset's) is"
        )
    h = g.linear(z, encoder.stem, "stem")
    for b, block in enumerate(encoder.blocks):
        out = h
        for i, layer in enumerate(block):
            out = _module(g, layer, out, f"block{b}_{i}")
        h = g.op("Add", h, out)
    for i, layer in enumerate(encoder.head):
        h = _module(g, layer, h, f"head{i}")
    return h


def svdd_embedding(g: GraphBuilder, svdd: Any, z: str) -> str:
    """The Deep SVDD embedding ``phi(z)`` of scaled features (its network in eval mode)."""
    h = z
    for i, layer in enumerate(svdd.net_.net):
        h = _module(g, layer, h, f"svdd{i}")
    return h


def flow_input(g: GraphBuilder, codes: str, embedding: str | None, scaler: Any) -> str:
    """The flow's input: the codes beside the embedding, through the flow's scaler."""
    x = codes if embedding is None else g.op("Concat", codes, embedding, axis=1)
    if scaler is None:
        return x
    return preprocessing(g, scaler, x)


def maf_nll(g: GraphBuilder, flow: Any, x: str) -> str:
    """The flow's negative log-likelihood (float64; NaN and +inf at :data:`NLL_CAP`) as
    :class:`~latent_sculpting.model.density.fastpath.FastMAF` computes it in float32."""
    try:
        fast = FastMAF(flow.maf)
    except TypeError as error:
        raise ExportError(f"the flow is not exported: {error}") from None
    features = fast.features
    first = g.const(np.array([0], np.int64))
    middle = g.const(np.array([features], np.int64))
    end = g.const(np.array([2 * features], np.int64))
    axis = g.const(np.array([1], np.int64))
    slope = g.const(np.float32(fast.log_slope))
    one = g.const(np.float32(1.0))
    ladj = None
    k = 0
    for t, depth in enumerate(fast.depths):
        h = x
        for i in range(depth):
            w = g.const(_numpy(fast.weights[k]), f"maf{t}_w")
            b = g.const(_numpy(fast.biases[k]), f"maf{t}_b")
            h = g.op("Gemm", h, w, b, transB=1, hint=f"maf{t}")
            if i < depth - 1:
                h = g.op("Relu", h)
            k += 1
        shift = g.op("Slice", h, first, middle, axis)
        a = g.op("Slice", h, middle, end, axis)
        log_scale = g.op("Div", a, g.op("Add", one, g.op("Abs", g.op("Div", a, slope))))
        x = g.op("Add", shift, g.op("Mul", x, g.op("Exp", log_scale)))
        total = g.op("ReduceSum", log_scale, axis, keepdims=0)
        ladj = total if ladj is None else g.op("Add", ladj, total)
    squares = g.op("ReduceSum", g.op("Mul", x, x), axis, keepdims=0)
    nll = g.op("Mul", g.const(np.float32(0.5)), squares)
    nll = g.op("Sub", g.op("Add", nll, g.const(np.float32(fast.log_norm))), ladj)
    nll = g.cast(nll, _DOUBLE)
    # np.nan_to_num(nll, nan=NLL_CAP, posinf=NLL_CAP); -inf to the lowest float64.
    cap = g.const(np.float64(NLL_CAP))
    nll = g.op("Where", g.op("IsNaN", nll), cap, nll)
    nll = g.op("Where", g.op("IsInf", nll, detect_negative=0), cap, nll)
    lowest = g.const(np.finfo(np.float64).min)
    return g.op("Where", g.op("IsInf", nll, detect_positive=0), lowest, nll)


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
        g.cast(z, _DOUBLE),
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


def neighbours(g: GraphBuilder, channel: Any, z: str) -> str:
    """The distance (float64) of scaled features ``z`` to the nearest benign prototype, as
    :meth:`~latent_sculpting.model.channels.registry.NeighbourChannel.score` finds it: the first
    prototype
    minimising ``|z|^2 - 2 z.p + |p|^2`` (the product in float32, the rest in float64), then
    the distance to it computed directly in float64."""
    prototypes = np.asarray(channel.prototypes_, np.float32)
    norms = (prototypes.astype(np.float64) ** 2).sum(axis=1)
    axis = g.const(np.array([1], np.int64))
    cross = g.op("MatMul", z, g.const(prototypes.T.copy(), "prototypes"))
    z64 = g.cast(z, _DOUBLE)
    squares = g.op("ReduceSum", g.op("Mul", z64, z64), axis, keepdims=1)
    twice = g.op("Mul", g.const(np.float64(2.0)), g.cast(cross, _DOUBLE))
    d2 = g.op("Add", g.op("Sub", squares, twice), g.const(norms, "prototype_norms"))
    nearest = g.op("ArgMin", d2, axis=1, keepdims=0, select_last_index=0)
    chosen = g.op("Gather", g.const(prototypes.astype(np.float64), "prototypes_wide"), nearest)
    difference = g.op("Sub", z64, chosen)
    total = g.op("ReduceSum", g.op("Mul", difference, difference), axis, keepdims=0)
    return g.op("Sqrt", total)


#: Side channel name -> function adding its score (float64) of the scaled features.
CHANNEL_EXPORTERS: dict[str, Callable[[GraphBuilder, Any, str], str]] = {
    "forest": forest,
    "boost": boost,
    "knn": neighbours,
}


def _clipped(g: GraphBuilder, nll: str) -> str:
    return g.op("Min", nll, g.const(np.float64(NLL_CAP)))


def tail_neg_log_p(g: GraphBuilder, tail: Any, s: str) -> str:
    """:meth:`TailPValue.neg_log_p` of float64 scores ``s``: the empirical piece interpolated
    (:func:`_interpolated_below`) or, for a tail saved before the interpolation, stepped
    (:func:`_stepped_empirical`); the exponential tail above ``threshold_``."""
    reference = tail.reference_
    n = len(reference)
    log_n1 = np.log(n + 1)
    if tail.interpolate:
        # np.log1p(n - below) as Log(1 + (n - below)): n - below >= 1, where the two differ by
        # an ulp of a number near log(n), far below the export's tolerance.
        below = _interpolated_below(g, reference, s)
        remaining = g.op("Sub", g.const(np.float64(n)), below)
        log_count = g.op("Log", g.op("Add", g.const(np.float64(1.0)), remaining))
        empirical = g.op("Sub", g.const(np.float64(log_n1)), log_count)
    else:
        empirical = _stepped_empirical(g, reference, s)
    at_u = n - np.searchsorted(reference, tail.threshold_, side="left")
    base = np.float64(log_n1 - np.log1p(at_u))
    excess = g.op("Sub", s, g.const(np.float64(tail.threshold_)))
    rise = g.op("Add", g.const(base), g.op("Div", excess, g.const(np.float64(tail.scale_))))
    rise = g.op("Min", rise, g.const(np.float64(log_n1 + tail.max_extrapolation)))
    above = g.op("Greater", s, g.const(np.float64(tail.threshold_)))
    return g.op("Where", above, rise, empirical)


def _stepped_empirical(g: GraphBuilder, reference: np.ndarray, s: str) -> str:
    """``log(n + 1) - log1p(#{reference >= s})``: one of ``n + 1`` values, looked up by the
    search; a table of them, computed as numpy does, makes it bit-identical."""
    n = len(reference)
    at_least = n - np.arange(n + 1)  # by the index searchsorted gives
    table = g.const(np.log(n + 1) - np.log1p(at_least), "empirical")
    return g.op("Gather", table, g.searchsorted(reference, s, side="left"))


def _interpolated_below(g: GraphBuilder, reference: np.ndarray, s: str) -> str:
    """``np.interp(s, values, first)`` (float64) over the distinct reference ``values``,
    ``first[j]`` being how many reference scores lie below ``values[j]``.

    As numpy computes it: the segment ``j`` with ``values[j] <= s < values[j + 1]`` (a search,
    side ``right``), then ``slope[j] * (s - values[j]) + first[j]`` with the slopes numpy
    computes. Scores outside ``[values[0], values[-1]]`` are first clamped to them, where the
    last segment's slope of 0 gives ``first[-1]`` and the first segment ``first[0] = 0``, as
    ``np.interp`` holds its end values (and an infinite score meets no ``inf * 0``).
    """
    values, first = np.unique(reference, return_index=True)
    first = first.astype(np.float64)
    slopes = np.zeros(len(values))
    slopes[:-1] = (first[1:] - first[:-1]) / (values[1:] - values[:-1])
    clamped = g.op("Max", g.op("Min", s, g.const(values[-1])), g.const(values[0]))
    one = g.const(np.int64(1))
    segment = g.op("Sub", g.searchsorted(values, clamped, side="right"), one)
    offset = g.op("Sub", clamped, g.op("Gather", g.const(values, "tail_values"), segment))
    rise = g.op("Mul", g.op("Gather", g.const(slopes, "tail_slopes"), segment), offset)
    return g.op("Add", rise, g.op("Gather", g.const(first, "tail_below"), segment))


def _fisher(g: GraphBuilder, fusion: Any, scores: dict[str, str]) -> str:
    total = None
    for name, tail in fusion.tails_.items():
        term = tail_neg_log_p(g, tail, _fusion_input(g, name, scores))
        total = term if total is None else g.op("Add", total, term)
    return total


def _stacked(g: GraphBuilder, fusion: Any, scores: dict[str, str]) -> str:
    """``sum_k w_k (-log p_k)`` over the channels of non-zero weight, in the fusion's order."""
    total = None
    for name, tail in fusion.tails_.items():
        weight = float(fusion.weights_[name])
        if weight == 0.0:
            continue
        term = tail_neg_log_p(g, tail, _fusion_input(g, name, scores))
        if weight != 1.0:
            term = g.op("Mul", g.const(np.float64(weight)), term)
        total = term if total is None else g.op("Add", total, term)
    return total


def _fusion_input(g: GraphBuilder, name: str, scores: dict[str, str]) -> str:
    """What a fusion's tail reads of channel ``name``: the NLL clipped, any other as is."""
    return _clipped(g, scores[name]) if name == "nll" else scores[name]


def _nll_alone(g: GraphBuilder, fusion: Any, scores: dict[str, str]) -> str:
    return _clipped(g, scores["nll"])


def _two_stage(g: GraphBuilder, fusion: Any, scores: dict[str, str]) -> str:
    d_b, d_a = scores["distance_benign"], scores["distance_attack"]
    margin = g.op("Add", g.const(np.float64(STAGE1_OFFSET)), g.op("Sub", d_b, d_a))
    return g.op("Where", g.op("Less", d_a, d_b), margin, _clipped(g, scores["nll"]))


#: ``score`` parameter value -> function combining the channel scores (float64) into the score.
FUSION_EXPORTERS: dict[str, Callable[[GraphBuilder, Any, dict[str, str]], str]] = {
    "fisher": _fisher,
    "stacked": _stacked,
    "nll": _nll_alone,
    "two_stage": _two_stage,
}


def _distance(g: GraphBuilder, codes: str, center: Any) -> str:
    """Squared distance of each code to a Stage-1 centroid (float32, then float64)."""
    diff = g.op("Sub", codes, g.const(_numpy(center)))
    total = g.op("ReduceSum", g.op("Mul", diff, diff), g.const(np.array([1], np.int64)), keepdims=0)
    return g.cast(total, _DOUBLE)


# ---------------------------------------------------------------------------- the graph


def to_onnx(model: Any, *, channel_outputs: bool = False) -> onnx.ModelProto:
    """The scoring path of a fitted ``model`` as one checked ONNX model.

    Parameters
    ----------
    model : LatentSculpting
        Fitted.
    channel_outputs : bool, default False
        Also output each channel's score (float64, ``[rows]``), as
        :meth:`LatentSculpting.score_details` names them: ``nll`` (with a flow), each side
        channel's column
        (``boost_logit``, ``knn_distance``, ``forest_probability``) and, with Stage 1,
        ``distance_benign`` and ``distance_attack``.

    Returns
    -------
    onnx.ModelProto
        Input ``features`` (float32, ``[rows, n_features_in_]``); outputs ``score`` and
        ``p_value`` (float64, ``[rows]``) and ``is_attack`` (bool). Metadata: the feature names,
        the threshold and the score rule.

    Raises
    ------
    ExportError
        For a part the export does not cover (see the module docstring), named.
    ValueError
        If the model is not fitted.
    """
    from latent_sculpting import __version__

    if not hasattr(model, "flow_"):
        raise ValueError("the model is not fitted; call fit (or load a model file) first")
    if model.score not in FUSION_EXPORTERS:
        raise ExportError(f"score rule {model.score!r} is not exported")
    for name in model.channels_:
        if name not in CHANNEL_EXPORTERS:
            raise ExportError(f"side channel {name!r} is not exported")
    g = GraphBuilder()
    z = preprocessing(g, model.preprocessor_, "features")
    scores: dict[str, str] = {}
    if model.stage1:
        codes = mlp_encoder(g, model.encoder_, z)
        scores["distance_benign"] = _distance(g, codes, model.center_benign_)
        scores["distance_attack"] = _distance(g, codes, model.center_attack_)
    else:
        codes = z
    embedding = None if model.svdd_ is None else svdd_embedding(g, model.svdd_, z)
    if model.flow_ is not None:
        flow_in = flow_input(g, codes, embedding, model.flow_scaler_)
        scores["nll"] = maf_nll(g, model.flow_, flow_in)
    for name, channel in model.channels_.items():
        scores[name] = CHANNEL_EXPORTERS[name](g, channel, z)
    score = FUSION_EXPORTERS[model.score](g, model.fusion_, scores)
    calibration = np.asarray(model.calibration_scores_, np.float64)
    n = len(calibration)
    at_least = g.op("Sub", g.const(np.int64(n)), g.searchsorted(calibration, score, side="left"))
    numerator = g.op("Add", g.cast(at_least, _DOUBLE), g.const(np.float64(1.0)))
    p_value = g.op("Div", numerator, g.const(np.float64(n + 1)))
    flagged = g.op("Greater", score, g.const(np.float64(model.threshold_)))
    outputs = {"score": (score, _DOUBLE), "p_value": (p_value, _DOUBLE)}
    outputs["is_attack"] = (flagged, TensorProto.BOOL)
    if channel_outputs:
        for name, value in scores.items():
            column = model.channels_[name].column if name in model.channels_ else name
            outputs[column] = (value, _DOUBLE)
    for name, (value, _) in outputs.items():
        g.nodes.append(helper.make_node("Identity", [value], [name]))
    graph = helper.make_graph(
        g.nodes,
        "latent_sculpting",
        [helper.make_tensor_value_info("features", _FLOAT, ["rows", model.n_features_in_])],
        [helper.make_tensor_value_info(n, kind, ["rows"]) for n, (_, kind) in outputs.items()],
        g.initializers,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", ONNX_OPSET),
            helper.make_opsetid("ai.onnx.ml", ML_OPSET),
        ],
        producer_name="latent-sculpting",
        producer_version=__version__,
    )
    names = getattr(model, "feature_names_in_", None)
    metadata = {
        "feature_names": json.dumps(None if names is None else [str(c) for c in names]),
        "threshold": repr(float(model.threshold_)),
        "score": model.score,
    }
    helper.set_model_props(onnx_model, metadata)
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def export_onnx(model: Any, path: str | Path) -> Path:
    """Write :func:`to_onnx` of ``model`` to ``path`` (a temporary file, then renamed)."""
    from latent_sculpting.atomic import write_bytes
    from latent_sculpting.serve.outputs import check_output

    path = check_output(path, suffixes=(".onnx",), what="ONNX file")
    return write_bytes(to_onnx(model).SerializeToString(), path)
