"""Words and checks for incidents: an incident's one-sentence explanation, the feature names
in a flow's explanation text, and the columns of a batch of scored flows, checked.

Kept apart from :mod:`latent_sculpting.monitor.incidents` (the grouping itself).
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "FRAME_COLUMNS",
    "check_frame",
    "duration_text",
    "explain_incident",
    "iso_time",
    "port_value",
    "reason_features",
]

#: Columns every frame handed to the grouper must have; ``reason``, ``p_value`` and
#: ``flagged_by`` are read when present.
FRAME_COLUMNS = ("time", "source", "destination", "destination_port", "score", "flagged")

# A numeric reason reads "NAME VALUE (above ... of benign ...)", a categorical one
# "NAME = VALUE (never in benign flows ...)" (monitor.reasons writes them so).
_NUMERIC_REASON = re.compile(r"^(?P<name>.+?) \S+ \((?:above|below) ")
_CATEGORICAL_REASON = re.compile(r"^(?P<name>.+?) = .* \((?:never in|in [\d.e+-]+ %) ")


def explain_incident(incident: Any) -> str:
    """One sentence: who, how many flagged flows, to what, over how long, and the features
    most often named (e.g. ``10.0.0.5: 412 flagged flows to 387 ports of 10.0.0.3 over 58 s;
    most often named: ctx_src_dst_ports_1min``)."""
    n = incident.n_flagged
    flows = f"{n:,} flagged flow" + ("" if n == 1 else "s")
    more = "at least " if incident.distinct_capped else ""
    host = incident.top_destinations[0][0] if incident.top_destinations else "?"
    port = incident.top_ports[0][0] if incident.top_ports else "?"
    if incident.n_destinations <= 1 and incident.n_ports <= 1:
        target = f"to {host} port {port}"
    elif incident.n_destinations <= 1:
        target = f"to {more}{incident.n_ports:,} ports of {host}"
    elif incident.n_ports <= 1:
        target = f"to {more}{incident.n_destinations:,} hosts on port {port}"
    else:
        target = f"to {more}{incident.n_destinations:,} hosts on {more}{incident.n_ports:,} ports"
    when = (
        f"at {iso_time(incident.start)}" if n == 1 else f"over {duration_text(incident.duration)}"
    )
    text = f"{incident.source}: {flows} {target} {when}"
    named = [name for name, _ in incident.evidence["features"][:3]]
    if named:
        text += "; most often named: " + ", ".join(named)
    return text


def reason_features(reason: Any) -> list[str]:
    """The feature names in one flow's explanation text (its ``"; "``-separated reasons)."""
    if not isinstance(reason, str) or not reason:
        return []
    found = []
    for part in reason.split("; "):
        match = _CATEGORICAL_REASON.match(part) or _NUMERIC_REASON.match(part)
        if match:
            found.append(match.group("name"))
    return found


def check_frame(frame: pd.DataFrame, offset: int) -> dict[str, Any]:
    """The columns of a batch of scored flows as arrays, checked (``offset``: the stream
    position of its first row, for messages).

    Raises
    ------
    TypeError
        If ``frame`` is not a DataFrame.
    ValueError
        If a column of :data:`FRAME_COLUMNS` is missing, a time or score is not a finite
        number (the row named) or ``flagged`` is not boolean.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"frame must be a pandas DataFrame, got {type(frame).__name__}")
    missing = [c for c in FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"the scored flows lack column(s) {missing}; they have {list(frame)}")
    out: dict[str, Any] = {}
    for name in ("time", "score"):
        try:
            values = frame[name].to_numpy(dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(
                f"column {name!r} must hold numbers, got {frame[name].dtype}"
            ) from None
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            row = int(bad[0])
            raise ValueError(
                f"row {offset + row} of the stream, column {name!r}: "
                f"{float(values[row])!r} is not a finite number"
            )
        out[name] = values
    flagged = frame["flagged"]
    if flagged.dtype != bool:
        raise ValueError(f"column 'flagged' must be boolean, got {flagged.dtype}")
    out["flagged"] = flagged.to_numpy()
    for name in ("source", "destination"):
        out[name] = frame[name].astype(str).to_numpy(dtype=object)
    # Converted flow by flow where the grouper reads it (port_value): only flows of hosts
    # with incidents.
    out["destination_port"] = frame["destination_port"].to_numpy(dtype=object)
    out["p_value"] = None
    if "p_value" in frame.columns:
        p = frame["p_value"].to_numpy(dtype=np.float64)
        out["p_value"] = np.where(np.isfinite(p), p, 1.0)
    for name in ("reason", "flagged_by"):
        out[name] = frame[name].to_numpy(dtype=object) if name in frame.columns else None
    return out


def port_value(value: Any) -> Any:
    """A port as an int when it is one (JSON-safe), else its text."""
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating) and math.isfinite(value) and value == int(value):
        return int(value)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=timezone.utc).isoformat(timespec="seconds")


def duration_text(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
