"""Packet captures (pcap, pcapng) turned into bidirectional flow records by nfstream.

nfstream (https://www.nfstream.org, LGPL-3.0) meters packets into bidirectional flows with
libpcap and nDPI, and computes per flow the statistics that flow-based detectors learn from:
packet and byte counts, sizes and inter-arrival times (min, mean, stddev, max) per direction,
TCP flag counts, and nDPI's application name and category. We take it rather than writing a flow
meter: it is maintained, ships manylinux wheels with libpcap and nDPI inside (no system
library, no compiler), reads pcap and pcapng, and its statistics are those of CICFlowMeter-style
datasets. The columns are nfstream's, in its order (:func:`columns`); what they mean for a model
is :mod:`latent_sculpting.io.formats.nfstream`'s business.

Settings (:data:`NFSTREAM_SETTINGS`): ``statistical_analysis`` on (the features),
``n_dissections=20`` (packets nDPI may inspect to name the application; nfstream's default),
``idle_timeout=120`` s (a flow silent for two minutes ends: CICFlowMeter's flow timeout, the one
CIC-IDS-2017 was extracted with, and nfstream's and Linux conntrack's default) and
``active_timeout=1800`` s (a flow still active after 30 minutes is reported and a new one starts,
so a long-lived connection is seen before it ends; nfstream's default). One metering process by
default, so the flows and their order are the same on every run; ``meters`` more is faster on
large captures, with rows in an order that may vary.

Before nfstream runs, a capture's record headers are walked (a seek per packet, no payload
read): that counts its packets for the progress bar and the summary, and finds a corrupt record
length or a capture cut short, which libpcap would end on without a word.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import struct
import sys
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.readers.meter_process import interrupt_guard, kept_affinity, stop_meters

__all__ = [
    "LARGE_CAPTURE_BYTES",
    "METER_TIMEOUTS",
    "NFSTREAM_SETTINGS",
    "CaptureScan",
    "batches",
    "columns",
    "flow_values",
    "meter",
    "meter_settings",
    "progress_bar",
    "scan_capture",
    "schema",
    "values_batch",
    "warn_truncated",
]

PathLike = str | Path

#: Keyword arguments every capture is metered with (see the module docstring for why).
NFSTREAM_SETTINGS = {
    "statistical_analysis": True,
    "n_dissections": 20,
    "idle_timeout": 120,
    "active_timeout": 1800,
    "decode_tunnels": True,
    "splt_analysis": 0,
    "accounting_mode": 0,
}

#: The settings a user may change (``--idle-timeout``, ``--active-timeout``), in seconds. A
#: live sensor reports a flow only when it ends: with the defaults a port scan's probes reach
#: it two minutes late. Shorter timeouts report sooner but cut flows differently, so a model
#: must be trained on flows metered with the timeouts it watches with.
METER_TIMEOUTS = ("idle_timeout", "active_timeout")


def meter_settings(idle_timeout: int | None = None, active_timeout: int | None = None) -> dict:
    """The timeouts given (whole seconds, at least 1) as nfstream settings."""
    settings = {}
    for name, value in zip(METER_TIMEOUTS, (idle_timeout, active_timeout), strict=True):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be a whole number of seconds >= 1, got {value!r}")
        settings[name] = value
    return settings


#: A capture at least this large gets a progress bar (about ten seconds of metering and more).
LARGE_CAPTURE_BYTES = 16 << 20

# nfstream's NFlow slots that are not flow features under NFSTREAM_SETTINGS: the C handle,
# user plugins, early-packet arrays (splt_analysis=0) and live-capture process information.
_NOT_COLUMNS = ("_C", "udps", "splt_direction", "splt_ps", "splt_piat_ms")
_NOT_COLUMN_PREFIX = "system_"
_STRING_COLUMNS = {
    "src_ip",
    "src_mac",
    "src_oui",
    "dst_ip",
    "dst_mac",
    "dst_oui",
    "application_name",
    "application_category_name",
    "requested_server_name",
    "client_fingerprint",
    "server_fingerprint",
    "user_agent",
    "content_type",
}
# The largest record a capture holds (libpcap's MAXIMUM_SNAPLEN): a longer one is corruption.
_MAX_RECORD = 262_144


def _nfstream():  # noqa: ANN202 - the nfstream module
    try:
        import nfstream
    except ImportError as error:
        raise ImportError(
            "reading packet captures needs nfstream: pip install 'latent-sculpting[capture]'"
        ) from error
    return nfstream


def columns(path: PathLike | None = None) -> list[str]:
    """nfstream's flow columns under :data:`NFSTREAM_SETTINGS`, in its order.

    They do not depend on the capture (``path`` is accepted for the reader interface), so no
    packet is read.
    """
    NFlow = _nfstream().flow.NFlow  # noqa: N806 - a class
    return [
        name
        for name in NFlow.__slots__
        if name not in _NOT_COLUMNS and not name.startswith(_NOT_COLUMN_PREFIX)
    ]


def schema() -> pa.Schema:
    """Arrow types of :func:`columns`: text, float64 for means and deviations, else int64."""
    fields = []
    for name in columns():
        if name in _STRING_COLUMNS:
            arrow_type = pa.string()
        elif "_mean_" in name or "_stddev_" in name:
            arrow_type = pa.float64()
        else:
            arrow_type = pa.int64()
        fields.append(pa.field(name, arrow_type))
    return pa.schema(fields)


# ---------------------------------------------------------------------------------------------
# Walking a capture's records


@dataclass(frozen=True)
class CaptureScan:
    """What a walk over a capture's record headers found.

    Attributes
    ----------
    kind : str
        ``"pcap"`` or ``"pcapng"``.
    packets : int
        Complete packet records.
    bytes : int
        File size.
    truncated_at : int or None
        Byte offset of a last record cut short (the capture was not closed cleanly), else None.
    """

    kind: str
    packets: int
    bytes: int
    truncated_at: int | None


_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",
    b"\xa1\xb2\x3c\x4d": ">",
}
_PCAPNG_SHB = 0x0A0D0D0A
_PCAPNG_PACKET_BLOCKS = {2, 3, 6}  # packet, simple packet, enhanced packet


def scan_capture(path: PathLike) -> CaptureScan:
    """Count a capture's packets and check its record lengths, without reading payloads.

    dpkt (which nfstream installs) reads every payload and passes over a record cut short
    without a word; this walk only steps from header to header.

    Raises
    ------
    FlowInputError
        If the file is not a pcap/pcapng capture, or a record's length is impossible
        (corruption), naming the file, the packet and its byte offset.
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        raise FlowInputError(f"{path}: file is empty", path=path)
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as m:
        magic = m[:4]
        if magic in _PCAP_MAGIC:
            return _scan_pcap(path, m, _PCAP_MAGIC[magic])
        if magic == struct.pack("<I", _PCAPNG_SHB):
            return _scan_pcapng(path, m)
    raise FlowInputError(f"{path}: not a pcap or pcapng capture", path=path)


def _scan_pcap(path: Path, m: mmap.mmap, order: str) -> CaptureScan:
    size = len(m)
    if size < 24:
        raise FlowInputError(f"{path}: pcap header cut short ({size} bytes of 24)", path=path)
    (snaplen,) = struct.unpack_from(order + "I", m, 16)
    limit = max(snaplen, _MAX_RECORD)
    record = struct.Struct(order + "II I I")
    offset, packets = 24, 0
    while offset < size:
        if offset + 16 > size:
            return CaptureScan("pcap", packets, size, offset)
        _, _, captured, _ = record.unpack_from(m, offset)
        if captured > limit:
            raise FlowInputError(
                f"{path}: packet {packets + 1} at byte {offset} claims {captured} bytes, more "
                f"than the capture's limit of {limit}; the file is corrupt",
                path=path,
                line=packets + 1,
            )
        end = offset + 16 + captured
        if end > size:
            return CaptureScan("pcap", packets, size, offset)
        packets += 1
        offset = end
    return CaptureScan("pcap", packets, size, None)


def _scan_pcapng(path: Path, m: mmap.mmap) -> CaptureScan:
    size = len(m)
    offset, packets, order = 0, 0, "<"
    while offset < size:
        if offset + 12 > size:
            return CaptureScan("pcapng", packets, size, offset)
        (block_type,) = struct.unpack_from(order + "I", m, offset)
        if block_type == _PCAPNG_SHB:
            # Each section states its byte order in its header.
            order = "<" if m[offset + 8 : offset + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        (length,) = struct.unpack_from(order + "I", m, offset + 4)
        if length < 12 or length % 4:
            raise FlowInputError(
                f"{path}: block at byte {offset} (after {packets} packets) has length "
                f"{length}; the file is corrupt",
                path=path,
                line=packets + 1,
            )
        if offset + length > size:
            return CaptureScan("pcapng", packets, size, offset)
        packets += block_type in _PCAPNG_PACKET_BLOCKS
        offset += length
    return CaptureScan("pcapng", packets, size, None)


# ---------------------------------------------------------------------------------------------
# Metering


def batches(
    path: PathLike,
    batch_rows: int = 65_536,
    types: Mapping[str, pa.DataType] | None = None,
    *,
    progress: bool | None = None,
    meters: int = 1,
) -> Iterator[pa.RecordBatch]:
    """Meter a capture into flow record batches of ``batch_rows`` rows (the last one shorter).

    Parameters
    ----------
    path : path
        A pcap or pcapng file.
    batch_rows : int, default 65536
    types : mapping of str to pyarrow.DataType, optional
        Column name -> wanted type.
    progress : bool or None, default None
        A tqdm bar of packets on stderr for a capture of :data:`LARGE_CAPTURE_BYTES` or more;
        None shows it only when stderr is a terminal.
    meters : int, default 1
        nfstream metering processes.

    Raises
    ------
    FlowInputError
        If the capture is corrupt or nfstream cannot read it.
    ImportError
        If nfstream is not installed.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    path = Path(path)
    scan = scan_capture(path)
    warn_truncated(path, scan)
    bar = progress_bar(scan.packets, scan.bytes, progress, path.name)
    try:
        yield from meter(path, batch_rows, types, meters=meters, advance=bar.update)
    finally:
        bar.close()


def warn_truncated(path: Path, scan: CaptureScan) -> None:
    """Say that a capture ends inside a record: its last packet is left out."""
    if scan.truncated_at is not None:
        warnings.warn(
            f"{path}: the capture ends inside the record at byte {scan.truncated_at} (after "
            f"{scan.packets} complete packets); that last partial packet is left out",
            UserWarning,
            stacklevel=3,
        )


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(packets: int, size: int, progress: bool | None, name: str):  # noqa: ANN202
    """A tqdm bar of ``packets`` on stderr when ``size`` bytes of capture are many and progress
    is wanted (None: when stderr is a terminal), else an object with the same two methods."""
    if progress is False or size < LARGE_CAPTURE_BYTES:
        return _NoBar()
    if progress is None and not sys.stderr.isatty():
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=packets, unit="pkt", unit_scale=True, desc=name, file=sys.stderr)


def meter(
    path: Path,
    batch_rows: int,
    types: Mapping[str, pa.DataType] | None = None,
    *,
    meters: int = 1,
    advance: Callable[[int], object] | None = None,
    settings: Mapping[str, object] | None = None,
) -> Iterator[pa.RecordBatch]:
    """nfstream's flows of one capture as record batches; ``advance(packets)`` is called as
    flows come out; ``settings`` as :func:`flow_values` takes them. Checks nothing about the
    file: :func:`batches` is the checked entry."""
    rows: list[list] = []
    for values, packets in flow_values(path, meters=meters, settings=settings):
        rows.append(values)
        if advance is not None:
            advance(packets)
        if len(rows) == batch_rows:
            yield values_batch(path, rows, types)
            rows = []
    if rows:
        yield values_batch(path, rows, types)


def flow_values(
    source: Path | str,
    *,
    meters: int = 1,
    settings: Mapping[str, object] | None = None,
) -> Iterator[tuple[list, int]]:
    """Each flow nfstream meters from ``source`` (a capture file, or a network interface's
    name for a live capture), as it comes out: its values in :func:`columns` order and its
    packet count. ``settings`` override :data:`NFSTREAM_SETTINGS` (nfstream's own keywords).

    Raises
    ------
    FlowInputError
        If nfstream cannot read the source.
    """
    nfstream = _nfstream()
    if meters < 1:
        raise ValueError(f"meters must be >= 1, got {meters}")
    import multiprocessing

    before = set(multiprocessing.active_children())
    with interrupt_guard() as interrupted, kept_affinity() as restore:
        # nfstream prints warnings (such as lowering n_meters) on stdout, which a command's
        # output must not carry.
        with contextlib.redirect_stdout(io.StringIO()):
            streamer = nfstream.NFStreamer(
                source=str(source), n_meters=meters, **{**NFSTREAM_SETTINGS, **(settings or {})}
            )
        flows = iter(streamer)
        try:
            while True:
                try:
                    flow = next(flows)
                except StopIteration:
                    break
                except ValueError as error:
                    raise FlowInputError(
                        f"{source}: nfstream cannot read the capture ({error})",
                        path=source if isinstance(source, Path) else None,
                    ) from None
                restore()
                yield flow.values(), flow.bidirectional_packets
            # nfstream ends its iteration quietly on Ctrl-C; a partial capture must not pass
            # for a whole one.
            if interrupted.is_set():
                raise KeyboardInterrupt
        finally:
            flows.close()
            stop_meters(before)


def values_batch(
    source: Path | str, rows: list[list], types: Mapping[str, pa.DataType] | None = None
) -> pa.RecordBatch:
    """Flows as :func:`flow_values` gives them, as one record batch of :func:`schema`, each
    column of ``types`` (column name -> wanted type) cast to its type."""
    target = schema()
    wanted = {name: t for name, t in (types or {}).items() if name in target.names}
    return _batch(source, rows, target.names, target, wanted)


def _batch(
    path: Path | str,
    rows: list[list],
    names: list[str],
    target: pa.Schema,
    wanted: Mapping[str, pa.DataType],
) -> pa.RecordBatch:
    if rows and len(rows[0]) != len(names):
        raise FlowInputError(
            f"{path}: nfstream gave {len(rows[0])} values per flow for {len(names)} columns; "
            "the installed nfstream is not the version this reader was written for (6.6.0)",
            path=path if isinstance(path, Path) else None,
        )
    arrays = []
    for values, field in zip(zip(*rows, strict=True), target, strict=True):
        array = pa.array(values, type=field.type)
        if field.name in wanted and wanted[field.name] != field.type:
            try:
                array = array.cast(wanted[field.name])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
                raise FlowInputError(
                    f"{path}, column {field.name!r}: does not convert to "
                    f"{wanted[field.name]} ({error})",
                    path=path if isinstance(path, Path) else None,
                    column=field.name,
                ) from None
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, names=names)
