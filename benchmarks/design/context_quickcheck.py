"""A design check of the context features on the complete IoT-23 Zeek captures: a random forest
and kNN, leave-one-family-out, with and without context. NOT the benchmark: one dataset, few
seeds, no intervals; it says whether the features carry signal, not how much `sculpt
benchmark` will measure.

Protocol (the benchmark's own pieces, :mod:`latent_sculpting.research.benchmark`):

* Context is computed per capture file, over every record of it, before any row is dropped
  (each capture is its own network and time; hosts' addresses recur across captures), with a
  fresh :class:`~latent_sculpting.io.context.ContextStage` per file and the default configuration.
* Folds: each IoT-23 family withheld in turn (``test_folds``), rows drawn by ``split_fold``
  for each split seed: benign 60/20/20 into fitting, calibration and test rows.
* Features: the fold's FlowSpec fitted on its fitting rows (``encode``), and the same with the
  context columns appended.
* Evaluation rows equal to a fitting row on the conn.log features are dropped
  (``drop_duplicates``, on the features without context, so both variants are scored on the
  same rows).
* Thresholds at 1 % and 0.1 % FPR from the calibration rows (held-out benign), never from
  test rows; recall on the withheld family, AUROC against the benign test rows.
* Methods: the benchmark's ``rf`` (supervised, benign against the known families) and ``knn``
  (PyOD's kNN distance, fitted on benign rows only), each with its own feature transform.

Usage::

    python benchmarks/design/context_quickcheck.py [--seeds 0 1] [--methods rf knn]
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from latent_sculpting.io.context import ContextStage
from latent_sculpting.io.encoding import encode
from latent_sculpting.io.formats import get_format
from latent_sculpting.io.table import read_records
from latent_sculpting.research.baselines import make_method
from latent_sculpting.research.benchmark.datasets import get_adapter, load_dataset
from latent_sculpting.research.benchmark.splits import drop_duplicates, split_fold, test_folds
from latent_sculpting.research.evaluation import fold_metrics
from latent_sculpting.research.provenance import commit  # noqa: E402

DATA = Path("../shared/data/iot23_zeek")


def context_columns(path: Path) -> tuple[np.ndarray, list[str]]:
    """Context features of every record of the IoT-23 files, each file with its own state,
    restricted to the rows :func:`load_dataset` keeps (same files, same order)."""
    records, source, files, _ = read_records(path, format="zeek")
    zeek = get_format("zeek")
    parts = []
    for i, file in enumerate(files):
        rows = np.flatnonzero(source == i)
        out = ContextStage().fit_transform(records.take(pa.array(rows)), zeek, sources=[file])
        parts.append(np.column_stack([c.to_numpy() for c in out.columns]))
    features = np.concatenate(parts)
    names = ContextStage().feature_names_
    _, keep, _ = get_adapter("iot-23").classes(records, "IoT-23")
    return features[keep], names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--methods", nargs="+", default=["rf", "knn"])
    args = parser.parse_args()

    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"# Context design check on IoT-23 ({started}, commit {commit()}, load {load})")
    print("A design check only, not the benchmark: see the script's docstring.\n")
    dataset = load_dataset("iot-23", DATA)
    clock = time.perf_counter()
    context, names = context_columns(DATA)
    print(
        f"{len(dataset.classes):,} flows; {len(names)} context features in "
        f"{time.perf_counter() - clock:.1f} s\n"
    )
    if len(context) != len(dataset.classes):
        raise SystemExit("context rows do not line up with the dataset's rows")
    folds, skipped = test_folds(dataset, ("families",))
    if skipped:
        print(f"skipped families: {skipped}\n")
    print(
        "| family | seed | method | test attacks | AUROC without | AUROC with | "
        "recall@1% without | recall@1% with | recall@0.1% without | recall@0.1% with |"
    )
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    summary: dict[tuple[str, str], list[float]] = {}
    for fold in folds:
        for seed in args.seeds:
            rows = split_fold(dataset, fold, seed)
            spec = dataset.adapter.fit_spec(dataset.records.take(rows.fit))
            used = rows.used()
            base = encode(spec, dataset.records.take(used)).X
            rows = drop_duplicates(rows, dataset, used, base)
            full = np.hstack([base, context[used]])

            def part(X: np.ndarray, index: np.ndarray) -> np.ndarray:
                return X[np.searchsorted(used, index)]  # noqa: B023 (used is this fold's)

            y_fit = (dataset.classes[rows.fit] != dataset.benign).astype(np.int64)
            family_of = {c: f for f, m in dataset.family_map().items() for c in m}
            labels = np.asarray([family_of.get(c, c) for c in dataset.classes[rows.fit]])
            for method_name in args.methods:
                results = {}
                for variant, X in (("without", base), ("with", full)):
                    method = make_method(method_name, seed)
                    method.fit(part(X, rows.fit), y_fit, labels)
                    scores = [
                        method.decision_function(part(X, r))
                        for r in (rows.calibration, rows.test_benign, rows.test_attack)
                    ]
                    results[variant] = fold_metrics(*scores, prevalence=float("nan"))
                w, c = results["without"], results["with"]
                print(
                    f"| {fold.name} | {seed} | {method_name} | {len(rows.test_attack):,} | "
                    f"{w['auroc']:.3f} | {c['auroc']:.3f} | "
                    f"{w['recall_at_fpr']['0.01']:.3f} | {c['recall_at_fpr']['0.01']:.3f} | "
                    f"{w['recall_at_fpr']['0.001']:.3f} | "
                    f"{c['recall_at_fpr']['0.001']:.3f} |"
                )
                for variant, r in results.items():
                    key = (method_name, variant)
                    summary.setdefault(key, []).append(r["recall_at_fpr"]["0.01"])
    print("\nMean recall at 1 % FPR over families and seeds:")
    for (method_name, variant), values in sorted(summary.items()):
        print(f"- {method_name} {variant} context: {np.mean(values):.3f} ({len(values)} runs)")


if __name__ == "__main__":
    main()
