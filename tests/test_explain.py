"""Benign profiles and explanations: known answers, faithfulness to a toy model, state, cost."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from latent_sculpting.io.encoding import FlowBatch
from latent_sculpting.io.flowspec import Categorical, FlowSpec
from latent_sculpting.monitor.explain import Explainer, explain
from latent_sculpting.monitor.profile import LEVELS, BenignProfile, spec_categorical
from latent_sculpting.monitor.reasons import Explanation, format_number
from latent_sculpting.serve.scoring import NO_PROFILE, OUTPUT_COLUMNS, Scorer

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

NAMES = ["Flow Duration", "SYN Flag Count", "proto=tcp", "proto=udp", "proto=(other)"]
PROTO = {"proto": ["proto=tcp", "proto=udp", "proto=(other)"]}


@pytest.fixture
def benign() -> np.ndarray:
    """1000 benign rows: durations 0..999, SYN set in 5 of them, 900 tcp and 100 udp."""
    X = np.zeros((1000, 5), dtype=np.float32)
    X[:, 0] = np.arange(1000)
    X[:5, 1] = 1
    X[:900, 2] = 1
    X[900:, 3] = 1
    return X


@pytest.fixture
def profile(benign) -> BenignProfile:
    return BenignProfile().fit(benign, NAMES, categorical=PROTO)


def row(duration: float, syn: float = 0.0, proto: str = "tcp") -> np.ndarray:
    x = np.zeros((1, 5), dtype=np.float32)
    x[0, 0], x[0, 1] = duration, syn
    x[0, 2 + ["tcp", "udp", "(other)"].index(proto)] = 1
    return x


# ---------------------------------------------------------------------------- known answers


def test_profile_is_small_and_holds_observed_quantiles(profile):
    assert profile.n_samples_ == 1000
    assert profile.floor_ == pytest.approx(1 / 1001)
    assert profile.median_[0] == 499  # smallest value with at least half the rows at or below
    assert profile.quantiles_[0, 0] == 0 and profile.quantiles_[-1, 0] == 999
    assert profile.units_ == ("Flow Duration", "SYN Flag Count", "proto")
    np.testing.assert_allclose(profile.shares_["proto"], [0.9, 0.1, 0.0])
    config, arrays = profile.get_state()
    assert sum(a.nbytes for a in arrays.values()) < 4096
    assert len(json.dumps(config)) < 1024


def test_percentiles_between_grid_levels_are_interpolated(profile):
    below, above = profile.position(row(249.5))
    # Between the 0.25 quantile (249) and the median (499): 0.5 / 250 of the way.
    assert below[0, 0] == pytest.approx(0.25 + 0.002 * 0.25)
    assert above[0, 0] == pytest.approx(1 - below[0, 0])
    assert profile.tail_probability(row(249.5))[0, 0] == pytest.approx(2 * below[0, 0])


def test_values_beyond_every_benign_value_get_the_floor(profile):
    tails = profile.tail_probability(np.vstack([row(1e6), row(-5)]))[:, 0]
    np.testing.assert_allclose(tails, 1 / 1001)
    (high,), (low,) = (explain(profile, row(v), k=1)[0].reasons for v in (1e6, -5))
    assert high.text == "Flow Duration 1e6 (above every benign value, median 499)"
    assert high.benign_percentile == 100.0 and high.tail == pytest.approx(1 / 1001)
    assert low.text == "Flow Duration -5 (below every benign value, median 499)"
    assert low.benign_percentile == 0.0


def test_ties_of_a_discrete_feature_are_bounded_not_interpolated(profile):
    # SYN set in 0.5 % of benign rows: a 1 is above 99.5 % of them, a 0 is ordinary.
    below, above = profile.position(row(10, syn=1))
    assert below[0, 1] == pytest.approx(0.995) and above[0, 1] == 0.0
    tails = profile.tail_probability(np.vstack([row(10, syn=1), row(10, syn=0)]))
    assert tails[0, 1] == pytest.approx(0.01)
    assert tails[1, 1] == 1.0
    # The benign maximum itself: only the top grid step lies above it.
    assert profile.tail_probability(row(999))[0, 0] == pytest.approx(0.002)
    (syn,) = explain(profile, row(499, syn=1), k=1)[0].reasons
    assert syn.text == "SYN Flag Count 1 (above 99.5 % of benign, median 0)"
    assert syn.benign_percentile == pytest.approx(100 * (0.995 + 1) / 2)


def test_categorical_columns_are_one_unit_with_their_value_named(profile):
    X = np.vstack([row(499, proto="(other)"), row(499, proto="udp"), row(499, proto="tcp")])
    tails = profile.unit_tails(X)
    np.testing.assert_allclose(tails[:, 2], [1 / 1001, 0.1, 0.9])
    other, udp, tcp = explain(profile, X, k=3)
    (reason,) = other.reasons  # duration is the median, SYN is 0: only proto deviates
    assert reason.feature == "proto" and reason.value == "(other)"
    assert reason.benign_median == "tcp" and reason.benign_percentile is None
    assert reason.text == "proto = (other) (never in benign flows, usually tcp)"
    assert udp.reasons[0].text == "proto = udp (in 10 % of benign flows, usually tcp)"
    assert tcp.reasons == () and tcp.text() == "no feature differs from its benign median"
    reset = profile.reset(X, np.full((3, 1), profile.unit_index("proto")))
    np.testing.assert_array_equal(reset[:, 2:], [[1, 0, 0]] * 3)


def test_marginal_ranking_most_unusual_first_and_ties_by_distance():
    rng = np.random.default_rng(0)
    benign = rng.normal(size=(2000, 4)).astype(np.float32)
    profile = BenignProfile().fit(benign, ["a", "b", "c", "d"])
    x = np.array([[profile.median_[0], 50.0, 2.5, 9.0]], dtype=np.float32)
    (e,) = explain(profile, x, k=4)
    # b and d are beyond every benign value, b farther; "a", at the median, is never named.
    assert e.features == ["b", "d", "c"]
    assert e.score is None and e.score_reset is None


def test_numbers_are_short():
    assert format_number(120000000.0) == "1.2e8"
    assert format_number(3.0) == "3" and format_number(-7.0) == "-7"
    assert format_number(0.012345) == "0.0123"
    assert format_number(2.5e-9) == "2.5e-9"


# ---------------------------------------------------------------------------- faithfulness


class Counting:
    """A decision function that depends on features 2 and 5 only, counting its calls."""

    def __init__(self, center: np.ndarray) -> None:
        self.center = center
        self.calls: list[int] = []

    def __call__(self, X: np.ndarray) -> np.ndarray:
        self.calls.append(len(X))
        return 3.0 * np.abs(X[:, 2] - self.center[2]) + np.abs(X[:, 5] - self.center[5])


@pytest.fixture
def toy():
    rng = np.random.default_rng(1)
    benign = rng.normal(size=(4000, 8)).astype(np.float32)
    profile = BenignProfile().fit(benign, [f"f{j}" for j in range(8)])
    X = rng.normal(size=(50, 8)).astype(np.float32)
    X[:, [0, 1, 3]] = 40.0  # beyond every benign value, ignored by the model
    X[:, 2] = 2.2  # unusual, but far less so
    X[:, 5] = -2.4
    return profile, X, Counting(profile.median_)


def test_the_model_guided_ranking_names_what_the_model_uses(toy):
    profile, X, model = toy
    for e in explain(profile, X, model, k=2, n_candidates=8):
        assert e.features == ["f2", "f5"]  # f2 weighs three times f5 in the model
        assert e.score_reset == pytest.approx(0.0, abs=1e-5)
        assert e.reasons[0].score_drop > e.reasons[1].score_drop > 0
    for e in explain(profile, X, model, k=3, n_candidates=8):
        assert e.features[:2] == ["f2", "f5"]
    # The model-blind baseline names the marginally most unusual, which the model ignores.
    for e in explain(profile, X, k=2):
        assert set(e.features) <= {"f0", "f1", "f3"}


def test_the_model_chooses_only_among_candidates(toy):
    profile, X, model = toy
    # With 3 candidates, f0, f1 and f3 crowd out f2 and f5.
    for e in explain(profile, X, model, k=2, n_candidates=3):
        assert set(e.features) <= {"f0", "f1", "f3"}


def test_model_calls_are_bounded_per_batch(toy):
    profile, X, model = toy
    explain(profile, X, model, scores=model(X), k=3, n_candidates=6)
    assert model.calls[1:] == [50 * 6, 50 * 5, 50 * 4]  # one call per greedy step
    model.calls.clear()
    explain(profile, X, model, k=3, n_candidates=6)
    assert model.calls == [50, 50 * 6, 50 * 5, 50 * 4]  # without scores: one more call


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        (50 * 12, [50 * 5, 50 * 4, 50 * 3]),  # full greedy among 5 candidates
        (50 * 8, [50 * 8]),  # no room for 3 steps among 4: one step among 8
        (50 * 1, []),  # no room at all: names in order of surprise
    ],
)
def test_the_search_shrinks_to_its_budget(toy, limit, expected):
    profile, X, model = toy
    found = explain(profile, X, model, scores=model(X), n_candidates=8, max_evaluations=limit)
    assert model.calls[1:] == expected
    assert sum(model.calls[1:]) <= limit
    assert all(len(e.reasons) == 3 for e in found)
    if len(expected) == 1:
        assert all(e.features[0] == "f2" and e.score_reset is None for e in found)
        assert all(e.reasons[1].score_drop is None for e in found)


def test_explainer_budget_is_relative_to_the_batch(toy):
    profile, X, model = toy
    explainer = Explainer(profile, model, n_candidates=8, budget=1.0)
    explainer.explain(X[:5], model(X[:5]), batch_rows=1000)  # 200 variants per flagged row
    assert model.calls[1:] == [5 * 8, 5 * 7, 5 * 6]
    model.calls.clear()
    explainer.explain(X, model(X), batch_rows=100)  # 2 per row: one step among 2 candidates
    assert model.calls[1:] == [50 * 2]


def test_a_bad_model_answer_is_refused(toy):
    profile, X, _ = toy
    with pytest.raises(ValueError, match="must return 50 finite scores"):
        explain(profile, X, lambda Z: np.zeros(len(Z) - 1))
    with pytest.raises(ValueError, match="finite scores"):
        explain(profile, X, lambda Z: np.full(len(Z), np.nan))


# ---------------------------------------------------------------------------- records


def test_explanations_render_as_text_and_json(profile):
    (e,) = explain(profile, row(2e6, syn=1, proto="udp"), k=3)
    assert isinstance(e, Explanation)
    assert e.text() == str(e) == "; ".join(r.text for r in e.reasons)
    assert e.features == ["Flow Duration", "SYN Flag Count", "proto"]
    data = json.loads(json.dumps(e.to_dict()))
    assert data["features"][0] == {
        "feature": "Flow Duration",
        "value": 2e6,
        "benign_median": 499.0,
        "benign_percentile": 100.0,
        "tail": pytest.approx(1 / 1001),
        "score_drop": None,
        "text": "Flow Duration 2e6 (above every benign value, median 499)",
    }
    assert data["features"][2]["value"] == "udp"
    assert data["text"] == e.text()


# ---------------------------------------------------------------------------- state


def test_state_round_trip(profile):
    config, arrays = profile.get_state()
    config = json.loads(json.dumps(config))
    loaded = BenignProfile.from_state(config, arrays)
    X = np.vstack([row(1e6, syn=1, proto="(other)"), row(249.5, proto="udp"), row(999)])
    for a, b in zip(loaded.position(X), profile.position(X), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [e.to_dict() for e in explain(loaded, X)] == [e.to_dict() for e in explain(profile, X)]
    assert loaded.units_ == profile.units_


def _damaged(profile, change):
    config, arrays = profile.get_state()
    config = json.loads(json.dumps(config))
    change(config, arrays)
    return config, arrays


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda c, a: c.update(version=2), "version 2"),
        (lambda c, a: c.update(feature_names=[*NAMES[:4], NAMES[0]]), "names repeat"),
        (lambda c, a: c.update(feature_names=NAMES[:4]), r"shape \(19, 5\), expected"),
        (lambda c, a: c.update(feature_names=[1, 2, 3, 4, 5]), "is not a name"),
        (lambda c, a: c.update(n_samples=0), "'n_samples' must be a positive integer"),
        (lambda c, a: c.update(n_samples=True), "'n_samples' must be a positive integer"),
        (lambda c, a: a.pop("quantiles"), r"arrays \['quantiles'\] missing"),
        (lambda c, a: a.update(quantiles=a["quantiles"][::-1]), "'Flow Duration' are not sorted"),
        (lambda c, a: a["quantiles"].__setitem__((3, 1), np.nan), "NaN or infinite"),
        (lambda c, a: a.update(quantiles=a["quantiles"][0]), "must be 2-D"),
        (lambda c, a: a.update(levels=a["levels"][::-1]), "increase strictly from 0 to 1"),
        (lambda c, a: a.update(levels=np.delete(a["levels"], 9)), "include 0.5"),
        (lambda c, a: a.update(shares=a["shares"][:2]), "2 values for 3 indicator features"),
        (lambda c, a: a.update(shares=np.array([0.5, 0.4, 0.0])), "sum to 0.9, not 1"),
        (lambda c, a: a.update(shares=np.array([1.5, -0.5, 0.0])), r"lie in \[0, 1\]"),
        (lambda c, a: c["categorical"].update(proto=[2, 3, 9]), "distinct feature indices"),
        (lambda c, a: c["categorical"].update(proto=[2, 2, 4]), "distinct feature indices"),
        (lambda c, a: c.update(categorical={"p": [2, 3], "q": [3, 4]}), "no other column"),
        (lambda c, a: c.update(categorical=[]), "'categorical' must be an object"),
        (lambda c, a: c.update(categorical={"Flow Duration": [2, 3, 4]}), "name of a numeric"),
    ],
)
def test_damaged_states_are_refused(profile, change, message):
    config, arrays = _damaged(profile, change)
    with pytest.raises(ValueError, match=message):
        BenignProfile.from_state(config, arrays)


def test_bad_training_input_is_refused(benign):
    with pytest.raises(ValueError, match="5 feature names for 4 columns"):
        BenignProfile().fit(benign[:, :4], NAMES)
    with pytest.raises(ValueError, match="no rows"):
        BenignProfile().fit(benign[:0], NAMES)
    bad = benign.copy()
    bad[7, 0] = np.inf
    with pytest.raises(ValueError, match="row 7, column 0"):
        BenignProfile().fit(bad, NAMES)
    bad = benign.copy()
    bad[3, 2:] = 0
    with pytest.raises(ValueError, match="X, row 3: the indicators of categorical column 'proto'"):
        BenignProfile().fit(bad, NAMES, categorical=PROTO)
    with pytest.raises(ValueError, match="no features named"):
        BenignProfile().fit(benign, NAMES, categorical={"proto": ["proto=icmp"]})
    with pytest.raises(ValueError, match="include 0.5"):
        BenignProfile(levels=(0.0, 0.25, 1.0)).fit(benign, NAMES)
    assert LEVELS[0] == 0.0 and LEVELS[-1] == 1.0


def test_bad_explained_rows_are_refused(profile):
    with pytest.raises(ValueError, match="the explained rows, row 0: the indicators"):
        explain(profile, np.zeros((1, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="has 4 features; the profile has 5"):
        explain(profile, np.zeros((1, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        explain(profile, row(1), k=0)
    with pytest.raises(ValueError, match="n_candidates must be an integer >= k"):
        explain(profile, row(1), k=3, n_candidates=2)
    with pytest.raises(ValueError, match="scores must be 1 finite numbers"):
        explain(profile, row(1), scores=[1.0, 2.0])


# ---------------------------------------------------------------------------- the scorer


class ToyModel:
    """What Scorer needs of a model: a spec, a threshold, calibration scores, scores."""

    def __init__(self, profile: BenignProfile) -> None:
        self.spec_ = FlowSpec(
            format="table",
            numeric=("Flow Duration", "SYN Flag Count"),
            categorical=(Categorical("proto", ("tcp", "udp")),),
        )
        self.center = profile.median_
        self.threshold_ = 1.0
        self.calibration_scores_ = np.linspace(0, 1, 101)

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.abs(X[:, 0] - self.center[0]) / 500 + 2 * X[:, 1] + 3 * X[:, 4]

    def score_details(self, X: np.ndarray) -> dict[str, np.ndarray]:
        return {"score": self.decision_function(X)}


def test_scorer_adds_an_explanation_for_flagged_flows_only(benign):
    model = ToyModel(BenignProfile().fit(benign, NAMES))
    assert spec_categorical(model.spec_) == PROTO
    profile = BenignProfile().fit(benign, model.spec_.feature_names, categorical=PROTO)
    scorer = Scorer(model, explainer=Explainer(profile, model.decision_function, budget=None))
    X = np.vstack([row(500), row(1000, syn=1), row(499, proto="(other)")])
    ids = pa.table({"flow": ["a", "b", "c"]})
    out = scorer.score(FlowBatch(X, model.spec_.feature_names, ids))
    assert list(out.columns) == [
        "flow",
        "score",
        "p_value",
        "is_attack",
        "flagged_by",
        "explanation",
    ]
    assert out["is_attack"].tolist() == [False, True, True]
    assert out["explanation"][0] == ""
    assert out["explanation"][1].startswith("SYN Flag Count 1 (above 99.5 % of benign, median 0)")
    assert out["explanation"][2] == "proto = (other) (never in benign flows, usually tcp)"
    plain = Scorer(model).score(FlowBatch(X, model.spec_.feature_names, ids))
    pd.testing.assert_frame_equal(plain, out.drop(columns="explanation"))


def test_a_scorer_explains_with_the_models_own_profile_by_default(benign):
    model = ToyModel(BenignProfile().fit(benign, NAMES))
    X = np.vstack([row(500), row(1000, syn=1), row(499, proto="(other)")])
    batch = FlowBatch(X, model.spec_.feature_names, pa.table({"flow": ["a", "b", "c"]}))
    # Without a profile (a model file from before profiles): no column, and the reason.
    scorer = Scorer(model)
    assert scorer.explainer is None and scorer.explain_missing == NO_PROFILE
    assert "explanation" not in scorer.score(batch).columns
    assert Scorer(model, explain=False).explain_missing is None

    model.benign_profile_ = BenignProfile().fit(benign, NAMES, categorical=PROTO)
    scorer = Scorer(model)
    assert scorer.explain_missing is None
    assert scorer.output_columns == (*OUTPUT_COLUMNS, "explanation")
    out, found = scorer.score_explained(batch)
    assert found[0] is None and out["explanation"][0] == ""
    assert [e.text() for e in found[1:]] == out["explanation"][1:].tolist()
    assert found[2].features == ["proto"]
    # Per call, and per scorer.
    assert "explanation" not in scorer.score(batch, explain=False).columns
    assert scorer.score_explained(batch, explain=False)[1] is None
    plain = Scorer(model, explain=False)
    assert plain.explainer is None and plain.output_columns == OUTPUT_COLUMNS
    pd.testing.assert_frame_equal(plain.score(batch), out.drop(columns="explanation"))


# ---------------------------------------------------------------------------- a real model


def test_on_the_sample_the_model_guided_features_lower_the_score_most(sample_table):
    from latent_sculpting import LatentSculpting, preset
    from latent_sculpting.io.table import cap_per_class

    table = cap_per_class(sample_table, 150)
    y = (table.labels != "BENIGN").astype(int)
    model = LatentSculpting(**{**preset("fast"), "epochs": 1, "flow_epochs": 1}, random_state=0)
    model.fit(table.X, y, groups=table.labels)
    profile = BenignProfile().fit(table.X[y == 0], table.feature_names)
    scores = model.decision_function(table.X)
    flagged = scores > model.threshold_
    X, s = table.X[flagged], scores[flagged]
    assert len(X) > 100

    def score_after(found: list[Explanation]) -> np.ndarray:
        units = np.full((len(found), 3), -1)
        for i, e in enumerate(found):
            units[i, : len(e.features)] = [profile.unit_index(f) for f in e.features]
        return model.decision_function(profile.reset(X, units))

    guided = explain(profile, X, model.decision_function, scores=s)
    blind = explain(profile, X)
    after = score_after(guided)
    np.testing.assert_allclose(after, [e.score_reset for e in guided], rtol=1e-5, atol=1e-5)
    assert np.mean(s - after) > 1.5 * np.mean(s - score_after(blind))
    assert all(len(e.reasons) == 3 and e.text() for e in guided)


def _reference_position(profile, X):
    """Shares below and above from numpy's searchsorted, column by column (what the kernel
    computes in one pass)."""
    q, lv = profile.quantiles_.astype(np.float64), profile.levels_
    last = len(lv) - 1
    below, above = np.empty(X.shape), np.empty(X.shape)
    for j in range(X.shape[1]):
        x = X[:, j].astype(np.float64)
        left = np.searchsorted(profile.quantiles_[:, j], X[:, j], side="left")
        right = np.searchsorted(profile.quantiles_[:, j], X[:, j], side="right")
        k = np.clip(left, 1, last)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.clip((x - q[k - 1, j]) / (q[k, j] - q[k - 1, j]), 0.0, 1.0)
        level = lv[k - 1] + frac * (lv[k] - lv[k - 1])
        level = np.where(left == 0, 0.0, np.where(left > last, 1.0, level))
        tied = right > left
        below[:, j] = np.where(tied, np.where(left > 0, lv[np.maximum(left - 1, 0)], 0.0), level)
        above[:, j] = np.where(
            tied, np.where(right <= last, 1.0 - lv[np.minimum(right, last)], 0.0), 1.0 - level
        )
    return below, above


@pytest.mark.parametrize("levels", [LEVELS, tuple(np.linspace(0.0, 1.0, 201))])
def test_positions_are_searchsorted_shares(levels):
    # Values between grid quantiles, beyond them and on them (where left and right differ).
    rng = np.random.default_rng(4)
    fit = np.c_[rng.lognormal(size=(3000, 3)), rng.integers(0, 3, 3000)].astype(np.float32)
    profile = BenignProfile(levels=levels).fit(fit, ["a", "b", "c", "d"])
    X = np.c_[rng.lognormal(size=(200, 3)), rng.integers(-1, 4, 200)].astype(np.float32)
    on_grid = profile.quantiles_[rng.integers(0, len(levels), (100, 4)), np.arange(4)]
    X = np.vstack([X, on_grid, np.float32([[-1e30, 1e30, 0.0, 7.0]])])
    below, above = profile.position(X)
    want_below, want_above = _reference_position(profile, X)
    np.testing.assert_allclose(below, want_below, rtol=1e-12, atol=0)
    np.testing.assert_allclose(above, want_above, rtol=1e-12, atol=0)
    # A row's position does not depend on the rows scored with it.
    below, above = profile.position(X)
    for i in (0, 150, 299):
        one = profile.position(X[i : i + 1])
        np.testing.assert_array_equal(one[0][0], below[i])
        np.testing.assert_array_equal(one[1][0], above[i])
