"""``sculpt adapt``: adapt a saved model to another network from benign flows of that network."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from latent_sculpting.cli.common import add_threads_flag, warn_cleaning

LEARNED_AS_BENIGN = (
    "every flow given is learned as benign traffic of the new network: an attack hidden among "
    "them will not be flagged afterwards"
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "adapt",
        help="adapt a saved model to another network from benign flows of that network",
        description="Keep what MODEL learned about attacks (Stage 1, the random forest, the "
        "boosted trees, the stacked rule's weights) and refit what describes benign traffic "
        "(the benign density, the distance to benign prototypes, the fusion's references, the "
        "conformal threshold, the drift bins) on flows of the new network that you declare "
        "benign. The new threshold is split-conformal on part of those flows, held "
        f"out of every fit. Warning: {LEARNED_AS_BENIGN}.",
    )
    parser.add_argument("model", help="model file written by `sculpt train` (or `sculpt adapt`)")
    parser.add_argument(
        "--benign",
        nargs="+",
        required=True,
        metavar="FLOWS",
        help="benign flow files or folders of the new network, in the model's input format "
        "(about 1,000 flows or more). The new threshold keeps the model's false-alarm target for "
        "future benign flows of that network if they are exchangeable with these: the same mix "
        "of devices, services and times, as if drawn at random from the same period",
    )
    parser.add_argument(
        "-o", "--output", required=True, metavar="NEW_MODEL", help="adapted model file to write"
    )
    add_benign_flags(parser)
    parser.add_argument(
        "--calibration-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="share of the benign flows held out of every fit to place the fusion's tails "
        "and set the threshold (default 0.5)",
    )
    parser.add_argument(
        "--coarse-threshold",
        action="store_true",
        help="accept a threshold coarser than the model's target FPR when too few flows are "
        "held out for it (its false-positive rate is then at most 1/(n+1) for n calibration "
        "flows, printed)",
    )
    parser.add_argument(
        "--keep-training-prototypes",
        action="store_true",
        help="keep the benign prototypes of the training flows beside the new ones: for the "
        "same network later rather than another network, where it can hide attacks that look "
        "like the training network's benign traffic (docs/guides/usage.md)",
    )
    parser.add_argument(
        "--fresh-flow",
        action="store_true",
        help="fit the benign density (the flow) afresh on the new flows instead of fine-tuning "
        "the trained one (what adapt did before; with many new flows a fresh fit is as long "
        "as training's)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the adaptation's record as JSON, with what reading changed (values "
        "replaced by 0 per column, flows left out)",
    )
    add_threads_flag(parser)
    return parser


def add_benign_flags(parser: argparse.ArgumentParser) -> None:
    """``--benign-rows-only``: what to do with labelled attacks among declared-benign flows."""
    parser.add_argument(
        "--benign-rows-only",
        action="store_true",
        help="when the benign flows carry labels, use the rows labelled benign and leave the "
        "others out (default: refuse flows labelled as attacks)",
    )


def run(args: argparse.Namespace) -> int:
    from latent_sculpting.io.readers import list_flow_files
    from latent_sculpting.model.estimator import LatentSculpting
    from latent_sculpting.serve.outputs import check_output
    from latent_sculpting.train import adapt_from_files

    files = list_flow_files(args.benign)
    check_output(args.output, inputs=[args.model, *files], what="model file")
    model = LatentSculpting.load(args.model, device=args.device)
    print(f"sculpt adapt: warning: {LEARNED_AS_BENIGN}", file=sys.stderr)
    record, table, left_out = adapt_from_files(
        model,
        files,
        benign_rows_only=args.benign_rows_only,
        keep_training_prototypes=args.keep_training_prototypes,
        fresh_flow=args.fresh_flow,
        calibration_fraction=args.calibration_fraction,
        random_state=args.seed,
        coarse_threshold=True if args.coarse_threshold else None,
    )
    warn_cleaning("adapt", table.report.to_dict())
    if left_out and not (args.quiet or args.json):
        shown = ", ".join(f"{label} {n:,}" for label, n in left_out.most_common())
        print(f"left out {sum(left_out.values()):,} flows labelled as attacks: {shown}")
    path = model.save(args.output)
    if args.json:
        summary = {"model": str(path), **record, "cleaning": table.report.to_dict()}
        print(json.dumps(summary, indent=2, default=str))
    elif not args.quiet:
        print(describe_adaptation(model, record))
        print(f"adapted model written to {path}")
    warn_coarse(model, "sculpt adapt")
    return 0


def describe_adaptation(model: Any, record: dict[str, Any]) -> str:
    """What ``sculpt adapt`` (and ``sculpt train --benign-extra``) print about an adaptation."""
    from latent_sculpting.model.calibration import effective_fpr

    rows = record["rows"]
    target = effective_fpr(model.target_fpr, model.percentile)
    before = record["flagged_before"]
    density = (
        "the benign prototypes (no flow)"
        if record.get("flow") == "none"
        else f"the benign density (the flow {record.get('flow', 'refit')}"
        + (f", {record['flow_epochs']} epochs" if record.get("flow_epochs") else "")
        + ")"
    )
    lines = [
        f"benign flows of the new network: {rows:,} ({record['fit_rows']:,} refit "
        f"{density}, {record['reference_rows']:,} place the fusion's tails, "
        f"{record['calibration_rows']:,} set the threshold)"
        if record["refit"]
        else f"benign flows of the new network: {rows:,} ({record['reference_rows']:,} place "
        f"the fusion's tails, {record['calibration_rows']:,} set the threshold)",
        f"before: the model flagged {before:,} of them ({100 * before / rows:.1f} %; target "
        f"{100 * target:g} %)",
    ]
    if record.get("flow_fine_tune_refused"):
        lines.append(f"flow: {record['flow_fine_tune_refused']}")
    drift = record.get("drift_before")
    if drift is not None:
        moved = drift["moved_features"]
        shown = ", ".join(moved[:5]) + (f" and {len(moved) - 5} more" if len(moved) > 5 else "")
        verdict = "unlike" if drift["drifted"] else "like"
        lines.append(
            f"drift check before: they look {verdict} the training traffic (features moved: "
            f"{shown or 'none'})"
        )
    old = record["threshold_before"]
    rule = (
        "split-conformal"
        if model.target_fpr is not None
        else f"P{model.percentile:g} of the scores of"
    )
    lines.append(
        f"threshold: {'inf' if old is None else f'{old:.6g}'} -> {model.threshold_:.6g} "
        f"({rule} on {record['calibration_rows']:,} held-out flows)"
    )
    return "\n".join(lines)


def warn_coarse(model: Any, command: str) -> None:
    """Say on stderr when the threshold is coarser than the target FPR, and how coarse."""
    from latent_sculpting.model.calibration import conformal_rows

    n = len(model.calibration_scores_)
    if model.target_fpr is not None and n < conformal_rows(model.target_fpr):
        print(
            f"{command}: warning: {n:,} calibration flows cannot guarantee target FPR "
            f"{model.target_fpr:g}; the threshold is the largest of their scores, whose "
            f"false-positive rate is at most 1/(n+1) = {1 / (n + 1):.3g}",
            file=sys.stderr,
        )
