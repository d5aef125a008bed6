"""Reading CIC-IDS-2017 flow files (original and improved releases) into one canonical table.

The original ``MachineLearningCSV`` release used by Chhetri et al., "Latent Sculpting for
Zero-Shot Generalization" (arXiv:2512.22179) and the improved release of Engelen et al. (2021)
differ in column names, identifier columns, label spellings and encoding. Each file's schema is
detected from its header (:func:`~latent_sculpting.data.schema.detect_schema`), its features are
read by pyarrow straight into float32 and renamed to the canonical names, and its labels are
mapped to the canonical vocabulary. Files are never read row by row in Python.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .cleaning import CleaningReport, engineered_features, replace_nonfinite
from .schema import (
    ATTEMPTED_SUFFIX,
    BENIGN,
    CANONICAL_FEATURES,
    ENGINEERED_FEATURES,
    IDENTIFIER_COLUMNS,
    LABEL_COLUMN,
    canonical_label,
    detect_schema,
    normalize_column_name,
)

__all__ = [
    "ATTEMPTED_POLICIES",
    "FlowTable",
    "iter_flow_batches",
    "list_flow_files",
    "load_cicids2017",
    "load_flow_table",
    "sample_path",
]

PathLike = str | Path
ATTEMPTED_POLICIES = ("keep", "drop", "benign")
_SUFFIXES = (".csv", ".parquet")
_IDENTIFIER_KEYS = {c.casefold(): c for c in IDENTIFIER_COLUMNS}
# Spellings of missing / infinite values that must parse as floats, not as bad values.
_NULL_VALUES = ["", "NaN", "nan", "NAN", "NA", "N/A", "null", "NULL", "None"]


@dataclass
class FlowTable:
    """Flows as a float32 feature matrix with labels, identifiers and provenance.

    Attributes
    ----------
    X : ndarray of shape (n_rows, n_features), float32
        Model features (never identifiers).
    feature_names : list of str
        Column names of ``X``.
    labels : ndarray of shape (n_rows,), object, or None
        Canonical label strings (raw strings for :func:`load_flow_table`); None if unlabeled.
    identifiers : DataFrame
        Identifier columns (IPs, ports, timestamp, ...) row-aligned with ``X``; may have no
        columns. Its index is ``0 .. n_rows - 1``.
    source : ndarray of shape (n_rows,), int32
        Index into ``files`` of the file each row came from.
    files : list of Path
        Files read, in order.
    report : CleaningReport
        What was read, renamed, replaced and dropped.
    """

    X: np.ndarray
    feature_names: list[str]
    labels: np.ndarray | None
    identifiers: pd.DataFrame
    source: np.ndarray
    files: list[Path]
    report: CleaningReport = field(default_factory=CleaningReport)

    def __len__(self) -> int:
        return int(self.X.shape[0])

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
        """Return the rows selected by a boolean mask or an integer index, as a new table.

        The report is shared (it describes how the parent table was built).
        """
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise ValueError(f"boolean mask has shape {rows.shape}, expected ({len(self)},)")
            rows = np.flatnonzero(rows)
        return FlowTable(
            X=self.X[rows],
            feature_names=list(self.feature_names),
            labels=None if self.labels is None else self.labels[rows],
            identifiers=self.identifiers.iloc[rows].reset_index(drop=True),
            source=self.source[rows],
            files=list(self.files),
            report=self.report,
        )


def sample_path() -> Path:
    """Folder of the vendored improved CIC-IDS-2017 sample (56,277 flows, 5 Parquet files)."""
    return Path(__file__).resolve().parent / "sample"


def list_flow_files(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    """Resolve a folder, a file, or a list of them to the flow files to read.

    A folder contributes all ``*.csv`` and ``*.parquet`` files directly inside it, sorted by name.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If a folder holds no CSV/Parquet file, a file has another suffix, or nothing was given.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"flow data path does not exist: {path}")
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in _SUFFIXES)
            if not found:
                raise ValueError(f"folder {path} contains no *.csv or *.parquet files")
            files.extend(found)
        elif path.suffix.lower() in _SUFFIXES:
            files.append(path)
        else:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")
    if not files:
        raise ValueError("no flow files given")
    return files


# --------------------------------------------------------------------------------------------
# Per-file column plans


def _is_csv(path: Path) -> bool:
    return path.suffix.lower() == ".csv"


def _decode(raw: bytes) -> str:
    # The original release is cp1252 (the web-attack dash is byte 0x96); latin-1 decodes anything.
    for encoding in ("utf-8", "cp1252", "latin-1"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            continue
    return raw.decode("latin-1")  # pragma: no cover - latin-1 never fails


def _csv_header(path: Path) -> list[str]:
    with path.open("rb") as fh:
        line = fh.readline()
    if not line.strip():
        raise ValueError(f"{path}: file is empty (no header line)")
    text = _decode(line.removeprefix(b"\xef\xbb\xbf")).rstrip("\r\n")
    return next(csv.reader([text]))


def _file_columns(path: Path) -> list[str]:
    if _is_csv(path):
        return _csv_header(path)
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: file is empty")
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ValueError(f"{path}: not a readable Parquet file ({exc})") from exc


@dataclass
class _Plan:
    """How to read one file: raw column -> role."""

    path: Path
    columns: list[str]
    schema: str
    features: dict[str, str]  # raw name -> output feature name, in output order
    label: str | None
    identifiers: list[str]
    attempted: str | None = None  # raw name of "Attempted Category"
    ignored: list[str] = field(default_factory=list)


def _find_label(columns: Sequence[str], label_column: str) -> str | None:
    key = normalize_column_name(label_column).casefold()
    for col in columns:
        if normalize_column_name(col).casefold() == key:
            return col
    return None


def _cic_plan(path: Path, *, require_label: bool) -> _Plan:
    columns = _file_columns(path)
    schema, rename = detect_schema(columns, source=path)
    label = _find_label(columns, LABEL_COLUMN)
    if label is None and require_label:
        raise ValueError(
            f"{path}: no {LABEL_COLUMN!r} column (columns: {len(columns)}, schema {schema})"
        )
    by_canonical = {v: k for k, v in rename.items()}
    features = {by_canonical[name]: name for name in CANONICAL_FEATURES}
    identifiers = [c for c in columns if normalize_column_name(c).casefold() in _IDENTIFIER_KEYS]
    attempted = next(
        (c for c in identifiers if normalize_column_name(c).casefold() == "attempted category"),
        None,
    )
    used = set(features) | set(identifiers) | {label}
    ignored = [normalize_column_name(c) for c in columns if c not in used]
    return _Plan(path, columns, schema, features, label, identifiers, attempted, ignored)


def _csv_options(
    plan: _Plan, block_size: int | None = None, *, identifiers: bool = True
) -> tuple[pacsv.ReadOptions, pacsv.ConvertOptions]:
    types: dict[str, pa.DataType] = {raw: pa.float32() for raw in plan.features}
    if plan.label is not None:
        # Read labels as bytes: the original release is not valid UTF-8 (cp1252 dash), and only
        # the few distinct labels need decoding.
        types[plan.label] = pa.binary()
    include = list(plan.features)
    if identifiers:
        include += plan.identifiers
    elif plan.attempted is not None:
        include.append(plan.attempted)
    if plan.label is not None:
        include.append(plan.label)
    read = pacsv.ReadOptions(column_names=plan.columns, skip_rows=1)
    if block_size is not None:
        read.block_size = block_size
    convert = pacsv.ConvertOptions(
        column_types=types,
        include_columns=include,
        null_values=_NULL_VALUES,
        strings_can_be_null=False,
        quoted_strings_can_be_null=False,
    )
    return read, convert


_ARROW_BAD_VALUE = re.compile(r"column #(\d+).*?invalid value '(.*)'", re.DOTALL)


def _bad_value_error(plan: _Plan, exc: Exception) -> ValueError:
    match = _ARROW_BAD_VALUE.search(str(exc))
    if match is None:
        return ValueError(f"{plan.path}: could not parse file ({exc})")
    column = normalize_column_name(plan.columns[int(match.group(1))])
    return ValueError(
        f"{plan.path}: non-numeric value {match.group(2)!r} in feature column {column!r}"
    )


def _cast_features(table: pa.Table, plan: _Plan) -> pa.Table:
    """Cast feature columns of a Parquet table to float32, naming any unparsable value."""
    arrays = []
    for i, name in enumerate(table.column_names):
        col = table.column(i)
        if name in plan.features and col.type != pa.float32():
            if not (
                pa.types.is_integer(col.type)
                or pa.types.is_floating(col.type)
                or pa.types.is_boolean(col.type)
                or pa.types.is_string(col.type)
                or pa.types.is_large_string(col.type)
            ):
                raise ValueError(
                    f"{plan.path}: feature column {normalize_column_name(name)!r} has "
                    f"non-numeric type {col.type}"
                )
            try:
                col = pc.cast(col, pa.float32(), safe=False)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                values = col.to_pandas()
                parsed = pd.to_numeric(values, errors="coerce")
                bad = values[parsed.isna() & values.notna()]
                example = bad.iloc[0] if len(bad) else "?"
                raise ValueError(
                    f"{plan.path}: non-numeric value {example!r} in feature column "
                    f"{normalize_column_name(name)!r}"
                ) from None
        arrays.append(col)
    return pa.table(arrays, names=table.column_names)


def _read_table(plan: _Plan, *, identifiers: bool = True) -> pa.Table:
    if _is_csv(plan.path):
        read, convert = _csv_options(plan, identifiers=identifiers)
        try:
            table = pacsv.read_csv(plan.path, read_options=read, convert_options=convert)
        except pa.ArrowInvalid as exc:
            raise _bad_value_error(plan, exc) from None
        return table
    wanted = list(plan.features) + (plan.identifiers if identifiers else [])
    if not identifiers and plan.attempted is not None:
        wanted.append(plan.attempted)
    if plan.label is not None:
        wanted.append(plan.label)
    return _cast_features(pq.read_table(plan.path, columns=wanted), plan)


def _iter_tables(plan: _Plan, batch_rows: int) -> Iterator[pa.Table]:
    """Stream a file in tables of exactly ``batch_rows`` rows (the last one shorter)."""
    if _is_csv(plan.path):
        # ~300 bytes per CIC flow row in CSV; aim one pyarrow block at about one batch.
        block = int(min(max(batch_rows * 300, 1 << 20), 1 << 30))
        read, convert = _csv_options(plan, block)
        try:
            reader = pacsv.open_csv(plan.path, read_options=read, convert_options=convert)
            batches: Iterator[pa.RecordBatch] = iter(reader)
        except pa.ArrowInvalid as exc:
            raise _bad_value_error(plan, exc) from None
    else:
        wanted = list(plan.features) + plan.identifiers
        if plan.label is not None:
            wanted.append(plan.label)
        batches = pq.ParquetFile(plan.path).iter_batches(batch_size=batch_rows, columns=wanted)
    pending: list[pa.RecordBatch] = []
    n_pending = 0
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            break
        except pa.ArrowInvalid as exc:
            raise _bad_value_error(plan, exc) from None
        pending.append(batch)
        n_pending += batch.num_rows
        while n_pending >= batch_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, batch_rows)
            rest = table.slice(batch_rows)
            pending = rest.to_batches()
            n_pending = rest.num_rows
    if n_pending:
        yield pa.Table.from_batches(pending)


# --------------------------------------------------------------------------------------------
# Labels


class _LabelMapper:
    """Canonicalises labels via their few distinct values, recording renames in the report."""

    def __init__(self, report: CleaningReport, *, canonical: bool = True) -> None:
        self.report = report
        self.canonical = canonical
        self._cache: dict[Any, str] = {}
        self._warned: set[str] = set()
        self.last: tuple[np.ndarray, np.ndarray] = (np.empty(0, np.int64), np.empty(0, object))

    def _map_one(self, raw: Any) -> str:
        if raw in self._cache:
            return self._cache[raw]
        text = _decode(raw) if isinstance(raw, bytes) else ("" if raw is None else str(raw))
        if not self.canonical:
            out = text.strip()
        else:
            out = canonical_label(text)
            if out is None:
                out = text.strip()
                if out not in self._warned:
                    self._warned.add(out)
                    warnings.warn(
                        f"unknown label {out!r}: kept as its own (attack) class, not benign",
                        stacklevel=4,
                    )
        self._cache[raw] = out
        return out

    def __call__(self, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        encoded = pc.dictionary_encode(column)
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        dictionary = encoded.dictionary.to_pylist()
        mapped = np.array([self._map_one(v) for v in dictionary] + [""], dtype=object)
        # A null label maps to "" (the extra last entry), then counts as unknown below.
        indices = encoded.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False)
        labels = mapped[indices]
        self.last = (indices, mapped)
        counts = np.bincount(indices, minlength=len(mapped))
        for raw, out, n in zip(dictionary + [None], mapped, counts, strict=True):
            if not n:
                continue
            text = _decode(raw) if isinstance(raw, bytes) else raw
            if self.canonical and (canonical_label(text or "") is None):
                self.report.unknown_labels[out] = self.report.unknown_labels.get(out, 0) + int(n)
            elif text != out:
                key = f"{text!r} -> {out!r}"
                self.report.label_renames[key] = self.report.label_renames.get(key, 0) + int(n)
        return labels


def _attempted_mask(table: pa.Table, plan: _Plan, mapper: _LabelMapper) -> np.ndarray:
    # Test the few distinct labels, not every row.
    indices, mapped = mapper.last
    mask = np.array([str(m).endswith(ATTEMPTED_SUFFIX) for m in mapped], dtype=bool)[indices]
    if plan.attempted is not None:
        category = table.column(plan.attempted).to_numpy(zero_copy_only=False)
        mask |= pd.to_numeric(pd.Series(category), errors="coerce").fillna(-1).to_numpy() != -1
    return mask


def _apply_attempted(
    labels: np.ndarray, attempted: np.ndarray, policy: str, report: CleaningReport
) -> np.ndarray | None:
    """Apply the attempted-flow policy; return a keep-mask for ``"drop"``, else None."""
    n = int(attempted.sum())
    report.attempted_rows += n
    if not n or policy == "keep":
        return None
    if policy == "benign":
        labels[attempted] = BENIGN
        report.attempted_relabelled += n
        return None
    report.attempted_dropped += n
    return ~attempted


def _check_policy(attempted: str) -> None:
    if attempted not in ATTEMPTED_POLICIES:
        raise ValueError(f"attempted must be one of {ATTEMPTED_POLICIES}, got {attempted!r}")


# --------------------------------------------------------------------------------------------
# Assembling tables


def _identifier_frame(table: pa.Table, plan: _Plan) -> pd.DataFrame:
    frame = table.select(plan.identifiers).to_pandas()
    frame.columns = [normalize_column_name(c) for c in frame.columns]
    return frame


def _assemble(
    plans: list[_Plan],
    *,
    feature_names: list[str],
    engineered: bool,
    nonfinite: str,
    attempted: str,
    canonical_labels: bool,
    keep_identifiers: bool,
    report: CleaningReport,
) -> FlowTable:
    """Read every planned file into one FlowTable (shared by both public loaders)."""
    tables: list[pa.Table] = []
    for plan in plans:
        table = _read_table(plan, identifiers=keep_identifiers)
        if table.num_rows == 0:
            raise ValueError(f"{plan.path}: file has a header but no data rows")
        tables.append(table)
        report.files[str(plan.path)] = {"schema": plan.schema, "rows": table.num_rows}
        report.ignored_columns[str(plan.path)] = plan.ignored
    n = sum(t.num_rows for t in tables)
    report.rows_read += n
    names = list(feature_names) + (list(ENGINEERED_FEATURES) if engineered else [])
    d_raw = len(feature_names)
    # One preallocated float32 matrix filled column by column: peak memory is the Arrow tables
    # plus this matrix, never a float64 copy of the whole data.
    X = np.empty((n, len(names)), dtype=np.float32)
    source = np.empty(n, dtype=np.int32)
    label_parts: list[np.ndarray] = []
    attempted_parts: list[np.ndarray] = []
    id_frames: list[pd.DataFrame] = []
    mapper = _LabelMapper(report, canonical=canonical_labels)
    start = 0
    for i, (plan, table) in enumerate(zip(plans, tables, strict=True)):
        stop = start + table.num_rows
        for j, raw in enumerate(plan.features):
            X[start:stop, j] = table.column(raw).to_numpy()
        source[start:stop] = i
        if plan.label is not None:
            labels = mapper(table.column(plan.label))
            label_parts.append(labels)
            attempted_parts.append(_attempted_mask(table, plan, mapper))
        if keep_identifiers:
            id_frames.append(_identifier_frame(table, plan))
        tables[i] = None  # type: ignore[call-overload]  # free each file as soon as copied
        start = stop
    del tables
    if engineered:
        col = {name: j for j, name in enumerate(feature_names)}
        engineered_features(
            X[:, col["Total Length of Fwd Packets"]],
            X[:, col["Total Fwd Packets"]],
            X[:, col["Flow Duration"]],
            out=X[:, d_raw:],
        )
        report.engineered = list(ENGINEERED_FEATURES)
    labels_all = np.concatenate(label_parts) if label_parts else None
    keep = replace_nonfinite(X, names, policy=nonfinite, report=report)
    if labels_all is not None and canonical_labels:
        report.attempted_policy = attempted
        keep_attempted = _apply_attempted(
            labels_all, np.concatenate(attempted_parts), attempted, report
        )
        if keep_attempted is not None:
            keep = keep_attempted if keep is None else keep & keep_attempted
    identifiers = (
        pd.concat(id_frames, ignore_index=True) if id_frames else pd.DataFrame(index=range(n))
    )
    table = FlowTable(X, names, labels_all, identifiers, source, [p.path for p in plans], report)
    if keep is not None and not keep.all():
        table = table.subset(keep)
    report.rows_out = len(table)
    return table


def load_cicids2017(
    path: PathLike | Sequence[PathLike] | None = None,
    *,
    nonfinite: str = "zero",
    engineered: bool = True,
    attempted: str = "keep",
    keep_identifiers: bool = True,
) -> FlowTable:
    """Load CIC-IDS-2017 flows (original or improved release) into canonical form.

    Each file's release is detected from its columns. Features are the 76 flow features common
    to both releases under their original names (see :mod:`latent_sculpting.data.schema`),
    plus, by default, the two engineered features of Chhetri et al. (arXiv:2512.22179).
    Labels are mapped to the canonical vocabulary; identifiers (IPs, ports, timestamp, ...) are
    kept in ``identifiers`` and never in ``X``.

    Parameters
    ----------
    path : path, list of paths, or None
        A folder (every ``*.csv`` / ``*.parquet`` inside, sorted), a file, or a list of them.
        None loads the vendored improved-release sample (:func:`sample_path`).
    nonfinite : {"zero", "median", "drop"}, default "zero"
        What to do with ``inf`` / ``NaN`` feature values; ``"zero"`` is the paper's choice.
        See :func:`~latent_sculpting.data.cleaning.replace_nonfinite`.
    engineered : bool, default True
        Append ``"Fwd Bytes/Packet (engineered)"`` and ``"Fwd Packets/s (engineered)"``.
    attempted : {"keep", "drop", "benign"}, default "keep"
        Improved-release "attempted" flows (``Attempted Category`` != -1, labels ending in
        ``" - Attempted"``): keep them with their label (its own class), drop them, or relabel
        them ``BENIGN`` as Engelen et al. suggest (they carry no attack payload).
    keep_identifiers : bool, default True
        Read identifier columns; False saves memory on the full release.

    Returns
    -------
    FlowTable
        float32 features, canonical labels, identifiers, per-row source file, cleaning report.

    Raises
    ------
    FileNotFoundError
        If a path does not exist.
    ValueError
        If a folder is empty, a file is empty, has no ``Label`` column, matches neither
        release's columns, or holds a non-numeric feature value (the message names the file,
        the column and the value).

    Examples
    --------
    >>> table = load_cicids2017()
    >>> len(table), table.X.shape[1]
    (56277, 78)
    """
    _check_policy(attempted)
    files = list_flow_files(sample_path() if path is None else path)
    plans = [_cic_plan(f, require_label=True) for f in files]
    report = CleaningReport(nonfinite_policy=nonfinite, attempted_policy=attempted)
    return _assemble(
        plans,
        feature_names=list(CANONICAL_FEATURES),
        engineered=engineered,
        nonfinite=nonfinite,
        attempted=attempted,
        canonical_labels=True,
        keep_identifiers=keep_identifiers,
        report=report,
    )


def _generic_plan(
    path: Path, label_column: str | None, drop: Sequence[str], first: _Plan | None
) -> _Plan:
    columns = _file_columns(path)
    label = None
    if label_column is not None:
        label = _find_label(columns, label_column)
        if label is None:
            raise ValueError(f"{path}: no label column {label_column!r} among {columns}")
    dropped = {normalize_column_name(c).casefold() for c in drop}
    if _is_csv(path):
        # Column types are inferred from the first block only (cheap); the full read then
        # parses features as float32 and names any later non-numeric value.
        types = {label: pa.binary()} if label is not None else {}
        reader = pacsv.open_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=columns, skip_rows=1),
            convert_options=pacsv.ConvertOptions(column_types=types, null_values=_NULL_VALUES),
        )
        schema = reader.schema
        reader.close()
    else:
        schema = pq.read_schema(path)
    features: dict[str, str] = {}
    identifiers: list[str] = []
    for col in columns:
        if col == label:
            continue
        dtype = schema.field(col).type
        numeric = (
            pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_null(dtype)
        )
        if normalize_column_name(col).casefold() in dropped or not numeric:
            identifiers.append(col)
        else:
            features[col] = normalize_column_name(col)
    plan = _Plan(path, columns, "generic", features, label, identifiers)
    if first is not None and list(features.values()) != list(first.features.values()):
        missing = sorted(set(first.features.values()) - set(features.values()))
        extra = sorted(set(features.values()) - set(first.features.values()))
        raise ValueError(
            f"{path}: numeric feature columns differ from {first.path}: missing {missing}, "
            f"extra {extra}"
        )
    return plan


def load_flow_table(
    paths: PathLike | Sequence[PathLike],
    *,
    label_column: str | None = "Label",
    drop: Sequence[str] = (),
    nonfinite: str = "zero",
    keep_identifiers: bool = True,
) -> FlowTable:
    """Load a generic numeric flow table (any dataset, not only CIC-IDS-2017).

    Features are all numeric columns except the label column and the ``drop`` columns, under
    their own names (whitespace-stripped, no renaming), in file order; labels are the raw
    strings (stripped). Non-numeric columns and ``drop`` columns are kept in ``identifiers``.
    Every file must have the same numeric columns.

    Parameters
    ----------
    paths : path or list of paths
        Folder(s) or CSV/Parquet file(s).
    label_column : str or None, default "Label"
        Name of the label column (matched case- and whitespace-insensitively); None for
        unlabeled data.
    drop : sequence of str
        Numeric columns that must not be features (ports, ids, ...).
    nonfinite : {"zero", "median", "drop"}, default "zero"
        See :func:`~latent_sculpting.data.cleaning.replace_nonfinite`.
    keep_identifiers : bool, default True
        Keep the non-feature columns in ``identifiers``.

    Returns
    -------
    FlowTable

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`load_cicids2017`; also if files have different numeric columns.
    """
    files = list_flow_files(paths)
    plans: list[_Plan] = []
    for f in files:
        plans.append(_generic_plan(f, label_column, drop, plans[0] if plans else None))
    if not plans[0].features:
        raise ValueError(f"{files[0]}: no numeric feature columns")
    report = CleaningReport(nonfinite_policy=nonfinite, attempted_policy="keep")
    return _assemble(
        plans,
        feature_names=list(plans[0].features.values()),
        engineered=False,
        nonfinite=nonfinite,
        attempted="keep",
        canonical_labels=False,
        keep_identifiers=keep_identifiers,
        report=report,
    )


def iter_flow_batches(
    path: PathLike | Sequence[PathLike],
    batch_rows: int = 65_536,
    *,
    nonfinite: str = "zero",
    engineered: bool = True,
    attempted: str = "keep",
    report: CleaningReport | None = None,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None]]:
    """Stream CIC-IDS-2017 flows in batches, in constant memory, for files of any size.

    CSV files are read with ``pyarrow.csv.open_csv`` and Parquet files with
    ``ParquetFile.iter_batches``; each batch is cleaned like :func:`load_cicids2017` does.
    Labels are optional, so unlabeled traffic can be scored.

    Parameters
    ----------
    path : path or list of paths
        Folder(s) or file(s), as for :func:`load_cicids2017`.
    batch_rows : int, default 65536
        Rows per batch (the last batch of each file may be shorter; batches never span files).
    nonfinite : {"zero", "drop"}, default "zero"
        ``"median"`` needs the whole column and is not available when streaming.
    engineered : bool, default True
        Append the two engineered features.
    attempted : {"keep", "drop", "benign"}, default "keep"
        Policy for improved-release attempted flows (labeled files only).
    report : CleaningReport, optional
        Accumulates the counts of every batch.

    Yields
    ------
    features : DataFrame, float32
        Canonical feature columns (and engineered ones).
    identifiers : DataFrame
        Identifier columns of the same rows (may have no columns).
    labels : ndarray of object or None
        Canonical labels, or None when the file has no ``Label`` column.

    Raises
    ------
    ValueError
        If ``batch_rows`` < 1, ``nonfinite="median"``, or a file is invalid (see
        :func:`load_cicids2017`).
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    if nonfinite == "median":
        raise ValueError("nonfinite='median' needs the whole table; use 'zero' or 'drop' here")
    _check_policy(attempted)
    report = report if report is not None else CleaningReport()
    report.nonfinite_policy, report.attempted_policy = nonfinite, attempted
    mapper = _LabelMapper(report)
    for f in list_flow_files(path):
        plan = _cic_plan(f, require_label=False)
        report.files[str(f)] = {"schema": plan.schema, "rows": 0}
        report.ignored_columns[str(f)] = plan.ignored
        for table in _iter_tables(plan, batch_rows):
            n = table.num_rows
            report.rows_read += n
            report.files[str(f)]["rows"] += n
            names = list(CANONICAL_FEATURES) + (list(ENGINEERED_FEATURES) if engineered else [])
            X = np.empty((n, len(names)), dtype=np.float32)
            for j, raw in enumerate(plan.features):
                X[:, j] = table.column(raw).to_numpy()
            if engineered:
                col = {name: j for j, name in enumerate(names)}
                engineered_features(
                    X[:, col["Total Length of Fwd Packets"]],
                    X[:, col["Total Fwd Packets"]],
                    X[:, col["Flow Duration"]],
                    out=X[:, len(CANONICAL_FEATURES) :],
                )
                report.engineered = list(ENGINEERED_FEATURES)
            keep = replace_nonfinite(X, names, policy=nonfinite, report=report)
            labels = None
            if plan.label is not None:
                labels = mapper(table.column(plan.label))
                keep_att = _apply_attempted(
                    labels, _attempted_mask(table, plan, mapper), attempted, report
                )
                if keep_att is not None:
                    keep = keep_att if keep is None else keep & keep_att
            identifiers = _identifier_frame(table, plan)
            if keep is not None and not keep.all():
                X, identifiers = X[keep], identifiers[keep].reset_index(drop=True)
                labels = None if labels is None else labels[keep]
            report.rows_out += len(X)
            yield pd.DataFrame(X, columns=names, copy=False), identifiers, labels
