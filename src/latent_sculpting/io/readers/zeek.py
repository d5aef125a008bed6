"""Zeek logs as Zeek writes them: tab-separated with a ``#`` header, or JSON lines.

This module owns the *syntax* of Zeek's ASCII writer (``#separator``, ``#set_separator``,
``#empty_field``, ``#unset_field``, ``#fields``, ``#types``; ``#open``/``#close``/``#path`` and
any other ``#`` line skipped) and of its JSON writer (one object per line, ``id.orig_h``-style
flattened keys, unset fields left out). What the columns of a ``conn.log`` mean is
:mod:`latent_sculpting.io.formats.zeek_conn`'s business.

Zeek types become Arrow types as follows; JSON values of fields Zeek's ``conn.log`` defines get the
same types (:data:`CONN_TYPES`), other JSON fields keep the type their JSON values have (number:
``int64`` when every value is whole, else ``float64``; ``true``/``false``: ``bool``; text:
``string``; an array: ``string``, its elements joined by ``,`` as the TSV writer does).

==================================== ============================================================
Zeek type                            Arrow
==================================== ============================================================
``time``, ``interval``               ``float64`` seconds (ISO 8601 times, Zeek's JSON option, too)
``count``, ``int``, ``port``         ``int64``; a ``count`` above 2**63-1 is an error, not wrapped
``double``                           ``float64``
``bool`` (``T``/``F``)               ``bool``
``addr``, ``string``, ``enum``, ...  ``string``
``set[...]``, ``vector[...]``        ``string`` as written (``a,b``)
==================================== ============================================================

The unset marker (``-``) becomes null; the empty marker (``(empty)``) becomes an empty string.
Values are otherwise kept as written (Zeek's ``\\xHH`` escapes are not undone).

Labelled variants: Stratosphere's ``conn.log.labeled`` files either declare their label columns
in ``#fields`` (CTU-SME-11: ``label``, ``detailedlabel``) or, as IoT-23's originals do, pack
``tunnel_parents   label   detailed-label`` into the last field with spaces instead of tabs, in
the header and in every row; such a packed field is split into its named columns.

Both syntaxes are read in blocks of lines through pyarrow's CSV and JSON readers, so memory stays
constant whatever the log's size, and every error names the file, the line and the column.

It is long because Zeek has two syntaxes (TSV with typed headers, JSON lines), each with its
own unset markers, types and labelled variants, read in blocks with errors that name file,
line and column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.readers import _text

__all__ = ["CONN_TYPES", "batches", "columns", "sniff"]

PathLike = str | Path

#: Zeek types of the fields a ``conn.log`` can hold (Zeek 3 to 7, with the usual packages), used
#: for JSON logs, which carry no ``#types`` line. Other JSON fields keep their JSON type.
CONN_TYPES: dict[str, str] = {
    "ts": "time",
    "uid": "string",
    "id.orig_h": "addr",
    "id.orig_p": "port",
    "id.resp_h": "addr",
    "id.resp_p": "port",
    "proto": "enum",
    "service": "string",
    "duration": "interval",
    "orig_bytes": "count",
    "resp_bytes": "count",
    "conn_state": "string",
    "local_orig": "bool",
    "local_resp": "bool",
    "missed_bytes": "count",
    "history": "string",
    "orig_pkts": "count",
    "orig_ip_bytes": "count",
    "resp_pkts": "count",
    "resp_ip_bytes": "count",
    "tunnel_parents": "set[string]",
    "ip_proto": "count",
    "orig_l2_addr": "string",
    "resp_l2_addr": "string",
    "vlan": "int",
    "inner_vlan": "int",
    "community_id": "string",
    "speculative_service": "string",
    "orig_cc": "string",
    "resp_cc": "string",
    "label": "string",
    "detailed-label": "string",
    "detailedlabel": "string",
}

_INT64_MAX = 2**63 - 1
# Bytes of text read at a time per requested row: a conn.log line is 150-300 bytes.
_BYTES_PER_ROW = 384
_MIN_BLOCK = 1 << 20
_MAX_BLOCK = 64 << 20
_HEADER_LIMIT = 1 << 20
_ESCAPE_RE = re.compile(r"\\x([0-9a-fA-F]{2})")
# A JSON number too long for int64 that pyarrow would silently turn into null.
_BIG_NUMBER = r"[:\[,]\s*-?\d{19}"
_BIG_NUMBER_RE = re.compile(_BIG_NUMBER.encode())


# ---------------------------------------------------------------------------------------------
# Sniffing


def sniff(head: bytes) -> bool:
    """Whether the first bytes of a file are a Zeek log.

    A TSV log starts with Zeek's ``#separator`` line. A JSON log's first line is an object
    holding ``ts``, ``id.orig_h`` and ``id.resp_h``: the time and Zeek's flattened connection
    id, which every connection-oriented Zeek log (conn, dns, http, ssl, ...) has and other JSON
    lines (NetFlow collectors' or Suricata's ``src_ip``, nested ``{"id": {...}}`` objects) do
    not. Whether the log is a ``conn.log`` is decided later by its columns.
    """
    text = _strip_lead(head)
    if text.startswith(b"#separator"):
        return True
    if not text.startswith(b"{"):
        return False
    first = text.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
    except ValueError:
        # A first line longer than the sniffed head: look for the keys in what there is.
        return all(b'"%s"' % key in first for key in (b"ts", b"id.orig_h", b"id.resp_h"))
    return isinstance(record, dict) and {"ts", "id.orig_h", "id.resp_h"} <= record.keys()


def _strip_lead(head: bytes) -> bytes:
    # A UTF-8 byte-order mark, or whitespace before the first '#' (Slips' copy of a real log
    # starts with a stray tab), is not part of the log.
    return head.removeprefix(b"\xef\xbb\xbf").lstrip(b" \t\r\n")


def _is_tsv(path: Path) -> bool:
    """True for Zeek's TSV, False for its JSON lines; anything else is an error."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not sniff(head):
        raise FlowInputError(
            f"{path}, line 1: not a Zeek log (neither a '#separator' header nor JSON lines "
            "with Zeek's 'ts', 'id.orig_h' and 'id.resp_h' keys)",
            path=path,
            line=1,
        )
    return _strip_lead(head).startswith(b"#")


# ---------------------------------------------------------------------------------------------
# Public API


def columns(path: PathLike) -> list[str]:
    """Column names of a Zeek log: its ``#fields`` (packed label fields split), or, for JSON,
    every key that appears in the file, in order of first appearance.

    Raises
    ------
    FlowInputError
        If the header is malformed (missing ``#fields``/``#types``, lengths differ) or a JSON line
        does not parse.
    """
    path = Path(path)
    if _is_tsv(path):
        return list(_read_header(path).names)
    return list(_json_schema(path, _block_bytes(65_536)).names)


def batches(
    path: PathLike, batch_rows: int = 65_536, types: Mapping[str, pa.DataType] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a Zeek log as record batches of ``batch_rows`` rows (the last one shorter).

    Parameters
    ----------
    path : path
        A Zeek TSV or JSON-lines log.
    batch_rows : int, default 65536
    types : mapping of str to pyarrow.DataType, optional
        Column name -> wanted type, cast after the Zeek types are applied.

    Raises
    ------
    FlowInputError
        Naming the file, the 1-based line and the column: a row with the wrong number of
        fields, a value that does not parse as its declared type (or does not cast to the wanted
        one), a ``count`` above int64, a line that is not a JSON object.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    path = Path(path)
    block = _block_bytes(batch_rows)
    tables = _tsv_tables(path, block) if _is_tsv(path) else _json_tables(path, block)
    wanted = dict(types or {})
    cast = (_text.cast_wanted(path, table, line_of, wanted) for table, line_of in tables)
    yield from _text.rebatch(cast, batch_rows)


def _block_bytes(batch_rows: int) -> int:
    return int(min(_MAX_BLOCK, max(_MIN_BLOCK, batch_rows * _BYTES_PER_ROW)))


# ---------------------------------------------------------------------------------------------
# The TSV header


@dataclass(frozen=True)
class _Header:
    separator: str
    set_separator: str
    empty_field: str
    unset_field: str
    raw_fields: tuple[str, ...]  # as in #fields; a packed field holds several names
    raw_types: tuple[str, ...]  # as in #types
    names: tuple[str, ...]  # packed fields split
    types: tuple[str, ...]  # one per name
    packed: dict  # raw index -> number of names it holds
    data_offset: int  # byte offset of the first data line
    data_line: int  # its 1-based line number


def _unescape(value: str) -> str:
    return _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), value)


def _read_header(path: Path) -> _Header:
    with path.open("rb") as handle:
        head = handle.read(_HEADER_LIMIT)
    lead = len(head) - len(_strip_lead(head))
    if not head[lead:].startswith(b"#separator"):
        raise FlowInputError(
            f"{path}, line 1: not a Zeek TSV log (it must start with '#separator')",
            path=path,
            line=1,
        )
    meta: dict[str, str] = {}
    meta_lines: dict[str, int] = {}
    offset, line = lead, 1
    separator = None
    while offset < len(head) and head[offset : offset + 1] == b"#":
        end = head.find(b"\n", offset)
        if end < 0:
            raise _text.error(
                path,
                f"header line longer than {_HEADER_LIMIT} bytes or the file ends inside the header",
                line=line,
            )
        text = head[offset:end].rstrip(b"\r").decode("utf-8", errors="replace")
        if separator is None:
            # '#separator \x09': the one header line whose key and value a space separates.
            separator = _unescape(text[len("#separator") :].strip(" "))
            if len(separator.encode()) != 1:
                raise _text.error(
                    path,
                    f"separator {separator!r} is not one byte; only "
                    "single-byte separators are supported",
                    line=line,
                )
        else:
            key, _, value = text.partition(separator)
            meta.setdefault(key, value)
            meta_lines.setdefault(key, line)
        offset, line = end + 1, line + 1
    for key in ("#fields", "#types"):
        if key not in meta:
            raise _text.error(
                path,
                f"the header has no {key} line; a Zeek log names its "
                "columns in '#fields' and their types in '#types'",
                line=line,
            )
    raw_fields = tuple(meta["#fields"].split(separator))
    raw_types = tuple(meta["#types"].split(separator))
    if len(raw_fields) != len(raw_types):
        raise _text.error(
            path,
            f"#types lists {len(raw_types)} types for {len(raw_fields)} #fields",
            line=meta_lines["#types"],
        )
    names: list[str] = []
    types: list[str] = []
    packed: dict[int, int] = {}
    for index, (field, ztype) in enumerate(zip(raw_fields, raw_types, strict=True)):
        sub_names, sub_types = field.split(), ztype.split()
        if len(sub_names) != len(sub_types):
            raise _text.error(
                path,
                f"field {field!r} packs "
                f"{len(sub_names)} names but its type {ztype!r} {len(sub_types)} types",
                line=meta_lines["#types"],
                column=field,
            )
        if len(sub_names) > 1:
            packed[index] = len(sub_names)
        names.extend(sub_names)
        types.extend(sub_types)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _text.error(
                path,
                f"#fields names {name!r} twice",
                line=meta_lines["#fields"],
                column=name,
            )
        seen.add(name)
    return _Header(
        separator=separator,
        set_separator=_unescape(meta.get("#set_separator", ",")),
        empty_field=_unescape(meta.get("#empty_field", "(empty)")),
        unset_field=_unescape(meta.get("#unset_field", "-")),
        raw_fields=raw_fields,
        raw_types=raw_types,
        names=tuple(names),
        types=tuple(types),
        packed=packed,
        data_offset=offset,
        data_line=line,
    )


# ---------------------------------------------------------------------------------------------
# TSV


def _tsv_tables(path: Path, block_bytes: int) -> Iterator[tuple[pa.Table, Callable]]:
    header = _read_header(path)
    for block in _text.blocks(path, header.data_offset, header.data_line, block_bytes):
        _check_inner_header(path, header, block)
        if not block.data:
            continue
        raw = _parse_tsv(path, header, block)
        arrays, names = [], []
        for index, field in enumerate(header.raw_fields):
            column = raw.column(index).combine_chunks()
            if index in header.packed:
                parts = _split_packed(path, header, index, column, block)
                sub_names = field.split()
            else:
                parts, sub_names = [column], [field]
            for name, values in zip(sub_names, parts, strict=True):
                ztype = header.types[header.names.index(name)]
                arrays.append(_convert_text(path, header, name, ztype, values, block))
                names.append(name)
        yield pa.Table.from_arrays(arrays, names=names), block.line_of


def _check_inner_header(path: Path, header: _Header, block: _text.Block) -> None:
    # A '#fields' or '#types' line inside the data (logs concatenated with cat) must repeat
    # the header's; other '#' lines (#close, #open of the next part) are skipped.
    for number, text in block.removed:
        line = text.rstrip(b"\r").decode("utf-8", errors="replace")
        key, _, value = line.partition(header.separator)
        expected = {
            "#fields": header.separator.join(header.raw_fields),
            "#types": header.separator.join(header.raw_types),
        }.get(key)
        if expected is not None and value != expected:
            raise _text.error(
                path,
                f"a second {key} line differs from the header's; "
                "split logs with different columns into separate files",
                line=number,
            )


def _parse_tsv(path: Path, header: _Header, block: _text.Block) -> pa.Table:
    # No invalid_row_handler and no Python file object: Arrow may drop either on one of its
    # threads after the read returned, which aborts an exiting process (_text.arrow_buffer). A
    # row of the wrong width fails the read, and is then found here.
    fields = list(header.raw_fields)
    try:
        table = pacsv.read_csv(
            pa.BufferReader(_text.arrow_buffer(block.data)),
            # pyarrow parses a block of lines fastest in pieces of about a megabyte.
            read_options=pacsv.ReadOptions(column_names=fields, block_size=1 << 20),
            parse_options=pacsv.ParseOptions(
                delimiter=header.separator,
                quote_char=False,
                escape_char=False,
                double_quote=False,
                newlines_in_values=False,
                ignore_empty_lines=False,
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in fields},
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except _text.ARROW_ERRORS as error:
        separator = header.separator.encode()
        row = _text.row_of_fields(block, separator, len(fields))
        if row is not None:
            text = block.data.split(b"\n")[row].rstrip(b"\r")
            count = text.count(separator) + 1
            shown = _text.preview(text.decode("utf-8", errors="replace"))
            raise _text.error(
                path,
                f"{count} fields where #fields names {len(fields)} (row {shown})",
                line=block.line_of(row),
            ) from None
        line = _text.first_undecodable_line(block)
        where = f", line {line}" if line is not None else ""
        raise FlowInputError(
            f"{path}{where}: cannot read the log ({error})", path=path, line=line
        ) from None
    return table


def _split_packed(
    path: Path, header: _Header, index: int, column: pa.Array, block: _text.Block
) -> list[pa.Array]:
    count = header.packed[index]
    parts = pc.split_pattern_regex(column, pattern=r"\s+", max_splits=count - 1)
    lengths = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    bad = np.flatnonzero(lengths != count)
    if bad.size:
        row = int(bad[0])
        line = block.line_of(row)
        raise _text.error(
            path,
            f"{_text.preview(column[row].as_py())} holds {lengths[row]} space-separated values "
            f"where the header packs {count}",
            line=line,
            column=header.raw_fields[index],
        )
    return [pc.list_element(parts, position) for position in range(count)]


def _kind(ztype: str) -> str:
    if ztype in ("time", "interval"):
        return "time"
    if ztype == "double":
        return "float"
    if ztype == "count":
        return "count"
    if ztype in ("int", "port"):
        return "int"
    if ztype == "bool":
        return "bool"
    return "string"


def _convert_text(
    path: Path, header: _Header, name: str, ztype: str, values: pa.Array, block: _text.Block
) -> pa.Array:
    """One column of Zeek text to its Arrow type; unset -> null, ``(empty)`` -> ''."""
    unset = pc.equal(values, header.unset_field)
    kind = _kind(ztype)
    if kind == "string":
        text = pc.if_else(pc.equal(values, header.empty_field), "", values)
        return pc.if_else(unset, pa.scalar(None, pa.string()), text)
    present = pc.if_else(unset, pa.scalar(None, pa.string()), values)
    return _convert_typed(path, name, ztype, present, block.line_of)


def _convert_typed(
    path: Path, name: str, ztype: str, values: pa.Array, line_of: Callable[[int], int]
) -> pa.Array:
    """Text (or, from JSON, already typed) values of Zeek type ``ztype`` to the Arrow type."""
    kind = _kind(ztype)
    if kind == "string":
        return values if pa.types.is_string(values.type) else values.cast(pa.string())
    if kind == "bool":
        if pa.types.is_boolean(values.type):
            return values
        if pa.types.is_null(values.type):
            return values.cast(pa.bool_())
        ok = pc.or_(pc.is_null(values), pc.is_in(values, pa.array(["T", "F"])))
        _text.fail_where(path, name, ztype, values, ok, line_of, "is not T or F")
        return pc.equal(values, "T")
    if kind == "time":
        return _to_seconds(path, name, ztype, values, line_of)
    if kind == "float":
        return _text.cast(path, name, values, pa.float64(), line_of, expected=ztype)
    if kind == "count" and pa.types.is_string(values.type):
        wide = _text.cast(path, name, values, pa.uint64(), line_of, expected=ztype)
        ok = pc.fill_null(pc.less_equal(wide, pa.scalar(_INT64_MAX, pa.uint64())), True)
        _text.fail_where(path, name, ztype, values, ok, line_of, "is above 2**63-1")
        return wide.cast(pa.int64())
    out = _text.cast(path, name, values, pa.int64(), line_of, expected=ztype)
    if kind == "count":
        ok = pc.fill_null(pc.greater_equal(out, 0), True)
        _text.fail_where(path, name, ztype, values, ok, line_of, "is negative")
    return out


def _to_seconds(
    path: Path, name: str, ztype: str, values: pa.Array, line_of: Callable[[int], int]
) -> pa.Array:
    if pa.types.is_timestamp(values.type):
        micros = values.cast(pa.timestamp("us", tz=values.type.tz)).cast(pa.int64())
        return pc.divide(micros.cast(pa.float64()), 1e6)
    if not pa.types.is_string(values.type):
        return _text.cast(path, name, values, pa.float64(), line_of, expected=ztype)
    try:
        return values.cast(pa.float64())
    except _text.ARROW_ERRORS:
        pass
    # Zeek's ISO 8601 time option (LogAscii::json_timestamps / use_iso8601).
    try:
        stamps = values.cast(pa.timestamp("us", tz="UTC"))
    except _text.ARROW_ERRORS:
        return _text.cast(path, name, values, pa.float64(), line_of, expected=ztype)
    return _to_seconds(path, name, ztype, stamps, line_of)


# ---------------------------------------------------------------------------------------------
# JSON lines


def _json_read(path: Path, block: _text.Block, schema: pa.Schema | None) -> pa.Table:
    options = pajson.ParseOptions(
        explicit_schema=schema,
        unexpected_field_behavior="infer" if schema is None else "error",
        newlines_in_values=False,
    )
    # pyarrow parses fastest in pieces of about a megabyte (one line must fit in a piece).
    read = pajson.ReadOptions(block_size=max(1 << 20, _longest_line(block.data) + 1))
    try:
        source = pa.BufferReader(_text.arrow_buffer(block.data))  # not a Python object: see there
        return pajson.read_json(source, read_options=read, parse_options=options)
    except _text.ARROW_ERRORS as error:
        raise _json_error(path, block, str(error)) from None


def _json_error(path: Path, block: _text.Block, detail: str) -> FlowInputError:
    """Find the line behind a failed block read (the error path only) and say what is wrong."""
    kinds: dict[str, tuple[str, int]] = {}
    for row, text in enumerate(block.data.split(b"\n")[:-1]):
        line = block.line_of(row)
        try:
            record = json.loads(text)
        except ValueError as error:
            return _text.error(path, f"not valid JSON ({error})", line=line)
        if not isinstance(record, dict):
            return _text.error(path, f"a JSON {type(record).__name__}, not an object", line=line)
        for key, value in record.items():
            kind = _json_kind(value)
            if kind == "null":
                continue
            first = kinds.setdefault(key, (kind, line))
            if first[0] != kind and {first[0], kind} != {"int", "float"}:
                return _text.error(
                    path,
                    f"a JSON {kind} where line {first[1]} has a {first[0]}",
                    line=line,
                    column=key,
                )
    return FlowInputError(
        f"{path}, lines from {block.first_line}: cannot read JSON ({detail})",
        path=path,
        line=block.first_line,
    )


def _first_line_where(block: _text.Block, predicate: Callable[[dict], bool]) -> int:
    for row, text in enumerate(block.data.split(b"\n")[:-1]):
        if predicate(json.loads(text)):
            return block.line_of(row)
    return block.first_line


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _longest_line(data: bytes) -> int:
    ends = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == ord("\n"))
    return int(np.diff(ends, prepend=-1).max()) if ends.size else len(data)


def _check_big_numbers(path: Path, block: _text.Block) -> None:
    # pyarrow reads a JSON integer beyond int64 as null without a word: refuse it instead.
    # Arrow's regex engine (RE2) scans a block several times faster than Python's re.
    whole = pa.array([block.data], pa.large_binary())
    if not pc.match_substring_regex(whole, pattern=_BIG_NUMBER).to_pylist()[0]:
        return
    for row, text in enumerate(block.data.split(b"\n")[:-1]):
        if not _BIG_NUMBER_RE.search(text):
            continue
        for key, value in json.loads(text).items():
            if isinstance(value, int) and not isinstance(value, bool):
                if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
                    line = block.line_of(row)
                    raise _text.error(
                        path,
                        f"{value} is outside int64",
                        line=line,
                        column=key,
                    )


def _json_schema(path: Path, block_bytes: int) -> pa.Schema:
    """Every key of a JSON log with one Arrow type each (the first pass)."""
    fields: dict[str, pa.DataType] = {}
    first_line: dict[str, int] = {}
    for block in _text.blocks(path, 0, 1, block_bytes):
        if not block.data:
            continue
        _check_big_numbers(path, block)
        for field in _json_read(path, block, None).schema:
            if pa.types.is_struct(field.type):
                line = _first_line_where(block, lambda r, k=field.name: isinstance(r.get(k), dict))
                raise _text.error(
                    path,
                    "a nested object; Zeek writes "
                    "record fields flattened ('id.orig_h'), not nested",
                    line=line,
                    column=field.name,
                )
            if field.name not in fields or pa.types.is_null(fields[field.name]):
                fields[field.name] = field.type
                first_line.setdefault(field.name, block.first_line)
                continue
            known = fields[field.name]
            if pa.types.is_null(field.type) or known == field.type:
                continue
            if pa.types.is_integer(known) and pa.types.is_floating(field.type):
                fields[field.name] = field.type
            elif not (pa.types.is_floating(known) and pa.types.is_integer(field.type)):
                raise FlowInputError(
                    f"{path}, lines from {block.first_line}, column {field.name!r}: values of "
                    f"type {field.type} where the lines from {first_line[field.name]} hold "
                    f"{known}",
                    path=path,
                    line=block.first_line,
                    column=field.name,
                )
    if not fields:
        raise FlowInputError(f"{path}: the JSON log holds no record", path=path)
    return pa.schema(list(fields.items()))


def _json_tables(path: Path, block_bytes: int) -> Iterator[tuple[pa.Table, Callable]]:
    schema = _json_schema(path, block_bytes)
    for block in _text.blocks(path, 0, 1, block_bytes):
        if not block.data:
            continue
        table = _json_read(path, block, schema)
        arrays = []
        for field in schema:
            values = table.column(field.name).combine_chunks()
            arrays.append(_convert_json(path, field.name, values, block.line_of))
        yield pa.Table.from_arrays(arrays, names=schema.names), block.line_of


def _convert_json(
    path: Path, name: str, values: pa.Array, line_of: Callable[[int], int]
) -> pa.Array:
    if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
        text = pc.binary_join(values.cast(pa.list_(pa.string())), ",")
        values = text
    ztype = CONN_TYPES.get(name)
    if ztype is None:
        if pa.types.is_null(values.type):
            return values.cast(pa.string())
        if pa.types.is_timestamp(values.type):
            return _to_seconds(path, name, "time", values, line_of)
        return values
    if pa.types.is_null(values.type):
        return values.cast(_ARROW_OF_KIND[_kind(ztype)])
    return _convert_typed(path, name, ztype, values, line_of)


_ARROW_OF_KIND = {
    "time": pa.float64(),
    "float": pa.float64(),
    "count": pa.int64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
