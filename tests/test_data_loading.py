"""Loading both CIC-IDS-2017 releases into the canonical table; cleaning; bad input."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latent_sculpting.data import (
    CANONICAL_FEATURES,
    ENGINEERED_FEATURES,
    IDENTIFIER_COLUMNS,
    iter_flow_batches,
    load_cicids2017,
    load_flow_table,
    sample_path,
)
from latent_sculpting.data.cleaning import CleaningReport, engineered_features, replace_nonfinite

# SOURCE.md, "Rows per label per file", after canonical renaming.
SOURCE_COUNTS = {
    "BENIGN": 7492,
    "DoS Hulk": 7415,
    "PortScan": 7411,
    "DDoS": 7362,
    "Infiltration - Portscan": 7329,
    "DoS GoldenEye": 5849,
    "FTP-Patator": 3972,
    "DoS slowloris": 3859,
    "SSH-Patator": 2961,
    "DoS Slowhttptest": 1740,
    "Bot": 736,
    "Web Attack - Brute Force": 73,
    "Infiltration": 36,
    "Web Attack - XSS": 18,
    "Web Attack - Sql Injection": 13,
    "Heartbleed": 11,
}


def test_vendored_sample_matches_source_md(sample_table):
    table = sample_table
    assert len(table) == 56_277
    assert table.label_counts() == SOURCE_COUNTS
    assert table.X.dtype == np.float32
    assert table.X.shape == (56_277, 78)
    assert table.feature_names == list(CANONICAL_FEATURES) + list(ENGINEERED_FEATURES)
    assert not set(table.feature_names) & set(IDENTIFIER_COLUMNS)
    assert list(table.identifiers.columns) == [
        "id", "Flow ID", "Src IP", "Src Port", "Dst IP", "Dst Port", "Protocol", "Timestamp",
        "Attempted Category",
    ]  # fmt: skip
    assert len(table.identifiers) == len(table)
    assert np.isfinite(table.X).all()
    assert [p.name for p in table.files] == [
        "friday.parquet", "monday.parquet", "thursday.parquet", "tuesday.parquet",
        "wednesday.parquet",
    ]  # fmt: skip
    assert np.bincount(table.source).tolist() == [16808, 1838, 8855, 8365, 20411]
    assert table.report.rows_read == table.report.rows_out == 56_277
    assert table.report.label_renames["'Botnet' -> 'Bot'"] == 736
    assert "renamed" in str(table.report)


def test_engineered_features_known_answers():
    out = engineered_features(
        np.array([100.0, 0.0, 60.0]), np.array([4.0, 0.0, 3.0]), np.array([2e6, 5.0, 0.0])
    )
    np.testing.assert_allclose(out, [[25.0, 2.0], [0.0, 0.0], [20.0, 0.0]])
    assert out.dtype == np.float32


def test_original_schema_loads_like_improved(original_csv, improved_rows, tmp_path):
    path, frame, overrides = original_csv
    original = load_cicids2017(path)
    improved_file = tmp_path / "improved.parquet"
    improved_rows.to_parquet(improved_file)
    improved = load_cicids2017(improved_file)

    assert original.report.files[str(path)]["schema"] == "original"
    assert original.feature_names == improved.feature_names
    assert original.labels.tolist() == improved.labels.tolist()
    assert "Web Attack - Brute Force" in set(original.labels)
    assert list(original.identifiers.columns) == ["Destination Port"]
    np.testing.assert_array_equal(
        original.identifiers["Destination Port"], improved_rows["Dst Port"]
    )

    # Cells that were Infinity / NaN in the CSV become 0; everything else matches the parquet.
    changed = np.zeros(original.X.shape, dtype=bool)
    for (row, col), _ in overrides.items():
        changed[row, original.feature_names.index(col)] = True
    assert (original.X[changed] == 0).all()
    np.testing.assert_allclose(original.X[~changed], improved.X[~changed], rtol=1e-6)

    report = original.report
    assert report.posinf_replaced == {"Flow Bytes/s": 1, "Flow Packets/s": 1}
    assert report.neginf_replaced == {"Flow Packets/s": 1}
    assert report.nan_replaced == {"Flow Bytes/s": 1, "Flow Packets/s": 1}
    assert report.values_replaced == 5
    assert report.ignored_columns[str(path)] == ["Fwd Header Length.1"]
    assert "+inf replaced by 0" in str(report)
    assert report.to_dict()["values_replaced"] == 5


def test_nonfinite_drop_and_median(original_csv):
    path, frame, _ = original_csv
    dropped = load_cicids2017(path, nonfinite="drop")
    assert len(dropped) == len(frame) - 3
    assert dropped.report.nonfinite_rows_dropped == 3
    assert dropped.report.rows_out == len(frame) - 3

    median = load_cicids2017(path, nonfinite="median")
    j = median.feature_names.index("Flow Bytes/s")
    finite = frame["Flow Bytes/s"].to_numpy()[2:]  # rows 0 and 1 are Infinity / NaN
    assert median.X[0, j] == pytest.approx(np.median(finite.astype(np.float32)), rel=1e-6)
    with pytest.raises(ValueError, match="'mean'"):
        load_cicids2017(path, nonfinite="mean")


def test_replace_nonfinite_counts_in_place():
    X = np.array([[1.0, np.inf], [np.nan, 2.0], [3.0, -np.inf]], dtype=np.float32)
    report = CleaningReport()
    assert replace_nonfinite(X, ["a", "b"], report=report) is None
    np.testing.assert_array_equal(X, [[1, 0], [0, 2], [3, 0]])
    assert (report.posinf_replaced, report.neginf_replaced) == ({"b": 1}, {"b": 1})
    assert report.nan_replaced == {"a": 1}


def test_list_of_files_mixing_schemas(original_csv):
    path, frame, _ = original_csv
    table = load_cicids2017([path, sample_path() / "monday.parquet"])
    assert len(table) == len(frame) + 1838
    assert np.bincount(table.source).tolist() == [len(frame), 1838]
    assert {"Destination Port", "Dst Port"} <= set(table.identifiers.columns)


def test_attempted_policies(tmp_path, improved_rows):
    rows = improved_rows.copy()
    rows.loc[0, "Attempted Category"] = 2
    rows.loc[0, "Label"] = "Infiltration - Portscan - Attempted"
    path = tmp_path / "att.parquet"
    rows.to_parquet(path)
    kept = load_cicids2017(path)
    assert kept.labels[0] == "Infiltration - Portscan - Attempted"
    assert kept.report.attempted_rows == 1
    dropped = load_cicids2017(path, attempted="drop")
    assert len(dropped) == len(rows) - 1 and dropped.report.attempted_dropped == 1
    benign = load_cicids2017(path, attempted="benign")
    assert benign.labels[0] == "BENIGN" and benign.report.attempted_relabelled == 1
    with pytest.raises(ValueError, match="'ignore'"):
        load_cicids2017(path, attempted="ignore")


def test_unknown_label_is_kept_with_a_warning(tmp_path, improved_rows):
    rows = improved_rows.copy()
    rows.loc[1, "Label"] = "  Zeus Botnet v2 "
    path = tmp_path / "unknown.parquet"
    rows.to_parquet(path)
    with pytest.warns(UserWarning, match="'Zeus Botnet v2'"):
        table = load_cicids2017(path)
    assert table.labels[1] == "Zeus Botnet v2"
    assert table.report.unknown_labels == {"Zeus Botnet v2": 1}


def test_subset_and_label_counts(sample_table):
    part = sample_table.subset(sample_table.labels == "Heartbleed")
    assert len(part) == 11 and part.label_counts() == {"Heartbleed": 11}
    assert len(part.identifiers) == 11
    assert len(sample_table.subset([0, 5, 7])) == 3


def test_iter_flow_batches_matches_full_load(original_csv, tmp_path):
    path, frame, _ = original_csv
    full = load_cicids2017(path)
    batches = list(iter_flow_batches(path, batch_rows=4))
    assert [len(f) for f, _, _ in batches] == [4] * (len(frame) // 4) + (
        [len(frame) % 4] if len(frame) % 4 else []
    )
    features = pd.concat([f for f, _, _ in batches], ignore_index=True)
    assert list(features.columns) == full.feature_names
    assert (features.dtypes == np.float32).all()
    np.testing.assert_array_equal(features.to_numpy(), full.X)
    assert np.concatenate([lab for _, _, lab in batches]).tolist() == full.labels.tolist()

    parquet_batches = list(iter_flow_batches(sample_path() / "monday.parquet", batch_rows=1000))
    assert [len(f) for f, _, _ in parquet_batches] == [1000, 838]
    assert "Src IP" in parquet_batches[0][1].columns


def test_iter_flow_batches_without_labels(tmp_path, improved_rows):
    path = tmp_path / "unlabeled.parquet"
    improved_rows.drop(columns=["Label"]).to_parquet(path)
    (features, identifiers, labels), *_ = iter_flow_batches(path)
    assert labels is None and len(features) == len(improved_rows)
    with pytest.raises(ValueError, match=r"unlabeled\.parquet.*'Label'"):
        load_cicids2017(path)


def test_load_flow_table_generic(tmp_path):
    path = tmp_path / "generic.csv"
    path.write_text("port,a,b,host,Label\n80,1.5,Infinity,x,ok\n443,2,3,y,bad\n")
    table = load_flow_table(path, drop=["port"])
    assert table.feature_names == ["a", "b"]
    np.testing.assert_array_equal(table.X, np.array([[1.5, 0.0], [2.0, 3.0]], np.float32))
    assert table.labels.tolist() == ["ok", "bad"]
    assert list(table.identifiers.columns) == ["port", "host"]
    assert table.report.posinf_replaced == {"b": 1}
    unlabeled = load_flow_table(path, label_column=None, drop=["port"])
    assert unlabeled.labels is None
    with pytest.raises(ValueError, match="'class'"):
        load_flow_table(path, label_column="class")


# ------------------------------------------------------------------------------ bad input


def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_cicids2017(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="no \\*.csv or \\*.parquet"):
        load_cicids2017(tmp_path)


def test_empty_and_header_only_files(tmp_path, original_columns):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.csv.*empty"):
        load_cicids2017(empty)
    header = tmp_path / "header.csv"
    header.write_text(",".join(original_columns) + "\n")
    with pytest.raises(ValueError, match=r"header\.csv.*no data rows"):
        load_cicids2017(header)


def test_file_without_label_column(tmp_path, original_writer, improved_rows):
    to_original, write = original_writer
    frame = to_original(improved_rows).drop(columns=["Label"])
    path = tmp_path / "nolabel.csv"
    path.write_text(frame.to_csv(index=False))
    with pytest.raises(ValueError, match=r"nolabel\.csv.*no 'Label' column"):
        load_cicids2017(path)


def test_file_matching_neither_schema(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("x,y,Label\n1,2,BENIGN\n")
    with pytest.raises(ValueError, match=r"other\.csv.*neither.*'Flow Duration'"):
        load_cicids2017(path)


def test_non_numeric_feature_value_csv(tmp_path, original_writer, improved_rows):
    to_original, write = original_writer
    path = write(tmp_path / "bad.csv", to_original(improved_rows), {(2, "Flow IAT Max"): "12abc"})
    with pytest.raises(ValueError, match=r"bad\.csv.*'12abc'.*'Flow IAT Max'"):
        load_cicids2017(path)
    with pytest.raises(ValueError, match=r"bad\.csv.*'12abc'.*'Flow IAT Max'"):
        list(iter_flow_batches(path, batch_rows=2))


def test_non_numeric_feature_value_parquet(tmp_path, improved_rows):
    rows = improved_rows.copy()
    rows["Flow IAT Max"] = rows["Flow IAT Max"].astype(str)
    rows.loc[1, "Flow IAT Max"] = "oops"
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pandas(rows), path)
    with pytest.raises(ValueError, match=r"bad\.parquet.*'oops'.*'Flow IAT Max'"):
        load_cicids2017(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "flows.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match=r"'\.json'"):
        load_cicids2017(path)
