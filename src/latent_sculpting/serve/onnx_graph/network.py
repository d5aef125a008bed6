"""The neural part of the scoring path as ONNX: the preprocessing, the Stage-1 MLP encoder and
its centroid distances, the Deep SVDD embedding, the flow's input and its negative
log-likelihood."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from torch import nn

from latent_sculpting.model.density.fastpath import FastMAF
from latent_sculpting.model.fusion import NLL_CAP
from latent_sculpting.serve.onnx_graph.builder import (
    DOUBLE,
    FLOAT,
    ExportError,
    GraphBuilder,
    as_float32,
)

__all__ = [
    "centroid_distance",
    "flow_input",
    "maf_nll",
    "mlp_encoder",
    "preprocessing",
    "svdd_embedding",
]


def preprocessing(g: GraphBuilder, pre: Any, x: str) -> str:
    """Scaled features (float32) of raw features ``x`` (float32), as
    :meth:`FeaturePreprocessor.transform` computes them: in float64, then cast."""
    if pre.feature_transform == "quantile":
        raise ExportError(
            "feature_transform='quantile' is not exported (its interpolation between "
            "quantiles has no ONNX counterpart written here); use 'log1p' or 'none'"
        )
    z = g.cast(x, DOUBLE)
    if pre.feature_transform == "log1p":
        magnitude = g.op("Log", g.op("Add", g.op("Abs", z), g.const(1.0)))
        z = g.op("Mul", g.op("Sign", z), magnitude)
    kept = np.flatnonzero(pre.support_)
    if len(kept) < len(pre.support_):
        z = g.op("Gather", z, g.const(kept.astype(np.int64), "support"), axis=1)
    z = g.op("Sub", z, g.const(np.asarray(pre.center_, np.float64), "center"))
    z = g.op("Div", z, g.const(np.asarray(pre.scale_, np.float64), "scale"))
    return g.cast(z, FLOAT)


def _module(g: GraphBuilder, module: nn.Module, x: str, hint: str) -> str:
    """One eval-mode layer of the MLP encoder or the Deep SVDD network."""
    if isinstance(module, nn.Linear):
        return g.linear(x, module, hint)
    if isinstance(module, nn.LayerNorm):
        shape = module.normalized_shape[0]
        weight = np.ones(shape, np.float32) if module.weight is None else as_float32(module.weight)
        bias = np.zeros(shape, np.float32) if module.bias is None else as_float32(module.bias)
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
        weight = np.ones(width, np.float32) if module.weight is None else as_float32(module.weight)
        bias = np.zeros(width, np.float32) if module.bias is None else as_float32(module.bias)
        args = [weight, bias, as_float32(module.running_mean), as_float32(module.running_var)]
        names = [g.const(a, f"{hint}_bn") for a in args]
        return g.op("BatchNormalization", x, *names, epsilon=module.eps)
    raise ExportError(f"layer {type(module).__name__} is not exported")


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
            w = g.const(as_float32(fast.weights[k]), f"maf{t}_w")
            b = g.const(as_float32(fast.biases[k]), f"maf{t}_b")
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
    nll = g.cast(nll, DOUBLE)
    # np.nan_to_num(nll, nan=NLL_CAP, posinf=NLL_CAP); -inf to the lowest float64.
    cap = g.const(np.float64(NLL_CAP))
    nll = g.op("Where", g.op("IsNaN", nll), cap, nll)
    nll = g.op("Where", g.op("IsInf", nll, detect_negative=0), cap, nll)
    lowest = g.const(np.finfo(np.float64).min)
    return g.op("Where", g.op("IsInf", nll, detect_positive=0), lowest, nll)


def centroid_distance(g: GraphBuilder, codes: str, center: Any) -> str:
    """Squared distance of each code to a Stage-1 centroid (float32, then float64)."""
    diff = g.op("Sub", codes, g.const(as_float32(center)))
    total = g.op("ReduceSum", g.op("Mul", diff, diff), g.const(np.array([1], np.int64)), keepdims=0)
    return g.cast(total, DOUBLE)
