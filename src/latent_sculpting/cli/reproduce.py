"""``sculpt reproduce``: the paper's zero-shot experiment in one command."""

from __future__ import annotations

import argparse

from latent_sculpting.cli.common import (
    add_data_flags,
    add_model_flags,
    add_threads_flag,
    apply_threads,
    check_model,
    model_overrides,
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "reproduce",
        help="run the paper's zero-shot experiment and write results.json, results.md, plots",
        description="Split the data by the zero-shot protocol, fit the detector once per seed, "
        "and report known-attack and zero-shot metrics beside the paper's.",
    )
    add_data_flags(parser)
    add_model_flags(parser)
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="model seeds (default 0 1 2)"
    )
    parser.add_argument("--out", help="output folder (default runs/reproduce-PRESET-TIME)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    add_threads_flag(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def run(args: argparse.Namespace) -> int:
    from latent_sculpting.data import DEFAULT_WITHHELD
    from latent_sculpting.research.experiment import reproduce

    overrides = apply_threads(args, model_overrides(args))
    check_model(args.preset, overrides)
    results = reproduce(
        data=args.data,
        preset=args.preset,
        seeds=args.seeds,
        split_seed=None if args.split_seed == -1 else args.split_seed,
        withheld=args.withhold or DEFAULT_WITHHELD,
        overrides=overrides,
        out=args.out,
        max_per_class=args.max_per_class,
        plots=not args.no_plots,
        verbose=not args.quiet,
        threads=1,  # the workers of --threads are the fits' n_jobs
    )
    zs, known = results["zero_shot"], results["known"]
    print(
        f"known F1 {known['f1']['mean']:.3f} ± {known['f1']['std']:.3f} | "
        f"zero-shot F1 {zs['f1']['mean']:.3f} ± {zs['f1']['std']:.3f}, "
        f"AUROC {zs['auroc']['mean']:.3f} ± {zs['auroc']['std']:.3f}"
    )
    return 0
