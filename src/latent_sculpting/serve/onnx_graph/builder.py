"""The graph builder of the ONNX export: fresh names, initializers, one-output nodes, and the
primitives every part uses (a float32 ``nn.Linear``, an unrolled ``searchsorted``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

__all__ = [
    "DOUBLE",
    "FLOAT",
    "INT64",
    "ML_OPSET",
    "ONNX_OPSET",
    "ExportError",
    "GraphBuilder",
    "as_float32",
]

#: Opsets the graph is written for: LayerNormalization needs 17, TreeEnsemble (float64
#: thresholds and leaf weights) ``ai.onnx.ml`` 5, which came with opset 21.
ONNX_OPSET = 21
ML_OPSET = 5
DOUBLE, FLOAT, INT64 = TensorProto.DOUBLE, TensorProto.FLOAT, TensorProto.INT64


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

    def ops(self, op_type: str, *inputs: str, outputs: int, **attrs: Any) -> list[str]:
        """Append one node with ``outputs`` outputs (``TopK``'s values and indices); their
        names."""
        names = [self._name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names

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
        zero = self.op("Mul", self.cast(x, INT64), self.const(0, dtype=np.int64))
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


def as_float32(tensor: Any) -> np.ndarray:
    """A torch tensor's values as a float32 numpy array."""
    return tensor.detach().cpu().numpy().astype(np.float32)
