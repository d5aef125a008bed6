"""The paper's CIC-IDS-2017 fold of a `sculpt benchmark` run, against the default's targets.

    python benchmarks/paper_fold.py runs/benchmark-... [--methods default rf knn]

Reads the run's checkpoints (``folds/cicids2017/paper/seed-*/METHOD.json``) and prints, per
method, mean ± sample std over split seeds of: zero-shot AUROC, recall of the four withheld
classes at the 1 % threshold, the realised benign false-positive rate there, Bot's recall there,
and the known attacks' AUROC. The threshold is each method's 1 % threshold on held-out benign
rows (docs/protocol.md), not the method's own rule.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def _stat(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.3f}" if values else "–"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a sculpt benchmark output folder")
    parser.add_argument("--methods", nargs="+", help="methods (default: every one in the run)")
    args = parser.parse_args(argv)
    fold = args.run / "folds" / "cicids2017" / "paper"
    if not fold.is_dir():
        parser.error(f"{fold} does not exist: the run has no paper fold of cicids2017")
    records: dict[str, list[dict]] = {}
    for path in sorted(fold.glob("seed-*/*.json")):
        record = json.loads(path.read_text())
        records.setdefault(record["method"], []).append(record)
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
                statistics.mean(r["auroc"] for r in rs),
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
