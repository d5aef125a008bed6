"""The parts of a self-contained HTML page: the page shell with its inline CSS, tables, figures
embedded as base64 data URIs, and the conversion of the Markdown our runs write.

The reports (:mod:`latent_sculpting.research.html_report`,
:mod:`latent_sculpting.research.alerts_report`) are written with these rather than through a
template engine, which would be one more dependency for two pages.
"""

from __future__ import annotations

import base64
import html
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "Raw",
    "anchor",
    "figure_html",
    "image_html",
    "markdown_to_html",
    "page_html",
    "strip_inline",
    "table_html",
]

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
.meta{color:#5b6472}.incident{border:1px solid #d9dde3;border-left:4px solid #c0392b;
border-radius:4px;padding:10px 16px;margin:14px 0}.incident .what{font-size:1.08em;
font-weight:600;margin:.2em 0}.incident img{max-width:100%;display:block;margin:6px 0}
details summary{cursor:pointer;color:#3b73c4}.wide{overflow-x:auto}
.explain{display:block;min-width:24em}.bar{display:inline-block;height:.8em;background:#3b73c4;
vertical-align:middle;margin-right:6px}
"""


def page_html(title: str, source: str, body: list[str]) -> str:
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


class Raw(str):
    """Cell content that is already HTML."""


def table_html(header: list[str], rows: list[list[Any]]) -> str:
    """An HTML table; each cell escaped unless it is :class:`Raw`, numbers right-aligned."""

    def cell(tag: str, value: Any) -> str:
        text = value if isinstance(value, Raw) else html.escape(str(value), quote=False)
        numeric = bool(re.fullmatch(r"[\s\d.,%±+\-–e]+", html.unescape(str(value)))) and any(
            ch.isdigit() for ch in str(value)
        )
        attr = ' class="num"' if numeric else ""
        return f"<{tag}{attr}>{text}</{tag}>"

    head = "".join(cell("th", h) for h in header)
    body = "".join("<tr>" + "".join(cell("td", v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure_html(path: Path, caption: str) -> str:
    """The PNG at ``path`` embedded as a data URI, with its caption and file name."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'
        f"<figcaption>{html.escape(caption)} <code>{html.escape(path.name)}</code>"
        "</figcaption></figure>"
    )


def image_html(data: bytes, alt: str) -> str:
    """PNG bytes embedded as a data URI."""
    encoded = base64.b64encode(data).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{html.escape(alt)}">'


def anchor(text: str) -> str:
    """An ``id`` made of ``text``'s letters and digits."""
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


def strip_inline(text: str) -> str:
    """``text`` without Markdown's inline code and emphasis marks."""
    return re.sub(r"[`*]", "", text).strip()
