"""Search behind the ``default`` preset: variants of it, compared on validation folds only.

Each variant is the ``default`` preset with a few arguments changed. They are compared by
``sculpt benchmark``'s engine on the *validation folds* of a test fold
(:func:`latent_sculpting.research.benchmark.validation_folds`): inside that test fold's training
rows,
each known family is held out in turn as a pseudo-zero-day, with its own benign calibration and
test rows drawn from the training benign rows. The test fold's withheld family and its benign
test and calibration rows are never seen, so the test fold stays a held-out test of whatever is
chosen here. A choice made on the validation folds of one test fold is tested on that fold
only; to claim it for every family, repeat the choice per test fold (``--outer all``: nested
leave-one-family-out). See docs/research/protocol.md.

Usage::

    python benchmarks/design/preset_search.py --out runs/preset-search [--datasets cicids2017]
        [--outer paper | FAMILY | all] [--split-seeds 0 1 2] [--jobs 2] [--threads 1]
        [--variants NAME ...] [--max-per-class N]
"""

from __future__ import annotations

import argparse

from latent_sculpting import preset
from latent_sculpting.research.baselines import SculptingMethod
from latent_sculpting.research.benchmark import DATASETS, benchmark

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
    """The ``default`` preset with ``VARIANTS[name]`` applied, as a benchmark method."""
    return SculptingMethod(name, {**preset("default"), **VARIANTS[name]}, random_state=random_state)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=["cicids2017"])
    parser.add_argument(
        "--outer",
        default="paper",
        help="the test fold whose validation folds are searched: paper, a family, or all",
    )
    parser.add_argument("--split-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        metavar="NAME",
        help=f"default: all of {list(VARIANTS)}",
    )
    parser.add_argument("--out", required=True, help="output folder (benchmark.md, .json)")
    parser.add_argument("--jobs", type=int, default=1, help="folds run at once")
    parser.add_argument("--threads", type=int, help="threads per job (1 on a busy machine)")
    parser.add_argument("--max-per-class", type=int, help="cap rows per class (smoke runs)")
    args = parser.parse_args()
    if args.outer == "all":
        outer = {"protocols": ["families", "paper"]}
    elif args.outer == "paper":
        outer = {"protocols": ["paper"]}
    else:
        outer = {"protocols": ["families"], "families": [args.outer]}
    benchmark(
        datasets=args.datasets,
        methods=args.variants or list(VARIANTS),
        split_seeds=args.split_seeds,
        validation=True,
        **outer,
        reference="default",
        out=args.out,
        max_per_class=args.max_per_class,
        threads=args.threads,
        jobs=args.jobs,
        factory=variant,
        plots=False,
        title="preset search (validation folds)",
    )


if __name__ == "__main__":
    main()
