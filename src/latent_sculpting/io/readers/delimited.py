"""Delimited flow files (CSV, TSV, ...): one header line, then one flow per line.

The separator is read from the content, not the file's name (:func:`detect_separator`): a
tab-separated file named ``.csv`` or ``.binetflow``, or a comma-separated one named ``.tsv``, is
read as what it holds. Of comma, tab, semicolon and pipe (:data:`SEPARATORS`), the one that splits
the header into the most columns wins, if the first data lines split into as many; a header that
splits under none of them is one column. pyarrow's streaming reader parses the numbers (never
Python row by row). The header is decoded once, here, for every caller: UTF-8 with or without a
byte-order mark, else cp1252 (the original CIC-IDS-2017 release writes a cp1252 dash in its
web-attack labels). Cells spelt as one of :data:`NULL_TOKENS` are missing values;
``Infinity``/``inf`` parse as infinities. A value that does not parse as the type asked for is
reported with its line, found by a second, plain pass over the file (only on that error path).
Every error about the file's structure names the separator it was read with.
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

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.readers._text import arrow_buffer, preview

__all__ = [
    "NULL_TOKENS",
    "SEPARATORS",
    "batches",
    "columns",
    "decode",
    "detect_separator",
    "header_names",
    "parse_bytes",
    "separator",
]

#: Spellings of a missing value in every text input (CSV cells, and JSON strings).
NULL_TOKENS = ("", "NaN", "nan", "NAN", "NA", "N/A", "null", "NULL", "None")

#: Separators of delimited text, by name; ties between them go to the first.
SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}

_ARROW_BAD_VALUE = re.compile(r"column #(\d+).*?invalid value '(.*)'", re.DOTALL)
_MAX_HEADER_BYTES = 1 << 20
# Data lines that must split like the header for a separator to win.
_CHECKED_LINES = 5


def decode(raw: bytes) -> str:
    """Text of raw bytes: UTF-8 (a leading BOM dropped), else cp1252, else latin-1."""
    raw = raw.removeprefix(b"\xef\xbb\xbf")
    for encoding in ("utf-8", "cp1252"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")


def separator(path: Path) -> str:
    """The separator of a delimited file (a key of :data:`SEPARATORS`), from its first lines.

    Raises
    ------
    FlowInputError
        As :func:`detect_separator`, naming the file.
    """
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    return detect_separator(head, source=path)


def detect_separator(head: bytes, *, source: object = "the request") -> str:
    """The separator of delimited text, from its first bytes (the header and a few data lines).

    The separator that splits the header line into the most columns, among those under which
    the first complete data lines split into as many (a header alone counts as agreeing); comma
    when the header is one column under every separator (so that a one-column file reads).

    Raises
    ------
    FlowInputError
        If the header is one column under every separator while it and the data lines split
        on runs of spaces into as many fields, three or more (space-aligned text such as
        Argus ``ra``'s default output): the message names the separators tried.
    """
    parts = head.split(b"\n", _CHECKED_LINES + 1)
    if len(parts) > 1 and (
        len(parts) > _CHECKED_LINES + 1 or head.endswith(b"\n") or len(head) >= 1 << 16
    ):
        parts = parts[:-1]  # what follows the last newline is more lines, or one cut short
    lines = [decode(raw).rstrip("\r") for raw in parts]
    header, data = lines[0], [line for line in lines[1:] if line.strip()]
    best, rank = ",", (False, 1)
    for sep in SEPARATORS:
        try:
            width = len(next(csv.reader([header], delimiter=sep)))
            agree = all(len(row) == width for row in csv.reader(data, delimiter=sep))
        except (csv.Error, StopIteration):
            continue
        if width > 1 and (agree, width) > rank:
            best, rank = sep, (agree, width)
    spaced = len(header.split())
    # A carriage return inside the line is old Mac line ends, not alignment: the header reader
    # refuses it with its own message.
    aligned = "\r" not in header and all(len(line.split()) == spaced for line in data)
    if rank[1] == 1 and spaced >= 3 and aligned:
        tried = ", ".join(f"{name} ({sep!r})" for sep, name in SEPARATORS.items())
        where = {"path": source} if isinstance(source, Path) else {}
        raise FlowInputError(
            f"{source}: the header line is one column under every separator tried ({tried}), "
            f"and splits on spaces into {spaced} fields ({preview(header)}): space-aligned "
            "text is not read; write the flows comma- or tab-separated (Argus: ra -c ',')",
            line=1,
            syntax=True,
            **where,
        )
    return best


def columns(path: Path, sep: str | None = None) -> list[str]:
    """Column names from the header line, as written (surrounding spaces kept).

    Parameters
    ----------
    path : Path
    sep : str, optional
        The separator; default: :func:`separator` of the file.

    Raises
    ------
    FlowInputError
        If the file has no header line, the header is absurdly long, or names a column twice
        (the message names the separator the header was read with).
    """
    sep = separator(path) if sep is None else sep
    with path.open("rb") as handle:
        line = handle.readline(_MAX_HEADER_BYTES)
    return _header(line, path, sep)


def _header(line: bytes, path: object, sep: str) -> list[str]:
    where = {"path": path} if isinstance(path, Path) else {}
    read_as = f"read as {_described(sep)}"
    if not line.strip():
        raise FlowInputError(f"{path}: empty (no header line)", line=1, **where)
    if not line.endswith(b"\n") and len(line) >= _MAX_HEADER_BYTES:
        raise FlowInputError(f"{path}: header line longer than 1 MiB", line=1, **where)
    try:
        names = next(csv.reader([decode(line).rstrip("\r\n")], delimiter=sep))
    except csv.Error as error:
        # A carriage return alone inside the line: lines must end in LF or CRLF.
        raise FlowInputError(
            f"{path}: the header line is not readable ({read_as}: {error}); lines must end in "
            "LF or CRLF",
            line=1,
            syntax=True,
            **where,
        ) from None
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise FlowInputError(
                f"{path}: column {name!r} appears twice in the header ({read_as}); remove one",
                line=1,
                column=name,
                **where,
            )
        seen.add(name)
    return names


def _described(sep: str) -> str:
    """``sep`` in words, for messages: ``tab-separated text ('\\t')``."""
    return f"{SEPARATORS.get(sep, repr(sep))}-separated text ({sep!r})"


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
    sep = separator(path)
    names = columns(path, sep)
    unknown = [c for c in types if c not in names]
    if unknown:
        raise ValueError(f"{path}: types given for columns not in the file: {unknown}")
    read = pacsv.ReadOptions(
        column_names=names, skip_rows=1, block_size=_block_size(path, batch_rows)
    )
    try:
        reader = pacsv.open_csv(
            path,
            read_options=read,
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=_convert(types),
        )
        for batch in reader:
            yield _valid_text(batch)
    except pa.ArrowInvalid as error:
        raise _explain(path, names, types, error, lambda: path.open("rb"), sep) from None


def header_names(data: bytes, *, source: str = "the request") -> list[str]:
    """The column names of a whole CSV text's header line, as :func:`parse_bytes` reads them."""
    sep = detect_separator(data[: 1 << 16], source=source)
    return _header(data.split(b"\n", 1)[0] + b"\n", source, sep)


def parse_bytes(
    data: bytes, types: Mapping[str, pa.DataType], *, source: str = "the request"
) -> pa.Table:
    """A whole CSV text (e.g. a request body) as one table, with the conventions of files."""
    sep = detect_separator(data[: 1 << 16], source=source)
    names = _header(data.split(b"\n", 1)[0] + b"\n", source, sep)
    unknown = [c for c in types if c not in names]
    if unknown:
        raise ValueError(f"{source}: types given for columns not in the header: {unknown}")
    read = pacsv.ReadOptions(column_names=names, skip_rows=1)
    try:
        # Arrow-owned memory, not a view of ``data``: see _text.arrow_buffer.
        table = pacsv.read_csv(
            pa.BufferReader(arrow_buffer(data)),
            read_options=read,
            parse_options=pacsv.ParseOptions(delimiter=sep),
            convert_options=_convert(types),
        )
    except pa.ArrowInvalid as error:
        raise _explain(source, names, types, error, lambda: io.BytesIO(data), sep) from None
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
    sep: str,
) -> FlowInputError:
    """The line and value behind a pyarrow conversion or parse error."""
    text = str(error)
    match = _ARROW_BAD_VALUE.search(text)
    if match is None:
        # Rows with the wrong number of cells, unterminated quotes, invalid UTF-8 text.
        line = re.search(r"[Rr]ow #(\d+)", text)
        where = f", near line {int(line.group(1)) + 1}" if line else ""
        return FlowInputError(
            f"{path}{where}: not readable as {_described(sep)} ({text.splitlines()[0]})",
            path=path if isinstance(path, Path) else None,
            syntax=True,
        )
    index, value = int(match.group(1)), match.group(2)
    column = names[index]
    line_no = _find_line(reopen, index, value, sep)
    where = f", line {line_no}" if line_no else ""
    wanted = types.get(column)
    kind = "a number" if wanted is not None and pa.types.is_floating(wanted) else str(wanted)
    return FlowInputError(
        f"{path}{where}, column {column.strip()!r}: {value!r} is not {kind}",
        path=path if isinstance(path, Path) else None,
        line=line_no,
        column=column.strip(),
    )


def _find_line(reopen: Callable[[], IO[bytes]], index: int, value: str, sep: str) -> int | None:
    with reopen() as handle:
        text = (decode(raw) for raw in handle)
        for line_no, row in enumerate(csv.reader(text, delimiter=sep), start=1):
            if line_no > 1 and len(row) > index and row[index] == value:
                return line_no
    return None
