"""The benchmark's datasets as the protocol splits them: each read once, with the class of every
record (:func:`load_dataset`, through :func:`latent_sculpting.io.table.read_records` and the
dataset's adapter, :mod:`.adapters`); the folds take rows of it, and each fold fits its own
:class:`~latent_sculpting.io.flowspec.FlowSpec` on its training rows only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.research.benchmark.adapters import (
    DATASETS,
    SHARED_VARIABLE,
    DatasetAdapter,
    data_root,
    get_adapter,
)
from latent_sculpting.research.provenance import sha256

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetAdapter",
    "data_root",
    "get_adapter",
    "load_dataset",
]

PathLike = str | Path


@dataclass
class Dataset:
    """A dataset read once: its records and the class of each, ready to be split into folds.

    Attributes
    ----------
    adapter : DatasetAdapter
    records : pyarrow.Table
        Records with canonical column names (every column, features or not).
    classes : ndarray of object
        Class of each record.
    files : list of Path
    counts : dict of str to int
        Rows per class as read (before any cap).
    natural : dict of str to int
        Rows per class in the full release, for F1 at the natural prevalence (``counts`` unless
        the files are a known sample).
    notes : dict of str to int
        Rows left out on reading, by reason.
    max_per_class : int or None
        The cap applied (rows per class, drawn at random with seed 0).
    sha256 : list of str
        Of each file, in ``files`` order.
    """

    adapter: DatasetAdapter
    records: pa.Table
    classes: np.ndarray
    files: list[Path]
    counts: dict[str, int]
    natural: dict[str, int]
    notes: dict[str, int] = field(default_factory=dict)
    max_per_class: int | None = None
    sha256: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.adapter.name

    @property
    def benign(self) -> str:
        return self.adapter.benign

    def __len__(self) -> int:
        return len(self.classes)

    def family_map(self) -> dict[str, tuple[str, ...]]:
        """The adapter's families restricted to the classes present."""
        return self.adapter.family_map(sorted(set(self.classes)))

    def prevalence(self, classes: Sequence[str]) -> float:
        """Share of these classes among them and the benign flows, at natural counts."""
        attacks = sum(self.natural.get(c, 0) for c in classes)
        benign = self.natural.get(self.benign, 0)
        if attacks == 0 or benign == 0:
            return float("nan")
        return attacks / (attacks + benign)

    def summary(self) -> dict:
        present = pd.Series(self.classes, dtype=object).value_counts()
        return {
            "title": self.adapter.title,
            "files": [
                {"path": str(p), "sha256": h} for p, h in zip(self.files, self.sha256, strict=True)
            ],
            "rows": len(self),
            "rows_per_class": {str(k): int(v) for k, v in present.items()},
            "rows_per_class_read": dict(self.counts),
            "natural_counts": dict(self.natural),
            "left_out": dict(self.notes),
            "max_per_class": self.max_per_class,
            "families": {f: list(c) for f, c in self.family_map().items()},
            "campaigns": [list(c) for c in self.adapter.campaigns],
        }


def load_dataset(
    name: str | DatasetAdapter,
    path: PathLike | Sequence[PathLike] | None = None,
    *,
    max_per_class: int | None = None,
) -> Dataset:
    """Read a dataset once, with the class of every record.

    Parameters
    ----------
    name : str or DatasetAdapter
        A key of :data:`DATASETS`.
    path : path or list of paths, optional
        Files or folder; default the adapter's (the embedded sample for CIC-IDS-2017, the
        dataset's folder under :func:`data_root` for the others).
    max_per_class : int, optional
        At most this many random rows of each class (seed 0): a quick, stratified slice.

    Raises
    ------
    FileNotFoundError
        If the data is not there (the message says where to download it).
    FlowInputError
        For a missing column or a label the adapter does not know (named with its row).
    """
    from latent_sculpting.io.table import read_records

    adapter = name if isinstance(name, DatasetAdapter) else get_adapter(name)
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"max_per_class must be at least 1, got {max_per_class}")
    where = adapter.default_path() if path is None else path
    if isinstance(where, (str, Path)) and not Path(where).exists():
        raise FileNotFoundError(
            f"{adapter.title} not found at {where}; download {adapter.download}, then pass "
            f"--data {adapter.name}=PATH (or set {SHARED_VARIABLE} to the folder whose data/ "
            f"holds {adapter.folder}/)"
        )
    records, _, files, _ = read_records(where, format=adapter.format)
    source = files[0] if len(files) == 1 else f"{adapter.title} ({len(files)} files)"
    classes, keep, notes = adapter.classes(records, source)
    if not keep.all():
        rows = np.flatnonzero(keep)
        records, classes = records.take(pa.array(rows)), classes[rows]
    counts = {str(k): int(v) for k, v in pd.Series(classes, dtype=object).value_counts().items()}
    if adapter.benign not in counts:
        raise FlowInputError(f"{source}: no {adapter.benign!r} rows (classes: {sorted(counts)})")
    single = where if isinstance(where, (str, Path)) else None
    natural = adapter.natural_counts(None if single is None else Path(single)) or dict(counts)
    if max_per_class is not None:
        rng = np.random.default_rng(0)
        chosen = [
            rng.choice(rows, size=min(max_per_class, len(rows)), replace=False)
            for rows in (np.flatnonzero(classes == c) for c in sorted(counts))
        ]
        rows = np.sort(np.concatenate(chosen))
        records, classes = records.take(pa.array(rows)), classes[rows]
    return Dataset(
        adapter=adapter,
        records=records,
        classes=classes,
        files=list(files),
        counts=counts,
        natural=natural,
        notes=notes,
        max_per_class=max_per_class,
        sha256=[sha256(p) for p in files],
    )
