"""``sculpt compare``: every method on the paper's zero-shot fold of CIC-IDS-2017.

A view of ``sculpt benchmark`` (one dataset, the ``paper`` protocol, every method): the same
engine, folds, thresholds, statistics and files.
"""

from __future__ import annotations

import argparse

from latent_sculpting.cli.benchmark import add_run_flags, run_view


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare",
        help="run baselines, our presets and ablations on the paper's zero-shot fold of "
        "CIC-IDS-2017; write benchmark.json, benchmark.md and plots",
        description="Withhold the paper's four classes (or --withhold), fit every method on the "
        "same rows for each split seed, threshold each on held-out benign rows at 5 %, 1 % and "
        "0.1 % false positives, and compare them: sculpt benchmark restricted to one fold "
        "(see docs/research/protocol.md and docs/research/baselines.md).",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        help="CIC-IDS-2017 folder or files, either release (default: the embedded sample)",
    )
    parser.add_argument(
        "--withhold",
        nargs="+",
        metavar="CLASS",
        help="classes withheld (default DoS slowloris, DoS Slowhttptest, Bot, Infiltration)",
    )
    # Named in words: listing them would import every baseline (torch, scikit-learn) into
    # every command's start.
    add_run_flags(
        parser,
        methods="every baseline, paper-v1, paper-v2, fused, default and its ablations",
        seeds=(0, 1, 2),
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from latent_sculpting.research.baselines import DEFAULT_METHODS

    args.methods = args.methods or list(DEFAULT_METHODS)
    run_view(
        args,
        datasets=["cicids2017"],
        data={"cicids2017": args.data} if args.data else None,
        protocols=["paper"],
        withheld=args.withhold,
        title="sculpt compare",
    )
    return 0
