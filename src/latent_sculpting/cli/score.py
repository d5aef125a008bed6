"""``sculpt score``: score flow files with a saved model, in constant memory."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from latent_sculpting.cli.common import add_threads_flag, threads_from_args, warn_cleaning
from latent_sculpting.cli.incidents import add_grouping_flags, refuse_unused_incident_flags


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "score",
        help="score flow files with a saved model into Parquet or CSV",
        description="Stream flow files (CSV, Parquet, Zeek logs, packet captures; read as the "
        "model was trained) in chunks through a saved model and write the input's identifier "
        "columns with score, p_value, is_attack, flagged_by and explanation (the top features "
        "of each flagged flow, with their values and how unusual each is among benign "
        "training flows; and the label column when the input has one) to a temporary file "
        "renamed into place at the end. The scored flows are compared with the model's benign "
        "training traffic: a verdict on stderr, the report in OUTPUT.drift.json (local engine) "
        "or the run's summary (ray engine).",
    )
    parser.add_argument("model", help="model file written by `sculpt train`")
    parser.add_argument("inputs", nargs="+", metavar="FILE", help="flow files, or folders of them")
    parser.add_argument(
        "-o",
        "--output",
        required=True,
        help="output .parquet or .csv file (local engine); output folder (ray engine)",
    )
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=65_536,
        metavar="N",
        help="rows scored at a time (default 65536)",
    )
    parser.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default): one process, one output file; ray: files "
        "scored in parallel on a Ray cluster, one output per input",
    )
    parser.add_argument("--address", help="Ray cluster address (ray engine; default: local)")
    parser.add_argument(
        "--num-workers", type=int, metavar="N", help="Ray scoring workers (ray engine)"
    )
    parser.add_argument(
        "--fail-fast",
        action="store_true",
        help="ray engine: stop at the first file that fails instead of "
        "scoring the others (the local engine always stops, writing nothing)",
    )
    parser.add_argument(
        "--no-explain",
        dest="explain",
        action="store_false",
        help="no explanation column (explaining costs at most about as much again as scoring)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_threads_flag(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the summary (with the drift report) as JSON"
    )
    parser.add_argument(
        "--no-drift",
        action="store_true",
        help="do not compare the scored flows with the model's benign training traffic",
    )
    parser.add_argument(
        "--incidents",
        metavar="JSONL",
        help="also group the flagged flows into incidents (by source host and time gap), "
        "one JSON object a line, with their start, end, flows (output rows, 0-based), "
        "evidence and a one-sentence explanation (local engine; the input needs start times "
        "and addresses)",
    )
    add_grouping_flags(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.batch_rows < 1:
        raise ValueError(f"--batch-rows must be at least 1, got {args.batch_rows}")
    if args.engine == "ray":
        if not args.explain:
            raise ValueError(
                "--no-explain is for the local engine; the ray engine explains the flagged "
                "flows of every model that holds a benign profile"
            )
        if args.incidents:
            raise ValueError("--incidents is for the local engine")
        return _run_ray(args)
    from latent_sculpting.cli.incidents import (
        calibration_from_args,
        config_from_args,
        describe_incidents,
    )
    from latent_sculpting.model.density.fastpath import set_scoring_workers
    from latent_sculpting.model.estimator import LatentSculpting
    from latent_sculpting.serve.engines.local import score_files
    from latent_sculpting.serve.scoring import NO_PROFILE, default_explainer
    from latent_sculpting.threads import limit_threads

    model = LatentSculpting.load(args.model, device=args.device)
    if args.explain and default_explainer(model) is None:
        print(f"sculpt score: note: {args.model}: {NO_PROFILE}", file=sys.stderr)
    sink = None
    if args.incidents:
        from latent_sculpting.serve.incident_runs import IncidentSink

        config = config_from_args(args)
        sink = IncidentSink(model, args.incidents, config, calibration_from_args(args, model))
    else:
        refuse_unused_incident_flags(args, "--incidents PATH")
    # Each chunk's blocks are scored by up to --threads worker threads, each with one
    # intra-op thread (latent_sculpting.threads); the scores do not depend on how many.
    previous = set_scoring_workers(threads_from_args(args))
    try:
        with limit_threads(1):
            summary = score_files(
                model,
                args.inputs,
                args.output,
                batch_rows=args.batch_rows,
                progress=not args.quiet,
                explain=args.explain,
                drift=not args.no_drift,
                on_batch=sink,
            )
        if sink is not None:
            summary["incidents"] = sink.close()
            sink = None
    finally:
        set_scoring_workers(previous)
        if sink is not None:
            sink.discard()
    warn_cleaning("score", summary["cleaning"])
    if not args.no_drift:
        print_drift(summary["drift"], summary["drift_file"], quiet=args.quiet)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    if "incidents" in summary:
        print(describe_incidents(summary["incidents"]), file=sys.stderr)
    print(
        f"scored {summary['rows']:,} flows from {len(summary['files'])} file(s) in "
        f"{summary['seconds']:.1f} s ({summary['rows_per_second']:,.0f} rows/s)\n"
        + flagged_line(summary, stage1=bool(getattr(model, "stage1", False)))
    )
    if "labelled" in summary:
        lab = summary["labelled"]
        parts = []
        if lab["benign_rows"]:
            fpr = lab["benign_flagged"] / lab["benign_rows"]
            parts.append(
                f"benign flagged {lab['benign_flagged']:,}/{lab['benign_rows']:,} "
                f"(FPR {100 * fpr:.2f} %)"
            )
        if lab["attack_rows"]:
            tpr = lab["attack_flagged"] / lab["attack_rows"]
            parts.append(
                f"attacks flagged {lab['attack_flagged']:,}/{lab['attack_rows']:,} "
                f"(recall {100 * tpr:.2f} %)"
            )
        print(f"labels ({lab['label_column']!r}): " + ", ".join(parts))
    print(f"written to {summary['output']}")
    return 0


def print_drift(report: dict | None, where: str | None, *, quiet: bool = False) -> None:
    """The drift verdict on stderr: a warning (the traffic moved, with the features that did;
    or many flows flagged, with what that can and cannot mean), or (unless ``quiet``) one line
    saying there is none."""
    if report is None:
        print(
            "sculpt score: note: this model file has no drift bins (written by an older "
            "version); retrain it to compare scored traffic with its training traffic",
            file=sys.stderr,
        )
        return
    n = report["n_flows"]
    counted = f"{n:,} flows" if report["counted"] == "all flows" else f"{n:,} {report['counted']}"
    if not report["warning"]:
        if not quiet:
            print(f"drift check ({counted}): {report['consequence']}", file=sys.stderr)
        return
    what = "drift" if report["drifted"] else "many flows flagged"
    lines = [f"sculpt score: warning: {what} ({counted}): {report['consequence']}"]
    lines += [f"  - {reason}" for reason in report["reasons"]]
    if where is not None:
        lines.append(f"  report: {where}")
    lines.append(
        "  if this traffic is benign traffic of another network, `sculpt adapt` recalibrates "
        "the model to it (docs/guides/usage.md, 'Adapting to your network')"
    )
    print("\n".join(lines), file=sys.stderr)


def _run_ray(args: argparse.Namespace) -> int:
    try:
        from latent_sculpting.serve.engines.ray import SUMMARY_FILE, score_with_ray
    except ImportError as error:
        raise ValueError(
            f"--engine ray needs Ray: install latent-sculpting[ray] ({error})"
        ) from None
    try:
        result = score_with_ray(
            args.model,
            args.inputs,
            args.output,
            address=args.address,
            num_workers=args.num_workers,
            batch_rows=args.batch_rows,
            fail_fast=args.fail_fast,
            progress=not args.quiet,
        )
    except ImportError as error:
        # The engine imports Ray only when it runs; without it, say what to install.
        raise ValueError(
            f"--engine ray needs Ray: install latent-sculpting[ray] ({error})"
        ) from None
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
        if result.get("files_scored") and not args.no_drift:
            print_drift(result["drift"], str(Path(args.output) / SUMMARY_FILE), quiet=args.quiet)
    failed = (result or {}).get("failed") or []
    if failed:
        # The other shards are written; a non-zero exit lets scripts notice the rest.
        print(
            f"sculpt score: {len(failed)} input file(s) failed; see the summary above",
            file=sys.stderr,
        )
        return 1
    return 0


def flagged_line(summary: dict, *, stage1: bool) -> str:
    """The summary's count of flagged flows; which stage flagged them only for a model with a
    Stage-1 rule (for the others every flow is "stage 2", which says nothing)."""
    line = f"flagged {summary['flagged']:,} ({100 * summary['flagged_share']:.2f} %)"
    if stage1:
        by = summary["flagged_by"]
        line += f": stage 1 {by['stage1']:,}, stage 2 {by['stage2']:,}"
    return line
