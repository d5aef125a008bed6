"""Zeek's JSON-lines syntax (its JSON writer): one object per line with flattened keys, read in
blocks by pyarrow's JSON reader after a first pass that settles every key's type. See
:mod:`latent_sculpting.io.readers.zeek`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.readers import _text
from latent_sculpting.io.readers._zeek_types import (
    ARROW_OF_KIND,
    CONN_TYPES,
    INT64_MAX,
    convert_typed,
    kind_of,
    to_seconds,
)

__all__ = ["json_schema", "json_tables"]

# A JSON number too long for int64 that pyarrow would silently turn into null.
_BIG_NUMBER = r"[:\[,]\s*-?\d{19}"
_BIG_NUMBER_RE = re.compile(_BIG_NUMBER.encode())


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
                if not -INT64_MAX - 1 <= value <= INT64_MAX:
                    line = block.line_of(row)
                    raise _text.error(
                        path,
                        f"{value} is outside int64",
                        line=line,
                        column=key,
                    )


def json_schema(path: Path, block_bytes: int) -> pa.Schema:
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


def json_tables(path: Path, block_bytes: int) -> Iterator[tuple[pa.Table, Callable]]:
    """The log in blocks of about ``block_bytes``: each block's table, a column per key of the
    whole log (Zeek-typed for ``conn.log`` fields), and its row -> line function."""
    schema = json_schema(path, block_bytes)
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
            return to_seconds(path, name, "time", values, line_of)
        return values
    if pa.types.is_null(values.type):
        return values.cast(ARROW_OF_KIND[kind_of(ztype)])
    return convert_typed(path, name, ztype, values, line_of)
