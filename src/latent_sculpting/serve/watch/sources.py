"""Where a live sensor's flows come from: captures, a network interface, Zeek's conn.log, stdin.

Each source runs on its own thread and hands what it reads to the sensor's loop as
:class:`Arrival` chunks of *undecoded* records (an nfstream flow's values, a text line), with
the line or flow number of each and a :class:`Decoder` that turns them into an Arrow table.
Decoding happens on the loop's side, batch by batch, so that one corrupt record can be found
and set aside (:mod:`.loop`) without stopping the others.

A source given a full queue either waits (a file, Zeek's log, stdin: nothing is lost, the
sensor falls behind and its lag says so) or, for a live capture, which cannot wait, sheds the
flows and counts them (``emit`` returns False): reported, never silently dropped.
"""

from __future__ import annotations

import contextlib
import os
import select
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.readers import pcap
from latent_sculpting.io.readers.meter_process import stop_meters
from latent_sculpting.serve.watch.decoders import (
    CsvDecoder,
    Decoder,
    JsonDecoder,
    NfstreamDecoder,
    ZeekTsvDecoder,
)

__all__ = [
    "Arrival",
    "InterfaceSource",
    "PcapSource",
    "Source",
    "StdinSource",
    "ZeekDirSource",
]

#: Seconds between looks at a Zeek log for new lines.
POLL_SECONDS = 0.2
#: Seconds a renamed Zeek log without its '#close' line is still read after its last write.
ROTATION_GRACE = 1.0
#: Records a file source hands over at a time (fewer at the end of a file or a poll).
CHUNK = 256


@dataclass
class Arrival:
    """Records a source read, not yet decoded.

    Attributes
    ----------
    records : list
        One undecoded record each (a flow's values, a line of text).
    lines : list of int
        Each record's 1-based line (text) or flow number (captures) in ``origin``.
    origin : str
        The file or stream they came from.
    decoder : Decoder
    arrived : float
        ``time.monotonic()`` when they were read (lag is counted from here).
    """

    records: list
    lines: list[int]
    origin: str
    decoder: Decoder
    arrived: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.records)


Emit = Callable[[Arrival], bool]


class Source:
    """A stream of flows for the sensor (subclasses say from where).

    Attributes
    ----------
    name : str
        What ``sculpt watch`` reports it as.
    lossless : bool
        True: ``emit`` waits for room (nothing is lost); False: a live capture, which sheds
        what the sensor has no room for, and counts it.
    """

    name = "source"
    lossless = True

    def columns(self) -> list[str] | None:
        """The raw columns every record will have, when known before the first record."""
        return None

    def describe(self) -> str:
        """What is read, for the operator."""
        return self.name

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Read until the stream ends or ``stop`` is set, handing records to ``emit``."""
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        """Counters the source keeps (a live capture's packet drops)."""
        return {}

    def close(self) -> None:
        """Release what :meth:`run` may still hold after ``stop`` (its thread may be blocked
        in a read that never returns)."""


class PcapSource(Source):
    """Packet captures, metered by nfstream with ``sculpt extract``'s settings.

    Parameters
    ----------
    paths : sequence of path
    pace : {"fast", "capture"}
        ``fast``: as fast as the flows are metered; ``capture``: each flow handed over when the
        capture's own clock reaches its last packet (``speed`` times faster), from the first
        flow's start.
    speed : float, default 1.0
    settings : dict, optional
        nfstream's timeouts when not ``sculpt extract``'s defaults
        (:func:`~latent_sculpting.io.readers.pcap.meter_settings`).
    """

    name = "pcap"

    def __init__(
        self,
        paths: Sequence[str | Path],
        pace: str = "fast",
        speed: float = 1.0,
        settings: dict | None = None,
    ):
        if pace not in ("fast", "capture"):
            raise ValueError(f"pace must be 'fast' or 'capture', got {pace!r}")
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed!r}")
        self.paths = [Path(p) for p in paths]
        for path in self.paths:
            pcap.warn_truncated(path, pcap.scan_capture(path))
        self.pace, self.speed = pace, speed
        self.settings = dict(settings or {})
        self.decoder = NfstreamDecoder()

    def columns(self) -> list[str]:
        return self.decoder.columns

    def describe(self) -> str:
        return f"{len(self.paths)} capture(s) ({self.pace} pace)"

    def run(self, emit: Emit, stop: threading.Event) -> None:
        names = self.decoder.columns
        first, last = (
            names.index("bidirectional_first_seen_ms"),
            names.index("bidirectional_last_seen_ms"),
        )
        clock: tuple[float, float] | None = None  # (wall start, capture start in ms)
        for path in self.paths:
            chunk: list[list] = []
            lines: list[int] = []
            flows = pcap.flow_values(path, settings=self.settings)
            for number, (values, _) in enumerate(flows, start=1):
                if stop.is_set():
                    return
                if self.pace == "capture":
                    if clock is None:
                        clock = (time.monotonic(), float(values[first]))
                    due = clock[0] + (values[last] - clock[1]) / 1000 / self.speed
                    _sleep_until(due, stop)
                    emit(Arrival([values], [number], str(path), self.decoder))
                    continue
                chunk.append(values)
                lines.append(number)
                if len(chunk) == CHUNK:
                    emit(Arrival(chunk, lines, str(path), self.decoder))
                    chunk, lines = [], []
            if chunk:
                emit(Arrival(chunk, lines, str(path), self.decoder))


class InterfaceSource(Source):
    """A live capture on a network interface through nfstream (root or CAP_NET_RAW).

    Each flow is handed over when nfstream ends it (idle or active timeout, as in ``sculpt
    extract``, or ``settings``' timeouts: shorter ones end flows sooner, and the model must
    have been trained on flows metered with them). nfstream's count of packets the kernel
    dropped is kept in :meth:`stats` (``capture_drops``).
    """

    name = "interface"
    lossless = False

    def __init__(self, interface: str, settings: dict | None = None) -> None:
        if not Path("/sys/class/net", interface).exists():
            raise ValueError(f"--interface {interface!r}: no such network interface")
        if not _can_capture():
            raise PermissionError(
                f"--interface {interface}: a live capture needs root or the CAP_NET_RAW "
                "capability (e.g. `setcap cap_net_raw,cap_net_admin+eip` on the Python "
                "binary, or the systemd unit's AmbientCapabilities=CAP_NET_RAW)"
            )
        self.interface = interface
        self.settings = {**(settings or {}), "performance_report": 1}
        self.decoder = NfstreamDecoder()
        self.drops = 0
        self._before: set | None = None  # the processes before the capture started

    def columns(self) -> list[str]:
        return self.decoder.columns

    def describe(self) -> str:
        return f"interface {self.interface}"

    def run(self, emit: Emit, stop: threading.Event) -> None:
        import multiprocessing

        self._before = set(multiprocessing.active_children())
        with _performance_reports(self):
            for number, (values, _) in enumerate(
                pcap.flow_values(self.interface, settings=self.settings), start=1
            ):
                if stop.is_set():
                    return
                emit(Arrival([values], [number], self.interface, self.decoder))

    def stats(self) -> dict[str, int]:
        return {"capture_drops": self.drops}

    def close(self) -> None:
        """End nfstream's meters: on a quiet interface the reading thread waits for a flow
        that may never come, and stopping it means stopping what would send one."""
        if self._before is not None:
            stop_meters(self._before)


class StdinSource(Source):
    """Flows on standard input: JSON lines (a first character ``{``) or CSV with a header line.

    Parameters
    ----------
    stream : binary file, optional
        Default ``sys.stdin.buffer``.
    """

    name = "stdin"

    def __init__(self, stream: BinaryIO | None = None) -> None:
        import sys

        self.stream = sys.stdin.buffer if stream is None else stream

    def run(self, emit: Emit, stop: threading.Event) -> None:
        decoder: Decoder | None = None
        for number, line in enumerate(self._lines(stop), start=1):
            if not line.strip():
                continue
            if decoder is None:
                if line.lstrip().startswith(b"{"):
                    decoder = JsonDecoder()
                else:
                    decoder = CsvDecoder(line, "stdin")
                    continue
            emit(Arrival([line], [number], "stdin", decoder))

    def _lines(self, stop: threading.Event) -> Iterator[bytes]:
        """The stream's lines until its end or ``stop``. A real file descriptor is read
        without blocking for longer than a poll, so that a stopping sensor is not left inside
        a read (a thread blocked in one aborts the interpreter's shutdown)."""
        try:
            fd = self.stream.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is None:
            for line in self.stream:
                if stop.is_set():
                    return
                yield line
            return
        rest = b""
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], POLL_SECONDS)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            yield from (line + b"\n" for line in lines)
        if rest and not stop.is_set():
            yield rest


class ZeekDirSource(Source):
    """Follows ``conn.log`` in a Zeek log folder as Zeek writes it, across its log rotation.

    Zeek rotates by renaming ``conn.log`` (to ``conn.<time>.log``, or into an archive) and
    starting a new one; the open file is read to its end after the rename (the inode stays
    the same), then the new ``conn.log`` is opened. Lines are handed over whole: a line Zeek
    has half written waits for its end. TSV logs (with their ``#`` header) and JSON logs both
    work.

    Parameters
    ----------
    folder : path
    from_start : bool, default False
        Read the ``conn.log`` there now from its first line; by default, from its end (as
        ``tail -F``: a restarted sensor does not raise its alerts again). Logs that appear
        later are always read whole.
    name : str, default "conn.log"
    """

    name = "zeek"

    def __init__(self, folder: str | Path, from_start: bool = False, name: str = "conn.log"):
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise ValueError(f"--zeek-dir {self.folder}: not a folder")
        self.path = self.folder / name
        self.from_start = from_start
        self.rotations = 0
        self._scratch = tempfile.TemporaryDirectory(prefix="sculpt-watch-")

    def describe(self) -> str:
        return f"{self.path} ({'from its start' if self.from_start else 'from its end'})"

    def run(self, emit: Emit, stop: threading.Event) -> None:
        first = True
        try:
            while not stop.is_set():
                try:
                    handle = self.path.open("rb")
                except FileNotFoundError:
                    _sleep_until(time.monotonic() + POLL_SECONDS, stop)
                    continue
                with handle:
                    self._follow(handle, emit, stop, skip=first and not self.from_start)
                first = False
        finally:
            self._scratch.cleanup()

    def _follow(self, handle: BinaryIO, emit: Emit, stop: threading.Event, skip: bool) -> None:
        inode = os.fstat(handle.fileno()).st_ino
        origin = str(self.path)
        # Skipping what the log holds already still reads its header, which the rest needs.
        skip_to = os.fstat(handle.fileno()).st_size if skip else 0
        header: list[bytes] = []
        in_header = False
        decoder: Decoder | None = None
        number, offset, rest = 0, 0, b""
        closed, quiet = False, time.monotonic()
        while not stop.is_set():
            data = handle.read(1 << 20)
            if not data:
                # After a rename the old file is read on until Zeek's '#close' line, or until
                # it has been quiet for ROTATION_GRACE seconds: what Zeek still writes to it
                # belongs to it.
                if self._rotated(inode) and (closed or time.monotonic() - quiet > ROTATION_GRACE):
                    self.rotations += 1
                    return
                _sleep_until(time.monotonic() + POLL_SECONDS, stop)
                continue
            quiet = time.monotonic()
            data = rest + data
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            records, lines = [], []
            for line in data[:cut].splitlines(keepends=True):
                number, offset = number + 1, offset + len(line)
                # A byte-order mark or stray blanks before the header (as the Zeek reader).
                line = line.lstrip(b"\xef\xbb\xbf \t") if number == 1 else line
                if line.startswith(b"#separator"):
                    header, in_header, decoder = [line], True, None
                elif line.startswith(b"#"):
                    closed = closed or line.startswith(b"#close")
                    if in_header:  # not '#close' after the data, nor a comment
                        header.append(line)
                elif line.strip():
                    in_header = False
                    if decoder is None:
                        decoder = self._decoder(header, line, origin)
                    if offset > skip_to:
                        records.append(line)
                        lines.append(number)
                if len(records) == CHUNK:
                    emit(Arrival(records, lines, origin, decoder))
                    records, lines = [], []
            if records:
                emit(Arrival(records, lines, origin, decoder))

    def _decoder(self, header: list[bytes], line: bytes, origin: str) -> Decoder:
        if line.lstrip().startswith(b"{"):
            return JsonDecoder()
        if not header:
            raise FlowInputError(f"{origin}: a data line before any '#fields' header")
        return ZeekTsvDecoder(b"".join(header), origin, Path(self._scratch.name))

    def _rotated(self, inode: int) -> bool:
        try:
            return self.path.stat().st_ino != inode
        except FileNotFoundError:
            return True


def _sleep_until(due: float, stop: threading.Event) -> None:
    wait = due - time.monotonic()
    if wait > 0:
        stop.wait(wait)


def _can_capture() -> bool:
    """Whether this process may open a raw socket (root, or CAP_NET_RAW in its effective set)."""
    if os.geteuid() == 0:
        return True
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 13))  # CAP_NET_RAW is bit 13
    except OSError:
        pass
    return False


@contextlib.contextmanager
def _performance_reports(source: InterfaceSource) -> Iterator[None]:
    """Keep nfstream's periodic capture report (packets the kernel dropped) for ``source``.

    nfstream prints the report as JSON on stdout from a timer thread, which would mix into the
    alert stream. Its reporting function, looked up by name in its streamer module when the
    streamer starts, is swapped for one that stores the figure, for the capture's lifetime.

    Its timer class is swapped too, for one whose threads are daemons. nfstream's timer
    restarts itself every second on a non-daemon thread and is stopped only when the flow
    iterator ends; a sensor stopped while the iterator waits for the next flow of a quiet
    interface printed its summary and then never exited (the interpreter waits for non-daemon
    threads).
    """
    from nfstream import streamer

    kept = streamer.update_performances, streamer.RepeatedTimer

    def keep(performances, is_linux, flows_count) -> None:  # noqa: ANN001 - nfstream's call
        values = [meter[0].value for meter in performances]
        source.drops = sum(values) if is_linux else max(values, default=0)

    class DaemonTimer(kept[1]):
        def start(self) -> None:
            if not self.is_running:
                self._timer = threading.Timer(self.interval, self._run)
                self._timer.daemon = True
                self._timer.start()
                self.is_running = True

    streamer.update_performances, streamer.RepeatedTimer = keep, DaemonTimer
    try:
        yield
    finally:
        streamer.update_performances, streamer.RepeatedTimer = kept
