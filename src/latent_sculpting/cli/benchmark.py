"""``sculpt benchmark``: the zero-day protocol over several datasets, one result set.

``sculpt compare`` and ``sculpt sweep`` are views of the same engine (one dataset, one
protocol); the flags they share are defined here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from latent_sculpting.cli.common import (
    THREADS_PER_JOB_HELP,
    add_set_flags,
    add_threads_flag,
    model_overrides,
)


def add_run_flags(
    parser: argparse.ArgumentParser, *, methods: Sequence[str] | str, seeds: Sequence[int]
) -> None:
    """Flags of every view of the benchmark engine (``methods``: the default methods, or
    words that name them)."""
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="NAME",
        help="methods, e.g. default rf knn knn@none default-noforest "
        f"(default: {methods if isinstance(methods, str) else ' '.join(methods)})",
    )
    parser.add_argument(
        "--split-seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="split seeds: each re-draws every split and seeds every model "
        f"(default {' '.join(map(str, seeds))})",
    )
    parser.add_argument(
        "--max-per-class",
        type=int,
        metavar="N",
        help="use at most N random rows of each class of each dataset (a quick stratified slice)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="folds run at once, one process each (default 1)"
    )
    # Here the tasks are the --jobs processes; --threads keeps its meaning of threads in each.
    add_threads_flag(parser, THREADS_PER_JOB_HELP)
    parser.add_argument(
        "--reference",
        help="the method every other is compared with (default: default, if it is run)",
    )
    parser.add_argument(
        "--out",
        help="output folder (default runs/<command>-TIME); rerunning into a folder resumes it",
    )
    parser.add_argument(
        "--merge",
        nargs="+",
        metavar="RUN_DIR",
        help="instead of running, merge the checkpoints of these runs (e.g. one split seed per "
        "machine) into --out",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_set_flags(parser, "applied to each of our detector's presets among --methods")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from latent_sculpting.research.benchmark import BENCHMARK_METHODS, DATASETS, PROTOCOLS, QUICK
    from latent_sculpting.research.benchmark.ablations import ABLATION_DATASETS, MAIN_DATASETS

    parser = subparsers.add_parser(
        "benchmark",
        help="the zero-day protocol over several datasets (each attack family withheld in "
        "turn, several split seeds); write benchmark.json, benchmark.md and plots",
        description="Withhold every attack family of every dataset in turn (and the paper's "
        "four CIC-IDS-2017 classes), fit each method on benign flows and the other families, "
        "threshold it on held-out benign flows at 5 %, 1 % and 0.1 % false positives, and "
        "compare the methods with bootstrap intervals and mean ranks "
        "(see docs/research/protocol.md).",
    )
    parser.add_argument(
        "--datasets",
        nargs="+",
        choices=list(DATASETS),
        default=list(MAIN_DATASETS),
        metavar="NAME",
        help=f"datasets (default: {' '.join(MAIN_DATASETS)}; also the ablations "
        f"{' '.join(ABLATION_DATASETS)}: UNSW-NB15 without its connection counts, IoT-23 "
        "without the Benign flows to a C&C server's network)",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        default=[],
        metavar="NAME=PATH",
        help="where a dataset's files are, e.g. unsw-nb15=~/data/unsw (default: the embedded "
        "CIC-IDS-2017 sample; the others under $SCULPT_SHARED/data or ../shared/data)",
    )
    parser.add_argument(
        "--protocols",
        nargs="+",
        choices=PROTOCOLS,
        default=list(PROTOCOLS),
        help="test folds: each family withheld in turn, and the paper's four classes "
        "(default both)",
    )
    parser.add_argument(
        "--validation",
        action="store_true",
        help="run the validation folds inside each test fold instead (a known family held out "
        "as a pseudo-zero-day): where designs are chosen",
    )
    parser.add_argument(
        "--families", nargs="+", metavar="FAMILY", help="only these families (default all)"
    )
    parser.add_argument(
        "--withhold",
        nargs="+",
        metavar="CLASS",
        help="classes of the 'paper' fold (default DoS slowloris, DoS Slowhttptest, Bot, "
        "Infiltration)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"every dataset, split seeds {' '.join(map(str, QUICK['split_seeds']))}, methods "
        f"{' '.join(QUICK['methods'])}, at most {QUICK['max_per_class']:,} rows per class "
        "(flags given explicitly win)",
    )
    parser.add_argument(
        "--compare",
        nargs=2,
        metavar=("BEFORE", "AFTER"),
        help="instead of running, compare two finished runs fold by fold (after - before, with "
        "bootstrap intervals) for --methods (default: AFTER's reference); print the table, and "
        "with --out also write comparison.md and comparison.json there",
    )
    add_run_flags(parser, methods=BENCHMARK_METHODS, seeds=(0, 1, 2))
    return parser


def parse_data(entries: Sequence[str]) -> dict[str, str]:
    """``["unsw-nb15=path", ...]`` -> ``{"unsw-nb15": "path"}``."""
    out = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--data takes NAME=PATH, got {entry!r}")
        out[name] = path
    return out


def run_view(args: argparse.Namespace, **fixed) -> dict:
    """Run (or merge) the engine with the command's flags and the view's fixed arguments."""
    from latent_sculpting.research.benchmark import benchmark, merge_runs

    if args.merge:
        if not args.out:
            raise ValueError("--merge needs --out, the folder for the merged result set")
        results = merge_runs(args.merge, args.out, plots=not args.no_plots)
    else:
        kwargs = {
            "max_per_class": args.max_per_class,
            "reference": args.reference,
            "out": args.out,
            "jobs": args.jobs,
            "threads": None if args.threads == "auto" else args.threads,
            "plots": not args.no_plots,
            "verbose": not args.quiet,
            "command": ["sculpt", *sys.argv[1:]] if sys.argv else None,
            **fixed,
        }
        if args.methods:
            kwargs["methods"] = args.methods
        if args.split_seeds:
            kwargs["split_seeds"] = args.split_seeds
        results = benchmark(**kwargs, overrides=model_overrides(args))
    _print(results)
    return results


def _print(results: dict) -> None:
    from latent_sculpting.research.evaluation import resolvable

    for entry in results["summary"]:
        if entry["dataset"] != "all":
            continue
        auroc, recall = entry["auroc"], entry["recall@0.01"]
        text, benign = _fmt(recall), entry.get("benign_rows")
        if (
            recall.get("mean") is None
            and benign
            and not resolvable(0.01, benign["test_benign"], benign["calibration"])
        ):
            text = f"n/a ({benign['test_benign']:,} benign)"
        elif recall.get("n_folds") is not None and recall["n_folds"] < entry["n_folds"]:
            text += f" ({recall['n_folds']} of {entry['n_folds']} folds resolve it)"
        print(
            f"{entry['method']:18s} AUROC {_fmt(auroc)}  recall at 1 % FPR {text}"
            f"  ({entry['n_folds']} folds)"
        )


def _fmt(stat: dict) -> str:
    if stat.get("mean") is None:
        return "–"
    std = "" if stat.get("std") is None else f" ± {stat['std']:.3f}"
    return f"{stat['mean']:.3f}{std}"


def compare(args: argparse.Namespace) -> dict:
    """``--compare BEFORE AFTER``: print the comparison, and write it under ``--out`` if given."""
    from pathlib import Path

    from latent_sculpting.atomic import write_json, write_text
    from latent_sculpting.research.benchmark import compare_markdown, compare_runs
    from latent_sculpting.research.benchmark.report import json_safe

    if args.merge:
        raise ValueError("--compare and --merge are two different things; give one")
    comparison = compare_runs(*args.compare, methods=args.methods)
    text = compare_markdown(comparison)
    print(text, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        write_json(json_safe(comparison), out / "comparison.json")
        write_text(text, out / "comparison.md")
        print(f"comparison in {out}/ (comparison.md, comparison.json)", file=sys.stderr)
    return comparison


def run(args: argparse.Namespace) -> int:
    from latent_sculpting.research.benchmark import QUICK

    if args.compare:
        compare(args)
        return 0

    fixed: dict = {
        "datasets": args.datasets,
        "data": parse_data(args.data),
        "protocols": args.protocols,
        "validation": args.validation,
        "families": args.families,
        "withheld": args.withhold,
    }
    if args.quick:
        args.methods = args.methods or list(QUICK["methods"])
        args.split_seeds = args.split_seeds or list(QUICK["split_seeds"])
        if args.max_per_class is None:
            args.max_per_class = QUICK["max_per_class"]
    run_view(args, **fixed)
    return 0
