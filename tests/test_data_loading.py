"""Reading flow files into tables: both CIC-IDS-2017 releases, any table, batches, bad input."""

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
    read_flows,
    sample_path,
)
from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.cleaning import CleaningReport, replace_nonfinite

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

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
    assert table.spec.format == "cicids2017" and table.spec.benign_label == "BENIGN"
    # The improved-only columns are left out, each with its reason.
    assert dict(table.spec.dropped)["ICMP Type"].startswith("not in the original release")
    assert table.y.sum() == 56_277 - 7492


def test_original_release_loads_like_improved(original_csv, improved_rows, tmp_path):
    path, frame, overrides = original_csv
    original = load_cicids2017(path)
    improved_file = tmp_path / "improved.parquet"
    improved_rows.to_parquet(improved_file)
    improved = load_cicids2017(improved_file)

    assert original.feature_names == improved.feature_names
    assert original.labels.tolist() == improved.labels.tolist()
    assert "Web Attack - Brute Force" in set(original.labels)  # the cp1252 dash decoded
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
    assert "+inf replaced by 0" in str(report)
    assert report.to_dict()["values_replaced"] == 5


def test_replace_nonfinite_counts_in_place():
    X = np.array([[1.0, np.inf], [np.nan, 2.0], [3.0, -np.inf]], dtype=np.float32)
    report = CleaningReport()
    assert replace_nonfinite(X, ["a", "b"], report=report) is None
    np.testing.assert_array_equal(X, [[1, 0], [0, 2], [3, 0]])
    assert (report.posinf_replaced, report.neginf_replaced) == ({"b": 1}, {"b": 1})
    assert report.nan_replaced == {"a": 1}


def test_list_of_files_mixing_releases(original_csv):
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


def test_a_missing_label_is_an_error_naming_the_row(tmp_path, improved_rows):
    rows = improved_rows.copy()
    rows.loc[3, "Label"] = None
    path = tmp_path / "nolabel.parquet"
    rows.to_parquet(path)
    with pytest.raises(FlowInputError, match=r"nolabel\.parquet, row 4: missing label"):
        load_cicids2017(path)


def test_subset_and_label_counts(sample_table):
    part = sample_table.subset(sample_table.labels == "Heartbleed")
    assert len(part) == 11 and part.label_counts() == {"Heartbleed": 11}
    assert len(part.identifiers) == 11 and part.spec is sample_table.spec
    assert len(sample_table.subset([0, 5, 7])) == 3


def test_iter_flow_batches_matches_full_load(original_csv):
    path, frame, _ = original_csv
    full = load_cicids2017(path)
    batches = list(iter_flow_batches(full.spec, path, batch_rows=4))
    assert sum(len(b) for b in batches) == len(frame)
    X = np.concatenate([b.X for b in batches])
    np.testing.assert_array_equal(X, full.X)
    assert np.concatenate([b.labels for b in batches]).tolist() == full.labels.tolist()

    monday = sample_path() / "monday.parquet"
    parquet = list(iter_flow_batches(full.spec, monday, batch_rows=1000))
    assert [len(b) for b in parquet] == [1000, 838]
    assert "Src IP" in parquet[0].identifiers.column_names


def test_unlabelled_records_score_but_do_not_train(tmp_path, improved_rows, sample_table):
    path = tmp_path / "unlabeled.parquet"
    improved_rows.drop(columns=["Label"]).to_parquet(path)
    (batch,) = iter_flow_batches(sample_table.spec, path)
    assert batch.labels is None and len(batch) == len(improved_rows)
    with pytest.raises(FlowInputError, match=r"'Label'"):
        load_cicids2017(path)


def test_any_table_numeric_text_and_identifier_columns(tmp_path):
    path = tmp_path / "generic.csv"
    path.write_text(
        "Src Port,a,b,proto,Label\n80,1.5,Infinity,tcp,ok\n443,2,3,udp,bad\n53,4,5,tcp,ok\n"
    )
    table = read_flows(path, label_column="Label", benign_label="ok")
    spec = table.spec
    assert spec.format == "table"
    assert spec.numeric == ("a", "b") and spec.identifiers == ("Src Port",)
    assert [c.column for c in spec.categorical] == ["proto"]
    # "tcp" and "udp" are seen fewer than min_count=5 times: both share the (other) indicator.
    assert table.feature_names == ["a", "b", "proto=(other)"]
    np.testing.assert_array_equal(table.X[:, :2], [[1.5, 0.0], [2.0, 3.0], [4.0, 5.0]])
    assert table.labels.tolist() == ["ok", "bad", "ok"] and table.y.tolist() == [0, 1, 0]
    assert table.report.posinf_replaced == {"b": 1}
    unlabelled = read_flows(path, unlabelled=True, drop=["Label"])
    assert unlabelled.labels is None
    with pytest.raises(FlowInputError, match="'class'"):
        read_flows(path, label_column="class", benign_label="ok")
    with pytest.raises(FlowInputError, match="benign"):
        read_flows(path, label_column="Label")


# ------------------------------------------------------------------------------ bad input


def test_missing_and_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_cicids2017(tmp_path / "nowhere")
    with pytest.raises(FlowInputError, match="holds no flow file"):
        load_cicids2017(tmp_path)


def test_empty_and_header_only_files(tmp_path, original_columns):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(FlowInputError, match=r"empty\.csv.*empty"):
        load_cicids2017(empty)
    header = tmp_path / "header.csv"
    header.write_text(",".join(original_columns) + "\n")
    with pytest.raises(FlowInputError, match=r"header\.csv.*no data rows"):
        load_cicids2017(header)


def test_file_matching_neither_release(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text("x,y,Label\n1,2,BENIGN\n")
    with pytest.raises(
        ValueError, match=r"other\.csv: 76 feature column.*cicids2017.*'Flow Duration'"
    ):
        load_cicids2017(path)


def test_non_numeric_feature_value_csv_names_the_line(tmp_path, original_writer, improved_rows):
    to_original, write = original_writer
    path = write(tmp_path / "bad.csv", to_original(improved_rows), {(2, "Flow IAT Max"): "12abc"})
    with pytest.raises(FlowInputError, match=r"bad\.csv.*'Flow IAT Max'.*'12abc'"):
        load_cicids2017(path)
    spec = load_cicids2017(sample_path() / "monday.parquet").spec
    with pytest.raises(FlowInputError, match=r"bad\.csv, line 4, column 'Flow IAT Max'"):
        list(iter_flow_batches(spec, path, batch_rows=2))


def test_non_numeric_feature_value_parquet_names_the_row(tmp_path, improved_rows):
    rows = improved_rows.copy()
    rows["Flow IAT Max"] = rows["Flow IAT Max"].astype(str)
    rows.loc[1, "Flow IAT Max"] = "oops"
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pandas(rows), path)
    with pytest.raises(FlowInputError, match=r"bad\.parquet, row 2, column 'Flow IAT Max'.*oops"):
        load_cicids2017(path)


def test_a_value_beyond_float32_is_an_error_not_an_infinity(tmp_path, improved_rows):
    rows = improved_rows.copy()
    rows["Flow IAT Max"] = rows["Flow IAT Max"].astype(float)
    rows.loc[2, "Flow IAT Max"] = 1e39
    path = tmp_path / "huge.parquet"
    rows.to_parquet(path)
    with pytest.raises(
        FlowInputError, match=r"huge\.parquet, row 3, column 'Flow IAT Max'.*float32"
    ):
        load_cicids2017(path)


def test_compressed_content_is_named(tmp_path):
    import gzip

    path = tmp_path / "flows.csv"
    path.write_bytes(gzip.compress(b"a,b\n1,2\n"))
    with pytest.raises(FlowInputError, match=r"flows\.csv: gzip-compressed.*gunzip"):
        read_flows(path, unlabelled=True)


def test_duplicated_columns_are_named(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("a,b,a\n1,2,3\n")
    with pytest.raises(FlowInputError, match=r"dup\.csv: column 'a' appears twice"):
        read_flows(path, unlabelled=True)
    frame = pd.DataFrame({"a": [1.0], " a": [2.0]})
    frame.to_parquet(tmp_path / "dup.parquet")
    with pytest.raises(FlowInputError, match="'a' appears"):
        read_flows(tmp_path / "dup.parquet", unlabelled=True)


# ------------------------------------------------------------------------------ separators


SEPARATED = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


@pytest.mark.parametrize("name", ["flows.csv", "flows.tsv", "flows.binetflow", "flows.txt"])
@pytest.mark.parametrize("sep", list(SEPARATED))
def test_the_separator_comes_from_the_content_not_the_name(tmp_path, sep, name):
    rows = [["Src IP", "a", "b", "Label"], ["10.0.0.1", "1.5", "2", "ok"]]
    rows += [["10.0.0.2", "3", "4", "bad"], ["10.0.0.3", "5", "6", "ok"]]
    path = tmp_path / name
    path.write_text("".join(sep.join(row) + "\n" for row in rows))
    table = read_flows(path, label_column="Label", benign_label="ok")
    assert table.spec.numeric == ("a", "b") and table.spec.identifiers == ("Src IP",)
    np.testing.assert_array_equal(table.X, [[1.5, 2], [3, 4], [5, 6]])
    assert table.labels.tolist() == ["ok", "bad", "ok"]


def test_the_separator_that_splits_the_header_into_more_columns_wins(tmp_path):
    from latent_sculpting.io.readers.delimited import detect_separator

    # Commas inside tab-separated cells: one column under comma would be wrong twice over.
    assert detect_separator(b"a\tb,c\tLabel\n1\t2,5\tok\n") == "\t"
    assert detect_separator(b"a;b;c\n1;2;3\n") == ";"
    # The header splits under both, the data lines under one only: that one.
    assert detect_separator(b"a,b;c,d\n1,2,3;4\n") == ","
    assert detect_separator(b"a;b,c;d\n1;2;3,4\n") == ";"
    assert detect_separator(b"x\n1\n2\n") == ","  # one column under every separator
    path = tmp_path / "quoted.tsv"
    path.write_text('name\tvalue\n"a, b"\t1\n"c; d"\t2\n')
    assert read_flows(path, unlabelled=True, drop=["name"]).X[:, 0].tolist() == [1.0, 2.0]


def test_an_unreadable_header_names_the_separators_tried(tmp_path):
    spaced = tmp_path / "ra.txt"
    spaced.write_text("StartTime  Dur  Proto  Pkts\n10:00:00  1.5  tcp  4\n10:00:01  2  udp  2\n")
    with pytest.raises(
        FlowInputError,
        match=r"ra\.txt: the header line is one column under every separator "
        r"tried \(comma \(','\), tab \('\\t'\), semicolon \(';'\), pipe \('\|'\)\)",
    ):
        read_flows(spaced, unlabelled=True)
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("a\tb\tc\n1\t2\t3\n4\t5\n")
    with pytest.raises(FlowInputError, match=r"ragged\.tsv.*tab-separated text \('\\t'\)"):
        read_flows(ragged, unlabelled=True)
    twice = tmp_path / "twice.csv"
    twice.write_text("a|b|a\n1|2|3\n")
    with pytest.raises(FlowInputError, match=r"twice\.csv: column 'a' appears twice.*pipe"):
        read_flows(twice, unlabelled=True)
