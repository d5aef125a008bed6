"""Drift of scored traffic from the benign training traffic: bins, PSI, tests, monitors, state."""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from latent_sculpting.data import BENIGN
from latent_sculpting.monitor.drift import DriftMonitor, DriftReference, RollingDriftMonitor
from latent_sculpting.monitor.drift_reference import _equal_frequency_edges
from latent_sculpting.monitor.drift_report import DriftCounts

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


def hand_made_reference(n_reference: int = 1000) -> DriftReference:
    """Two features: "a" with bins (-inf, 1], (1, 2], (2, inf) and range [0, 3]; "b" constant 5."""
    config = {
        "version": 1,
        "n_bins": 10,
        "feature_names": ["a", "b"],
        "target_fpr": 0.01,
        "n_reference": n_reference,
    }
    arrays = {
        "edges": np.array([1.0, 2.0], np.float32),
        "n_edges": np.array([2, 0], np.int32),
        "shares": np.array([0.5, 0.3, 0.2, 1.0], np.float32),
        "minimum": np.array([0.0, 5.0], np.float32),
        "maximum": np.array([3.0, 5.0], np.float32),
    }
    return DriftReference.from_state(config, arrays)


def batch(a_values: list[float], b_value: float = 5.0) -> np.ndarray:
    a = np.asarray(a_values, dtype=np.float32)
    return np.column_stack([a, np.full_like(a, b_value)])


# -- bins ---------------------------------------------------------------------------------


def test_equal_frequency_edges_on_continuous_values_are_deciles():
    x = np.random.default_rng(0).normal(size=10_000).astype(np.float32)
    edges = _equal_frequency_edges(x, 10)
    counts = np.histogram(x, np.r_[-np.inf, edges, np.inf])[0]
    assert len(edges) == 9 and counts.min() >= 990 and counts.max() <= 1010
    np.testing.assert_array_equal(edges, np.quantile(x, np.arange(1, 10) / 10, method="lower"))


def test_equal_frequency_edges_keep_ties_whole_and_split_the_rest():
    # 91 % zeros: the zeros fill one bin, the rare non-zero values share the bins left.
    z = np.r_[np.zeros(910), np.repeat([1, 2, 3, 4], [40, 30, 15, 5])].astype(np.float32)
    np.testing.assert_array_equal(_equal_frequency_edges(z, 10), [0, 1, 2, 3])
    assert len(_equal_frequency_edges(np.full(50, 7, np.float32), 10)) == 0  # constant: one bin
    two = np.r_[np.zeros(30), np.ones(70)].astype(np.float32)
    np.testing.assert_array_equal(_equal_frequency_edges(two, 10), [0])
    np.testing.assert_array_equal(_equal_frequency_edges(np.arange(4.0), 10), [0, 1, 2])
    # A bin closes one value early when that is nearer its share: 22 rows, not 32, for 25.
    tied = np.repeat([0, 1, 2, 3, 4], [22, 10, 18, 25, 25]).astype(np.float32)
    np.testing.assert_array_equal(_equal_frequency_edges(tied, 4), [0, 2, 3])


def test_fitted_bins_hold_training_rows_and_shares_sum_to_one(sample_table):
    X = sample_table.X[sample_table.labels == BENIGN][:3000]
    ref = DriftReference().fit(X, feature_names=sample_table.feature_names, target_fpr=0.05)
    assert (ref.n_edges_ <= 9).all() and (ref.shares_ > 0).all()
    starts = np.r_[0, np.cumsum(ref.n_edges_ + 1)[:-1]]
    np.testing.assert_allclose(np.add.reduceat(ref.shares_, starts), 1.0, atol=1e-6)
    constant = ref.feature_names_.index("Fwd URG Flags")  # always 0 in the sample's benign rows
    assert ref.n_edges_[constant] == 0 and len(ref.bin_edges("Fwd URG Flags")) == 0


# -- known answers --------------------------------------------------------------------------


def test_psi_and_out_of_range_known_answers_on_hand_made_bins():
    ref = hand_made_reference()
    # Bin counts 20 / 50 / 30 of 100 (an edge belongs to the bin below it); 10 flows below
    # the range, 5 above.
    a = [-1.0] * 10 + [1.0] * 10 + [1.5] * 40 + [2.0] * 10 + [2.5] * 25 + [10.0] * 5
    report = DriftMonitor(ref).update(batch(a), np.zeros(100)).report()
    expected = 0.3 * math.log(0.5 / 0.2) + 0.2 * math.log(0.5 / 0.3) + 0.1 * math.log(0.3 / 0.2)
    assert report.psi[0] == pytest.approx(expected, rel=1e-6)
    assert report.psi[0] == pytest.approx(0.417599, abs=1e-6)
    assert report.out_of_range_share.tolist() == pytest.approx([0.15, 0.0])
    assert report.psi[1] == 0.0 and report.psi_p_value[1] == 1.0  # one bin: nothing to move
    # An empty bin counts as half a flow: q = 0.005 instead of 0.
    report = DriftMonitor(ref).update(batch([1.5] * 60 + [2.5] * 40), np.zeros(100)).report()
    floored = (0.5 - 0.005) * math.log(0.5 / 0.005) + 0.3 * math.log(0.6 / 0.3)
    floored += 0.2 * math.log(0.4 / 0.2)
    assert report.psi[0] == pytest.approx(floored, rel=1e-6)


def test_out_of_range_p_value_known_answer():
    # n = 4 training, m = 2 new flows, both outside: (k + 1) C(2, 2) / C(6, 2) = 3 / 15.
    ref = hand_made_reference(n_reference=4)
    report = DriftMonitor(ref).update(batch([9.0, 9.0]), np.zeros(2)).report()
    assert report.out_of_range_p_value[0] == pytest.approx(0.2)
    assert report.out_of_range_p_value[1] == 1.0


def test_binomial_test_of_the_flag_rate_known_answer():
    ref = hand_made_reference()
    X = batch([1.5] * 100)

    # P(Binomial(100, 0.01) >= k), computed here without scipy.
    def tail(k: int) -> float:
        return 1 - sum(math.comb(100, i) * 0.01**i * 0.99 ** (100 - i) for i in range(k))

    five = DriftMonitor(ref).update(X, np.r_[np.ones(5), np.zeros(95)]).report()
    assert five.flagged_share == 0.05
    assert five.flag_rate_p_value == pytest.approx(tail(5), rel=1e-9)
    assert five.flag_rate_p_value == pytest.approx(0.0034323, abs=1e-7)
    assert not five.flag_rate_exceeded  # 5 x the target, but 5 of 100 flows is not yet evidence
    seven = DriftMonitor(ref).update(X, np.r_[np.ones(7), np.zeros(93)]).report()
    assert seven.flag_rate_p_value == pytest.approx(tail(7), rel=1e-9)
    assert seven.flag_rate_p_value < 1e-3 and seven.flag_rate_exceeded
    # Above the target but under twice it: no warning however many flows say so.
    many = DriftMonitor(ref).update(np.repeat(X, 100, axis=0), np.arange(10_000) % 60 == 0)
    assert many.report().flag_rate_p_value < 1e-3 and not many.report().flag_rate_exceeded


def test_many_flags_alone_are_not_called_drift_nor_false_alarms_unless_the_flows_are_benign():
    # 7 % flagged, nothing moved. Of unlabelled flows the report cannot tell attacks from false
    # alarms and must say so; of flows known benign (labelled) the flags are false alarms.
    ref = hand_made_reference()
    X = batch([0.5] * 50 + [1.5] * 30 + [2.5] * 20)  # the training shares exactly
    flags = np.r_[np.ones(7), np.zeros(93)]
    unlabelled = DriftMonitor(ref).update(X, flags).report()
    assert unlabelled.warning and unlabelled.flag_rate_exceeded and not unlabelled.drifted
    assert unlabelled.n_labelled_benign == 0
    assert unlabelled.flag_rate == (
        "7 % of flows flagged against a 1 % target: attacks among them, or false alarms on "
        "benign traffic unlike the training traffic; the flag rate alone cannot tell which "
        "(labels, or a look at the flagged flows, can)"
    )
    assert unlabelled.traffic == "no feature moved against the benign training traffic"
    assert unlabelled.consequence == f"{unlabelled.flag_rate}; {unlabelled.traffic}"
    assert "false-alarm rate" not in unlabelled.consequence
    assert str(unlabelled).startswith("drift check (100 flows): MANY FLAGGED: 7 % of flows")
    benign = DriftMonitor(ref).update(X, flags, labelled_benign=True).report()
    assert benign.n_labelled_benign == 100 and benign.flag_rate == (
        "the false-alarm rate exceeds the target: 7 % of flows labelled benign flagged against "
        "a 1 % target"
    )
    # One unlabelled batch among labelled ones: the flags may be attacks again.
    mixed = DriftMonitor(ref).update(X, flags, labelled_benign=True).update(X[:1], flags[:1])
    assert mixed.report().n_labelled_benign == 100
    assert "cannot tell which" in mixed.report().flag_rate


# -- the verdict on real traffic ----------------------------------------------------------


class KnnDetector:
    """Distance to the 5th nearest training flow in log1p space, split-conformal at ``fpr``."""

    def __init__(self, fit_rows: np.ndarray, calibration_rows: np.ndarray, fpr: float) -> None:
        self.nn = NearestNeighbors(n_neighbors=5).fit(np.log1p(np.abs(fit_rows)))
        scores = np.sort(self.score(calibration_rows))
        k = math.ceil((len(scores) + 1) * (1 - fpr))
        self.threshold = scores[min(k, len(scores)) - 1]

    def score(self, X: np.ndarray) -> np.ndarray:
        return self.nn.kneighbors(np.log1p(np.abs(X)))[0][:, -1]

    def flag(self, X: np.ndarray) -> np.ndarray:
        return self.score(X) > self.threshold


@pytest.fixture(scope="module")
def benign_split(sample_table):
    """Benign rows split at random: training (reference and detector) and new traffic."""
    X = sample_table.X[sample_table.labels == BENIGN]
    order = np.random.default_rng(7).permutation(len(X))
    train, new = X[order[:4500]], X[order[4500:]]
    ref = DriftReference().fit(train, feature_names=sample_table.feature_names, target_fpr=0.01)
    return ref, KnnDetector(train[:3400], train[3400:], 0.01), new


def test_no_warning_on_an_unshifted_random_split_of_benign_rows(benign_split):
    ref, detector, new = benign_split
    report = DriftMonitor(ref).update(new, detector.flag(new)).report()
    assert not report.warning and not report.drifted, report.reasons
    assert report.psi.max() < 0.05 and report.out_of_range_share.max() < 0.005
    assert report.flagged_share < 0.02
    assert report.consequence.startswith("no drift detected")


def test_a_large_psi_from_few_flows_is_no_warning(benign_split):
    ref, detector, new = benign_split
    report = DriftMonitor(ref).update(new[:30], detector.flag(new[:30])).report()
    assert report.psi.max() > 0.25  # 30 flows in up to 10 bins: PSI is mostly noise
    assert not report.warning, report.reasons


def test_warning_names_the_feature_multiplied_by_ten(benign_split):
    ref, detector, new = benign_split
    shifted = new.copy()
    j = ref.feature_names_.index("Flow Duration")
    shifted[:, j] *= 10
    report = DriftMonitor(ref).update(shifted, detector.flag(shifted)).report()
    assert report.drifted and report.top_features[0] == "Flow Duration"
    assert np.flatnonzero(report.feature_drifted).tolist() == [j]
    assert report.psi[j] > 1.0
    assert "Flow Duration" in report.consequence and "Flow Duration" in str(report)
    # Unlabelled flows: attacks could have moved the feature; labelled benign ones: not.
    assert report.traffic == (
        "the traffic moved: 1 feature(s) unlike the benign training traffic (Flow Duration); "
        "if benign traffic moved, the 1 % false-alarm target is not guaranteed for it "
        "(recalibrate or retrain on recent benign traffic), though attacks among the flows "
        "move features too"
    )
    assert report.consequence.startswith(report.traffic) and "flagged so far" in report.consequence
    benign = DriftMonitor(ref).update(shifted, detector.flag(shifted), labelled_benign=True)
    assert benign.report().traffic.startswith(
        "the benign traffic moved: 1 feature(s) unlike the benign training traffic "
        "(Flow Duration); the 1 % false-alarm target is not guaranteed for it"
    )


def test_values_in_a_feature_constant_in_training_are_caught_out_of_range(benign_split):
    ref, detector, new = benign_split
    shifted = new.copy()
    j = ref.feature_names_.index("Fwd URG Flags")
    shifted[: len(new) // 20, j] = 1.0  # 5 % of flows now set a flag training never saw
    report = DriftMonitor(ref).update(shifted, detector.flag(shifted)).report()
    assert report.psi[j] == 0.0 and report.out_of_range_share[j] == pytest.approx(0.05, abs=1e-3)
    assert report.drifted and report.top_features[0] == "Fwd URG Flags"


# -- accumulation -------------------------------------------------------------------------


def test_batches_accumulate_to_the_report_of_one_big_batch(benign_split):
    ref, detector, new = benign_split
    flags = detector.flag(new)
    whole = DriftMonitor(ref).update(new, flags).report()
    monitor = DriftMonitor(ref)
    for part in np.array_split(np.arange(len(new)), [1, 500, 501, 2000]):
        monitor.update(new[part], flags[part])
    assert monitor.n_flows == len(new)
    assert monitor.report().to_dict() == whole.to_dict()
    np.testing.assert_array_equal(monitor.report().psi, whole.psi)
    monitor.reset()
    empty = monitor.report()
    assert empty.n_flows == 0 and not empty.drifted and empty.to_dict()["flagged_share"] is None


def test_rolling_window_reports_only_the_last_flows(benign_split):
    ref, detector, new = benign_split
    flags = detector.flag(new)
    rolling = RollingDriftMonitor(ref, window=400, n_buckets=4)  # buckets of 100 flows
    for part in np.array_split(np.arange(950), 7):  # 950 flows in uneven batches
        rolling.update(new[part], flags[part])
    # Full buckets 600-699, 700-799, 800-899 and the open one, 900-949.
    expected = DriftMonitor(ref).update(new[600:950], flags[600:950]).report()
    assert rolling.n_flows == 350
    assert rolling.report().to_dict() == expected.to_dict()
    rolling.update(new[:1000], flags[:1000])  # a batch longer than the ring
    assert (
        rolling.report().to_dict()
        == DriftMonitor(ref).update(new[600:1000], flags[600:1000]).report().to_dict()
    )


def test_counts_carry_the_labelled_share_between_processes(benign_split):
    ref, detector, new = benign_split
    flags = detector.flag(new)
    worker = DriftMonitor(ref).update(new[:100], flags[:100], labelled_benign=True)
    worker.update(new[100:150], flags[100:150])
    counts = json.loads(json.dumps(worker.get_counts()))
    assert counts["labelled_benign"] == 100
    merged = DriftMonitor(ref).add_counts(counts).add_counts(counts)
    assert merged.report().n_labelled_benign == 200 and merged.report().n_flows == 300
    for bad in (None, -1, 151, 1.5):
        with pytest.raises(ValueError, match="labelled_benign"):
            DriftMonitor(ref).add_counts({**counts, "labelled_benign": bad})


def test_monitors_are_thread_safe(benign_split, monkeypatch):
    ref, detector, new = benign_split
    flags = detector.flag(new)
    serial = DriftMonitor(ref).update(new, flags).report().to_dict()
    add = DriftCounts.add

    def slow_add(self, index, flags, labelled):
        # Counting that yields to other threads half-way: unlocked, updates would be lost.
        before = self.copy()
        time.sleep(1e-4)
        self.bins, self.n, self.flagged = before.bins, before.n, before.flagged
        add(self, index, flags, labelled)

    monkeypatch.setattr(DriftCounts, "add", slow_add)
    parts = np.array_split(np.arange(len(new)), 200)
    for monitor in (DriftMonitor(ref), RollingDriftMonitor(ref, window=len(new), n_buckets=7)):

        def feed(chunks, monitor=monitor):
            for part in chunks:
                monitor.update(new[part], flags[part])
                monitor.report()

        threads = [threading.Thread(target=feed, args=(parts[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert monitor.report().to_dict() == serial


def test_report_is_json_and_a_short_text(benign_split):
    ref, detector, new = benign_split
    report = DriftMonitor(ref, n_top=3).update(new[:500], detector.flag(new[:500])).report()
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["n_flows"] == 500 and len(data["top_features"]) == 3
    assert set(data["features"]) == set(ref.feature_names_)
    text = str(report)
    assert text.count("\n") == 1 and "500 flows" in text and "moved most" in text


def test_bad_batches_are_refused_with_the_row_and_column():
    monitor = DriftMonitor(hand_made_reference())
    with pytest.raises(ValueError, match=r"expected \(n_rows, 2\)"):
        monitor.update(np.zeros((3, 3)), np.zeros(3))
    X = batch([1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="non-finite value nan at row 1, column 'a'"):
        monitor.update(X, np.zeros(3))
    with pytest.raises(ValueError, match="0 or 1, got 2"):
        monitor.update(batch([1.0, 2.0]), np.array([0, 2]))
    with pytest.raises(ValueError, match=r"flagged has shape \(3,\)"):
        monitor.update(batch([1.0, 2.0]), np.zeros(3))
    assert monitor.n_flows == 0
    with pytest.raises(ValueError, match="psi_threshold"):
        DriftMonitor(hand_made_reference(), psi_threshold=0)
    with pytest.raises(ValueError, match="not fitted"):
        DriftMonitor(DriftReference())
    with pytest.raises(ValueError, match="'x' repeats"):
        DriftReference().fit(np.zeros((20, 2)), feature_names=["x", "x"], target_fpr=0.01)


# -- state --------------------------------------------------------------------------------


def test_state_round_trip_through_json(benign_split):
    ref, detector, new = benign_split
    config, arrays = ref.get_state()
    assert sum(a.nbytes for a in arrays.values()) < 8_000  # a few KB per model
    copy = DriftReference.from_state(json.loads(json.dumps(config)), arrays)
    for key, value in copy.get_state()[1].items():
        np.testing.assert_array_equal(value, arrays[key])
        assert value.dtype == arrays[key].dtype
    flags = detector.flag(new)
    shifted = new * np.float32(3)
    for X in (new, shifted):
        assert (
            DriftMonitor(copy).update(X, flags).report().to_dict()
            == DriftMonitor(ref).update(X, flags).report().to_dict()
        )


def damage(key: str, value):
    config, arrays = hand_made_reference().get_state()
    config, arrays = dict(config), dict(arrays)
    if value is None:
        (config if key in config else arrays).pop(key)
    elif key in config:
        config[key] = value
    else:
        arrays[key] = np.asarray(value)
    return config, arrays


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("version", 2, "unsupported drift state version 2"),
        ("shares", None, r"lacks \['shares'\]"),
        ("feature_names", ["a", "a"], "'a' repeats"),
        ("feature_names", ["a", 3], "must be strings"),
        ("target_fpr", 1.5, r"target_fpr must be in \(0, 1\)"),
        ("n_reference", 0, "n_reference must be a positive integer"),
        ("edges", np.array([2.0, 1.0], np.float32), "edges of feature 'a' are not increasing"),
        ("edges", np.array([1.0, 1.0], np.float32), "edges of feature 'a' are not increasing"),
        ("edges", np.array([1.0, np.inf], np.float32), "'edges' holds non-finite values"),
        ("edges", np.array([1.0, 3.0], np.float32), "edges of feature 'a' leave its training"),
        ("edges", np.array([1.0], np.float32), "has 1 edges, n_edges says 2"),
        ("n_edges", np.array([2], np.int32), r"'n_edges' has shape \(1,\), expected \(2,\)"),
        ("n_edges", np.array([2.0, 0.0]), "n_edges must be integers"),
        ("n_edges", np.array([-1, 3], np.int32), r"n_edges must lie in \[0, 9\]"),
        ("shares", np.array([0.5, 0.3, 0.3, 1.0], np.float32), "of feature 'a' sum to"),
        ("shares", np.array([1.2, -0.2, 0.0, 1.0], np.float32), r"shares must lie in \[0, 1\]"),
        ("shares", np.array([0.5, 0.5, 1.0], np.float32), "3 bin shares, expected 4"),
        ("shares", np.ones((2, 2), np.float32), "'shares' must be 1-D"),
        ("minimum", np.array([4.0, 5.0], np.float32), "minimum exceeds maximum for feature 'a'"),
        ("maximum", np.array([3.0, np.nan], np.float32), "'maximum' holds non-finite values"),
    ],
)
def test_damaged_state_is_refused(key, value, message):
    with pytest.raises(ValueError, match=message):
        DriftReference.from_state(*damage(key, value))


def test_bins_counted_in_row_blocks_are_the_bins_counted_at_once(monkeypatch):
    import latent_sculpting.monitor.drift_reference as drift_reference

    rng = np.random.default_rng(3)
    X = np.c_[rng.exponential(size=999), rng.integers(0, 4, size=999)].astype(np.float32)
    whole = DriftReference().fit(X, feature_names=["a", "b"], target_fpr=0.01)
    monkeypatch.setattr(drift_reference, "_FIT_BLOCK", 10)
    blocks = DriftReference().fit(X, feature_names=["a", "b"], target_fpr=0.01)
    np.testing.assert_array_equal(blocks.shares_, whole.shares_)
    np.testing.assert_array_equal(blocks.edges_, whole.edges_)


@pytest.mark.parametrize("n_bins", [10, 200])
def test_bin_index_is_searchsorted_whether_compared_or_searched(n_bins):
    # Up to 64 edges per feature the bins are counted by comparing the whole matrix edge rank
    # by edge rank; more are searched column by column. Both must be searchsorted's bins.
    rng = np.random.default_rng(5)
    X = np.c_[rng.lognormal(size=(5000, 2)), rng.integers(0, 4, 5000), np.ones(5000)]
    ref = DriftReference(n_bins=n_bins).fit(
        X.astype(np.float32), feature_names=["a", "b", "c", "d"], target_fpr=0.01
    )
    Y = np.c_[
        rng.lognormal(size=(300, 2)) * 3, rng.integers(-1, 6, 300), rng.choice([0, 1, 2], 300)
    ]
    Y[:150, 0] = ref.bin_edges(0)[rng.integers(0, ref.n_edges_[0], 150)]  # on an edge
    Y = Y.astype(np.float32)
    index = ref.bin_index(Y)
    offset = 0
    for j in range(4):
        edges = ref.bin_edges(j)
        expected = np.searchsorted(edges, Y[:, j], side="left") + 1
        expected[Y[:, j] < ref.minimum_[j]] = 0
        expected[Y[:, j] > ref.maximum_[j]] = len(edges) + 2
        np.testing.assert_array_equal(index[:, j], expected + offset)
        offset += len(edges) + 3
    np.testing.assert_array_equal(ref.bin_index(Y[7:8]), index[7:8])


def test_a_refitted_reference_bins_with_its_own_edges():
    # The edges' padded layout is computed once per fitted reference; fitting the same object
    # again, or loading another's state, must not keep binning with the old edges.
    rng = np.random.default_rng(6)
    X, Y = rng.lognormal(size=(2000, 3)), rng.lognormal(size=(2000, 3)) * 4
    names = ["a", "b", "c"]
    reused = DriftReference().fit(X.astype(np.float32), feature_names=names, target_fpr=0.01)
    Z = rng.lognormal(size=(50, 3)).astype(np.float32) * 2
    before = reused.bin_index(Z)
    reused.fit(Y.astype(np.float32), feature_names=names, target_fpr=0.01)
    fresh = DriftReference().fit(Y.astype(np.float32), feature_names=names, target_fpr=0.01)
    np.testing.assert_array_equal(reused.bin_index(Z), fresh.bin_index(Z))
    assert not np.array_equal(before, fresh.bin_index(Z))
