"""Context features in the benchmark: which methods get them, where they are refused, and the
UNSW-NB15 ablation without its connection counts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from test_context_model import capture

from latent_sculpting.io.context import ContextConfig, ContextState
from latent_sculpting.io.encoding import context_matrix
from latent_sculpting.research.baselines import make_method, method_names
from latent_sculpting.research.benchmark import DATASETS, load_dataset
from latent_sculpting.research.benchmark.ablations import MAIN_DATASETS, UNSW_CONNECTION_COUNTS
from latent_sculpting.research.benchmark.context import (
    check_context,
    context_columns,
    with_context,
)
from latent_sculpting.research.benchmark.splits import FoldRows

pytestmark = pytest.mark.slow

UNSW = Path("../shared/data/unsw_nb15/UNSW_NB15_training-set.parquet")


def test_context_methods_and_their_configuration():
    assert {"rf-context", "knn-context", "default-context"} <= set(method_names())
    assert make_method("rf").context_config is None
    assert make_method("default").context_config is None
    assert make_method("rf-context").context_config == ContextConfig()
    assert make_method("default-context").context_config == ContextConfig()
    # --set context=... gives the baselines the configuration our presets get.
    for name in ("rf-context", "default"):
        method = make_method(name, overrides={"context": "30,300"})
        assert method.context_config == ContextConfig(windows_s=(30.0, 300.0))


def test_the_per_class_sample_refuses_context_methods_before_any_fit():
    cic = load_dataset("cicids2017")
    check_context([cic], ["rf", "default"], make_method)  # no context asked: fine
    with pytest.raises(ValueError, match="cicids2017: the methods rf-context .*per-class"):
        check_context([cic], ["rf", "rf-context"], make_method)


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """Two IoT-23-like captures that reuse the same addresses over the same hours."""
    folder = tmp_path_factory.mktemp("iot")
    for seed in (0, 1):
        frame = capture(300, seed=seed)
        frame.loc[frame.index[::50], "detailed-label"] = "-"  # malicious without detail: left out
        frame.to_csv(folder / f"capture-{seed}.csv", index=False)
    return folder


def test_context_is_computed_per_capture_over_every_record(captures):
    dataset = load_dataset("iot-23", captures)
    config = ContextConfig()
    got = context_columns(dataset, config)
    expected = []
    for path in sorted(captures.glob("*.csv")):
        table = pa.csv.read_csv(path)
        block = context_matrix(config, "zeek", table, ContextState(config))
        dropped = np.asarray(table.column("detailed-label").to_pylist()) == "-"
        dropped &= np.asarray(table.column("label").to_pylist()) == "Malicious"
        expected.append(block[~dropped])
    assert np.array_equal(got, np.concatenate(expected))
    assert context_columns(dataset, config) is got  # kept with the dataset

    rows = FoldRows(*(np.arange(i, i + 5) for i in range(0, 30, 5)))
    parts = {"calibration": np.zeros((5, 3), np.float32)}
    X_fit = np.ones((5, 3), np.float32)
    X, P = with_context(make_method("rf-context"), dataset, rows, X_fit, parts)
    assert X.shape == (5, 3 + len(config.feature_names))
    assert np.array_equal(X[:, 3:], got[rows.fit])
    assert np.array_equal(P["calibration"][:, 3:], got[rows.calibration])
    X, P = with_context(make_method("rf"), dataset, rows, X_fit, parts)
    assert X is X_fit and P["calibration"] is parts["calibration"]


def test_a_capped_dataset_refuses_context(captures):
    dataset = load_dataset("iot-23", captures, max_per_class=20)
    with pytest.raises(ValueError, match="max_per_class=20"):
        context_columns(dataset, ContextConfig())


@pytest.mark.skipif(not UNSW.is_file(), reason="the shared UNSW-NB15 file is not here")
def test_the_unsw_ablation_leaves_out_the_connection_counts_only(tmp_path):
    assert "unsw-nb15-noct" in DATASETS and "unsw-nb15-noct" not in MAIN_DATASETS
    rows = pq.read_table(UNSW).slice(0, 3000)
    pq.write_table(rows, tmp_path / "unsw.parquet")
    full = load_dataset("unsw-nb15", tmp_path)
    ablated = load_dataset("unsw-nb15-noct", tmp_path)
    spec_full = full.adapter.fit_spec(full.records)
    spec_ablated = ablated.adapter.fit_spec(ablated.records)
    assert set(spec_full.numeric) - set(spec_ablated.numeric) == set(UNSW_CONNECTION_COUNTS)
    assert {"ct_state_ttl", "ct_ftp_cmd", "ct_flw_http_mthd"} <= set(spec_ablated.numeric)


def test_the_iot23_ablation_leaves_out_benign_flows_to_a_c2_network_only(tmp_path):
    frame = capture(300, seed=2)
    frame["id.resp_h"] = frame["id.resp_h"].astype(object)
    frame["label"] = frame["label"].astype(object)
    frame["detailed-label"] = frame["detailed-label"].astype(object)
    benign = np.flatnonzero(frame["label"] == "Benign")
    # A labelled C&C server, a Benign flow to it, one to its /24, one to the next /24.
    frame.loc[benign[:5], ["id.resp_h", "label", "detailed-label"]] = [
        "185.244.25.235",
        "Malicious",
        "C&C",
    ]
    frame.loc[benign[5], "id.resp_h"] = "185.244.25.235"
    frame.loc[benign[6], "id.resp_h"] = "185.244.25.183"
    frame.loc[benign[7], "id.resp_h"] = "185.244.26.1"
    frame.loc[benign[8], "id.resp_h"] = "-"  # unset: matches no network
    frame.to_csv(tmp_path / "capture.csv", index=False)
    full = load_dataset("iot-23", tmp_path)
    ablated = load_dataset("iot-23-doubtful-out", tmp_path)
    assert "iot-23-doubtful-out" in DATASETS and "iot-23-doubtful-out" not in MAIN_DATASETS
    assert len(full) - len(ablated) == 2
    assert ablated.counts["C&C"] == full.counts["C&C"] == 5
    assert ablated.counts["Benign"] == full.counts["Benign"] - 2
    kept = set(ablated.records.column("uid").to_pylist())
    uid = frame["uid"].to_numpy()
    assert uid[benign[5]] not in kept and uid[benign[6]] not in kept
    assert uid[benign[7]] in kept and uid[benign[8]] in kept
    assert ablated.notes == {"Benign flows to a network C&C flows reach": 2}
    # Context still comes from every flow: the rows left out were traffic.
    config = ContextConfig()
    table = pa.csv.read_csv(tmp_path / "capture.csv")
    block = context_matrix(config, "zeek", table, ContextState(config))
    left_out = np.isin(np.arange(len(frame)), benign[5:7])
    np.testing.assert_array_equal(context_columns(ablated, config), block[~left_out])
