"""The model's input, described once: :class:`FlowSpec`, and the one path from records to inputs.

A detector reads flow records of some format (CIC-IDS-2017 CSV, Zeek ``conn.log``, NetFlow,
packets turned into flows, any table). At training time :func:`fit_spec` decides the role of
every column (numeric feature, categorical feature, identifier, label, left out, each with its
reason) and learns the categorical vocabularies from the training rows; the spec is saved in the
model file. Everywhere afterwards (loading a training table, ``sculpt score``, the HTTP service,
the Ray engine, ``sculpt adapt``) :func:`encode` turns a batch of records into model inputs with
that spec, so a flow gets the same features however it arrives.

Numbers are read as float64 and must fit float32, the model's precision: a finite value beyond
float32's range is an error naming the row and column, never a silent infinity. Non-finite and
missing values become 0 (the paper's choice), counted in a
:class:`~latent_sculpting.io.cleaning.CleaningReport`. A categorical column becomes one indicator
feature per frequent training value plus one for every other value (``column=(other)``); a
missing value is the value ``(missing)``.

How a training column's role is decided is in :mod:`latent_sculpting.io.column_roles`, how
numeric columns become a checked float64 matrix in :mod:`latent_sculpting.io.numbers`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.cleaning import CleaningReport, replace_nonfinite
from latent_sculpting.io.column_roles import (
    as_text,
    column_role,
    find_column,
    resolve_format,
    shown_names,
    vocabulary,
)
from latent_sculpting.io.formats import FlowFormat, get_format, normalize_column_name
from latent_sculpting.io.formats.table import looks_like_identifier
from latent_sculpting.io.numbers import (
    as_float64,
    check_float32_range,
    number_column,
    number_matrix,
)

__all__ = [
    "legacy_spec",
    "model_spec",
    "OTHER",
    "Categorical",
    "FlowBatch",
    "FlowSpec",
    "check_columns",
    "encode",
    "fit_spec",
    "spec_for_features",
    "usable_counts",
]

OTHER = "(other)"
#: Bounds on a spec read from a model file (they keep a tampered file from asking for absurd
#: allocations); far above any real flow format.
MAX_FEATURES = 10_000
#: Rows converted to one float64 matrix at a time by :func:`encode` (bounds its working memory).
_MATRIX_ROWS = 65_536
MAX_NAME_LENGTH = 512
NONFINITE_POLICIES = ("zero", "error")


@dataclass(frozen=True)
class Categorical:
    """A categorical feature column and the training values that get their own indicator."""

    column: str
    values: tuple[str, ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f"{self.column}={v}" for v in self.values) + (f"{self.column}={OTHER}",)


@dataclass(frozen=True)
class FlowSpec:
    """Everything needed to turn flow records of one format into a model's inputs.

    Attributes
    ----------
    format : str
        Registered format name (:mod:`latent_sculpting.io.formats`).
    numeric : tuple of str
        Canonical names of the numeric feature columns, in feature order.
    engineered : tuple of str
        Features the format derives from numeric columns, after them.
    categorical : tuple of Categorical
        Categorical feature columns with their vocabularies, after the engineered features.
    identifiers : tuple of str
        Columns carried to the output, never features.
    label_column, benign_label : str or None
        Where labels are, and which one means benign.
    nonfinite : {"zero", "error"}
        What a non-finite or missing numeric value becomes.
    dropped : tuple of (str, str)
        Columns left out at fit time, each with the reason (for the training summary).
    """

    format: str
    numeric: tuple[str, ...]
    engineered: tuple[str, ...] = ()
    categorical: tuple[Categorical, ...] = ()
    identifiers: tuple[str, ...] = ()
    label_column: str | None = None
    benign_label: str | None = None
    nonfinite: str = "zero"
    dropped: tuple[tuple[str, str], ...] = field(default=())

    @property
    def feature_names(self) -> list[str]:
        names = [*self.numeric, *self.engineered]
        for cat in self.categorical:
            names.extend(cat.feature_names)
        return names

    @property
    def n_features(self) -> int:
        return (
            len(self.numeric)
            + len(self.engineered)
            + sum(len(c.values) + 1 for c in self.categorical)
        )

    def required_columns(self) -> list[str]:
        """Canonical columns a record must have to be scored."""
        fmt = get_format(self.format)
        needed = list(self.numeric)
        if self.engineered:
            needed += [c for c in fmt.needs() if c not in needed]
        return needed + [c.column for c in self.categorical]

    def summary(self) -> str:
        """What became of each column, for ``sculpt train`` to print."""
        lines = [f"format: {self.format}"]
        lines.append(f"numeric features ({len(self.numeric)}): {', '.join(self.numeric)}")
        if self.engineered:
            lines.append(f"engineered features: {', '.join(self.engineered)}")
        for cat in self.categorical:
            shown = ", ".join(cat.values[:12]) + (" ..." if len(cat.values) > 12 else "")
            lines.append(
                f"categorical feature {cat.column!r}: {len(cat.values)} values + {OTHER} ({shown})"
            )
        if self.identifiers:
            lines.append(f"identifiers (kept, never features): {', '.join(self.identifiers)}")
        if self.label_column:
            lines.append(f"label column: {self.label_column!r} (benign: {self.benign_label!r})")
        for column, reason in self.dropped:
            lines.append(f"left out {column!r}: {reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "numeric": list(self.numeric),
            "engineered": list(self.engineered),
            "categorical": [
                {"column": c.column, "values": list(c.values)} for c in self.categorical
            ],
            "identifiers": list(self.identifiers),
            "label_column": self.label_column,
            "benign_label": self.benign_label,
            "nonfinite": self.nonfinite,
            "dropped": [list(d) for d in self.dropped],
        }

    @classmethod
    def from_dict(cls, data: Any) -> FlowSpec:
        """A spec from :meth:`to_dict` output (e.g. read from a model file), fully validated.

        Raises
        ------
        ValueError
            Naming the first key that is missing, of the wrong type, or out of bounds.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"input spec must be an object, got {type(data).__name__}")
        fmt = _string(data, "format")
        get_format(fmt)
        nonfinite = _string(data, "nonfinite")
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"input spec: nonfinite must be one of {NONFINITE_POLICIES}")
        categorical = []
        raw_cats = data.get("categorical")
        if not isinstance(raw_cats, list):
            raise ValueError("input spec: 'categorical' must be a list")
        for i, entry in enumerate(raw_cats):
            if not isinstance(entry, Mapping):
                raise ValueError(f"input spec: categorical[{i}] must be an object")
            categorical.append(
                Categorical(_string(entry, "column"), tuple(_names(entry, "values")))
            )
        dropped = data.get("dropped")
        if not isinstance(dropped, list) or not all(
            isinstance(d, list) and len(d) == 2 and all(isinstance(x, str) for x in d)
            for d in dropped
        ):
            raise ValueError("input spec: 'dropped' must be a list of [column, reason] pairs")
        spec = cls(
            format=fmt,
            numeric=tuple(_names(data, "numeric")),
            engineered=tuple(_names(data, "engineered")),
            categorical=tuple(categorical),
            identifiers=tuple(_names(data, "identifiers")),
            label_column=_string(data, "label_column", optional=True),
            benign_label=_string(data, "benign_label", optional=True),
            nonfinite=nonfinite,
            dropped=tuple((d[0], d[1]) for d in dropped),
        )
        names = spec.feature_names
        if not 0 < len(names) <= MAX_FEATURES:
            raise ValueError(f"input spec: {len(names)} features (1 to {MAX_FEATURES} allowed)")
        if len(set(names)) != len(names):
            raise ValueError("input spec: feature names are not unique")
        unknown = set(spec.engineered) - set(get_format(fmt).engineered)
        if unknown:
            raise ValueError(f"input spec: format {fmt!r} derives no feature {sorted(unknown)}")
        return spec


def _string(data: Mapping, key: str, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"input spec: {key!r} must be a string of at most {MAX_NAME_LENGTH}")
    return value


def _names(data: Mapping, key: str) -> list[str]:
    value = data.get(key)
    if not isinstance(value, list) or len(value) > MAX_FEATURES:
        raise ValueError(f"input spec: {key!r} must be a list of at most {MAX_FEATURES} names")
    for item in value:
        if not isinstance(item, str) or not 0 < len(item) <= MAX_NAME_LENGTH:
            raise ValueError(f"input spec: {key!r} holds {item!r}, not a column name")
    return value


def spec_for_features(names: Sequence[str]) -> FlowSpec:
    """The spec of a model fitted on a plain numeric table with these column names."""
    return FlowSpec(format="table", numeric=tuple(str(n) for n in names))


def model_spec(model: Any) -> FlowSpec:
    """A fitted model's input spec: the one it was trained with, else (fitted on a plain
    DataFrame) a numeric table of its feature names.

    Raises
    ------
    ValueError
        If the model was fitted on an array, without feature names.
    """
    spec = getattr(model, "spec_", None)
    if spec is not None:
        return spec
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        raise ValueError(
            "the model was fitted without feature names (on an array), so records cannot be "
            "matched to its features; fit it on a DataFrame"
        )
    return spec_for_features(names)


def legacy_spec(names: Sequence[str], extra: Mapping[str, Any]) -> FlowSpec:
    """The spec of a model file written before specs were stored (format version 2)."""
    from latent_sculpting.io.formats.cicids2017 import (
        BENIGN,
        CANONICAL_FEATURES,
        ENGINEERED_FEATURES,
        IDENTIFIER_COLUMNS,
    )

    names = [str(n) for n in names]
    canonical = set(CANONICAL_FEATURES) | set(ENGINEERED_FEATURES)
    training = extra.get("training_data") or {}
    if set(names) <= canonical and set(names) & set(CANONICAL_FEATURES):
        numeric = tuple(n for n in names if n in set(CANONICAL_FEATURES))
        engineered = tuple(n for n in names if n in set(ENGINEERED_FEATURES))
        if list(numeric) + list(engineered) == names:
            return FlowSpec(
                format="cicids2017",
                numeric=numeric,
                engineered=engineered,
                identifiers=IDENTIFIER_COLUMNS,
                label_column="Label",
                benign_label=BENIGN,
            )
    label = training.get("label_column")
    return FlowSpec(
        format="table",
        numeric=tuple(names),
        label_column=label if isinstance(label, str) else None,
        benign_label=training.get("benign_label") if isinstance(label, str) else None,
    )


# --------------------------------------------------------------------------------------------
# Fitting


def fit_spec(
    table: pa.Table,
    *,
    format: str | FlowFormat = "auto",
    label_column: str | None = None,
    benign_label: str | None = None,
    unlabelled: bool = False,
    drop: Iterable[str] = (),
    keep: Iterable[str] = (),
    engineered: bool = True,
    max_categories: int = 32,
    min_count: int = 5,
    nonfinite: str = "zero",
    source: object = "the training data",
) -> FlowSpec:
    """Decide every column's role and learn categorical vocabularies from training records.

    Parameters
    ----------
    table : pyarrow.Table
        Training records with raw or canonical column names.
    format : str or FlowFormat, default "auto"
        A registered format name, a format, or ``"auto"`` (:func:`~.formats.detect_format`).
    label_column : str, optional
        Default: the format's; None for a format without one means unlabelled.
    benign_label : str, optional
        Default: the format's. Needed when there is a label column.
    unlabelled : bool, default False
        Every record is benign: no label column is read, even one the format names (it is
        left out, and reported so).
    drop : iterable of str
        Columns that must not be features (kept as identifiers).
    keep : iterable of str
        Columns to use as features although their name reads like an identifier.
    engineered : bool, default True
        Add the format's engineered features.
    max_categories : int, default 32
        Most frequent values per categorical column that get their own indicator.
    min_count : int, default 5
        Fewest training rows a value needs for its own indicator.
    nonfinite : {"zero", "error"}, default "zero"

    Returns
    -------
    FlowSpec

    Raises
    ------
    FlowInputError
        For a named column that is missing, a numeric column holding text, a label column
        without a benign label, or no feature at all.
    """
    if max_categories < 1 or min_count < 1:
        raise ValueError("max_categories and min_count must be at least 1")
    if nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_POLICIES}, got {nonfinite!r}")
    fmt = resolve_format(format, table.column_names)
    rename = fmt.canonical_columns(table.column_names, source=source)
    table = table.select(list(rename)).rename_columns(list(rename.values()))
    names = table.column_names
    by_key = {n.casefold(): n for n in names}

    if unlabelled and label_column is not None:
        raise ValueError("unlabelled data has no label column; drop one of the two options")
    label = None if unlabelled else find_column(by_key, label_column or fmt.label_column)
    if label_column is not None and label is None:
        raise FlowInputError(
            f"{source}: no label column {label_column!r} among {names}", column=label_column
        )
    benign = benign_label if benign_label is not None else fmt.benign_label
    if benign is not None:
        # Spelt as the format spells labels (CIC-IDS-2017: "benign" is "BENIGN").
        benign = fmt.labels(pa.array([benign]))[0]
    if label is not None and benign is None:
        raise FlowInputError(
            f"{source}: name the benign label of column {label!r} (--benign-label)"
        )
    drop_keys = {normalize_column_name(c).casefold() for c in drop}
    keep_keys = {normalize_column_name(c).casefold() for c in keep}
    for given, what in ((drop_keys, "--drop"), (keep_keys, "--keep")):
        unknown = sorted(given - set(by_key))
        if unknown:
            raise FlowInputError(f"{source}: {what} names no column: {unknown}")

    ident_keys = {c.casefold() for c in fmt.identifier_columns}
    fixed_numeric = None if fmt.numeric_columns is None else list(fmt.numeric_columns)
    fixed_categorical = (
        None if fmt.categorical_columns is None else {c.casefold() for c in fmt.categorical_columns}
    )
    ignored = fmt.ignored(names)
    numeric: list[str] = []
    categorical: list[str] = []
    identifiers: list[str] = []
    dropped: list[tuple[str, str]] = []
    for name in names:
        key = name.casefold()
        column = table.column(name)
        if name == label:
            continue
        if unlabelled and fmt.label_column and key == fmt.label_column.casefold():
            dropped.append((name, "the label column, ignored: the data is declared unlabelled"))
            continue
        if key in drop_keys:
            identifiers.append(name)
        elif key in ident_keys and key not in keep_keys:
            identifiers.append(name)
        elif name in ignored:
            dropped.append((name, ignored[name]))
        elif fixed_numeric is not None and name in fixed_numeric:
            numeric.append(name)
        elif fixed_categorical is not None and key in fixed_categorical:
            categorical.append(name)
        elif fixed_numeric is not None and fixed_categorical is not None:
            dropped.append((name, f"not a feature of the {fmt.name} format"))
        elif looks_like_identifier(name) and key not in keep_keys:
            identifiers.append(name)
            dropped.append((name, "its name reads like an identifier (--keep to use it)"))
        else:
            role, reason = column_role(column, name, source, keep=key in keep_keys)
            if role == "identifier":
                identifiers.append(name)
                dropped.append((name, f"{reason} (--keep to use it)"))
            elif role == "numeric" and fixed_numeric is None:
                numeric.append(name)
            elif role == "categorical" and fixed_categorical is None:
                categorical.append(name)
            else:
                dropped.append((name, reason or f"not a feature of the {fmt.name} format"))
    if fixed_numeric is not None:
        missing = [c for c in fixed_numeric if c not in numeric]
        if missing:
            raise FlowInputError(
                f"{source}: {len(missing)} feature column(s) of the {fmt.name} format missing: "
                f"{shown_names(missing)}",
                missing=missing,
            )
    # Identifiers the format knows travel to the output whenever a scored file has them, even
    # if these training records lacked them (one CIC-IDS-2017 release has other ones).
    known = {c.casefold() for c in identifiers}
    identifiers += [c for c in fmt.identifier_columns if c.casefold() not in known]
    derived = tuple(fmt.engineered) if engineered else ()
    if derived:
        needed = [c for c in fmt.needs() if c not in names]
        if needed:
            raise FlowInputError(f"{source}: engineered features need {needed}", missing=needed)
    cats = tuple(
        Categorical(name, vocabulary(table.column(name), max_categories, min_count))
        for name in categorical
    )
    spec = FlowSpec(
        format=fmt.name,
        numeric=tuple(numeric),
        engineered=derived,
        categorical=cats,
        identifiers=tuple(identifiers),
        label_column=label,
        benign_label=benign if label is not None else None,
        nonfinite=nonfinite,
        dropped=tuple(dropped),
    )
    if spec.n_features == 0:
        raise FlowInputError(f"{source}: no feature column (columns: {names})")
    return spec


# --------------------------------------------------------------------------------------------
# Encoding


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

    Raises
    ------
    FlowInputError
        A missing column (all are named), a value that is not a number or beyond float32, a
        non-finite value under ``nonfinite="error"``, or a missing label.
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
