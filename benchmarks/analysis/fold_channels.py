"""Why a `LatentSculpting` preset misses a benchmark fold: its channels one by one.

Builds one test fold of ``sculpt benchmark`` with the benchmark's own pieces
(``prepare_fold``, ``fit_targets``, ``with_context``: split, fold spec on the fitting rows,
duplicates removed, the fold checked, context columns appended for a preset with ``context``
on), fits the preset, and prints the channel weights its fit learned
(``history_["fusion_weights"]``) and, for every score the model exposes
(:meth:`~latent_sculpting.LatentSculpting.score_details`), the 99th percentile of the held-out
benign rows and the share of the fold's withheld attacks above it. A channel that flags the
attacks while its weight is 0 says the selection rule, not the channel, lost the fold.

A diagnosis, not a result: the thresholds here are plain quantiles of one seed's held-out
rows, and nothing is chosen from it.

Usage::

    SCULPT_SHARED=../shared python benchmarks/analysis/fold_channels.py \\
        --dataset iot-23 --family PortScan --preset default-context --seed 0
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from latent_sculpting.research.baselines import make_method
from latent_sculpting.research.benchmark import load_dataset
from latent_sculpting.research.benchmark.context import with_context
from latent_sculpting.research.benchmark.splits import test_folds
from latent_sculpting.research.benchmark.units import fit_targets, prepare_fold
from latent_sculpting.research.provenance import commit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--family", required=True)
    parser.add_argument("--preset", nargs="+", default=["default-context", "default"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantile", type=float, default=0.99)
    args = parser.parse_args()

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"# {args.dataset}, fold {args.family}, split seed {args.seed} "
        f"(commit {commit()}, load {load})"
    )
    dataset = load_dataset(args.dataset)
    folds, skipped = test_folds(dataset, ("families",), families=[args.family])
    if not folds:
        raise SystemExit(f"no fold {args.family!r}: {skipped}")
    rows, _, features = prepare_fold(dataset, folds[0], args.seed)
    y, labels = fit_targets(dataset, rows)
    print(
        f"{len(rows.fit):,} fitting rows, {len(rows.calibration):,} held-out benign, "
        f"{len(rows.test_attack):,} withheld attacks\n"
    )
    for name in args.preset:
        method = make_method(name, args.seed)
        parts = {p: features(getattr(rows, p)) for p in ("calibration", "test_attack")}
        X_fit, parts = with_context(method, dataset, rows, features(rows.fit), parts)
        method.fit(X_fit, y, labels)
        model = method.model_
        print(f"## {name}: weights {model.history_.get('fusion_weights')}\n")
        held = model.score_details(parts["calibration"])
        attacks = model.score_details(parts["test_attack"])
        print(f"| score | held-out benign q{args.quantile:g} | attacks' median | attacks above |")
        print("|---|---:|---:|---:|")
        for key, values in held.items():
            if values.dtype.kind != "f":
                continue
            bar = np.quantile(values, args.quantile)
            print(
                f"| {key} | {bar:.4g} | {np.median(attacks[key]):.4g} | "
                f"{np.mean(attacks[key] > bar):.2f} |"
            )
        print()


if __name__ == "__main__":
    main()
