"""``sculpt incidents``: measure how often benign hosts raise incidents (the calibration that
``--target-incidents`` reads), and the grouping flags other commands share."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "incidents",
        help="calibrate a model's incidents on held-out benign flows (false incidents per "
        "benign host-day)",
        description="Score held-out benign flow files (with start times and addresses: Zeek "
        "conn.logs, NetFlow, nfstream, CIC-IDS-2017 with Timestamp) with a saved model, group "
        "the flagged flows into incidents as `sculpt score --incidents` does, and write how "
        "often benign hosts raise incidents of each score, per benign host-day, to a small JSON "
        "file beside the model (MODEL.incidents.json). Rows not labelled benign, and every "
        "flow of a host that sent one, are left out (counted). Use files the model was not "
        "trained on, such as a later day of the same network.",
    )
    parser.add_argument("model", help="model file written by `sculpt train`")
    parser.add_argument("inputs", nargs="+", metavar="FILE", help="benign flow files, or folders")
    parser.add_argument(
        "-o", "--output", help="calibration file (default MODEL.incidents.json beside the model)"
    )
    parser.add_argument(
        "--window-s",
        type=float,
        default=3600.0,
        metavar="S",
        help="host-window length: a host's benign time is the windows in which it sent a flow, "
        "each counted for the part its capture covers (default 3600)",
    )
    parser.add_argument("--batch-rows", type=int, default=65_536, metavar="N")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--json", action="store_true", help="print the calibration as JSON")
    add_grouping_flags(parser, target=False)
    return parser


def add_grouping_flags(parser: argparse.ArgumentParser, *, target: bool = True) -> None:
    """The grouping flags (``--incident-gap`` ...), and ``--target-incidents`` when
    ``target``."""
    group = parser.add_argument_group("incidents")
    group.add_argument(
        "--incident-gap",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds without a flagged flow of a host that close its incident (default 300)",
    )
    group.add_argument(
        "--incident-key",
        choices=("source", "pair"),
        default="source",
        help="group by source host (default) or by source and destination host",
    )
    group.add_argument(
        "--incident-min-flagged",
        type=int,
        default=1,
        metavar="N",
        help="flagged flows an incident needs (default 1)",
    )
    group.add_argument(
        "--incident-window",
        type=float,
        metavar="S",
        help="score an incident by the most evidence it gathers within any S seconds, not by "
        "all of it: a busy benign host's long incident then scores no higher than a short "
        "one (default: all of it)",
    )
    group.add_argument(
        "--incident-lateness",
        type=float,
        default=0.0,
        metavar="S",
        help="extra seconds an incident waits for flows logged out of time order (default 0)",
    )
    if target:
        group.add_argument(
            "--incident-calibration",
            metavar="JSON",
            help="calibration from `sculpt incidents` (default MODEL.incidents.json, if any)",
        )
        group.add_argument(
            "--target-incidents",
            type=float,
            metavar="R",
            help="report only incidents that benign hosts raise at most R times a day "
            "(false incidents per benign host-day; needs a calibration)",
        )


def config_from_args(args: argparse.Namespace):  # noqa: ANN201 - IncidentConfig, lazily imported
    """The :class:`~latent_sculpting.monitor.incidents.IncidentConfig` the flags ask for."""
    from latent_sculpting.monitor.incidents import IncidentConfig

    return IncidentConfig(
        gap_s=args.incident_gap,
        key=args.incident_key,
        min_flagged=args.incident_min_flagged,
        lateness_s=args.incident_lateness,
        window_s=args.incident_window,
        target_incidents=getattr(args, "target_incidents", None),
    )


def refuse_unused_incident_flags(args: argparse.Namespace, switch: str) -> None:
    """``--target-incidents`` and ``--incident-calibration`` mean nothing without ``switch``
    (the flag that turns incidents on): say so rather than ignore them."""
    if args.target_incidents is not None or args.incident_calibration is not None:
        raise ValueError(f"--target-incidents and --incident-calibration need {switch}")


def calibration_from_args(args: argparse.Namespace, model):  # noqa: ANN001, ANN201
    """The calibration ``--incident-calibration`` names, else the model's default file when
    it exists, else None; ``--target-incidents`` without one is an error."""
    from pathlib import Path

    from latent_sculpting.monitor.incident_calibration import calibration_path, load_calibration

    path = args.incident_calibration
    if path is None and calibration_path(args.model).is_file():
        path = calibration_path(args.model)
    if path is None:
        if args.target_incidents is not None:
            raise ValueError(
                "--target-incidents needs an incident calibration: run `sculpt incidents "
                f"{args.model} BENIGN_FILES...` (it writes {calibration_path(args.model)}), or "
                "name one with --incident-calibration"
            )
        return None
    return load_calibration(Path(path), model)


def describe_target(calibration, target: float) -> str:  # noqa: ANN001 - IncidentCalibration
    """What ``--target-incidents`` means with this calibration: the score reported at least,
    and whether the calibration can resolve the target at all."""
    text = (
        f"target {target:g} false incidents per benign host-day: incidents scoring >= "
        f"{calibration.threshold(target):.4g}"
    )
    if 0 < target < calibration.resolution:
        text += (
            f" (the calibration resolves rates down to {calibration.resolution:.3g} per "
            "host-day only: these are the incidents above every benign one it saw; a longer "
            "benign calibration resolves lower rates)"
        )
    return text


def describe_incidents(summary: dict) -> str:
    """The line ``sculpt score`` prints about the incidents it wrote."""
    n = summary["incidents"]
    text = f"incidents: {n:,} written to {summary['file']}"
    if summary["calibrated"]:
        if summary["threshold"] is not None:
            text += (
                f" (target {summary['target_incidents']:g} false incidents per benign host-day: "
                f"score >= {summary['threshold']:.4g}; {summary['suppressed']:,} below it left "
                "out)"
            )
        else:
            text += " (calibrated: each has its rate of false incidents per benign host-day)"
    else:
        text += (
            " (grouped but uncalibrated: no incident calibration for this model, so no rate "
            "of false incidents; `sculpt incidents` measures one)"
        )
    for key, what in (
        ("evicted", "closed early (budget of open incidents)"),
        ("late_flows", "flows out of time order"),
    ):
        if summary[key]:
            text += f"; {summary[key]:,} {what}"
    return text


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from latent_sculpting.model.estimator import LatentSculpting
    from latent_sculpting.monitor.incident_calibration import calibration_path, save_calibration
    from latent_sculpting.serve.incident_runs import measure_calibration

    if args.batch_rows < 1:
        raise ValueError(f"--batch-rows must be at least 1, got {args.batch_rows}")
    model = LatentSculpting.load(args.model, device=args.device)
    calibration = measure_calibration(
        model,
        args.inputs,
        config=config_from_args(args),
        window_s=args.window_s,
        batch_rows=args.batch_rows,
    )
    output = Path(args.output) if args.output else calibration_path(args.model)
    save_calibration(calibration, output)
    if args.json:
        print(json.dumps({**calibration.to_dict(), "file": str(output)}, indent=2))
        return 0
    left_out = {k: v for k, v in calibration.excluded.items() if v}
    if left_out:
        print(f"sculpt incidents: left out {left_out}", file=sys.stderr)
    print(calibration.summary())
    for target in (10.0, 1.0, 0.1):
        if target >= calibration.resolution:
            print(
                f"  --target-incidents {target:g}: incidents scoring >= "
                f"{calibration.threshold(target):.4g}"
            )
    print(f"written to {output}")
    return 0
