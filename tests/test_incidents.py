"""Incidents: grouping scored flows by source (or pair) and time gap, streaming."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from latent_sculpting.monitor.incident_text import reason_features
from latent_sculpting.monitor.incidents import Incident, IncidentConfig, IncidentGrouper


def flows(rows: list[tuple]) -> pd.DataFrame:
    """(time, source, destination, port, flagged) rows; score 2.0 when flagged, else 0.5."""
    frame = pd.DataFrame(rows, columns=["time", "source", "destination", "destination_port", "f"])
    frame["score"] = np.where(frame["f"], 2.0, 0.5)
    frame["flagged"] = frame.pop("f").astype(bool)
    return frame


def run(frame: pd.DataFrame, cuts: list[int], config: IncidentConfig) -> list[dict]:
    return run_raised(frame, cuts, config)[0]


def run_raised(
    frame: pd.DataFrame, cuts: list[int], config: IncidentConfig
) -> tuple[list[dict], list[dict]]:
    """The incidents closed, and those raised while open, over batches cut at ``cuts``."""
    grouper = IncidentGrouper(config)
    out: list[Incident] = []
    raised: list[Incident] = []
    bounds = [0, *sorted(set(cuts)), len(frame)]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        out += grouper.add(frame.iloc[a:b])
        raised += grouper.take_raised()
    out += grouper.flush()
    assert grouper.take_raised() == []
    return [i.to_dict() for i in out], [i.to_dict() for i in raised]


def test_a_scan_is_one_incident_with_its_sentence():
    rows = [(1000.0 + i * 0.1, "10.0.0.5", "10.0.0.3", 1 + i, True) for i in range(412)]
    rows += [(1000.05 + i, "10.0.0.7", "10.0.0.3", 80, False) for i in range(30)]
    incidents = IncidentGrouper(IncidentConfig(gap_s=10)).add(flows(rows))
    assert incidents == []  # still open: the stream's clock has not passed its gap
    grouper = IncidentGrouper(IncidentConfig(gap_s=10))
    grouper.add(flows(sorted(rows)))
    (incident,) = grouper.flush()
    assert incident.source == "10.0.0.5"
    assert incident.n_flagged == incident.n_flows == 412
    assert incident.n_ports == 412 and incident.n_destinations == 1
    assert incident.explanation == "10.0.0.5: 412 flagged flows to 412 ports of 10.0.0.3 over 41 s"
    assert incident.flow_indices[0] == 0 and not incident.calibrated and incident.rate is None
    json.dumps(incident.to_dict(), allow_nan=False)


def test_gap_splits_and_clock_closes():
    rows = [(0.0, "a", "b", 22, True), (5.0, "a", "b", 22, True), (100.0, "a", "b", 22, True)]
    rows += [(200.0, "z", "b", 22, False)]
    grouper = IncidentGrouper(IncidentConfig(gap_s=10))
    closed = grouper.add(flows(rows))
    assert [(i.start, i.end, i.n_flagged) for i in closed] == [(0.0, 5.0, 2), (100.0, 100.0, 1)]
    assert grouper.open_incidents() == [] and grouper.flush() == []


def test_unflagged_flows_count_only_between_flagged_ones():
    rows = [
        (0.0, "a", "b", 22, True),
        (1.0, "a", "b", 22, False),  # inside: counted once the next flagged flow comes
        (2.0, "a", "b", 22, True),
        (3.0, "a", "b", 22, False),  # after the last flagged flow: not part of it
        (4.0, "c", "b", 22, False),  # another source
    ]
    (incident,) = run(flows(rows), [], IncidentConfig(gap_s=10))
    assert (incident["n_flows"], incident["n_flagged"]) == (3, 2)


def test_pairs_are_separate_incidents():
    rows = [(float(i), "a", f"h{i % 2}", 80, True) for i in range(6)]
    by_source = run(flows(rows), [], IncidentConfig(gap_s=10))
    by_pair = run(flows(rows), [], IncidentConfig(gap_s=10, key="pair"))
    assert len(by_source) == 1 and by_source[0]["n_destinations"] == 2
    assert sorted(i["destination"] for i in by_pair) == ["h0", "h1"]
    assert "to 2 hosts on port 80" in by_source[0]["explanation"]


def test_budget_evicts_nearest_deadline_and_counts():
    rows = [(float(i), f"s{i}", "d", 1, True) for i in range(5)]
    grouper = IncidentGrouper(IncidentConfig(gap_s=100, max_open=2))
    closed = grouper.add(flows(rows))
    assert [i.source for i in closed] == ["s0", "s1", "s2"]
    assert all(i.evicted for i in closed) and grouper.stats["evicted"] == 3
    assert len(grouper.open_incidents()) == 2


def test_min_flagged_drops_and_counts():
    rows = [(0.0, "a", "b", 1, True), (50.0, "c", "b", 1, True), (51.0, "c", "b", 2, True)]
    grouper = IncidentGrouper(IncidentConfig(gap_s=10, min_flagged=2))
    out = grouper.add(flows(rows)) + grouper.flush()
    assert [i.source for i in out] == ["c"] and grouper.stats["below_min_flagged"] == 1


def test_evidence_from_reasons_and_channels():
    frame = flows([(0.0, "a", "b", 1, True), (1.0, "a", "b", 2, True)])
    frame["reason"] = [
        "ctx_src_dst_ports_1min 387 (above every benign value, median 2); proto = icmp "
        "(never in benign flows, usually tcp)",
        "ctx_src_dst_ports_1min 390 (above 99.9 % of benign, median 2)",
    ]
    frame["flagged_by"] = ["stage1", "stage2"]
    frame["p_value"] = [0.01, 0.001]
    (incident,) = run(frame, [], IncidentConfig())
    assert incident["evidence"]["features"] == [["ctx_src_dst_ports_1min", 2], ["proto", 1]]
    assert incident["evidence"]["context_features"] == ["ctx_src_dst_ports_1min"]
    assert incident["evidence"]["channels"] == {"stage1": 1, "stage2": 1}
    assert incident["score"] == pytest.approx(5.0)
    assert incident["explanation"].endswith("most often named: ctx_src_dst_ports_1min, proto")


def test_reason_features_reads_what_reasons_write():
    assert reason_features("Flow Bytes/s 1.2e6 (below 3 % of benign, median 4)") == ["Flow Bytes/s"]
    assert reason_features("service = dns (in 0.5 % of benign flows, usually http)") == ["service"]
    assert reason_features("no feature differs from its benign median") == []
    assert reason_features(None) == []


def test_bad_frames_are_named():
    grouper = IncidentGrouper()
    frame = flows([(0.0, "a", "b", 1, True), (math.nan, "a", "b", 1, True)])
    with pytest.raises(ValueError, match="row 1 of the stream, column 'time'"):
        grouper.add(frame)
    with pytest.raises(ValueError, match="lack column"):
        grouper.add(frame.drop(columns="score"))
    with pytest.raises(ValueError, match="boolean"):
        grouper.add(frame.iloc[:1].assign(flagged=1))
    with pytest.raises(ValueError, match="key must be one of"):
        IncidentConfig(key="host")
    with pytest.raises(ValueError, match="gap_s"):
        IncidentConfig(gap_s=-1)


def test_late_flows_are_counted_and_grouped():
    rows = [(100.0, "a", "b", 1, True), (1000.0, "z", "b", 1, False), (90.0, "a", "b", 2, True)]
    grouper = IncidentGrouper(IncidentConfig(gap_s=10))
    out = grouper.add(flows(rows)) + grouper.flush()
    assert grouper.stats["late_flows"] == 1
    assert [(i.start, i.n_flagged) for i in out] == [(100.0, 1), (90.0, 1)]


stream = st.lists(
    st.tuples(
        st.floats(0, 30, allow_nan=False).map(lambda x: round(x, 1)),  # time step
        st.sampled_from(["a", "b", "c"]),
        st.sampled_from(["x", "y"]),
        st.integers(1, 4),
        st.booleans(),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(
    stream,
    st.lists(st.integers(0, 60), max_size=6),
    st.sampled_from(["source", "pair"]),
    st.integers(1, 3),
    st.booleans(),
    st.sampled_from([None, 5.0]),
)
def test_batching_never_changes_the_incidents(steps, cuts, key, max_open, late, window):
    # Times increase by the steps; with `late`, every fifth flow comes 40 s late.
    times = np.cumsum([s[0] for s in steps]) if steps else np.zeros(0)
    rows = [
        (float(t) - (40.0 if late and j % 5 == 4 else 0.0), *s[1:])
        for j, (t, s) in enumerate(zip(times, steps, strict=True))
    ]
    frame = flows(rows) if rows else flows([]).astype({"time": float, "flagged": bool})
    config = IncidentConfig(gap_s=10, key=key, max_open=max_open, lateness_s=2, window_s=window)
    whole, raised = run_raised(frame, [], config)
    assert run_raised(frame, [c for c in cuts if c <= len(frame)], config) == (whole, raised)
    assert run_raised(frame, list(range(len(frame))), config) == (whole, raised)
    # Each incident is raised once, at its first flagged flow, and closes with the same id.
    assert sorted(i["id"] for i in raised) == sorted(i["id"] for i in whole)
    assert all(i["n_flagged"] == 1 for i in raised)
    # Every flagged flow is in exactly one incident (no budget small enough to lose any).
    assert sum(i["n_flagged"] for i in whole) == int(frame["flagged"].sum())
    for i in whole:
        assert i["start"] <= i["end"] and i["n_flows"] >= i["n_flagged"] >= 1


def test_a_windowed_score_does_not_grow_with_a_busy_hosts_time():
    """A benign host flagged every 10 s for 1,000 s keeps one incident open (gap 60 s): its
    whole-incident score is 100, its score over 30 s windows 3 (the most flagged flows any
    30 s hold). A scan of 20 flagged flows within 5 s scores 20 either way."""
    busy = [(float(t), "busy", "b", 80, True) for t in range(0, 1000, 10)]
    scan = [(2000.0 + 0.25 * i, "scan", "b", i, True) for i in range(20)]
    frame = flows(busy + scan)
    scores = {}
    for window in (None, 30.0):
        grouper = IncidentGrouper(IncidentConfig(gap_s=60, window_s=window))
        out = grouper.add(frame) + grouper.flush()
        scores[window] = {i.source: i.score for i in out}
        assert {i.source: i.n_flagged for i in out} == {"busy": 100, "scan": 20}
    assert scores[None] == {"busy": 100.0, "scan": 20.0}
    assert scores[30.0] == {"busy": 3.0, "scan": 20.0}


def test_a_windowed_score_is_its_own_grouping():
    """A calibration measured on whole incidents does not fit a windowed grouping (nor the
    reverse); a grouping without a window reads as it did before windows existed."""
    plain, windowed = IncidentConfig(gap_s=10), IncidentConfig(gap_s=10, window_s=30)
    assert "window_s" not in plain.grouping() and windowed.grouping()["window_s"] == 30.0
    assert IncidentConfig(**windowed.grouping()) == windowed
    for bad in (0, -1.0, math.inf, True, "30"):
        with pytest.raises((ValueError, TypeError), match="window_s"):
            IncidentConfig(window_s=bad)


def test_an_open_incident_is_raised_once_it_is_reportable():
    """A live sensor reports a long scan while it goes on: the incident is raised with the
    flow that makes it reportable (here its third flagged flow), once, and closes later with
    the same id and all its flows."""
    rows = [(float(i), "a", "b", i, True) for i in range(10)]
    rows.insert(1, (0.5, "c", "b", 80, True))  # one flagged flow: never reportable
    grouper = IncidentGrouper(IncidentConfig(gap_s=5, min_flagged=3))
    grouper.add(flows(rows[:3]))
    assert grouper.take_raised() == []
    grouper.add(flows(rows[3:4]))
    (raised,) = grouper.take_raised()
    assert (raised.source, raised.n_flagged, raised.end) == ("a", 3, 2.0)
    grouper.add(flows(rows[4:]))
    assert grouper.take_raised() == []
    (closed,) = grouper.flush()
    assert closed.id == raised.id and closed.n_flagged == 10
    assert grouper.stats["raised"] == 1 and grouper.stats["below_min_flagged"] == 1


def test_calibration_rate_threshold_and_suppression():
    from latent_sculpting.monitor.incident_calibration import IncidentCalibration

    calibration = IncidentCalibration(
        grouping=IncidentConfig(gap_s=10).grouping(),
        model="0" * 64,
        scores=(1.0, 1.0, 2.0, 5.0),
        host_days=2.0,
        hosts=2,
        windows=48,
        window_s=3600.0,
        flows=100,
        flagged=4,
        excluded={},
        sources=["x"],
    )
    assert calibration.rate(1.0) == 2.0 and calibration.rate(1.5) == 1.0
    assert calibration.threshold(2.0) == 0.0  # every benign incident fits the target
    assert 2.0 < calibration.threshold(0.5) <= 5.0 and calibration.rate(
        calibration.threshold(0.5)
    ) == pytest.approx(0.5)
    assert calibration.threshold(0.1) > 5.0  # below the resolution of 0.5 per host-day
    config = IncidentConfig(gap_s=10, target_incidents=0.5)
    rows = [(0.0, "a", "b", 1, True)] + [(100.0 + i, "c", "b", i, True) for i in range(6)]
    grouper = IncidentGrouper(config, calibration)
    out = grouper.add(flows(rows)) + grouper.flush()
    assert [i.source for i in out] == ["c"] and grouper.stats["suppressed"] == 1
    # Raised as soon as its evidence reached the target's threshold, not before.
    (raised,) = grouper.take_raised()
    assert raised.id == out[0].id and raised.score == math.ceil(calibration.threshold(0.5))
    assert out[0].calibrated and out[0].rate == 0.0 and out[0].score == 6.0
    assert out[0].rate_resolution == 0.5  # no benign incident scored as high in 2 host-days
    with pytest.raises(ValueError, match="grouping"):
        IncidentGrouper(IncidentConfig(gap_s=5), calibration)


def test_incident_files_and_columns(tmp_path):
    from latent_sculpting.monitor.incident_io import IncidentLog, incident_columns, read_incidents

    rows = [(0.0, "a", "b", 1, True), (1.0, "a", "b", 2, True)]
    grouper = IncidentGrouper()
    path = tmp_path / "i.jsonl"
    with IncidentLog(path) as log:
        log.write(grouper.add(flows(rows)) + grouper.flush())
    (record,) = read_incidents(path)
    assert record["n_flagged"] == 2 and record["source"] == "a"
    with pytest.raises(RuntimeError), IncidentLog(tmp_path / "gone.jsonl") as log:
        raise RuntimeError("the run failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.jsonl"]  # nothing half-written
    (tmp_path / "bad.jsonl").write_text(path.read_text() + '{"id": 1}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 2: no source"):
        read_incidents(tmp_path / "bad.jsonl")
    (tmp_path / "bad.jsonl").write_text(
        path.read_text().replace('"score": ', '"score": "x", "_": ')
    )
    with pytest.raises(ValueError, match="line 1: score is 'x'"):
        read_incidents(tmp_path / "bad.jsonl")
    zeek = ["ts", "id.orig_h", "id.resp_h", "id.resp_p", "score"]
    assert incident_columns("zeek", zeek)[0]["dport"] == "id.resp_p"
    with pytest.raises(ValueError, match="lack some of them"):
        incident_columns("zeek", zeek[1:])
    with pytest.raises(ValueError, match="carries none"):
        incident_columns("table", zeek)
