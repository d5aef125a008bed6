"""Scoring flow files of any size and syntax in one process, in constant memory, into one file.

Each input is read batch by batch (:func:`latent_sculpting.data.iter_flow_batches`: the
file's syntax, then the model's :class:`~latent_sculpting.io.flowspec.FlowSpec`), scored by a
:class:`~latent_sculpting.serve.scoring.Scorer` and appended to a temporary Parquet or CSV file that
is renamed into place only when every input has been scored: the output is complete or absent.
The drift report of the run (:mod:`latent_sculpting.monitor.drift`) is written beside it, as
``<output>.drift.json``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from latent_sculpting.atomic import write_json
from latent_sculpting.io.cleaning import CleaningReport
from latent_sculpting.io.readers import list_flow_files, sniff
from latent_sculpting.io.runs import order_by_start
from latent_sculpting.io.table import iter_flow_batches
from latent_sculpting.serve.outputs import (
    TABLE_SUFFIXES,
    AtomicTableWriter,
    check_output,
    terminate_cleanly,
)
from latent_sculpting.serve.scoring import Scorer, drift_monitor, drift_summary, new_run

__all__ = ["DRIFT_SUFFIX", "drift_path", "score_file_into", "score_files"]

#: Appended to the output's name for the drift report's file.
DRIFT_SUFFIX = ".drift.json"

PathLike = str | Path


def score_files(
    model: Any,
    inputs: PathLike | Sequence[PathLike],
    output: PathLike,
    *,
    batch_rows: int = 65_536,
    progress: bool = True,
    explain: bool = True,
    drift: bool = True,
    on_batch: Callable[[Any, Path], None] | None = None,
) -> dict[str, Any]:
    """Score flow files into one Parquet or CSV file, in constant memory.

    Parameters
    ----------
    model : LatentSculpting
        A fitted detector; its ``spec_`` says how records become features.
    inputs : path or list of paths
        Files or folders of any syntax :mod:`latent_sculpting.io.readers` reads. With more than
        one file, a first column ``source_file`` names each row's file, unless the records
        carry a ``source_file`` identifier of their own (``sculpt extract`` output). For a
        model with context features the files are one run: scored in the order of their
        first flows, one context state carried across them (a file that starts before the
        flows already scored is refused, named).
    output : path
        ``.parquet`` (or ``.pq``) or ``.csv``; written to a temporary name, then renamed.
        Checked before any work: not a folder, not an input, in a writable folder.
    batch_rows : int, default 65536
        Rows scored at a time; memory is bounded by a few batches.
    progress : bool, default True
        A tqdm progress bar (rows and rows/s) on stderr.
    explain : bool, default True
        An ``explanation`` column for flagged flows
        (:class:`~latent_sculpting.serve.scoring.Scorer`),
        when the model holds a benign profile.
    drift : bool, default True
        Compare the scored flows with the model's benign training traffic and write the drift
        report beside the output (:func:`drift_path`), once the output is in place.
    on_batch : callable, optional
        Called with each scored frame (as written, before ``source_file`` is added) and its
        input file, in output order (the incidents of ``sculpt score --incidents``).

    Returns
    -------
    dict
        ``rows``, ``flagged``, ``flagged_share``, ``flagged_by``, ``files``, ``output``,
        ``seconds``, ``rows_per_second``, ``explained`` (whether the output has an
        ``explanation`` column), ``drift`` (the report as
        :meth:`DriftReport.to_dict <latent_sculpting.monitor.drift.DriftReport.to_dict>` gives it,
        plus
        ``counted``; None without ``drift`` or for a model file without drift bins),
        ``drift_file``, ``cleaning`` (:meth:`CleaningReport.to_dict
        <latent_sculpting.io.cleaning.CleaningReport.to_dict>`: the missing and non-finite values
        replaced by 0, per column) and, when inputs are labelled, ``labelled``.

    Raises
    ------
    FileNotFoundError, FlowInputError, ValueError
        For a missing input, a file without the model's columns (named), a bad value (file,
        line and column named), or a bad output path. The output is then not written.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    files = list_flow_files(inputs)
    output = check_output(output, inputs=files, suffixes=TABLE_SUFFIXES)
    scorer = Scorer(model, explain=explain, drift=drift_monitor(model) if drift else None)
    context = scorer.context
    if context is not None:
        files = order_by_start(files, scorer.spec.format)
    report = CleaningReport()
    started = time.perf_counter()
    bar = tqdm(
        total=_known_rows(files), unit="rows", unit_scale=True, desc="scoring", disable=not progress
    )
    try:
        with (
            terminate_cleanly(),
            AtomicTableWriter(
                output, empty_columns=scorer.output_columns, generated=scorer.output_columns
            ) as out,
        ):
            for path in files:
                for scored in _scored_batches(scorer, path, batch_rows, report, context):
                    if on_batch is not None:
                        on_batch(scored, path)
                    # Records that name their source already (sculpt extract's output) keep
                    # their own, finer source_file.
                    if len(files) > 1 and "source_file" not in scored.columns:
                        scored.insert(0, "source_file", path.name)
                    out.write(scored, source=path)
                    bar.update(len(scored))
    finally:
        bar.close()
    seconds = time.perf_counter() - started
    summary = scorer.tally.to_dict()
    if "labelled" in summary:
        summary["labelled"]["label_column"] = scorer.spec.label_column
        summary["labelled"]["benign_label"] = scorer.spec.benign_label
    rows = summary["rows"]
    summary.update(
        files=[str(f) for f in files],
        output=str(output),
        seconds=seconds,
        rows_per_second=rows / seconds if seconds > 0 else 0.0,
        explained=scorer.explainer is not None,
        drift=None,
        drift_file=None,
        cleaning=report.to_dict(),
    )
    if scorer.drift is not None:
        summary["drift"] = drift_summary(
            scorer.drift, rows=rows, labelled_rows=scorer.tally.labelled_rows
        )
        summary["drift_file"] = str(write_json(summary["drift"], drift_path(output)))
    return summary


def drift_path(output: PathLike) -> Path:
    """Where the drift report of a run into ``output`` goes: ``<output>.drift.json``."""
    output = Path(output)
    return output.with_name(output.name + DRIFT_SUFFIX)


def score_file_into(scorer: Scorer, path: Path, output: Path, batch_rows: int) -> int:
    """Score one file into one Parquet file (atomically); the rows written. With context
    features, the file is a run of its own (a fresh state)."""
    with AtomicTableWriter(output, empty_columns=scorer.output_columns) as out:
        for scored in _scored_batches(scorer, path, batch_rows, None, new_run(scorer.spec)):
            out.write(scored, source=path)
        return out.rows


def _scored_batches(  # noqa: ANN202 - generator
    scorer: Scorer,
    path: Path,
    batch_rows: int,
    report: CleaningReport | None = None,
    context: Any = None,
):
    for batch in iter_flow_batches(scorer.spec, path, batch_rows, report=report, context=context):
        if len(batch):
            yield scorer.score(batch)


def _known_rows(files: list[Path]) -> int | None:
    """Total rows when every input is Parquet (its footer says); None otherwise."""
    total = 0
    for f in files:
        try:
            if sniff(f) != "parquet":
                return None
            total += pq.ParquetFile(f).metadata.num_rows
        except (pa.ArrowInvalid, OSError, ValueError):
            return None
    return total
