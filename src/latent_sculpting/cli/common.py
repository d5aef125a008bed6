"""Flags shared by several sub-commands."""

from __future__ import annotations

import argparse

from ..presets import PRESETS


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        nargs="+",
        metavar="PATH",
        help="CIC-IDS-2017 folder or files, CSV or Parquet, original or improved release "
        "(default: the embedded sample)",
    )
    parser.add_argument(
        "--withhold",
        nargs="+",
        metavar="LABEL",
        help="attack classes withheld from training (default: DoS slowloris, "
        "DoS Slowhttptest, Bot, Infiltration)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=42,
        help="seed of the data splits, fixed across model seeds (default 42); "
        "-1 re-draws the splits with each model seed",
    )
    parser.add_argument(
        "--max-per-class",
        type=int,
        metavar="N",
        help="use at most N random rows of each label (a quick stratified slice)",
    )


def add_input_flags(parser: argparse.ArgumentParser) -> None:
    """How training records are read: their format, label, and which columns are features."""
    from ..formats import FORMATS

    names = ", ".join(f"{name} ({fmt.description})" for name, fmt in FORMATS.items())
    parser.add_argument(
        "--format",
        choices=("auto", *FORMATS),
        default="auto",
        help=f"what the records are: {names}; auto (default): detected from the columns",
    )
    parser.add_argument(
        "--label-column", metavar="COL", help="label column (default: the format's, e.g. Label)"
    )
    parser.add_argument(
        "--benign-label",
        metavar="LABEL",
        help="label of benign flows (default: the format's, e.g. BENIGN); every other label "
        "is an attack",
    )
    parser.add_argument(
        "--unlabeled",
        action="store_true",
        help="the data has no labels: every flow is benign (a label column is ignored)",
    )
    parser.add_argument(
        "--drop",
        nargs="+",
        default=[],
        metavar="COL",
        help="columns that must not be features (kept as identifiers)",
    )
    parser.add_argument(
        "--keep",
        nargs="+",
        default=[],
        metavar="COL",
        help="columns to use as features although their name reads like an identifier",
    )
    parser.add_argument(
        "--max-categories",
        type=int,
        default=32,
        metavar="N",
        help="most frequent values of a text column that get their own indicator feature "
        "(default 32; the rest share one)",
    )


def add_model_flags(parser: argparse.ArgumentParser, default_preset: str = "default") -> None:
    parser.add_argument(
        "--preset",
        default=default_preset,
        choices=sorted(PRESETS),
        help=f"hyperparameter preset (default {default_preset})",
    )
    parser.add_argument("--epochs", type=int, help="Stage-1 epochs (overrides the preset)")
    parser.add_argument("--flow-epochs", type=int, help="Stage-2 epochs (overrides the preset)")
    parser.add_argument(
        "--percentile",
        type=float,
        help="threshold percentile of benign calibration scores (overrides the preset)",
    )


def model_overrides(args: argparse.Namespace) -> dict:
    overrides = {}
    for flag, param in (
        ("epochs", "epochs"),
        ("flow_epochs", "flow_epochs"),
        ("percentile", "percentile"),
    ):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[param] = value
    return overrides
