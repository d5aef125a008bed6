"""The incidents of a scored file on the ``sculpt report`` page: one card per incident, its
explanation first, a timeline picture of its flows, and its flagged flows folded under it.

The incidents come from the file ``sculpt score --incidents`` wrote, or, without one, are
grouped here from the scored file with the default settings (uncalibrated), when its columns
hold start times and addresses (:func:`scored_format`). Every value shown is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.research.html_page import Raw, image_html, table_html

__all__ = ["flag_values", "incidents_section", "scored_format"]

#: Flows of one incident kept for its picture (evenly thinned beyond), and flagged flows
#: listed under it.
MAX_PLOTTED = 4_000
MAX_LISTED = 20


def scored_format(names: Sequence[str]) -> tuple[str, tuple[dict[str, str], str]] | None:
    """The flow format whose start-time and address columns a scored file has, with those
    columns (:func:`~latent_sculpting.monitor.incident_io.incident_columns`); None if none."""
    from latent_sculpting.io.formats import FORMATS
    from latent_sculpting.monitor.incident_io import incident_columns

    for name, fmt in FORMATS.items():
        if not fmt.endpoint_columns:
            continue
        try:
            return name, incident_columns(name, names)
        except ValueError:
            continue
    return None


def flag_values(values: pd.Series, path: Path, offset: int) -> np.ndarray:
    """``is_attack`` as booleans: Parquet's booleans, or CSV's true/false text (a value that
    is neither is an error naming its row)."""
    if values.dtype == bool:
        return values.to_numpy()
    text = values.astype("string").str.strip().str.lower()
    known = text.isin(["true", "false", "1", "0"]).fillna(False).to_numpy(dtype=bool)
    if not known.all():
        row = int(np.flatnonzero(~known)[0])
        raise FlowInputError(
            f"{path}, row {offset + row + 1}, column 'is_attack': {values.iloc[row]!r} is not "
            "true or false",
            path=path,
            line=offset + row + 1,
            column="is_attack",
        )
    return text.isin(["true", "1"]).to_numpy(dtype=bool)


def incidents_section(
    path: Path,
    names: Sequence[str],
    incidents: list[dict[str, Any]] | None,
    *,
    top: int,
    batch_rows: int,
) -> list[str]:
    """The page's incident section (HTML parts): what was grouped and how, then the ``top``
    highest-scoring incidents, each with its picture and flows."""
    found = scored_format(names)
    note = ""
    if incidents is None:
        if found is None:
            return [
                "<h2>Incidents</h2><p class='meta'>The file has no start-time and address "
                "columns of a known flow format, so its flows cannot be grouped into "
                "incidents; the flagged flows follow.</p>"
            ]
        incidents = _group(path, found, batch_rows)
        note = (
            " Grouped by <code>sculpt report</code> with the default settings (by source "
            "host, a 300 s gap), uncalibrated; <code>sculpt score --incidents</code> writes "
            "them with your settings and, with a calibration, their rate on benign hosts."
        )
    shown = sorted(incidents, key=lambda i: (-float(i["score"]), float(i["start"])))[:top]
    calibrated = any(i.get("calibrated") for i in incidents)
    flows = _incident_flows(path, found, shown, batch_rows) if found and shown else {}
    body = [
        "<h2>Incidents</h2>",
        f"<p>{len(incidents):,} incidents (flagged flows grouped by "
        f"{_key_words(incidents)} and time gap); the {len(shown):,} highest-scoring first. "
        "An incident's score sums the evidence of its flagged flows "
        "(−log<sub>10</sub> of their p-values)."
        + (
            ""
            if calibrated
            else " These incidents are uncalibrated: no rate of false incidents per benign "
            "host-day is known for them."
        )
        + note
        + "</p>",
    ]
    for rank, incident in enumerate(shown, start=1):
        body.append(_card(rank, incident, flows.get(incident["id"])))
    return body


def _key_words(incidents: list[dict[str, Any]]) -> str:
    keys = {i.get("key", "source") for i in incidents}
    return "source and destination host" if keys == {"pair"} else "source host"


def _card(rank: int, incident: dict[str, Any], flows: pd.DataFrame | None) -> str:
    esc = html.escape
    meta = [
        f"{esc(str(incident.get('start_utc', incident['start'])))} → "
        f"{esc(str(incident.get('end_utc', incident['end'])))}",
        f"{int(incident['n_flagged']):,} flagged of {int(incident['n_flows']):,} flows",
        f"score {float(incident['score']):.4g}",
    ]
    if incident.get("calibrated") and incident.get("rate") is not None:
        rate, floor = float(incident["rate"]), incident.get("rate_resolution")
        meta.append(
            f"benign hosts: below {float(floor):.3g} such incidents a day"
            if rate == 0 and floor
            else f"benign hosts: {rate:.3g} such incidents a day"
        )
    channels = (incident.get("evidence") or {}).get("channels") or {}
    if channels:
        meta.append("flagged by " + ", ".join(f"{esc(str(k))} {v}" for k, v in channels.items()))
    if incident.get("evicted"):
        meta.append("closed early: too many open incidents")
    parts = [
        '<div class="incident">',
        f'<p class="what">#{rank} {esc(str(incident["explanation"]))}</p>',
        f'<p class="meta">{" · ".join(meta)}</p>',
    ]
    if flows is not None and len(flows) and int(incident["n_flagged"]) > 1:
        from latent_sculpting.research.plots import incident_timeline_png

        png = incident_timeline_png(
            flows["time"].to_numpy(),
            flows["score"].to_numpy(),
            flows["flagged"].to_numpy(),
            flows["destination_port"].tolist(),
            start=float(incident["start"]),
        )
        parts.append(image_html(png, f"timeline of incident {rank}"))
    if flows is not None and len(flows):
        listed = flows[flows["flagged"]].head(MAX_LISTED)
        rows = [
            [
                str(int(r["(row)"])),
                f"{float(r['time']) - float(incident['start']):.1f}",
                str(r["destination"]),
                str(r["destination_port"]),
                f"{float(r['score']):.4g}",
                Raw(f'<span class="explain">{esc(str(r.get("reason") or ""))}</span>'),
            ]
            for r in listed.to_dict(orient="records")
        ]
        n = int(incident["n_flagged"])
        parts.append(
            f"<details><summary>its flagged flows ({min(n, MAX_LISTED):,} of {n:,} "
            "shown)</summary>"
            + table_html(["row", "+s", "destination", "port", "score", "explanation"], rows)
            + "</details>"
        )
    parts.append("</div>")
    return "".join(parts)


def _frames(path: Path, found: tuple[str, Any], batch_rows: int):  # noqa: ANN202 - generator
    """(scored flows as the grouper reads them, with ``(row)`` 1-based and ``file``) per batch."""
    from latent_sculpting.io.readers import iter_batches
    from latent_sculpting.monitor.incident_io import incident_frame

    name, roles = found
    rows = 0
    for batch in iter_batches(path, batch_rows, types={"score": pa.float64()}):
        scored = batch.to_pandas()
        scored["is_attack"] = flag_values(scored["is_attack"], path, rows)
        frame = incident_frame(scored, name, roles)
        frame["(row)"] = rows + 1 + np.arange(len(frame))
        frame["file"] = (
            scored["source_file"].astype(str).to_numpy() if "source_file" in scored.columns else ""
        )
        rows += len(frame)
        yield frame


def _group(path: Path, found: tuple[str, Any], batch_rows: int) -> list[dict[str, Any]]:
    """Incidents of the scored file with the default grouping, a stream per source file."""
    from latent_sculpting.monitor.incidents import IncidentGrouper

    grouper = IncidentGrouper()
    out = []
    current = None
    for frame in _frames(path, found, batch_rows):
        # A file that held several inputs names each row's file: each is its own stream, as
        # in sculpt score.
        files = frame["file"].to_numpy()
        cuts = np.flatnonzero(files[1:] != files[:-1]) + 1
        for part in np.split(np.arange(len(frame)), cuts):
            if not len(part):
                continue
            if files[part[0]] != current:
                out += grouper.flush()
                current = files[part[0]]
            out += grouper.add(frame.iloc[part])
    out += grouper.flush()
    return [i.to_dict() for i in out]


def _incident_flows(
    path: Path, found: tuple[str, Any], shown: list[dict[str, Any]], batch_rows: int
) -> dict[str, pd.DataFrame]:
    """Each shown incident's flows: those of its source (and destination, for a pair) from
    its start to its end; beyond :data:`MAX_PLOTTED`, every second one is dropped (and so on),
    the first :data:`MAX_LISTED` flagged ones always kept."""
    sources = {str(i["source"]) for i in shown}
    collected: dict[str, pd.DataFrame] = {}
    seen = {i["id"]: 0 for i in shown}
    stride = dict.fromkeys(seen, 1)
    for frame in _frames(path, found, batch_rows):
        frame = frame[frame["source"].isin(sources)]
        if not len(frame):
            continue
        for incident in shown:
            key = incident["id"]
            mask = (
                (frame["source"] == str(incident["source"]))
                & (frame["time"] >= float(incident["start"]))
                & (frame["time"] <= float(incident["end"]))
            )
            if incident.get("destination") is not None:
                mask &= frame["destination"] == str(incident["destination"])
            picked = frame[mask]
            if not len(picked):
                continue
            position = seen[key] + np.arange(len(picked))
            seen[key] += len(picked)
            kept = collected.get(key)
            flagged_so_far = 0 if kept is None else int(kept["flagged"].sum())
            first = picked["flagged"].cumsum().to_numpy() + flagged_so_far <= MAX_LISTED
            picked = picked[(position % stride[key] == 0) | (first & picked["flagged"])]
            kept = picked if kept is None else pd.concat([kept, picked], ignore_index=True)
            while len(kept) > MAX_PLOTTED:
                stride[key] *= 2
                keep = np.zeros(len(kept), dtype=bool)
                keep[::2] = True
                flagged_rows = np.flatnonzero(kept["flagged"].to_numpy())[:MAX_LISTED]
                keep[flagged_rows] = True
                kept = kept[keep].reset_index(drop=True)
            collected[key] = kept
    return collected
