"""The ONNX export: onnxruntime scores as the native model does, part by part and in all."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402
from small import FUSED_FAST  # noqa: E402

from latent_sculpting import LatentSculpting, preset  # noqa: E402
from latent_sculpting.cli import main  # noqa: E402
from latent_sculpting.io.table import cap_per_class  # noqa: E402
from latent_sculpting.model.calibration import TailPValue  # noqa: E402
from latent_sculpting.model.channels.boost import AttackBooster  # noqa: E402
from latent_sculpting.model.channels.forest import AttackForest  # noqa: E402
from latent_sculpting.model.channels.registry import NeighbourChannel  # noqa: E402
from latent_sculpting.model.presets import benign_only  # noqa: E402
from latent_sculpting.serve.export import export_onnx, to_onnx  # noqa: E402
from latent_sculpting.serve.onnx_graph.builder import (  # noqa: E402
    ML_OPSET,
    ONNX_OPSET,
    ExportError,
    GraphBuilder,
)
from latent_sculpting.serve.onnx_graph.channels import boost, forest, neighbours  # noqa: E402
from latent_sculpting.serve.onnx_graph.rules import tail_neg_log_p  # noqa: E402

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


def session(proto, threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(proto.SerializeToString(), options)


def fit(sample_table, params: dict, *, labelled: bool = True) -> LatentSculpting:
    """``params`` fitted on at most 300 rows of each class (the benign ones alone when not
    ``labelled``, as ``sculpt train --unlabeled`` fits)."""
    table = cap_per_class(sample_table, 300, seed=0)
    y = (table.labels != "BENIGN").astype(int)
    if not labelled:
        table, y = table.subset(np.flatnonzero(y == 0)), None
    model = LatentSculpting(**params, random_state=0)
    return model.fit(table.X, y, groups=None if y is None else table.labels, spec=table.spec)


@pytest.fixture(scope="module")
def default(sample_table):
    """The default preset's structure, small (``fast``): the flow on the scaled features,
    boosted trees, the nearest benign prototype, stacked weights."""
    return fit(sample_table, preset("fast"))


@pytest.fixture(scope="module")
def full_default(sample_table):
    """The default preset at its own sizes (100 trees, 1,024 prototypes: every benign row is
    one here, so many flows lie at distance 0; the 5 x 128 flow), on capped rows and with three
    folds instead of eight to fit in seconds."""
    return fit(sample_table, {**preset("default"), "stack_folds": 3})


@pytest.fixture(scope="module")
def fused(sample_table):
    """The previous default, small: MLP encoder, Deep SVDD, forest, Fisher fusion."""
    return fit(sample_table, FUSED_FAST)


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


def as_double_vector(g: GraphBuilder, features: str) -> str:
    """The single float32 column ``features`` as a float64 vector."""
    column = g.cast(features, TensorProto.DOUBLE)
    return g.op("Reshape", column, g.const(np.array([-1], np.int64)))


# ---------------------------------------------------------------------------- the whole path


def check_every_row(model, sample_table, exact: tuple[str, ...]) -> None:
    """onnxruntime's score of every row of the embedded sample within 1e-4 of the native
    one; the columns ``exact`` bit-identical, every channel close; the p-values and verdicts
    equal wherever the score is not within 1e-4 of a calibration score or the threshold."""
    X = sample_table.X.astype(np.float32)
    proto = to_onnx(model, channel_outputs=True)
    names = [o.name for o in proto.graph.output]
    out = dict(zip(names, session(proto).run(None, {"features": X}), strict=True))
    details = model.score_details(X)
    assert set(names) - {"p_value", "is_attack"} <= set(details)
    np.testing.assert_allclose(out["score"], details["score"], rtol=0, atol=1e-4)
    for name in exact:
        np.testing.assert_array_equal(out[name], details[name], err_msg=name)
    # The float32 parts agree to float32 rounding, which a flow amplifies far outside the
    # benign manifold (NLLs of 1e10 and more): relative there.
    assert ("nll" in out) == (model.flow_ is not None)
    if "nll" in out:
        np.testing.assert_allclose(out["nll"], details["nll"], rtol=1e-4)
    if "knn_distance" in out:
        np.testing.assert_allclose(out["knn_distance"], details["knn_distance"], atol=1e-9)
    for name in ("distance_benign", "distance_attack"):
        if name in out:
            np.testing.assert_allclose(out[name], details[name], rtol=1e-5, atol=1e-5)
    # The p-value and the verdict step at calibration scores and at the threshold: equal
    # wherever both scores lie between the same calibration scores, or clear of the threshold.
    # (A duplicate of a calibration flow has its score; a difference in the last bits puts it
    # on either side.)
    calibration = model.calibration_scores_
    same = np.searchsorted(calibration, out["score"]) == np.searchsorted(
        calibration, details["score"]
    )
    np.testing.assert_allclose(out["p_value"][same], model.p_values(X)[same], rtol=1e-12)
    assert same.mean() > 0.99
    clear = np.abs(details["score"] - model.threshold_) > 1e-4
    flagged = details["score"] > model.threshold_
    np.testing.assert_array_equal(out["is_attack"][clear], flagged[clear])
    assert flagged.sum() > 1000  # the sample's attacks are there


def test_the_default_structure_scores_as_native_on_every_row(default, sample_table):
    assert set(default.channels_) == {"boost", "knn"} and default.score == "stacked"
    check_every_row(default, sample_table, exact=("boost_logit",))


def test_the_default_preset_at_its_sizes_scores_as_native_on_every_row(full_default, sample_table):
    assert len(full_default.channels_["knn"].prototypes_) > 100
    check_every_row(full_default, sample_table, exact=("boost_logit",))
    # On two threads onnxruntime splits the trees between them and adds the partial sums:
    # the log-odds move in their last bits, the score not beyond the tolerance.
    X = cap_per_class(sample_table, 500, seed=3).X.astype(np.float32)
    proto = to_onnx(full_default, channel_outputs=True)
    score, logit = session(proto, threads=2).run(["score", "boost_logit"], {"features": X})
    details = full_default.score_details(X)
    np.testing.assert_allclose(logit, details["boost_logit"], rtol=1e-13)
    np.testing.assert_allclose(score, details["score"], rtol=0, atol=1e-4)


def test_the_previous_default_scores_as_native_on_every_row(fused, sample_table):
    check_every_row(fused, sample_table, exact=("forest_probability",))


@pytest.mark.parametrize(
    "params, labelled",
    [
        (benign_only(preset("fast")), False),  # sculpt train --unlabeled: flow and neighbours
        ({**benign_only(preset("fast")), "knn_prototypes": 0, "score": "nll"}, False),
        ({**FUSED_FAST, "score": "two_stage", "forest_trees": 0, "calibration": "train"}, True),
        (
            {**FUSED_FAST, "feature_transform": "none", "svdd_dim": 0, "flow_standardize": False},
            True,
        ),
    ],
    ids=["benign-only", "nll-alone", "two-stage", "no-log-no-svdd"],
)
def test_other_rules_and_parts_score_as_native(sample_table, params, labelled):
    model = fit(sample_table, params, labelled=labelled)
    X = cap_per_class(sample_table, 500, seed=1).X.astype(np.float32)
    score, p_value, nll = session(to_onnx(model, channel_outputs=True)).run(
        ["score", "p_value", "nll"], {"features": X}
    )
    details = model.score_details(X)
    np.testing.assert_allclose(nll, details["nll"], rtol=1e-5)
    # Raw NLLs (the rules without tails) reach thousands: float32 rounding, relative.
    np.testing.assert_allclose(score, details["score"], rtol=2e-5, atol=1e-4)
    assert np.mean(np.abs(p_value - model.p_values(X)) < 1e-12) > 0.99


def test_zero_and_half_weights_of_the_stacked_rule(default, sample_table):
    X = cap_per_class(sample_table, 200, seed=2).X.astype(np.float32)
    model = copy.copy(default)
    model.fusion_ = copy.copy(default.fusion_)
    for weights in ({"nll": 0.0, "boost": 0.5, "knn": 1.0}, {"nll": 1.0, "boost": 0.0, "knn": 0.5}):
        model.fusion_.weights_ = weights
        (score,) = session(to_onnx(model)).run(["score"], {"features": X})
        np.testing.assert_allclose(score, model.decision_function(X), rtol=0, atol=1e-4)


def test_the_graph_carries_what_a_user_needs(default, tmp_path, sample_table):
    path = export_onnx(default, tmp_path / "model.onnx")
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["feature_names"]) == list(default.feature_names_in_)
    assert float(meta["threshold"]) == default.threshold_ and meta["score"] == "stacked"
    assert [i.name for i in proto.graph.input] == ["features"]
    assert [o.name for o in proto.graph.output] == ["score", "p_value", "is_attack"]
    # Any number of rows, one included.
    one = sample_table.X[:1].astype(np.float32)
    (score,) = session(proto).run(["score"], {"features": one})
    np.testing.assert_allclose(score, default.decision_function(one), atol=1e-4)


# ---------------------------------------------------------------------------- the parts


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 8, 9, 100, 1000])
def test_the_unrolled_search_is_searchsorted(n, side):
    rng = np.random.default_rng(n)
    values = np.sort(rng.integers(0, 20, size=n).astype(np.float64))  # with ties
    x = np.concatenate([values, values - 0.5, values + 0.5, [-3e38, 3e38, -np.inf, np.inf]])
    X = x.astype(np.float32)[:, None]
    found = run_part(
        lambda g, f: g.searchsorted(values, as_double_vector(g, f), side=side),
        X,
        TensorProto.INT64,
    )
    expected = np.searchsorted(values, X[:, 0].astype(np.float64), side=side)
    np.testing.assert_array_equal(found, expected)


@pytest.mark.parametrize("interpolate", [True, False])
def test_the_tails_are_those_of_the_model(interpolate):
    rng = np.random.default_rng(3)
    # Ties (the forest's probability 0 of most benign flows) and distinct values.
    reference = np.r_[np.zeros(30), np.round(rng.exponential(2.0, size=70), 1)]
    tail = TailPValue(min_scale=0.01, interpolate=interpolate).fit(reference)
    distinct = np.unique(reference)
    x = np.r_[
        distinct,
        (distinct[1:] + distinct[:-1]) / 2,
        distinct + 1e-3,
        [-1.0, tail.threshold_, tail.threshold_ + 1.0, 1e3, -np.inf, np.inf],
    ]
    X = x.astype(np.float32)[:, None]
    got = run_part(lambda g, f: tail_neg_log_p(g, tail, as_double_vector(g, f)), X)
    expected = tail.neg_log_p(X[:, 0].astype(np.float64))
    # The steps are a table of numpy's values; the interpolation's log1p is Log(1 + x).
    np.testing.assert_allclose(got, expected, rtol=0, atol=0 if not interpolate else 1e-14)
    if interpolate:  # between two references the score moves by as little as its input
        assert len(np.unique(got)) > len(distinct) + 10


class _Channel:
    def __init__(self, forest_: AttackForest) -> None:
        self.forest_ = forest_


def test_the_forest_compares_float32_features_with_float64_thresholds_exactly():
    # Three trees: a split at 0.1 (not a float32 number), a tree that is one leaf (not the
    # last: its stand-in split goes after every real one) and a split on the other feature;
    # the leaves hold fractional weights.
    threshold = 0.1
    arrays = {
        "left_child": np.array([1, -1, -1, -1, 1, -1, -1]),
        "right_child": np.array([2, -1, -1, -1, 2, -1, -1]),
        "feature": np.array([1, -2, -2, -2, 0, -2, -2]),
        "threshold": np.array([threshold, -2.0, -2.0, -2.0, 0.5, -2.0, -2.0]),
        "missing_go_to_left": np.zeros(7, dtype=np.uint8),
        "values": np.array(
            [[5.0, 5.0], [3.0, 1.0], [1.0, 2.0], [2.0, 1.0], [1, 1], [1.0, 0.0], [1.0, 6.0]]
        ),
        "offsets": np.array([0, 3, 4, 7]),
        "max_depth": np.array([1, 0, 1]),
    }
    model = AttackForest.from_state({"n_estimators": 3, "n_features_in_": 2}, arrays)
    near = np.float32(threshold)  # rounds above 0.1: goes right natively
    values = [near, np.nextafter(near, np.float32(0)), np.float32(-3), np.float32(7)]
    X = np.array([[v, v] for v in values] + [[2.0, v] for v in values], dtype=np.float32)
    native = model.predict_proba(X)
    assert len(set(native.tolist())) == 4  # both sides of both splits are reached
    np.testing.assert_array_equal(run_part(lambda g, f: forest(g, _Channel(model), f), X), native)


class _BoostChannel:
    def __init__(self, booster_: AttackBooster) -> None:
        self.booster_ = booster_


def test_the_booster_adds_its_trees_to_the_baseline_in_order():
    # Leaf values of 1e-16 vanish when added to the baseline 1.0 one by one, as natively; the
    # baseline added last (ONNX's base_values) would keep them. A one-leaf tree in the middle.
    tiny = 1e-16
    arrays = {
        "left_child": np.array([1, -1, -1, -1, 1, -1, -1]),
        "right_child": np.array([2, -1, -1, -1, 2, -1, -1]),
        "feature": np.array([0, -2, -2, -2, 1, -2, -2]),
        "threshold": np.array([0.1, -2.0, -2.0, -2.0, -1.0, -2.0, -2.0]),
        "missing_go_to_left": np.zeros(7, dtype=np.uint8),
        "values": np.array([0.0, tiny, 2.5, tiny, 0.0, tiny, -0.75]),
        "offsets": np.array([0, 3, 4, 7]),
        "max_depth": np.array([1, 0, 1]),
        "baseline": np.array([1.0]),
    }
    booster = AttackBooster.from_state({"max_iter": 3, "n_iter_": 3, "n_features_in_": 2}, arrays)
    X = np.array([[0.0, -5.0], [0.1, 0.0], [0.2, -5.0], [0.0, 0.0]], dtype=np.float32)
    native = booster.decision_function(X)
    assert native[0] == 1.0 and len(set(native.tolist())) == 4
    got = run_part(lambda g, f: boost(g, _BoostChannel(booster), f), X)
    np.testing.assert_array_equal(got, native)


def test_the_neighbour_distance_keeps_the_native_arithmetic():
    rng = np.random.default_rng(4)
    prototypes = rng.normal(3.0, 2.0, size=(40, 6)).astype(np.float32)
    channel = NeighbourChannel.from_state({"n_prototypes": 40}, {"prototypes": prototypes})
    # The prototypes themselves: the expanded |z|^2 - 2 z.p + |p|^2 finds them, and the direct
    # distance to the one found is exactly 0 (the expanded form left a rounding residue).
    X = np.vstack([prototypes, rng.normal(3.0, 4.0, size=(60, 6))]).astype(np.float32)
    native = channel.score(X)
    np.testing.assert_array_equal(native[:40], 0.0)
    got = run_part(lambda g, f: neighbours(g, channel, f), X)
    # The same prototype chosen; equal but for the order of the float64 sums.
    np.testing.assert_allclose(got, native, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------- refused parts


def test_parts_not_exported_are_named(fused, sample_table):
    from latent_sculpting.model.preprocessing import FeaturePreprocessor
    from latent_sculpting.model.stage1.encoders import FTTransformerEncoder

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


def test_an_unknown_side_channel_score_rule_or_unfitted_model_is_refused(default):
    with pytest.raises(ValueError, match="not fitted"):
        to_onnx(LatentSculpting())
    unknown = copy.copy(default)
    unknown.channels_ = {"svm" if k == "knn" else k: c for k, c in default.channels_.items()}
    with pytest.raises(ExportError, match="side channel 'svm' is not exported"):
        to_onnx(unknown)
    unknown = copy.copy(default)
    unknown.score = "median"
    with pytest.raises(ExportError, match="score rule 'median' is not exported"):
        to_onnx(unknown)


def test_cli_export_checks_the_graph(default, tmp_path, capsys):
    model_path = default.save(tmp_path / "m.sculpt")
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_path), "--onnx", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ONNX graph written to" in text and "checked with onnxruntime on 19 rows" in text
    difference = float(text.rsplit("native model ", 1)[1].split()[0])
    assert difference < 1e-4
    assert main(["export", str(model_path), "--onnx", "-o", str(tmp_path / "m.txt")]) == 2
    assert "use .onnx" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.sculpt"]


def test_a_model_without_a_flow_scores_as_native_on_every_row(sample_table):
    # default-noflow: the side channels alone under the stacked rule.
    model = fit(sample_table, {**preset("fast"), "flow_transforms": 0})
    assert model.flow_ is None and "nll" not in model.fusion_.tails_
    check_every_row(model, sample_table, exact=("boost_logit",))
