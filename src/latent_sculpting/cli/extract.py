"""``sculpt extract``: packet captures to a Parquet file of flow records."""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from latent_sculpting.cli.common import add_meter_flags, meter_settings_from_args


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "extract",
        help="turn pcap/pcapng captures into a Parquet file of flow records (nfstream)",
        description="Meter packet captures into bidirectional flows with nfstream (statistical "
        "features, nDPI application names; idle timeout 120 s, active timeout 1800 s unless "
        "--idle-timeout/--active-timeout say otherwise) and write "
        "them, with a source_file column, to one Parquet file renamed into place at the end. "
        "Needs the capture extra: pip install 'latent-sculpting[capture]'.",
    )
    parser.add_argument(
        "captures", nargs="+", metavar="CAPTURE", help="pcap/pcapng files, or folders of them"
    )
    parser.add_argument("-o", "--output", required=True, help="output .parquet file")
    parser.add_argument(
        "--meters",
        type=int,
        default=1,
        metavar="N",
        help="nfstream metering processes per capture (default 1: the same rows in the same "
        "order on every run; more is faster on large captures, in an order that may vary)",
    )
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=65_536,
        metavar="N",
        help="flows held in memory and written at a time (default 65536)",
    )
    add_meter_flags(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def run(args: argparse.Namespace) -> int:
    from latent_sculpting.io.extract import extract

    if args.meters < 1:
        raise ValueError(f"--meters must be at least 1, got {args.meters}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        try:
            summary = extract(
                args.captures,
                args.output,
                batch_rows=args.batch_rows,
                meters=args.meters,
                progress=not args.quiet,
                **meter_settings_from_args(args),
            )
        except ImportError as error:
            raise ValueError(str(error)) from None
    for warning in caught:
        print(f"sculpt extract: warning: {warning.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2))
        return 0
    rate = summary.seconds or float("nan")
    print(
        f"extracted {summary.flows:,} flows from {summary.packets:,} packets in "
        f"{len(summary.captures)} capture(s) in {summary.seconds:.1f} s "
        f"({summary.packets / rate:,.0f} packets/s, {summary.flows / rate:,.0f} flows/s)"
    )
    print(f"written to {summary.output}")
    return 0
