"""Search behind the ``default`` preset: variants of it on the zero-shot protocol, one table.

Each variant is the ``default`` preset with a few arguments changed. Every variant is fitted on
the same splits (split seed 42) for each model seed and scored with its own threshold rule, so
the table reads like ``sculpt compare``'s native-rule table. It is how each departure of
``default`` from ``paper-v1`` was chosen (see docs/presets.md).

Usage::

    python benchmarks/preset_search.py --seeds 0 1 [--threads 1] [--variants NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone

import numpy as np
import torch

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.data import load_cicids2017, zero_shot_splits
from latent_sculpting.evaluation import aggregate
from latent_sculpting.experiment import evaluate_detector

#: name -> arguments that replace the default preset's.
VARIANTS: dict[str, dict] = {
    "default": {},
    "no log1p (standard scaling)": {"feature_transform": "none"},
    "quantile instead of log1p": {"feature_transform": "quantile"},
    "dual-centroid loss (v1)": {"loss": "dual_centroid"},
    "epoch by centroid F1 (v1)": {"selection": "centroid_f1"},
    "last epoch": {"selection": "last"},
    "score: two-stage rule (v1)": {"score": "two_stage"},
    "score: NLL + centroid distance": {"score": "combined"},
    "margin 20": {"margin": 20.0},
    "latent 16": {"latent_dim": 16},
    "bias-free (Deep SVDD) encoder": {"encoder": "bias_free", "d_model": 128},
    "flow 8 x 256, 40 epochs": {"flow_transforms": 8, "flow_hidden": 256, "flow_epochs": 40},
    "Stage 2 alone (no encoder)": {"stage1": False, "score": "nll"},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=sorted(VARIANTS),
        metavar="NAME",
        help=f"default: all of {sorted(VARIANTS)}",
    )
    parser.add_argument("--json", help="also write the per-variant results here")
    parser.add_argument("--threads", type=int, help="torch threads (1 on a busy machine)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    table = load_cicids2017()
    splits = zero_shot_splits(table, seed=42)
    rows, results = [], {}
    for name in args.variants or list(VARIANTS):
        runs, start = [], time.perf_counter()
        for seed in args.seeds:
            model = LatentSculpting(**{**preset("default"), **VARIANTS[name]}, random_state=seed)
            model.fit(splits.train.X, splits.train.y, groups=splits.train.labels)
            metrics, _ = evaluate_detector(model, splits)
            runs.append({k: metrics[k] for k in ("known", "zero_shot")})
        agg = aggregate(runs)
        results[name] = {"params": VARIANTS[name], "metrics": agg, "runs": runs}
        zs, rec = agg["zero_shot"], agg["zero_shot"]["per_attack_recall"]
        row = (
            f"| {name} | {agg['known']['f1']['mean']:.3f} | "
            f"{zs['f1']['mean']:.3f} ± {zs['f1']['std']:.3f} | "
            f"{zs['auroc']['mean']:.4f} ± {zs['auroc']['std']:.4f} | "
            + " | ".join(f"{100 * rec[c]['mean']:.0f} %" for c in sorted(rec))
            + f" | {(time.perf_counter() - start) / len(args.seeds):.0f} |"
        )
        rows.append(row)
        print(row, flush=True)
    classes = sorted(results[next(iter(results))]["metrics"]["zero_shot"]["per_attack_recall"])
    print()
    print(
        f"Seeds {args.seeds}, split seed 42, embedded sample; machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs; date: {datetime.now(timezone.utc):%Y-%m-%d}."
    )
    print()
    print(
        "| variant of `default` | known F1 | zero-shot F1 | zero-shot AUROC | "
        + " | ".join(f"{c} recall" for c in classes)
        + " | s / fit |"
    )
    print("|---|---:|---:|---:|" + "---:|" * len(classes) + "---:|")
    print("\n".join(rows))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2, default=lambda v: np.asarray(v).tolist())


if __name__ == "__main__":
    main()
