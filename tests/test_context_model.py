"""Context features in the model: the spec records them, training and scoring read the files of
one run in time order with one state, and a flow's score never depends on a later flow or on
how its stream is cut into batches."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from latent_sculpting import LatentSculpting
from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.context import ContextConfig, ContextState, context_option, parse_context
from latent_sculpting.io.encoding import context_matrix, encode
from latent_sculpting.io.fitting import fit_spec
from latent_sculpting.io.flowspec import FlowSpec
from latent_sculpting.io.table import iter_flow_batches, read_flows
from latent_sculpting.model.params import check_params
from latent_sculpting.serve.engines.local import score_files
from latent_sculpting.train import fit_training_data, read_training_data

pytestmark = pytest.mark.slow

#: A model that fits in seconds: the two side channels, Fisher's rule, no stacking folds.
TINY = {
    "flow_transforms": 1,
    "flow_hidden": 8,
    "flow_epochs": 1,
    "boost_iter": 5,
    "knn_prototypes": 8,
    "stack_folds": 0,
    "score": "fisher",
    "context": "on",
}


def capture(n: int = 800, seed: int = 0, start: float = 1.5e9) -> pd.DataFrame:
    """A Zeek conn.log (IoT-23's CSV columns): eight hosts using three services, and one
    host scanning ports, in time order."""
    rng = np.random.default_rng(seed)
    ts = start + np.cumsum(rng.exponential(0.5, n))
    scan = rng.random(n) < 0.2
    src = np.where(scan, "10.0.0.66", [f"10.0.0.{i}" for i in rng.integers(1, 9, n)])
    dst = np.where(scan, "10.0.1.1", [f"10.0.1.{i}" for i in rng.integers(1, 4, n)])
    dport = np.where(scan, rng.integers(1, 65535, n), rng.choice([80, 443, 53], n))
    nbytes = np.where(scan, 0, rng.integers(100, 5000, n))
    return pd.DataFrame(
        {
            "ts": ts,
            "uid": [f"C{i}" for i in range(n)],
            "id.orig_h": src,
            "id.orig_p": rng.integers(30000, 60000, n),
            "id.resp_h": dst,
            "id.resp_p": dport,
            "proto": np.where(dport == 53, "udp", "tcp"),
            "service": np.where(scan, "other", "http"),
            "duration": np.where(scan, 0.0, rng.exponential(1.0, n)),
            "orig_bytes": nbytes,
            "resp_bytes": nbytes * 3,
            "conn_state": np.where(scan, "S0", "SF"),
            "local_orig": "",
            "local_resp": "",
            "missed_bytes": 0,
            "history": np.where(scan, "S", "ShADadFf"),
            "orig_pkts": np.where(scan, 1, rng.integers(2, 20, n)),
            "orig_ip_bytes": nbytes + 40,
            "resp_pkts": np.where(scan, 0, rng.integers(2, 20, n)),
            "resp_ip_bytes": nbytes * 3 + 40,
            "tunnel_parents": "",
            "label": np.where(scan, "Malicious", "Benign"),
            "detailed-label": np.where(scan, "PartOfAHorizontalPortScan", "-"),
        }
    )


def write(frame: pd.DataFrame, path):
    """CSV, or Parquet (whose batches have exactly the rows asked for; a CSV reader's batches
    are blocks of bytes)."""
    if path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def run_files(tmp_path_factory):
    """One capture, whole and cut into two files at a flow of the middle."""
    folder = tmp_path_factory.mktemp("run")
    frame = capture()
    return {
        "whole": write(frame, folder / "whole.csv"),
        "parquet": write(frame, folder / "whole.parquet"),
        "first": write(frame.iloc[:450], folder / "a-first.csv"),
        "second": write(frame.iloc[450:], folder / "b-second.csv"),
        "frame": frame,
        "folder": folder,
    }


@pytest.fixture(scope="module")
def model(run_files):
    data = read_training_data([run_files["whole"]], context="on")
    return fit_training_data(data, preset_name="fast", overrides=TINY, seed=0)


def scores(model, files, tmp_path, name, **options):
    out = tmp_path / f"{name}.parquet"
    score_files(model, files, out, progress=False, explain=False, drift=False, **options)
    return pd.read_parquet(out)


def close(a, b) -> bool:
    return np.allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-9)


# --- the spec and the parameter ---------------------------------------------------------------


def test_the_context_option_reads_and_writes_back():
    assert parse_context("off") is None
    assert parse_context("on") == ContextConfig()
    assert parse_context(" 30,300 ").windows_s == (30.0, 300.0)
    for value in ("off", "on", "30,300"):
        assert context_option(parse_context(value)) == value.strip()
    for bad in ("maybe", "60,10", "0", ""):
        with pytest.raises(ValueError, match="context"):
            parse_context(bad)


def test_the_parameter_is_checked_and_flat():
    params = LatentSculpting(context="10,60").get_params()
    check_params(params)
    with pytest.raises(ValueError, match="context='sometimes'"):
        check_params({**params, "context": "sometimes"})


def test_the_spec_records_the_context_and_old_specs_have_none(run_files):
    records = pa.Table.from_pandas(run_files["frame"].head(50), preserve_index=False)
    spec = fit_spec(records, format="zeek", context=ContextConfig(windows_s=(5.0, 50.0)))
    assert spec.feature_names[-len(spec.context_names) :] == spec.context_names
    assert spec.n_features == spec.n_flow_features + len(spec.context_names)
    data = json.loads(json.dumps(spec.to_dict()))
    assert FlowSpec.from_dict(data) == spec
    old = {k: v for k, v in data.items() if k != "context"}
    assert FlowSpec.from_dict(old).context is None
    data["context"]["windows_s"] = [50.0, 5.0]
    with pytest.raises(ValueError, match="input spec: windows_s must be strictly increasing"):
        FlowSpec.from_dict(data)
    # Addresses, ports and the time identify flows: neither they nor anything named after them
    # is a feature; the context features are counts, shares, sizes and gaps.
    identities = {"ts", "uid", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p"}
    features = {*spec.numeric, *(c.column for c in spec.categorical)}
    assert not features & identities
    assert all(name.startswith("ctx_") for name in spec.context_names)


def test_a_fit_whose_spec_disagrees_with_the_parameter_is_refused(run_files):
    table = read_flows([run_files["whole"]], context=ContextConfig())
    off = LatentSculpting(**{**TINY, "context": "off"})
    with pytest.raises(ValueError, match="read with context='on'"):
        off.fit(table.frame(), table.y, spec=table.spec)
    with pytest.raises(ValueError, match="needs the input spec"):
        LatentSculpting(**TINY).fit(table.frame(), table.y)


def test_a_model_file_keeps_the_context_and_refuses_a_forged_parameter(model, tmp_path):
    path = model.save(tmp_path / "m.sculpt")
    loaded = LatentSculpting.load(path)
    assert loaded.context == "on" and loaded.spec_.context == ContextConfig()
    assert loaded.spec_.feature_names == model.spec_.feature_names


# --- causality, batching, the files of one run ------------------------------------------------


def test_a_flows_context_never_uses_a_later_flow(run_files):
    """Shuffle and replace everything after a cut: the rows before it keep their features."""
    frame = run_files["frame"]
    config = ContextConfig()
    records = pa.Table.from_pandas(frame, preserve_index=False)
    whole = context_matrix(config, "zeek", records, ContextState(config))
    cut = 400
    rng = np.random.default_rng(1)
    future = frame.iloc[cut:].copy()
    for column in ("id.orig_h", "id.resp_h", "id.resp_p", "orig_ip_bytes", "conn_state"):
        future[column] = rng.permutation(future[column].to_numpy())
    changed = pd.concat([frame.iloc[:cut], future], ignore_index=True)
    other = context_matrix(
        config, "zeek", pa.Table.from_pandas(changed, preserve_index=False), ContextState(config)
    )
    assert np.array_equal(whole[:cut], other[:cut])
    assert not np.array_equal(whole[cut:], other[cut:])  # the future did change


def test_scores_do_not_depend_on_the_batches(model, run_files, tmp_path):
    """The features of a cut stream are the whole stream's to the bit; the scores to the
    rounding of torch's kernels, which sum a batch of one row in another order than a batch
    of many (a model's scores do so without context too)."""
    path = run_files["parquet"]
    whole = read_flows([path], spec=model.spec_).X
    reference = scores(model, [path], tmp_path, "all", batch_rows=100_000)
    for rows in (1, 7, 333):
        state = ContextState(model.spec_.context)
        batches = iter_flow_batches(model.spec_, path, rows, context=state)
        cut = np.concatenate([b.X for b in batches])
        assert np.array_equal(cut, whole)
        got = scores(model, [path], tmp_path, f"b{rows}", batch_rows=rows)
        assert close(got["score"], reference["score"])


def test_the_state_survives_across_the_files_of_one_run(model, run_files, tmp_path):
    whole = scores(model, [run_files["whole"]], tmp_path, "whole")
    # Given in the wrong order: read in the order of their first flows.
    split = scores(model, [run_files["second"], run_files["first"]], tmp_path, "split")
    assert list(split["source_file"].unique()) == ["a-first.csv", "b-second.csv"]
    # To the rounding of a batch of 450 and 350 rows against one of 800 (see above).
    assert close(split["score"], whole["score"])
    # The second file alone starts from an empty state: other features, other scores.
    alone = scores(model, [run_files["second"]], tmp_path, "alone")
    assert not close(alone["score"], whole["score"][450:])


def test_training_carries_the_state_across_files_too(run_files):
    config = ContextConfig()
    whole = read_flows([run_files["whole"]], context=config)
    split = read_flows([run_files["second"], run_files["first"]], context=config)
    # read_flows keeps the files in the order given; the state went through them in time order.
    first = split.source == split.files.index(run_files["first"])
    assert np.array_equal(split.X[first], whole.X[:450])
    assert np.array_equal(split.X[~first], whole.X[450:])


def test_files_that_overlap_in_time_are_refused_with_both_names(run_files, tmp_path):
    frame = run_files["frame"]
    a = write(frame.iloc[::2], tmp_path / "even.csv")
    b = write(frame.iloc[1::2], tmp_path / "odd.csv")
    with pytest.raises(FlowInputError, match=r"odd\.csv .* overlaps .*even\.csv"):
        read_flows([a, b], context=ContextConfig())


def test_a_file_out_of_order_is_sorted_and_counted(model, run_files, tmp_path):
    frame = run_files["frame"]
    swapped = frame.iloc[[*range(0, 10), 11, 10, *range(12, len(frame))]]
    path = write(swapped, tmp_path / "swapped.parquet")
    table = read_flows([path], context=ContextConfig())
    assert table.report.context_out_of_order == {str(path): 1}
    reference = read_flows([run_files["whole"]], context=ContextConfig())
    assert np.array_equal(table.X, reference.X[[*range(0, 10), 11, 10, *range(12, len(frame))]])
    # Streamed: sorted within a batch (counted), refused across batches (file and row named).
    out = tmp_path / "s.parquet"
    summary = score_files(model, [path], out, progress=False, drift=False, batch_rows=100)
    assert summary["cleaning"]["context_out_of_order"] == {str(path): 1}
    refused = r"swapped\.parquet, row 12: .*follow each other in time"
    with pytest.raises(FlowInputError, match=refused):
        score_files(model, [path], tmp_path / "t.parquet", progress=False, batch_rows=11)


def test_records_without_endpoints_cannot_have_context(run_files):
    records = pa.Table.from_pandas(
        run_files["frame"].drop(columns=["id.orig_h"]).head(20), preserve_index=False
    )
    with pytest.raises(FlowInputError, match="start time and endpoints"):
        fit_spec(records, format="zeek", context=ContextConfig())


def test_encode_without_a_state_says_what_to_pass(model, run_files):
    records = pa.Table.from_pandas(run_files["frame"].head(5), preserve_index=False)
    with pytest.raises(ValueError, match="pass the ContextState"):
        encode(model.spec_, records)


# --- explanations -----------------------------------------------------------------------------


def test_explanations_name_context_features_in_words(model, run_files):
    from latent_sculpting.monitor.explain import explain

    table = read_flows([run_files["whole"]], spec=model.spec_)
    scans = table.X[table.y == 1][-50:]
    found = explain(model.benign_profile_, scans, k=5, n_candidates=5)
    texts = [r.text for e in found for r in e.reasons if r.feature.startswith("ctx_")]
    assert texts, "a scan's context features are its most unusual ones"
    assert not any(t.startswith("ctx_") for t in texts)
    assert any("of this source in the last" in t for t in texts), texts


def test_context_feature_names_read_as_words():
    from latent_sculpting.io.context.config import describe_feature

    assert describe_feature("ctx_src_dst_ports_1min", 387.0) == (
        "about 387 distinct destination ports contacted by this source in the last 1 min"
    )
    assert describe_feature("ctx_service_flows_10s", 412.0, "10.0.0.9 port 80/tcp") == (
        "about 412 flows to 10.0.0.9 port 80/tcp in the last 10 s"
    )
    for other in ("ctx_src_nothing_10s", "ctx_src_flows_10x", "duration", "ctx_pair_flows_"):
        assert describe_feature(other, 1.0) is None


# --- the service ------------------------------------------------------------------------------


def test_serve_keeps_one_state_per_process_and_scores_as_score_does(model, run_files, tmp_path):
    from fastapi.testclient import TestClient

    from latent_sculpting.serve.service import create_app

    reference = scores(model, [run_files["whole"]], tmp_path, "ref")["score"].to_numpy()
    frame = pd.read_csv(run_files["whole"], keep_default_na=False)
    got = []
    with TestClient(create_app(model)) as client:
        for start in range(0, len(frame), 150):  # CSV and JSON requests, in time order
            part = frame.iloc[start : start + 150]
            if start % 300:
                body, kind = part.to_csv(index=False), "text/csv"
            else:
                body, kind = json.dumps(part.to_dict(orient="records")), "application/json"
            response = client.post("/v1/score", content=body, headers={"Content-Type": kind})
            assert response.status_code == 200, response.text
            got += [r["score"] for r in response.json()]
        late = frame.iloc[:3].to_csv(index=False)
        response = client.post("/v1/score", content=late, headers={"Content-Type": "text/csv"})
        assert response.status_code == 422
        assert "follow each other in time" in response.text
    assert close(got, reference)
    # A fresh process (app) starts from an empty state: the second half alone scores otherwise.
    with TestClient(create_app(model)) as client:
        rest = frame.iloc[450:].to_csv(index=False)
        response = client.post("/v1/score", content=rest, headers={"Content-Type": "text/csv"})
        alone = [r["score"] for r in response.json()]
    assert not close(alone, reference[450:])
