"""Speed of ``sculpt extract``: packets/s and flows/s over every capture in a folder.

Each capture is extracted on its own (``--repeats`` times, the median kept), then the whole
folder in one call. The shared captures are small, so their rates are dominated by the fixed
cost of starting nfstream's metering process; a SYNTHETIC capture made of ``--copies`` copies
of one real capture, each shifted by an hour (so flows do not merge), gives the steady rate.
The load average is printed before and after: run it on an idle machine.

Usage::

    python benchmarks/speed/bench_extract.py [--pcaps ../shared/pcaps] [--repeats 3] [--meters 1]
                                       [--copies 40] [--base test-cc-capture-2.pcap]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_extract(captures, out: Path, meters: int, repeats: int):
    from latent_sculpting.io.extract import extract

    seconds, summary = [], None
    for _ in range(repeats):
        began = time.perf_counter()
        summary = extract(captures, out, meters=meters, progress=False)
        seconds.append(time.perf_counter() - began)
    return statistics.median(seconds), summary


def synthetic_capture(base: Path, copies: int, out: Path) -> Path:
    """SYNTHETIC: ``copies`` copies of ``base``'s packets, copy k shifted by k hours."""
    import dpkt

    with base.open("rb") as handle:
        packets = list(dpkt.pcap.Reader(handle))
        handle.seek(0)
        linktype = dpkt.pcap.Reader(handle).datalink()
    with out.open("wb") as handle:
        writer = dpkt.pcap.Writer(handle, linktype=linktype)
        for copy in range(copies):
            for stamp, data in packets:
                writer.writepkt(data, ts=stamp + 3600 * copy)
    return out


def row(name: str, packets: int, flows: int, seconds: float) -> str:
    return (
        f"| {name} | {packets:,} | {flows:,} | {seconds:.3f} | {packets / seconds:,.0f} | "
        f"{flows / seconds:,.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pcaps", type=Path, default=ROOT.parent / "shared" / "pcaps")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--meters", type=int, default=1)
    parser.add_argument("--copies", type=int, default=40)
    parser.add_argument("--base", default="test-cc-capture-2.pcap")
    args = parser.parse_args()

    import nfstream

    from latent_sculpting.io.readers.pcap import scan_capture

    captures = sorted(p for p in args.pcaps.iterdir() if p.suffix in (".pcap", ".pcapng"))
    print(f"load average before: {os.getloadavg()}")
    print(
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"nfstream {nfstream.__version__}, meters {args.meters}, median of {args.repeats}\n"
    )
    print("| capture | packets | flows | seconds | packets/s | flows/s |")
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "flows.parquet"
        for path in captures:
            seconds, summary = timed_extract(path, out, args.meters, args.repeats)
            print(row(path.name, summary.packets, summary.flows, seconds))
        seconds, summary = timed_extract(args.pcaps, out, args.meters, args.repeats)
        print(row(f"**all {len(captures)} in one call**", summary.packets, summary.flows, seconds))
        big = synthetic_capture(args.pcaps / args.base, args.copies, Path(tmp) / "synthetic.pcap")
        scan = scan_capture(big)
        seconds, summary = timed_extract(big, out, args.meters, args.repeats)
        name = f"SYNTHETIC {args.copies} x {args.base} ({scan.bytes / 2**20:.1f} MiB)"
        print(row(name, summary.packets, summary.flows, seconds))
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
