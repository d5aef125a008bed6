"""Scoring flow archives on a Ray cluster: the ``--engine ray`` of ``sculpt score``.

Flow files (CIC-IDS-2017 CSV or Parquet, original or improved release) are read with Ray Data,
scored by :func:`~latent_sculpting.scoring.score_frame` in ``map_batches`` on a pool of actors
that each load the model once, and written as one Parquet shard per input file with the columns
of the local engine (identifier columns, then ``score``, ``p_value``, ``is_attack``,
``flagged_by``). See ``docs/ray.md``.

The model travels to the workers as the bytes of its safetensors file (see
:mod:`latent_sculpting.persistence`), never as a pickled estimator.

Failure semantics
-----------------
* Every input file is checked on the driver first (Parquet footer or CSV header, then the
  CIC-IDS-2017 schema); a file that fails is reported by name and skipped, or, with
  ``fail_fast``, stops the run with a :class:`ValueError` naming it.
* Files are read together when they share a format and a header. If such a group fails while
  running (a file whose data pages are corrupt behind a valid footer), its unfinished files are
  rerun one by one, so only the bad file is reported.
* Actors are restarted after a crash and their batches retried (``max_restarts`` /
  ``max_task_retries``); an exception raised by the scoring code itself is not retried.
* Each shard is written to a temporary name and renamed when its file is complete, so a rerun
  skips shards that exist and never sees a half-written one.

References
----------
Chhetri et al., "Latent Sculpting for Zero-Shot Generalization", arXiv:2512.22179.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .data.cleaning import engineered_features, replace_nonfinite
from .data.loading import list_flow_files
from .data.schema import (
    CANONICAL_FEATURES,
    ENGINEERED_FEATURES,
    IDENTIFIER_COLUMNS,
    LABEL_COLUMN,
    canonical_label,
    detect_schema,
    normalize_column_name,
)

__all__ = ["canonical_batch", "score_with_ray"]

PathLike = str | Path

#: Name of the row-provenance column Ray Data adds (``include_paths=True``); never written.
_PATH_COLUMN = "path"
#: Column of the actor's output naming a file whose rows could not be scored; never written.
_ERROR_COLUMN = "_sculpt_error"
#: Summary of the last run, written next to the shards.
SUMMARY_FILE = "_ray_summary.json"
#: Bounded retries: a worker that dies is restarted and its batch retried this many times.
MAX_RESTARTS = 3
MAX_TASK_RETRIES = 3

_IDENTIFIER_KEYS = {c.casefold() for c in IDENTIFIER_COLUMNS}
# As in data.loading: spellings of missing values that must parse as floats in CSV files.
_NULL_VALUES = ["", "NaN", "nan", "NAN", "NA", "N/A", "null", "NULL", "None"]
_FEATURE_NAMES = list(CANONICAL_FEATURES) + list(ENGINEERED_FEATURES)


# --------------------------------------------------------------------------------------------
# Raw batch -> canonical features (the same steps as data.iter_flow_batches)


@dataclass(frozen=True)
class _Layout:
    """Raw columns of one file layout: which hold features, which identifiers."""

    schema: str
    features: tuple[str, ...]  # raw names, in canonical order
    identifiers: tuple[str, ...]  # raw names, in file order
    label: str | None  # raw name of the label column, if any


def _layout(columns: Sequence[str], source: object) -> _Layout:
    schema, rename = detect_schema(columns, source=source)
    by_canonical = {v: k for k, v in rename.items()}
    features = tuple(by_canonical[name] for name in CANONICAL_FEATURES)
    identifiers = tuple(
        c
        for c in columns
        if c != _PATH_COLUMN and normalize_column_name(c).casefold() in _IDENTIFIER_KEYS
    )
    key = LABEL_COLUMN.casefold()
    label = next((c for c in columns if normalize_column_name(c).casefold() == key), None)
    return _Layout(schema, features, identifiers, label)


def _label_text(raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, bytes):
        # The original release is cp1252 (web-attack dash 0x96); latin-1 decodes anything.
        for encoding in ("utf-8", "cp1252", "latin-1"):
            try:
                raw = raw.decode(encoding)
                break
            except UnicodeDecodeError:
                continue
    text = str(raw)
    return canonical_label(text) or text.strip()


def _labels(column: pa.ChunkedArray) -> np.ndarray:
    """Canonical labels, mapping only the few distinct values (as the data layer does)."""
    encoded = pc.dictionary_encode(column).combine_chunks()
    dictionary = encoded.dictionary.to_pylist()
    mapped = np.array([_label_text(v) for v in dictionary] + [""], dtype=object)
    return mapped[encoded.indices.fill_null(len(dictionary)).to_numpy(zero_copy_only=False)]


def canonical_batch(
    table: pa.Table, *, source: object = "<batch>"
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray | None]:
    """Turn a raw CIC-IDS-2017 batch into canonical features and identifiers.

    Does what :func:`~latent_sculpting.data.iter_flow_batches` does to each batch with its
    defaults (``nonfinite="zero"``, ``engineered=True``, no row dropped), so scores match the
    local engine exactly.

    Parameters
    ----------
    table : pyarrow.Table
        Rows as read from one file layout (original or improved release), raw column names.
    source : object
        Named in error messages.

    Returns
    -------
    features : DataFrame, float32
        The 76 canonical features and the two engineered ones.
    identifiers : DataFrame
        Identifier columns under their normalised names (may have no columns).
    labels : ndarray of object or None
        Canonical labels (unknown ones stripped, missing ones ``""``), or None without a
        ``Label`` column.

    Raises
    ------
    ValueError
        If the columns match neither release.
    """
    layout = _layout(table.column_names, source)
    n = table.num_rows
    X = np.empty((n, len(_FEATURE_NAMES)), dtype=np.float32)
    for j, raw in enumerate(layout.features):
        X[:, j] = table.column(raw).to_numpy()
    col = {name: j for j, name in enumerate(_FEATURE_NAMES)}
    engineered_features(
        X[:, col["Total Length of Fwd Packets"]],
        X[:, col["Total Fwd Packets"]],
        X[:, col["Flow Duration"]],
        out=X[:, len(CANONICAL_FEATURES) :],
    )
    replace_nonfinite(X, _FEATURE_NAMES, policy="zero")
    identifiers = table.select(list(layout.identifiers)).to_pandas()
    identifiers.columns = [normalize_column_name(c) for c in identifiers.columns]
    if not layout.identifiers:
        identifiers = pd.DataFrame(index=pd.RangeIndex(n))
    labels = None if layout.label is None else _labels(table.column(layout.label))
    return pd.DataFrame(X, columns=_FEATURE_NAMES, copy=False), identifiers, labels


# --------------------------------------------------------------------------------------------
# Input files


@dataclass
class _Input:
    path: Path
    shard: str  # output file name
    fmt: str = ""  # "parquet" or "csv"
    columns: tuple[str, ...] = ()
    layout: _Layout | None = None


def _resolve_inputs(inputs: PathLike | Sequence[PathLike]) -> list[Path]:
    """Folders, files and glob patterns to a sorted, de-duplicated list of files."""
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        text = str(item)
        if not Path(text).expanduser().exists() and glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text)))
            if not matches:
                raise FileNotFoundError(f"no file matches the pattern {text!r}")
            files.extend(list_flow_files(matches))
        else:
            files.extend(list_flow_files(text))
    seen: set[Path] = set()
    unique = []
    for f in files:
        key = f.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(key)
    return unique


def _shard_names(files: list[Path]) -> list[str]:
    """``<stem>.parquet``; stems shared by several inputs get a short hash of the full path."""
    stems = [f.stem for f in files]
    names = []
    for f, stem in zip(files, stems, strict=True):
        if stems.count(stem) > 1:
            stem = f"{stem}-{hashlib.sha1(str(f).encode()).hexdigest()[:8]}"
        names.append(f"{stem}.parquet")
    return names


def _inspect(item: _Input) -> None:
    """Read a file's footer or header and check its schema; raise ValueError naming the file."""
    path = item.path
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: file is empty")
    if path.suffix.lower() == ".csv":
        item.fmt = "csv"
        with path.open("rb") as fh:
            line = fh.readline()
        if not line.strip():
            raise ValueError(f"{path}: file is empty (no header line)")
        raw = line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r\n")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("cp1252", errors="replace")
        item.columns = tuple(next(csv.reader([text])))
    else:
        item.fmt = "parquet"
        try:
            metadata = pq.read_metadata(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ValueError(f"{path}: not a readable Parquet file ({exc})") from None
        if metadata.num_rows == 0:
            raise ValueError(f"{path}: file has no data rows")
        item.columns = tuple(metadata.schema.to_arrow_schema().names)
    item.layout = _layout(item.columns, path)


# --------------------------------------------------------------------------------------------
# The actor


def _label_column(model: Any) -> str:
    """Output name of the label column, as the local engine names it."""
    training = (getattr(model, "metadata_", None) or {}).get("training_data", {})
    return training.get("label_column") or LABEL_COLUMN


class _Scorer:
    """Ray Data actor: loads the model once, scores raw batches of one file layout."""

    def __init__(self, model_ref: list[Any]) -> None:
        import ray

        from .estimator import LatentSculpting
        from .scoring import score_frame

        payload = model_ref[0]
        data = ray.get(payload) if isinstance(payload, ray.ObjectRef) else payload
        with tempfile.TemporaryDirectory(prefix="sculpt-model-") as tmp:
            path = Path(tmp) / "model.sculpt"
            path.write_bytes(data)
            self.model = LatentSculpting.load(path)
        self._score_frame = score_frame
        self.label_column = _label_column(self.model)

    def __call__(self, batch: pa.Table) -> pa.Table:
        paths = batch.column(_PATH_COLUMN).to_numpy(zero_copy_only=False)
        # Batches may span consecutive files of the same layout: score each file's run of rows.
        starts = np.flatnonzero(np.r_[True, paths[1:] != paths[:-1]])
        stops = np.r_[starts[1:], len(paths)]
        parts = []
        for start, stop in zip(starts, stops, strict=True):
            rows = batch.slice(start, stop - start)
            try:
                features, identifiers, labels = canonical_batch(
                    rows.drop_columns([_PATH_COLUMN]), source=paths[start]
                )
                out = self._score_frame(self.model, features, identifiers)
                if labels is not None:
                    out[self.label_column] = labels
            except Exception as exc:  # noqa: BLE001 - reported for this file only
                # A bad value fails its own file, not the batch's other files nor the run.
                message = f"{paths[start]}: {type(exc).__name__}: {exc}"
                parts.append(pa.table({_PATH_COLUMN: [paths[start]], _ERROR_COLUMN: [message]}))
                continue
            table = pa.Table.from_pandas(out, preserve_index=False)
            parts.append(table.append_column(_PATH_COLUMN, rows.column(_PATH_COLUMN)))
        return pa.concat_tables(parts, promote_options="permissive")


# --------------------------------------------------------------------------------------------
# Driver


class _ShardWriter:
    """Writes one input file's scores to ``<shard>.tmp-*`` and renames it when complete."""

    def __init__(self, output_dir: Path, name: str) -> None:
        self.final = output_dir / name
        self.tmp = output_dir / f".{name}.tmp-{os.getpid()}"
        self.writer: pq.ParquetWriter | None = None
        self.rows = 0
        self.flagged = 0

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, table.schema)
        elif table.schema != self.writer.schema:
            table = table.cast(self.writer.schema)
        self.writer.write_table(table)
        self.rows += table.num_rows
        self.flagged += int(np.count_nonzero(table.column("is_attack").to_numpy()))

    def commit(self) -> None:
        if self.writer is None:
            raise ValueError(f"{self.final.name}: input file produced no rows")
        self.writer.close()
        os.replace(self.tmp, self.final)

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.tmp.unlink(missing_ok=True)


def _dataset(group: list[_Input], batch_rows: int) -> Any:
    import ray.data

    paths = [str(item.path) for item in group]
    layout = _layout(group[0].columns, group[0].path)
    wanted = list(layout.features) + list(layout.identifiers)
    types: dict[str, pa.DataType] = {raw: pa.float32() for raw in layout.features}
    if layout.label is not None:
        wanted.append(layout.label)
        types[layout.label] = pa.binary()
    if group[0].fmt == "parquet":
        return ray.data.read_parquet(paths, columns=wanted, include_paths=True)
    # Same parse as data.loading: features straight to float32, "Infinity"/"NaN" as floats,
    # the label column (cp1252 in the original release) not read at all.
    return ray.data.read_csv(
        paths,
        include_paths=True,
        read_options=pacsv.ReadOptions(
            column_names=list(group[0].columns),
            skip_rows=1,
            block_size=int(min(max(batch_rows * 300, 1 << 20), 1 << 30)),
        ),
        convert_options=pacsv.ConvertOptions(
            column_types=types,
            include_columns=wanted,
            null_values=_NULL_VALUES,
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )


def _run_group(
    group: list[_Input],
    output_dir: Path,
    model_ref: Any,
    *,
    num_workers: int,
    batch_rows: int,
    done: dict[str, dict],
    failed: dict[str, str],
    fail_fast: bool,
    log: Any,
) -> None:
    """Score one group of same-layout files.

    Committed shards are recorded in ``done``, files whose rows could not be scored in
    ``failed``; an exception means the group failed as a whole (e.g. a file could not be read).
    """
    options = {
        "fn_constructor_kwargs": {"model_ref": [model_ref]},
        "batch_size": batch_rows,
        "batch_format": "pyarrow",
        "concurrency": num_workers,
        "num_cpus": 1,
    }
    retries = {"max_restarts": MAX_RESTARTS, "max_task_retries": MAX_TASK_RETRIES}
    try:
        with warnings.catch_warnings():
            # Ray 2.4x-2.63 take actor options as extra keyword arguments and warn that they
            # will go in 2.64, with no named replacement yet.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            ds = _dataset(group, batch_rows).map_batches(_Scorer, **options, **retries)
    except TypeError:
        # Newer Ray: its defaults restart dead actors and retry their batches.
        ds = _dataset(group, batch_rows).map_batches(_Scorer, **options)
    by_path = {str(item.path): item for item in group}
    writers: dict[str, _ShardWriter] = {}
    current: str | None = None
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            paths = batch.column(_PATH_COLUMN).to_numpy(zero_copy_only=False)
            errors = (
                batch.column(_ERROR_COLUMN).to_pylist()
                if _ERROR_COLUMN in batch.column_names
                else None
            )
            starts = np.flatnonzero(np.r_[True, paths[1:] != paths[:-1]])
            stops = np.r_[starts[1:], len(paths)]
            for start, stop in zip(starts, stops, strict=True):
                path = str(paths[start])
                if path in failed:
                    continue
                if path != current and current in writers:
                    # Order is preserved, so the previous file is complete.
                    _commit(writers.pop(current), by_path[current], done, log)
                current = path
                if errors is not None and errors[start] is not None:
                    if path in writers:
                        writers.pop(path).abort()
                    _record_failure(by_path[path], errors[start], failed, fail_fast, log)
                    continue
                if path not in writers:
                    writers[path] = _ShardWriter(output_dir, by_path[path].shard)
                rows = batch.slice(start, stop - start).drop_columns([_PATH_COLUMN])
                if errors is not None:
                    rows = rows.drop_columns([_ERROR_COLUMN])
                writers[path].write(rows)
        for path in list(writers):
            _commit(writers.pop(path), by_path[path], done, log)
    finally:
        for writer in writers.values():
            writer.abort()


def _commit(writer: _ShardWriter, item: _Input, done: dict[str, dict], log: Any) -> None:
    writer.commit()
    done[str(item.path)] = {"rows": writer.rows, "flagged": writer.flagged}
    log(f"scored {item.path.name}: {writer.rows:,} rows, {writer.flagged:,} flagged")


def _error_text(exc: BaseException) -> str:
    # Ray wraps worker exceptions; keep the innermost message, which names the file.
    cause = exc
    while getattr(cause, "cause", None) is not None and cause.cause is not cause:
        cause = cause.cause
    text = str(cause).strip() or type(cause).__name__
    return text.splitlines()[-1] if len(text) > 2000 else text


def score_with_ray(
    model_path: PathLike,
    inputs: PathLike | Sequence[PathLike],
    output_dir: PathLike,
    *,
    address: str | None = None,
    num_workers: int | None = 2,
    batch_rows: int | None = 65536,
    fail_fast: bool = False,
    progress: bool = True,
) -> dict:
    """Score flow files on Ray, writing one Parquet shard per input file.

    Parameters
    ----------
    model_path : path
        Model file written by :meth:`LatentSculpting.save`; its bytes are shipped to the
        workers.
    inputs : path, glob pattern, or list of them
        Folders (every ``*.csv`` / ``*.parquet`` directly inside), files or patterns. On a
        cluster they must be readable at the same path from the driver and every worker
        (shared file system).
    output_dir : path
        Folder for the shards (created); shard ``<stem>.parquet`` holds the scores of input
        ``<stem>.csv`` / ``<stem>.parquet`` in input row order, with the columns of the local
        engine for one file: identifiers, ``score``, ``p_value``, ``is_attack``, ``flagged_by``
        and, when the input is labelled, the canonical label.
    address : str, optional
        Ray cluster to join (``"auto"``, ``"ray://HEAD:10001"``, ``"HEAD:6379"``). None starts a
        local Ray instance with ``num_workers`` CPUs, bound to 127.0.0.1, and stops it at the
        end. An already initialised Ray is used as is.
    num_workers : int, default 2
        Scoring actors (one CPU each), each loading the model once; None means 2. A local
        instance gets ``num_workers + 1`` CPUs (one for the read tasks).
    batch_rows : int, default 65536
        Rows per scoring batch.
    fail_fast : bool, default False
        Stop at the first unreadable or failing input file instead of reporting it and going on.
    progress : bool, default True
        Show Ray Data progress bars and one line per finished shard (on stderr).

    Returns
    -------
    dict
        ``files`` (inputs found), ``files_scored``, ``rows``, ``rows_flagged``, ``failed``
        (``{path: error message}``), ``shards_written``, ``shards_skipped`` (already present),
        ``output_dir`` and ``seconds``. Also written to ``output_dir/_ray_summary.json``.

    Raises
    ------
    ImportError
        If Ray is not installed (``pip install "latent-sculpting[ray]"``).
    ValueError
        If ``num_workers`` or ``batch_rows`` < 1, or, with ``fail_fast``, an input file fails.
    FileNotFoundError
        If the model or an input path does not exist.
    """
    start_time = time.perf_counter()
    num_workers = 2 if num_workers is None else num_workers
    batch_rows = 65536 if batch_rows is None else batch_rows
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"model file not found: {model_path}")
    if address is None and "ray" not in sys.modules:
        # A local instance binds to the loopback address only (Ray reads this at import).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError('the Ray engine needs Ray: pip install "latent-sculpting[ray]"') from exc

    def log(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    # Fail on a bad model here, not in every actor.
    from .estimator import LatentSculpting

    LatentSculpting.load(model_path)
    files = _resolve_inputs(inputs)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    items = [_Input(f, name) for f, name in zip(files, _shard_names(files), strict=True)]

    failed: dict[str, str] = {}
    skipped: list[_Input] = []
    pending: list[_Input] = []
    for item in items:
        if (output_dir / item.shard).exists():
            skipped.append(item)
            continue
        try:
            _inspect(item)
        except (ValueError, OSError) as exc:
            if fail_fast:
                raise ValueError(f"input file failed: {exc}") from exc
            failed[str(item.path)] = str(exc)
            log(f"skipping {item.path}: {exc}")
            continue
        pending.append(item)
    if skipped:
        log(f"{len(skipped)} shard(s) already in {output_dir}, skipped")

    groups: dict[tuple, list[_Input]] = {}
    for item in pending:
        groups.setdefault((item.fmt, item.columns), []).append(item)

    done: dict[str, dict] = {}
    started = False
    context = None
    saved: tuple[bool, bool] | None = None
    try:
        if pending:
            if not ray.is_initialized():
                if address is None:
                    # Ray's usage statistics would phone home; opt out unless the user opted in.
                    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
                    # One CPU per scoring actor plus one for the read tasks: actors hold their
                    # CPU for the whole run, and reads starved of a CPU would hang it.
                    ray.init(
                        num_cpus=num_workers + 1,
                        include_dashboard=False,
                        log_to_driver=progress,
                    )
                else:
                    ray.init(address=address, log_to_driver=progress)
                started = True
            cpus = ray.cluster_resources().get("CPU", 0)
            if cpus <= num_workers:
                log(
                    f"warning: the cluster has {cpus:g} CPUs and num_workers={num_workers} "
                    "actors take one each; reads need a free CPU (unless the cluster autoscales)"
                )
            context = ray.data.DataContext.get_current()
            saved = (context.execution_options.preserve_order, context.enable_progress_bars)
            # Input order must survive so each file's rows arrive together and in order.
            context.execution_options.preserve_order = True
            context.enable_progress_bars = progress
            model_ref = ray.put(model_path.read_bytes())

            def run(files: list) -> None:
                _run_group(
                    files,
                    output_dir,
                    model_ref,
                    num_workers=num_workers,
                    batch_rows=batch_rows,
                    done=done,
                    failed=failed,
                    fail_fast=fail_fast,
                    log=log,
                )
                _no_rows(files, done, failed, fail_fast, log)

            for group in groups.values():
                try:
                    run(group)
                    continue
                except _FailFast:
                    raise
                except Exception as exc:  # noqa: BLE001 - isolated below, file by file
                    if len(group) == 1:
                        _record_failure(group[0], exc, failed, fail_fast, log)
                        continue
                    log(f"a group of {len(group)} files failed ({_error_text(exc)}); isolating")
                for item in group:
                    if str(item.path) in done or str(item.path) in failed:
                        continue
                    try:
                        run([item])
                    except _FailFast:
                        raise
                    except Exception as exc:  # noqa: BLE001 - reported by file name
                        _record_failure(item, exc, failed, fail_fast, log)
    finally:
        if context is not None and saved is not None:
            context.execution_options.preserve_order, context.enable_progress_bars = saved
        if started:
            ray.shutdown()

    summary = {
        "files": len(items),
        "files_scored": len(done),
        "rows": sum(d["rows"] for d in done.values()),
        "rows_flagged": sum(d["flagged"] for d in done.values()),
        "failed": failed,
        "shards_written": sorted(item.shard for item in pending if str(item.path) in done),
        "shards_skipped": sorted(item.shard for item in skipped),
        "output_dir": str(output_dir),
        "seconds": round(time.perf_counter() - start_time, 3),
    }
    (output_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


class _FailFast(ValueError):
    """Raised through the group-isolation handlers when ``fail_fast`` is set."""


def _no_rows(
    group: list[_Input], done: dict[str, dict], failed: dict[str, str], fail_fast: bool, log: Any
) -> None:
    """A file that ran without error but gave no rows has a header and no data."""
    for item in group:
        if str(item.path) not in done and str(item.path) not in failed:
            _record_failure(
                item, ValueError("file has a header but no data rows"), failed, fail_fast, log
            )


def _record_failure(
    item: _Input, exc: BaseException | str, failed: dict[str, str], fail_fast: bool, log: Any
) -> None:
    message = exc if isinstance(exc, str) else _error_text(exc)
    if fail_fast:
        raise _FailFast(f"{item.path}: scoring failed: {message}")
    failed[str(item.path)] = message
    log(f"failed {item.path}: {message}")
