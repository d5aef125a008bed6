"""Faithfulness and cost of alert explanations (:mod:`latent_sculpting.monitor.explain`), as
Markdown.

Fits ``LatentSculpting(**preset(PRESET), random_state=0)`` on the training rows of the zero-shot
protocol on the embedded sample (``zero_shot_splits(load_cicids2017(), seed=42)``), a
:class:`~latent_sculpting.monitor.profile.BenignProfile` on its benign training rows, and
explains the flows of the zero-shot set (withheld attacks and reserved benign flows, 1:1) that
the model flags. Prints:

- **faithfulness**: for the features each method names (model-guided, as ``explain`` does with
  the model; model-guided within the scorer's default budget; the most unusual features,
  model-blind; random deviating features), the share of flagged flows whose score falls to the
  threshold or below when those features are set to their benign values (median; most common
  value of a categorical column), the mean score drop, and the mean share of the score's
  excess over the threshold that the reset removes (clipped to [0, 1]);
- **cost**: explanation time over the time of scoring the batch (``decision_function`` on every
  row), both measured in this process (median of repeats), and the variant rows scored per
  flagged flow; the load average, since the machine may be shared. The scorer's budget is
  relative to its batch, so batches in which 5 % and 20 % of the flows are flagged are
  simulated by their size (the same flagged flows, in a larger batch).

Usage::

    python benchmarks/design/bench_explain.py                       # default preset (minutes)
    python benchmarks/design/bench_explain.py --preset fast         # quick
    python benchmarks/design/bench_explain.py --model model.sculpt  # fitted on the same split
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone

import numpy as np
import torch

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.data import load_cicids2017, zero_shot_splits
from latent_sculpting.monitor.explain import Explainer, explain
from latent_sculpting.monitor.profile import BenignProfile


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="preset to fit (default: default)")
    parser.add_argument("--model", help="a model file fitted on the same split (skips the fit)")
    parser.add_argument("--k", type=int, default=3, help="features named per flow (default 3)")
    parser.add_argument(
        "--candidates", type=int, default=16, help="candidates per flow (default 16)"
    )
    parser.add_argument("--budget", type=float, default=1.0, help="scorer budget (default 1.0)")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also search every feature, and follow the greedy path to 30 features (slow)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()

    splits = zero_shot_splits(load_cicids2017(), seed=42)
    train = splits.train
    started = time.perf_counter()
    if args.model:
        model = LatentSculpting.load(args.model)
        fitted = f"loaded {args.model}"
    else:
        model = LatentSculpting(**preset(args.preset), random_state=0)
        model.fit(train.X, train.y, groups=train.labels)
        seconds = time.perf_counter() - started
        fitted = f"preset {args.preset!r}, random_state 0, fitted in {seconds:.0f} s"
    # The profile scoring explains with: the model's own (every benign training row), else
    # one fitted here on the same rows.
    profile = getattr(model, "benign_profile_", None)
    if profile is None:
        profile = BenignProfile().fit(train.X[train.y == 0], splits.feature_names)
    config, arrays = profile.get_state()

    test = splits.zero_shot
    scores = model.decision_function(test.X)
    threshold = float(model.threshold_)
    flagged = np.flatnonzero(scores > threshold)
    X, s, labels = test.X[flagged], scores[flagged], test.labels[flagged]
    scoring = _median_seconds(lambda: model.decision_function(test.X), args.repeats)

    counter = _Counter(model.decision_function)
    n = len(test.X)
    # (name, explain the flagged rows, rows of the batch they were flagged in): a scorer's
    # budget is relative to its batch, so a batch in which fewer flows are flagged is
    # simulated by its size alone.
    methods = [
        (
            "model-guided",
            lambda: explain(profile, X, counter, scores=s, k=args.k, n_candidates=args.candidates),
            n,
        )
    ]
    for share in (0.05, 0.2, len(X) / n):
        rows_of_batch = int(round(len(X) / share))
        explainer = Explainer(
            profile, counter, k=args.k, n_candidates=args.candidates, budget=args.budget
        )
        methods.append(
            (
                f"model-guided, budget {args.budget:g}, {share:.0%} of the batch flagged",
                lambda e=explainer, b=rows_of_batch: e.explain(X, s, batch_rows=b),
                rows_of_batch,
            )
        )
    methods.append(
        (
            "most unusual (model-blind)",
            lambda: explain(profile, X, scores=s, k=args.k, n_candidates=args.candidates),
            n,
        )
    )
    rows, named = [], {}
    for name, run, rows_of_batch in methods:
        counter.rows = 0
        found = run()
        variants = counter.rows / max(len(X), 1)
        seconds = _median_seconds(run, args.repeats)
        named[name] = _units(profile, found, args.k)
        rows.append((name, seconds / (scoring * rows_of_batch / n), variants))
    named[f"{args.k} random deviating features"] = _random_units(profile, X, args.k)
    # A first pass that resets every deviating feature alone, then the greedy search among the
    # best few of that pass (not only the most unusual), and the greedy over every feature.
    for few in (6, 10):
        counter.rows = 0
        started = time.perf_counter()
        units = _first_pass_greedy(profile, X, s, counter, args.k, few)
        seconds = time.perf_counter() - started
        name = f"model-guided, first pass over every feature, greedy among its best {few}"
        named[name] = units
        rows.append((name, seconds / scoring, counter.rows / max(len(X), 1)))
    counter.rows = 0
    started = time.perf_counter()
    every_found = explain(profile, X, counter, scores=s, k=args.k, n_candidates=len(profile.units_))
    name = "model-guided, greedy over every feature"
    rows.append((name, (time.perf_counter() - started) / scoring, counter.rows / len(X)))
    named[name] = _units(profile, every_found, args.k)
    # How far the score is from the threshold in features: more named features, and all.
    more = 10
    found = explain(profile, X, counter, scores=s, k=more, n_candidates=max(args.candidates, more))
    named[f"model-guided, {more} features"] = _units(profile, found, more)
    every = np.arange(len(profile.units_))
    named["every feature (the benign median flow)"] = np.tile(every, (len(X), 1))

    print(f"# Explanations: faithfulness and cost ({datetime.now(timezone.utc):%Y-%m-%d})\n")
    print(
        f"Model: {fitted}; zero-shot set {len(test.X):,} flows, {len(flagged):,} flagged "
        f"({len(flagged) / len(test.X):.1%}) at threshold {threshold:.4g}; profile "
        f"{sum(a.nbytes for a in arrays.values()):,} bytes of arrays over "
        f"{profile.n_samples_:,} benign rows; k = {args.k}, {args.candidates} candidates.\n"
    )
    print("## Faithfulness: named features reset to benign values\n")
    print("| features reset | flagged flows below threshold | mean score drop | excess removed |")
    print("|---|---:|---:|---:|")
    results = {}
    for name, units in named.items():
        after = model.decision_function(profile.reset(X, units))
        results[name] = after
        drop = s - after
        removed = np.clip(drop / (s - threshold), 0.0, 1.0)
        print(
            f"| {name} | {np.mean(after <= threshold):.1%} | {drop.mean():.3g} | "
            f"{removed.mean():.1%} |"
        )
    print("\nPer class, model-guided:\n")
    print("| class | flagged | below threshold | excess removed |")
    print("|---|---:|---:|---:|")
    after = results["model-guided"]
    for label in np.unique(labels):
        sel = labels == label
        removed = np.clip((s[sel] - after[sel]) / (s[sel] - threshold), 0.0, 1.0)
        print(
            f"| {label} | {sel.sum():,} | {np.mean(after[sel] <= threshold):.1%} | "
            f"{removed.mean():.1%} |"
        )
    tails = getattr(model.fusion_, "tails_", {})
    if "nll" in tails:
        weights = getattr(model.fusion_, "weights_", dict.fromkeys(tails, 1.0))
        print("\nWhich channel keeps a flow above the threshold after the reset:\n")
        print(
            "| features reset | "
            + " | ".join(f"{name} (weight {weights[name]:g}) beyond its tail" for name in tails)
            + " |"
        )
        print("|---|" + "---:|" * len(tails))
        for name in ("model-guided", "model-guided, greedy over every feature"):
            details = model.score_details(profile.reset(X, named[name]))
            cells = [
                f"{np.mean(details[_column(model, c)] > tail.threshold_):.1%}"
                for c, tail in tails.items()
            ]
            print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\n## Cost (scoring the {n:,} flows: {scoring:.3g} s)\n")
    print("Explanation time over the time of scoring the batch the flagged flows came from.\n")
    print("| method | explanation time / scoring time | variant rows scored per flagged flow |")
    print("|---|---:|---:|")
    for name, ratio, variants in rows:
        print(f"| {name} | {ratio:.2f} | {variants:.1f} |")
    if args.diagnose:
        _diagnose(model, profile, X, s, args.k)
    before, after = (", ".join(f"{v:.2f}" for v in load) for load in (load_before, os.getloadavg()))
    print(
        f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads); load average (1, 5, 15 min) {before} at the "
        f"start, {after} at the end."
    )
    return 0


def _diagnose(model, profile: BenignProfile, X: np.ndarray, s: np.ndarray, k: int) -> None:  # noqa: ANN001
    """Why few flows fall below the threshold: the best that a greedy search over every
    feature reaches, and each fused channel along a long greedy path (random samples)."""
    threshold = float(model.threshold_)
    rng = np.random.default_rng(0)
    every = len(profile.units_)
    pick = rng.choice(len(X), size=min(300, len(X)), replace=False)
    found = explain(
        profile, X[pick], model.decision_function, scores=s[pick], k=k, n_candidates=every
    )
    after = np.array([e.score_reset for e in found])
    print(
        f"\n## Diagnosis\n\n{k} features by a greedy search over all {every}: "
        f"{np.mean(after <= threshold):.1%} of {len(pick)} flagged flows below the threshold.\n"
    )
    pick = rng.choice(len(X), size=min(100, len(X)), replace=False)
    found = explain(
        profile, X[pick], model.decision_function, scores=s[pick], k=30, n_candidates=every
    )
    print(f"Greedy path over all features, {len(pick)} flagged flows:\n")
    tails = getattr(model.fusion_, "tails_", {})
    weights = getattr(model.fusion_, "weights_", dict.fromkeys(tails, 1.0))
    columns = {name: _column(model, name) for name in tails}
    print(
        "| features reset | below threshold | "
        + " | ".join(f"{name} (weight {weights[name]:g}) beyond its tail" for name in tails)
        + " | "
        + " | ".join(f"median {columns[name]}" for name in tails if name != "nll")
        + " |"
    )
    print("|---:|---:|" + "---:|" * (2 * len(tails) - 1))
    for count in (3, 5, 10, 20, 30):
        units = _units(profile, [type(e)(e.reasons[:count]) for e in found], count)
        details = model.score_details(profile.reset(X[pick], units))
        cells = [f"{np.mean(details['score'] <= threshold):.0%}"]
        cells += [
            f"{np.mean(details[columns[name]] > tail.threshold_):.0%}"
            for name, tail in tails.items()
        ]
        cells += [f"{np.median(details[columns[name]]):.3g}" for name in tails if name != "nll"]
        print(f"| {count} | " + " | ".join(cells) + " |")


def _column(model, name: str) -> str:  # noqa: ANN001
    """The :meth:`score_details` column of a fused channel (``nll``, or a side channel's)."""
    return "nll" if name == "nll" else model.channels_[name].column


class _Counter:
    """The model's decision_function, counting the rows it is asked about."""

    def __init__(self, decision_function) -> None:  # noqa: ANN001 - any callable
        self.decision_function = decision_function
        self.rows = 0

    def __call__(self, X: np.ndarray) -> np.ndarray:
        self.rows += len(X)
        return self.decision_function(X)


def _median_seconds(run, repeats: int) -> float:  # noqa: ANN001 - any callable
    seconds = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def _units(profile: BenignProfile, explanations, k: int) -> np.ndarray:  # noqa: ANN001
    units = np.full((len(explanations), k), -1, dtype=np.int64)
    for i, e in enumerate(explanations):
        for j, feature in enumerate(e.features):
            units[i, j] = profile.unit_index(feature)
    return units


def _first_pass_greedy(
    profile: BenignProfile,
    X: np.ndarray,
    s: np.ndarray,
    score,
    k: int,
    few: int,  # noqa: ANN001
) -> np.ndarray:
    """Each deviating unit reset alone (one pass), then ``k`` greedy steps among the ``few``
    units whose reset alone lowered the score most."""
    n_units = len(profile.units_)
    deviating = profile.assess(X)[2]
    rows, units = np.nonzero(deviating)
    single = np.full((len(X), n_units), np.inf)
    single[rows, units] = score(profile.reset(X[rows], units[:, None]))
    best = np.argsort(single, axis=1)[:, :few]
    best = np.where(np.take_along_axis(np.isfinite(single), best, axis=1), best, -1)
    chosen = np.full((len(X), k), -1, dtype=np.int64)
    available = best >= 0
    for step in range(k):
        r, slot = np.nonzero(available)
        if len(r) == 0:
            break
        tried = np.column_stack([chosen[r, :step], best[r, slot]])
        variant = np.full(best.shape, np.inf)
        variant[r, slot] = score(profile.reset(X[r], tried))
        pick = np.argmin(variant, axis=1)
        live = available.any(axis=1)
        chosen[live, step] = best[live, pick[live]]
        available[live, pick[live]] = False
    return chosen


def _random_units(profile: BenignProfile, X: np.ndarray, k: int) -> np.ndarray:
    """``k`` units drawn at random among each flow's deviating ones (seed 0)."""
    n_units = len(profile.units_)
    every = explain(profile, X, k=n_units, n_candidates=n_units)
    rng = np.random.default_rng(0)
    units = np.full((len(X), k), -1, dtype=np.int64)
    for i, e in enumerate(every):
        pool = [profile.unit_index(f) for f in e.features]
        pick = rng.choice(len(pool), size=min(k, len(pool)), replace=False)
        units[i, : len(pick)] = np.asarray(pool)[pick]
    return units


if __name__ == "__main__":
    raise SystemExit(main())
