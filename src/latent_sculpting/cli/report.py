"""``sculpt report``: one self-contained HTML page for a run folder."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="render a run folder (reproduce, compare, ...) as one self-contained HTML page",
        description="Write one HTML file with the run's tables and every PNG plot embedded "
        "(no external assets): a reproduce run gets its headline beside the paper, every "
        "threshold, per-attack recall and the plots; other runs their Markdown tables and plots.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder a run wrote")
    parser.add_argument(
        "-o", "--output", metavar="HTML", help="page to write (default RUN_DIR/report.html)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..report import write_report

    output = Path(args.output) if args.output else Path(args.run_dir) / "report.html"
    path = write_report(args.run_dir, output)
    print(f"report written to {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0
