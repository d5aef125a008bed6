"""Fitting a :class:`~latent_sculpting.io.flowspec.FlowSpec` on training records.

:func:`fit_spec` decides the role of every column (numeric feature, categorical feature,
identifier, label, left out, each with its reason) and learns the categorical vocabularies from
the training rows. The rules for one column are in :mod:`latent_sculpting.io.column_roles`.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.column_roles import (
    column_role,
    find_column,
    resolve_format,
    shown_names,
    vocabulary,
)
from latent_sculpting.io.context.config import ContextConfig
from latent_sculpting.io.flowspec import NONFINITE_POLICIES, Categorical, FlowSpec
from latent_sculpting.io.formats import FlowFormat, normalize_column_name
from latent_sculpting.io.formats.table import looks_like_identifier

__all__ = ["fit_spec"]


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
    context: ContextConfig | None = None,
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
    context : ContextConfig, optional
        Add these context features after the per-flow ones; the format must know its records'
        start time and endpoints, which the records must have.

    Returns
    -------
    FlowSpec

    Raises
    ------
    FlowInputError
        For a named column that is missing, a numeric column holding text, a label column
        without a benign label, no feature at all, or context asked of records without start
        time and endpoints.
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
    if context is not None and fmt.endpoint_roles(names) is None:
        from latent_sculpting.io.context.stage import missing_endpoints

        raise FlowInputError(f"{source}: {missing_endpoints(fmt, names)}")
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
        context=context,
    )
    if spec.n_features == 0:
        raise FlowInputError(f"{source}: no feature column (columns: {names})")
    return spec
