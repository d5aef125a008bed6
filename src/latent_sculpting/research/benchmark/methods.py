"""The methods a benchmark runs by default and the ``--quick`` plan.

Kept apart from :mod:`.engine` so that the command line can list them without importing the
engine (torch, scikit-learn and every baseline): ``sculpt --help`` and every other command
build the benchmark's parser too.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BENCHMARK_METHODS", "QUICK"]

#: Methods of a full run: our default, its flow channel alone, and every baseline.
BENCHMARK_METHODS: tuple[str, ...] = (
    "default",
    "default-noboost",
    "default-noknn",
    "default-noflow",
    "default-fisher",
    "default-sculpt",
    "fused",
    "rf",
    "hgb",
    "mlp",
    "knn",
    "iforest",
    "ocsvm",
    "ecod",
    "autoencoder",
    "deep-svdd",
    "deep-sad",
)

#: ``--quick``: every dataset, two split seeds, three methods, rows capped per class.
QUICK: dict[str, Any] = {
    "split_seeds": (0, 1),
    "methods": ("default", "rf", "knn"),
    "max_per_class": 1000,
}
