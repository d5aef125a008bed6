"""The ONNX export: onnxruntime scores as the native model does, part by part and in all."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from latent_sculpting import LatentSculpting, preset  # noqa: E402
from latent_sculpting.cli import main  # noqa: E402
from latent_sculpting.experiment import cap_per_class  # noqa: E402
from latent_sculpting.export import (  # noqa: E402
    ML_OPSET,
    ONNX_OPSET,
    ExportError,
    GraphBuilder,
    export_onnx,
    forest,
    to_onnx,
)
from latent_sculpting.forest import AttackForest  # noqa: E402


def session(proto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), options)


def fit(sample_table, **changes) -> LatentSculpting:
    table = cap_per_class(sample_table, 300, seed=0)
    y = (table.labels != "BENIGN").astype(int)
    if changes.get("stage1") is False:
        table, y = table.subset(np.flatnonzero(y == 0)), None
    model = LatentSculpting(**{**preset("fast"), **changes}, random_state=0)
    return model.fit(table.X, y, groups=None if y is None else table.labels, spec=table.spec)


@pytest.fixture(scope="module")
def fused(sample_table):
    """The default preset's structure, small: MLP encoder, Deep SVDD, forest, Fisher fusion."""
    return fit(sample_table)


def run_part(build, X: np.ndarray, kind: int = TensorProto.DOUBLE) -> np.ndarray:
    """One part of the graph on float32 rows ``X`` (input ``features``), one output."""
    g = GraphBuilder()
    g.nodes.append(helper.make_node("Identity", [build(g, "features")], ["out"]))
    graph = helper.make_graph(
        g.nodes,
        "part",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["rows", X.shape[1]])],
        [helper.make_tensor_value_info("out", kind, None)],
        g.initializers,
    )
    opsets = [helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)]
    return session(helper.make_model(graph, opset_imports=opsets)).run(None, {"features": X})[0]


# ---------------------------------------------------------------------------- the whole path


def test_the_default_structure_scores_as_native_on_the_embedded_sample(fused, sample_table):
    X = sample_table.X.astype(np.float32)
    score, p_value, is_attack, nll, forest_p = session(to_onnx(fused, channel_outputs=True)).run(
        ["score", "p_value", "is_attack", "nll", "forest_probability"], {"features": X}
    )
    details = fused.score_details(X)
    # The forest is exact; the float32 network parts agree to float32 rounding (which the
    # flow can amplify: native scoring of single rows against a batch differs as much).
    np.testing.assert_array_equal(forest_p, details["forest_probability"])
    np.testing.assert_allclose(nll, details["nll"], rtol=1e-4)
    # The fused score within 1e-4, but where the two NLLs lie on either side of a reference
    # NLL (the empirical p-value steps) or the NLL's rounding, divided by the tail's scale,
    # exceeds it; native single rows against a batch differ the same way (docs/export.md).
    tail = fused.fusion_.tails_["nll"]
    difference = np.abs(score - details["score"])
    close = difference <= 1e-4
    straddles = np.searchsorted(tail.reference_, nll) != np.searchsorted(
        tail.reference_, details["nll"]
    )
    rounding = difference <= np.abs(nll - details["nll"]) / tail.scale_ + 1e-9
    assert (close | straddles | rounding).all()
    assert close.mean() > 0.995
    # The p-value is the same search over the calibration scores, with the same steps.
    calibration = fused.calibration_scores_
    same = np.searchsorted(calibration, score) == np.searchsorted(calibration, details["score"])
    np.testing.assert_allclose(p_value[same], fused.p_values(X)[same], rtol=1e-12)
    assert same.mean() > 0.995
    clear = close & (np.abs(details["score"] - fused.threshold_) > 1e-4)
    np.testing.assert_array_equal(is_attack[clear], (details["score"] > fused.threshold_)[clear])
    assert is_attack.sum() > 1000  # the sample's attacks are there


@pytest.mark.parametrize(
    "changes",
    [
        {"stage1": False, "score": "nll", "forest_trees": 0},  # sculpt train --unlabeled
        {"score": "two_stage", "forest_trees": 0, "calibration": "train"},  # the paper's rule
        {"feature_transform": "none", "svdd_dim": 0, "flow_standardize": False},
    ],
    ids=["benign-only", "two-stage", "no-log-no-svdd"],
)
def test_other_rules_and_parts_score_as_native(sample_table, changes):
    model = fit(sample_table, **changes)
    X = cap_per_class(sample_table, 500, seed=1).X.astype(np.float32)
    score, p_value, nll = session(to_onnx(model, channel_outputs=True)).run(
        ["score", "p_value", "nll"], {"features": X}
    )
    details = model.score_details(X)
    np.testing.assert_allclose(nll, details["nll"], rtol=1e-5)
    # Raw NLLs reach thousands (float32 rounding, relative); a fused score steps where the
    # NLLs straddle a reference NLL.
    close = np.isclose(score, details["score"], rtol=2e-5, atol=1e-4)
    tails = getattr(model.fusion_, "tails_", None)
    if tails is not None:
        reference = tails["nll"].reference_
        close |= np.searchsorted(reference, nll) != np.searchsorted(reference, details["nll"])
    assert close.all()
    assert np.mean(np.abs(p_value - model.p_values(X)) < 1e-12) > 0.99


def test_the_graph_carries_what_a_user_needs(fused, tmp_path, sample_table):
    path = export_onnx(fused, tmp_path / "model.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["feature_names"]) == list(fused.feature_names_in_)
    assert float(meta["threshold"]) == fused.threshold_ and meta["score"] == "fisher"
    assert [i.name for i in proto.graph.input] == ["features"]
    assert [o.name for o in proto.graph.output] == ["score", "p_value", "is_attack"]
    # Any number of rows, one included.
    one = sample_table.X[:1].astype(np.float32)
    (score,) = session(proto).run(["score"], {"features": one})
    np.testing.assert_allclose(score, fused.decision_function(one), atol=1e-4)


# ---------------------------------------------------------------------------- the parts


@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 100, 1000])
def test_the_unrolled_search_is_searchsorted(n):
    rng = np.random.default_rng(n)
    values = np.sort(rng.integers(0, 20, size=n).astype(np.float64))  # with ties
    x = np.concatenate([values, values - 0.5, values + 0.5, [-3e38, 3e38, -np.inf, np.inf]])
    X = x.astype(np.float32)[:, None]
    found = run_part(
        lambda g, f: g.searchsorted_left(
            values, g.op("Reshape", g.cast(f, TensorProto.DOUBLE), g.const(np.array([-1])))
        ),
        X,
        TensorProto.INT64,
    )
    np.testing.assert_array_equal(found, np.searchsorted(values, X[:, 0].astype(np.float64)))


class _Channel:
    def __init__(self, forest_: AttackForest) -> None:
        self.forest_ = forest_


def test_the_forest_compares_float32_features_with_float64_thresholds_exactly():
    # Two trees: a split at 0.1 (not a float32 number) and a tree that is one leaf, whose
    # leaves hold fractional weights.
    threshold = 0.1
    arrays = {
        "left_child": np.array([1, -1, -1, -1]),
        "right_child": np.array([2, -1, -1, -1]),
        "feature": np.array([1, -2, -2, -2]),
        "threshold": np.array([threshold, -2.0, -2.0, -2.0]),
        "missing_go_to_left": np.array([0, 0, 0, 0], dtype=np.uint8),
        "values": np.array([[5.0, 5.0], [3.0, 1.0], [1.0, 2.0], [2.0, 1.0]]),
        "offsets": np.array([0, 3, 4]),
        "max_depth": np.array([1, 0]),
    }
    model = AttackForest.from_state({"n_estimators": 2, "n_features_in_": 2}, arrays)
    near = np.float32(threshold)  # rounds above 0.1: goes right natively
    values = [near, np.nextafter(near, np.float32(0)), np.float32(-3), np.float32(7)]
    X = np.array([[0.0, v] for v in values], dtype=np.float32)
    native = model.predict_proba(X)
    assert len(set(native.tolist())) == 2  # both sides of the split are reached
    np.testing.assert_array_equal(run_part(lambda g, f: forest(g, _Channel(model), f), X), native)


# ---------------------------------------------------------------------------- refused parts


def test_parts_not_exported_are_named(fused, sample_table):
    from latent_sculpting.encoders import FTTransformerEncoder
    from latent_sculpting.preprocessing import FeaturePreprocessor

    quantile = copy.copy(fused)
    quantile.preprocessor_ = FeaturePreprocessor(feature_transform="quantile").fit(
        sample_table.X[:500]
    )
    with pytest.raises(ExportError, match="feature_transform='quantile' is not exported"):
        to_onnx(quantile)
    transformer = copy.copy(fused)
    transformer.encoder_ = FTTransformerEncoder(fused.n_features_in_, d_token=8, n_heads=2)
    with pytest.raises(ExportError, match="FTTransformerEncoder encoder is not exported"):
        to_onnx(transformer)


def test_an_unknown_side_channel_or_unfitted_model_is_refused(fused):
    with pytest.raises(ValueError, match="not fitted"):
        to_onnx(LatentSculpting())
    fused.channels_["knn"] = fused.channels_.pop("forest")
    try:
        with pytest.raises(ExportError, match="side channel 'knn' is not exported"):
            to_onnx(fused)
    finally:
        fused.channels_["forest"] = fused.channels_.pop("knn")


def test_cli_export_checks_the_graph(fused, tmp_path, capsys):
    model_path = fused.save(tmp_path / "m.sculpt")
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_path), "--onnx", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ONNX graph written to" in text and "checked with onnxruntime on 19 rows" in text
    difference = float(text.rsplit("native model ", 1)[1].split()[0])
    assert difference < 1e-4
    assert main(["export", str(model_path), "--onnx", "-o", str(tmp_path / "m.txt")]) == 2
    assert "use .onnx" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.sculpt"]
