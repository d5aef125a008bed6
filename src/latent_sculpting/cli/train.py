"""``sculpt train``: fit a detector on your own flow data and save it to one model file."""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .common import add_aliases, add_model_flags, check_model, model_overrides

FORMATS = ("auto", "cicids2017", "table")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a detector on CIC-IDS-2017 files or any numeric flow table",
        description="Fit the two-stage detector on labelled flows (benign + known attacks), or "
        "Stage 2 alone on benign-only data, calibrate its threshold on held-out benign flows "
        "and save it to one safetensors model file.",
    )
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        help="CSV/Parquet files or folders (default: the embedded CIC-IDS-2017 sample)",
    )
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="cicids2017: either CIC-IDS-2017 release (canonical features, engineered "
        "features); table: any numeric table (features = numeric columns except the label "
        "and --drop); auto (default): cicids2017 when the columns match it",
    )
    parser.add_argument(
        "--label-column", default="Label", help="label column (default Label; table format only)"
    )
    parser.add_argument(
        "--benign-label",
        default="BENIGN",
        help="label of benign flows (default BENIGN); every other label is an attack",
    )
    parser.add_argument(
        "--unlabeled", action="store_true", help="the data has no label column: every row is benign"
    )
    parser.add_argument(
        "--drop",
        nargs="+",
        default=[],
        metavar="COL",
        help="numeric columns that are not features (ids, ports, ...)",
    )
    add_model_flags(parser)
    parser.add_argument(
        "--target-fpr",
        type=float,
        metavar="ALPHA",
        help="set the threshold by split conformal calibration on held-out benign flows so "
        "that the false-positive rate on new benign flows is at most ALPHA (e.g. 0.01)",
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
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="model file to write (e.g. model.sculpt)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_aliases(parser, ("calibration", "calibration_fraction", "device"))
    return parser


def run(args: argparse.Namespace) -> int:
    from .. import LatentSculpting, __version__
    from ..data import list_flow_files, sample_path

    started = time.perf_counter()
    overrides = model_overrides(args)
    if args.target_fpr is not None:
        if overrides.get("calibration") == "train":
            raise ValueError(
                "--target-fpr needs held-out calibration flows; drop --calibration train"
            )
        overrides.update(calibration="holdout", target_fpr=args.target_fpr)
    check_model(args.preset, overrides)
    files = list_flow_files(args.data if args.data else sample_path())
    fmt = _resolve_format(args.format, files)
    table = _load(fmt, files, args)
    if args.max_per_class is not None:
        table = _cap(table, args.max_per_class, args.seed)

    labels = table.labels
    if labels is None:
        y = np.zeros(len(table), dtype=np.int64)
    else:
        benign_label = _benign_label(fmt, args.benign_label)
        present = set(np.unique(labels).tolist())
        if benign_label not in present:
            shown = sorted(present, key=str)[:20]
            raise ValueError(
                f"benign label {benign_label!r} not found in column {_label_name(fmt, args)!r}; "
                f"labels present: {shown}. Pass --benign-label"
            )
        y = (labels != benign_label).astype(np.int64)

    params = {**_preset(args.preset), **overrides}
    params.update(random_state=args.seed, verbose=not args.quiet)
    benign_only = not y.any()
    if benign_only:
        print(
            "sculpt train: warning: no attack rows in the data; fitting Stage 2 alone "
            "(stage1=False, score='nll', forest_trees=0): the model flags flows that are "
            "unlikely under the benign density, without a known-attack rule or forest",
            file=sys.stderr,
        )
        params.update(stage1=False, score="nll", forest_trees=0)
    if params["calibration"] == "holdout":
        _check_calibration_size(
            int((y == 0).sum()), params["calibration_fraction"], args.target_fpr
        )

    frame = _frame(table)
    model = LatentSculpting(**params)
    model.fit(frame, y, groups=labels if labels is not None and not benign_only else None)
    counts = table.label_counts() if labels is not None else {"(unlabeled, benign)": len(table)}
    model.metadata_ = {
        "training_data": {
            "files": [str(f) for f in files],
            "format": fmt,
            "rows": len(table),
            "label_column": None if args.unlabeled else _label_name(fmt, args),
            "benign_label": None if labels is None else _benign_label(fmt, args.benign_label),
            "label_counts": counts,
            "benign_rows": int((y == 0).sum()),
            "attack_rows": int(y.sum()),
            "drop": list(args.drop),
            "max_per_class": args.max_per_class,
        },
        "feature_names": list(frame.columns),
        "preset": args.preset,
        "target_fpr": args.target_fpr,
        "calibration_size": len(model.calibration_scores_),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    path = model.save(args.output)
    _print_summary(model, path, time.perf_counter() - started)
    return 0


def _resolve_format(fmt: str, files: list[Path]) -> str:
    from ..streaming import detect_format

    if fmt != "auto":
        return fmt
    return detect_format(files[0])


def _load(fmt: str, files: list[Path], args: argparse.Namespace) -> Any:
    from ..data import load_cicids2017, load_flow_table
    from ..streaming import read_columns

    if fmt == "cicids2017":
        table = load_cicids2017(files)
        if args.unlabeled:
            table.labels = None
        if args.drop:
            drop = set(args.drop)
            keep = [j for j, name in enumerate(table.feature_names) if name not in drop]
            unknown = drop - set(table.feature_names) - set(table.identifiers.columns)
            if unknown:
                raise ValueError(
                    f"--drop names column(s) that are neither features nor identifiers of "
                    f"the CIC-IDS-2017 data: {sorted(unknown)}"
                )
            table.X = np.ascontiguousarray(table.X[:, keep])
            table.feature_names = [table.feature_names[j] for j in keep]
        return table
    columns = {c.strip() for c in read_columns(files[0])}
    unknown = [c for c in args.drop if c.strip() not in columns]
    if unknown:
        raise ValueError(f"--drop names column(s) not in {files[0]}: {unknown}")
    return load_flow_table(
        files, label_column=None if args.unlabeled else args.label_column, drop=args.drop
    )


def _cap(table: Any, n: int, seed: int) -> Any:
    from ..experiment import cap_per_class

    if n < 1:
        raise ValueError(f"--max-per-class must be at least 1, got {n}")
    if table.labels is not None:
        return cap_per_class(table, n, seed)
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(table), size=min(n, len(table)), replace=False)
    return table.subset(np.sort(rows))


def _label_name(fmt: str, args: argparse.Namespace) -> str:
    from ..data.schema import LABEL_COLUMN

    return LABEL_COLUMN if fmt == "cicids2017" else args.label_column


def _benign_label(fmt: str, label: str) -> str:
    from ..data import canonical_label

    if fmt == "cicids2017":
        # CIC labels are canonical after loading; accept any spelling of BENIGN.
        return canonical_label(label) or label
    return label.strip()


def _preset(name: str) -> dict:
    from ..presets import preset

    return preset(name)


def _frame(table: Any) -> Any:
    import pandas as pd

    return pd.DataFrame(table.X, columns=table.feature_names, copy=False)


def _check_calibration_size(n_benign: int, fraction: float, target_fpr: float | None) -> None:
    """Refuse before fitting when too few benign flows would be held out for calibration."""
    n_cal = int(round(fraction * n_benign))
    if target_fpr is not None and 0 < target_fpr < 1:
        # Split conformal needs (n + 1)(1 - alpha) <= n, i.e. n >= 1/alpha - 1 calibration flows.
        needed = math.ceil(1 / target_fpr) - 1
        if n_cal < needed:
            raise ValueError(
                f"--target-fpr {target_fpr} needs at least {needed} held-out benign flows, but "
                f"{n_benign} benign rows x --calibration-fraction {fraction} gives {n_cal}; use "
                "more benign data, a larger --calibration-fraction or a larger --target-fpr"
            )
    if n_cal < 20:
        raise ValueError(
            f"holdout calibration needs at least 20 held-out benign flows, but {n_benign} "
            f"benign rows x --calibration-fraction {fraction} gives {n_cal}; use more benign "
            "data, a larger --calibration-fraction, or --calibration train"
        )


def _print_summary(model: Any, path: Path, seconds: float) -> None:
    meta = model.metadata_
    data = meta["training_data"]
    counts = ", ".join(f"{k} {v:,}" for k, v in list(data["label_counts"].items())[:8])
    more = len(data["label_counts"]) - 8
    rule = (
        f"split-conformal, target FPR {meta['target_fpr']:g}"
        if meta["target_fpr"] is not None
        else f"P{model.percentile:g} of benign {model.calibration} scores"
    )
    print(
        f"trained on {data['rows']:,} rows from {len(data['files'])} file(s) "
        f"({data['format']}): {counts}{f' (+{more} more labels)' if more > 0 else ''}\n"
        f"features: {model.n_features_in_} | stage 1: {'on' if model.stage1 else 'off'} | "
        f"score: {model.score}\n"
        f"threshold: {model.threshold_:.6g} ({rule}); calibration flows: "
        f"{meta['calibration_size']:,} ({model.calibration})\n"
        f"model written to {path} in {seconds:.1f} s"
    )
