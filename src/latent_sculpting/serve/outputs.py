"""Writing results: complete or absent, never half-written, never over an input.

Every file the package writes (scored flows, model files, results, reports) goes to a
temporary name in the destination folder and is renamed into place once complete; an error,
Ctrl-C or SIGTERM deletes the temporary file. :func:`check_output` refuses a destination before
any work starts: one that is a folder, that is one of the inputs, or whose folder cannot be
written. CSV text copied from the input (identifiers, labels) is made safe to open in a
spreadsheet (:func:`escape_formulas`).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from latent_sculpting.atomic import publish, temporary_path
from latent_sculpting.errors import FlowInputError

__all__ = [
    "FORMULA_STARTS",
    "AtomicTableWriter",
    "check_output",
    "escape_formulas",
    "publish",
    "temporary_path",
    "terminate_cleanly",
]

TABLE_SUFFIXES = (".parquet", ".pq", ".csv")

#: First characters that make a spreadsheet read a cell as a formula: OWASP's list for CSV
#: injection (equals, plus, minus, at, tab, carriage return).
FORMULA_STARTS = "=+-@\t\r"
_FORMULA_START = r"^[=+\-@\t\r]"  # FORMULA_STARTS as a regular expression (RE2)


def escape_formulas(table: pa.Table, *, keep: Iterable[str] = ()) -> pa.Table:
    """``table`` with every text cell that starts with one of :data:`FORMULA_STARTS` prefixed
    with a single quote, as OWASP recommends against CSV injection: opened in a spreadsheet,
    ``=HYPERLINK(...)`` sent as a flow's identifier would otherwise run as a formula.

    Only text columns are touched, never numbers (a negative score stays a number), and not
    the columns named in ``keep`` (text the package writes itself). Null stays null.
    """
    kept = set(keep)
    for index, field in enumerate(table.schema):
        if field.name in kept or not (
            pa.types.is_string(field.type) or pa.types.is_large_string(field.type)
        ):
            continue
        column = table.column(index)
        risky = pc.match_substring_regex(column, _FORMULA_START)
        if not pc.any(risky).as_py():
            continue
        quote, nothing = pa.scalar("'", field.type), pa.scalar("", field.type)
        quoted = pc.binary_join_element_wise(quote, column, nothing)
        table = table.set_column(index, field, pc.if_else(risky, quoted, column))
    return table


def check_output(
    path: str | Path,
    *,
    inputs: Iterable[str | Path] = (),
    suffixes: Iterable[str] | None = None,
    what: str = "output",
) -> Path:
    """Refuse an output path before any work is done.

    Raises
    ------
    ValueError
        If ``path`` is an existing folder, is one of ``inputs`` (the same file, also through a
        link), has a suffix not in ``suffixes``, or its folder cannot be created or written.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder; give a file name")
    if suffixes is not None:
        allowed = tuple(suffixes)
        if path.suffix.lower() not in allowed:
            raise ValueError(
                f"{what} {path}: unsupported suffix {path.suffix!r}; use {' or '.join(allowed)}"
            )
    if path.exists():
        for item in inputs:
            item = Path(item).expanduser()
            if item.exists() and path.samefile(item):
                raise ValueError(f"{what} {path} is also an input; write the result elsewhere")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"{what} {path}: cannot create its folder ({error})") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {path}: folder {parent} is not writable")
    return path


@contextlib.contextmanager
def terminate_cleanly() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` for the block, so that ``finally`` clauses (which
    delete temporary files) run as they do for Ctrl-C; the default action would kill the
    process on the spot. Only the main thread can install handlers; elsewhere this does
    nothing."""
    try:
        previous = signal.signal(signal.SIGTERM, _exit_on_term)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _exit_on_term(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


class AtomicTableWriter:
    """Append DataFrames to a Parquet or CSV file that appears only on :meth:`commit`.

    The format follows the suffix (``.csv``; ``.parquet`` or ``.pq``). Rows go to a temporary
    file in the same folder, renamed over ``path`` on commit; :meth:`abort` deletes it. The
    first frame fixes the columns and types; later frames must have the same columns. Use it as
    a context manager: leaving the block by an exception (or SIGTERM under
    :func:`terminate_cleanly`) aborts, a normal exit commits. A CSV file's text columns are
    escaped against formulas (:func:`escape_formulas`), but for the ``generated`` ones.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        empty_columns: Iterable[str] = (),
        generated: Iterable[str] = (),
    ) -> None:
        self.path = check_output(path, suffixes=TABLE_SUFFIXES)
        self.kind = "csv" if self.path.suffix.lower() == ".csv" else "parquet"
        self._tmp = temporary_path(self.path)
        self._writer: Any = None
        self._schema: pa.Schema | None = None
        self._empty_columns = list(empty_columns)
        self._generated = list(generated)
        self.rows = 0

    def __enter__(self) -> AtomicTableWriter:
        return self

    def __exit__(self, kind: type | None, value: BaseException | None, tb: Any) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()

    def write(self, frame: pd.DataFrame, *, source: object = "input") -> None:
        """Append ``frame``; ``source`` names the input in errors."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._schema is None:
            # A column that is all-null in the first batch gets a string type, so that later
            # batches holding values still fit.
            fields = [
                pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
                for f in table.schema
            ]
            self._schema = pa.schema(fields)
            if self.kind == "parquet":
                self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
            else:
                self._writer = pacsv.CSVWriter(str(self._tmp), self._schema)
        if table.schema.names != self._schema.names:
            raise FlowInputError(
                f"{source}: its columns {table.schema.names} differ from the first input's "
                f"{self._schema.names}; score files with different columns separately"
            )
        try:
            table = table.cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise FlowInputError(
                f"{source}: column types differ from the first input's ({error})"
            ) from None
        if self.kind == "csv":
            table = escape_formulas(table, keep=self._generated)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def commit(self) -> Path:
        """Close the file and rename it into place; no input rows write the header only."""
        if self._writer is None:
            self.write(pd.DataFrame({c: pd.Series(dtype=object) for c in self._empty_columns}))
        self._writer.close()
        publish(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; ``path`` is left untouched."""
        if self._writer is not None:
            with contextlib.suppress(Exception):  # already failing; the file goes anyway
                self._writer.close()
        self._tmp.unlink(missing_ok=True)
