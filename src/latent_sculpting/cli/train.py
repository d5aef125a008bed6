"""``sculpt train``: fit a detector on flow records of any format and save one model file."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from latent_sculpting.cli.adapt import add_benign_flags, describe_adaptation, read_benign_flows
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

#: Share of the ``--benign-extra`` flows held out of every fit, for the tails and the threshold.
EXTRA_HELD_OUT = 0.5


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
    add_aliases(parser, ("calibration", "calibration_fraction", "device"))
    return parser


def run(args: argparse.Namespace) -> int:
    from latent_sculpting import LatentSculpting, __version__
    from latent_sculpting.cli.adapt import warn_coarse
    from latent_sculpting.data import read_flows, sample_path
    from latent_sculpting.io.readers import list_flow_files
    from latent_sculpting.model.channels.registry import SIDE_CHANNELS
    from latent_sculpting.serve.outputs import check_output
    from latent_sculpting.threads import limit_threads

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
    if args.max_per_class is not None and args.max_per_class < 1:
        raise ValueError(f"--max-per-class must be at least 1, got {args.max_per_class}")
    table = read_flows(
        files,
        format=args.format,
        label_column=args.label_column,
        benign_label=args.benign_label,
        unlabelled=args.unlabeled,
        drop=args.drop,
        keep=args.keep,
        max_categories=args.max_categories,
        keep_identifiers=False,  # training never reads them; millions of strings otherwise
    )
    spec = table.spec
    if not args.quiet:
        print(spec.summary(), file=sys.stderr)
    warn_cleaning("train", table.report.to_dict())
    if args.max_per_class is not None:
        table = _cap(table, args.max_per_class, args.seed)
    extra = None
    if extra_files:
        extra, left_out = read_benign_flows(
            extra_files, spec, benign_rows_only=args.benign_rows_only
        )
        warn_cleaning("train --benign-extra", extra.report.to_dict())
        if left_out:
            print(
                f"--benign-extra: left out {sum(left_out.values()):,} flows labelled as attacks",
                file=sys.stderr,
            )

    labels = table.labels
    if labels is None:
        y = np.zeros(len(table), dtype=np.int64)
    else:
        present = set(np.unique(labels).tolist())
        if spec.benign_label not in present:
            shown = sorted(present, key=str)[:20]
            raise ValueError(
                f"benign label {spec.benign_label!r} not found in column "
                f"{spec.label_column!r}; labels present: {shown}. Pass --benign-label"
            )
        y = table.y

    params = {**_preset(args.preset), **overrides}
    params.update(random_state=args.seed, verbose=not args.quiet)
    benign_only = not y.any()
    if benign_only:
        params = _benign_only(params)
        kept = [c.name for c in SIDE_CHANNELS.values() if params[c.parameter] > 0]
        print(
            "sculpt train: warning: no attack rows in the data; fitting the benign side alone "
            f"(the flow{''.join(' and the ' + c + ' channel' for c in kept)}, "
            f"score={params['score']!r}), without a known-attack channel",
            file=sys.stderr,
        )

    model = LatentSculpting(**params)
    groups = labels if labels is not None and not benign_only else None
    X = table.frame()
    if extra is not None:
        extra_fit, extra_held = _split_extra(model, extra, args.seed)
        X = pd.concat([X, extra_fit.frame()], ignore_index=True)
        y = np.r_[y, np.zeros(len(extra_fit), dtype=np.int64)]
        if groups is not None:
            groups = np.r_[groups, np.full(len(extra_fit), spec.benign_label, dtype=object)]
    with limit_threads(1):
        model.fit(X, y, groups=groups, spec=spec)
    counts = table.label_counts() if labels is not None else {"(unlabelled, benign)": len(table)}
    model.training_info_ = {
        "files": [f.name for f in table.files],
        "rows": len(table),
        "label_counts": counts,
        "benign_rows": int((y == 0).sum()),
        "attack_rows": int(y.sum()),
        "max_per_class": args.max_per_class,
        "preset": args.preset,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    if extra is not None:
        model.training_info_["benign_extra"] = {
            "files": [f.name for f in extra.files],
            "rows": len(extra),
            "trained_on": len(extra_fit),
            "held_out": len(extra_held),
        }
        # The threshold, the tails and the drift bins are those of the network the model is for.
        with limit_threads(1):
            model.adapt(extra_held.frame(), refit=False, random_state=args.seed)
    path = model.save(args.output)
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
            "cleaning": table.report.to_dict(),
        }
        if extra is not None:
            summary["benign_extra"] = {
                **summary["benign_extra"],
                "cleaning": extra.report.to_dict(),
            }
        print(json.dumps(summary, indent=2, default=str))
        return 0
    _print_summary(model, path, time.perf_counter() - started)
    warn_coarse(model, "sculpt train")
    if extra is not None and not args.quiet:
        record = model.training_info_["adaptations"][-1]
        print("--benign-extra: " + describe_adaptation(model, record).replace("\n", "\n  "))
    return 0


def _split_extra(model: Any, extra: Any, seed: int) -> tuple[Any, Any]:
    """The ``--benign-extra`` flows to train on and those held out for calibration.

    Raises
    ------
    ValueError
        Before any fitting, if the held-out part would be too small for the model.
    """
    from latent_sculpting.model.adapt import min_benign_rows

    n_held = int(round(EXTRA_HELD_OUT * len(extra)))
    needed = min_benign_rows(model, refit=False)
    if n_held < needed:
        raise ValueError(
            f"--benign-extra: {len(extra):,} flows leave {n_held:,} held out for calibration, "
            f"and this model (target FPR {model.target_fpr}, score {model.score!r}) needs "
            f"{needed:,}; bring at least {math.ceil(needed / EXTRA_HELD_OUT):,} benign flows"
        )
    order = np.random.default_rng(seed).permutation(len(extra))
    return extra.subset(np.sort(order[n_held:])), extra.subset(np.sort(order[:n_held]))


def _cap(table: Any, n: int, seed: int) -> Any:
    from latent_sculpting.research.experiment import cap_per_class

    if table.labels is not None:
        return cap_per_class(table, n, seed)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(table), size=min(n, len(table)), replace=False)
    return table.subset(np.sort(rows))


def _benign_only(params: dict) -> dict:
    from latent_sculpting.model.presets import benign_only

    return benign_only(params)


def _preset(name: str) -> dict:
    from latent_sculpting.model.presets import preset

    return preset(name)


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
