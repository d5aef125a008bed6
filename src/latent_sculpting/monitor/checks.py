"""Checks of the matrices and names the monitor is given, each error naming the offending
row, column or value."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["MAX_NAME_LENGTH", "as_matrix", "check_names", "check_one_hot"]

#: Longest feature or column name accepted (a bound on what a model file may ask for).
MAX_NAME_LENGTH = 512


def as_matrix(X: Any, n_features: int | None, *, what: str) -> np.ndarray:
    try:
        arr = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be numeric: {error}") from None
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (rows x features), got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{what} has {arr.shape[1]} features; the profile has {n_features}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{what} has a NaN or infinite value at row {row}, column {col}")
    return arr


def check_names(names: Sequence[Any], *, what: str = "feature_names") -> tuple[str, ...]:
    names = list(names)
    for name in names:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(f"{what}: {name!r} is not a name of 1 to {MAX_NAME_LENGTH} characters")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{what}: names repeat: {repeated[:5]}")
    return tuple(names)


def check_one_hot(block: np.ndarray, column: str, what: str) -> None:
    ok = ((block == 0) | (block == 1)).all(axis=1) & (block.sum(axis=1) == 1)
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"{what}, row {row}: the indicators of categorical column {column!r} are not one-hot "
            f"(values {block[row].tolist()})"
        )
