"""Parquet flow files, read in row groups' batches.

Columns asked for as a numeric type are cast; integer and floating columns cast exactly as
Arrow casts them, text columns are parsed and the first value that is not a number is named
with its row. Booleans are not flow measurements and are refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.readers.delimited import NULL_TOKENS

__all__ = ["batches", "columns"]


def _open(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as error:
        raise FlowInputError(
            f"{path}: not a readable Parquet file (truncated or corrupt?): {error}", path=path
        ) from None


def columns(path: Path) -> list[str]:
    """Column names from the file's schema.

    Raises
    ------
    FlowInputError
        If the file is not readable Parquet or names a column twice.
    """
    names = list(_open(path).schema_arrow.names)
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise FlowInputError(
            f"{path}: column(s) {duplicated} appear twice in the schema", path=path
        )
    return names


def batches(
    path: Path, batch_rows: int, types: Mapping[str, pa.DataType]
) -> Iterator[pa.RecordBatch]:
    """Record batches of the file; columns named in ``types`` are converted to those types."""
    names = columns(path)
    unknown = [c for c in types if c not in names]
    if unknown:
        raise ValueError(f"{path}: types given for columns not in the file: {unknown}")
    handle = _open(path)
    offset = 0
    try:
        for batch in handle.iter_batches(batch_size=batch_rows):
            if types:
                batch = _convert(batch, types, path, offset)
            offset += batch.num_rows
            yield batch
    except (pa.ArrowInvalid, OSError) as error:
        raise FlowInputError(
            f"{path}: Parquet data unreadable after row {offset} (truncated or corrupt?): {error}",
            path=path,
            line=offset + 1,
        ) from None


def _convert(
    batch: pa.RecordBatch, types: Mapping[str, pa.DataType], path: Path, offset: int
) -> pa.RecordBatch:
    arrays = []
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        wanted = types.get(name)
        if wanted is not None and column.type != wanted:
            column = cast_column(column, wanted, path=path, column=name, offset=offset)
        arrays.append(column)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def cast_column(
    array: pa.Array, wanted: pa.DataType, *, path: object, column: str, offset: int = 0
) -> pa.Array:
    """``array`` as ``wanted`` (a numeric type); a value that is no number raises
    :class:`FlowInputError` naming ``path``, the 1-based row (``offset`` rows before this
    array) and ``column``. Text cells in :data:`NULL_TOKENS` become null."""
    kind = array.type
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind):
        return pc.cast(array, wanted, safe=False)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        values = pd.Series(array.to_pandas(), dtype=object)
        missing = values.isna() | values.str.strip().isin(NULL_TOKENS)
        parsed = pd.to_numeric(values.where(~missing), errors="coerce")
        bad = np.flatnonzero(parsed.isna().to_numpy() & ~missing.to_numpy())
        if len(bad):
            row = int(bad[0])
            raise FlowInputError(
                f"{path}, row {offset + row + 1}, column {column!r}: {values.iloc[row]!r} "
                "is not a number",
                path=path if not isinstance(path, str) else None,
                line=offset + row + 1,
                column=column,
            )
        return pa.array(parsed.to_numpy(dtype=np.float64), type=pa.float64(), from_pandas=True)
    raise FlowInputError(
        f"{path}: column {column!r} holds {kind} values, not numbers", column=column
    )
