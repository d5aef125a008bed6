"""What reading flows changed: non-finite values, and the report that counts every change.

Chhetri et al., "Latent Sculpting for Zero-Shot Generalization" (arXiv:2512.22179), replace the
``Infinity`` / ``NaN`` values of CIC-IDS-2017's original release (in ``Flow Bytes/s`` and
``Flow Packets/s``, from zero-duration flows) by 0; a missing cell (Zeek's unset ``-``, an empty
CSV cell) is a NaN and is treated the same way. Every replacement and every dropped or
relabelled row is counted in a :class:`CleaningReport`, so that nothing changes silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CleaningReport", "replace_nonfinite"]

# Rows per block when scanning for non-finite values: bounds the temporary boolean masks to a
# few MiB instead of one mask the size of the whole feature matrix.
_BLOCK_ROWS = 1 << 16


def _add_counts(target: dict[str, int], source: dict[str, int]) -> None:
    for key, value in source.items():
        if value:
            target[key] = target.get(key, 0) + int(value)


@dataclass
class CleaningReport:
    """What reading did to the data, step by step.

    Attributes
    ----------
    files : dict of str to dict
        Per file: ``{"format": ..., "rows": ...}``.
    rows_read : int
        Rows read from all files.
    attempted_policy : str
        What was done with CIC-IDS-2017 improved-release "attempted" flows.
    attempted_rows, attempted_dropped, attempted_relabelled : int
        Rows flagged as attempted, and of them dropped or relabelled benign.
    unlabelled_left_out : dict of str to int
        Per label, rows left out of learning because the format says nobody labelled them
        (CTU-13's ``Background``).
    posinf_replaced, neginf_replaced, nan_replaced : dict of str to int
        Per feature column, values replaced by 0 (NaN counts missing cells too).
    engineered : list of str
        Names of the engineered features appended.
    context_out_of_order : dict of str to int
        Per file, records that started before an earlier record of their batch: sorted by start
        time for their context features.
    context_notes : dict of str to int
        What the context features decided about values (e.g. flows without a connection state,
        counted as answered), with the number of flows.
    rows_out : int
        Rows in the final table.
    """

    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    rows_read: int = 0
    attempted_policy: str = "keep"
    attempted_rows: int = 0
    attempted_dropped: int = 0
    attempted_relabelled: int = 0
    unlabelled_left_out: dict[str, int] = field(default_factory=dict)
    posinf_replaced: dict[str, int] = field(default_factory=dict)
    neginf_replaced: dict[str, int] = field(default_factory=dict)
    nan_replaced: dict[str, int] = field(default_factory=dict)
    engineered: list[str] = field(default_factory=list)
    context_out_of_order: dict[str, int] = field(default_factory=dict)
    context_notes: dict[str, int] = field(default_factory=dict)
    rows_out: int = 0

    @property
    def values_replaced(self) -> int:
        """Total number of non-finite or missing feature values replaced."""
        return sum(
            sum(d.values()) for d in (self.posinf_replaced, self.neginf_replaced, self.nan_replaced)
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-serialisable dictionary."""
        out = asdict(self)
        out["values_replaced"] = self.values_replaced
        return out

    def __str__(self) -> str:
        lines = [f"read {self.rows_read} rows from {len(self.files)} file(s)"]
        for name, info in self.files.items():
            lines.append(f"  {Path(name).name}: {info.get('rows', 0)} rows ({info.get('format')})")
        if self.attempted_rows:
            lines.append(
                f"attempted flows: {self.attempted_rows} rows, policy {self.attempted_policy!r} "
                f"({self.attempted_dropped} dropped, {self.attempted_relabelled} relabelled BENIGN)"
            )
        for label, n in self.unlabelled_left_out.items():
            lines.append(
                f"left out {n} flows labelled {label!r}: unlabelled, neither benign nor attack"
            )
        lines.append("non-finite or missing feature values:")
        if not self.values_replaced:
            lines.append("  none found")
        for title, counts in (
            ("+inf", self.posinf_replaced),
            ("-inf", self.neginf_replaced),
            ("NaN or missing", self.nan_replaced),
        ):
            for col, n in counts.items():
                lines.append(f"  {col}: {n} {title} replaced by 0")
        if self.engineered:
            lines.append(f"engineered features added: {', '.join(self.engineered)}")
        for name, n in self.context_out_of_order.items():
            lines.append(f"{name}: {n} records out of time order, sorted for context features")
        for note, n in self.context_notes.items():
            lines.append(f"context features: {n} {note}")
        lines.append(f"rows out: {self.rows_out}")
        return "\n".join(lines)


def replace_nonfinite(
    X: np.ndarray,
    feature_names: Sequence[str],
    *,
    report: CleaningReport | None = None,
) -> None:
    """Replace ``inf`` / ``-inf`` / ``NaN`` feature values by 0, in place, counting them.

    Parameters
    ----------
    X : ndarray of shape (n_rows, n_features)
        Feature matrix, modified in place.
    feature_names : sequence of str
        Column names, for the report.
    report : CleaningReport, optional
        Updated with per-column counts.

    Raises
    ------
    ValueError
        If ``feature_names`` does not match ``X``.
    """
    if X.ndim != 2 or X.shape[1] != len(feature_names):
        raise ValueError(f"X has shape {X.shape} but {len(feature_names)} feature names were given")
    n, d = X.shape
    posinf = np.zeros(d, dtype=np.int64)
    neginf = np.zeros(d, dtype=np.int64)
    nan = np.zeros(d, dtype=np.int64)
    for start in range(0, n, _BLOCK_ROWS):
        block = X[start : start + _BLOCK_ROWS]
        bad = ~np.isfinite(block)
        if not bad.any():
            continue
        nan += np.isnan(block).sum(axis=0)
        posinf += np.isposinf(block).sum(axis=0)
        neginf += np.isneginf(block).sum(axis=0)
        block[bad] = 0.0
    if report is not None:
        names = list(feature_names)
        _add_counts(report.posinf_replaced, dict(zip(names, posinf.tolist(), strict=True)))
        _add_counts(report.neginf_replaced, dict(zip(names, neginf.tolist(), strict=True)))
        _add_counts(report.nan_replaced, dict(zip(names, nan.tolist(), strict=True)))
