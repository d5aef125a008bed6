"""One self-contained HTML page of the incidents and top alerts of a scored file
(``sculpt report SCORED``).

The page (:func:`render_alerts`) puts the file's incidents first
(:mod:`latent_sculpting.research.incidents_report`: each explanation on its own line, a
timeline picture, the flows folded under it), then the highest-scoring flagged flows with their
explanations; every value in it comes from the file and is escaped.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.research.html_page import Raw, page_html, table_html
from latent_sculpting.research.incidents_report import flag_values, incidents_section

__all__ = ["render_alerts", "write_alerts"]

#: Columns of a scored file shown in their own place, not among the flow's other columns.
_ALERT_COLUMNS = ("score", "p_value", "is_attack", "flagged_by", "explanation")


def write_alerts(
    scored: str | Path,
    output: str | Path,
    *,
    top: int = 50,
    batch_rows: int = 65_536,
    incidents: str | Path | None = None,
) -> Path:
    """Render the top alerts of ``scored`` (:func:`render_alerts`) and write the page to
    ``output`` (temporary file, then rename).

    Raises
    ------
    ValueError
        If ``output`` is a folder, the scored file itself or not writable, or as
        :func:`render_alerts`.
    """
    from latent_sculpting.atomic import write_text
    from latent_sculpting.serve.outputs import check_output

    output = check_output(output, inputs=[scored], what="report")
    page = render_alerts(scored, top=top, batch_rows=batch_rows, incidents=incidents)
    return write_text(page, output)


def render_alerts(
    scored: str | Path,
    *,
    top: int = 50,
    batch_rows: int = 65_536,
    incidents: str | Path | None = None,
) -> str:
    """The HTML page of a scored file's ``top`` incidents, then its ``top`` highest-scoring
    flagged flows.

    ``incidents`` is the JSON-lines file ``sculpt score --incidents`` wrote; without it the
    flows are grouped here with the default settings, when the file has start times and
    addresses.

    The file (Parquet or CSV, as ``sculpt score`` writes it) is read ``batch_rows`` rows at a
    time, keeping only the best ``top`` rows, so its size does not matter. Each alert shows its
    row in the file, score, p-value, which rule flagged it, the file's other columns
    (identifiers, labels) and its explanation when the file has one.

    Raises
    ------
    FileNotFoundError
        If the file does not exist.
    FlowInputError
        If it is not a readable table, or a ``score`` or ``is_attack`` value is missing or not
        what it should be (row and column named).
    ValueError
        If it lacks the ``score`` or ``is_attack`` column, or ``top`` is not positive.
    """
    from latent_sculpting.io.readers import iter_batches, read_columns
    from latent_sculpting.monitor.incident_io import read_incidents

    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top must be a positive integer, got {top!r}")
    path = Path(scored)
    if not path.is_file():
        raise FileNotFoundError(f"scored file not found: {path}")
    names = read_columns(path)
    missing = [c for c in ("score", "is_attack") if c not in names]
    if missing:
        raise ValueError(
            f"{path}: no column {' or '.join(repr(c) for c in missing)}; pass a file "
            "`sculpt score` wrote"
        )
    best = None
    rows = flagged = 0
    for batch in iter_batches(path, batch_rows, types={"score": pa.float64()}):
        frame = batch.to_pandas()
        flags = flag_values(frame["is_attack"], path, rows)
        score = frame["score"].to_numpy()
        bad = np.flatnonzero(np.isnan(score))
        if len(bad):
            raise FlowInputError(
                f"{path}, row {rows + bad[0] + 1}, column 'score': missing value",
                path=path,
                line=rows + int(bad[0]) + 1,
                column="score",
            )
        picked = frame[flags]
        picked.insert(0, "(row)", rows + 1 + np.flatnonzero(flags))
        rows += len(frame)
        flagged += int(flags.sum())
        best = picked if best is None else pd.concat([best, picked], ignore_index=True)
        best = best.sort_values(["score", "(row)"], ascending=[False, True], kind="stable")
        best = best.head(top)

    shown = 0 if best is None else len(best)
    share = f" ({flagged / rows:.2%})" if rows else ""
    listed = None if incidents is None else read_incidents(incidents)
    body = [f"<p>{rows:,} flows, {flagged:,} flagged{share}.</p>"]
    body += incidents_section(path, names, listed, top=top, batch_rows=batch_rows)
    body.append(
        "<h2>Flagged flows</h2>"
        f"<p>The {shown:,} highest-scoring flagged flows, highest first. The score is higher "
        "for more anomalous flows; the p-value is the share of benign calibration flows "
        "scoring at least as high.</p>"
    )
    if shown:
        others = [c for c in best.columns if c not in _ALERT_COLUMNS and c != "(row)"]
        has_explanation = "explanation" in best.columns
        header = ["#", "row", "score", "p-value", "flagged by"]
        if has_explanation:
            header.append("explanation")
        header += others
        table = []
        for rank, record in enumerate(best.to_dict(orient="records"), start=1):
            cells = [
                str(rank),
                str(record["(row)"]),
                f"{record['score']:.4g}",
                _cell_number(record.get("p_value")),
                _cell_text(record.get("flagged_by")),
            ]
            if has_explanation:
                parts = _cell_text(record["explanation"]).split("; ")
                text = ";<br>".join(html.escape(p, quote=False) for p in parts)
                cells.append(Raw(f'<span class="explain">{text}</span>'))
            cells += [_cell_text(record[c]) for c in others]
            table.append(cells)
        body.append(f'<div class="wide">{table_html(header, table)}</div>')
        if not has_explanation:
            body.append(
                '<p class="meta">The file has no <code>explanation</code> column: it was scored '
                "without explanations.</p>"
            )
    return page_html(
        f"Incidents and alerts: {path.name}",
        f"Scored file <code>{html.escape(str(path))}</code>",
        body,
    )


def _cell_text(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _cell_number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    try:
        return f"{float(value):.3g}"
    except (TypeError, ValueError):
        return str(value)
