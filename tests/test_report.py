"""``sculpt report``: one self-contained HTML page from a real (tiny) run folder."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from small import FUSED_FAST

from latent_sculpting import preset
from latent_sculpting.cli import main
from latent_sculpting.research.alerts_report import render_alerts
from latent_sculpting.research.experiment import reproduce
from latent_sculpting.research.html_page import markdown_to_html
from latent_sculpting.research.html_report import render_report

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

IMG = '<img src="data:image/png;base64,'


@pytest.fixture(scope="module")
def reproduce_run(tmp_path_factory):
    """A real reproduce run on a stratified slice of the embedded sample (one seed, fast)."""
    out = tmp_path_factory.mktemp("run")
    reproduce(
        preset="fused",
        seeds=[0],
        max_per_class=120,
        out=out,
        verbose=False,
        overrides={
            **{k: v for k, v in FUSED_FAST.items() if v != preset("fused")[k]},
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


# ---------------------------------------------------------------------------- alerts page

HOSTILE = '<script>alert("x")</script>'


def _scored(n: int = 40) -> pd.DataFrame:
    """A file as `sculpt score` writes it, with hostile identifiers and feature names."""
    rng = np.random.default_rng(0)
    score = rng.permutation(np.arange(n, dtype=float))
    flagged = score >= n / 2
    flagged[score == n - 1] = False  # the highest score, not flagged: never shown
    return pd.DataFrame(
        {
            "Src IP": [f"10.0.0.{i}" for i in range(n)],
            "Flow ID": [
                HOSTILE if i == int(np.argmax(score * flagged)) else f"f{i}" for i in range(n)
            ],
            "score": score,
            "p_value": 1 / (score + 2),
            "is_attack": flagged,
            "flagged_by": np.where(flagged, "stage2", ""),
            "explanation": np.where(
                flagged,
                '<img src=x onerror="alert(1)"> 7 (above every benign value, median 0); '
                "SYN Flag Count 1 (above 99.5 % of benign, median 0)",
                "",
            ),
            "Label": np.where(flagged, "Bot & co", "BENIGN"),
        }
    )


def test_alerts_page_lists_the_top_flagged_flows_escaped(tmp_path):
    frame = _scored()
    scored = tmp_path / "scored.parquet"
    frame.to_parquet(scored)
    page = render_alerts(scored, top=5, batch_rows=7)  # the best rows span several batches
    assert "40 flows, 19 flagged (47.50%)." in page
    assert "The 5 highest-scoring flagged flows" in page
    # No start times or addresses of a known format: no incidents, said so.
    assert "cannot be grouped into incidents" in page
    ranks = re.findall(r"<tr><td class=\"num\">(\d+)</td><td class=\"num\">(\d+)</td>", page)
    top = frame[frame["is_attack"]].nlargest(5, "score")
    assert [int(row) for _, row in ranks] == [i + 1 for i in top.index]  # rows of the file
    assert [int(rank) for rank, _ in ranks] == [1, 2, 3, 4, 5]
    assert "<th>explanation</th><th>Src IP</th><th>Flow ID</th><th>Label</th>" in page
    assert "<script" not in page and "<img" not in page
    assert '<td>&lt;script&gt;alert("x")&lt;/script&gt;</td>' in page
    assert '&lt;img src=x onerror="alert(1)"&gt; 7' in page
    assert "median 0);<br>SYN Flag Count 1" in page
    assert "Bot &amp; co" in page
    _no_external_references(page)


def test_alerts_page_of_a_csv_through_the_cli(tmp_path, capsys):
    scored = tmp_path / "scored.csv"
    _scored().drop(columns="explanation").to_csv(scored, index=False)
    assert main(["report", str(scored), "--top", "3"]) == 0
    page = (tmp_path / "scored-alerts.html").read_text()
    assert page.count("<tr><td") == 3
    assert "scored without explanations" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scored-alerts.html", "scored.csv"]


def test_alerts_page_refuses_what_is_not_a_scored_file(tmp_path, capsys):
    scored = tmp_path / "scored.csv"
    frame = _scored()
    frame.drop(columns="score").to_csv(scored, index=False)
    assert main(["report", str(scored)]) == 2
    assert "no column 'score'; pass a file `sculpt score` wrote" in capsys.readouterr().err
    frame["is_attack"] = frame["is_attack"].astype(str)
    frame.loc[12, "is_attack"] = "maybe"
    frame.to_csv(scored, index=False)
    assert main(["report", str(scored)]) == 2
    assert "row 13, column 'is_attack': 'maybe' is not true or false" in capsys.readouterr().err
    assert main(["report", str(scored), "-o", str(scored)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "--top", "3"]) == 2
    assert "--top and --incidents are for a scored file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="top must be a positive integer"):
        render_alerts(scored, top=0)


def test_links_out_of_the_run_folder_are_refused(tmp_path, capsys):
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:secret-marker:/root:/bin/bash\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.md").write_text("# A run\n\nfine\n")
    (run / "copy.md").symlink_to(run / "results.md")  # inside to inside: followed
    assert "fine" in render_report(run)
    (run / "notes.md").symlink_to(secret)
    out = tmp_path / "report.html"
    assert main(["report", str(run), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "notes.md is a link to" in err and "outside the run folder" in err
    assert "secret-marker" not in err and not out.exists()
    # The same through a linked folder, a linked figure, and a folder named like a file.
    (run / "notes.md").unlink()
    (run / "plot.png").symlink_to(secret)
    with pytest.raises(ValueError, match="plot.png is a link to"):
        render_report(run)
    (run / "plot.png").unlink()
    (tmp_path / "latest").symlink_to(run, target_is_directory=True)
    assert "fine" in render_report(tmp_path / "latest")
    (run / "folder.json").mkdir()
    with pytest.raises(ValueError, match="folder.json is not a regular file"):
        render_report(run)
