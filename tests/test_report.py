"""``sculpt report``: one self-contained HTML page from a real (tiny) run folder."""

from __future__ import annotations

import re

import pytest

from latent_sculpting.cli import main
from latent_sculpting.experiment import reproduce
from latent_sculpting.report import markdown_to_html, render_report

IMG = '<img src="data:image/png;base64,'


@pytest.fixture(scope="module")
def reproduce_run(tmp_path_factory):
    """A real reproduce run on a stratified slice of the embedded sample (one seed, fast)."""
    out = tmp_path_factory.mktemp("run")
    reproduce(
        preset="fast",
        seeds=[0],
        max_per_class=120,
        out=out,
        verbose=False,
        overrides={
            "calibration": "train",
            "score": "nll",
            "forest_trees": 0,
            "epochs": 1,
            "flow_epochs": 1,
        },
    )
    return out


def _no_external_references(page: str) -> None:
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    assert "url(" not in page and "<link" not in page and "<script" not in page
    assert "http://" not in page and "https://" not in page


def test_report_of_a_reproduce_run(reproduce_run, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(reproduce_run), "-o", str(out)]) == 0
    page = out.read_text()
    pngs = sorted(reproduce_run.glob("*.png"))
    assert len(pngs) == 3
    assert page.count(IMG) == len(pngs)
    for png in pngs:
        assert png.name in page
    for heading in (
        "Headline",
        "Every percentile threshold",
        "Recall per withheld attack class",
        "Stage 1 alone",
        "Plots",
        "Configuration",
    ):
        assert heading in page
    assert "zero-shot AUROC" in page and "0.913 ± 0.010" in page  # beside the paper's figure
    assert "<td>P85</td>" in page and "<td>P99</td>" in page
    for label in ("Bot", "Infiltration", "DoS slowloris", "DoS Slowhttptest"):
        assert f"<td>{label}</td>" in page
    assert page.count("<table>") >= 5
    _no_external_references(page)
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary left over


def test_default_output_is_inside_the_run_folder(reproduce_run):
    assert main(["report", str(reproduce_run)]) == 0
    assert (reproduce_run / "report.html").read_text().startswith("<!DOCTYPE html>")
    (reproduce_run / "report.html").unlink()


def test_generic_run_folder_renders_markdown_tables_json_and_every_png(reproduce_run, tmp_path):
    # A compare-style folder: Markdown tables, a JSON file without Markdown twin, plots.
    (tmp_path / "compare.md").write_text(
        "# Compare: detectors on the zero-shot set\n\n"
        "Run on *three* seeds; see [the docs](https://example.org/x).\n\n"
        "| method | zero-shot F1 | AUROC |\n|---|---:|---:|\n"
        "| latent sculpting | 0.812 | 0.934 |\n| `IForest` <b> | 0.402 | 0.781 |\n\n"
        "- one\n- two\n"
    )
    (tmp_path / "compare.json").write_text('{"methods": ["a"]}')
    (tmp_path / "extra.json").write_text('{"note": "<script>"}')
    for png in reproduce_run.glob("*.png"):
        (tmp_path / png.name).write_bytes(png.read_bytes())
    page = render_report(tmp_path)
    assert "<title>Compare: detectors on the zero-shot set</title>" in page
    assert '<td class="num">0.812</td>' in page
    assert "<code>IForest</code> &lt;b&gt;" in page  # raw HTML is escaped
    assert "<em>three</em>" in page and "the docs" in page
    assert "extra.json" in page and "&lt;script&gt;" in page
    assert page.count(IMG) == 3
    _no_external_references(page)


def test_report_errors_name_the_folder(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no .md, .json or .png" in capsys.readouterr().err


def test_markdown_tables_and_code_blocks():
    html = markdown_to_html("## T\n\n| a | b |\n|:--|--:|\n| x | 1 |\n\n```\n<x>\n```\n")
    assert "<h3>T</h3>" in html
    assert '<td>x</td><td class="num">1</td>' in html
    assert "<pre>&lt;x&gt;</pre>" in html
