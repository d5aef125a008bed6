"""How fast can `sculpt watch --interface` read a veth? Replay rate, alert latency, memory.

A capture is replayed with tcpreplay onto ``rp0`` of a namespace of its own, and the sensor
captures on its peer ``cap0`` (no addresses: the packets reach the sensor and nothing else).
Every loop of the capture gets new addresses (``--unique-ip``), so its flows are new flows. A
lab capture does not suit: the lab's veths hand tcpdump segmentation-offloaded frames of up
to 64 KB, which tcpreplay cannot send onto a 1500-byte veth; the shared real captures
(``../shared/pcaps``, concatenated) do, and so does a lab capture with ``--mtu-trunc``
(tcprewrite cuts each frame longer than the veth's MTU to it: packet counts and rates are
kept, byte counts of those frames are not; a throughput measurement). The shared captures are
scans and short exchanges, about 2.2 packets a flow, and the meter's cost is per flow: the
packet rate it holds depends on the capture, so both kinds are measured. For each packet rate in
``--pps`` the replay runs ``--seconds`` seconds (tcpreplay loops the capture), with the sensor
started fresh, and the script reports:

- tcpreplay's achieved rate, and the packets the kernel dropped before nfstream read them
  (``capture_drops``, nfstream's count) and the flows the sensor shed for lack of room;
- the sensor's lag (read-to-scored time of a batch's oldest flow; its Prometheus gauge
  ``sculpt_watch_lag_seconds``, polled every second, the largest value seen);
- alert latency: for each alert line, its ``event.created`` (when it was written) minus the
  flow's last packet (``event.end``): the meter's idle timeout is part of it by design (a flow
  is handed over when it has been silent that long), so the latency beyond the timeout is
  printed too;
- the sensor's resident memory (``VmRSS``), sampled every 10 s, first and last.

The highest rate held is the highest with zero capture drops, nothing shed and lag under 1 s.
Run it on an otherwise idle machine (the load average is printed); as root, with tcpreplay.

    sculpt extract ../shared/pcaps -o flows.parquet --idle-timeout 5 --active-timeout 10
    sculpt train --data flows.parquet --unlabeled -o replay.sculpt
    python benchmarks/speed/bench_watch_replay.py ../shared/pcaps/*.pcap --model replay.sculpt \\
        --pps 10000 20000 30000 40000 --seconds 60
    python benchmarks/speed/bench_watch_replay.py ../shared/pcaps/*.pcap --model replay.sculpt \\
        --pps 20000 --seconds 1800            # memory over 30 minutes
    python benchmarks/speed/bench_watch_replay.py LAB/calibrate.pcap --mtu-trunc \\
        --model lab-replay.sculpt --pps 20000 30000 40000 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))

import lab as L  # noqa: E402

SCULPT = [
    sys.executable,
    "-c",
    "import sys; from latent_sculpting.cli import main; sys.exit(main())",
]
NETNS, REPLAY_IF, CAPTURE_IF = "sclab-bench-tap", "rp0", "cap0"
METRICS_PORT = 9477


def _rss_kib(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"VmRSS:\s+(\d+) kB", text)
    return int(match.group(1)) if match else None


def _lag(metrics: str) -> float | None:
    match = re.search(r"^sculpt_watch_lag_seconds ([0-9.e+-]+)$", metrics, re.M)
    return float(match.group(1)) if match else None


#: The replay veth's MTU plus the Ethernet header: the longest frame it carries.
MAX_FRAME = 1514


def concatenate(paths: list[Path], out: Path) -> dict:
    """Classic pcap files of one link type, records one after another, into ``out``
    (tcpreplay replays one file); pcapng and other link types are left out and named. Frames
    longer than :data:`MAX_FRAME` (which the veth cannot carry) are counted."""
    magics = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">"}
    header, packets, longer, skipped = None, 0, 0, []
    with open(out, "wb") as sink:
        for path in paths:
            data = path.read_bytes()
            order = magics.get(data[:4])
            if order is None or (header is not None and data[:24][20:24] != header[20:24]):
                skipped.append(path.name)
                continue
            if header is None:
                header = data[:24]
                sink.write(header)
            at = 24
            while at + 16 <= len(data):
                size = int.from_bytes(data[at + 8 : at + 12], "little" if order == "<" else "big")
                sink.write(data[at : at + 16 + size])
                packets += 1
                longer += size > MAX_FRAME
                at += 16 + size
    return {
        "files": len(paths) - len(skipped),
        "packets": packets,
        "frames_over_mtu": longer,
        "left_out": skipped,
    }


def truncate_to_mtu(pcap: Path, out: Path) -> None:
    """``pcap`` with every frame longer than :data:`MAX_FRAME` cut to it (tcprewrite
    ``--mtu-trunc``; :func:`concatenate` counted them)."""
    L._sh(["tcprewrite", "--mtu=1500", "--mtu-trunc", "-i", str(pcap), "-o", str(out)])


def _unique(argv: list[str]) -> list[str]:
    """tcpreplay's command with ``--unique-ip``: each loop rewrites the addresses, so a loop's
    flows are new flows rather than more packets of the last loop's (a capture of 10 k
    packets looped for a minute would otherwise be a few thousand long flows)."""
    return [*argv[:-1], "--unique-ip", argv[-1]]


def one_rate(
    pcap: Path,
    model: Path,
    pps: float,
    seconds: float,
    timeouts: list[str],
    extra: tuple[str, ...] = (),
) -> dict:
    """Replay ``pcap`` at ``pps`` for ``seconds`` onto a fresh sensor; what it measured."""
    out = Path(tempfile.mkdtemp(prefix="sclab-bench-"))
    events, errors = out / "events.jsonl", out / "stderr.txt"
    procs = L.Processes()
    try:
        L._sh(["ip", "netns", "add", NETNS])
        L._sh(
            [
                "ip",
                "-n",
                NETNS,
                "link",
                "add",
                REPLAY_IF,
                "type",
                "veth",
                "peer",
                "name",
                CAPTURE_IF,
            ]
        )
        for link in ("lo", REPLAY_IF, CAPTURE_IF):
            L._sh(["ip", "-n", NETNS, "link", "set", link, "up"])
        argv = [
            "ip", "netns", "exec", NETNS, *SCULPT, "watch", str(model), "--interface", CAPTURE_IF,
            *timeouts, "--metrics-port", str(METRICS_PORT), "-o", str(events), "--json", *extra,
        ]  # fmt: skip
        with open(errors, "wb") as err:
            sensor = procs.start(argv, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 60
        while b"watching interface" not in errors.read_bytes():
            if sensor.poll() is not None or time.monotonic() > deadline:
                raise L.LabError(f"sculpt watch did not start: {errors.read_text()}")
            time.sleep(0.1)
        time.sleep(2.0)
        lags: list[float] = []
        rss: list[tuple[float, int]] = []
        done = threading.Event()

        def poll() -> None:
            began = time.monotonic()
            while not done.wait(1.0):
                # The metrics listen on the namespace's loopback: curl from inside it.
                text = subprocess.run(
                    ["ip", "netns", "exec", NETNS, "curl", "-s", "--max-time", "1",
                     f"http://127.0.0.1:{METRICS_PORT}/metrics"],
                    capture_output=True, text=True, check=False,
                ).stdout  # fmt: skip
                lag = _lag(text)
                now = time.monotonic() - began
                if lag is not None:
                    lags.append((now, lag))
                if not rss or now - rss[-1][0] >= 10:
                    value = _rss_kib(sensor.pid)
                    if value is not None:
                        rss.append((now, value))

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        loops = 100_000
        replay = subprocess.run(
            ["ip", "netns", "exec", NETNS,
             *_unique(L.tcpreplay_argv(REPLAY_IF, pcap, pps=pps, loop=loops, duration=seconds))],
            capture_output=True, text=True, check=False, timeout=seconds + 120,
        )  # fmt: skip
        if replay.returncode != 0:
            raise L.LabError(f"tcpreplay failed: {replay.stderr.strip()[-400:]}")
        sent = L.parse_tcpreplay(replay.stdout)
        time.sleep(float(timeouts[1]) + 3 if timeouts else 5)  # the last flows end
        done.set()
        poller.join()
        os.killpg(sensor.pid, signal.SIGTERM)
        rc = sensor.wait(120)
        procs.forget(sensor)
        text = errors.read_text()
        if rc != 0:
            raise L.LabError(f"sculpt watch exited {rc}: {text[-2000:]}")
        summary = json.loads(text[text.index("{\n") :])
        latency = []
        for line in events.read_text().splitlines():
            event = json.loads(line).get("event", {})
            if event.get("kind") == "alert" and "end" in event and "created" in event:
                created = datetime.fromisoformat(event["created"].replace("Z", "+00:00"))
                ended = datetime.fromisoformat(event["end"].replace("Z", "+00:00"))
                latency.append((created - ended).total_seconds())
        return {
            "pps_asked": pps,
            "tcpreplay": sent,
            "flows": summary["flows"],
            "alerts": summary["alerts"],
            "capture_drops": summary.get("capture_drops", 0),
            "shed": summary["shed"],
            "lag_max_s": max(lag for _, lag in lags) if lags else None,
            # When the lag was over 1 s (seconds since the replay began, and the lag): a
            # first batch waits for numba's and torch's first calls, a steady one does not.
            "lag_over_1s": [(round(t), round(lag, 2)) for t, lag in lags if lag > 1.0],
            "lag_p50_s": float(np.median([lag for _, lag in lags])) if lags else None,
            "latency_s": {
                "p50": float(np.percentile(latency, 50)) if latency else None,
                "p99": float(np.percentile(latency, 99)) if latency else None,
                "n": len(latency),
            },
            "rss_mib": [(round(t), round(v / 1024, 1)) for t, v in rss],
        }
    finally:
        procs.end_all()
        L.teardown([NETNS])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("pcaps", type=Path, nargs="+", help="classic pcap files, concatenated")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--pps", type=float, nargs="+", required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--idle-timeout", type=int, default=5)
    parser.add_argument("--active-timeout", type=int, default=10)
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument(
        "--sensor-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="one more argument for `sculpt watch` (repeat: --sensor-arg=--no-explain)",
    )
    parser.add_argument(
        "--mtu-trunc",
        action="store_true",
        help="cut frames longer than the veth's MTU (a lab capture's offloaded segments)",
    )
    args = parser.parse_args(argv)
    missing = L.missing_requirements(replay=True)
    if missing:
        print("cannot replay: " + "; ".join(missing), file=sys.stderr)
        return 2
    L.install_signal_handlers()
    timeouts = [
        "--idle-timeout",
        str(args.idle_timeout),
        "--active-timeout",
        str(args.active_timeout),
    ]
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    header = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": commit,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg(),
        "notice": "the captures given, looped by tcpreplay with new addresses each loop "
        "(--unique-ip): a throughput measurement, not a detection one",
        "timeouts_s": [args.idle_timeout, args.active_timeout],
        "sensor_args": args.sensor_arg,
    }
    pcap = Path(tempfile.mkdtemp(prefix="sclab-bench-")) / "replayed.pcap"
    header["capture"] = concatenate(args.pcaps, pcap)
    if args.mtu_trunc:
        cut = pcap.with_name("replayed-mtu.pcap")
        truncate_to_mtu(pcap, cut)
        header["capture"]["cut_to_mtu"] = True
        pcap = cut
    print(json.dumps(header))
    results = []
    for pps in args.pps:
        result = one_rate(pcap, args.model, pps, args.seconds, timeouts, tuple(args.sensor_arg))
        result["load_average_after"] = os.getloadavg()
        results.append(result)
        print(json.dumps(result), flush=True)
    if args.json:
        args.json.write_text(json.dumps({**header, "runs": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
