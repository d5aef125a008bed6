"""``sculpt benchmark``: the zero-day protocol over several datasets, with honest statistics.

- :mod:`.adapters`: one adapter per dataset (classes, families, campaigns, column roles).
- :mod:`.datasets`: a dataset read once, with the class of every record.
- :mod:`.splits`: the folds and the rows each one fits, calibrates and tests on.
- :mod:`.units`: one fold for one split seed, every method (one checkpoint each).
- :mod:`.engine`: runs (the units of every dataset, fold and seed; parallel jobs).
- :mod:`.runs`: finished runs read back, merged, and compared with each other.
- :mod:`.statistics`: sample std, paired bootstrap intervals, Friedman and Nemenyi.
- :mod:`.summary`: the statistics of a result set, and the families the reference trails on.
- :mod:`.report`, :mod:`.markdown`: ``benchmark.json``, ``benchmark.md`` and the figures.

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
from latent_sculpting.research.benchmark.engine import BENCHMARK_METHODS, QUICK, benchmark
from latent_sculpting.research.benchmark.runs import (
    compare_markdown,
    compare_runs,
    load_records,
    merge_runs,
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
from latent_sculpting.research.benchmark.units import run_unit

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
    "compare_markdown",
    "compare_runs",
    "get_adapter",
    "load_dataset",
    "load_records",
    "merge_runs",
    "run_unit",
    "split_fold",
    "test_folds",
    "validation_folds",
]
