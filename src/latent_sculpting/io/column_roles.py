"""What a training column is: its role (numeric, categorical, identifier or left out, with the
reason), the vocabulary of a categorical column, and its values as text.

:func:`latent_sculpting.io.fitting.fit_spec` decides each column with these; ``encode`` reads
categorical values with :func:`as_text`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.formats import FlowFormat, detect_format, get_format, normalize_column_name
from latent_sculpting.io.formats.table import identifier_by_values

__all__ = [
    "MISSING",
    "as_text",
    "column_role",
    "find_column",
    "resolve_format",
    "shown_names",
    "vocabulary",
]

#: The value of a categorical column where a record has none.
MISSING = "(missing)"


def resolve_format(format: str | FlowFormat, columns: Sequence[str]) -> FlowFormat:
    """The format named (or detected from ``columns`` for ``"auto"``)."""
    if isinstance(format, FlowFormat):
        return format
    if format == "auto":
        return detect_format(columns)
    return get_format(format)


def find_column(by_key: Mapping[str, str], name: str | None) -> str | None:
    """The column ``name`` spells, looked up by its casefolded canonical name."""
    if name is None:
        return None
    return by_key.get(normalize_column_name(name).casefold())


def shown_names(names: Sequence[str], limit: int = 15) -> str:
    """The first ``limit`` names, quoted, for an error message."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(repr(n) for n in names[:limit]) + more


def column_role(
    column: pa.ChunkedArray, name: str, source: object, *, keep: bool = False
) -> tuple[str, str | None]:
    """``("numeric" | "categorical" | "identifier" | "dropped", reason)`` of a column the format
    leaves open; text columns whose values identify flows (times, encoded bytes, mostly
    distinct values: :func:`~.formats.table.identifier_by_values`) are identifiers unless
    ``keep``."""
    kind = column.type
    if pa.types.is_null(kind) or column.null_count == len(column):
        return "dropped", "empty in every row"
    if pa.types.is_floating(kind) and not pc.sum(pc.is_finite(column)).as_py():
        return "dropped", "no finite value in any row (each is infinite, NaN or missing)"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return "numeric", None
    if pa.types.is_boolean(kind):
        return "categorical", None
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        values = pc.unique(column.cast(pa.string()) if pa.types.is_binary(kind) else column)
        values = values.drop_null().to_pylist()
        rows = len(column) - column.null_count
        # Times first: Unix times written as text are numbers, but not quantities.
        reason = None if keep else identifier_by_values(values, rows, distinct=False)
        if reason is not None:
            return "identifier", reason
        parsed = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce")
        numbers = int(parsed.notna().sum())
        if numbers == len(values):
            return "numeric", None  # numbers written as text (JSON strings): read as numbers
        # A text column whose values are almost all numbers is a numeric column with a bad
        # cell, not a category: refusing it is better than one-hot encoding every number.
        if numbers and numbers >= 0.9 * len(values):
            bad = next(v for v, ok in zip(values, parsed.notna(), strict=True) if not ok)
            raise FlowInputError(
                f"{source}: column {name!r} holds numbers and text (e.g. {bad!r}); clean the "
                "column, or --drop it",
                column=name,
            )
        reason = None if keep else identifier_by_values(values, rows)
        if reason is not None:
            return "identifier", reason
        return "categorical", None
    return "dropped", f"holds {kind} values, neither numbers nor text"


def vocabulary(column: pa.ChunkedArray, limit: int, min_count: int) -> tuple[str, ...]:
    """The ``limit`` most frequent values seen at least ``min_count`` times."""
    counts = as_text(column).value_counts()
    frame = pd.DataFrame({"value": counts.index.astype(str), "count": counts.to_numpy()})
    frame = frame[frame["count"] >= min_count]
    frame = frame.sort_values(["count", "value"], ascending=[False, True], kind="stable")
    return tuple(frame["value"].head(limit))


def as_text(column: pa.ChunkedArray | pa.Array) -> pd.Series:
    """A categorical column as strings, missing values as :data:`MISSING`."""
    if pa.types.is_boolean(column.type):
        column = pc.if_else(column, "true", "false")
    elif not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = column.cast(pa.string())
    return pd.Series(column.to_pandas(), dtype=object).fillna(MISSING).astype(str)
