"""FlowSpec: column roles, categorical vocabularies, encoding, persistence of the spec."""

import json

import numpy as np
import pyarrow as pa
import pytest

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.cleaning import CleaningReport
from latent_sculpting.io.column_roles import MISSING
from latent_sculpting.io.encoding import encode
from latent_sculpting.io.fitting import fit_spec
from latent_sculpting.io.flowspec import Categorical, FlowSpec, legacy_spec


def records(n=20):
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "ts": np.arange(n, dtype=float),
            "src_ip": [f"10.0.0.{i % 3}" for i in range(n)],
            "bytes": rng.integers(0, 1000, n),
            "duration": rng.random(n),
            "proto": ["tcp"] * 12 + ["udp"] * 6 + [None, "icmp"],
            "label": ["normal"] * 15 + ["scan"] * 5,
        }
    )


def test_roles_of_every_column_with_reasons():
    spec = fit_spec(records(), label_column="label", benign_label="normal")
    assert spec.format == "table"
    assert spec.numeric == ("bytes", "duration")
    assert spec.identifiers == ("ts", "src_ip")
    assert [(c.column, c.values) for c in spec.categorical] == [("proto", ("tcp", "udp"))]
    assert spec.feature_names == ["bytes", "duration", "proto=tcp", "proto=udp", "proto=(other)"]
    reasons = dict(spec.dropped)
    assert "identifier" in reasons["ts"] and "identifier" in reasons["src_ip"]
    assert "'proto'" in spec.summary() and "left out 'ts'" in spec.summary()


def test_drop_keep_and_vocabulary_limits():
    spec = fit_spec(
        records(),
        label_column="label",
        benign_label="normal",
        drop=["duration"],
        keep=["ts"],
        max_categories=1,
        min_count=1,
    )
    assert spec.numeric == ("ts", "bytes") and "duration" in spec.identifiers
    assert spec.categorical[0].values == ("tcp",)
    with pytest.raises(FlowInputError, match=r"--drop names no column: \['nope'\]"):
        fit_spec(records(), label_column="label", benign_label="normal", drop=["nope"])


def test_a_text_cell_in_a_numeric_column_is_an_error_not_a_dropped_column():
    table = records().set_column(2, "bytes", pa.array([str(i) for i in range(19)] + ["12abc"]))
    with pytest.raises(FlowInputError, match=r"'bytes' holds numbers and text.*'12abc'"):
        fit_spec(table, label_column="label", benign_label="normal")


def test_columns_whose_values_identify_flows_are_identifiers_with_the_rule_that_said_so():
    import base64

    n = 200
    rng = np.random.default_rng(1)
    table = pa.table(
        {
            "bytes": rng.integers(0, 1000, n),
            "duration": rng.random(n),
            "proto": ["tcp", "udp"] * (n // 2),
            "label": ["normal"] * (n - 20) + ["scan"] * 20,
        }
    )
    table = table.append_column(
        "StartTime",
        pa.array([f"2011/08/10 09:{i // 60:02d}:{i % 60:02d}.{i:06d}" for i in range(n)]),
    )
    table = table.append_column(
        "started",
        pa.array([f"{1313005613 + i}.25" for i in range(n)]),  # epoch seconds as text
    )
    payloads = [base64.b64encode(rng.bytes(30)).decode() for _ in range(n // 4)] * 4
    table = table.append_column("payload", pa.array([f"s[30]={p}" for p in payloads]))
    table = table.append_column("hash", pa.array([rng.bytes(16).hex() for _ in range(n)]))
    table = table.append_column("host", pa.array([f"pc-{i % 150}.example.org" for i in range(n)]))
    table = table.append_column("service", pa.array(["http", "dns", "ssh", "ntp"] * (n // 4)))
    spec = fit_spec(table, label_column="label", benign_label="normal")
    assert spec.numeric == ("bytes", "duration")
    assert [c.column for c in spec.categorical] == ["proto", "service"]
    assert set(spec.identifiers) == {"StartTime", "started", "payload", "hash", "host"}
    reasons = dict(spec.dropped)
    assert reasons["StartTime"].startswith("its values read as times (e.g. '2011/08/10 09:00:00.")
    assert reasons["started"].startswith("its values read as times (e.g. '1313005613.25')")
    assert reasons["payload"].startswith("its values look like encoded bytes, base64 or hex")
    assert reasons["hash"].startswith("its values look like encoded bytes, base64 or hex")
    assert reasons["host"].startswith("most of its values are distinct (150 in 200 rows)")
    assert all(reason.endswith("(--keep to use it)") for reason in reasons.values())
    assert "left out 'StartTime': its values read as times" in spec.summary()
    # --keep makes a feature of any of them: text is categorical, numbers as text numeric.
    kept = fit_spec(table, label_column="label", benign_label="normal", keep=["host", "started"])
    assert kept.numeric == ("bytes", "duration", "started")
    assert [c.column for c in kept.categorical] == ["proto", "host", "service"]


def test_an_all_empty_column_is_left_out_with_its_reason():
    table = records().append_column("empty", pa.nulls(20))
    spec = fit_spec(table, label_column="label", benign_label="normal")
    assert dict(spec.dropped)["empty"] == "empty in every row"
    infinite = records().append_column("infinite", pa.array([np.inf] * 10 + [None] * 10))
    spec = fit_spec(infinite, label_column="label", benign_label="normal")
    reason = "no finite value in any row (each is infinite, NaN or missing)"
    assert dict(spec.dropped)["infinite"] == reason and "infinite" not in spec.numeric


def test_encode_one_hot_other_and_missing():
    spec = fit_spec(records(), label_column="label", benign_label="normal")
    new = pa.table(
        {
            "bytes": [1, 2, 3, 4],
            "duration": [0.5, 0.5, 0.5, 0.5],
            "proto": ["udp", "sctp", None, "tcp"],
        }
    )
    batch = encode(spec, new)
    np.testing.assert_array_equal(batch.X[:, 2:], [[0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0]])
    assert batch.labels is None and batch.identifiers.num_columns == 0
    # A value seen often enough in training that is "missing" gets its own indicator.
    spec2 = FlowSpec("table", ("bytes",), categorical=(Categorical("proto", (MISSING,)),))
    assert encode(spec2, new).X[:, 1:].tolist() == [[0, 1], [0, 1], [1, 0], [0, 1]]


def test_encode_errors_name_row_and_column():
    spec = fit_spec(records(), label_column="label", benign_label="normal")
    base = {"bytes": [1.0, 2.0], "duration": [0.1, 0.2], "proto": ["tcp", "tcp"]}
    with pytest.raises(FlowInputError, match=r"2 column\(s\).*'bytes', 'duration'") as error:
        encode(spec, pa.table({"proto": ["tcp"]}))
    assert error.value.missing == ["bytes", "duration"]
    huge = pa.table({**base, "bytes": [1.0, 1e39]})
    with pytest.raises(FlowInputError, match=r"req, row 7, column 'bytes'.*float32"):
        encode(spec, huge, source="req", offset=5)
    text = pa.table({**base, "duration": ["0.5", "fast"]})
    with pytest.raises(FlowInputError, match=r"row 2, column 'duration': 'fast' is not a number"):
        encode(spec, text)
    flags = pa.table({**base, "bytes": [True, False]})
    with pytest.raises(FlowInputError, match="'bytes' holds bool"):
        encode(spec, flags)
    unlabeled = pa.table({**base, "label": ["normal", None]})
    with pytest.raises(FlowInputError, match=r"row 2: missing label"):
        encode(spec, unlabeled, require_labels=True)


def test_nonfinite_and_missing_values_become_zero_counted_or_refused():
    spec = fit_spec(records(), label_column="label", benign_label="normal")
    table = pa.table(
        {"bytes": [np.inf, None, 3.0], "duration": [0.1, np.nan, -np.inf], "proto": ["tcp"] * 3}
    )
    report = CleaningReport()
    X = encode(spec, table, report=report).X
    np.testing.assert_array_equal(X[:, :2], np.float32([[0, 0.1], [0, 0], [3, 0]]))
    assert report.posinf_replaced == {"bytes": 1} and report.nan_replaced == {
        "bytes": 1,
        "duration": 1,
    }
    strict = fit_spec(records(), label_column="label", benign_label="normal", nonfinite="error")
    with pytest.raises(FlowInputError, match=r"row 1, column 'bytes': missing or non-finite"):
        encode(strict, table)


def test_the_spec_survives_json_and_a_tampered_one_is_refused():
    spec = fit_spec(records(), label_column="label", benign_label="normal")
    again = FlowSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec
    good = spec.to_dict()
    for key, value, message in [
        ("format", "pcap-magic", "unknown format"),
        ("numeric", "bytes", "'numeric' must be a list"),
        ("numeric", ["bytes", 3], "not a column name"),
        ("numeric", ["x"] * 20_000, "at most"),
        ("categorical", [{"column": "proto"}], "'values' must be a list"),
        ("nonfinite", "median", "nonfinite must be one of"),
        ("engineered", ["Fwd Bytes/Packet (engineered)"], "derives no feature"),
        ("numeric", ["bytes", "bytes"], "not unique"),
        ("label_column", 5, "'label_column' must be a string"),
    ]:
        with pytest.raises(ValueError, match=message):
            FlowSpec.from_dict({**good, key: value})
    with pytest.raises(ValueError, match="must be an object"):
        FlowSpec.from_dict([1, 2])


def test_legacy_model_files_get_a_spec_from_their_feature_names(sample_table):
    spec = legacy_spec(sample_table.feature_names, {})
    assert spec.format == "cicids2017" and spec.feature_names == sample_table.feature_names
    table = legacy_spec(["a", "b"], {"training_data": {"label_column": "y", "benign_label": "0"}})
    assert (table.format, table.numeric, table.label_column) == ("table", ("a", "b"), "y")


def test_the_benign_label_is_spelt_as_the_format_spells_labels(sample_table):
    from latent_sculpting.data import sample_path
    from latent_sculpting.io.table import read_records

    recs, *_ = read_records(sample_path() / "monday.parquet", format="cicids2017")
    assert fit_spec(recs, benign_label="benign").benign_label == "BENIGN"


def test_numbers_converted_in_row_blocks_are_the_numbers_converted_at_once(monkeypatch):
    import latent_sculpting.io.encoding as encoding

    spec = fit_spec(records(), label_column="label", benign_label="normal")
    table = pa.table(
        {
            "bytes": pa.chunked_array([[1, 2, None], [4, 5]]),  # integers, a null, two chunks
            "duration": ["0.5", "1e3", "-2", "nan", "7"],  # numbers as text
            "proto": ["tcp"] * 5,
        }
    )
    whole = encode(spec, table).X
    monkeypatch.setattr(encoding, "_MATRIX_ROWS", 2)
    np.testing.assert_array_equal(encode(spec, table).X, whole)
    np.testing.assert_array_equal(whole[:, 0], np.float32([1, 2, 0, 4, 5]))
    np.testing.assert_array_equal(whole[:, 1], np.float32([0.5, 1000, -2, 0, 7]))
    # The row an error names counts the blocks before it.
    huge = pa.table({"bytes": [1.0, 2.0, 3.0, 1e39], "duration": [0.1] * 4, "proto": ["tcp"] * 4})
    with pytest.raises(FlowInputError, match=r"row 4, column 'bytes'.*float32"):
        encode(spec, huge)


def test_remembered_column_names_do_not_leak_between_tables():
    spec = fit_spec(records(), label_column="label", benign_label="normal")
    a = pa.table({"bytes": [1.0], "duration": [2.0], "proto": ["tcp"]})
    b = pa.table({"duration": [2.0], "Bytes": [3.0], "proto": ["tcp"]})  # other order, spelling
    assert encode(spec, a).X[0, :2].tolist() == [1.0, 2.0]
    assert encode(spec, b).X[0, :2].tolist() == [3.0, 2.0]
    with pytest.raises(FlowInputError, match="'duration'"):
        encode(spec, pa.table({"bytes": [1.0], "proto": ["tcp"]}))


def test_numbers_given_as_a_matrix_encode_as_the_columns_do():
    spec = fit_spec(records(), label_column="label", benign_label="normal")
    table = records()
    numeric = np.c_[table.column("bytes").to_numpy(), table.column("duration").to_numpy()]
    rest = table.drop_columns(["bytes", "duration"])
    whole = encode(spec, table)
    given = encode(spec, rest, numeric=numeric.astype(np.float64))
    np.testing.assert_array_equal(given.X, whole.X)
    assert given.identifiers.equals(whole.identifiers)
    assert given.labels.tolist() == whole.labels.tolist()
    numeric[6, 0] = 1e39
    with pytest.raises(FlowInputError, match=r"row 7, column 'bytes'.*float32"):
        encode(spec, rest, numeric=numeric)
    with pytest.raises(ValueError, match=r"float64 of shape \(20, 2\)"):
        encode(spec, rest, numeric=numeric[:3])
