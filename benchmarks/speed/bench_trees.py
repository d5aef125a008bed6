"""Flows per second of the tree evaluator on gradient-boosted trees, one thread, in one process.

Fits the boost channel's booster (scikit-learn's ``HistGradientBoostingClassifier`` with the
settings of :class:`~latent_sculpting.model.channels.boost.AttackBooster`) on the embedded
CIC-IDS-2017 sample
after signed log1p and standard scaling, reads its trees into
:class:`~latent_sculpting.model.channels.trees.TreeEnsemble` arrays, then times each evaluator on
batches of
real rows (float32, as the estimator passes them) and prints flows/s, the ratio to
scikit-learn's own ``decision_function`` with one OpenMP thread, whether the log-odds equal
scikit-learn's bit for bit, and the load average before and after. Ratios measured in one
process are comparable; absolute figures depend on the machine and on what else runs on it.
The forest's evaluators are compared in ``bench_forest.py``, whose table this one shares.

Usage::

    python benchmarks/speed/bench_trees.py                      # batches 4096 and 65536, 5 repeats
    python benchmarks/speed/bench_trees.py --batches 1024 --repeats 3 --iter 50
"""

from __future__ import annotations

import argparse
import os
import time

from bench_forest import compare, sample
from threadpoolctl import threadpool_limits

from latent_sculpting.model.channels.boost import AttackBooster, _sklearn_arrays, classifier


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iter", type=int, default=100, help="max_iter (default 100)")
    parser.add_argument("--batches", type=int, nargs="+", default=[4096, 65536])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.iter < 1 or args.repeats < 1 or min(args.batches) < 1:
        parser.error("--iter, --repeats and --batches must be positive")
    load_before = os.getloadavg()

    X, y = sample()
    model = classifier(args.iter, args.seed)
    started = time.perf_counter()
    with threadpool_limits(1):
        model.fit(X, y)
    fit_s = time.perf_counter() - started
    config = {"max_iter": args.iter, "n_iter_": model.n_iter_, "n_features_in_": X.shape[1]}
    ours = AttackBooster.from_state(config, _sklearn_arrays(model))
    arrays = ours.arrays_
    print(
        f"booster: {model.n_iter_} trees (max_iter {args.iter}), {len(arrays['left_child']):,} "
        f"nodes, depth {arrays['max_depth'].min()}-{arrays['max_depth'].max()}, "
        f"{X.shape[1]} features, fitted on {len(X):,} rows in {fit_s:.1f} s (one thread)"
    )
    candidates = {
        "sklearn decision_function": model.decision_function,
        "numba block levels (ours)": ours.decision_function,
    }
    with threadpool_limits(1):
        compare(
            candidates,
            X,
            model.decision_function,
            args.batches,
            args.repeats,
            baseline="sklearn decision_function",
        )
    load_after = os.getloadavg()
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {load_after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
