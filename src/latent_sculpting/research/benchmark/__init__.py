"""``sculpt benchmark``: the zero-day protocol over several datasets, with honest statistics.

- :mod:`.datasets`: one adapter per dataset (classes, families, campaigns, column roles).
- :mod:`.protocol`: the folds and the rows each one fits, calibrates and tests on.
- :mod:`.engine`: runs (one checkpoint per fold, seed and method; parallel jobs).
- :mod:`.statistics`: sample std, paired bootstrap intervals, Friedman and Nemenyi.
- :mod:`.report`: ``benchmark.json``, ``benchmark.md`` and the figures.

``sculpt compare`` and ``sculpt sweep`` are views of the same engine. See
``docs/research/protocol.md``.
"""

# Registers the ablation dataset unsw-nb15-noct beside the datasets.
from latent_sculpting.research.benchmark.context import ABLATION_DATASETS
from latent_sculpting.research.benchmark.datasets import (
    DATASETS,
    Dataset,
    DatasetAdapter,
    get_adapter,
    load_dataset,
)
from latent_sculpting.research.benchmark.engine import (
    BENCHMARK_METHODS,
    QUICK,
    benchmark,
    load_records,
    merge_runs,
    run_unit,
)
from latent_sculpting.research.benchmark.splits import (
    PROTOCOLS,
    Fold,
    FoldRows,
    LeakError,
    check_fold,
    split_fold,
    test_folds,
    validation_folds,
)

__all__ = [
    "ABLATION_DATASETS",
    "BENCHMARK_METHODS",
    "DATASETS",
    "PROTOCOLS",
    "QUICK",
    "Dataset",
    "DatasetAdapter",
    "Fold",
    "FoldRows",
    "LeakError",
    "benchmark",
    "check_fold",
    "get_adapter",
    "load_dataset",
    "load_records",
    "merge_runs",
    "run_unit",
    "split_fold",
    "test_folds",
    "validation_folds",
]
