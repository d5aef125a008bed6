"""Blocks of lines of a text file, and conversions whose errors name the file, line and column.

The text readers read a file a block of whole lines at a time (constant memory, pyarrow's speed),
remember which line each row came from, and on a value that does not convert find the first
offending row, on the error path only, to name its line.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from latent_sculpting.errors import FlowInputError

ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError)
# A line that starts with '#' or is blank, after the first (one regex scan: several times faster
# than a search for each).
_SPECIAL_LINE = re.compile(rb"\n(?:#|\r?\n)")


# ---------------------------------------------------------------------------------------------
# Blocks of lines


@dataclass
class Block:
    """Whole lines of a file, with where each row came from."""

    data: bytes  # whole lines, '#' and blank lines removed
    first_line: int  # 1-based line number of the block's first line
    lines: np.ndarray | None  # line number of each data row, when some lines were removed
    removed: list[tuple[int, bytes]]  # the '#' lines removed, with their line numbers

    def line_of(self, row: int) -> int:
        """1-based line number of the block's ``row``-th data row."""
        return int(self.lines[row]) if self.lines is not None else self.first_line + row


def blocks(path: Path, offset: int, first_line: int, block_bytes: int) -> Iterator[Block]:
    """Whole lines of ``path`` from ``offset``, about ``block_bytes`` at a time."""
    line = first_line
    rest = b""
    with path.open("rb") as handle:
        handle.seek(offset)
        while True:
            chunk = handle.read(block_bytes)
            data = rest + chunk
            if not chunk:
                if data:
                    yield make_block(data + b"\n", line)
                return
            cut = data.rfind(b"\n")
            if cut < 0:
                rest = data
                continue
            rest = data[cut + 1 :]
            data = data[: cut + 1]
            yield make_block(data, line)
            line += data.count(b"\n")


def make_block(data: bytes, first_line: int) -> Block:
    """A block of ``data`` (whole lines) with lines starting with ``#`` and blank lines taken out
    of the rows and kept aside (``removed``) for the reader to check."""
    if not (data.startswith((b"#", b"\n", b"\r\n")) or _SPECIAL_LINE.search(data)):
        return Block(data, first_line, None, [])
    # Rare: header lines of a concatenated log, '#close', blank lines. Filter them in Python
    # and remember where each remaining row came from.
    kept, numbers, removed = [], [], []
    for index, text in enumerate(data.split(b"\n")[:-1]):
        number = first_line + index
        if text.startswith(b"#"):
            removed.append((number, text))
        elif text.strip():
            kept.append(text)
            numbers.append(number)
    body = b"\n".join(kept) + b"\n" if kept else b""
    return Block(body, first_line, np.asarray(numbers, dtype=np.int64), removed)


def arrow_buffer(data: bytes) -> pa.Buffer:
    """``data`` copied into memory that Arrow owns, to hand to an Arrow reader.

    Arrow's threaded readers drop their inputs and options on their own threads, sometimes after
    the read has returned. Whatever refers to a Python object (a ``BytesIO``, a buffer over
    ``bytes``, a Python callback such as ``invalid_row_handler``) must take the GIL to be
    dropped, and a thread that tries while the interpreter exits is ended there, inside a C++
    destructor: the process aborts with "terminate called without an active exception" (exit
    134), after the error message, about once in 40-130 runs of ``sculpt score`` on a bad Zeek
    log under load (a core dump showed the CSV reader's invalid-row handler released on an
    Arrow pool thread during ``Py_FinalizeEx``). Buffers from here hold no Python object; the
    copy costs a memcpy beside a parse.
    """
    sink = pa.BufferOutputStream()
    sink.write(data)
    return sink.getvalue()


def row_of_fields(block: Block, separator: bytes, expected: int) -> int | None:
    """Index of the block's first row that does not hold ``expected`` fields, when fields are
    split at ``separator`` with no quoting (Zeek logs), or None."""
    for index, text in enumerate(block.data.split(b"\n")[:-1]):
        if text.rstrip(b"\r").count(separator) + 1 != expected:
            return index
    return None


def first_undecodable_line(block: Block) -> int | None:
    """Line number of the block's first row that is not UTF-8, or None."""
    for index, text in enumerate(block.data.split(b"\n")):
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            return block.line_of(index)
    return None


def error(
    path: Path, what: str, *, line: int | None = None, column: str | None = None
) -> FlowInputError:
    """A FlowInputError whose message starts with the file, the line and the column."""
    where = str(path)
    if line is not None:
        where += f", line {line}"
    if column is not None:
        where += f", column {column!r}"
    return FlowInputError(f"{where}: {what}", path=path, line=line, column=column)


def preview(text: str, limit: int = 120) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def cast(
    path: Path,
    name: str,
    values: pa.Array,
    target: pa.DataType,
    line_of: Callable[[int], int],
    *,
    expected: str | None = None,
) -> pa.Array:
    """``values`` of column ``name`` cast to ``target``; on failure, an error naming the line of
    the first value that does not convert (as a valid ``expected``, when given)."""
    try:
        return values.cast(target)
    except ARROW_ERRORS:
        pass
    row = first_failing(values, target)
    what = f"is not a valid {expected}" if expected else f"does not convert to {target}"
    raise error(path, f"{preview(str(values[row].as_py()))} {what}", line=line_of(row), column=name)


def first_failing(values: pa.Array, target: pa.DataType) -> int:
    """Index of the first value that does not cast, by bisection (the error path only)."""
    lo, hi = 0, len(values)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            values.slice(lo, mid - lo).cast(target)
            lo = mid
        except ARROW_ERRORS:
            hi = mid
    return lo


def fail_where(
    path: Path,
    name: str,
    expected: str,
    values: pa.Array,
    ok: pa.Array,
    line_of: Callable[[int], int],
    what: str,
) -> None:
    """Raise an error naming the first row where ``ok`` is false: its value ``what``."""
    bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
    if bad.size:
        row = int(bad[0])
        line = line_of(row)
        raise error(
            path,
            f"{preview(str(values[row].as_py()))} {what} (type {expected})",
            line=line,
            column=name,
        )


# ---------------------------------------------------------------------------------------------
# Batches of the wanted size and types


def rebatch(tables: Iterable[pa.Table], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of exactly ``batch_rows`` rows (the last one shorter) from tables of any
    length; holds at most one table and one batch in memory."""
    pending: list[pa.Table] = []
    rows = 0
    for table in tables:
        if table.num_rows == 0:
            continue
        pending.append(table)
        rows += table.num_rows
        while rows >= batch_rows:
            whole = pa.concat_tables(pending)
            yield from whole.slice(0, batch_rows).combine_chunks().to_batches()
            rest = whole.slice(batch_rows)
            pending, rows = ([rest] if rest.num_rows else []), rest.num_rows
    if rows:
        yield from pa.concat_tables(pending).combine_chunks().to_batches()


def cast_wanted(
    path: Path, table: pa.Table, line_of: Callable[[int], int], wanted: Mapping[str, pa.DataType]
) -> pa.Table:
    """``table`` with each column named in ``wanted`` cast to its type."""
    for name, target in wanted.items():
        index = table.schema.get_field_index(name)
        if index < 0 or table.schema.field(index).type == target:
            continue
        values = table.column(index).combine_chunks()
        table = table.set_column(index, name, cast(path, name, values, target, line_of))
    return table
