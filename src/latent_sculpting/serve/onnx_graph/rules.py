"""The score rules as ONNX: each channel's tail ``-log p`` (the empirical piece and the
exponential tail) and the rules that combine them; :data:`FUSION_EXPORTERS` maps the ``score``
parameter to its function."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from latent_sculpting.model.fusion import NLL_CAP, STAGE1_OFFSET
from latent_sculpting.serve.onnx_graph.builder import GraphBuilder

__all__ = ["FUSION_EXPORTERS", "tail_neg_log_p"]


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
