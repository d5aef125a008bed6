"""The paper's CIC-IDS-2017 fold of a `sculpt benchmark` run, against the default's targets.

    python benchmarks/design/paper_fold.py runs/benchmark-... [--methods default rf knn]

Reads the run's checkpoints (``folds/cicids2017/paper/seed-*/METHOD.json``) and prints, per
method, mean ± sample std over split seeds of: zero-shot AUROC, recall of the four withheld
classes at the 1 % threshold, the realised benign false-positive rate there, Bot's recall there,
and the known attacks' AUROC. The threshold is each method's 1 % threshold on held-out benign
rows (docs/research/protocol.md), not the method's own rule.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from latent_sculpting.research.benchmark import load_records
from latent_sculpting.research.benchmark.statistics import mean_std


def _stat(values: list[float]) -> str:
    stat = mean_std(values)
    if math.isnan(stat["std"]):
        return f"{stat['mean']:.3f}" if stat["n"] else "–"
    return f"{stat['mean']:.3f} ± {stat['std']:.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a sculpt benchmark output folder")
    parser.add_argument("--methods", nargs="+", help="methods (default: every one in the run)")
    args = parser.parse_args(argv)
    records: dict[str, list[dict]] = {}
    try:
        run = load_records(args.run)
    except FileNotFoundError as error:
        parser.error(str(error))
    for record in run:
        if record["dataset"] == "cicids2017" and record["fold"] == "paper":
            records.setdefault(record["method"], []).append(record)
    if not records:
        parser.error(f"{args.run} has no checkpoint of the paper fold of cicids2017")
    methods = args.methods or sorted(records)
    missing = [m for m in methods if m not in records]
    if missing:
        parser.error(f"no paper-fold checkpoint for {missing}; the run has {sorted(records)}")
    print(
        "| method | seeds | AUROC | recall at 1 % | realised FPR at 1 % | Bot recall at 1 % "
        "| known AUROC |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for method in methods:
        rs = records[method]
        rows.append(
            (
                mean_std([r["auroc"] for r in rs])["mean"],
                f"| {method} | {len(rs)} | {_stat([r['auroc'] for r in rs])} | "
                f"{_stat([r['recall_at_fpr']['0.01'] for r in rs])} | "
                f"{_stat([r['realised_fpr']['0.01'] for r in rs])} | "
                f"{_stat([r['per_class_recall']['0.01']['Bot'] for r in rs])} | "
                f"{_stat([r['known']['auroc'] for r in rs])} |",
            )
        )
    for _, line in sorted(rows, key=lambda x: -x[0]):
        print(line)


if __name__ == "__main__":
    main()
