"""Withheld families where a method trails the best baseline, from a `sculpt benchmark` run.

    python benchmarks/analysis/family_gaps.py runs/benchmark-... [--method default] [--margin 0.05]

Reads the run's checkpoints (``folds/DATASET/FOLD/seed-*/METHOD.json``), averages each method's
recall at the 1 % threshold (``--metric``) over the split seeds of each test fold, and prints,
fold by fold, the method's value, the best baseline's (which one) and the gap; then how many
folds trail by more than ``--margin``: the issue's target "no withheld family where `default`'s
recall at 1 % FPR is more than 0.05 below the best baseline's on that family". Baselines are the
run's methods that :data:`latent_sculpting.research.baselines.BASELINES` names (with or without an
``@transform``), never a preset or an ablation of one. ``--every`` prints that count for every
method of the run, each against the best of the other baselines.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np

from latent_sculpting.research.baselines import BASELINES
from latent_sculpting.research.benchmark import load_records


def _value(record: dict, metric: str) -> float:
    if metric == "auroc":
        return float(record["auroc"])
    return float(record["recall_at_fpr"][metric.removeprefix("recall@")])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a sculpt benchmark output folder")
    parser.add_argument("--method", default="default", help="the method judged (default default)")
    parser.add_argument("--margin", type=float, default=0.05, help="allowed gap (default 0.05)")
    parser.add_argument(
        "--metric",
        default="recall@0.01",
        choices=("recall@0.05", "recall@0.01", "recall@0.001", "auroc"),
        help="what is compared (default recall@0.01)",
    )
    parser.add_argument(
        "--every",
        action="store_true",
        help="count the trailing folds of every method of the run (each against the others)",
    )
    args = parser.parse_args(argv)
    try:
        records = load_records(args.run)
    except FileNotFoundError as error:
        parser.error(str(error))
    values: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        fold = (record["dataset"], record["fold"])
        values[fold][record["method"]].append(_value(record, args.metric))
    if not any(args.method in methods for methods in values.values()):
        parser.error(f"{args.run} has no checkpoint of {args.method!r}")

    if args.every:
        _every(values, args)
        return
    below = f"more than {args.margin:g} below"
    print(f"| dataset | fold | {args.method} | best baseline | gap | {below} |")
    print("|---|---|---:|---|---:|---|")
    gaps = _gaps(values, args.method)
    for (dataset, fold), (ours, best, theirs) in gaps.items():
        gap = ours - theirs
        behind = gap < -args.margin
        print(
            f"| {dataset} | {fold} | {ours:.3f} | {best} {theirs:.3f} | {gap:+.3f} | "
            f"{'**yes**' if behind else 'no'} |"
        )
    trailing = sum(ours - theirs < -args.margin for ours, _, theirs in gaps.values())
    n = sum(1 for methods in values.values() if args.method in methods)
    print(
        f"\n{args.method} trails the best baseline by more than {args.margin:g} ({args.metric}, "
        f"mean over split seeds) on {trailing} of {n} folds."
    )


def _gaps(values, method: str) -> dict[tuple[str, str], tuple[float, str, float]]:
    """Per fold: ``method``'s value, the best *other* baseline and its value."""
    out = {}
    for (dataset, fold), methods in sorted(values.items()):
        if method not in methods:
            continue
        baselines = {
            name: float(np.mean(v))
            for name, v in methods.items()
            if name != method and name.partition("@")[0] in BASELINES
        }
        if baselines:
            best = max(baselines, key=baselines.__getitem__)
            out[dataset, fold] = (float(np.mean(methods[method])), best, baselines[best])
    return out


def _every(values, args) -> None:
    """The same count for every method of the run, each against the best of the *other*
    baselines: how far any single method is from the target, not only the one judged."""
    names = sorted({name for methods in values.values() for name in methods})
    counts = {}
    for name in names:
        gaps = _gaps(values, name)
        counts[name] = (sum(o - t < -args.margin for o, _, t in gaps.values()), len(gaps))
    print(f"| method | folds more than {args.margin:g} below the best other baseline |")
    print("|---|---:|")
    for name, (trailing, n) in sorted(counts.items(), key=lambda item: item[1]):
        print(f"| {name} | {trailing} of {n} |")


if __name__ == "__main__":
    main()
