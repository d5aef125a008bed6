"""The files of one run, in time order, with the context state carried from each to the next.

Context features (:mod:`latent_sculpting.io.context`) describe the flows before a flow, so the
files of one capture must be read in the order their flows happened. ``sculpt train`` reads
whole files (:func:`run_context`); ``sculpt score`` streams them (:func:`order_by_start`, then
one :class:`~latent_sculpting.io.context.state.ContextState` across the files). Either way a
file that overlaps another in time is refused with both names: context features computed on
interleaved files would be wrong, and nothing here guesses how they interleave.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.cleaning import CleaningReport
from latent_sculpting.io.context.config import ContextConfig
from latent_sculpting.io.encoding import context_matrix
from latent_sculpting.io.formats import get_format
from latent_sculpting.io.formats.base import refuse_context_on_samples
from latent_sculpting.io.readers import iter_batches

__all__ = ["order_by_start", "run_context"]

#: Rows read from the start of each file to find when it starts.
_PEEK_ROWS = 4096


def run_context(
    config: ContextConfig,
    format: str,
    records: pa.Table,
    source: np.ndarray,
    files: Sequence[Path],
    report: CleaningReport | None = None,
) -> np.ndarray:
    """Context features of every record of the files of one run, rows in ``records`` order.

    The files are taken in the order of their first flow, one state carried across them;
    within a file, records out of time order are sorted for the computation (counted in
    ``report.context_out_of_order``).

    Parameters
    ----------
    config : ContextConfig
    format : str
        The records' format (canonical column names).
    records : pyarrow.Table
    source : ndarray of int
        Index in ``files`` of each record's file, the files' rows contiguous.
    files : sequence of Path

    Raises
    ------
    FlowInputError
        For a per-class sample among the files, records without start time and endpoints, or
        two files that overlap in time (both named).
    """
    from latent_sculpting.io.context.stage import start_times
    from latent_sculpting.io.context.state import ContextState

    refuse_context_on_samples(files)
    fmt = get_format(format)
    starts = np.searchsorted(source, np.arange(len(files) + 1))
    spans = []
    for index, path in enumerate(files):
        rows = records.slice(starts[index], starts[index + 1] - starts[index])
        try:
            times = start_times(rows, fmt)
        except FlowInputError as error:
            raise FlowInputError(f"{path}: {error}", path=path, column=error.column) from None
        spans.append((float(times.min()), float(times.max())) if len(times) else None)
    order = sorted(
        (i for i in range(len(files)) if spans[i] is not None), key=lambda i: spans[i][0]
    )
    for before, after in zip(order, order[1:], strict=False):
        if spans[after][0] < spans[before][1]:
            raise FlowInputError(_overlap(files[before], spans[before], files[after], spans[after]))
    state = ContextState(config)
    out = np.empty((records.num_rows, len(config.feature_names)), np.float32)
    for index in order:
        first, last = starts[index], starts[index + 1]
        out[first:last] = context_matrix(
            config,
            format,
            records.slice(first, last - first),
            state,
            source=files[index],
            report=report,
        )
    return out


def order_by_start(files: Sequence[Path], format: str) -> list[Path]:
    """``files`` in the order of the first flows of each (from their first rows), for
    streaming them through one state; a file that turns out to overlap the one before is
    refused when it is read (:func:`~latent_sculpting.io.encoding.context_matrix`)."""
    from latent_sculpting.io.context.stage import start_times

    refuse_context_on_samples(files)
    fmt = get_format(format)
    first = []
    for path in files:
        batch = next(iter(iter_batches(path, _PEEK_ROWS)), None)
        if batch is None or batch.num_rows == 0:
            first.append(np.inf)
            continue
        rename = fmt.canonical_columns(batch.column_names, source=path)
        table = pa.Table.from_batches([batch]).select(list(rename))
        try:
            times = start_times(table.rename_columns(list(rename.values())), fmt)
        except FlowInputError as error:
            raise FlowInputError(f"{path}: {error}", path=path, column=error.column) from None
        first.append(float(times.min()))
    order = sorted(range(len(files)), key=lambda i: first[i])
    return [Path(files[i]) for i in order]


def _overlap(a: Path, span_a: tuple, b: Path, span_b: tuple) -> str:
    return (
        f"{b} (flows from {span_b[0]:.6f} to {span_b[1]:.6f} s) overlaps {a} (flows from "
        f"{span_a[0]:.6f} to {span_a[1]:.6f} s) in time: context features carry the flows of "
        "one run from file to file in time order, and these files interleave. Merge them into "
        "one file (its records are sorted by start time), or read them in separate runs"
    )
