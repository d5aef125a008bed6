"""Every link between the repository's documents leads somewhere: relative Markdown links (and
their ``#anchors``) and the ``docs/...`` paths that docstrings, help texts and scripts cite."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: ``[text](target)`` and ``![alt](target)``; the target stops at a space (a title) or ``)``.
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
#: A repository path cited in prose or code: ``docs/guides/usage.md``, ``docs/results/x.png``.
CITED = re.compile(r"(?<![\w./-])docs/[\w./-]*\w\.(?:md|png)\b")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$")


def text_files(suffix: str) -> list[Path]:
    """Tracked-looking files under the repository root, skipping hidden and virtualenv folders."""
    return sorted(
        p
        for p in ROOT.rglob(f"*{suffix}")
        if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
    )


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Each heading's anchor in a Markdown file, outside code blocks, with GitHub's ``-N``."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            in_code = not in_code
            continue
        match = None if in_code else HEADING.match(line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            out.add(base if count == 0 else f"{base}-{count}")
    return out


def markdown_links(path: Path) -> list[tuple[int, str]]:
    """``(line number, target)`` of each link outside code blocks."""
    found = []
    in_code = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            found.extend((number, target) for target in LINK.findall(line))
    return found


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """Relative links of a Markdown file whose file or anchor does not exist."""
    broken = []
    for number, target in markdown_links(path):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        where = f"{path.relative_to(root)}:{number}: {target}"
        if not dest.is_relative_to(root):
            continue  # beside the repository (../shared): not part of this checkout
        if not dest.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{where} (no such heading)")
    return broken


def broken_citations(path: Path, root: Path = ROOT) -> list[str]:
    """``docs/...`` paths cited in a file's text that do not exist under the repository root."""
    return [
        f"{path.relative_to(root)}:{number}: {cited}"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        for cited in CITED.findall(line)
        if not (root / cited).exists()
    ]


def test_every_relative_markdown_link_resolves():
    files = text_files(".md")
    assert ROOT / "README.md" in files and ROOT / "docs" / "README.md" in files  # the walk is real
    assert [b for p in files for b in broken_links(p)] == []


def test_every_cited_docs_path_exists():
    files = [p for p in text_files(".py") + text_files(".md") if p != Path(__file__).resolve()]
    assert any("docs/" in p.read_text() for p in files if p.suffix == ".py")  # the walk is real
    assert [b for p in files for b in broken_citations(p)] == []


def test_the_checks_find_planted_breaks(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A title\n\n## 5. Drift: still alike?\n")
    page = tmp_path / "README.md"
    page.write_text(
        "[ok](docs/a.md#5-drift-still-alike) [gone](docs/b.md) [bad](docs/a.md#drift-still-alike)\n"
        "```\n[in code](c.md)\n```\nsee docs/a.md and docs/old.md\n"
    )
    assert broken_links(page, tmp_path) == [
        "README.md:1: docs/b.md (no such file)",
        "README.md:1: docs/a.md#drift-still-alike (no such heading)",
    ]
    cited = ["README.md:1: docs/b.md", "README.md:5: docs/old.md"]
    assert broken_citations(page, tmp_path) == cited
