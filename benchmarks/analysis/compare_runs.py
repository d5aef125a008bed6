"""One method in two ``sculpt benchmark`` runs, fold by fold: did a change move its quality?

Reads the ``benchmark.json`` of two run folders (for example the same command at two commits),
pairs the folds both ran for ``--method``, and prints, per metric, the mean of the paired
differences (AFTER - BEFORE) with its percentile bootstrap interval over folds
(:func:`latent_sculpting.research.benchmark.statistics.paired_bootstrap`, the one ``sculpt
benchmark``
uses between methods) and the verdict: an interval containing 0 is a tie.

Usage::

    sculpt benchmark --quick --out runs/quick-after            # at the new commit
    sculpt benchmark --quick --out runs/quick-before           # at the old one (a worktree)
    python benchmarks/analysis/compare_runs.py runs/quick-before runs/quick-after --method default
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from latent_sculpting.research.benchmark.statistics import paired_bootstrap

METRICS = ("auroc", "auprc", "recall@0.05", "recall@0.01", "recall@0.001")


def _folds(run: Path, method: str) -> dict[tuple[str, str], dict]:
    path = run / "benchmark.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise SystemExit(f"{path}: not a benchmark run ({error})") from None
    folds = {(r["dataset"], r["fold"]): r for r in data["per_fold"] if r["method"] == method}
    if not folds:
        raise SystemExit(f"{path}: no folds of method {method!r}")
    return folds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path, help="run folder of the old code")
    parser.add_argument("after", type=Path, help="run folder of the new code")
    parser.add_argument("--method", default="default")
    args = parser.parse_args()
    before, after = _folds(args.before, args.method), _folds(args.after, args.method)
    keys = sorted(set(before) & set(after))
    print(
        f"`{args.method}`: {args.after} - {args.before}, {len(keys)} paired folds "
        f"(split seeds averaged per fold), 95 % bootstrap interval over folds\n"
    )
    print("| metric | before | after | after - before | interval | verdict |")
    print("|---|---:|---:|---:|---|---|")
    for metric in METRICS:
        # A fold whose benign rows do not resolve a rate has no mean there (None): left out.
        pairs = [
            (after[k][metric]["mean"], before[k][metric]["mean"])
            for k in keys
            if after[k][metric]["mean"] is not None and before[k][metric]["mean"] is not None
        ]
        if not pairs:
            print(f"| {metric} | n/a | n/a | n/a | no fold resolves it | – |")
            continue
        a, b = (list(x) for x in zip(*pairs, strict=True))
        result = paired_bootstrap(a, b)
        print(
            f"| {metric} ({len(pairs)} folds) | {sum(b) / len(b):.4f} | {sum(a) / len(a):.4f} | "
            f"{result['difference']:+.4f} | [{result['low']:+.4f}, {result['high']:+.4f}] | "
            f"{result['verdict']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
