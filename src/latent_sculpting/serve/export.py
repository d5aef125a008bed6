"""A fitted model's whole scoring path as one ONNX graph (``sculpt export MODEL --onnx``).

The graph takes the model's features (``features``: float32, rows x ``n_features_in_``, in the
order of ``feature_names_in_``; what :meth:`LatentSculpting.decision_function` takes, after a
:class:`~latent_sculpting.io.flowspec.FlowSpec` has turned records into numbers) and answers
``score`` (float64, higher is more anomalous), ``p_value`` (float64, split-conformal against the
benign calibration scores) and ``is_attack`` (bool, ``score > threshold_``), equal to the
native ones within float rounding (``tests/test_export.py``; docs/reference/export.md has the
measured differences and what the graph does not cover).

The graph is written from the model's arrays with :mod:`onnx.helper`, one function per part
(in :mod:`latent_sculpting.serve.onnx_graph`), in the order the estimator scores:

========================= =======================================================================
part                      ONNX
========================= =======================================================================
preprocessing             signed ``log1p`` in float64, the support mask (``Gather``), centring and
                          scaling, cast to float32 (``network``)
Stage-1 encoder           the residual MLP: ``Gemm``, ``LayerNormalization``, erf GELU, ReLU
                          (``network``); ``stage1=False`` passes the scaled features on
Deep SVDD embedding       bias-free ``MatMul``, ``BatchNormalization`` (running statistics),
                          ``LeakyRelu`` (``network``)
flow input                ``Concat`` and the flow's standardisation (``network``)
Stage 2                   the MAF's negative log-likelihood from its masked weights, as
                          :class:`~latent_sculpting.model.density.fastpath.FastMAF` computes it
                          (``network``)
side channels             one function each, in ``channels.CHANNEL_EXPORTERS``: the forest and
                          the boosted trees as one ``ai.onnx.ml`` ``TreeEnsemble`` each over
                          float64 inputs, the distance to the nearest benign prototype
score rule                one function each, in ``rules.FUSION_EXPORTERS``: Fisher's sum of tail
                          ``-log p`` and its weighted form (``stacked``), each tail an unrolled
                          binary search standing for ``searchsorted`` then the interpolated (or
                          stepped) empirical piece and the exponential tail
                          (``rules.tail_neg_log_p``); the paper's two-stage rule; the NLL alone
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

Not exported (an :class:`~latent_sculpting.serve.onnx_graph.builder.ExportError` names the
part): the quantile feature transform, the CNN-Transformer and FT-Transformer encoders of the
paper presets, and any side channel or score rule without an entry in ``CHANNEL_EXPORTERS`` or
``FUSION_EXPORTERS``; a new one is a function there. Input checks (a NaN or infinite feature
is refused natively) are the caller's: the graph scores what it is given.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from latent_sculpting.serve.onnx_graph.builder import (
    DOUBLE,
    FLOAT,
    ML_OPSET,
    ONNX_OPSET,
    ExportError,
    GraphBuilder,
)
from latent_sculpting.serve.onnx_graph.channels import CHANNEL_EXPORTERS
from latent_sculpting.serve.onnx_graph.network import (
    centroid_distance,
    flow_input,
    maf_nll,
    mlp_encoder,
    preprocessing,
    svdd_embedding,
)
from latent_sculpting.serve.onnx_graph.rules import FUSION_EXPORTERS

__all__ = ["export_onnx", "to_onnx"]


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
        scores["distance_benign"] = centroid_distance(g, codes, model.center_benign_)
        scores["distance_attack"] = centroid_distance(g, codes, model.center_attack_)
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
    numerator = g.op("Add", g.cast(at_least, DOUBLE), g.const(np.float64(1.0)))
    p_value = g.op("Div", numerator, g.const(np.float64(n + 1)))
    flagged = g.op("Greater", score, g.const(np.float64(model.threshold_)))
    outputs = {"score": (score, DOUBLE), "p_value": (p_value, DOUBLE)}
    outputs["is_attack"] = (flagged, TensorProto.BOOL)
    if channel_outputs:
        for name, value in scores.items():
            column = model.channels_[name].column if name in model.channels_ else name
            outputs[column] = (value, DOUBLE)
    for name, (value, _) in outputs.items():
        g.nodes.append(helper.make_node("Identity", [value], [name]))
    graph = helper.make_graph(
        g.nodes,
        "latent_sculpting",
        [helper.make_tensor_value_info("features", FLOAT, ["rows", model.n_features_in_])],
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
