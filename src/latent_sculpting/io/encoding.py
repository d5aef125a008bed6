"""The one path from flow records to model inputs: :func:`encode` with a fitted
:class:`~latent_sculpting.io.flowspec.FlowSpec`.

Everywhere after training (loading a training table, ``sculpt score``, the HTTP service, the Ray
engine, ``sculpt adapt``) records become a :class:`FlowBatch` here, so a flow gets the same
features however it arrives. How numeric columns become a checked float64 matrix is in
:mod:`latent_sculpting.io.numbers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.cleaning import CleaningReport, replace_nonfinite
from latent_sculpting.io.column_roles import as_text, shown_names
from latent_sculpting.io.flowspec import NONFINITE_POLICIES, FlowSpec
from latent_sculpting.io.formats import FlowFormat, get_format
from latent_sculpting.io.numbers import (
    as_float64,
    check_float32_range,
    number_column,
    number_matrix,
)

__all__ = [
    "FlowBatch",
    "check_columns",
    "context_matrix",
    "encode",
    "numeric_types",
    "usable_counts",
]

if TYPE_CHECKING:
    from latent_sculpting.io.context.config import ContextConfig
    from latent_sculpting.io.context.state import ContextState

#: Rows converted to one float64 matrix at a time by :func:`encode` (bounds its working memory).
_MATRIX_ROWS = 65_536


@dataclass
class FlowBatch:
    """Records turned into model inputs.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features), float32
    feature_names : list of str
    identifiers : pyarrow.Table
        The spec's identifier columns that the records have, row-aligned with ``X``.
    labels : ndarray of object or None
        Labels (as the format spells them canonically), when the records have the label column.
    """

    X: np.ndarray
    feature_names: list[str]
    identifiers: pa.Table
    labels: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.X)

    def frame(self) -> pd.DataFrame:
        """``X`` as a DataFrame with the feature names (no copy)."""
        return pd.DataFrame(self.X, columns=self.feature_names, copy=False)


def numeric_types(spec: FlowSpec, columns: Sequence[str]) -> dict[str, pa.DataType]:
    """Arrow types to ask a reader for: float64 for every raw column holding a numeric input,
    so that values beyond float32 and non-numbers are caught with their line."""
    fmt = get_format(spec.format)
    rename = fmt.canonical_columns(columns)
    wanted = set(spec.numeric) | (set(fmt.needs()) if spec.engineered else set())
    return {raw: pa.float64() for raw, canonical in rename.items() if canonical in wanted}


def encode(
    spec: FlowSpec,
    records: pa.Table | pa.RecordBatch,
    *,
    source: object = "input",
    offset: int = 0,
    require_labels: bool = False,
    report: CleaningReport | None = None,
    numeric: np.ndarray | None = None,
    nonfinite: str | None = None,
    context: ContextState | np.ndarray | None = None,
) -> FlowBatch:
    """Turn flow records into model inputs with ``spec``.

    Parameters
    ----------
    spec : FlowSpec
    records : pyarrow.Table or RecordBatch
        Raw or canonical column names of the spec's format.
    source : object
        Names the records in errors (a file path, "the request").
    offset : int
        Rows of the same source before these (errors name ``offset + row``, 1-based).
    require_labels : bool
        Refuse records without the label column or with a missing label.
    report : CleaningReport, optional
        Counts non-finite values replaced and rows read.
    numeric : ndarray of shape (n_rows, len(spec.numeric)), optional
        The spec's numeric inputs already gathered, float64, columns in ``spec.numeric`` order
        (a parser that reads them straight from JSON); ``records`` then need not hold them,
        only the identifiers, label, categorical columns and other columns the format derives
        features from. Checked as the columns would be (float32's range, non-finite values).
    nonfinite : {"zero", "error"}, optional
        Overrides the spec's policy for missing and non-finite values (the service, which
        never imputes, passes ``"error"``).
    context : ContextState or ndarray, optional
        For a spec with context features: the state of the run these records continue
        (advanced here; :func:`context_matrix`), or their context features computed already.

    Raises
    ------
    FlowInputError
        A missing column (all are named), a value that is not a number or beyond float32, a
        non-finite value under ``nonfinite="error"``, a missing label, or (with context) records
        without start time and endpoints or starting before the state's latest flow.
    """
    fmt = get_format(spec.format)
    raw_of = _raw_names(fmt, records.column_names, source)
    check_columns(
        spec, records.column_names, source=source, given=() if numeric is None else spec.numeric
    )
    n = records.num_rows
    if numeric is not None:
        numeric = np.asarray(numeric)
        if records.num_columns == 0:  # nothing but the numbers: the rows are theirs
            n = len(numeric)
    X = np.empty((n, spec.n_features), dtype=np.float32)
    if numeric is not None:
        if numeric.shape != (n, len(spec.numeric)) or numeric.dtype != np.float64:
            raise ValueError(
                f"numeric must be float64 of shape ({n}, {len(spec.numeric)}), got "
                f"{numeric.dtype} {numeric.shape}"
            )
        check_float32_range(numeric, spec.numeric, source, offset)
        X[:, : len(spec.numeric)] = numeric
    else:
        raws = [raw_of[name.casefold()] for name in spec.numeric]
        for first in range(0, n, _MATRIX_ROWS):
            rows = records.slice(first, _MATRIX_ROWS)
            block = number_matrix(rows, raws, spec.numeric, source, offset + first)
            X[first : first + rows.num_rows, : len(raws)] = block
    start = len(spec.numeric)
    if spec.engineered:
        # From the float32 values the model sees, before non-finite values are replaced.
        column = {name: j for j, name in enumerate(spec.numeric)}
        inputs = {
            c: X[:, column[c]]
            if c in column
            else number_column(records, raw_of[c.casefold()], c, source, offset).astype(np.float32)
            for c in fmt.needs()
        }
        derived = fmt.derive(inputs)
        for j, name in enumerate(spec.engineered):
            X[:, start + j] = derived[name]
        start += len(spec.engineered)
    names = spec.feature_names
    policy = spec.nonfinite if nonfinite is None else nonfinite
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {policy!r}")
    if policy == "error":
        bad = ~np.isfinite(X[:, :start])
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise FlowInputError(
                f"{source}, row {offset + row + 1}, column {names[col]!r}: missing or "
                "non-finite value",
                line=offset + int(row) + 1,
                column=names[col],
            )
    else:
        replace_nonfinite(X[:, :start], names[:start], report=report)
    for cat in spec.categorical:
        width = len(cat.values) + 1
        text = as_text(records.column(raw_of[cat.column.casefold()]))
        codes = pd.Index(cat.values, dtype=object).get_indexer(text).astype(np.int64)
        codes[codes < 0] = len(cat.values)  # unseen and rare values: the (other) indicator
        block = X[:, start : start + width]
        block[:] = 0.0
        block[np.arange(n), codes] = 1.0
        start += width
    if spec.context is not None:
        if not isinstance(context, np.ndarray):
            if numeric is not None:  # the context reads bytes and packets among these too
                records = _with_columns(records, spec.numeric, numeric, raw_of)
            context = context_matrix(
                spec.context,
                spec.format,
                records,
                context,
                source=source,
                offset=offset,
                report=report,
            )
        if context.shape != (n, len(spec.context_names)):
            raise ValueError(
                f"context features of shape {context.shape}, expected "
                f"({n}, {len(spec.context_names)})"
            )
        X[:, start:] = context

    present = [c for c in spec.identifiers if c.casefold() in raw_of]
    identifiers = records.select([raw_of[c.casefold()] for c in present]).rename_columns(present)
    if isinstance(identifiers, pa.RecordBatch):
        identifiers = pa.Table.from_batches([identifiers])
    labels = None
    label_raw = None if spec.label_column is None else raw_of.get(spec.label_column.casefold())
    if label_raw is not None:
        labels = fmt.labels(records.column(label_raw))
        empty = np.flatnonzero(pd.isna(labels) | (labels == ""))
        if require_labels and len(empty):
            raise FlowInputError(
                f"{source}, row {offset + empty[0] + 1}: missing label in column "
                f"{spec.label_column!r} ({len(empty)} row(s) without one)",
                line=offset + int(empty[0]) + 1,
                column=spec.label_column,
            )
    elif require_labels:
        raise FlowInputError(
            f"{source}: no label column {spec.label_column!r}", column=spec.label_column
        )
    if report is not None:
        report.rows_read += n
    return FlowBatch(X, names, identifiers, labels)


def context_matrix(
    config: ContextConfig | None,
    format: str,
    records: pa.Table | pa.RecordBatch,
    state: ContextState | None,
    *,
    source: object = "input",
    offset: int = 0,
    report: CleaningReport | None = None,
) -> np.ndarray:
    """The context features (``config``) of ``format`` records, rows in their order, after the
    flows of ``state``, which they advance.

    Records need not be in time order among themselves (they are sorted for the computation;
    ``report.context_out_of_order`` counts those that were not), but none may start before
    the state's latest flow: the files and batches of one run come in time order.

    Raises
    ------
    ValueError
        When ``config`` is None, or ``state`` is None (the message says what to pass).
    FlowInputError
        For records without start time and endpoints, an unreadable value, or records that
        start before the state's latest flow (``source`` and the rows named).
    """
    # Here, not at the top: the numba kernels load only where context is computed.
    from latent_sculpting.io.context.stage import ContextStage

    if config is None:
        raise ValueError("this input spec has no context features")
    if state is None:
        raise ValueError(
            "the model's features include context features: pass the ContextState carried "
            "over the earlier records of this run (a new ContextState(spec.context) for its "
            "first records)"
        )
    fmt = get_format(format)
    rename = fmt.canonical_columns(records.column_names, source=source)
    table = records.select(list(rename)).rename_columns(list(rename.values()))
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    stage = ContextStage(config)
    try:
        out = stage.transform(table, fmt, state)
    except FlowInputError as error:
        line = None if error.line is None else offset + error.line
        where = f"{source}" if line is None else f"{source}, row {line}"
        raise FlowInputError(
            f"{where}: {error}", path=error.path, line=line, column=error.column
        ) from None
    if report is not None:
        key = str(source)
        if stage.out_of_order_:
            counts = report.context_out_of_order
            counts[key] = counts.get(key, 0) + stage.out_of_order_
        for note, count in stage.notes_.items():
            report.context_notes[note] = report.context_notes.get(note, 0) + count
    return np.column_stack([c.to_numpy() for c in out.columns]).astype(np.float32)


def _with_columns(
    records: pa.Table | pa.RecordBatch,
    names: Sequence[str],
    values: np.ndarray,
    raw_of: dict[str, str],
) -> pa.Table:
    """``records`` with the columns of ``values`` (named ``names``) that they lack."""
    table = records if isinstance(records, pa.Table) else pa.Table.from_batches([records])
    for j, name in enumerate(names):
        if name.casefold() not in raw_of:
            table = table.append_column(name, pa.array(values[:, j]))
    return table


def check_columns(
    spec: FlowSpec, columns: Sequence[str], *, source: object = "input", given: Iterable[str] = ()
) -> None:
    """Refuse records that lack a column ``spec`` reads (the one rule for scoring, training and
    adapting: every file must have every column, none is filled in).

    Parameters
    ----------
    spec : FlowSpec
    columns : sequence of str
        The records' column names, raw or canonical.
    source : object
        Names the records in the error.
    given : iterable of str
        Columns supplied otherwise (numbers parsed elsewhere), not needed among ``columns``.

    Raises
    ------
    FlowInputError
        Naming ``source`` and every missing column.
    """
    raw_of = _raw_names(get_format(spec.format), list(columns), source)
    given = set(given)
    missing = [c for c in spec.required_columns() if c not in given and c.casefold() not in raw_of]
    if missing:
        raise FlowInputError(
            f"{source}: {len(missing)} column(s) the model needs are missing: "
            f"{shown_names(missing)}",
            missing=missing,
        )


def usable_counts(spec: FlowSpec, records: pa.Table | pa.RecordBatch) -> dict[str, int]:
    """Rows of ``records`` whose value of each numeric input column is a finite number.

    A column of which no row has one gives the model nothing but zeros put in its place: the
    readers refuse it (:func:`latent_sculpting.data.read_flows`, ``iter_flow_batches``).
    Columns the records lack count 0 (:func:`check_columns` names them first).
    """
    raw_of = _raw_names(get_format(spec.format), records.column_names, "input")
    counts = {}
    for name in spec.numeric:
        raw = raw_of.get(name.casefold())
        if raw is None:
            counts[name] = 0
            continue
        column = records.column(raw)
        if pa.types.is_integer(column.type):
            counts[name] = len(column) - column.null_count
        elif pa.types.is_floating(column.type):
            counts[name] = int(pc.sum(pc.is_finite(column)).as_py() or 0)
        elif pa.types.is_null(column.type):
            counts[name] = 0
        else:  # text holding numbers: as encode reads it (a value that is none fails there)
            try:
                values = as_float64(column, name, "input", 0)
            except FlowInputError:
                counts[name] = len(column)
                continue
            counts[name] = int(pc.sum(pc.is_finite(values)).as_py() or 0)
    return counts


def _raw_names(fmt: FlowFormat, columns: list[str], source: object) -> dict[str, str]:
    """Casefolded canonical name -> the records' own name, for every column ``fmt`` knows.

    Kept per format and list of names: a service's requests, or a file's batches, repeat the
    same names, and matching them against the format's spellings costs more than scoring a few
    rows. Only successful matches are kept (an error names its source each time).
    """
    key = (fmt, tuple(columns))
    raw_of = _RAW_NAMES.get(key)
    if raw_of is None:
        rename = fmt.canonical_columns(columns, source=source)
        raw_of = {canonical.casefold(): raw for raw, canonical in rename.items()}
        if len(_RAW_NAMES) >= _KNOWN_COLUMN_LISTS:
            _RAW_NAMES.clear()
        _RAW_NAMES[key] = raw_of
    return raw_of


#: Lists of column names whose matching :func:`_raw_names` remembers, at most.
_KNOWN_COLUMN_LISTS = 64
_RAW_NAMES: dict[tuple[FlowFormat, tuple[str, ...]], dict[str, str]] = {}
