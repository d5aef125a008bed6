"""Packet captures to flows: every shared capture, the capture walk, extract's all-or-nothing
output, Ctrl-C, and what nfstream does to the calling process."""

from __future__ import annotations

import multiprocessing
import os
import signal
import struct
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from shared_files import shared

pytest.importorskip("nfstream", reason="the capture extra (nfstream) is not installed")

from latent_sculpting.cli import main  # noqa: E402
from latent_sculpting.errors import FlowInputError  # noqa: E402
from latent_sculpting.io.extract import extract  # noqa: E402
from latent_sculpting.io.formats.nfstream import NFSTREAM  # noqa: E402
from latent_sculpting.io.readers import iter_batches, pcap, read_columns  # noqa: E402
from latent_sculpting.io.readers import sniff as sniff_file  # noqa: E402
from latent_sculpting.io.readers.meter_process import kept_affinity  # noqa: E402

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


PCAPS = Path(__file__).resolve().parent / "data" / "pcaps"


def capture(name: str):
    return shared("pcaps", name)


def test_columns_are_nfstreams_and_known_without_reading():
    columns = pcap.columns()
    assert len(columns) == 86
    assert columns[:3] == ["id", "expiration_id", "src_ip"]
    assert "bidirectional_mean_piat_ms" in columns and "application_name" in columns
    assert not any(c.startswith(("splt_", "system_", "udps")) for c in columns)
    assert pcap.schema().field("bidirectional_mean_ps").type == pa.float64()
    assert pcap.schema().field("src2dst_packets").type == pa.int64()


def test_synscan_meters_into_its_flows():
    path = capture("synscan.pcap")
    assert sniff_file(path) == "pcap" and read_columns(path) == pcap.columns()
    batches = list(iter_batches(path, 500))
    table = pa.Table.from_batches(batches)
    assert abs(table.num_rows - 1994) <= 20
    assert [b.num_rows for b in batches[:-1]] == [500] * (len(batches) - 1)
    assert table.column_names == pcap.columns()
    # A SYN scan: almost every flow is one packet to a different port.
    assert len(table.column("dst_port").unique()) > 900
    assert pa.compute.sum(table.column("bidirectional_packets")).as_py() == 2011


def test_extract_every_shared_capture(tmp_path):
    folder = shared("pcaps")
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".pcap")
    assert len(names) == 22
    out = tmp_path / "flows.parquet"
    summary = extract(folder, out, progress=False)
    table = pq.read_table(out)
    assert table.num_rows == summary.flows
    assert table.column_names == ["source_file", *pcap.columns()]
    assert [c.path.split("/")[-1] for c in summary.captures] == names
    counts = table.group_by("source_file").aggregate([("id", "count")])
    by_file = dict(zip(*counts.columns, strict=True))
    for item in summary.captures:
        assert item.flows > 0, item.path
        assert by_file[pa.scalar(item.path)].as_py() == item.flows
        assert item.packets == pcap.scan_capture(item.path).packets
    # The identifiers nfstream writes are kept apart from the features by the nfstream format.
    assert NFSTREAM.matches(table.column_names)
    identifiers = set(NFSTREAM.identifier_columns)
    assert {"src_ip", "dst_ip", "src_port", "dst_port", "src_mac", "source_file"} <= identifiers
    assert "application_name" in NFSTREAM.categorical_columns
    assert (folder / "synscan.pcap").exists() and not list(tmp_path.glob(".flows*"))


def test_extract_is_the_same_every_run(tmp_path):
    path = capture("malicious-ssh-bruteforce.pcap")
    one, two = tmp_path / "a.parquet", tmp_path / "b.parquet"
    extract(path, one, progress=False)
    extract([path], two, progress=False)
    assert pq.read_table(one).equals(pq.read_table(two))


def test_pcapng_content_is_read(tmp_path):
    path = capture("http-manipulated.pcap")  # pcapng despite its name
    scan = pcap.scan_capture(path)
    assert scan.kind == "pcapng" and scan.packets == 328 and scan.truncated_at is None
    assert pa.Table.from_batches(list(pcap.batches(path))).num_rows == 2


def test_capture_cut_short_warns_and_keeps_whole_packets(tmp_path):
    data = capture("synscan.pcap").read_bytes()
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:100_000])
    scan = pcap.scan_capture(path)
    assert scan.truncated_at is not None and scan.packets < 2011
    with pytest.warns(UserWarning, match=r"ends inside the record at byte \d+"):
        table = pa.Table.from_batches(list(pcap.batches(path)))
    assert pa.compute.sum(table.column("bidirectional_packets")).as_py() == scan.packets


def test_corrupt_capture_is_refused_before_anything_is_written(tmp_path):
    header = capture("synscan.pcap").read_bytes()[:24]
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(header + struct.pack("<IIII", 0, 0, 10_000_000, 10_000_000) + b"x" * 64)
    with pytest.raises(FlowInputError, match="packet 1 at byte 24 claims 10000000 bytes") as info:
        pcap.scan_capture(bad)
    assert info.value.path == bad
    out = tmp_path / "flows.parquet"
    with pytest.raises(FlowInputError):
        extract([capture("nmap_80_vanilla.pcap"), bad], out, progress=False)
    assert list(tmp_path.iterdir()) == [bad]
    text = tmp_path / "notes.pcap"
    text.write_text("not a capture\n")
    with pytest.raises(FlowInputError, match="not a pcap or pcapng capture"):
        pcap.scan_capture(text)


def test_an_error_or_interrupt_midway_leaves_no_output(tmp_path, monkeypatch):
    out = tmp_path / "flows.parquet"
    out.write_bytes(b"previous")
    metered = pcap.meter

    def interrupted(path, *args, **kwargs):
        yield from metered(path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(pcap, "meter", interrupted)
    with pytest.raises(KeyboardInterrupt):
        extract(capture("synscan.pcap"), out, progress=False, batch_rows=100)
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flows.parquet"]


class _SwallowingStreamer:
    """Behaves as NFStreamer does on Ctrl-C: the interrupt ends its iteration quietly."""

    def __init__(self, **kwargs):
        pass

    def __iter__(self):
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            return
        yield from ()


def test_ctrl_c_inside_nfstream_is_not_taken_for_the_end(monkeypatch):
    nfstream = pytest.importorskip("nfstream")
    monkeypatch.setattr(nfstream, "NFStreamer", _SwallowingStreamer)
    with pytest.raises(KeyboardInterrupt):
        list(pcap.meter(capture("ftp_failed.pcap"), 10))


def test_stopping_early_leaves_no_metering_process():
    before = set(multiprocessing.active_children())
    batches = pcap.batches(capture("synscan.pcap"), 50)
    next(batches)
    batches.close()
    assert set(multiprocessing.active_children()) <= before


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 4,
    reason="nfstream pins the caller to a pair of CPUs, visible only with 4 or more",
)
def test_cpu_affinity_is_given_back():
    kept = os.sched_getaffinity(0)
    batches = pcap.batches(capture("synscan.pcap"), 100)
    next(batches)
    assert os.sched_getaffinity(0) == kept
    list(batches)
    assert os.sched_getaffinity(0) == kept


def test_progress_bar_for_large_captures(monkeypatch, capsys):
    monkeypatch.setattr(pcap, "LARGE_CAPTURE_BYTES", 1)
    list(pcap.batches(capture("nmap_80_all.pcap"), progress=True))
    assert "431/431" in capsys.readouterr().err
    list(pcap.batches(capture("nmap_80_all.pcap"), progress=False))
    assert capsys.readouterr().err == ""


def test_cli_extract(tmp_path, capsys):
    out = tmp_path / "flows.parquet"
    paths = [str(capture("nmap_80_vanilla.pcap")), str(capture("ftp_failed.pcap"))]
    assert main(["extract", *paths, "-o", str(out), "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "extracted 4 flows from 29 packets in 2 capture(s)" in printed
    assert pq.read_table(out).column("source_file").to_pylist().count(paths[1]) == 1
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    assert main(["extract", str(notes), "-o", str(tmp_path / "x.parquet")]) == 2
    assert "not a pcap or pcapng capture" in capsys.readouterr().err
    assert not (tmp_path / "x.parquet").exists()


def test_without_nfstream_the_message_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "nfstream", None)
    with pytest.raises(ImportError, match=r"latent-sculpting\[capture\]"):
        pcap.columns()


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs two CPUs to narrow the affinity",
)
def test_affinity_guard_restores_a_narrowed_affinity():
    kept = os.sched_getaffinity(0)
    with kept_affinity() as restore:
        os.sched_setaffinity(0, {min(kept)})  # what nfstream does to its caller
        restore()
        assert os.sched_getaffinity(0) == kept
        os.sched_setaffinity(0, {min(kept)})
    assert os.sched_getaffinity(0) == kept


def test_meter_timeouts_cut_flows_sooner(tmp_path):
    """--idle-timeout/--active-timeout reach nfstream: mDNS announcements every few seconds
    are one flow per address pair by default, many with a 1 s idle timeout; no flow then lasts
    longer than the active timeout allows."""
    path = PCAPS / "mdns.pcap"
    default, short = tmp_path / "default.parquet", tmp_path / "short.parquet"
    extract(path, default, progress=False)
    extract(path, short, progress=False, idle_timeout=1, active_timeout=2)
    a, b = pq.read_table(default).to_pandas(), pq.read_table(short).to_pandas()
    assert len(a) == 33 and len(b) > 3 * len(a)
    assert a["bidirectional_packets"].sum() == b["bidirectional_packets"].sum()
    assert (b["bidirectional_duration_ms"] <= 3000).all()
    with pytest.raises(ValueError, match="--idle-timeout must be a whole number"):
        extract(path, tmp_path / "x.parquet", progress=False, idle_timeout=0)
