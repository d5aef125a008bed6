"""Search behind the ``default`` preset: variants of it under ``sculpt compare``'s protocol.

Each variant is the ``default`` preset with a few arguments changed. :func:`compare` fits every
variant on the same splits (split seed 42) for each model seed and thresholds each at P95 of its
scores on the benign rows held out of every fit, and writes its usual ``compare.md``. It is how
each departure of ``default`` from ``paper-v1`` was chosen (see docs/presets.md). Choose on
model seeds other than the ones ``sculpt compare`` reports (0 1 2), so that the compare stays a
held-out test of the choice: the default here is 3 4 5.

Usage::

    python benchmarks/preset_search.py --out runs/preset-search [--seeds 3 4 5] [--jobs 3]
        [--threads 1] [--variants NAME ...] [--max-per-class N]
"""

from __future__ import annotations

import argparse

from latent_sculpting import preset
from latent_sculpting.baselines import SculptingMethod
from latent_sculpting.compare import compare

#: name -> arguments that replace the default preset's.
VARIANTS: dict[str, dict] = {
    "default": {},
    "no forest (flow NLL alone)": {"score": "nll", "forest_trees": 0},
    "no Deep SVDD channel": {"svdd_dim": 0},
    "flow input not standardised": {"flow_standardize": False},
    "forest of 300 trees": {"forest_trees": 300},
    "no log1p (standard scaling)": {"feature_transform": "none"},
    "quantile instead of log1p": {"feature_transform": "quantile"},
    "dual-centroid loss (v1)": {"loss": "dual_centroid"},
    "no separation term (gamma 0)": {"gamma": 0.0},
    "epoch by centroid F1 (v1)": {"selection": "centroid_f1"},
    "margin 20": {"margin": 20.0},
    "latent 16": {"latent_dim": 16},
    "flow 8 x 256, 40 epochs": {"flow_transforms": 8, "flow_hidden": 256, "flow_epochs": 40},
    "Stage 2 alone (no encoder, no other channel)": {
        "stage1": False,
        "score": "nll",
        "svdd_dim": 0,
        "forest_trees": 0,
    },
}


def variant(name: str, random_state: int | None, shared: dict) -> SculptingMethod:
    """The ``default`` preset with ``VARIANTS[name]`` applied, as a compare method."""
    return SculptingMethod(name, {**preset("default"), **VARIANTS[name]}, random_state=random_state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5])
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        metavar="NAME",
        help=f"default: all of {list(VARIANTS)}",
    )
    parser.add_argument("--out", required=True, help="output folder (compare.md, compare.json)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds fitted at once")
    parser.add_argument("--threads", type=int, help="threads per job (1 on a busy machine)")
    parser.add_argument("--max-per-class", type=int, help="cap rows per label (smoke runs)")
    args = parser.parse_args()
    compare(
        methods=args.variants or list(VARIANTS),
        seeds=args.seeds,
        out=args.out,
        max_per_class=args.max_per_class,
        threads=args.threads,
        jobs=args.jobs,
        factory=variant,
        plots=False,
    )


if __name__ == "__main__":
    main()
