"""``sculpt sweep``: each attack family of one dataset withheld in turn.

A view of ``sculpt benchmark`` (one dataset, the ``families`` protocol): the same engine, folds,
thresholds, statistics and files.
"""

from __future__ import annotations

import argparse

#: Our default preset and the two strongest baselines of ``sculpt compare`` on the sample.
SWEEP_METHODS = ("default", "knn", "rf")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from latent_sculpting.cli.benchmark import add_run_flags
    from latent_sculpting.research.benchmark import DATASETS

    parser = subparsers.add_parser(
        "sweep",
        help="withhold each attack family of one dataset in turn; write benchmark.json, "
        "benchmark.md and a heat map",
        description="For each attack family, train on benign flows and every other family and "
        "report the family's recall at 5 %, 1 % and 0.1 % benign false positives and its AUROC: "
        "sculpt benchmark restricted to one dataset (see docs/research/protocol.md).",
    )
    parser.add_argument(
        "--dataset",
        choices=list(DATASETS),
        default="cicids2017",
        help="the dataset (default cicids2017)",
    )
    parser.add_argument(
        "--data", nargs="+", metavar="PATH", help="its folder or files (default: its own place)"
    )
    parser.add_argument(
        "--families", nargs="+", metavar="FAMILY", help="only these families (default all)"
    )
    add_run_flags(parser, methods=SWEEP_METHODS, seeds=(0, 1, 2))
    return parser


def run(args: argparse.Namespace) -> int:
    from latent_sculpting.cli.benchmark import run_view

    args.methods = args.methods or list(SWEEP_METHODS)
    run_view(
        args,
        datasets=[args.dataset],
        data={args.dataset: args.data} if args.data else None,
        protocols=["families"],
        families=args.families,
        title="sculpt sweep",
    )
    return 0
