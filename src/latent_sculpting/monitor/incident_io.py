"""Incidents in and out: scored flows as the grouper reads them, and incidents as JSON lines.

A scored flow's start time and endpoints are the identifier columns its format names
(:attr:`~latent_sculpting.io.formats.base.FlowFormat.endpoint_columns`: Zeek's ``ts``,
``id.orig_h``, ``id.resp_h``, ``id.resp_p``; CIC-IDS-2017's ``Timestamp``, ``Src IP``, ...).
:func:`incident_frame` turns a frame :class:`~latent_sculpting.serve.scoring.Scorer` returned
into the columns :class:`~latent_sculpting.monitor.incidents.IncidentGrouper` reads.
:class:`IncidentLog` writes incidents as JSON lines, atomically; :func:`read_incidents` reads
them back, checked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from latent_sculpting.atomic import publish, temporary_path
from latent_sculpting.io.context.stage import start_seconds
from latent_sculpting.io.formats import get_format

__all__ = [
    "INCIDENT_ROLES",
    "IncidentLog",
    "incident_columns",
    "incident_frame",
    "read_incidents",
]

#: The endpoint roles incidents need: start time, source, destination, destination port.
INCIDENT_ROLES = ("time", "src", "dst", "dport")
#: Keys every incident line must have (what the report reads).
_REQUIRED = ("id", "source", "start", "end", "n_flows", "n_flagged", "score", "explanation")


def incident_columns(format_name: str, columns: Sequence[str]) -> tuple[dict[str, str], str]:
    """The columns (as ``columns`` spells them) holding each role of :data:`INCIDENT_ROLES`,
    and the unit of the time column.

    Raises
    ------
    ValueError
        If the format carries no start time and endpoints, or ``columns`` lack them (what is
        wanted and what there is, named).
    """
    fmt = get_format(format_name)
    present = {str(c).casefold(): str(c) for c in columns}
    spellings = [(fmt.endpoint_columns, fmt.endpoint_units), *fmt.endpoint_alternatives]
    wanted = []
    for roles, units in spellings:
        if not roles:
            continue
        names = {r: roles.get(r) for r in INCIDENT_ROLES}
        wanted.append(", ".join(f"{r}: {n}" for r, n in names.items()))
        if all(isinstance(n, str) and n.casefold() in present for n in names.values()):
            return {r: present[n.casefold()] for r, n in names.items()}, units.get("time", "s")
    if not wanted:
        raise ValueError(
            f"incidents group flows by time and endpoints, and the {fmt.name} format carries "
            "none (no start time and addresses): its flows cannot be grouped into incidents"
        )
    raise ValueError(
        "incidents group flows by time and endpoints; these flows lack some of them (wanted "
        f"{' or '.join(wanted)}; they have {', '.join(map(str, columns))})"
    )


def incident_frame(
    scored: pd.DataFrame, format_name: str, roles: tuple[dict[str, str], str] | None = None
) -> pd.DataFrame:
    """The columns the grouper reads, from a frame of scored flows.

    Parameters
    ----------
    scored : DataFrame
        As :meth:`Scorer.score <latent_sculpting.serve.scoring.Scorer.score>` returns it:
        identifier columns, ``score``, ``p_value``, ``is_attack``, ``flagged_by`` and maybe
        ``explanation``.
    format_name : str
        The model's flow format (``model.spec_.format``).
    roles : (dict, str), optional
        :func:`incident_columns`' answer, when already known.

    Returns
    -------
    DataFrame
        ``time`` (epoch seconds), ``source``, ``destination``, ``destination_port``,
        ``score``, ``flagged``, ``p_value``, ``flagged_by`` and ``reason`` (when explained).
    """
    names, unit = incident_columns(format_name, list(scored.columns)) if roles is None else roles
    fmt = get_format(format_name)
    time_column = scored[names["time"]]
    column = pa.chunked_array([pa.Array.from_pandas(time_column)])
    out = pd.DataFrame(
        {
            "time": start_seconds(column, unit, names["time"], fmt),
            "source": scored[names["src"]].astype(str).to_numpy(dtype=object),
            "destination": scored[names["dst"]].astype(str).to_numpy(dtype=object),
            "destination_port": scored[names["dport"]].to_numpy(dtype=object),
            "score": scored["score"].to_numpy(dtype=np.float64),
            "flagged": scored["is_attack"].to_numpy(dtype=bool),
        }
    )
    for source, target in (("p_value", "p_value"), ("flagged_by", "flagged_by")):
        if source in scored.columns:
            out[target] = scored[source].to_numpy()
    if "explanation" in scored.columns:
        out["reason"] = scored["explanation"].to_numpy(dtype=object)
    return out


class IncidentLog:
    """Incidents written as JSON lines to a temporary file, renamed into place by
    :meth:`close` (a run that fails leaves no partial file).

    Use as a context manager: the file is published when the block ends normally and deleted
    when it raises.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"incidents file {self.path} is a folder")
        self._tmp = temporary_path(self.path)
        self._handle = self._tmp.open("w", encoding="utf-8")
        self.written = 0

    def write(self, incidents: Iterable[Any]) -> None:
        """Append incidents (objects with ``to_dict``), one JSON object a line."""
        for incident in incidents:
            self._handle.write(json.dumps(incident.to_dict(), allow_nan=False) + "\n")
            self.written += 1

    def close(self) -> Path:
        self._handle.close()
        publish(self._tmp, self.path)
        return self.path

    def discard(self) -> None:
        self._handle.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> IncidentLog:
        return self

    def __exit__(self, kind: Any, value: Any, traceback: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


def read_incidents(path: str | Path) -> list[dict[str, Any]]:
    """The incidents of a JSON-lines file :class:`IncidentLog` wrote.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    ValueError
        If a line is not a JSON object with the incident's keys and finite numbers (file and
        line named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"incidents file not found: {path}")
    out = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{where}: not JSON ({error})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: not a JSON object")
            missing = [k for k in _REQUIRED if k not in record]
            if missing:
                raise ValueError(f"{where}: no {', '.join(missing)} (not an incidents file?)")
            for key in ("start", "end", "score", "n_flows", "n_flagged"):
                value = record[key]
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not math.isfinite(value)
                ):
                    raise ValueError(f"{where}: {key} is {value!r}, not a finite number")
            out.append(record)
    return out
