"""One self-contained HTML page for a run folder (``sculpt reproduce``, ``sculpt compare``, ...)
or for the top alerts of a scored file (``sculpt score``).

The page has no external assets: CSS is inline and every PNG is embedded as a base64 data URI,
so it can be mailed or archived as one file. A ``reproduce`` run (``results.json``) gets a
layout of its own: the headline beside the paper, every percentile threshold, Stage 1 alone,
recall per withheld attack class, the plots with captions, the splits and the configuration.
Any other run folder is rendered generically: each ``*.md`` file converted to HTML (its tables
become HTML tables), each ``*.json`` without a Markdown twin shown as text, every PNG embedded.
A scored file's page (:func:`render_alerts`) is one table of its highest-scoring flagged flows
with their explanations; every value in it comes from the file and is escaped.

It is long because the two pages are self-contained HTML (styles, tables, inline figures) written
here rather than through a template engine, which would be one more dependency for two pages.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from latent_sculpting.errors import FlowInputError

__all__ = [
    "markdown_to_html",
    "render_alerts",
    "render_report",
    "write_alerts",
    "write_report",
]

#: Captions of the figures ``sculpt reproduce`` writes, in page order.
REPRODUCE_FIGURES = {
    "zero_shot_curves.png": "ROC and precision-recall curves on the zero-shot set (benign test "
    "flows and the withheld attack classes).",
    "score_histograms.png": "Score distribution per class; dotted lines are the percentile "
    "thresholds of benign calibration scores.",
    "latent_projection.png": "Latent codes of test flows, projected to two dimensions, with the "
    "Stage-1 centroids.",
}

_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d2330;
background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh}
h1{font-size:1.7em;margin:.2em 0 .4em}h2{font-size:1.3em;margin-top:1.8em;
border-bottom:1px solid #e3e6eb;padding-bottom:.2em}h3{font-size:1.1em;margin-top:1.4em}
table{border-collapse:collapse;margin:.8em 0;font-size:.93em}
th,td{border:1px solid #d9dde3;padding:4px 10px;vertical-align:top}
th{background:#f0f2f5;text-align:left}td.num,th.num{text-align:right;
font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfc}code{background:#f0f2f5;padding:1px 4px;
border-radius:3px;font-size:.92em}pre{background:#f6f8fa;padding:12px;overflow:auto;
font-size:.85em;max-height:480px}figure{margin:1.2em 0}figure img{max-width:100%;
border:1px solid #e3e6eb}figcaption{color:#5b6472;font-size:.9em}
.meta{color:#5b6472}.bar{display:inline-block;height:.8em;background:#3b73c4;
vertical-align:middle;margin-right:6px}
"""


def write_report(run_dir: str | Path, output: str | Path) -> Path:
    """Render ``run_dir`` and write the page to ``output`` (temporary file, then rename).

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` does not exist.
    ValueError
        If it is not a folder or holds nothing to report (no ``.md``, ``.json`` or ``.png``).
    """
    from latent_sculpting.atomic import write_text

    page = render_report(run_dir)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    return write_text(page, output)


def render_report(run_dir: str | Path) -> str:
    """The HTML page of a run folder, as a string (see the module docstring)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir} is not a folder; pass the folder a run wrote")
    markdown = sorted(run_dir.glob("*.md"))
    json_files = sorted(run_dir.glob("*.json"))
    pngs = sorted(run_dir.glob("*.png"))
    if not (markdown or json_files or pngs):
        raise ValueError(f"{run_dir} holds no .md, .json or .png files to report")
    _check_inside(run_dir, [*markdown, *json_files, *pngs])

    body: list[str] = []
    shown_png: set[str] = set()
    shown_text: set[str] = set()
    results = run_dir / "results.json"
    title = f"Run report: {run_dir.name}"
    if results.is_file():
        data = _read_json(results)
        if isinstance(data, dict) and "zero_shot" in data and "config" in data:
            title = f"sculpt reproduce: preset {data['config'].get('preset', '?')}"
            body += _reproduce_sections(data, run_dir, shown_png)
            shown_text |= {"results.json", "results.md"}
    for path in markdown:
        if path.name in shown_text:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(shown_text) == 0 and title.startswith("Run report"):
            first = re.match(r"\s*#\s+(.+)", text)
            if first:
                title = _strip_inline(first.group(1))
        body.append(f'<section class="markdown" id="{_anchor(path.stem)}">')
        body.append(f'<p class="meta">from <code>{html.escape(path.name)}</code></p>')
        body.append(markdown_to_html(text))
        body.append("</section>")
        shown_text.add(path.name)
    for path in json_files:
        if path.name in shown_text or path.with_suffix(".md").name in shown_text:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) > 200_000:
            text = text[:200_000] + "\n... (truncated)"
        body.append(f"<h2>{html.escape(path.name)}</h2>")
        body.append(f"<details><summary>show</summary><pre>{html.escape(text)}</pre></details>")
    rest = [p for p in pngs if p.name not in shown_png]
    if rest:
        body.append("<h2>Figures</h2>")
        body += [_figure(p, p.stem.replace("_", " ")) for p in rest]
    return _page(title, f"Run folder <code>{html.escape(str(run_dir))}</code>", body)


def _check_inside(run_dir: Path, paths: list[Path]) -> None:
    """Refuse a run folder whose files to report lead out of it.

    A run folder may come from someone else, and its page is made to be mailed: a link
    ``notes.md -> ~/.ssh/id_rsa`` must not put the target in it. Links between files inside
    the folder are followed; the folder itself may be a link.
    """
    root = run_dir.resolve()
    for path in paths:
        target = path.resolve()
        if not target.is_relative_to(root):
            raise ValueError(
                f"{path} is a link to {target}, outside the run folder; refusing to read it"
            )
        if not target.is_file():
            raise ValueError(f"{path} is not a regular file; refusing to read it")


def _page(title: str, source: str, body: list[str]) -> str:
    """The whole page: ``source`` (HTML) says what it reports on."""
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="meta">{source}; report made '
        f"{stamp} by <code>sculpt report</code> (latent-sculpting, arXiv:2512.22179).</p>"
        + "\n".join(body)
        + "</main></body></html>\n"
    )


# ---------------------------------------------------------------------------- scored files

#: Columns of a scored file shown in their own place, not among the flow's other columns.
_ALERT_COLUMNS = ("score", "p_value", "is_attack", "flagged_by", "explanation")


def write_alerts(
    scored: str | Path, output: str | Path, *, top: int = 50, batch_rows: int = 65_536
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
    return write_text(render_alerts(scored, top=top, batch_rows=batch_rows), output)


def render_alerts(scored: str | Path, *, top: int = 50, batch_rows: int = 65_536) -> str:
    """The HTML page of the ``top`` highest-scoring flagged flows of a scored file.

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
        flags = _flags(frame["is_attack"], path, rows)
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
    body = [
        f"<p>{rows:,} flows, {flagged:,} flagged{share}; the {shown:,} highest-scoring flagged "
        "flows, highest first. The score is higher for more anomalous flows; the p-value is the "
        "share of benign calibration flows scoring at least as high.</p>"
    ]
    if shown:
        others = [c for c in best.columns if c not in _ALERT_COLUMNS and c != "(row)"]
        has_explanation = "explanation" in best.columns
        header = ["#", "row", "score", "p-value", "flagged by", *others]
        if has_explanation:
            header.append("explanation")
        table = []
        for rank, record in enumerate(best.to_dict(orient="records"), start=1):
            cells = [
                str(rank),
                str(record["(row)"]),
                f"{record['score']:.4g}",
                _cell_number(record.get("p_value")),
                _cell_text(record.get("flagged_by")),
                *(_cell_text(record[c]) for c in others),
            ]
            if has_explanation:
                parts = _cell_text(record["explanation"]).split("; ")
                cells.append(_Raw(";<br>".join(html.escape(p, quote=False) for p in parts)))
            table.append(cells)
        body.append(_table(header, table))
        if not has_explanation:
            body.append(
                '<p class="meta">The file has no <code>explanation</code> column: it was scored '
                "without explanations.</p>"
            )
    return _page(
        f"Top alerts: {path.name}", f"Scored file <code>{html.escape(str(path))}</code>", body
    )


def _flags(values: pd.Series, path: Path, offset: int) -> np.ndarray:
    """``is_attack`` as booleans: Parquet's booleans, or CSV's true/false text."""
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


# ---------------------------------------------------------------------------- reproduce runs


def _reproduce_sections(data: dict, run_dir: Path, shown_png: set[str]) -> list[str]:
    cfg = data.get("config", {})
    paper = data.get("paper", {})
    known, zs = data.get("known", {}), data.get("zero_shot", {})
    pct = cfg.get("params", {}).get("percentile")
    target = cfg.get("params", {}).get("target_fpr")
    rule = f"P{pct:g} of benign calibration scores" if pct is not None else "the model threshold"
    if target is not None:
        rule = f"split-conformal, target FPR {target:g}"
    seeds = cfg.get("seeds", [])
    out = [
        '<p class="meta">'
        + html.escape(
            f"{len(seeds)} seed(s) {seeds}, split seed {cfg.get('split_seed')}, withheld: "
            f"{', '.join(cfg.get('withheld', []))}. Data: {cfg.get('n_rows', 0):,} rows, "
            f"{cfg.get('n_features', '?')} features, {len(cfg.get('data_files', []))} file(s). "
            f"Machine: {cfg.get('machine', '?')}. Date: {cfg.get('date', '?')}. "
            f"Package {cfg.get('package_version', '?')}, torch {cfg.get('torch_version', '?')}."
        )
        + "</p>",
        "<p>The paper's figures are on the full original CIC-IDS-2017 (about 2.8 M rows); this "
        "run's are on the data named above, so compare the shape of the results rather than "
        "the third decimal.</p>",
        f"<h2>Headline (threshold: {html.escape(rule)})</h2>",
    ]
    rows = [
        ["known-attack F1", _num(paper.get("known_f1")), _stat(known.get("f1"))],
        ["zero-shot F1", _stat(paper.get("zero_shot_f1")) + " (P85)", _stat(zs.get("f1"))],
        ["zero-shot AUROC", _stat(paper.get("zero_shot_auroc")), _stat(zs.get("auroc"))],
        ["zero-shot AUPRC", "–", _stat(zs.get("auprc"))],
        ["zero-shot precision", "–", _stat(zs.get("precision"))],
        ["zero-shot recall", "–", _stat(zs.get("recall"))],
        ["zero-shot benign FPR", "–", _stat(zs.get("fpr"))],
        ["known-attack benign FPR", "–", _stat(known.get("fpr"))],
        [
            "Infiltration recall",
            _stat(paper.get("infiltration_recall"), pct=True),
            _stat(zs.get("per_attack_recall", {}).get("Infiltration"), pct=True),
        ],
    ]
    out.append(_table(["metric", "paper", "this run (mean ± std over seeds)"], rows))

    thresholds = data.get("thresholds", {})
    if thresholds:
        out.append("<h2>Every percentile threshold (two stages)</h2>")
        v1 = paper.get("v1_zero_shot_f1", {})
        rows = []
        for p, row in thresholds.items():
            rows.append(
                [
                    f"P{p}",
                    _stat(row["known"].get("f1")),
                    _stat(row["known"].get("fpr")),
                    _stat(row["zero_shot"].get("f1")),
                    _stat(row["zero_shot"].get("recall")),
                    _stat(row["zero_shot"].get("fpr")),
                    "–" if v1.get(p) is None else f"{v1[p]:.2f}",
                ]
            )
        out.append(
            _table(
                [
                    "threshold",
                    "known F1",
                    "known FPR",
                    "zero-shot F1",
                    "zero-shot recall",
                    "zero-shot FPR",
                    "paper v1 zero-shot F1",
                ],
                rows,
            )
        )

    if "stage1_only" in data:
        s1 = data["stage1_only"]
        out.append("<h2>Stage 1 alone (nearest centroid) vs both stages</h2>")
        out.append(
            _table(
                ["", "known F1", "zero-shot F1", "zero-shot recall", "zero-shot AUROC"],
                [
                    [
                        "Stage 1 alone",
                        _stat(s1["known"].get("f1")),
                        _stat(s1["zero_shot"].get("f1")),
                        _stat(s1["zero_shot"].get("recall")),
                        _stat(s1["zero_shot"].get("auroc")),
                    ],
                    [
                        "both stages",
                        _stat(known.get("f1")),
                        _stat(zs.get("f1")),
                        _stat(zs.get("recall")),
                        _stat(zs.get("auroc")),
                    ],
                ],
            )
        )

    recall = zs.get("per_attack_recall", {})
    if recall:
        counts = data.get("splits", {}).get("zero_shot_attacks", {})
        s1_recall = data.get("stage1_only", {}).get("zero_shot", {}).get("per_attack_recall")
        out.append("<h2>Recall per withheld attack class</h2>")
        header = ["class", "rows", "recall (both stages)"]
        if s1_recall is not None:
            header.append("Stage 1 alone")
        rows = []
        for label, stat in recall.items():
            mean = stat["mean"] if isinstance(stat, dict) else stat
            bar = f'<span class="bar" style="width:{max(0.0, min(1.0, mean)) * 120:.0f}px"></span>'
            row = [
                html.escape(str(label)),
                f"{counts.get(label, 0):,}",
                _Raw(bar + html.escape(_stat(stat, pct=True))),
            ]
            if s1_recall is not None:
                row.append(_stat(s1_recall.get(label), pct=True))
            rows.append(row)
        out.append(_table(header, rows))

    figures = [(run_dir / name, caption) for name, caption in REPRODUCE_FIGURES.items()]
    figures = [(p, c) for p, c in figures if p.is_file()]
    if figures:
        out.append("<h2>Plots</h2>")
        for path, caption in figures:
            out.append(_figure(path, caption))
            shown_png.add(path.name)

    splits = data.get("splits", {})
    if splits:
        out.append("<h2>Rows per split and class</h2>")
        names = list(splits)
        labels = sorted(
            {label for part in splits.values() for label in part}, key=lambda s: (s != "BENIGN", s)
        )
        rows = [
            [html.escape(label), *(f"{splits[n].get(label, 0):,}" for n in names)]
            for label in labels
        ]
        out.append(_table(["class", *names], rows))

    params = cfg.get("params", {})
    if params:
        out.append("<h2>Configuration</h2>")
        out.append(
            _table(
                ["parameter", "value"],
                [[html.escape(k), html.escape(json.dumps(v))] for k, v in params.items()],
            )
        )
    files = cfg.get("data_files", [])
    if files:
        out.append("<h3>Data files</h3>")
        out.append(
            _table(
                ["file", "sha256"],
                [
                    [html.escape(str(f.get("path"))), _Raw(f"<code>{f.get('sha256')}</code>")]
                    for f in files
                ],
            )
        )
    per_stage = cfg.get("seconds", {}).get("per_stage_mean", {})
    if per_stage:
        out.append("<h3>Time per seed (mean seconds)</h3>")
        out.append(
            _table(
                ["stage", "seconds"],
                [
                    [html.escape(k), _num(v.get("mean") if isinstance(v, dict) else v, 1)]
                    for k, v in per_stage.items()
                ],
            )
        )
    return out


class _Raw(str):
    """Cell content that is already HTML."""


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(tag: str, value: Any) -> str:
        text = value if isinstance(value, _Raw) else html.escape(str(value), quote=False)
        numeric = bool(re.fullmatch(r"[\s\d.,%±+\-–e]+", html.unescape(str(value)))) and any(
            ch.isdigit() for ch in str(value)
        )
        attr = ' class="num"' if numeric else ""
        return f"<{tag}{attr}>{text}</{tag}>"

    head = "".join(cell("th", h) for h in header)
    body = "".join("<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _stat(stat: Any, pct: bool = False) -> str:
    if stat is None:
        return "–"
    if isinstance(stat, dict):
        mean, std = stat.get("mean"), stat.get("std", 0.0)
        if mean is None:
            return "–"
        if std is None or std != std:  # one seed: the sample std is undefined (NaN)
            return f"{100 * mean:.1f} %" if pct else f"{mean:.3f}"
        return f"{100 * mean:.1f} % ± {100 * std:.1f}" if pct else f"{mean:.3f} ± {std:.3f}"
    return f"{100 * stat:.1f} %" if pct else f"{stat:.3f}"


def _num(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _figure(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'
        f"<figcaption>{html.escape(caption)} <code>{html.escape(path.name)}</code>"
        "</figcaption></figure>"
    )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


# ---------------------------------------------------------------------------- Markdown


_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def markdown_to_html(text: str) -> str:
    """Convert the Markdown our runs write to HTML: headings, pipe tables, lists, code, prose.

    Links keep their text only, so a page never points outside itself; raw HTML is escaped.
    """
    lines = text.splitlines()
    out: list[str] = []
    paragraph: list[str] = []
    i = 0

    def flush() -> None:
        if paragraph:
            out.append("<p>" + _inline(" ".join(paragraph)) + "</p>")
            paragraph.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            block = []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                block.append(lines[i])
                i += 1
            out.append(f"<pre>{html.escape(chr(10).join(block))}</pre>")
            i += 1
            continue
        heading = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if heading:
            flush()
            # The page has its own h1; Markdown headings move one level down.
            level = min(len(heading.group(1)) + 1, 6)
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and _TABLE_SEP.match(lines[i + 1]):
            flush()
            header = _cells(stripped)
            aligns = [
                "num" if c.strip().endswith(":") and not c.strip().startswith(":") else ""
                for c in _cells(lines[i + 1].strip())
            ]
            i += 2
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                rows.append(_cells(lines[i].strip()))
                i += 1
            out.append(_md_table(header, rows, aligns))
            continue
        if re.match(r"^[-*]\s+", stripped):
            flush()
            items = []
            while i < len(lines) and re.match(r"^\s*[-*]\s+", lines[i]):
                items.append("<li>" + _inline(re.sub(r"^\s*[-*]\s+", "", lines[i])) + "</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        if not stripped:
            flush()
        else:
            paragraph.append(stripped)
        i += 1
    flush()
    return "\n".join(out)


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", row)]


def _md_table(header: list[str], rows: list[list[str]], aligns: list[str]) -> str:
    def cls(j: int) -> str:
        return ' class="num"' if j < len(aligns) and aligns[j] else ""

    head = "".join(f"<th{cls(j)}>{_inline(c)}</th>" for j, c in enumerate(header))
    body = "".join(
        "<tr>" + "".join(f"<td{cls(j)}>{_inline(c)}</td>" for j, c in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _inline(text: str) -> str:
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) >= 2:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        part = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", part)  # links and images: text only
        part = html.escape(part, quote=False)
        part = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", part)
        part = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", part)
        out.append(part)
    return "".join(out)


def _strip_inline(text: str) -> str:
    return re.sub(r"[`*]", "", text).strip()
