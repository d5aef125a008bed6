"""The context stage: causal, independent of batching, bounded, its state checked, its answers
known on hand-made streams; and the formats' endpoint columns."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pyarrow as pa
import pytest
import safetensors.numpy
from hypothesis import given, settings
from hypothesis import strategies as st

from latent_sculpting.data import sample_path
from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.context import (
    ContextConfig,
    ContextStage,
    ContextState,
    context_features,
    describe,
)
from latent_sculpting.io.formats import get_format
from latent_sculpting.io.formats.base import per_class_sample, refuse_context_on_samples

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

WINDOWS = (10.0, 60.0, 600.0)


def stream(n: int, seed: int, *, hosts: int = 6, ports: int = 5, tick: float = 0.5):
    """A random time-sorted stream with ties (times on a grid of ``tick`` seconds)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, max(1, int(n * 0.7)), n)).astype(float) * tick
    return {
        "time": t,
        "src": np.array([f"10.0.0.{i}" for i in rng.integers(0, hosts, n)]),
        "dst": np.array([f"10.0.1.{i}" for i in rng.integers(0, hosts, n)]),
        "dport": rng.integers(1, ports + 1, n),
        "proto": rng.choice(["tcp", "udp"], n),
        "nbytes": rng.integers(0, 5000, n).astype(float),
        "npackets": rng.integers(1, 20, n).astype(float),
        "failed": rng.random(n) < 0.3,
    }


def take(flows: dict, rows) -> dict:
    return {k: v[rows] for k, v in flows.items()}


def run(state: ContextState, flows: dict) -> np.ndarray:
    features, _ = context_features(state, **flows)
    return features


def column(name: str, config: ContextConfig | None = None) -> int:
    return (config or ContextConfig()).feature_names.index(name)


# --- known answers ---------------------------------------------------------------------------


def test_a_vertical_scan_counts_about_a_hundred_ports():
    """One source, 100 ports of one host in 1 s: the 101st flow sees ~100 distinct ports."""
    n = 100
    t = np.arange(n) / 100.0
    flows = {
        "time": np.append(t, 1.0),
        "src": np.full(n + 1, "10.0.0.1"),
        "dst": np.full(n + 1, "10.0.0.3"),
        "dport": np.append(np.arange(1, n + 1), 1),
        "proto": np.full(n + 1, "tcp"),
        "nbytes": np.full(n + 1, 60.0),
        "npackets": np.ones(n + 1),
        "failed": np.ones(n + 1, bool),
    }
    last = run(ContextState(), flows)[-1]
    for tau, label in zip(WINDOWS, ("10s", "1min", "10min"), strict=True):
        decayed = np.exp(-(1.0 - t) / tau).sum()
        assert last[column(f"ctx_src_dst_ports_{label}")] == pytest.approx(decayed, rel=1e-12)
        assert last[column(f"ctx_src_flows_{label}")] == pytest.approx(decayed, rel=1e-12)
        assert last[column(f"ctx_pair_flows_{label}")] == pytest.approx(decayed, rel=1e-12)
        # One host, last contacted 10 ms before.
        assert last[column(f"ctx_src_dst_hosts_{label}")] == pytest.approx(
            math.exp(-0.01 / tau), rel=1e-12
        )
        assert last[column(f"ctx_src_failed_share_{label}")] == pytest.approx(1.0)
        assert last[column(f"ctx_src_bytes_mean_{label}")] == pytest.approx(60.0)
        assert last[column(f"ctx_src_bytes_std_{label}")] == pytest.approx(0.0, abs=1e-9)
    assert last[column("ctx_src_dst_ports_10s")] > 94
    # Each port's service saw one flow.
    assert last[column("ctx_service_flows_10min")] == pytest.approx(math.exp(-1.0 / 600))


def test_a_horizontal_scan_counts_hosts_not_ports():
    n = 50
    flows = {
        "time": np.arange(n + 1) * 0.1,
        "src": np.full(n + 1, "10.0.0.1"),
        "dst": np.array([f"10.0.2.{i}" for i in range(n + 1)]),
        "dport": np.full(n + 1, 23),
        "proto": np.full(n + 1, "tcp"),
        "nbytes": np.zeros(n + 1),
        "npackets": np.ones(n + 1),
    }
    last = run(ContextState(), flows)[-1]
    assert last[column("ctx_src_dst_hosts_10min")] == pytest.approx(
        np.exp(-(5.0 - np.arange(n) * 0.1) / 600).sum()
    )
    assert last[column("ctx_src_dst_ports_10min")] == pytest.approx(math.exp(-0.1 / 600))
    assert last[column("ctx_pair_flows_10min")] == 0.0  # a new host: no pair history


def test_a_beacon_is_regular_and_random_gaps_are_not():
    n = 40
    rng = np.random.default_rng(0)
    for gaps, regular in ((np.full(n, 5.0), True), (rng.exponential(5.0, n), False)):
        t = np.concatenate([[0.0], np.cumsum(gaps)])
        flows = {
            "time": t,
            "src": np.full(n + 1, "10.0.0.7"),
            "dst": np.full(n + 1, "198.51.100.1"),
            "dport": np.full(n + 1, 443),
            "proto": np.full(n + 1, "tcp"),
            "nbytes": np.full(n + 1, 320.0),
            "npackets": np.full(n + 1, 4.0),
        }
        last = run(ContextState(), flows)[-1]
        cv = last[column("ctx_pair_gap_cv_1min")]
        mean = last[column("ctx_pair_gap_mean_1min")]
        if regular:
            assert mean == pytest.approx(5.0)
            assert cv == pytest.approx(0.0, abs=1e-6)
            assert last[column("ctx_pair_bytes_cv_1min")] == pytest.approx(0.0, abs=1e-9)
        else:
            assert cv > 0.4


def test_neutral_values_before_any_history_and_after_long_silence():
    config = ContextConfig()
    flows = {
        "time": np.array([0.0, 10_000.0]),
        "src": np.array(["a", "a"]),
        "dst": np.array(["b", "b"]),
        "dport": np.array([80, 80]),
        "proto": np.array(["tcp", "tcp"]),
        "nbytes": np.array([100.0, 100.0]),
        "npackets": np.array([1.0, 1.0]),
    }
    features = run(ContextState(config), flows)
    names = config.feature_names
    for row in features:
        for name, value in zip(names, row, strict=True):
            if "gap_mean" in name:
                expected = {"10s": 10.0, "1min": 60.0, "10min": 600.0}[name.rsplit("_", 1)[1]]
            elif "_cv_" in name:
                expected = 1.0
            else:
                expected = 0.0
            assert value == expected, (name, value)


def test_flows_of_one_instant_do_not_see_each_other():
    flows = {
        "time": np.array([5.0, 5.0, 5.0]),
        "src": np.array(["a", "a", "a"]),
        "dst": np.array(["b", "b", "c"]),
        "dport": np.array([1, 2, 3]),
        "proto": np.array(["tcp"] * 3),
        "nbytes": np.array([1.0, 2.0, 3.0]),
        "npackets": np.array([1.0, 1.0, 1.0]),
    }
    features = run(ContextState(), flows)
    assert (features[:, column("ctx_src_flows_10s")] == 0).all()


# --- causality -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_flow_never_sees_a_later_flow_or_one_of_its_instant(seed):
    """Alter every flow after instant T, and the other flows at T: the features of the flows
    before T, and of the one flow kept at T, do not change."""
    flows = stream(400, seed)
    base = run(ContextState(), flows)
    times = np.unique(flows["time"])
    tied = [x for x in times if (flows["time"] == x).sum() > 2]
    rng = np.random.default_rng(seed + 100)
    for cut in [times[len(times) // 3], tied[len(tied) // 2]]:
        at = np.flatnonzero(flows["time"] == cut)
        future = np.flatnonzero(flows["time"] > cut)
        seen = np.flatnonzero(flows["time"] < cut)
        for keep in at:
            changed = {k: v.copy() for k, v in flows.items()}
            others = np.concatenate([at[at != keep], future])
            noise = stream(len(others), seed + 200, hosts=3, ports=2)
            for key in ("src", "dst", "dport", "proto", "nbytes", "npackets", "failed"):
                changed[key][others] = noise[key]
            # The future also moves in time (kept after the cut) and is shuffled.
            changed["time"][future] = np.sort(cut + rng.uniform(0.001, 500.0, len(future)))
            shuffled = rng.permutation(future)
            for key in ("src", "dst", "dport", "proto", "nbytes", "npackets", "failed"):
                changed[key][future] = changed[key][shuffled]
            altered = run(ContextState(), changed)
            assert np.array_equal(altered[seen], base[seen])
            assert np.array_equal(altered[keep], base[keep])
            # The alteration was real: some later feature changed.
            assert not np.array_equal(altered[future], base[future])


# --- batching --------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    n=st.integers(1, 150),
    cuts=st.lists(st.integers(0, 150), max_size=8),
    tick=st.sampled_from([0.001, 0.5, 7.0]),
)
def test_any_cut_into_batches_gives_the_same_features_to_the_bit(seed, n, cuts, tick):
    flows = stream(n, seed, tick=tick)
    whole = run(ContextState(), flows)
    state = ContextState()
    bounds = [0, *sorted(c for c in cuts if c <= n), n]
    parts = [run(state, take(flows, slice(a, b))) for a, b in zip(bounds, bounds[1:], strict=False)]
    assert np.array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_fixed_batch_sizes_match_one_call(size):
    flows = stream(1200, 5)
    whole = run(ContextState(), flows)
    state = ContextState()
    parts = [run(state, take(flows, slice(i, i + size))) for i in range(0, 1200, size)]
    assert np.array_equal(np.concatenate(parts), whole)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_the_order_of_flows_within_an_instant_does_not_matter(seed):
    flows = stream(200, seed, tick=3.0)
    whole = run(ContextState(), flows)
    rng = np.random.default_rng(seed)
    # Shuffle within each instant (a stable sort by time of a random permutation).
    order = rng.permutation(len(flows["time"]))
    order = order[np.argsort(flows["time"][order], kind="stable")]
    shuffled = run(ContextState(), take(flows, order))
    assert np.array_equal(shuffled, whole[order])


# --- memory bound ----------------------------------------------------------------------------


def test_tables_never_hold_more_than_the_budget():
    config = ContextConfig(max_entities=16)
    state = ContextState(config)
    rng = np.random.default_rng(3)
    n = 3000
    # Every third flow comes from one heavy source: never among the oldest eighth.
    heavy = np.arange(n) % 3 == 0
    flows = {
        "time": np.arange(n) * 0.01,
        "src": np.where(heavy, "10.9.9.9", np.array([f"10.1.0.{i % 100}" for i in range(n)])),
        "dst": np.where(heavy, "10.0.0.1", np.array([f"10.2.0.{i % 200}" for i in range(n)])),
        "dport": np.where(heavy, 443, rng.integers(1, 60000, n)),
        "proto": np.full(n, "tcp"),
        "nbytes": rng.integers(0, 1000, n).astype(float),
        "npackets": np.ones(n),
    }
    parts = []
    for i in range(0, n, 97):
        parts.append(run(state, take(flows, slice(i, i + 97))))
        assert all(v <= 16 for v in state.entities().values()), state.entities()
        assert all(t.capacity <= 16 for t in state.tables.values())
    bounded = np.concatenate(parts)
    free = run(ContextState(), flows)
    # The heavy source is always recent, so eviction never touches what it sees of itself.
    for name in ("ctx_src_flows_10s", "ctx_src_bytes_mean_1min", "ctx_pair_flows_1min"):
        j = column(name)
        assert np.array_equal(bounded[heavy, j], free[heavy, j])
    # The other sources return after 100 flows, evicted by then: they start from nothing.
    assert not np.array_equal(bounded, free)


# --- the state as data -------------------------------------------------------------------------


def roundtrip(state: ContextState) -> ContextState:
    """Through JSON and a safetensors file, as a model file would hold it."""
    config, arrays = state.get_state()
    config = json.loads(json.dumps(config))
    for array in arrays.values():
        assert array.dtype in (np.float64, np.int64)
    arrays = safetensors.numpy.load(safetensors.numpy.save(arrays))
    return ContextState.from_state(config, arrays)


@pytest.mark.parametrize("cut", [1, 150, 299])
def test_a_state_read_back_continues_exactly(cut):
    flows = stream(300, 11, tick=1.0)
    whole = run(ContextState(), flows)
    state = ContextState()
    first = run(state, take(flows, slice(0, cut)))
    second = run(roundtrip(state), take(flows, slice(cut, None)))
    assert np.array_equal(np.concatenate([first, second]), whole)


def test_a_state_after_evictions_reads_back_and_continues_exactly():
    config = ContextConfig(max_entities=8)
    flows = stream(500, 12, hosts=40, ports=30, tick=0.25)
    whole = run(ContextState(config), flows)
    state = ContextState(config)
    first = run(state, take(flows, slice(0, 250)))
    second = run(roundtrip(state), take(flows, slice(250, None)))
    assert np.array_equal(np.concatenate([first, second]), whole)


def valid_state():
    state = ContextState()
    run(state, stream(50, 13))
    return state.get_state()


def damage(change):
    config, arrays = valid_state()
    config = json.loads(json.dumps(config))
    arrays = {k: v.copy() for k, v in arrays.items()}
    change(config, arrays)
    return config, arrays


def _set(arrays, key, index, value):
    arrays[key][index] = value


HOSTILE = {
    "version": lambda c, a: c.update(version=2),
    "unknown config key": lambda c, a: c.update(extra=1),
    "config window": lambda c, a: c["context"].update(windows_s=[60, 10]),
    "budget": lambda c, a: c["context"].update(max_entities=10**12),
    "time": lambda c, a: c.update(time=float("nan")),
    "serial": lambda c, a: c.update(serial=-1),
    "serial beyond float64": lambda c, a: c.update(serial=2**60),
    "missing array": lambda c, a: a.pop("src.stats"),
    "unknown array": lambda c, a: a.update({"src.extra": np.zeros(1)}),
    "dtype": lambda c, a: a.update({"src.last": a["src.last"].astype(np.float32)}),
    "shape": lambda c, a: a.update({"pair.stats": a["pair.stats"][:, :2]}),
    "nan": lambda c, a: _set(a, "service.stats", (0, 0, 2), np.nan),
    "negative weight": lambda c, a: _set(a, "src.stats", (0, 0, 0), -1.0),
    "failed above flows": lambda c, a: _set(a, "src.stats", (0, 0, 1), 1e9),
    "duplicate key": lambda c, a: _set(a, "src.keys", 1, a["src.keys"][0]),
    "future entity": lambda c, a: _set(a, "pair.last", 0, c["time"] + 1),
    "serial too high": lambda c, a: _set(a, "src.born", 0, c["serial"]),
    "link too high": lambda c, a: _set(a, "pair.link", 0, c["serial"] + 5),
    "pending time": lambda c, a: a.update({"pending.time": a["pending.time"] - 1}),
    "pending failed": lambda c, a: a.update({"pending.failed": a["pending.failed"] + 0.5}),
    "pending keys": lambda c, a: a.update({"pending.keys": a["pending.keys"][:3]}),
    "over budget": lambda c, a: c["context"].update(max_entities=8),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_state_is_refused(name):
    config, arrays = damage(HOSTILE[name])
    with pytest.raises(ValueError):
        ContextState.from_state(config, arrays)


def test_the_undamaged_state_is_accepted():
    config, arrays = damage(lambda c, a: None)
    ContextState.from_state(config, arrays)


# --- configuration and input -------------------------------------------------------------------


def test_config_round_trips_and_refuses_bad_values():
    config = ContextConfig(windows_s=(5, 30.0), entities=("src", "service"), max_entities=64)
    assert ContextConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert config.feature_names[0] == "ctx_src_flows_5s"
    bad = [
        {"windows_s": ()},
        {"windows_s": (10.0, 10.0)},
        {"windows_s": (True,)},
        {"windows_s": (float("inf"),)},
        {"entities": ("service", "src")},
        {"entities": ("host",)},
        {"max_entities": 4},
        {"max_entities": 2.5},
    ]
    for kwargs in bad:
        with pytest.raises(ValueError):
            ContextConfig(**kwargs)
    data = config.to_dict()
    for broken in ({**data, "other": 1}, {k: v for k, v in data.items() if k != "entities"}):
        with pytest.raises(ValueError):
            ContextConfig.from_dict(broken)


def test_only_the_chosen_kinds_are_output_and_they_match_the_full_set():
    flows = stream(200, 21)
    full = run(ContextState(), flows)
    config = ContextConfig(entities=("pair",))
    part = run(ContextState(config), flows)
    names = ContextConfig().feature_names
    picked = [names.index(n) for n in config.feature_names]
    assert np.array_equal(part, full[:, picked])


def test_input_out_of_order_or_before_the_state_is_refused():
    flows = stream(20, 4)
    bad = {k: v.copy() for k, v in flows.items()}
    bad["time"][7], bad["time"][8] = bad["time"][8] + 1, bad["time"][7]
    with pytest.raises(ValueError, match="row 8"):
        run(ContextState(), bad)
    state = ContextState()
    run(state, flows)
    with pytest.raises(ValueError, match="before the latest flow"):
        run(state, take(flows, slice(0, 3)))
    for key, value in (("time", np.nan), ("nbytes", -1.0), ("npackets", np.inf)):
        broken = {k: v.copy() for k, v in flows.items()}
        broken[key][3] = value
        with pytest.raises(ValueError, match="row 3"):
            run(ContextState(), broken)
    broken = dict(flows, src=pa.array([None, *flows["src"][1:]]))
    with pytest.raises(ValueError, match="src: row 0"):
        run(ContextState(), broken)


def test_describe_puts_values_in_words():
    config = ContextConfig()
    assert (
        describe("ctx_src_dst_ports_1min", 387.2, config, "10.0.0.3")
        == "about 387 distinct destination ports contacted by 10.0.0.3 in the last 1 min"
    )
    assert describe("ctx_service_flows_10s", 412.0, config).startswith(
        "about 412 flows to this service"
    )
    assert "40%" in describe("ctx_pair_failed_share_10min", 0.4, config, "a -> b")
    with pytest.raises(ValueError):
        describe("ctx_src_flows_5s", 1.0, config)
    for name in config.feature_names:
        assert describe(name, 1.0, config, "x")


# --- the stage on tables, and the formats ----------------------------------------------------


def zeek_table(flows: dict) -> pa.Table:
    n = len(flows["time"])
    return pa.table(
        {
            "ts": flows["time"] + 1.5e9,
            "uid": [f"C{i}" for i in range(n)],
            "id.orig_h": flows["src"],
            "id.orig_p": np.full(n, 40000),
            "id.resp_h": flows["dst"],
            "id.resp_p": flows["dport"],
            "proto": flows["proto"],
            "conn_state": np.where(flows["failed"], "S0", "SF"),
            "orig_ip_bytes": flows["nbytes"].astype(np.int64),
            "resp_ip_bytes": np.zeros(n, np.int64),
            "orig_pkts": flows["npackets"].astype(np.int64),
            "resp_pkts": np.zeros(n, np.int64),
        }
    )


def test_the_stage_sorts_a_table_and_answers_in_its_row_order():
    flows = stream(300, 8, tick=0.25)
    expected = run(ContextState(), dict(flows, time=flows["time"] + 1.5e9))
    zeek = get_format("zeek")
    order = np.random.default_rng(0).permutation(300)
    stage = ContextStage()
    out = stage.fit_transform(zeek_table(flows).take(pa.array(order)), zeek)
    assert out.column_names == ContextConfig().feature_names
    got = np.column_stack([c.to_numpy() for c in out.columns])
    assert np.array_equal(got, expected[order])
    assert stage.lacking_ == ("sport",) or "duration" in stage.lacking_


def test_the_stage_carries_its_state_to_the_next_table_and_refuses_an_earlier_one():
    flows = stream(200, 9)
    zeek = get_format("zeek")
    table = zeek_table(flows)
    whole = ContextStage().fit_transform(table, zeek)
    stage = ContextStage()
    first = stage.fit_transform(table.slice(0, 120), zeek)
    second = stage.transform(table.slice(120), zeek)
    assert pa.concat_tables([first, second]).equals(whole)
    with pytest.raises(FlowInputError, match="follow each other in time"):
        stage.transform(table.slice(0, 10), zeek)


def test_zeek_states_mark_failed_flows_and_unknown_states_are_counted():
    flows = stream(30, 10)
    table = zeek_table(flows)
    states = ["S0", "REJ", "SF", None, "RSTOS0", "OTH"] * 5
    table = table.set_column(table.column_names.index("conn_state"), "conn_state", pa.array(states))
    stage = ContextStage()
    stage.fit_transform(table, get_format("zeek"))
    assert stage.notes_ == {"flows with no conn_state, counted as answered": 5}


def test_every_format_with_endpoints_finds_them():
    cases = {
        "zeek": (
            [
                "ts",
                "id.orig_h",
                "id.resp_h",
                "id.orig_p",
                "id.resp_p",
                "proto",
                "conn_state",
                "duration",
                "orig_ip_bytes",
                "resp_ip_bytes",
                "orig_pkts",
                "resp_pkts",
            ],
            "ts",
        ),
        "nfstream": (
            [
                "bidirectional_first_seen_ms",
                "src_ip",
                "dst_ip",
                "src_port",
                "dst_port",
                "protocol",
                "dst2src_packets",
                "bidirectional_bytes",
                "bidirectional_packets",
            ],
            "bidirectional_first_seen_ms",
        ),
        "netflow": (
            [
                "FLOW_START_MILLISECONDS",
                "IPV4_SRC_ADDR",
                "IPV4_DST_ADDR",
                "L4_SRC_PORT",
                "L4_DST_PORT",
                "PROTOCOL",
                "IN_BYTES",
                "OUT_BYTES",
                "IN_PKTS",
                "OUT_PKTS",
            ],
            "FLOW_START_MILLISECONDS",
        ),
        "cicids2017": (
            [
                "Timestamp",
                "Src IP",
                "Dst IP",
                "Src Port",
                "Dst Port",
                "Protocol",
                "Total Length of Fwd Packets",
                "Total Length of Bwd Packets",
                "Total Fwd Packets",
                "Total Backward Packets",
            ],
            "Timestamp",
        ),
    }
    for name, (columns, time) in cases.items():
        roles, units = get_format(name).endpoint_roles(columns)
        assert roles["time"] == time, name
        assert units["time"] in ("s", "ms", "datetime")
    netflow = get_format("netflow")
    nfdump16 = ["ts", "te", "td", "sa", "da", "sp", "dp", "pr", "ipkt", "ibyt"]
    roles, units = netflow.endpoint_roles(nfdump16)
    assert roles["bytes"] == ("ibyt",) or roles["bytes"] == "ibyt"
    assert units == {"time": "datetime", "duration": "s"}
    roles, _ = netflow.endpoint_roles([*nfdump16, "opkt", "obyt"])
    assert roles["packets"] == ("ipkt", "opkt")
    nfdump17 = [
        "firstSeen",
        "lastSeen",
        "proto",
        "srcAddr",
        "dstAddr",
        "srcPort",
        "dstPort",
        "packets",
        "bytes",
    ]
    assert netflow.endpoint_roles(nfdump17)[0]["src"] == "srcAddr"
    # NF-v1/v2 have no start time; the generic table knows no endpoints.
    assert netflow.endpoint_roles(cases["netflow"][0][1:]) is None
    assert get_format("table").endpoint_roles(cases["zeek"][0]) is None


def test_time_units_and_the_original_cic_timestamp():
    cic = get_format("cicids2017")
    base = {
        "Src IP": ["a", "b"],
        "Dst IP": ["c", "c"],
        "Dst Port": [80, 80],
        "Protocol": [6, 6],
        "Total Length of Fwd Packets": [1, 2],
        "Total Length of Bwd Packets": [0, 0],
        "Total Fwd Packets": [1, 1],
        "Total Backward Packets": [0, 1],
    }
    good = pa.table({"Timestamp": ["2017-07-03 12:00:00.5", "2017-07-03 12:00:01.75"], **base})
    out = ContextStage().fit_transform(good, cic)
    assert out.num_rows == 2
    original = pa.table({"Timestamp": ["3/7/2017 8:55", "3/7/2017 8:56"], **base})
    with pytest.raises(FlowInputError, match="12-hour clock"):
        ContextStage().fit_transform(original, cic)
    nfstream = get_format("nfstream")
    table = pa.table(
        {
            "bidirectional_first_seen_ms": [1000, 1500],
            "src_ip": ["a", "a"],
            "dst_ip": ["b", "b"],
            "dst_port": [1, 1],
            "protocol": [6, 6],
            "bidirectional_bytes": [1, 1],
            "bidirectional_packets": [1, 1],
        }
    )
    stage = ContextStage()
    out = stage.fit_transform(table, nfstream)
    assert stage.state_.time == pytest.approx(1.5)
    assert "state" in stage.lacking_
    gap = out.column("ctx_pair_gap_mean_10s").to_numpy()
    assert gap[1] == 10.0  # one earlier flow: no gap yet


def test_the_per_class_sample_refuses_context_wherever_it_lies(tmp_path):
    monday = sample_path() / "monday.parquet"
    assert per_class_sample(monday) is not None
    copy = tmp_path / "renamed.parquet"
    shutil.copyfile(monday, copy)
    with pytest.raises(FlowInputError, match="per-class random sample"):
        refuse_context_on_samples([copy])
    with pytest.raises(FlowInputError, match="measure the sampling"):
        ContextStage().fit_transform(pa.table({"x": [1]}), get_format("zeek"), sources=[monday])
    other = tmp_path / "other.parquet"
    other.write_bytes(b"x" * 404_183)  # a sample's size, not its content
    assert per_class_sample(other) is None
    refuse_context_on_samples([other])
