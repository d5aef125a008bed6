"""Checks of the data given to the estimator: features, targets and classes, at fit and score.

Every check names what is wrong (the shape, the row and column of a bad value, the missing
feature columns) and nothing is repaired silently: NaN and infinite values are refused, not
imputed; a DataFrame's columns are matched by name, not by position.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["check_fit_data", "check_features"]


def check_fit_data(
    X: Any, y: Any, groups: Sequence[str] | None, *, stage1: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Features, 0/1 targets and classes for ``fit``, and the feature names of a DataFrame.

    Returns
    -------
    X : ndarray of float32, shape (n_rows, n_features)
    y : ndarray of int64
        Zeros when ``y`` is None (benign-only data).
    groups : ndarray of str or None
    names : ndarray of str or None
        Column names when ``X`` is a DataFrame.

    Raises
    ------
    ValueError
        If ``X`` is empty, not 2-D, not numeric or not finite; if ``y`` or ``groups`` does not
        have one entry per row; if ``y`` holds other values than 0 and 1, no benign row, or (with
        ``stage1``) no attack.
    """
    columns = getattr(X, "columns", None)
    names = None if columns is None else np.asarray([str(c) for c in columns], dtype=object)
    arr = _as_finite_matrix(X)
    if len(arr) == 0:
        raise ValueError("X has no rows")
    n = len(arr)
    y = np.zeros(n, dtype=np.int64) if y is None else np.asarray(y)
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"y must be 1-D with {n} entries (one per row of X), got {y.shape}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(
            f"y must hold 0 (benign) and 1 (attack) only, found {sorted(values, key=str)}"
        )
    if 0 not in values:
        raise ValueError("y has no benign rows (0): Stage 2 needs benign flows to fit")
    if stage1 and values == {0}:
        raise ValueError(
            "y has only one class (benign): Stage 1 needs known attacks (1); "
            "pass stage1=False (and score='nll', forest_trees=0) for a benign-only model"
        )
    groups_arr = None if groups is None else np.asarray(groups).astype(str)
    if groups_arr is not None and len(groups_arr) != n:
        raise ValueError(f"groups has {len(groups_arr)} entries but X has {n} rows")
    return arr, y.astype(np.int64), groups_arr, names


def check_features(X: Any, *, n_features: int, feature_names: np.ndarray | None) -> np.ndarray:
    """Features to score: a DataFrame's columns picked by the names seen in ``fit``.

    Raises
    ------
    ValueError
        If feature columns seen in ``fit`` are missing, or ``X`` has another width, is not
        numeric or not finite.
    """
    columns = getattr(X, "columns", None)
    if columns is not None and feature_names is not None:
        present = {str(c) for c in columns}
        missing = [c for c in feature_names if c not in present]
        if missing:
            raise ValueError(
                f"X is missing {len(missing)} feature column(s) the model was fitted on: "
                f"{missing[:10]}"
            )
        X = X[list(feature_names)]
    arr = _as_matrix(X)
    if arr.shape[1] != n_features:
        raise ValueError(f"X has {arr.shape[1]} features, but the model was fitted on {n_features}")
    return _finite(arr)


def _as_finite_matrix(X: Any) -> np.ndarray:
    return _finite(_as_matrix(X))


def _as_matrix(X: Any) -> np.ndarray:
    try:
        arr = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"X must be numeric: {error}") from None
    if arr.ndim != 2:
        raise ValueError(f"X must be 2-D (rows x features), got shape {arr.shape}")
    return arr


def _finite(arr: np.ndarray) -> np.ndarray:
    bad = ~np.isfinite(arr)
    if bad.any():
        rows, cols = np.nonzero(bad)
        raise ValueError(
            f"X has {bad.sum()} NaN or infinite value(s), first at row {rows[0]}, "
            f"column {cols[0]}; clean them first (latent_sculpting.data replaces them by 0)"
        )
    return arr
