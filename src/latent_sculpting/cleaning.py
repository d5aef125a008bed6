"""What reading flows changed: non-finite values, and the report that counts every change.

Chhetri et al., "Latent Sculpting for Zero-Shot Generalization" (arXiv:2512.22179), replace the
``Infinity`` / ``NaN`` values of CIC-IDS-2017's original release (in ``Flow Bytes/s`` and
``Flow Packets/s``, from zero-duration flows) by 0; a missing cell (Zeek's unset ``-``, an empty
CSV cell) is a NaN and is treated the same way. Every replacement, rename and dropped row is
counted in a :class:`CleaningReport`, so that nothing is changed or dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


__all__ = ["NONFINITE_POLICIES", "CleaningReport", "replace_nonfinite"]

NONFINITE_POLICIES = ("zero", "median", "drop")

# Rows per block when scanning for non-finite values: bounds the temporary boolean masks to a
# few MiB instead of one mask the size of the whole feature matrix.
_BLOCK_ROWS = 1 << 16


def _add_counts(target: dict[str, int], source: dict[str, int]) -> None:
    for key, value in source.items():
        if value:
            target[key] = target.get(key, 0) + int(value)


@dataclass
class CleaningReport:
    """What loading and cleaning did to the data, step by step.

    Attributes
    ----------
    files : dict of str to dict
        Per file: ``{"schema": ..., "rows": ...}``.
    rows_read : int
        Rows read from all files.
    ignored_columns : dict of str to list of str
        Per file, columns read from the header but not used (duplicates such as
        ``Fwd Header Length.1``, improved-only features, unknown extra columns).
    label_renames : dict of str to int
        ``"raw -> canonical"`` for every raw label that was renamed, with its row count.
    unknown_labels : dict of str to int
        Labels outside the canonical vocabulary (kept as their own class, stripped).
    attempted_policy : str
        What was done with improved-release "attempted" flows.
    attempted_rows : int
        Rows flagged as attempted (``Attempted Category`` != -1 or a ``" - Attempted"`` label).
    attempted_dropped : int
        Attempted rows removed (``attempted="drop"``).
    attempted_relabelled : int
        Attempted rows relabelled ``BENIGN`` (``attempted="benign"``).
    nonfinite_policy : str
        ``"zero"``, ``"median"`` or ``"drop"``.
    posinf_replaced, neginf_replaced, nan_replaced : dict of str to int
        Per feature column, values replaced (policies ``"zero"`` and ``"median"``).
    nonfinite_rows_dropped : int
        Rows removed because a feature was non-finite (policy ``"drop"``).
    fill_values : dict of str to float
        Per affected column, the value non-finite entries were replaced with.
    engineered : list of str
        Names of the engineered features appended.
    rows_out : int
        Rows in the final table.
    """

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows_read: int = 0
    ignored_columns: dict[str, list[str]] = field(default_factory=dict)
    label_renames: dict[str, int] = field(default_factory=dict)
    unknown_labels: dict[str, int] = field(default_factory=dict)
    attempted_policy: str = "keep"
    attempted_rows: int = 0
    attempted_dropped: int = 0
    attempted_relabelled: int = 0
    nonfinite_policy: str = "zero"
    posinf_replaced: dict[str, int] = field(default_factory=dict)
    neginf_replaced: dict[str, int] = field(default_factory=dict)
    nan_replaced: dict[str, int] = field(default_factory=dict)
    nonfinite_rows_dropped: int = 0
    fill_values: dict[str, float] = field(default_factory=dict)
    engineered: list[str] = field(default_factory=list)
    rows_out: int = 0

    @property
    def values_replaced(self) -> int:
        """Total number of non-finite feature values replaced."""
        return sum(
            sum(d.values()) for d in (self.posinf_replaced, self.neginf_replaced, self.nan_replaced)
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-serialisable dictionary."""
        out = asdict(self)
        out["values_replaced"] = self.values_replaced
        return out

    def __str__(self) -> str:
        lines = [f"read {self.rows_read} rows from {len(self.files)} file(s)"]
        for name, info in self.files.items():
            lines.append(f"  {name}: {info.get('rows', 0)} rows, schema {info.get('schema')}")
        groups: dict[tuple[str, ...], list[str]] = {}
        for name, cols in self.ignored_columns.items():
            if cols:
                groups.setdefault(tuple(cols), []).append(Path(name).name)
        for cols, names in groups.items():
            lines.append(f"  ignored columns in {', '.join(names)}: {', '.join(cols)}")
        if self.label_renames:
            lines.append("labels renamed to canonical:")
            lines += [f"  {k}: {v} rows" for k, v in sorted(self.label_renames.items())]
        if self.unknown_labels:
            lines.append("unknown labels (kept as their own class):")
            lines += [f"  {k!r}: {v} rows" for k, v in sorted(self.unknown_labels.items())]
        if self.attempted_rows:
            lines.append(
                f"attempted flows: {self.attempted_rows} rows, policy {self.attempted_policy!r} "
                f"({self.attempted_dropped} dropped, {self.attempted_relabelled} relabelled BENIGN)"
            )
        lines.append(f"non-finite features (policy {self.nonfinite_policy!r}):")
        if not (self.values_replaced or self.nonfinite_rows_dropped):
            lines.append("  none found")
        for title, counts in (
            ("+inf", self.posinf_replaced),
            ("-inf", self.neginf_replaced),
            ("NaN", self.nan_replaced),
        ):
            for col, n in counts.items():
                fill = self.fill_values.get(col)
                lines.append(f"  {col}: {n} {title} replaced by {fill:g}")
        if self.nonfinite_rows_dropped:
            lines.append(f"  {self.nonfinite_rows_dropped} rows dropped")
        if self.engineered:
            lines.append(f"engineered features added: {', '.join(self.engineered)}")
        lines.append(f"rows out: {self.rows_out}")
        return "\n".join(lines)


def replace_nonfinite(
    X: np.ndarray,
    feature_names: Sequence[str],
    *,
    policy: str = "zero",
    report: CleaningReport | None = None,
) -> np.ndarray | None:
    """Handle ``inf`` / ``-inf`` / ``NaN`` feature values, in place.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        Feature matrix, modified in place (policies ``"zero"`` and ``"median"``).
    feature_names : sequence of str
        Column names, for the report.
    policy : {"zero", "median", "drop"}, default "zero"
        ``"zero"`` replaces by 0, as the paper does; ``"median"`` replaces by the median of the
        finite values of that column in ``X`` (computed on this table, so compute it on training
        data only if that matters to you); ``"drop"`` leaves ``X`` unchanged and returns a mask of
        the rows to keep.
    report : CleaningReport, optional
        Updated with per-column counts.

    Returns
    -------
    ndarray of bool or None
        For ``"drop"``: a boolean mask of the rows without non-finite values. Otherwise None.

    Raises
    ------
    ValueError
        If ``policy`` is unknown or ``feature_names`` does not match ``X``.
    """
    if policy not in NONFINITE_POLICIES:
        raise ValueError(f"nonfinite policy must be one of {NONFINITE_POLICIES}, got {policy!r}")
    if X.ndim != 2 or X.shape[1] != len(feature_names):
        raise ValueError(f"X has shape {X.shape} but {len(feature_names)} feature names were given")
    n, d = X.shape
    posinf = np.zeros(d, dtype=np.int64)
    neginf = np.zeros(d, dtype=np.int64)
    nan = np.zeros(d, dtype=np.int64)
    bad_rows = np.zeros(n, dtype=bool) if policy == "drop" else None
    for start in range(0, n, _BLOCK_ROWS):
        block = X[start : start + _BLOCK_ROWS]
        bad = ~np.isfinite(block)
        if not bad.any():
            continue
        nan += np.isnan(block).sum(axis=0)
        posinf += np.isposinf(block).sum(axis=0)
        neginf += np.isneginf(block).sum(axis=0)
        if bad_rows is not None:
            bad_rows[start : start + _BLOCK_ROWS] = bad.any(axis=1)
        elif policy == "zero":
            block[bad] = 0.0
    affected = np.flatnonzero(posinf + neginf + nan)
    fills: dict[str, float] = {}
    if policy == "median":
        for j in affected:
            col = X[:, j]
            finite = np.isfinite(col)
            fill = float(np.median(col[finite])) if finite.any() else 0.0
            col[~finite] = fill
            fills[feature_names[j]] = fill
    elif policy == "zero":
        fills = {feature_names[j]: 0.0 for j in affected}
    if report is not None:
        report.nonfinite_policy = policy
        if bad_rows is not None:
            report.nonfinite_rows_dropped += int(bad_rows.sum())
        else:
            names = list(feature_names)
            _add_counts(report.posinf_replaced, dict(zip(names, posinf.tolist(), strict=True)))
            _add_counts(report.neginf_replaced, dict(zip(names, neginf.tolist(), strict=True)))
            _add_counts(report.nan_replaced, dict(zip(names, nan.tolist(), strict=True)))
            report.fill_values.update(fills)
    return None if bad_rows is None else ~bad_rows
