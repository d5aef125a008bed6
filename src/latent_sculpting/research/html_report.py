"""One self-contained HTML page for a run folder (``sculpt reproduce``, ``sculpt compare``, ...).

The page has no external assets: CSS is inline and every PNG is embedded as a base64 data URI,
so it can be mailed or archived as one file. A ``reproduce`` run (``results.json``) gets a
layout of its own: the headline beside the paper, every percentile threshold, Stage 1 alone,
recall per withheld attack class, the plots with captions, the splits and the configuration.
Any other run folder is rendered generically: each ``*.md`` file converted to HTML (its tables
become HTML tables), each ``*.json`` without a Markdown twin shown as text, every PNG embedded.

A scored file's top alerts have their own page (:mod:`latent_sculpting.research.alerts_report`);
the page parts (styles, tables, figures, Markdown) are in
:mod:`latent_sculpting.research.html_page`.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from latent_sculpting.research.html_page import (
    Raw,
    anchor,
    figure_html,
    markdown_to_html,
    page_html,
    strip_inline,
    table_html,
)

__all__ = ["REPRODUCE_FIGURES", "render_report", "write_report"]

#: Captions of the figures ``sculpt reproduce`` writes, in page order.
REPRODUCE_FIGURES = {
    "zero_shot_curves.png": "ROC and precision-recall curves on the zero-shot set (benign test "
    "flows and the withheld attack classes).",
    "score_histograms.png": "Score distribution per class; dotted lines are the percentile "
    "thresholds of benign calibration scores.",
    "latent_projection.png": "Latent codes of test flows, projected to two dimensions, with the "
    "Stage-1 centroids.",
}


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

    document = render_report(run_dir)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    return write_text(document, output)


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
                title = strip_inline(first.group(1))
        body.append(f'<section class="markdown" id="{anchor(path.stem)}">')
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
        body += [figure_html(p, p.stem.replace("_", " ")) for p in rest]
    return page_html(title, f"Run folder <code>{html.escape(str(run_dir))}</code>", body)


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
    out.append(table_html(["metric", "paper", "this run (mean ± std over seeds)"], rows))

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
            table_html(
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
            table_html(
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
                Raw(bar + html.escape(_stat(stat, pct=True))),
            ]
            if s1_recall is not None:
                row.append(_stat(s1_recall.get(label), pct=True))
            rows.append(row)
        out.append(table_html(header, rows))

    figures = [(run_dir / name, caption) for name, caption in REPRODUCE_FIGURES.items()]
    figures = [(p, c) for p, c in figures if p.is_file()]
    if figures:
        out.append("<h2>Plots</h2>")
        for path, caption in figures:
            out.append(figure_html(path, caption))
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
        out.append(table_html(["class", *names], rows))

    params = cfg.get("params", {})
    if params:
        out.append("<h2>Configuration</h2>")
        out.append(
            table_html(
                ["parameter", "value"],
                [[html.escape(k), html.escape(json.dumps(v))] for k, v in params.items()],
            )
        )
    files = cfg.get("data_files", [])
    if files:
        out.append("<h3>Data files</h3>")
        out.append(
            table_html(
                ["file", "sha256"],
                [
                    [html.escape(str(f.get("path"))), Raw(f"<code>{f.get('sha256')}</code>")]
                    for f in files
                ],
            )
        )
    per_stage = cfg.get("seconds", {}).get("per_stage_mean", {})
    if per_stage:
        out.append("<h3>Time per seed (mean seconds)</h3>")
        out.append(
            table_html(
                ["stage", "seconds"],
                [
                    [html.escape(k), _num(v.get("mean") if isinstance(v, dict) else v, 1)]
                    for k, v in per_stage.items()
                ],
            )
        )
    return out


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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from None
