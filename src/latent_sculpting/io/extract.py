"""Packet captures to one Parquet file of flow records (``sculpt extract``).

Each capture is metered into bidirectional flows by :mod:`latent_sculpting.io.readers.pcap`
(nfstream), and every flow is written with the capture it came from (``source_file``). The output
is written to a temporary file beside it and renamed into place once every capture is read: an
error or Ctrl-C leaves no half-written file, and an existing file is replaced only by a whole one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from latent_sculpting.atomic import atomic_path
from latent_sculpting.io.readers import list_flow_files, pcap

__all__ = ["CaptureSummary", "ExtractSummary", "extract"]

PathLike = str | Path


@dataclass(frozen=True)
class CaptureSummary:
    """One capture's share of an extraction."""

    path: str
    packets: int
    flows: int
    seconds: float


@dataclass
class ExtractSummary:
    """What :func:`extract` wrote.

    Attributes
    ----------
    output : str
    captures : list of CaptureSummary
    packets, flows : int
        Totals over the captures (packets: complete records in the files, including those that
        belong to no flow, such as ARP).
    seconds : float
        Wall time of the whole extraction.
    """

    output: str
    captures: list[CaptureSummary] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def packets(self) -> int:
        return sum(c.packets for c in self.captures)

    @property
    def flows(self) -> int:
        return sum(c.flows for c in self.captures)

    def to_dict(self) -> dict:
        out = asdict(self)
        out.update(packets=self.packets, flows=self.flows)
        return out


def extract(
    captures: PathLike | Sequence[PathLike],
    output: PathLike,
    *,
    batch_rows: int = 65_536,
    meters: int = 1,
    progress: bool = True,
    idle_timeout: int | None = None,
    active_timeout: int | None = None,
) -> ExtractSummary:
    """Meter packet captures into one Parquet file of flows, ``source_file`` first.

    Parameters
    ----------
    captures : path or sequence of paths
        pcap/pcapng files, or folders of them (every flow file a folder holds, as
        :func:`~latent_sculpting.io.readers.list_flow_files` finds them, must be a capture).
    output : path
        ``.parquet`` (or ``.pq``) file to write; replaced only when everything succeeded.
    batch_rows : int, default 65536
        Flows held in memory and written at a time.
    meters : int, default 1
        nfstream metering processes per capture; more is faster on large captures, but the
        order of the rows may then vary from run to run.
    idle_timeout, active_timeout : int, optional
        nfstream's timeouts in seconds, when not the defaults (120, 1800):
        :data:`~latent_sculpting.io.readers.pcap.METER_TIMEOUTS` says when to change them.
    progress : bool, default True
        A progress bar of packets on stderr when the captures total
        :data:`~latent_sculpting.io.readers.pcap.LARGE_CAPTURE_BYTES` or more.

    Returns
    -------
    ExtractSummary

    Raises
    ------
    FlowInputError
        If a file is not a capture or is corrupt (every capture is checked before any is
        metered).
    ImportError
        If nfstream (the ``capture`` extra) is not installed.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    output = Path(output)
    if output.suffix.lower() not in (".parquet", ".pq"):
        raise ValueError(f"output {output}: use a .parquet file name")
    settings = pcap.meter_settings(idle_timeout, active_timeout)
    files = list_flow_files(captures)
    scans = [pcap.scan_capture(path) for path in files]
    for path, scan in zip(files, scans, strict=True):
        pcap.warn_truncated(path, scan)
    schema = pa.schema([pa.field("source_file", pa.string()), *pcap.schema()])
    summary = ExtractSummary(output=str(output))
    started = time.perf_counter()
    bar = pcap.progress_bar(
        sum(s.packets for s in scans),
        sum(s.bytes for s in scans),
        None if progress else False,
        "extracting",
    )
    # The writer closes before the file is renamed into place (or deleted, on any failure).
    try:
        with (
            atomic_path(output) as tmp,
            pq.ParquetWriter(tmp, schema, compression="zstd") as writer,
        ):
            for path, scan in zip(files, scans, strict=True):
                began, flows = time.perf_counter(), 0
                for batch in pcap.meter(
                    path, batch_rows, meters=meters, advance=bar.update, settings=settings
                ):
                    source = pa.array([str(path)] * batch.num_rows, type=pa.string())
                    writer.write_batch(
                        pa.RecordBatch.from_arrays([source, *batch.columns], schema=schema)
                    )
                    flows += batch.num_rows
                summary.captures.append(
                    CaptureSummary(str(path), scan.packets, flows, time.perf_counter() - began)
                )
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - started
    return summary
