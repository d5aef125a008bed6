"""Zeek logs: the shared real conn.logs (TSV, JSON, labelled), IoT-23's packed labels, bad files."""

from __future__ import annotations

import collections
import gzip
import json

import pyarrow as pa
import pytest
from shared_files import shared

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.readers import iter_batches, read_columns, zeek
from latent_sculpting.io.readers import sniff as sniff_file

CONN_FIELDS = (
    "ts uid id.orig_h id.orig_p id.resp_h id.resp_p proto service duration orig_bytes "
    "resp_bytes conn_state local_orig local_resp missed_bytes history orig_pkts orig_ip_bytes "
    "resp_pkts resp_ip_bytes tunnel_parents"
).split()
CONN_TYPES = (
    "time string addr port addr port enum string interval count count string bool bool count "
    "string count count count count set[string]"
).split()
HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#open\t2019-03-15-14-50-49\n"
)
ROW_A = (
    "1545403816.962094\tCrDn63WjJEmrWGjqf\t192.168.1.195\t41040\t185.244.25.235\t80\ttcp\t-\t"
    "3.139211\t0\t0\tS0\t-\t-\t0\tS\t3\t180\t0\t0"
)
ROW_B = (
    "1545403824.181240\tCY9lJW3gh1Eje4usP6\t192.168.1.195\t41040\t185.244.25.235\t80\ttcp\t-\t"
    "-\t-\t-\tS0\t-\t-\t0\tS\t1\t60\t0\t0"
)


def tsv(fields=CONN_FIELDS, types=CONN_TYPES, rows=(), *, header=HEADER, close=True) -> str:
    text = header + "#fields\t" + "\t".join(fields) + "\n#types\t" + "\t".join(types) + "\n"
    text += "".join(row + "\n" for row in rows)
    return text + ("#close\t2019-03-16-00-00-00\n" if close else "")


def plain(rows=(ROW_A + "\t-", ROW_B + "\t(empty)"), **kwargs) -> str:
    return tsv(rows=rows, **kwargs)


def read(path, batch_rows=65_536, types=None) -> pa.Table:
    return pa.Table.from_batches(list(zeek.batches(path, batch_rows, types)))


def write(tmp_path, text: str, name="conn.log"):
    path = tmp_path / name
    path.write_text(text)
    return path


def raises_at(path, line, column=None, match=None, **kwargs) -> FlowInputError:
    with pytest.raises(FlowInputError, match=match) as info:
        read(path, **kwargs)
    error = info.value
    assert error.path == path and error.line == line and error.column == column
    assert str(path) in str(error) and f"line {line}" in str(error)
    return error


# --- sniffing ----------------------------------------------------------------------------------


def test_sniff_tells_zeek_logs_from_other_text():
    assert zeek.sniff(b"#separator \\x09\n#set_separator\t,\n")
    assert zeek.sniff(b"\t#separator \\x09\n")  # a stray tab, as in Slips' copy
    record = {"ts": 1.5, "uid": "C1", "id.orig_h": "10.0.0.1", "id.resp_h": "10.0.0.2"}
    assert zeek.sniff(json.dumps(record).encode() + b"\n")
    # A first line longer than the head: the keys are looked for in what there is.
    assert zeek.sniff(b'{"ts":1.5,"uid":"C1","id.orig_h":"10.0.0.1","id.resp_h":"10.0.0.2","x":"')
    assert not zeek.sniff(b'{"src_ip":"10.0.0.1","dst_ip":"10.0.0.2","ts":1}\n')
    assert not zeek.sniff(b'{"ts":1,"id":{"orig_h":"10.0.0.1","resp_h":"10.0.0.2"}}\n')
    assert not zeek.sniff(b"ts,uid,id.orig_h,id.orig_p\n1,C1,10.0.0.1,80\n")


def test_every_shared_log_is_sniffed_as_zeek():
    folder = shared("data", "zeek_logs")
    logs = sorted(p for p in folder.iterdir() if p.suffix != ".md")
    assert len(logs) == 5
    assert {sniff_file(p) for p in logs} == {"zeek"}


# --- the shared real logs ---------------------------------------------------------------------

# Records per SOURCE.md; mixed-tsv-conn.log holds 141, not 142: SOURCE.md counted its first
# line, the '#separator' header, which starts with a stray tab, as a record.
RECORDS = {
    "ctu-sme-11-conn.log.labeled": 766,
    "mixed-json-conn.log": 576,
    "mixed-tsv-conn.log": 141,
    "portscan-horizontal-conn.log": 41,
    "portscan-vertical-conn.log": 50,
}
ZEEK_ARROW = {
    "ts": pa.float64(),
    "uid": pa.string(),
    "id.orig_h": pa.string(),
    "id.orig_p": pa.int64(),
    "proto": pa.string(),
    "duration": pa.float64(),
    "orig_bytes": pa.int64(),
    "conn_state": pa.string(),
    "local_orig": pa.bool_(),
    "history": pa.string(),
    "resp_ip_bytes": pa.int64(),
}


@pytest.mark.parametrize("name", sorted(RECORDS))
def test_shared_logs_read_with_zeek_types(name):
    path = shared("data", "zeek_logs", name)
    table = read(path, batch_rows=100)
    assert table.num_rows == RECORDS[name]
    assert table.column_names == zeek.columns(path) == read_columns(path)
    for column, arrow_type in ZEEK_ARROW.items():
        if column in table.column_names:
            assert table.schema.field(column).type == arrow_type, column
    assert table.column("ts").null_count == 0
    # Every batch but the last has exactly batch_rows rows, and all share one schema.
    batches = list(zeek.batches(path, 100))
    assert [b.num_rows for b in batches[:-1]] == [100] * (len(batches) - 1)
    assert len({b.schema for b in batches}) == 1


def test_unset_is_null_and_empty_is_empty_string():
    table = read(shared("data", "zeek_logs", "portscan-horizontal-conn.log"))
    rows = {r["uid"]: r for r in table.to_pylist()}
    first, syn_only = rows["Cxl7TP23vZQ4RolkJf"], rows["CeSj4A1BN9nBer0fe9"]
    assert first["service"] == "http" and first["duration"] == pytest.approx(0.055687)
    assert first["tunnel_parents"] == ""  # (empty)
    assert first["local_orig"] is None  # -
    assert syn_only["duration"] is None and syn_only["orig_bytes"] is None
    assert syn_only["service"] is None and syn_only["orig_pkts"] == 1
    assert table.column("tunnel_parents").to_pylist() == [""] * 41


def test_labelled_log_has_label_columns_and_counts():
    path = shared("data", "zeek_logs", "ctu-sme-11-conn.log.labeled")
    table = read(path)
    assert table.column_names[-2:] == ["label", "detailedlabel"]
    assert collections.Counter(table.column("label").to_pylist()) == {
        "Malicious": 719,
        "Benign": 44,
        "Unknown": 3,
    }
    detailed = collections.Counter(table.column("detailedlabel").to_pylist())
    assert detailed["From_malicious-To_malicious-Malware_data_exfiltration-RemcosRAT"] == 719
    assert detailed[""] == 3  # (empty) for the Unknown flows
    assert table.column("local_orig").to_pylist()[0] is True


def test_json_log_missing_keys_are_null_and_types_follow_zeek():
    table = read(shared("data", "zeek_logs", "mixed-json-conn.log"), batch_rows=50)
    assert table.num_rows == 576
    assert table.column("service").null_count == 576 - 532
    assert table.column("duration").null_count == 10
    assert table.column("local_orig").null_count == 575  # one record has it
    assert table.schema.field("local_orig").type == pa.bool_()
    # A key first seen late in the file still has its column from the first batch on.
    assert table.column_names.index("orig_l2_addr") > table.column_names.index("resp_ip_bytes")


# --- IoT-23's packed label fields ---------------------------------------------------------------

IOT_FIELDS = CONN_FIELDS[:-1] + ["tunnel_parents   label   detailed-label"]
IOT_TYPES = CONN_TYPES[:-1] + ["set[string]   string   string"]


def test_iot23_packed_labels_become_columns(tmp_path):
    rows = [ROW_A + "\t-   Benign   -", ROW_B + "\t-   Malicious   PartOfAHorizontalPortScan"]
    path = write(tmp_path, tsv(IOT_FIELDS, IOT_TYPES, rows), "conn.log.labeled")
    assert zeek.columns(path)[-3:] == ["tunnel_parents", "label", "detailed-label"]
    table = read(path)
    assert table.column("label").to_pylist() == ["Benign", "Malicious"]
    assert table.column("detailed-label").to_pylist() == [None, "PartOfAHorizontalPortScan"]
    assert table.column("tunnel_parents").to_pylist() == [None, None]
    assert table.column("duration").to_pylist() == [pytest.approx(3.139211), None]


def test_iot23_packed_field_with_a_value_missing_names_the_line(tmp_path):
    rows = [ROW_A + "\t-   Benign   -", ROW_B + "\t-   Malicious"]
    path = write(tmp_path, tsv(IOT_FIELDS, IOT_TYPES, rows))
    raises_at(path, 10, IOT_FIELDS[-1], match="2 space-separated values")


def test_packed_names_and_types_must_agree(tmp_path):
    types = CONN_TYPES[:-1] + ["set[string]   string"]
    path = write(tmp_path, tsv(IOT_FIELDS, types, [ROW_A + "\t-   Benign   -"]))
    with pytest.raises(FlowInputError, match="packs 3 names but its type") as info:
        zeek.columns(path)
    assert info.value.line == 8


# --- bad files ------------------------------------------------------------------------------------


def test_truncated_last_row_names_its_line(tmp_path):
    text = plain(close=False)
    path = write(tmp_path, text[: text.rindex("\tS0\t")])
    error = raises_at(path, 10, match="fields where #fields names 21")
    assert "CY9lJW3gh1Eje4usP6" in str(error)


def test_wrong_field_count_names_its_line(tmp_path):
    path = write(tmp_path, plain(rows=(ROW_A + "\t-", ROW_B + "\t-\textra")))
    raises_at(path, 10, match="22 fields where #fields names 21")
    # Too few fields, further down a log with many rows: the first bad one is named.
    rows = [ROW_A + "\t-"] * 500 + [ROW_B] + [ROW_A + "\t-"] * 10
    raises_at(write(tmp_path, plain(rows=rows)), 9 + 500, match="20 fields where #fields names 21")


def test_arrow_buffer_holds_no_python_object():
    import sys

    from latent_sculpting.io.readers._text import arrow_buffer

    data = b"some bytes of a block\n" * 1000
    before = sys.getrefcount(data)
    buffer = arrow_buffer(data)
    assert sys.getrefcount(data) == before  # pa.py_buffer(data) would hold one more
    assert buffer.to_pybytes() == data


def test_arrow_readers_are_given_nothing_that_needs_the_gil_to_drop(tmp_path, monkeypatch):
    # Arrow's threaded readers drop their input and options on their own threads, sometimes
    # after the read returned; a Python object among them needs the GIL to be dropped, and a
    # thread that takes it while the interpreter exits aborts the process (exit 134, once in
    # 40-130 runs of sculpt score on a log with one bad row; see _text.arrow_buffer). So every
    # read gets an Arrow-owned buffer from arrow_buffer and no Python callback, error path
    # included.
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson

    from latent_sculpting.io.readers import _text, delimited

    given, copied = [], []
    to_arrow = _text.arrow_buffer

    def counted(data):
        copied.append(len(data))
        return to_arrow(data)

    def spy(read):
        def wrapped(source, *args, **kwargs):
            options = kwargs.get("parse_options")
            handler = getattr(options, "invalid_row_handler", None)
            given.append((type(source), handler, len(copied)))
            return read(source, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(_text, "arrow_buffer", counted)
    monkeypatch.setattr(delimited, "arrow_buffer", counted)
    monkeypatch.setattr(pacsv, "read_csv", spy(pacsv.read_csv))
    monkeypatch.setattr(pajson, "read_json", spy(pajson.read_json))
    bad_tsv = write(tmp_path, plain(rows=(ROW_A + "\t-", ROW_B + "\t-\textra")))
    raises_at(bad_tsv, 10, match="22 fields")
    bad_json = write(tmp_path, jsonl(JSON_A) + "[1, 2]\n", name="conn.json")
    raises_at(bad_json, 2, match="not an object")
    read(write(tmp_path, plain(), name="good.log"))
    with pytest.raises(FlowInputError, match="not readable as comma-separated"):
        delimited.parse_bytes(b"a,b\n1,2,3\n", {})
    assert len(given) == 4
    for number, (kind, handler, copies) in enumerate(given, start=1):
        assert kind is pa.BufferReader and handler is None
        assert copies == number  # the buffer read is the one arrow_buffer made just before


@pytest.mark.parametrize(
    ("old", "new", "column", "match"),
    [
        ("\t60\t", "\t6x0\t", "orig_ip_bytes", "'6x0' is not a valid count"),
        ("1545403824.181240", "1545403824,18", "ts", "'1545403824,18' is not a valid time"),
        ("\t41040\t", "\tport\t", "id.orig_p", "'port' is not a valid port"),
        ("\tS0\t-\t-\t", "\tS0\tyes\t-\t", "local_orig", "'yes' is not T or F"),
        ("\tS0\t-\t-\t0\t", "\tS0\t-\t-\t18446744073709551615\t", "missed_bytes", "above 2"),
        ("\tS0\t-\t-\t0\t", "\tS0\t-\t-\t-5\t", "missed_bytes", "'-5' is not a valid count"),
    ],
)
def test_value_not_of_its_type_names_line_and_column(tmp_path, old, new, column, match):
    path = write(tmp_path, plain(rows=(ROW_A + "\t-", ROW_B.replace(old, new, 1) + "\t-")))
    raises_at(path, 10, column, match=match)


def test_missing_fields_or_types_and_length_mismatch(tmp_path):
    no_fields = plain().replace("#fields\t" + "\t".join(CONN_FIELDS) + "\n", "")
    with pytest.raises(FlowInputError, match="no #fields line") as info:
        read(write(tmp_path, no_fields, "a.log"))
    assert "a.log" in str(info.value)
    no_types = plain().replace("#types\t" + "\t".join(CONN_TYPES) + "\n", "")
    with pytest.raises(FlowInputError, match="no #types line"):
        read(write(tmp_path, no_types, "b.log"))
    short = tsv(types=CONN_TYPES[:-1], rows=[ROW_A + "\t-"])
    with pytest.raises(FlowInputError, match="20 types for 21 #fields") as info:
        read(write(tmp_path, short, "c.log"))
    assert info.value.line == 8


def test_gzip_content_is_named_not_parsed(tmp_path):
    path = tmp_path / "conn.log"
    path.write_bytes(gzip.compress(plain().encode()))
    with pytest.raises(FlowInputError, match="gzip-compressed") as info:
        list(iter_batches(path))
    assert info.value.path == path
    with pytest.raises(FlowInputError, match="not a Zeek log") as info:
        read(path)
    assert info.value.line == 1


def test_wanted_types_are_cast_and_failures_located(tmp_path):
    path = write(tmp_path, plain())
    table = read(path, types={"orig_bytes": pa.float64(), "local_orig": pa.float64()})
    assert table.schema.field("orig_bytes").type == pa.float64()
    assert table.column("orig_bytes").to_pylist() == [0.0, None]
    raises_at(path, 9, "uid", match="does not convert to double", types={"uid": pa.float64()})


def test_concatenated_logs_and_blank_lines(tmp_path):
    one = plain(rows=(ROW_A + "\t-",))
    two = plain(rows=(ROW_B + "\t-",))
    path = write(tmp_path, one + "\n" + two)
    assert read(path).column("uid").to_pylist() == ["CrDn63WjJEmrWGjqf", "CY9lJW3gh1Eje4usP6"]
    other = tsv(CONN_FIELDS[:-1] + ["x"], CONN_TYPES, [ROW_B + "\t-"])
    path = write(tmp_path, one + other, "mixed.log")
    raises_at(path, 17, match="a second #fields line differs")


def test_line_numbers_stay_right_across_blocks(tmp_path, monkeypatch):
    rows = [ROW_A.replace("CrDn63WjJEmrWGjqf", f"C{i:06d}") + "\t-" for i in range(400)]
    rows[333] = rows[333].replace("\t180\t", "\tx\t")
    path = write(tmp_path, plain(rows=rows[:333] + ["#weird comment line"] + rows[333:]))
    whole = read(write(tmp_path, plain(rows=rows[:333]), "good.log"), batch_rows=7)
    # Blocks of a few hundred bytes: dozens of them, one holding a '#' line.
    monkeypatch.setattr(zeek, "_MIN_BLOCK", 700)
    assert read(tmp_path / "good.log", batch_rows=7).equals(whole)
    raises_at(path, 8 + 333 + 2, "orig_ip_bytes", batch_rows=7)


# --- JSON --------------------------------------------------------------------------------------

JSON_A = {
    "ts": 1545403816.962094,
    "uid": "CrDn63WjJEmrWGjqf",
    "id.orig_h": "192.168.1.195",
    "id.orig_p": 41040,
    "id.resp_h": "185.244.25.235",
    "id.resp_p": 80,
    "proto": "tcp",
    "conn_state": "S0",
    "orig_pkts": 3,
    "resp_pkts": 0,
}


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_json_types_iso_times_and_sets(tmp_path):
    sets = dict(JSON_A, tunnel_parents=["Cx", "Cy"], n=1.5)
    path = write(tmp_path, jsonl(JSON_A, sets))
    table = read(path)
    assert table.column("ts").to_pylist() == [pytest.approx(1545403816.962094)] * 2
    assert table.column("tunnel_parents").to_pylist() == [None, "Cx,Cy"]
    assert table.schema.field("orig_pkts").type == pa.int64()
    assert table.schema.field("n").type == pa.float64()
    # Zeek's ISO 8601 time option.
    iso = dict(JSON_A, ts="2019-01-01T00:00:01.500000Z")
    table = read(write(tmp_path, jsonl(iso, iso), "iso.log"))
    assert table.column("ts").to_pylist() == [1546300801.5] * 2


@pytest.mark.parametrize(
    ("bad", "column", "match"),
    [
        ('{"ts": 2, "id.orig_h": "a", "id.resp_h": "b", "orig_pkts": 1', None, "not valid JSON"),
        ("[1, 2]", None, "not an object"),
        (json.dumps(dict(JSON_A, orig_pkts="three")), "orig_pkts", "a JSON string where line 1"),
        (json.dumps(dict(JSON_A, orig_pkts=2**64 - 1)), "orig_pkts", "outside int64"),
        (json.dumps(dict(JSON_A, orig_pkts=1.5)), "orig_pkts", "not a valid count"),
    ],
)
def test_bad_json_lines_name_their_line(tmp_path, bad, column, match):
    path = write(tmp_path, jsonl(JSON_A, JSON_A) + bad + "\n")
    raises_at(path, 3, column, match=match)


def test_nested_json_object_is_refused(tmp_path):
    path = write(tmp_path, jsonl(JSON_A, dict(JSON_A, extra={"a": 1})))
    raises_at(path, 2, "extra", match="nested object")
