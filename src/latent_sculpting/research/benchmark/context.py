"""Context features in the benchmark: which methods use them, computed once per dataset.

A method uses context features when it says so (``context_config``: a preset whose ``context``
parameter is on, ``default-context``, or a baseline named ``<baseline>-context``). Its fold
features are then the fold's per-flow features followed by the dataset's context columns,
the same columns for every method with the same configuration.

Context is computed per capture file over every record read (before any row is left out: a
flow left out of learning was still traffic before the flows after it), each file with a
fresh state: the benchmark's files are separate captures (IoT-23's nine networks reuse
addresses), never one run. It is refused where it would measure something else than the
traffic: a per-class sample (the embedded CIC-IDS-2017), a dataset capped with
``max_per_class`` (thinned per class the same way), or records without start time and
endpoints (UNSW-NB15's partitioned files). The benchmark then refuses to run the context
methods on that dataset, naming why, rather than report a context result on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.context.config import ContextConfig
from latent_sculpting.research.benchmark.datasets import Dataset

__all__ = [
    "check_context",
    "context_columns",
    "with_context",
]


def method_context(method: Any) -> ContextConfig | None:
    """The context configuration a built method uses (None: none)."""
    return getattr(method, "context_config", None)


def check_context(
    datasets: Iterable[Dataset], methods: Sequence[str], factory: Any
) -> dict[str, ContextConfig]:
    """The context configuration of each method that uses one; every dataset checked to
    allow it.

    Raises
    ------
    ValueError
        Naming the dataset, the methods and why, when a dataset cannot have context features.
    """
    wanted = {}
    for name in methods:
        config = method_context(factory(name, 0, None))
        if config is not None:
            wanted[name] = config
    if not wanted:
        return wanted
    for dataset in datasets:
        for config in set(wanted.values()):
            try:
                context_columns(dataset, config)
            except (FlowInputError, ValueError) as error:
                raise ValueError(
                    f"{dataset.name}: the methods {', '.join(wanted)} use context features, "
                    f"which this dataset cannot have: {str(error).rstrip('.')}. Run them on "
                    "complete captures (iot-23) only"
                ) from None
    return wanted


def context_columns(dataset: Dataset, config: ContextConfig) -> np.ndarray:
    """Context features of every row of ``dataset`` (float32, rows in its order), computed
    on first use and kept with the dataset.

    Raises
    ------
    FlowInputError, ValueError
        For a per-class sample, a dataset read with ``max_per_class``, records without start
        time and endpoints, or files whose records no longer match the dataset's rows.
    """
    from latent_sculpting.io.context.state import ContextState
    from latent_sculpting.io.encoding import context_matrix
    from latent_sculpting.io.formats.base import refuse_context_on_samples
    from latent_sculpting.io.table import read_records

    cache = vars(dataset).setdefault("context_columns", {})
    if config in cache:
        return cache[config]
    refuse_context_on_samples(dataset.files)
    if dataset.max_per_class is not None:
        raise ValueError(
            f"read with max_per_class={dataset.max_per_class}: a cap per class thins each "
            "class at another rate, so window counts would measure the cap, not the traffic"
        )
    fmt = dataset.adapter.format
    records, source, files, _ = read_records(dataset.files, format=fmt)
    starts = np.searchsorted(source, np.arange(len(files) + 1))
    parts = [
        context_matrix(
            config,
            fmt,
            records.slice(starts[i], starts[i + 1] - starts[i]),
            ContextState(config),
            source=path,
        )
        for i, path in enumerate(files)
    ]
    _, keep, _ = dataset.adapter.classes(records, dataset.name)
    features = np.concatenate(parts)[keep]
    if len(features) != len(dataset):
        raise ValueError(
            f"{len(features)} records with context, {len(dataset)} in the dataset: the files "
            "changed since it was read"
        )
    cache[config] = features
    return features


def with_context(
    method: Any, dataset: Dataset, rows: Any, X_fit: np.ndarray, parts: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A method's fold features: the per-flow ones, followed by the dataset's context columns
    when the method uses them (``rows`` is the fold's
    :class:`~latent_sculpting.research.benchmark.splits.FoldRows`, whose attributes are the
    row indices of ``fit`` and of each of ``parts``)."""
    config = method_context(method)
    if config is None:
        return X_fit, dict(parts)
    context = context_columns(dataset, config)

    def joined(X: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.hstack([X, context[index].astype(X.dtype, copy=False)])

    return joined(X_fit, rows.fit), {p: joined(X, getattr(rows, p)) for p, X in parts.items()}
