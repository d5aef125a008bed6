"""Scoring throughput and latency of the ``default`` preset on one thread and on scoring
workers, against an eager loop of ``paper-v1``, as Markdown.

Fits ``LatentSculpting(**preset("default"), random_state=0)`` on the training rows of the
zero-shot protocol on the embedded sample (split seed 42), or loads ``--model``. Then, in this
one process, with the candidates interleaved repeat by repeat (median of ``--repeats``):

* flows/s of ``decision_function`` on the whole embedded sample (56,277 flows), on 65,536-row
  batches (the sample repeated) and on 1,000-row batches, with one scoring worker and with
  ``--workers`` (:func:`latent_sculpting.model.density.fastpath.set_scoring_workers`);
* single-flow latency p50/p99 over ``--calls`` calls of one row each;
* flows/s of the eager loop of ``paper-v1`` (the plain PyTorch modules scoring 4,096-row
  batches; ``time_scoring`` of ``benchmarks/speed/run.py``), fitted for one epoch per stage on a
  capped slice of the sample (speed does not depend on how well it is trained), and the ratio.

It checks that the scores on one thread and on the workers are the same to the bit, and prints
the zero-shot AUROC of both (the same, if the scores are). The load average before and after,
the machine, the date and the commit go with the figures: the machine may be shared, and
figures measured under load are not to be published, only their ratios compared.

Usage::

    python benchmarks/speed/bench_scoring.py                          # fits default (a minute)
    python benchmarks/speed/bench_scoring.py --model m.sculpt --repeats 2 --calls 1000   # quick
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.data import load_cicids2017, zero_shot_splits
from latent_sculpting.io.table import cap_per_class
from latent_sculpting.model.density.fastpath import set_scoring_workers

sys.path.insert(0, str(Path(__file__).parent))
from run import machine, median, time_scoring  # noqa: E402  (benchmarks/speed/run.py)

from latent_sculpting.research.provenance import commit

#: Rows per eager call of paper-v1 (bench_flops of run.py measures the same batch).
EAGER_BATCH = 4096


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def default_model(args: argparse.Namespace, table, splits) -> tuple[LatentSculpting, str]:
    if args.model:
        return LatentSculpting.load(args.model), f"loaded {args.model}"
    train = table.subset(splits.train.index)
    started = time.perf_counter()
    model = LatentSculpting(**preset("default"), random_state=0)
    model.fit(train.X, train.y, groups=train.labels, spec=table.spec)
    seconds = time.perf_counter() - started
    return (
        model,
        f"`default` on {len(train.X):,} zero-shot training rows, fitted in {seconds:.0f} s",
    )


def eager_model(table) -> LatentSculpting:
    small = cap_per_class(table, 400)
    params = {**preset("paper-v1"), "epochs": 1, "flow_epochs": 1}
    return LatentSculpting(**params, random_state=0).fit(small.X, small.y, groups=small.labels)


def seconds(model: LatentSculpting, parts: list[np.ndarray], workers: int) -> float:
    set_scoring_workers(workers)
    start = time.perf_counter()
    for part in parts:
        model.decision_function(part)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a fitted default model file (skips the fit)")
    parser.add_argument("--workers", type=int, default=2, help="scoring workers (default 2)")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (default 5)")
    parser.add_argument("--calls", type=int, default=2000, help="single-flow calls (>= 1000)")
    args = parser.parse_args()
    load_before = load_average()
    table = load_cicids2017()
    splits = zero_shot_splits(table, seed=42)
    model, what = default_model(args, table, splits)
    eager = eager_model(table)
    X = table.X
    previous = set_scoring_workers(1)
    try:
        one = model.decision_function(X)
        set_scoring_workers(args.workers)
        many = model.decision_function(X)
        identical = bool(np.array_equal(one, many))
        zs = splits.zero_shot
        auroc = {
            n: roc_auc_score(zs.y, scores[zs.index])
            for n, scores in ((1, one), (args.workers, many))
        }
        batches = {
            f"whole sample ({len(X):,} flows)": [X],
            "65,536-row batches": [np.resize(X, (65_536, X.shape[1]))],
            "1,000-row batches": np.array_split(X[:20_000], 20),
        }
        rates: dict[tuple[str, int], list[float]] = {}
        eager_rates = []
        for _ in range(args.repeats):
            for name, parts in batches.items():
                n = sum(len(p) for p in parts)
                for workers in (1, args.workers):
                    rates.setdefault((name, workers), []).append(n / seconds(model, parts, workers))
            times = time_scoring(eager, X[: 4 * EAGER_BATCH], EAGER_BATCH, reference=True)
            eager_rates.append(EAGER_BATCH * len(times) / sum(times))
        set_scoring_workers(1)
        latencies = []
        for i in range(max(args.calls, 1000)):
            row = X[i % len(X) : i % len(X) + 1]
            start = time.perf_counter()
            model.decision_function(row)
            latencies.append(time.perf_counter() - start)
    finally:
        set_scoring_workers(previous)
    eager_rate = median(eager_rates)
    print(f"# Scoring speed of `default` ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n")
    print(f"- machine: {machine()}")
    print(f"- commit: {commit()}; model: {what}")
    print(f"- load average before: {load_before}; after: {load_average()}")
    print(f"- medians of {args.repeats} interleaved repeats\n")
    print(
        f"Scores on 1 worker and on {args.workers}: "
        f"{'identical to the bit' if identical else 'DIFFERENT'}; zero-shot AUROC "
        f"{auroc[1]:.6f} and {auroc[args.workers]:.6f} ({len(zs.y):,} flows).\n"
    )
    print(f"| input | 1 worker (flows/s) | {args.workers} workers (flows/s) | ratio |")
    print("|---|---:|---:|---:|")
    for name in batches:
        a, b = median(rates[(name, 1)]), median(rates[(name, args.workers)])
        print(f"| {name} | {a:,.0f} | {b:,.0f} | {b / a:.2f} |")
    p50, p99 = (1e3 * np.percentile(latencies, q) for q in (50, 99))
    best = median(rates[(f"whole sample ({len(X):,} flows)", args.workers)])
    print(f"\nSingle flow: p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(latencies):,} calls.\n")
    print(
        f"Eager `paper-v1` ({EAGER_BATCH:,}-row batches, plain PyTorch modules): "
        f"{eager_rate:,.0f} flows/s; `default` on {args.workers} workers, whole sample: "
        f"{best / eager_rate:.1f}x."
    )
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
