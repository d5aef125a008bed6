"""Turning flow records (a DataFrame from JSON, CSV or a file batch) into a model's inputs.

A fitted :class:`~latent_sculpting.LatentSculpting` remembers its feature names. Records may
carry exactly those columns, or, for a model trained on CIC-IDS-2017, the raw columns of either
release (original or improved): they are then renamed to the canonical names and the paper's two
engineered features are computed, exactly as :mod:`latent_sculpting.data` does when it reads
files. Non-finite values become 0, the data layer's default, so a flow scores the same whether
it arrives in a file, a CSV body or a JSON record.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .data.cleaning import engineered_features
from .data.schema import (
    CANONICAL_FEATURES,
    ENGINEERED_FEATURES,
    IDENTIFIER_COLUMNS,
    detect_schema,
    normalize_column_name,
)
from .estimator import LatentSculpting

__all__ = ["FlowInputError", "ModelInputs", "is_cicids2017_model", "model_inputs"]

_IDENTIFIER_KEYS = {c.casefold() for c in IDENTIFIER_COLUMNS}


class FlowInputError(ValueError):
    """Flow records that cannot be scored: columns missing or holding non-numeric values.

    Attributes
    ----------
    missing : list of str
        Feature columns the model needs that the records lack.
    non_numeric : dict of str to str
        Feature column -> first offending value (as text).
    """

    def __init__(
        self,
        message: str,
        *,
        missing: list[str] | None = None,
        non_numeric: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.missing = list(missing or [])
        self.non_numeric = dict(non_numeric or {})


@dataclass
class ModelInputs:
    """Records split into what the model reads and what is only carried along.

    Attributes
    ----------
    features : DataFrame
        float32 columns named and ordered as ``model.feature_names_in_``; non-finite values are 0.
    identifiers : DataFrame
        Identifier columns of the same rows (may have no columns).
    """

    features: pd.DataFrame
    identifiers: pd.DataFrame = field(default_factory=pd.DataFrame)


def is_cicids2017_model(model: LatentSculpting) -> bool:
    """Whether ``model`` was fitted on canonical CIC-IDS-2017 features (any subset of them)."""
    names = set(getattr(model, "feature_names_in_", ()))
    canonical = set(CANONICAL_FEATURES) | set(ENGINEERED_FEATURES)
    return bool(names) and names <= canonical and len(names & set(CANONICAL_FEATURES)) > 0


def model_inputs(
    model: LatentSculpting, frame: pd.DataFrame, *, label_column: str | None = None
) -> ModelInputs:
    """Select, rename, parse and clean the feature columns ``model`` needs from ``frame``.

    Parameters
    ----------
    model : LatentSculpting
        A fitted detector with ``feature_names_in_`` (fitted on a DataFrame).
    frame : DataFrame
        One row per flow. Column names are matched after stripping whitespace.
    label_column : str, optional
        A label column to leave out of the identifiers (it is neither a feature nor echoed).

    Returns
    -------
    ModelInputs

    Raises
    ------
    FlowInputError
        If feature columns are missing (all of them are named) or hold values that are not
        numbers (each such column is named with its first bad value).
    ValueError
        If the model has no feature names.
    """
    names = [str(c) for c in getattr(model, "feature_names_in_", ())]
    if not names:
        raise ValueError(
            "the model was fitted without feature names (on an array), so records cannot be "
            "matched to its features; refit it on a DataFrame"
        )
    frame = frame.rename(columns=lambda c: normalize_column_name(str(c)))
    if frame.columns.duplicated().any():
        dupes = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise FlowInputError(f"duplicate column(s) in the records: {dupes}")
    label_key = None if label_column is None else normalize_column_name(label_column).casefold()
    present = set(frame.columns)

    if all(n in present for n in names):
        X = _parse_numeric(frame, names, names)
        used = set(names)
    elif is_cicids2017_model(model):
        X, used = _cic_features(frame, names)
    else:
        missing = [n for n in names if n not in present]
        raise FlowInputError(f"{_missing_message(missing)}", missing=missing)
    X[~np.isfinite(X)] = 0.0  # the data layer's default "zero" policy
    features = pd.DataFrame(X, columns=names, copy=False)

    if is_cicids2017_model(model):
        ident_cols = [c for c in frame.columns if c.casefold() in _IDENTIFIER_KEYS]
    else:
        ident_cols = [c for c in frame.columns if c not in used]
    ident_cols = [c for c in ident_cols if label_key is None or c.casefold() != label_key]
    identifiers = frame[ident_cols].reset_index(drop=True)
    return ModelInputs(features, identifiers)


def _cic_features(frame: pd.DataFrame, names: list[str]) -> tuple[np.ndarray, set[str]]:
    """The model's features from raw CIC-IDS-2017 columns of either release."""
    try:
        _, rename = detect_schema(list(frame.columns), source="the records")
    except ValueError:
        # Engineered features are derived, so only the measured ones can be missing.
        missing = [n for n in names if n not in set(frame.columns) and n not in ENGINEERED_FEATURES]
        raise FlowInputError(
            f"{_missing_message(missing)} (send the model's feature names, or the raw columns "
            "of either CIC-IDS-2017 release)",
            missing=missing,
        ) from None
    raw_of = {canonical: raw for raw, canonical in rename.items()}
    base = _parse_numeric(frame, [raw_of[c] for c in CANONICAL_FEATURES], CANONICAL_FEATURES)
    index = {name: j for j, name in enumerate(CANONICAL_FEATURES)}
    # Engineered features from the raw values, before non-finite values are replaced, as the
    # data layer computes them.
    engineered = engineered_features(
        base[:, index["Total Length of Fwd Packets"]],
        base[:, index["Total Fwd Packets"]],
        base[:, index["Flow Duration"]],
    )
    X = np.empty((len(frame), len(names)), dtype=np.float32)
    for j, name in enumerate(names):
        if name in index:
            X[:, j] = base[:, index[name]]
        else:
            X[:, j] = engineered[:, ENGINEERED_FEATURES.index(name)]
    return X, set(rename)


def _missing_message(missing: list[str]) -> str:
    shown = ", ".join(repr(m) for m in missing[:15])
    more = f" and {len(missing) - 15} more" if len(missing) > 15 else ""
    return f"{len(missing)} feature column(s) missing: {shown}{more}"


def _parse_numeric(frame: pd.DataFrame, columns: list[str], shown: Sequence[str]) -> np.ndarray:
    """float32 matrix of ``frame[columns]``; each column holding a non-number is named (as in
    ``shown``) in the error."""
    raw = frame[columns]
    if all(dtype.kind in "iuf" for dtype in raw.dtypes):
        return raw.to_numpy(dtype=np.float32, copy=True)  # the common case: one copy
    X = np.empty(raw.shape, dtype=np.float32)
    bad: dict[str, str] = {}
    for j, column in enumerate(shown):
        values = raw.iloc[:, j]
        if pd.api.types.is_bool_dtype(values):
            bad[str(column)] = repr(values.iloc[0])
            continue
        if pd.api.types.is_numeric_dtype(values):
            X[:, j] = values.to_numpy(dtype=np.float32, na_value=np.nan)
            continue
        # Strings such as "Infinity" or "NaN" (as CICFlowMeter writes them) are numbers; None
        # (JSON null) is a missing value; anything else is an error.
        parsed = pd.to_numeric(values, errors="coerce")
        wrong = (
            parsed.isna()
            & values.notna()
            & ~values.astype(str).str.strip().isin(["", "NaN", "nan", "NA", "N/A", "null", "None"])
        )
        # Booleans inside an object column (a JSON true) are not flow measurements.
        wrong |= values.map(lambda v: isinstance(v, bool | dict | list)).astype(bool)
        if wrong.any():
            bad[str(column)] = repr(values[wrong].iloc[0])
            continue
        X[:, j] = parsed.to_numpy(dtype=np.float32, na_value=np.nan)
    if bad:
        detail = ", ".join(f"{c!r} (e.g. {v})" for c, v in bad.items())
        raise FlowInputError(
            f"{len(bad)} feature column(s) hold non-numeric values: {detail}", non_numeric=bad
        )
    return X
