"""Alerts as a SIEM reads them: JSON lines with Elastic Common Schema field names.

Each scored flow the sensor reports becomes one JSON object (:func:`flow_events`):
``@timestamp`` (when the flow ended), ``event.kind`` (``alert`` for a flagged flow, ``event``
for the others when every flow is written), ``event.category``/``event.type`` (network
connection), ``event.risk_score`` (the model's score), ``event.start``/``event.end``/
``event.duration`` (nanoseconds), ``event.created`` (when the sensor wrote it), ``source.ip``,
``source.port``, ``destination.ip``, ``destination.port``, ``network.transport``,
``network.iana_number``, ``message`` (the explanation) and, under the custom
``latent_sculpting`` key, what ECS has no field for (p-value, threshold, which stage flagged
it). The lines are written by ecs-logging's formatter through a standard logging handler, to
stdout or to a file rotated by size (:class:`EventWriter`).

Where a flow's time and endpoints are is the format's business
(:attr:`~latent_sculpting.io.formats.base.FlowFormat.endpoint_columns`); a format without them
gives alerts with the sensor's clock and no addresses.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from latent_sculpting.io.formats import FlowFormat

__all__ = ["ENDPOINT_COLUMNS", "EventWriter", "endpoint_frame", "flow_events", "incident_event"]

#: Columns of :func:`endpoint_frame`, the names the incident grouper reads.
ENDPOINT_COLUMNS = ("time", "end", "source", "destination", "source_port", "destination_port")
#: IANA protocol numbers -> ECS ``network.transport`` names.
TRANSPORTS = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def endpoint_frame(records: pa.Table, fmt: FlowFormat) -> pd.DataFrame:
    """Each record's time (start, ``end``: epoch seconds, NaN when unknown), hosts, ports and
    transport, read from its raw columns through the format's endpoint columns.

    Returns
    -------
    DataFrame
        :data:`ENDPOINT_COLUMNS`, ``transport`` (ECS name, or None) and ``iana_number``, one
        row per record.
    """
    n = records.num_rows
    raw = fmt.canonical_columns(records.column_names)
    by_canonical = {canonical.casefold(): name for name, canonical in raw.items()}
    roles = dict(fmt.endpoint_columns or {})
    units = dict(fmt.endpoint_units)

    def column(role: str) -> pa.ChunkedArray | None:
        name = roles.get(role)
        if not isinstance(name, str) or name.casefold() not in by_canonical:
            return None
        return records.column(by_canonical[name.casefold()])

    out = pd.DataFrame(index=pd.RangeIndex(n))
    out["time"] = _seconds(column("time"), units.get("time", "s"), n)
    duration = _seconds(column("duration"), units.get("duration", "s"), n)
    out["end"] = np.where(np.isnan(duration), out["time"], out["time"] + np.nan_to_num(duration))
    for role, name in (("src", "source"), ("dst", "destination")):
        values = column(role)
        out[name] = None if values is None else _text(values)
    for role, name in (("sport", "source_port"), ("dport", "destination_port")):
        values = column(role)
        out[name] = pd.array(
            [None] * n if values is None else pc.cast(values, pa.int64(), safe=False).to_pylist(),
            dtype="Int64",
        )
    transport, number = _transport(column("proto"), n)
    out["transport"], out["iana_number"] = transport, number
    return out


def _seconds(values: pa.ChunkedArray | None, unit: str, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    if unit == "datetime" or pa.types.is_timestamp(values.type):
        stamps = pd.to_datetime(values.to_pandas(), errors="coerce", utc=True)
        return stamps.astype("int64").to_numpy() / 1e9 if len(stamps) else np.zeros(0)
    numbers = pc.cast(values, pa.float64(), safe=False).to_numpy(zero_copy_only=False)
    return np.asarray(numbers, dtype=np.float64) * _SECONDS[unit]


def _text(values: pa.ChunkedArray) -> list:
    return pc.cast(values, pa.string(), safe=False).to_pylist()


def _transport(values: pa.ChunkedArray | None, n: int) -> tuple[list, list]:
    if values is None:
        return [None] * n, [None] * n
    if pa.types.is_integer(values.type) or pa.types.is_floating(values.type):
        numbers = [None if v is None else int(v) for v in values.to_pylist()]
        return [TRANSPORTS.get(v) for v in numbers], numbers
    names = [None if v is None else v.lower() for v in _text(values)]
    number_of = {name: number for number, name in TRANSPORTS.items()}
    return names, [number_of.get(v) for v in names]


def flow_events(
    scored: pd.DataFrame,
    endpoints: pd.DataFrame,
    *,
    rows: np.ndarray,
    threshold: float,
    model: str,
    created: float | None = None,
) -> list[tuple[float, dict[str, Any]]]:
    """ECS fields of the flows ``rows`` of a scored frame (``Scorer.score``'s columns),
    each with its ``@timestamp`` as epoch seconds (the flow's end, else the sensor's clock).

    Parameters
    ----------
    scored : DataFrame
    endpoints : DataFrame
        :func:`endpoint_frame` of the same flows.
    rows : ndarray of int
    threshold : float
        The model's threshold, reported beside each score.
    model : str
        The model file, reported as ``observer.name``'s detector.
    created : float, optional
        ``event.created`` (epoch seconds); default now.
    """
    created = time.time() if created is None else created
    stamp = _iso(created)
    explained = "explanation" in scored.columns
    # Columns read once as arrays and lists: a cell lookup through pandas per field and row
    # cost more than everything else here.
    flagged_all = scored["is_attack"].to_numpy(dtype=bool)
    scores = scored["score"].to_numpy(dtype=np.float64)
    p_values = scored["p_value"].to_numpy(dtype=np.float64)
    flagged_by = scored["flagged_by"].tolist()
    explanations = scored["explanation"].tolist() if explained else None
    starts = endpoints["time"].to_numpy(dtype=np.float64)
    ends_all = endpoints["end"].to_numpy(dtype=np.float64)
    hosts = {name: endpoints[name].tolist() for name in ("source", "destination")}
    ports = {name: endpoints[f"{name}_port"].tolist() for name in ("source", "destination")}
    transports = endpoints["transport"].tolist()
    numbers = endpoints["iana_number"].tolist()
    out = []
    for row in rows.tolist():
        ends = ends_all[row]
        flagged = bool(flagged_all[row])
        fields: dict[str, Any] = {
            "event.kind": "alert" if flagged else "event",
            "event.category": ["network"],
            "event.type": ["connection"],
            "event.dataset": "latent_sculpting.flow",
            "event.risk_score": float(scores[row]),
            "event.created": stamp,
        }
        start = starts[row]
        if not np.isnan(start):
            fields["event.start"] = _iso(start)
            fields["event.end"] = _iso(ends)
            fields["event.duration"] = int(round((ends - start) * 1e9))
        for name in ("source", "destination"):
            address = hosts[name][row]
            if address is not None:
                fields[f"{name}.ip"] = address
            port = ports[name][row]
            if not pd.isna(port):
                fields[f"{name}.port"] = int(port)
        if transports[row] is not None:
            fields["network.transport"] = transports[row]
        if numbers[row] is not None:
            fields["network.iana_number"] = str(numbers[row])
        if explanations is not None and flagged:
            fields["message"] = explanations[row]
        fields["latent_sculpting"] = {
            "p_value": float(p_values[row]),
            "threshold": float(threshold),
            "flagged_by": flagged_by[row] or None,
            "model": model,
        }
        out.append((created if np.isnan(ends) else float(ends), fields))
    return out


def incident_event(
    incident: dict[str, Any], *, model: str, phase: str = "info"
) -> tuple[float, dict[str, Any]]:
    """ECS fields of one incident (its ``to_dict()``), with its ``@timestamp`` (epoch seconds:
    its end, else now): ``event.kind: alert``, ``event.type: [phase]`` (``start`` when a live
    sensor raises an open incident, ``end`` when it closes, ``info`` for a finished list),
    ``event.dataset: latent_sculpting.incident``,
    ``event.start``/``event.end``, ``source.ip``, ``destination.ip`` when the incident has one
    destination, ``event.risk_score`` and ``message`` (its explanation) where the incident has
    them; the whole incident under ``latent_sculpting.incident``."""
    fields: dict[str, Any] = {
        "event.kind": "alert",
        "event.category": ["network", "intrusion_detection"],
        "event.type": [phase],
        "event.dataset": "latent_sculpting.incident",
        "event.created": _iso(time.time()),
    }
    start, end = incident.get("start"), incident.get("end")
    if isinstance(start, int | float):
        fields["event.start"] = _iso(start)
    if isinstance(end, int | float):
        fields["event.end"] = _iso(end)
        if isinstance(start, int | float):
            fields["event.duration"] = int(round((end - start) * 1e9))
    if incident.get("source") is not None:
        fields["source.ip"] = str(incident["source"])
    destination = incident.get("destination")
    if isinstance(destination, str):
        fields["destination.ip"] = destination
    score = incident.get("score")
    if isinstance(score, int | float):
        fields["event.risk_score"] = float(score)
    text = incident.get("explanation") or incident.get("reason")
    if text:
        fields["message"] = str(text)
    fields["latent_sculpting"] = {"incident": incident, "model": model}
    stamp = float(end) if isinstance(end, int | float) else time.time()
    return stamp, fields


def _iso(seconds: float) -> str:
    """ISO 8601 in UTC to the millisecond, cut (not rounded) as ecs-logging cuts ``@timestamp``."""
    ms = int(np.floor(seconds * 1000))
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


class EventWriter:
    """Writes ECS events as JSON lines, one per event, through ecs-logging's formatter.

    Lines reach the file or stream when :meth:`flush` is called (the sensor flushes after each
    scored batch) or the buffer fills, not line by line.

    Parameters
    ----------
    path : path, optional
        A file to append to, rotated before a line would take it past ``max_bytes``
        (``path.1`` ... ``path.<backups>`` kept, by
        :meth:`logging.handlers.RotatingFileHandler.doRollover`); None: standard output.
    max_bytes : int, default 100 MiB
        0 never rotates.
    backups : int, default 5
        0 never rotates either (as the standard library's handler).
    """

    def __init__(
        self, path: str | Path | None = None, *, max_bytes: int = 100 << 20, backups: int = 5
    ) -> None:
        import ecs_logging

        if max_bytes < 0 or backups < 0:
            raise ValueError(f"max_bytes and backups must be >= 0, got {max_bytes}, {backups}")
        # The standard library's handlers only open, rename and reopen the files here: their
        # emit formats each record twice (once to measure it for rotation), stats the file and
        # flushes per record, which took more time than scoring at the sensor's rates.
        self._rotating: logging.handlers.RotatingFileHandler | None = None
        if path is None:
            self._stream: Any = sys.stdout
            self._size = 0
        else:
            self._rotating = logging.handlers.RotatingFileHandler(
                path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
            self._stream = self._rotating.stream
            self._size = Path(path).stat().st_size
        self._rotate_at = max_bytes if self._rotating is not None and backups else 0
        # What the logging call site was (file, line, process) says nothing about a flow.
        self._formatter = ecs_logging.StdlibFormatter(
            exclude_fields=["log.origin", "log.original", "process", "log.logger"]
        )
        self.written = 0

    def write(self, timestamp: float, fields: dict[str, Any], message: str = "") -> None:
        """One event at ``timestamp`` (epoch seconds) with these ECS fields (dotted names)."""
        level = logging.WARNING if fields.get("event.kind") == "alert" else logging.INFO
        record = logging.LogRecord("latent_sculpting.watch", level, "", 0, message, (), None)
        ms = int(np.floor(timestamp * 1000))
        record.created, record.msecs = ms / 1000, ms % 1000
        fields = dict(fields)
        text = fields.pop("message", None)
        if text:
            record.msg = text
        record.__dict__.update(fields)
        line = self._formatter.format(record) + "\n"
        size = len(line.encode("utf-8"))
        if self._rotate_at and self._size and self._size + size > self._rotate_at:
            self._stream.flush()
            self._rotating.doRollover()
            self._stream, self._size = self._rotating.stream, 0
        self._stream.write(line)
        self._size += size
        self.written += 1

    def flush(self) -> None:
        self._stream.flush()

    def close(self) -> None:
        self.flush()
        if self._rotating is not None:
            self._rotating.close()
