"""``sculpt sweep``: leave one attack family out, for our detector and the strongest baselines."""

from __future__ import annotations

import argparse

from .common import add_data_flags, add_set_flags, method_factory


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..sweep import DEFAULT_SWEEP_METHODS, FAMILIES

    parser = subparsers.add_parser(
        "sweep",
        help="withhold each attack family in turn; write sweep.json, sweep.md and a heat map",
        description="For each attack family (" + ", ".join(FAMILIES) + "), train on benign "
        "flows and every other family, and report the family's recall at a fixed benign "
        "false-positive rate and its AUROC (see docs/baselines.md). --withhold is ignored: "
        "each fold withholds one family.",
    )
    add_data_flags(parser)
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(DEFAULT_SWEEP_METHODS),
        metavar="NAME",
        help=f"methods (default {' '.join(DEFAULT_SWEEP_METHODS)}; any name of sculpt compare)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="model seeds (default 0)")
    parser.add_argument(
        "--families",
        nargs="+",
        metavar="FAMILY",
        choices=sorted(FAMILIES),
        help="only these families (default all)",
    )
    parser.add_argument(
        "--fpr",
        type=float,
        default=0.01,
        help="benign false-positive rate of the threshold (default 0.01)",
    )
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="share of benign training rows held out of every fit (default 0.2)",
    )
    parser.add_argument(
        "--threads", type=int, help="cap BLAS/OpenMP/torch threads (helps on shared cores)"
    )
    add_set_flags(parser, "for every preset among --methods, before its ablation")
    parser.add_argument("--out", help="output folder (default runs/sweep-TIME)")
    parser.add_argument("--no-plots", action="store_true", help="skip the heat map")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..sweep import FAMILIES, sweep

    families = None if not args.families else {f: FAMILIES[f] for f in args.families}
    results = sweep(
        data=args.data,
        methods=args.methods,
        seeds=args.seeds,
        families=families,
        fpr=args.fpr,
        holdout=args.holdout,
        split_seed=None if args.split_seed == -1 else args.split_seed,
        out=args.out,
        max_per_class=args.max_per_class,
        plots=not args.no_plots,
        verbose=not args.quiet,
        threads=args.threads,
        factory=method_factory(args, args.methods),
    )
    for family, entry in results["families"].items():
        cells = "  ".join(
            f"{m} {s['recall']['mean']:.2f}/{s['auroc']['mean']:.3f}"
            for m, s in entry["methods"].items()
        )
        print(f"{family:14s} recall/AUROC  {cells}")
    return 0
