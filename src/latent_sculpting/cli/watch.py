"""``sculpt watch``: a live sensor that scores flows as they arrive and writes ECS alerts."""

from __future__ import annotations

import argparse
import json
import sys

from latent_sculpting.cli.common import (
    add_meter_flags,
    add_threads_flag,
    meter_settings_from_args,
    threads_from_args,
    warn_cleaning,
)
from latent_sculpting.cli.incidents import add_grouping_flags


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "watch",
        help="score live flows (an interface, captures, Zeek's conn.log, stdin) into alerts",
        description="A long-running sensor: flows from a network interface (nfstream), packet "
        "captures, a Zeek log folder (conn.log followed across rotation) or stdin ('-': JSON "
        "lines or CSV) are scored in micro-batches (after --batch-rows flows or --max-delay-ms, "
        "whichever comes first) and every flagged flow is written as a JSON line with Elastic "
        "Common Schema names, to stdout or a rotating file. Corrupt records are counted, "
        "reported and set aside; SIGHUP reloads the model file; SIGTERM/SIGINT score what is "
        "pending and exit 0. Exactly one source.",
    )
    parser.add_argument("model", help="model file written by `sculpt train` or `sculpt adapt`")
    source = parser.add_argument_group("source (exactly one)")
    source.add_argument(
        "stdin", nargs="?", choices=["-"], help="'-': flows on stdin, JSON lines or CSV"
    )
    source.add_argument("--pcap", nargs="+", metavar="FILE", help="packet captures to replay")
    source.add_argument(
        "--pace",
        choices=("fast", "capture"),
        default="fast",
        help="--pcap: as fast as possible (default), or at the capture's own timing",
    )
    source.add_argument(
        "--speed", type=float, default=1.0, help="--pace capture: this many times faster"
    )
    source.add_argument(
        "--zeek-dir", metavar="DIR", help="a folder where Zeek writes conn.log (followed)"
    )
    source.add_argument(
        "--from-start",
        action="store_true",
        help="--zeek-dir: read the conn.log there from its first line (default: from its end)",
    )
    source.add_argument("--interface", metavar="IFACE", help="live capture (root or CAP_NET_RAW)")
    source.add_argument(
        "--capture-buffer-mb",
        type=int,
        metavar="MB",
        help="--interface: the kernel's capture buffer, in MiB (default: libpcap's, 2 MiB); a "
        "larger one rides out the meter's pauses, which otherwise drop packets",
    )
    add_meter_flags(parser)
    batching = parser.add_argument_group("batching")
    batching.add_argument("--batch-rows", type=int, default=1024, metavar="N")
    batching.add_argument(
        "--max-delay-ms",
        type=float,
        default=500.0,
        metavar="T",
        help="score a batch when its oldest flow has waited T ms (default 500)",
    )
    batching.add_argument(
        "--max-pending",
        type=int,
        default=65_536,
        metavar="N",
        help="flows read and not yet scored, at most (default 65536): files wait, a live "
        "capture sheds and counts",
    )
    out = parser.add_argument_group("output")
    out.add_argument("-o", "--output", metavar="FILE", help="alert file (default stdout)")
    out.add_argument(
        "--rotate-mb",
        type=float,
        default=100.0,
        metavar="MB",
        help="rotate --output at this size (default 100; 0 never)",
    )
    out.add_argument("--rotate-keep", type=int, default=5, metavar="N", help="rotated files kept")
    out.add_argument(
        "--all-flows", action="store_true", help="write every scored flow, not only alerts"
    )
    out.add_argument("--no-explain", dest="explain", action="store_false")
    out.add_argument("--metrics-port", type=int, metavar="PORT", help="Prometheus /metrics")
    out.add_argument("--metrics-address", default="127.0.0.1", metavar="ADDR")
    out.add_argument(
        "--drift-every",
        type=int,
        default=100_000,
        metavar="N",
        help="a drift verdict every N flows (default 100000) ...",
    )
    out.add_argument(
        "--drift-minutes",
        type=float,
        default=10.0,
        metavar="M",
        help="... or every M minutes with flows (default 10)",
    )
    out.add_argument(
        "--incidents",
        action="store_true",
        help="group flagged flows into incidents (by source host and time gap) and write "
        "each as an ECS alert: event.type 'start' as soon as it is reportable, 'end' when it "
        "closes (same id)",
    )
    out.add_argument("--json", action="store_true", help="the run's summary as JSON on stderr")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_grouping_flags(parser)
    add_threads_flag(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from latent_sculpting.model.density.fastpath import set_scoring_workers
    from latent_sculpting.serve.watch.ecs import EventWriter
    from latent_sculpting.serve.watch.loop import WatchConfig, Watcher
    from latent_sculpting.serve.watch.metrics import WatchMetrics
    from latent_sculpting.threads import limit_threads

    source = _source(args)
    config = WatchConfig(
        batch_rows=args.batch_rows,
        max_delay=args.max_delay_ms / 1000,
        max_pending=args.max_pending,
        drift_every_flows=args.drift_every,
        drift_every_seconds=args.drift_minutes * 60,
        explain=args.explain,
        all_flows=args.all_flows,
    )
    config.check()
    if args.rotate_mb < 0:
        raise ValueError(f"--rotate-mb must be >= 0, got {args.rotate_mb}")
    metrics = WatchMetrics()
    writer = EventWriter(
        args.output, max_bytes=int(args.rotate_mb * (1 << 20)), backups=args.rotate_keep
    )
    from latent_sculpting.model.estimator import LatentSculpting

    incidents = _incident_grouper(args)
    watcher = Watcher(
        args.model,
        source,
        writer,
        config=config,
        metrics=metrics,
        incidents=incidents,
        load=lambda path: LatentSculpting.load(path, device=args.device),
    )
    if args.metrics_port is not None:
        metrics.serve(args.metrics_port, args.metrics_address)
    previous = set_scoring_workers(threads_from_args(args))
    try:
        with limit_threads(1):
            summary = watcher.run()
    finally:
        set_scoring_workers(previous)
        writer.close()
    warn_cleaning("watch", summary["cleaning"])
    if args.json:
        print(json.dumps(summary, indent=2), file=sys.stderr)
    else:
        print(
            f"sculpt watch: {summary['flows']:,} flows scored, {summary['alerts']:,} alerts, "
            f"{summary['incidents']:,} incidents, {summary['corrupt']:,} corrupt records set "
            f"aside, {summary['shed']:,} flows shed, {summary['reloads']:,} reloads "
            f"({summary['stopped_by']})",
            file=sys.stderr,
        )
    return 0


def _source(args: argparse.Namespace):  # noqa: ANN202 - a Source
    from latent_sculpting.serve.watch import sources

    given = [
        name
        for name, value in (
            ("-", args.stdin),
            ("--pcap", args.pcap),
            ("--zeek-dir", args.zeek_dir),
            ("--interface", args.interface),
        )
        if value
    ]
    if len(given) != 1:
        raise ValueError(
            "give exactly one source: --interface IFACE, --pcap FILE..., --zeek-dir DIR or '-' "
            f"(got {', '.join(given) if given else 'none'})"
        )
    if args.capture_buffer_mb is not None and not args.interface:
        raise ValueError("--capture-buffer-mb is for a live capture (--interface)")
    if args.pcap:
        try:
            return sources.PcapSource(
                args.pcap, pace=args.pace, speed=args.speed, settings=meter_settings_from_args(args)
            )
        except ImportError as error:
            raise ValueError(str(error)) from None
    if args.zeek_dir:
        return sources.ZeekDirSource(args.zeek_dir, from_start=args.from_start)
    if args.interface:
        settings = meter_settings_from_args(args)
        if args.capture_buffer_mb is not None:
            settings["socket_buffer_size"] = capture_buffer_bytes(args.capture_buffer_mb)
        return sources.InterfaceSource(args.interface, settings=settings)
    return sources.StdinSource()


def capture_buffer_bytes(megabytes: int) -> int:
    """``--capture-buffer-mb`` in bytes, checked: nfstream takes a positive int32."""
    if isinstance(megabytes, bool) or not isinstance(megabytes, int) or not 1 <= megabytes < 2048:
        raise ValueError(f"--capture-buffer-mb must be a whole number 1..2047, got {megabytes!r}")
    return megabytes << 20


def _incident_grouper(args: argparse.Namespace):  # noqa: ANN202 - IncidentGrouper or None
    """The grouper ``--incidents`` asks for, with the model's calibration when there is one."""
    from latent_sculpting.cli.incidents import (
        calibration_from_args,
        config_from_args,
        describe_target,
        refuse_unused_incident_flags,
    )

    if not args.incidents:
        refuse_unused_incident_flags(args, "--incidents")
        return None
    from latent_sculpting.monitor.incidents import IncidentGrouper

    # Checked against the model by the Watcher, which loads it (here it would be loaded twice).
    calibration = calibration_from_args(args, None)
    if calibration is None:
        print(
            "sculpt watch: incidents are grouped but uncalibrated: no incident calibration "
            "for this model, so no rate of false incidents (`sculpt incidents` measures one)",
            file=sys.stderr,
        )
    elif args.target_incidents is not None:
        print(
            f"sculpt watch: {describe_target(calibration, args.target_incidents)}", file=sys.stderr
        )
    return IncidentGrouper(config_from_args(args), calibration)
