"""Threads or processes for the stacked rule's fold refits (``n_jobs``), as a Markdown table.

Fits ``LatentSculpting(**preset(PRESET), random_state=0)`` on a ``--max-per-class`` slice of the
embedded sample with the folds refitted (a) on one worker, (b) on ``--workers`` threads (what
:func:`latent_sculpting.threads.map_workers` does) and (c) on as many loky processes, each
capped at one intra-op thread like the threads; repeats interleaved, the median ``folds``
seconds of ``history_`` per variant and its ratio to one worker. All three fits must give the
same fold scores (it says so if they do not). Ratios only: the machine may be shared, so the
load average is printed beside them.

Usage::

    python benchmarks/speed/bench_fold_workers.py               # default preset, 300 a class
    python benchmarks/speed/bench_fold_workers.py --max-per-class 100 --repeats 1  # quick
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
from datetime import datetime, timezone
from unittest import mock

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.data import load_cicids2017
from latent_sculpting.io.table import cap_per_class
from latent_sculpting.model import folds as folds_module
from latent_sculpting.threads import limit_threads


def _loky(func, tasks, n_jobs):
    """:func:`map_workers` on loky processes instead of threads."""
    from joblib import Parallel, delayed, parallel_config

    tasks = list(tasks)
    with limit_threads(1), parallel_config(backend="loky", inner_max_num_threads=1):
        return Parallel(n_jobs=min(n_jobs, len(tasks)))(delayed(func)(*t) for t in tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--max-per-class", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    table = cap_per_class(load_cicids2017(), args.max_per_class, seed=0)
    variants = {
        "1 worker": (1, None),
        f"{args.workers} threads": (args.workers, None),
        f"{args.workers} loky processes": (args.workers, _loky),
    }
    seconds = {name: [] for name in variants}
    scores = {}
    for _ in range(args.repeats):
        for name, (n_jobs, runner) in variants.items():
            model = LatentSculpting(**preset(args.preset), n_jobs=n_jobs, random_state=0)
            patch = mock.patch.object(folds_module, "map_workers", runner) if runner else None
            with patch or contextlib.nullcontext():
                model.fit(table.X, table.y, groups=table.labels)
            seconds[name].append(model.history_["seconds"]["folds"])
            scores[name] = model.fusion_.fold_scores_

    base = statistics.median(seconds["1 worker"])
    print(
        f"fold refits, preset {args.preset}, {len(table):,} rows (at most {args.max_per_class} "
        f"a class), {len(scores['1 worker'])} folds, median of {args.repeats}; "
        f"{platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC\n"
    )
    print("| folds on | median s | vs 1 worker |\n|---|---:|---:|")
    for name, times in seconds.items():
        median = statistics.median(times)
        print(f"| {name} | {median:.2f} | {base / median:.2f}x |")
    same = all(s == scores["1 worker"] for s in scores.values())
    print(f"\nfold scores identical across variants: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
