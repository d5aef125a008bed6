"""Paired intervals of some methods against several references, from `sculpt benchmark` runs.

    python benchmarks/analysis/paired_against.py RUN [RUN ...] \\
        --methods paper-v1 paper-v2 fused default-sculpt --against default rf knn

``sculpt benchmark`` compares every method with one reference (``default``); issue 34 asks
where the sculpted encoder helps and hurts beside ``default``, the random forest and kNN. This
reads the checkpoints of one or more run folders (``folds/DATASET/FOLD/seed-*/METHOD.json``,
e.g. one run per dataset before they are merged), and prints, for each reference, the same
table the benchmark prints: the mean over folds of ``reference - method`` (each fold's split
seeds averaged first), its paired bootstrap 95 % interval over folds and the verdict (an
interval containing 0 is a tie). Cells whose benign rows do not resolve a false-positive rate
are left out exactly as the benchmark leaves them out (it is the benchmark's own
:func:`~latent_sculpting.research.benchmark.report.summarise`). Only folds where both methods
ran are paired; the ``folds`` column says how many.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latent_sculpting.research.benchmark import load_records
from latent_sculpting.research.benchmark.summary import COMPARED, summarise

LABELS = {
    "auroc": "AUROC",
    "auprc": "AUPRC",
    "recall@0.05": "recall at 5 % FPR",
    "recall@0.01": "recall at 1 % FPR",
    "recall@0.001": "recall at 0.1 % FPR",
}


def _records(runs: list[Path]) -> list[dict]:
    """Every checkpoint of ``runs``; the same fit in two runs must have the same key."""
    seen: dict[tuple, dict] = {}
    for run in runs:
        for record in load_records(run):
            ident = (record["dataset"], record["fold"], record["split_seed"], record["method"])
            if ident in seen and seen[ident]["key"] != record["key"]:
                raise SystemExit(f"{run}: {ident} was computed with other settings than before")
            seen.setdefault(ident, record)
    return list(seen.values())


def _cell(entry: dict, reference: str) -> str:
    if entry["n"] == 0:
        return "n/a"
    words = {"tie": "tie", "higher": f"{reference} higher", "lower": f"{reference} lower"}
    return (
        f"{entry['difference']:+.3f} [{entry['low']:+.3f}, {entry['high']:+.3f}] "
        f"{words.get(entry['verdict'], entry['verdict'])}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="sculpt benchmark output folders")
    parser.add_argument("--methods", nargs="+", required=True, help="the methods judged")
    parser.add_argument("--against", nargs="+", required=True, help="the references")
    args = parser.parse_args(argv)
    records = _records(args.runs)
    present = {r["method"] for r in records}
    missing = sorted(set(args.methods + args.against) - present)
    if missing:
        raise SystemExit(f"no checkpoint of {missing} in {[str(r) for r in args.runs]}")
    for reference in args.against:
        methods = [reference, *[m for m in args.methods if m != reference]]
        mine = [r for r in records if r["method"] in methods]
        stats = summarise(mine, methods, reference)
        print(f"\n### `{reference}` minus each method\n")
        header = " | ".join(LABELS[m] for m in COMPARED)
        print(f"| method | scope | folds | {header} |")
        print("|---|---|---:|" + "---|" * len(COMPARED))
        rows: dict[tuple[str, str], dict[str, dict]] = {}
        for c in stats["comparisons"]:
            rows.setdefault((c["method"], c["dataset"]), {})[c["metric"]] = c
        for (method, scope), by_metric in rows.items():
            folds = max(c["n"] for c in by_metric.values())
            cells = " | ".join(_cell(by_metric[m], reference) for m in COMPARED)
            print(f"| {method} | {scope} | {folds} | {cells} |")


if __name__ == "__main__":
    main()
