"""Comma-separated flow files: one header line, then one flow per line.

pyarrow's streaming reader parses the numbers (never Python row by row). The header is decoded
once, here, for every caller: UTF-8 with or without a byte-order mark, else cp1252 (the original
CIC-IDS-2017 release writes a cp1252 dash in its web-attack labels). Cells spelt as one of
:data:`NULL_TOKENS` are missing values; ``Infinity``/``inf`` parse as infinities. A value that
does not parse as the type asked for is reported with its line, found by a second, plain pass
over the file (only on that error path).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ..errors import FlowInputError
from ._text import arrow_buffer

__all__ = ["NULL_TOKENS", "batches", "columns", "decode", "header_names", "parse_bytes"]

#: Spellings of a missing value in every text input (CSV cells, and JSON strings).
NULL_TOKENS = ("", "NaN", "nan", "NAN", "NA", "N/A", "null", "NULL", "None")

_ARROW_BAD_VALUE = re.compile(r"column #(\d+).*?invalid value '(.*)'", re.DOTALL)
_MAX_HEADER_BYTES = 1 << 20


def decode(raw: bytes) -> str:
    """Text of raw bytes: UTF-8 (a leading BOM dropped), else cp1252, else latin-1."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def columns(path: Path) -> list[str]:
    """Column names from the header line, as written (surrounding spaces kept).

    Raises
    ------
    FlowInputError
        If the file has no header line, the header is absurdly long, or names a column twice.
    """
    with path.open("rb") as handle:
        line = handle.readline(_MAX_HEADER_BYTES)
    return _header(line, path)


def _header(line: bytes, path: object) -> list[str]:
    where = {"path": path} if isinstance(path, Path) else {}
    if not line.strip():
        raise FlowInputError(f"{path}: empty (no header line)", line=1, **where)
    if not line.endswith(b"\n") and len(line) >= _MAX_HEADER_BYTES:
        raise FlowInputError(f"{path}: header line longer than 1 MiB", line=1, **where)
    try:
        names = next(csv.reader([decode(line).rstrip("\r\n")]))
    except csv.Error as error:
        # A carriage return alone inside the line: lines must end in LF or CRLF.
        raise FlowInputError(
            f"{path}: the header line is not CSV ({error}); lines must end in LF or CRLF",
            line=1,
            syntax=True,
            **where,
        ) from None
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise FlowInputError(
                f"{path}: column {name!r} appears twice in the header; remove one",
                line=1,
                column=name,
                **where,
            )
        seen.add(name)
    return names


def _block_size(path: Path, batch_rows: int) -> int:
    """A pyarrow block of about ``batch_rows`` rows, from the mean length of the first lines."""
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    bytes_per_row = max(len(head) / max(head.count(b"\n"), 1), 16)
    return int(min(max(bytes_per_row * batch_rows, 1 << 16), 1 << 30))


def batches(
    path: Path, batch_rows: int, types: Mapping[str, pa.DataType]
) -> Iterator[pa.RecordBatch]:
    """Record batches of the file; columns named in ``types`` are converted to those types."""
    names = columns(path)
    unknown = [c for c in types if c not in names]
    if unknown:
        raise ValueError(f"{path}: types given for columns not in the file: {unknown}")
    read = pacsv.ReadOptions(
        column_names=names, skip_rows=1, block_size=_block_size(path, batch_rows)
    )
    try:
        reader = pacsv.open_csv(path, read_options=read, convert_options=_convert(types))
        for batch in reader:
            yield _valid_text(batch)
    except pa.ArrowInvalid as error:
        raise _explain(path, names, types, error, lambda: path.open("rb")) from None


def header_names(data: bytes, *, source: str = "the request") -> list[str]:
    """The column names of a whole CSV text's header line, as :func:`parse_bytes` reads them."""
    return _header(data.split(b"\n", 1)[0] + b"\n", source)


def parse_bytes(
    data: bytes, types: Mapping[str, pa.DataType], *, source: str = "the request"
) -> pa.Table:
    """A whole CSV text (e.g. a request body) as one table, with the conventions of files."""
    names = header_names(data, source=source)
    unknown = [c for c in types if c not in names]
    if unknown:
        raise ValueError(f"{source}: types given for columns not in the header: {unknown}")
    read = pacsv.ReadOptions(column_names=names, skip_rows=1)
    try:
        # Arrow-owned memory, not a view of ``data``: see _text.arrow_buffer.
        table = pacsv.read_csv(
            pa.BufferReader(arrow_buffer(data)), read_options=read, convert_options=_convert(types)
        )
    except pa.ArrowInvalid as error:
        raise _explain(source, names, types, error, lambda: io.BytesIO(data)) from None
    if data.isascii():
        # ASCII text is valid UTF-8: no cell can need the cp1252 reading, and checking every
        # text column cost a 1,024-flow request body a tenth of its parse.
        return table
    return pa.Table.from_batches([_valid_text(b) for b in table.to_batches()], table.schema)


def _convert(types: Mapping[str, pa.DataType]) -> pacsv.ConvertOptions:
    return pacsv.ConvertOptions(
        column_types=dict(types),
        null_values=list(NULL_TOKENS),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        # Validated per column below, so that a cp1252 cell deep in the file is decoded rather
        # than failing the whole read.
        check_utf8=False,
    )


def _valid_text(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with every text column valid UTF-8 (cells that are not are read as cp1252)."""
    arrays = list(batch.columns)
    for j, array in enumerate(arrays):
        if not pa.types.is_string(array.type):
            continue
        try:
            array.validate(full=True)
        except pa.ArrowInvalid:
            encoded = pc.dictionary_encode(array.view(pa.binary()))
            text = [None if v is None else decode(v) for v in encoded.dictionary.to_pylist()]
            arrays[j] = pc.take(pa.array(text, pa.string()), encoded.indices)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _explain(
    path: object,
    names: list[str],
    types: Mapping[str, pa.DataType],
    error: Exception,
    reopen: Callable[[], IO[bytes]],
) -> FlowInputError:
    """The line and value behind a pyarrow conversion or parse error."""
    text = str(error)
    match = _ARROW_BAD_VALUE.search(text)
    if match is None:
        # Rows with the wrong number of cells, unterminated quotes, invalid UTF-8 text.
        line = re.search(r"[Rr]ow #(\d+)", text)
        where = f", near line {int(line.group(1)) + 1}" if line else ""
        return FlowInputError(
            f"{path}{where}: not readable CSV ({text.splitlines()[0]})",
            path=path if isinstance(path, Path) else None,
            syntax=True,
        )
    index, value = int(match.group(1)), match.group(2)
    column = names[index]
    line_no = _find_line(reopen, index, value)
    where = f", line {line_no}" if line_no else ""
    wanted = types.get(column)
    kind = "a number" if wanted is not None and pa.types.is_floating(wanted) else str(wanted)
    return FlowInputError(
        f"{path}{where}, column {column.strip()!r}: {value!r} is not {kind}",
        path=path if isinstance(path, Path) else None,
        line=line_no,
        column=column.strip(),
    )


def _find_line(reopen: Callable[[], IO[bytes]], index: int, value: str) -> int | None:
    with reopen() as handle:
        text = (decode(raw) for raw in handle)
        for line_no, row in enumerate(csv.reader(text), start=1):
            if line_no > 1 and len(row) > index and row[index] == value:
                return line_no
    return None
