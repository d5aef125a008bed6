"""Numeric columns of flow records as float64, checked against float32's range (the model's
precision): a finite value beyond it is an error naming the row and column, never a silent
infinity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.readers.parquet import cast_column

__all__ = ["FLOAT32_MAX", "as_float64", "check_float32_range", "number_column", "number_matrix"]

#: Largest finite float32; a finite input beyond it would become an infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def number_column(
    records: pa.Table | pa.RecordBatch, raw: str, name: str, source: object, offset: int
) -> np.ndarray:
    """One numeric column as float64, checked against float32's range."""
    return number_matrix(records, [raw], [name], source, offset)[:, 0]


def number_matrix(
    records: pa.Table | pa.RecordBatch,
    raws: Sequence[str],
    names: Sequence[str],
    source: object,
    offset: int,
) -> np.ndarray:
    """Numeric columns ``raws`` (named ``names`` in errors) as one float64 matrix of shape
    (n_rows, len(raws)), nulls as NaN, checked against float32's range.

    One Arrow-to-tensor conversion of all columns rather than one per column: with a few rows
    (a service request) the per-column calls cost more than scoring them.
    """
    n = records.num_rows
    if n == 0 or not raws:
        for raw, name in zip(raws, names, strict=True):  # still refuse columns of no numbers
            as_float64(records.column(raw), name, source, offset)
        return np.empty((n, len(raws)), dtype=np.float64)
    table = records.select(list(raws))
    for j, (column_type, name) in enumerate(zip(table.schema.types, names, strict=True)):
        if not pa.types.is_float64(column_type):
            column = as_float64(table.column(j), name, source, offset)
            table = table.set_column(j, table.schema.names[j], column)
    if isinstance(table, pa.Table):
        table = table.combine_chunks().to_batches()[0]
    values = np.asarray(table.to_tensor(null_to_nan=True, row_major=True))
    check_float32_range(values, names, source, offset)
    return values


def as_float64(
    column: pa.Array | pa.ChunkedArray, name: str, source: object, offset: int
) -> pa.Array:
    """A column of numbers (or of text that holds numbers) as float64."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_float64(column.type):
        return column
    if pa.types.is_boolean(column.type) or not (
        pa.types.is_integer(column.type)
        or pa.types.is_floating(column.type)
        or pa.types.is_null(column.type)
        or pa.types.is_string(column.type)
        or pa.types.is_large_string(column.type)
    ):
        raise FlowInputError(
            f"{source}: column {name!r} holds {column.type} values, not numbers", column=name
        )
    return cast_column(column, pa.float64(), path=source, column=name, offset=offset)


def check_float32_range(
    values: np.ndarray, names: Sequence[str], source: object, offset: int
) -> None:
    """Refuse a finite value beyond float32's range, naming the first (column by column)."""
    with np.errstate(invalid="ignore"):
        beyond = np.abs(values) > FLOAT32_MAX
    beyond &= np.isfinite(values)
    if beyond.any():
        col, row = (int(i) for i in np.argwhere(beyond.T)[0])
        name = names[col]
        raise FlowInputError(
            f"{source}, row {offset + row + 1}, column {name!r}: {values[row, col]!r} is "
            f"beyond float32's range (+-{FLOAT32_MAX:.4g}), the model's precision",
            line=offset + row + 1,
            column=name,
        )
