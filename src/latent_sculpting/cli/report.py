"""``sculpt report``: one self-contained HTML page for a run folder or a scored file."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "report",
        help="render a run folder (reproduce, compare, ...) or the top alerts of a scored file "
        "as one self-contained HTML page",
        description="Write one HTML file with the run's tables and every PNG plot embedded "
        "(no external assets): a reproduce run gets its headline beside the paper, every "
        "threshold, per-attack recall and the plots; other runs their Markdown tables and plots. "
        "Given a file `sculpt score` wrote, the page lists its incidents first (flagged flows "
        "grouped by source host and time gap, each with its explanation, a timeline picture and "
        "its flows), then its highest-scoring flagged flows with their explanations.",
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR|SCORED", help="folder a run wrote, or a scored file"
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="HTML",
        help="page to write (default RUN_DIR/report.html, or SCORED's name with -alerts.html)",
    )
    parser.add_argument(
        "--top",
        type=int,
        metavar="N",
        help="incidents and alerts shown for a scored file (default 50 of each)",
    )
    parser.add_argument(
        "--incidents",
        metavar="JSONL",
        help="incidents `sculpt score --incidents` wrote for the scored file (default: the "
        "report groups its flows itself, with the default settings, uncalibrated)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from latent_sculpting.research.alerts_report import write_alerts
    from latent_sculpting.research.html_report import write_report

    source = Path(args.run_dir)
    if source.is_file():
        output = (
            Path(args.output) if args.output else source.with_name(f"{source.stem}-alerts.html")
        )
        top = 50 if args.top is None else args.top
        path = write_alerts(source, output, top=top, incidents=args.incidents)
    else:
        if args.top is not None or args.incidents is not None:
            raise ValueError(f"--top and --incidents are for a scored file; {source} is not a file")
        output = Path(args.output) if args.output else source / "report.html"
        path = write_report(source, output)
    print(f"report written to {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0
