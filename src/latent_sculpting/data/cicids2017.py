"""CIC-IDS-2017: the embedded sample and :func:`load_cicids2017` for either public release.

The improved release labels flows of attacks that did not get through as ``"<class> -
Attempted"`` (and sets ``Attempted Category``); :func:`load_cicids2017` keeps, drops or
relabels them, and counts what it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.formats.cicids2017 import ATTEMPTED_SUFFIX, BENIGN
from latent_sculpting.io.table import FlowTable, read_flows

__all__ = ["ATTEMPTED_POLICIES", "load_cicids2017", "sample_path"]

PathLike = str | Path
ATTEMPTED_POLICIES = ("keep", "drop", "benign")


def sample_path() -> Path:
    """Folder of the vendored improved CIC-IDS-2017 sample (56,277 flows, 5 Parquet files)."""
    return Path(__file__).resolve().parent / "sample"


def load_cicids2017(
    path: PathLike | Sequence[PathLike] | None = None,
    *,
    engineered: bool = True,
    attempted: str = "keep",
    keep_identifiers: bool = True,
) -> FlowTable:
    """Load CIC-IDS-2017 flows (original or improved release) into canonical form.

    Features are the 76 flow features common to both releases under their original names,
    plus, by default, the two engineered features of Chhetri et al. (arXiv:2512.22179). Labels
    are mapped to the canonical vocabulary; identifiers (IPs, ports, timestamp, ...) are kept
    in ``identifiers`` and never in ``X``. Non-finite values become 0 (counted in
    ``report``).

    Parameters
    ----------
    path : path, list of paths, or None
        A folder, a file, or a list of them. None loads the vendored improved-release sample
        (:func:`sample_path`).
    engineered : bool, default True
        Append ``"Fwd Bytes/Packet (engineered)"`` and ``"Fwd Packets/s (engineered)"``.
    attempted : {"keep", "drop", "benign"}, default "keep"
        Improved-release "attempted" flows (``Attempted Category`` != -1, labels ending in
        ``" - Attempted"``): keep them with their label (its own class), drop them, or relabel
        them ``BENIGN`` as Engelen et al. suggest (they carry no attack payload).
    keep_identifiers : bool, default True

    Raises
    ------
    FileNotFoundError, FlowInputError
        For a missing path, a file that matches neither release, a missing ``Label`` column or
        label, or a bad value (the message names the file, line and column).

    Examples
    --------
    >>> table = load_cicids2017()
    >>> len(table), table.X.shape[1]
    (56277, 78)
    """
    if attempted not in ATTEMPTED_POLICIES:
        raise ValueError(f"attempted must be one of {ATTEMPTED_POLICIES}, got {attempted!r}")
    table = read_flows(
        sample_path() if path is None else path,
        format="cicids2017",
        engineered=engineered,
        keep_identifiers=True,
    )
    if table.labels is None:
        raise FlowInputError(f"{table.files[0]}: no 'Label' column", path=table.files[0])
    table = _apply_attempted(table, attempted)
    if not keep_identifiers:
        table.identifiers = pd.DataFrame(index=pd.RangeIndex(len(table)))
    return table


def _apply_attempted(table: FlowTable, policy: str) -> FlowTable:
    report = table.report
    report.attempted_policy = policy
    mask = np.fromiter((str(v).endswith(ATTEMPTED_SUFFIX) for v in table.labels), bool, len(table))
    category = table.identifiers.get("Attempted Category")
    if category is not None:
        mask |= pd.to_numeric(category, errors="coerce").fillna(-1).to_numpy() != -1
    n = int(mask.sum())
    report.attempted_rows += n
    if not n or policy == "keep":
        return table
    if policy == "benign":
        table.labels[mask] = BENIGN
        report.attempted_relabelled += n
        return table
    report.attempted_dropped += n
    table = table.subset(~mask)
    report.rows_out = len(table)
    return table
