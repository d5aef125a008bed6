"""``sculpt compare``: baselines, presets and ablations on the identical zero-shot splits."""

from __future__ import annotations

import argparse

from .common import add_data_flags, add_set_flags, method_factory


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..baselines import DEFAULT_METHODS

    parser = subparsers.add_parser(
        "compare",
        help="run baselines, our presets and ablations under one protocol; write compare.json, "
        "compare.md and plots",
        description="Fit every method on the same zero-shot splits once per seed, threshold "
        "each at a percentile of its scores on benign training rows held out of every fit, and "
        "tabulate known-attack and zero-shot metrics (see docs/baselines.md).",
    )
    add_data_flags(parser)
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="methods to run, e.g. knn rf default paper-v1 default-stage1 knn@none "
        f"(default: {' '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (default 0 1 2)"
    )
    parser.add_argument(
        "--percentile",
        type=float,
        default=95.0,
        help="threshold: this percentile of each method's held-out benign scores (default 95)",
    )
    parser.add_argument(
        "--holdout",
        type=float,
        default=0.2,
        help="share of benign training rows held out of every fit for the threshold (default 0.2)",
    )
    parser.add_argument(
        "--threads", type=int, help="cap BLAS/OpenMP/torch threads (helps on shared cores)"
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="seeds fitted at once, one process each, then merged (default 1)",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RUN_DIR",
        help="instead of fitting, merge compare runs made with other seeds (e.g. one seed per "
        "machine) into --out",
    )
    add_set_flags(parser, "for every preset among --methods, before its ablation")
    parser.add_argument("--out", help="output folder (default runs/compare-TIME)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..baselines import DEFAULT_METHODS
    from ..compare import compare, merge_runs
    from ..data import DEFAULT_WITHHELD

    if args.merge and args.settings:
        raise ValueError("--merge fits nothing: --set has no effect with it")
    if args.merge:
        if not args.out:
            raise ValueError("--merge needs --out, the folder for the merged comparison")
        results = merge_runs(args.merge, args.out)
        _print(results)
        return 0
    methods = args.methods or list(DEFAULT_METHODS)
    factory = method_factory(args, methods)
    results = compare(
        data=args.data,
        methods=methods,
        seeds=args.seeds,
        percentile=args.percentile,
        holdout=args.holdout,
        split_seed=None if args.split_seed == -1 else args.split_seed,
        withheld=args.withhold or DEFAULT_WITHHELD,
        out=args.out,
        max_per_class=args.max_per_class,
        plots=not args.no_plots,
        verbose=not args.quiet,
        threads=args.threads,
        jobs=args.jobs,
        factory=factory,
    )
    _print(results)
    return 0


def _print(results: dict) -> None:
    for name in results["order"]:
        zs = results["methods"][name]["zero_shot"]
        print(
            f"{name:18s} zero-shot AUROC {zs['auroc']['mean']:.3f} ± {zs['auroc']['std']:.3f}"
            f"  F1 {zs['f1']['mean']:.3f} ± {zs['f1']['std']:.3f}"
        )
