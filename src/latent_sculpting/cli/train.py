"""``sculpt train``: fit a detector on flow records of any format and save one model file."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from latent_sculpting.cli.adapt import add_benign_flags, describe_adaptation
from latent_sculpting.cli.common import (
    add_aliases,
    add_input_flags,
    add_model_flags,
    add_threads_flag,
    apply_threads,
    check_model,
    model_overrides,
    warn_cleaning,
)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a detector on flow records (CIC-IDS-2017, Zeek, NetFlow, any table)",
        description="Fit the detector on labelled flows (benign + known attacks), or on "
        "benign-only flows, calibrate its threshold on held-out benign flows and save it to "
        "one model file. Prints what became of every input column.",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        help="flow files or folders: CSV, Parquet, Zeek logs, packet captures (default: the "
        "embedded CIC-IDS-2017 sample)",
    )
    add_input_flags(parser)
    parser.add_argument(
        "--benign-extra",
        nargs="+",
        metavar="FLOWS",
        help="benign flows of the network the model is for, when the training data comes from "
        "elsewhere (a public dataset, another site): half of them are trained on with the "
        "data, half are held out to set the threshold, the fusion's references and the "
        "drift bins, so that --target-fpr holds for future benign flows of that network that "
        "are exchangeable with these (the same mix of devices, services and times). Every one "
        "is learned as benign",
    )
    add_benign_flags(parser)
    add_model_flags(parser)
    parser.add_argument(
        "--target-fpr",
        type=float,
        metavar="ALPHA",
        help="set the threshold by split conformal calibration on held-out benign flows so "
        "that the false-positive rate on new benign flows like them is at most ALPHA "
        "(e.g. 0.01)",
    )
    parser.add_argument(
        "--coarse-threshold",
        action="store_true",
        help="accept a threshold coarser than --target-fpr when too few benign flows are held "
        "out for it (its false-positive rate is then at most 1/(n+1) for n calibration flows, "
        "printed; same as --set coarse_threshold=true)",
    )
    parser.add_argument(
        "--calibration",
        choices=("train", "holdout"),
        help="where thresholds and p-values come from: benign flows held out from training "
        "(holdout) or the benign training flows (train, the paper); default: the preset's, "
        "holdout whenever --target-fpr is given (same as --set calibration=...)",
    )
    parser.add_argument(
        "--calibration-fraction",
        type=float,
        metavar="F",
        help="share of benign flows held out for calibration (default: the preset's, 0.2; "
        "same as --set calibration_fraction=F)",
    )
    parser.add_argument(
        "--context",
        metavar="SCALES",
        help="add context features: what each flow's source host, host pair and destination "
        "service did just before it (flow counts, distinct destinations and ports, failed "
        "share, sizes, regularity), at time scales in seconds: 'on' (10,60,600), 'off', or a "
        "list such as 30,300. Needs complete captures whose records carry start time and "
        "endpoints; the files of --data are one run, read in time order (same as --set "
        "context=...; default: the preset's, off but for default-context)",
    )
    parser.add_argument(
        "--max-per-class",
        type=int,
        metavar="N",
        help="train on at most N random rows of each label (a quick slice)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", help="torch device (default auto; same as --set device=...)")
    parser.add_argument(
        "-o", "--output", required=True, metavar="MODEL", help="model file to write"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument(
        "--json",
        action="store_true",
        help="print the summary as JSON, with what reading changed (values replaced by 0 per "
        "column, flows left out)",
    )
    add_threads_flag(parser)
    add_aliases(parser, ("calibration", "calibration_fraction", "device", "context"))
    return parser


def run(args: argparse.Namespace) -> int:
    from latent_sculpting.cli.adapt import warn_coarse
    from latent_sculpting.data import sample_path
    from latent_sculpting.io.readers import list_flow_files
    from latent_sculpting.serve.outputs import check_output
    from latent_sculpting.train import context_setting, fit_training_data, read_training_data

    started = time.perf_counter()
    overrides = apply_threads(args, model_overrides(args))
    if args.target_fpr is not None:
        # holdout unless asked otherwise; the parameter checks refuse target_fpr with train
        overrides.setdefault("calibration", "holdout")
        overrides["target_fpr"] = args.target_fpr
    if args.coarse_threshold:
        overrides["coarse_threshold"] = True
    check_model(args.preset, overrides)
    files = list_flow_files(args.data if args.data else sample_path())
    extra_files = list_flow_files(args.benign_extra) if args.benign_extra else []
    check_output(args.output, inputs=[*files, *extra_files], what="model file")
    data = read_training_data(
        files,
        format=args.format,
        label_column=args.label_column,
        benign_label=args.benign_label,
        unlabelled=args.unlabeled,
        drop=args.drop,
        keep=args.keep,
        max_categories=args.max_categories,
        max_per_class=args.max_per_class,
        benign_extra=extra_files,
        benign_rows_only=args.benign_rows_only,
        seed=args.seed,
        context=context_setting(args.preset, overrides),
    )
    spec = data.table.spec
    if not args.quiet:
        print(spec.summary(), file=sys.stderr)
    warn_cleaning("train", data.table.report.to_dict())
    if data.extra is not None:
        warn_cleaning("train --benign-extra", data.extra.report.to_dict())
    model = fit_training_data(
        data,
        preset_name=args.preset,
        overrides=overrides,
        seed=args.seed,
        verbose=not args.quiet,
        max_per_class=args.max_per_class,
    )
    for notice in data.notices:
        print(f"sculpt train: warning: {notice}", file=sys.stderr)
    path = model.save(args.output)
    warn_coarse(model, "sculpt train")
    if args.json:
        summary = {
            "model": str(path),
            **model.training_info_,
            "format": spec.format,
            "features": model.n_features_in_,
            "score": model.score,
            "threshold": float(model.threshold_),
            "seconds": time.perf_counter() - started,
            "spec": spec.to_dict(),
            "cleaning": data.table.report.to_dict(),
        }
        if data.extra is not None:
            summary["benign_extra"] = {
                **summary["benign_extra"],
                "cleaning": data.extra.report.to_dict(),
            }
        print(json.dumps(summary, indent=2, default=str))
        return 0
    _print_summary(model, path, time.perf_counter() - started)
    if data.extra is not None and not args.quiet:
        record = model.training_info_["adaptations"][-1]
        print("--benign-extra: " + describe_adaptation(model, record).replace("\n", "\n  "))
    return 0


def _print_summary(model: Any, path: Any, seconds: float) -> None:
    info = model.training_info_
    counts = ", ".join(f"{k} {v:,}" for k, v in list(info["label_counts"].items())[:8])
    more = len(info["label_counts"]) - 8
    rule = (
        f"split-conformal, target FPR {model.target_fpr:g}"
        if model.target_fpr is not None
        else f"P{model.percentile:g} of benign {model.calibration} scores"
    )
    print(
        f"trained on {info['rows']:,} rows from {len(info['files'])} file(s) "
        f"({model.spec_.format}): {counts}{f' (+{more} more labels)' if more > 0 else ''}\n"
        f"features: {model.n_features_in_} | score: {model.score}\n"
        f"threshold: {model.threshold_:.6g} ({rule}); calibration flows: "
        f"{len(model.calibration_scores_):,}\n"
        f"model written to {path} in {seconds:.1f} s"
    )
