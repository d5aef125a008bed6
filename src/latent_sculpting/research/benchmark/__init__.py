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

from __future__ import annotations

import importlib
from typing import Any

# Where each public name lives. Imported on first use (PEP 562): the command line lists the
# datasets and methods without importing the engine, torch or scikit-learn.
_HOMES = {
    "ABLATION_DATASETS": "ablations",
    "BENCHMARK_METHODS": "methods",
    "DATASETS": "datasets",
    "PROTOCOLS": "splits",
    "QUICK": "methods",
    "Dataset": "datasets",
    "DatasetAdapter": "datasets",
    "Fold": "splits",
    "FoldRows": "splits",
    "LeakError": "splits",
    "benchmark": "engine",
    "check_fold": "splits",
    "compare_markdown": "runs",
    "compare_runs": "runs",
    "get_adapter": "datasets",
    "load_dataset": "datasets",
    "load_records": "runs",
    "merge_runs": "runs",
    "run_unit": "units",
    "split_fold": "splits",
    "test_folds": "splits",
    "validation_folds": "splits",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # The ablations module registers the ablation datasets beside the datasets.
    importlib.import_module(f"{__name__}.ablations")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


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
