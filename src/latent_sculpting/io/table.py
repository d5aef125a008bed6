"""Flow files read through a :class:`~latent_sculpting.io.flowspec.FlowSpec`: whole tables for
training and evaluation, or batches for scoring files of any size.

Both go through the same two steps, :func:`latent_sculpting.io.readers.iter_batches` (file syntax)
then :func:`latent_sculpting.io.encoding.encode` (meaning), so a flow becomes the same features
whether it is trained on, evaluated or scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.cleaning import CleaningReport
from latent_sculpting.io.encoding import (
    FlowBatch,
    check_columns,
    encode,
    numeric_types,
    usable_counts,
)
from latent_sculpting.io.fitting import fit_spec
from latent_sculpting.io.flowspec import FlowSpec
from latent_sculpting.io.formats import detect_format, get_format, normalize_column_name
from latent_sculpting.io.readers import iter_batches, list_flow_files, read_columns

__all__ = [
    "FlowTable",
    "cap_per_class",
    "cap_rows",
    "check_files_usable",
    "iter_flow_batches",
    "leave_out_unlabelled",
    "read_flows",
    "read_records",
    "refuse_unusable",
]

if TYPE_CHECKING:
    from latent_sculpting.io.context.config import ContextConfig
    from latent_sculpting.io.context.state import ContextState

PathLike = str | Path


@dataclass
class FlowTable:
    """Flows as a float32 feature matrix with labels, identifiers, provenance and their spec.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features), float32
        Model features (never identifiers).
    feature_names : list of str
        Column names of ``X``.
    labels : ndarray of shape (n_rows,), object, or None
        Labels (canonical where the format has a vocabulary); None if unlabelled.
    identifiers : DataFrame
        Identifier columns (IPs, ports, timestamp, ...) row-aligned with ``X``; may have no
        columns. Its index is ``0 .. n_rows - 1``.
    source : ndarray of shape (n_rows,), int32
        Index into ``files`` of the file each row came from.
    files : list of Path
        Files read, in order.
    report : CleaningReport
        What was read, replaced and dropped.
    spec : FlowSpec or None
        How records became ``X``; a model fitted on this table stores it.
    """

    X: np.ndarray
    feature_names: list[str]
    labels: np.ndarray | None
    identifiers: pd.DataFrame
    source: np.ndarray
    files: list[Path]
    report: CleaningReport = field(default_factory=CleaningReport)
    spec: FlowSpec | None = None

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def y(self) -> np.ndarray:
        """0 for benign rows, 1 for attacks (needs labels and the spec's benign label)."""
        if self.labels is None or self.spec is None or self.spec.benign_label is None:
            raise ValueError("this FlowTable has no labels with a benign label")
        return (self.labels != self.spec.benign_label).astype(np.int64)

    def frame(self) -> pd.DataFrame:
        """``X`` as a DataFrame with the feature names (no copy)."""
        return pd.DataFrame(self.X, columns=self.feature_names, copy=False)

    def label_counts(self) -> dict[str, int]:
        """Rows per label, most frequent first.

        Raises
        ------
        ValueError
            If the table has no labels.
        """
        if self.labels is None:
            raise ValueError("this FlowTable has no labels (it was read without a label column)")
        counts = pd.Series(self.labels, dtype=object).value_counts(sort=False)
        ordered = sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
        return {str(label): int(n) for label, n in ordered}

    def subset(self, rows: np.ndarray | Sequence[int] | Sequence[bool]) -> FlowTable:
        """The rows selected by a boolean mask or an integer index, as a new table (the report
        and spec are shared: they describe how the parent table was built)."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise ValueError(f"boolean mask has shape {rows.shape}, expected ({len(self)},)")
            rows = np.flatnonzero(rows)
        return replace(
            self,
            X=self.X[rows],
            feature_names=list(self.feature_names),
            labels=None if self.labels is None else self.labels[rows],
            identifiers=self.identifiers.iloc[rows].reset_index(drop=True),
            source=self.source[rows],
            files=list(self.files),
        )


def read_records(
    paths: PathLike | Sequence[PathLike],
    *,
    format: str = "auto",
    report: CleaningReport | None = None,
) -> tuple[pa.Table, np.ndarray, list[Path], str]:
    """Every record of the files as one Arrow table with canonical column names.

    A column some files lack is null in their rows; :func:`read_flows` refuses such files.

    Returns
    -------
    records : pyarrow.Table
    source : ndarray of int32
        Index of each row's file in ``files``.
    files : list of Path
    format : str
        The format (detected from the first file when ``format="auto"``).
    """
    records, source, files, fmt, _ = _read_files(paths, format, report)
    return records, source, files, fmt


def _read_files(
    paths: PathLike | Sequence[PathLike], format: str, report: CleaningReport | None
) -> tuple[pa.Table, np.ndarray, list[Path], str, list[list[str]]]:
    """:func:`read_records`, and the (canonical) columns each file has."""
    files = list_flow_files(paths)
    fmt = detect_format(read_columns(files[0])) if format == "auto" else get_format(format)
    tables, sizes, columns = [], [], []
    for path in files:
        parts = list(iter_batches(path))
        if not parts or sum(p.num_rows for p in parts) == 0:
            raise FlowInputError(f"{path}: file has a header but no data rows", path=path)
        table = pa.Table.from_batches(parts)
        rename = fmt.canonical_columns(table.column_names, source=path)
        table = table.select(list(rename)).rename_columns(list(rename.values()))
        tables.append(table)
        sizes.append(table.num_rows)
        columns.append(table.column_names)
        if report is not None:
            report.files[str(path)] = {"format": fmt.name, "rows": table.num_rows}
    try:
        records = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise FlowInputError(
            f"the files' columns do not agree in type ({error}); read them separately"
        ) from None
    source = np.repeat(np.arange(len(files), dtype=np.int32), sizes)
    return records, source, files, fmt.name, columns


def leave_out_unlabelled(
    records: pa.Table, source: np.ndarray, label: str | None, fmt: str, report: CleaningReport
) -> tuple[pa.Table, np.ndarray]:
    """``records`` without the rows whose label the format calls unlabelled (CTU-13's
    ``Background``), counted per label in ``report.unlabelled_left_out``.

    Raises
    ------
    FlowInputError
        If every row is such a row (nothing would be left to learn from).
    """
    unknown = get_format(fmt).unlabelled_labels
    if not unknown or label is None or label not in records.column_names:
        return records, source
    labels = get_format(fmt).labels(records.column(label))
    mask = np.isin(labels.astype(str), unknown) & pd.notna(labels)
    if not mask.any():
        return records, source
    for value, n in pd.Series(labels[mask]).value_counts().items():
        report.unlabelled_left_out[str(value)] = report.unlabelled_left_out.get(str(value), 0) + n
    if mask.all():
        raise FlowInputError(
            f"every one of the {len(mask):,} flows is labelled {', '.join(map(repr, unknown))} "
            f"in column {label!r}: flows nobody labelled, which are neither benign nor attack; "
            "bring flows labelled benign (or pass --unlabeled to declare them all benign)",
            column=label,
        )
    return records.filter(pa.array(~mask)), source[~mask]


def check_files_usable(
    spec: FlowSpec, records: pa.Table, source: np.ndarray, files: Sequence[Path]
) -> None:
    """Refuse a file in which a numeric input column holds no finite number.

    Raises
    ------
    FlowInputError
        Naming the first such file and its columns.
    """
    starts = np.searchsorted(source, np.arange(len(files) + 1))
    for index, path in enumerate(files):
        rows = records.slice(starts[index], starts[index + 1] - starts[index])
        if rows.num_rows:
            refuse_unusable(spec, usable_counts(spec, rows), rows.num_rows, path)


def refuse_unusable(spec: FlowSpec, usable: dict[str, int], rows: int, path: object) -> None:
    """Refuse ``path`` if ``usable`` (:func:`~latent_sculpting.io.encoding.usable_counts` over
    its ``rows`` rows) counts no finite value in a column."""
    unusable = [name for name in spec.numeric if usable.get(name, 0) == 0]
    if unusable:
        shown = ", ".join(repr(c) for c in unusable)
        raise FlowInputError(
            f"{path}: no usable value in column(s) {shown}: each of the {rows:,} rows is "
            "missing, NaN or infinite there, and the model would see only the 0 put in their "
            "place; fix or drop the file",
            path=path if isinstance(path, Path) else None,
            column=unusable[0],
        )


def read_flows(
    paths: PathLike | Sequence[PathLike],
    *,
    spec: FlowSpec | None = None,
    format: str = "auto",
    label_column: str | None = None,
    benign_label: str | None = None,
    unlabelled: bool = False,
    drop: Iterable[str] = (),
    keep: Iterable[str] = (),
    engineered: bool = True,
    max_categories: int = 32,
    require_labels: bool = True,
    keep_identifiers: bool = True,
    context: ContextConfig | None = None,
) -> FlowTable:
    """Read flow files of any syntax and format into one table of model inputs.

    Parameters
    ----------
    paths : path or list of paths
        Files or folders (see :func:`latent_sculpting.io.readers.list_flow_files`).
    spec : FlowSpec, optional
        Encode with this spec (a fitted model's); without one, a spec is fitted on these rows
        (:func:`latent_sculpting.io.fitting.fit_spec`, whose options follow).
    require_labels : bool, default True
        Refuse a missing label when the records have a label column.
    keep_identifiers : bool, default True
        False leaves ``identifiers`` empty (saves memory on large data).
    context : ContextConfig, optional
        Add these context features (without ``spec``; a spec brings its own). The files are one
        run: read in the order of their first flows, one state carried across them
        (:func:`latent_sculpting.io.runs.run_context`), over every record, those left out of
        learning too.

    Raises
    ------
    FileNotFoundError, FlowInputError
        For a missing path, an unreadable file, a missing column or a bad value (named).
    """
    report = CleaningReport()
    records, source, files, fmt, columns = _read_files(
        paths, spec.format if spec is not None else format, report
    )
    if spec is not None:
        label = spec.label_column
    elif unlabelled:
        label = None
    else:
        wanted = normalize_column_name(label_column or get_format(fmt).label_column or "")
        label = next((c for c in records.column_names if c.casefold() == wanted.casefold()), None)
    if spec is not None and context is not None and context != spec.context:
        raise ValueError("context is given by the spec when there is one; pass one of the two")
    config = spec.context if spec is not None else context
    names: list[str] = []
    if config is not None:
        from latent_sculpting.io.runs import run_context

        # Computed over every record, before any is left out: each is traffic the flows after
        # it followed. The columns ride along with the rows, and leave before the spec is fit.
        block = run_context(config, fmt, records, source, files, report)
        names = [f"\0{n}" for n in config.feature_names]
        for j, name in enumerate(names):
            records = records.append_column(name, pa.array(block[:, j]))
        del block
    records, source = leave_out_unlabelled(records, source, label, fmt, report)
    context_block = None
    if names:
        context_block = np.column_stack([records.column(n).to_numpy() for n in names])
        records = records.drop_columns(names)
    if spec is None:
        spec = fit_spec(
            records,
            format=fmt,
            label_column=label_column,
            benign_label=benign_label,
            unlabelled=unlabelled,
            drop=drop,
            keep=keep,
            engineered=engineered,
            max_categories=max_categories,
            context=context,
            source=files[0] if len(files) == 1 else f"{len(files)} files",
        )
    for path, names in zip(files, columns, strict=True):
        check_columns(spec, names, source=path)
    check_files_usable(spec, records, source, files)
    labelled = spec.label_column is not None and spec.label_column in records.column_names
    batch = encode(
        spec,
        records,
        source=files[0] if len(files) == 1 else "the files",
        require_labels=require_labels and labelled,
        report=report,
        context=context_block,
    )
    del records
    report.rows_out = len(batch)
    report.engineered = list(spec.engineered)
    identifiers = batch.identifiers.to_pandas() if keep_identifiers else pd.DataFrame()
    if not keep_identifiers:
        identifiers = pd.DataFrame(index=pd.RangeIndex(len(batch)))
    return FlowTable(
        batch.X, batch.feature_names, batch.labels, identifiers, source, files, report, spec
    )


def iter_flow_batches(
    spec: FlowSpec,
    path: PathLike,
    batch_rows: int = 65_536,
    *,
    report: CleaningReport | None = None,
    context: ContextState | None = None,
) -> Iterator[FlowBatch]:
    """Stream one flow file as encoded batches, in constant memory, for files of any size.

    A spec with context features needs ``context``: the state of the run the file belongs to
    (a new one for its first file), advanced batch by batch. Records out of time order within
    a batch are sorted for their context (counted in ``report``); a batch that starts before
    the flows already seen is refused with the file and row.
    """
    path = Path(path)
    names = read_columns(path)
    check_columns(spec, names, source=path)
    types = numeric_types(spec, names)
    offset = 0
    usable = dict.fromkeys(spec.numeric, 0)
    for records in iter_batches(path, batch_rows, types=types):
        if records.num_rows == 0:
            continue
        batch = encode(spec, records, source=path, offset=offset, report=report, context=context)
        for name, count in usable_counts(spec, records).items():
            usable[name] += count
        yield batch
        offset += records.num_rows
    if offset:
        # Only now is a column known to hold nothing usable in the whole file; a caller writes
        # its output atomically (sculpt score), so nothing of the file is kept.
        refuse_unusable(spec, usable, offset, path)


def cap_per_class(table: FlowTable, max_rows: int, seed: int = 0) -> FlowTable:
    """At most ``max_rows`` random rows of each label: a small, still stratified slice."""
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(table.labels):
        rows = np.flatnonzero(table.labels == label)
        keep.append(rng.choice(rows, size=min(max_rows, len(rows)), replace=False))
    return table.subset(np.sort(np.concatenate(keep)))


def cap_rows(table: FlowTable, max_rows: int, seed: int = 0) -> FlowTable:
    """:func:`cap_per_class` of a labelled table; ``max_rows`` random rows of an unlabelled one."""
    if table.labels is not None:
        return cap_per_class(table, max_rows, seed)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(table), size=min(max_rows, len(table)), replace=False)
    return table.subset(np.sort(rows))
