"""Flows per second of candidate random-forest evaluators, one thread, in one process.

Fits the ``default`` preset's forest (100 trees, scikit-learn's ``RandomForestClassifier`` as
:class:`~latent_sculpting.model.channels.forest.AttackForest` fits it) on the embedded CIC-IDS-2017
sample
after signed log1p and standard scaling, then times each evaluator on batches of real rows and
prints flows/s, the ratio to scikit-learn's ``Tree.predict`` (what ``AttackForest`` used before
it had its own kernel), whether the probabilities equal scikit-learn's bit for bit, and the load
average before and after. Ratios measured in one process are comparable; absolute figures depend
on the machine and on what else runs on it.

Evaluators:

- ``sklearn Tree.predict``: each fitted tree's ``tree_.predict``, normalised and summed in order.
- ``sklearn predict_proba``: ``RandomForestClassifier.predict_proba`` with ``n_jobs=1``.
- ``numpy levels``: every tree and row at once, one array pass per level of the deepest tree.
- ``numba row walk``: each row down each tree, branching at every node, as scikit-learn does.
- ``numba block levels (ours)``: ``AttackForest.predict_proba``, the library's kernel.
- ``treelite GTIL``: ``treelite.gtil.predict`` with ``nthread=1`` on
  ``treelite.sklearn.import_model`` of the same forest (skipped when treelite is not installed;
  ``pip install treelite==4.8.1``).

Usage::

    python benchmarks/speed/bench_forest.py                      # batches 4096 and 65536, 5 repeats
    python benchmarks/speed/bench_forest.py --batches 1024 --repeats 3 --trees 50
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings
from collections.abc import Callable

import numba
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from threadpoolctl import threadpool_limits

from latent_sculpting.data import load_cicids2017
from latent_sculpting.model.channels.forest import AttackForest, _sklearn_arrays
from latent_sculpting.model.preprocessing import FeaturePreprocessor


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", type=int, default=100, help="trees (default 100)")
    parser.add_argument("--batches", type=int, nargs="+", default=[4096, 65536])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls; the best counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.trees < 1 or args.repeats < 1 or min(args.batches) < 1:
        parser.error("--trees, --repeats and --batches must be positive")
    load_before = os.getloadavg()

    X, y = sample()
    forest = RandomForestClassifier(args.trees, n_jobs=1, oob_score=True, random_state=args.seed)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Some inputs do not have OOB scores")
        forest.fit(X, y)
    fit_s = time.perf_counter() - started
    config = {"n_estimators": args.trees, "n_features_in_": X.shape[1]}
    ours = AttackForest.from_state(config, _sklearn_arrays(forest))
    arrays = ours.arrays_
    print(
        f"forest: {args.trees} trees, {len(arrays['left_child']):,} nodes, depth "
        f"{arrays['max_depth'].min()}-{arrays['max_depth'].max()}, {X.shape[1]} features, "
        f"fitted on {len(X):,} rows in {fit_s:.1f} s"
    )

    candidates: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "sklearn Tree.predict": _tree_predict(forest),
        "sklearn predict_proba": lambda rows: forest.predict_proba(rows)[:, 1],
        "numpy levels": _numpy_levels(arrays),
        "numba row walk": _numba_row_walk(ours),
        "numba block levels (ours)": ours.predict_proba,
    }
    try:
        import treelite
        import treelite.sklearn

        model = treelite.sklearn.import_model(forest)
        candidates["treelite GTIL"] = lambda rows: treelite.gtil.predict(model, rows, nthread=1)[
            :, 0, 1
        ]
    except ImportError:
        print("treelite is not installed: GTIL skipped (pip install treelite==4.8.1)")

    with threadpool_limits(1):
        compare(
            candidates,
            X,
            lambda rows: forest.predict_proba(rows)[:, 1],
            args.batches,
            args.repeats,
            baseline="sklearn Tree.predict",
        )
    load_after = os.getloadavg()
    print(f"\nload average (1, 5, 15 min): before {load_before}, after {load_after}")
    return 0


def sample() -> tuple[np.ndarray, np.ndarray]:
    """The embedded sample's features after signed log1p and standard scaling (float32, as the
    estimator scores them), and its 0 (benign) / 1 (attack) targets."""
    table = load_cicids2017()
    pre = FeaturePreprocessor(feature_transform="log1p", scaler="standard")
    X = np.ascontiguousarray(pre.fit_transform(table.X), dtype=np.float32)
    return X, (table.labels != "BENIGN").astype(int)


def compare(
    candidates: dict[str, Callable[[np.ndarray], np.ndarray]],
    X: np.ndarray,
    reference: Callable[[np.ndarray], np.ndarray],
    batches: list[int],
    repeats: int,
    baseline: str,
) -> None:
    """Print flows/s of each candidate on batches of ``X``'s rows (the best of ``repeats``
    calls), its ratio to the ``baseline`` candidate's, and whether it equals ``reference``."""
    print(
        f"\n{platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}, "
        f"numba {numba.__version__}, one thread\n"
    )
    print(f"| evaluator | batch | flows/s | vs {baseline} | equal to sklearn |")
    print("|---|---:|---:|---:|---|")
    for batch in batches:
        rows = np.ascontiguousarray(np.resize(X, (batch, X.shape[1])))
        expected = reference(rows)
        exact = {}
        for name, predict in candidates.items():
            predict(rows[:64])  # compile, warm caches
            exact[name] = np.array_equal(predict(rows), expected)
        # Round robin, so that a burst of load from elsewhere hits every evaluator alike.
        best = dict.fromkeys(candidates, np.inf)
        for _ in range(repeats):
            for name, predict in candidates.items():
                started = time.perf_counter()
                predict(rows)
                best[name] = min(best[name], time.perf_counter() - started)
        base = batch / best[baseline]
        for name in candidates:
            rate = batch / best[name]
            equal = "yes" if exact[name] else "NO"
            print(f"| {name} | {batch} | {rate:,.0f} | {rate / base:.2f} | {equal} |")


def _tree_predict(forest: RandomForestClassifier) -> Callable[[np.ndarray], np.ndarray]:
    """The evaluator ``AttackForest`` used before: each tree's ``tree_.predict``, in order."""
    trees = [estimator.tree_ for estimator in forest.estimators_]

    def predict(rows: np.ndarray) -> np.ndarray:
        total = np.zeros(len(rows))
        for tree in trees:
            leaf = tree.predict(rows).reshape(len(rows), -1)
            total += leaf[:, 1] / leaf.sum(axis=1)
        return total / len(trees)

    return predict


def _numpy_levels(arrays: dict[str, np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    """Every (tree, row) pair moved one level per array pass; leaves are their own children."""
    offsets = arrays["offsets"]
    start = np.repeat(offsets[:-1], np.diff(offsets))
    node = np.arange(offsets[-1])
    leaf = arrays["left_child"] == -1
    left = np.where(leaf, node, arrays["left_child"] + start)
    right = np.where(leaf, node, arrays["right_child"] + start)
    feature = np.where(leaf, 0, arrays["feature"])
    threshold, nan_left = arrays["threshold"], arrays["missing_go_to_left"].astype(bool)
    share = np.where(leaf, arrays["values"][:, 1] / arrays["values"].sum(axis=1), 0.0)
    roots, levels = offsets[:-1], int(arrays["max_depth"].max())

    def predict(rows: np.ndarray) -> np.ndarray:
        n, columns = rows.shape
        flat = rows.ravel()
        at = np.repeat(roots[:, None], n, axis=1)
        row_start = np.arange(n) * columns
        for _ in range(levels):
            x = flat[row_start + feature[at]]
            go_left = (x <= threshold[at]) | (np.isnan(x) & nan_left[at])
            at = np.where(go_left, left[at], right[at])
        total = np.zeros(n)
        for tree_share in share[at]:  # in tree order, as scikit-learn sums
            total += tree_share
        return total / len(roots)

    return predict


@numba.njit(nogil=True)
def _row_walk(X, roots, children, features, thresholds, nan_left, share, out):
    for i in range(X.shape[0]):
        total = 0.0
        for root in roots:
            node = root
            while children[2 * node] != node:
                x = X[i, features[node]]
                if x <= thresholds[node] or (x != x and nan_left[node]):
                    node = children[2 * node]
                else:
                    node = children[2 * node + 1]
            total += share[node]
        out[i] = total / roots.shape[0]


def _numba_row_walk(forest: AttackForest) -> Callable[[np.ndarray], np.ndarray]:
    """Each row down each tree with a branch per node, on the library's kernel arrays."""
    roots, _, children, features, thresholds, nan_left, share = forest.trees_._kernel_arrays
    roots, children, features = (a.astype(np.int64) for a in (roots, children, features))

    def predict(rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows))
        _row_walk(rows, roots, children, features, thresholds, nan_left, share, out)
        return out

    return predict


if __name__ == "__main__":
    raise SystemExit(main())
