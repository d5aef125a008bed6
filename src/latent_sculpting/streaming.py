"""Scoring flow files of any size in chunks, in constant memory, into one output file.

Input files (CSV or Parquet) are read batch by batch: CIC-IDS-2017 files through
:func:`latent_sculpting.data.iter_flow_batches`, any other numeric flow table with pyarrow's
streaming readers (``pyarrow.csv.open_csv``, ``ParquetFile.iter_batches``). Each batch goes
through :func:`latent_sculpting.scoring.score_frame`, the unit every scoring path shares, and is
appended to a temporary Parquet or CSV file that is renamed into place only when every input has
been scored: the output is either complete or absent.
"""

from __future__ import annotations

import csv
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ._atomic import publish
from .data import iter_flow_batches, list_flow_files
from .data.schema import BENIGN, LABEL_COLUMN, detect_schema, normalize_column_name
from .estimator import LatentSculpting
from .inputs import FlowInputError, is_cicids2017_model
from .scoring import OUTPUT_COLUMNS, score_frame

__all__ = [
    "AtomicTableWriter",
    "detect_format",
    "iter_scoring_batches",
    "read_columns",
    "score_files",
]

PathLike = str | Path
Batch = tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None]
_NULL_VALUES = ["", "NaN", "nan", "NAN", "NA", "N/A", "null", "NULL", "None"]
_ARROW_BAD_VALUE = re.compile(r"column #(\d+).*?invalid value '(.*)'", re.DOTALL)


def read_columns(path: PathLike) -> list[str]:
    """Column names of a CSV (header line) or Parquet (schema) file, as written in the file.

    Raises
    ------
    ValueError
        If the file is empty, not readable Parquet, or not ``.csv`` / ``.parquet``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open("rb") as handle:
            line = handle.readline()
        if not line.strip():
            raise ValueError(f"{path}: file is empty (no header line)")
        text = line.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="replace")
        return next(csv.reader([text.rstrip("\r\n")]))
    if suffix == ".parquet":
        try:
            return list(pq.read_schema(path).names)
        except (pa.ArrowInvalid, OSError) as error:
            raise ValueError(f"{path}: not a readable Parquet file ({error})") from None
    raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use .csv or .parquet")


def detect_format(path: PathLike) -> str:
    """``"cicids2017"`` if the file's columns match a CIC-IDS-2017 release, else ``"table"``."""
    try:
        detect_schema(read_columns(path), source=path)
    except ValueError:
        return "table"
    return "cicids2017"


def iter_scoring_batches(
    model: LatentSculpting,
    path: PathLike,
    batch_rows: int = 65_536,
    *,
    label_column: str | None = LABEL_COLUMN,
) -> Iterator[Batch]:
    """Stream one file as ``(features, identifiers, labels)`` batches ready for ``model``.

    A model fitted on CIC-IDS-2017 features reads files of either release through the data
    layer (renaming, engineered features, non-finite values to 0). Any other model reads its
    feature columns by name; every other column except the label is an identifier.

    Parameters
    ----------
    model : LatentSculpting
        Fitted, with ``feature_names_in_``.
    path : path
        One CSV or Parquet file.
    batch_rows : int, default 65536
        Rows per batch (about; CSV blocks are sized from the file's mean line length).
    label_column : str or None, default "Label"
        Read as labels when the file has it (for evaluation); None ignores labels.

    Yields
    ------
    features : DataFrame, identifiers : DataFrame, labels : ndarray of str or None

    Raises
    ------
    FlowInputError
        If the file lacks feature columns the model needs (all are named) or holds a non-numeric
        value in one (the column and value are named).
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    path = Path(path)
    if is_cicids2017_model(model):
        yield from iter_flow_batches(path, batch_rows)
        return
    names = [str(c) for c in getattr(model, "feature_names_in_", ())]
    if not names:
        raise ValueError("the model was fitted without feature names; refit it on a DataFrame")
    columns = read_columns(path)
    by_name = {normalize_column_name(c): c for c in columns}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise FlowInputError(
            f"{path}: {len(missing)} feature column(s) the model needs are missing: {missing}",
            missing=missing,
        )
    label = None
    if label_column is not None:
        key = normalize_column_name(label_column).casefold()
        label = next((c for c in columns if normalize_column_name(c).casefold() == key), None)
    raw_features = [by_name[n] for n in names]
    others = [c for c in columns if c not in set(raw_features) and c != label]

    for batch in _iter_raw(path, columns, raw_features, label, batch_rows):
        X = np.empty((batch.num_rows, len(names)), dtype=np.float32)
        for j, raw in enumerate(raw_features):
            X[:, j] = batch.column(raw).to_numpy(zero_copy_only=False)
        X[~np.isfinite(X)] = 0.0  # the data layer's default "zero" policy
        identifiers = batch.select(others).to_pandas()
        identifiers.columns = [normalize_column_name(c) for c in others]
        labels = None
        if label is not None:
            labels = batch.column(label).to_pandas().astype(str).str.strip().to_numpy(object)
        yield pd.DataFrame(X, columns=names, copy=False), identifiers, labels


def _iter_raw(
    path: Path, columns: list[str], features: list[str], label: str | None, batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Record batches of a generic table, feature columns parsed as float32."""
    if path.suffix.lower() == ".csv":
        types: dict[str, pa.DataType] = {c: pa.float32() for c in features}
        if label is not None:
            types[label] = pa.string()
        read = pacsv.ReadOptions(
            column_names=columns, skip_rows=1, block_size=_csv_block_size(path, batch_rows)
        )
        convert = pacsv.ConvertOptions(column_types=types, null_values=_NULL_VALUES)
        try:
            reader = pacsv.open_csv(path, read_options=read, convert_options=convert)
            for batch in reader:
                yield batch
        except pa.ArrowInvalid as error:
            match = _ARROW_BAD_VALUE.search(str(error))
            if match is None:
                raise ValueError(f"{path}: could not parse the file ({error})") from None
            column = normalize_column_name(columns[int(match.group(1))])
            raise FlowInputError(
                f"{path}: non-numeric value {match.group(2)!r} in feature column {column!r}",
                non_numeric={column: repr(match.group(2))},
            ) from None
        return
    handle = pq.ParquetFile(path)
    for batch in handle.iter_batches(batch_size=batch_rows):
        arrays = []
        for name in batch.schema.names:
            col = batch.column(name)
            if name in features and col.type != pa.float32():
                col = _to_float32(col, path, name)
            arrays.append(col)
        yield pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _to_float32(col: pa.Array, path: Path, name: str) -> pa.Array:
    column = normalize_column_name(name)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return col.cast(pa.float32(), safe=False)
    values = col.to_pandas()
    parsed = pd.to_numeric(values, errors="coerce")
    bad = values[parsed.isna() & values.notna()]
    if len(bad) or not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        example = bad.iloc[0] if len(bad) else str(col.type)
        raise FlowInputError(
            f"{path}: non-numeric value {example!r} in feature column {column!r}",
            non_numeric={column: repr(example)},
        )
    return pa.array(parsed.to_numpy(dtype=np.float32, na_value=np.nan), type=pa.float32())


def _csv_block_size(path: Path, batch_rows: int) -> int:
    """A CSV block of about ``batch_rows`` rows, from the mean length of the first lines."""
    with path.open("rb") as handle:
        head = handle.read(1 << 16)
    bytes_per_row = max(len(head) / max(head.count(b"\n"), 1), 16)
    return int(min(max(bytes_per_row * batch_rows, 1 << 16), 1 << 30))


class AtomicTableWriter:
    """Append DataFrames to a Parquet or CSV file that appears only on :meth:`commit`.

    The format follows the suffix (``.csv``; ``.parquet`` or ``.pq``). Rows go to a temporary
    file in the same folder, renamed over ``path`` on commit; :meth:`abort` deletes it. The first
    frame fixes the columns and types; later frames must have the same columns.
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in (".csv", ".parquet", ".pq"):
            raise ValueError(
                f"output {self.path}: unsupported suffix {self.path.suffix!r}; use .parquet or .csv"
            )
        self.kind = "csv" if suffix == ".csv" else "parquet"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        os.close(fd)
        self._tmp = Path(tmp)
        self._writer: Any = None
        self._schema: pa.Schema | None = None
        self.rows = 0

    def write(self, frame: pd.DataFrame, *, source: object = "input") -> None:
        """Append ``frame``; ``source`` names the input in errors."""
        table = pa.Table.from_pandas(frame, preserve_index=False)
        if self._schema is None:
            # A column that is all-null in the first batch gets a string type, so that later
            # batches holding values still fit.
            fields = [
                pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f
                for f in table.schema
            ]
            self._schema = pa.schema(fields)
            if self.kind == "parquet":
                self._writer = pq.ParquetWriter(self._tmp, self._schema, compression="zstd")
            else:
                self._writer = pacsv.CSVWriter(str(self._tmp), self._schema)
        if table.schema.names != self._schema.names:
            raise ValueError(
                f"{source}: its columns {table.schema.names} differ from the first input's "
                f"{self._schema.names}; score files with different columns separately"
            )
        try:
            table = table.cast(self._schema)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ValueError(
                f"{source}: column types differ from the first input's ({error})"
            ) from None
        self._writer.write_table(table)
        self.rows += table.num_rows

    def commit(self) -> Path:
        """Close the file and rename it into place; an input with no rows writes no rows."""
        if self._writer is None:
            empty = pd.DataFrame({c: pd.Series(dtype=object) for c in OUTPUT_COLUMNS})
            self.write(empty)
        self._writer.close()
        publish(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; ``path`` is left untouched."""
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # noqa: BLE001 - already failing; the temporary file goes anyway
                pass
        self._tmp.unlink(missing_ok=True)


def score_files(
    model: LatentSculpting,
    inputs: PathLike | Sequence[PathLike],
    output: PathLike,
    *,
    batch_rows: int = 65_536,
    label_column: str | None = None,
    benign_label: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score CSV/Parquet flow files into one Parquet or CSV file, in constant memory.

    Parameters
    ----------
    model : LatentSculpting
        A fitted detector (with feature names).
    inputs : path or list of paths
        Files or folders (every ``*.csv`` / ``*.parquet`` inside).
    output : path
        ``.parquet`` (or ``.pq``) or ``.csv``; written to a temporary name, then renamed.
    batch_rows : int, default 65536
        Rows scored at a time; memory is bounded by a few batches.
    label_column : str, optional
        Label column to copy to the output when an input has it; default the model's training
        label column (``metadata_``), else ``"Label"``.
    benign_label : str, optional
        Benign label, for the flagged share per class in the summary; default the model's.
    progress : bool, default True
        A tqdm progress bar (rows and rows/s) on stderr.

    Returns
    -------
    dict
        ``rows``, ``flagged``, ``flagged_share``, ``flagged_by`` (counts per stage), ``files``,
        ``output``, ``seconds``, ``rows_per_second`` and, when inputs are labelled,
        ``labelled`` (rows and flagged counts of benign and attack rows).

    Raises
    ------
    FileNotFoundError, ValueError
        For a missing input, an input without the model's feature columns (named), a
        non-numeric feature value, or an unsupported output suffix. The output is then not
        written.
    """
    files = list_flow_files(inputs)
    training = (getattr(model, "metadata_", None) or {}).get("training_data", {})
    if label_column is None:
        label_column = training.get("label_column") or LABEL_COLUMN
    if benign_label is None:
        benign_label = training.get("benign_label") or BENIGN
    total = _known_rows(files)
    multi = len(files) > 1
    started = time.perf_counter()
    stats = {"rows": 0, "flagged": 0, "stage1": 0, "stage2": 0}
    labelled = {"benign_rows": 0, "benign_flagged": 0, "attack_rows": 0, "attack_flagged": 0}
    any_labels = False
    writer = AtomicTableWriter(output)
    bar = tqdm(total=total, unit="rows", unit_scale=True, desc="scoring", disable=not progress)
    try:
        for path in files:
            for features, identifiers, labels in iter_scoring_batches(
                model, path, batch_rows, label_column=label_column
            ):
                if len(features) == 0:
                    continue
                scored = score_frame(model, features, identifiers)
                if labels is not None:
                    scored[label_column] = labels
                    any_labels = True
                    benign = np.asarray(labels, dtype=object) == benign_label
                    flagged = scored["is_attack"].to_numpy()
                    labelled["benign_rows"] += int(benign.sum())
                    labelled["benign_flagged"] += int((flagged & benign).sum())
                    labelled["attack_rows"] += int((~benign).sum())
                    labelled["attack_flagged"] += int((flagged & ~benign).sum())
                if multi:
                    scored.insert(0, "source_file", path.name)
                writer.write(scored, source=path)
                stats["rows"] += len(scored)
                stats["flagged"] += int(scored["is_attack"].sum())
                stats["stage1"] += int((scored["flagged_by"] == "stage1").sum())
                stats["stage2"] += int((scored["flagged_by"] == "stage2").sum())
                bar.update(len(scored))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    summary: dict[str, Any] = {
        "rows": stats["rows"],
        "flagged": stats["flagged"],
        "flagged_share": stats["flagged"] / stats["rows"] if stats["rows"] else 0.0,
        "flagged_by": {"stage1": stats["stage1"], "stage2": stats["stage2"]},
        "files": [str(f) for f in files],
        "output": str(Path(output)),
        "seconds": seconds,
        "rows_per_second": stats["rows"] / seconds if seconds > 0 else 0.0,
    }
    if any_labels:
        summary["labelled"] = {
            **labelled,
            "label_column": label_column,
            "benign_label": benign_label,
        }
    return summary


def _known_rows(files: list[Path]) -> int | None:
    """Total rows when every input is Parquet (its footer says); None for CSV (unknown)."""
    total = 0
    for f in files:
        if f.suffix.lower() != ".parquet":
            return None
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except (pa.ArrowInvalid, OSError):
            return None
    return total
