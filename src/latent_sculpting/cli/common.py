"""Flags shared by several sub-commands: the data, the preset, and every model parameter.

Model options are not declared one by one: ``--set NAME=VALUE`` reaches every parameter of
:class:`~latent_sculpting.LatentSculpting`, its value parsed to the parameter's type from the
estimator's constraint table (:mod:`latent_sculpting.model.params`) and checked, with the preset's
other values, before any data is read. ``--list-params`` prints that table. A few frequent
options keep their own flags as aliases of ``--set``.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from typing import Any

from latent_sculpting.model.presets import PRESETS

#: Parameters that ``--set`` does not reach, and the flag that does.
NOT_SETTABLE = {
    "random_state": "--seed (train) or --seeds",
    "verbose": "--quiet",
}
#: Alias flags of ``--set`` that :func:`add_model_flags` adds (each named as its parameter).
ALIASES = ("epochs", "flow_epochs", "percentile")
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


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
    from latent_sculpting.io.formats import FORMATS

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


def warn_cleaning(command: str, cleaning: dict[str, Any]) -> None:
    """Say on stderr what reading the flows changed: the values replaced by 0, per column, and
    the flows left out as unlabelled (``cleaning`` is a CleaningReport's ``to_dict()``, which
    ``--json`` output carries)."""
    import sys

    for label, n in (cleaning.get("unlabelled_left_out") or {}).items():
        print(
            f"sculpt {command}: left out {n:,} flows labelled {label!r}: nobody labelled them, "
            "so they are neither benign nor attack",
            file=sys.stderr,
        )
    for name, n in (cleaning.get("context_out_of_order") or {}).items():
        print(
            f"sculpt {command}: {name}: {n:,} flows out of time order, sorted by start time for "
            "their context features",
            file=sys.stderr,
        )
    for note, n in (cleaning.get("context_notes") or {}).items():
        print(f"sculpt {command}: context features: {n:,} {note}", file=sys.stderr)
    total = cleaning.get("values_replaced", 0)
    if not total:
        return
    parts = []
    for key, title in (
        ("posinf_replaced", "+inf"),
        ("neginf_replaced", "-inf"),
        ("nan_replaced", "NaN or missing"),
    ):
        parts += [f"{column!r} {n:,} {title}" for column, n in (cleaning.get(key) or {}).items()]
    shown = ", ".join(parts[:12]) + (f" and {len(parts) - 12} more" if len(parts) > 12 else "")
    print(
        f"sculpt {command}: warning: {total:,} missing or non-finite feature value(s) replaced "
        f"by 0, which the model reads as an ordinary value: {shown}",
        file=sys.stderr,
    )


#: ``--threads`` of every command that computes.
THREADS_HELP = (
    "CPU cores to use: up to N independent tasks at a time (e.g. the stacked rule's folds), "
    "each with one torch/BLAS/OpenMP thread, which stays fast when another process holds a "
    "core; auto (default): every CPU this process may run on"
)
#: ``--threads`` of the benchmark views, whose tasks are the ``--jobs`` processes.
THREADS_PER_JOB_HELP = (
    "torch/BLAS/OpenMP threads in each --jobs process (1 on shared cores); auto (default): "
    "the CPUs this process may run on, shared out over --jobs"
)


def add_meter_flags(parser: argparse.ArgumentParser) -> None:
    """nfstream's timeouts, for the commands that meter packets (``extract``, ``watch``)."""
    group = parser.add_argument_group("flow meter (packets to flows)")
    group.add_argument(
        "--idle-timeout",
        type=int,
        metavar="S",
        help="a flow silent this many seconds ends (default 120, as CIC-IDS-2017's meter)",
    )
    group.add_argument(
        "--active-timeout",
        type=int,
        metavar="S",
        help="a flow still active after this many seconds is reported and a new one starts "
        "(default 1800). A live sensor sees a flow only when it ends: shorter timeouts raise "
        "alerts sooner, and the model must be trained on flows extracted with the same ones",
    )


def meter_settings_from_args(args: argparse.Namespace) -> dict[str, int]:
    """The nfstream settings :func:`add_meter_flags` asks for (checked)."""
    from latent_sculpting.io.readers.pcap import meter_settings

    return meter_settings(args.idle_timeout, args.active_timeout)


def add_threads_flag(parser: argparse.ArgumentParser, help: str = THREADS_HELP) -> None:
    """``--threads N|auto`` (default auto, kept as None); :func:`threads_from_args` reads it."""
    parser.add_argument("--threads", type=_threads, metavar="N|auto", help=help)


def threads_from_args(args: argparse.Namespace) -> int:
    """The workers ``--threads`` asks for (:func:`latent_sculpting.threads.resolve_threads`)."""
    from latent_sculpting.threads import resolve_threads

    return resolve_threads(args.threads)


def apply_threads(args: argparse.Namespace, overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` with ``n_jobs`` set to the workers of ``--threads``, unless ``--set n_jobs``
    gives it.

    Raises
    ------
    ValueError
        If ``--threads`` and ``--set n_jobs`` are both given and disagree.
    """
    from latent_sculpting.threads import resolve_n_jobs

    workers = threads_from_args(args)
    if "n_jobs" not in overrides:
        return {**overrides, "n_jobs": workers}
    if args.threads is not None and resolve_n_jobs(overrides["n_jobs"]) != workers:
        raise ValueError(
            f"--threads {args.threads} and --set n_jobs={overrides['n_jobs']} disagree; give one"
        )
    return overrides


def _threads(text: str) -> int | str:
    """``--threads`` as given: "auto", or a whole number at least 1 (argparse's message names
    the flag)."""
    from latent_sculpting.threads import resolve_threads

    if text.strip().lower() == "auto":
        return "auto"
    try:
        return resolve_threads(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--threads ")) from None


def add_model_flags(parser: argparse.ArgumentParser, default_preset: str = "default") -> None:
    """``--preset``, the alias flags, ``--set`` and ``--list-params``."""
    parser.add_argument(
        "--preset",
        default=default_preset,
        choices=sorted(PRESETS),
        help=f"hyperparameter preset (default {default_preset})",
    )
    parser.add_argument("--epochs", type=int, help="Stage-1 epochs (same as --set epochs=N)")
    parser.add_argument(
        "--flow-epochs", type=int, help="Stage-2 epochs (same as --set flow_epochs=N)"
    )
    parser.add_argument(
        "--percentile",
        type=float,
        help="threshold percentile of benign calibration scores (same as --set percentile=P)",
    )
    add_set_flags(parser, "on top of --preset")
    add_aliases(parser, ALIASES)


def add_aliases(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """Declare flags of ``parser`` (destination = parameter name) as aliases of ``--set``."""
    known = parser.get_default("_set_aliases") or ()
    parser.set_defaults(_set_aliases=(*known, *names))


def add_set_flags(parser: argparse.ArgumentParser, where: str) -> None:
    """``--set NAME=VALUE`` (repeatable) and ``--list-params``."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        dest="settings",
        help=f"set any model parameter, {where} (repeatable, e.g. --set forest_trees=300 "
        "--set flow_standardize=false); --list-params lists them",
    )
    parser.add_argument(
        "--list-params",
        action=_ListParams,
        help="list every model parameter: allowed values and its value in each preset",
    )


def model_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Parameters given by ``--set`` and the alias flags, each parsed and checked.

    Raises
    ------
    ValueError
        On an unknown name (the message lists the valid ones), a value of the wrong type or
        outside the allowed ones, or a parameter given twice.
    """
    overrides = parse_settings(args.settings)
    for name in getattr(args, "_set_aliases", ()):
        value = getattr(args, name)
        if value is not None:
            if name in overrides and overrides[name] != value:
                raise ValueError(
                    f"--{name.replace('_', '-')} {value} and --set {name}={overrides[name]} "
                    "disagree; give one"
                )
            overrides[name] = value
    return overrides


def check_model(preset: str, overrides: dict[str, Any]) -> None:
    """Check a preset with ``overrides`` as ``fit`` would, before any data is read.

    Raises
    ------
    ValueError
        If the parameters do not fit together (the message says how).
    """
    from latent_sculpting.model.estimator import LatentSculpting
    from latent_sculpting.model.params import check_params

    check_params(LatentSculpting(**{**PRESETS[preset], **overrides}).get_params())


def parse_settings(settings: Sequence[str]) -> dict[str, Any]:
    """``["name=value", ...]`` to parameters, each value of its parameter's type and checked.

    Raises
    ------
    ValueError
        As :func:`model_overrides`.
    """
    from sklearn.utils._param_validation import validate_parameter_constraints

    from latent_sculpting.model.params import PARAMETER_CONSTRAINTS

    valid = [n for n in PARAMETER_CONSTRAINTS if n not in NOT_SETTABLE]
    out: dict[str, Any] = {}
    for item in settings:
        name, sep, text = item.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE, e.g. --set epochs=5")
        if name in NOT_SETTABLE:
            raise ValueError(f"--set {name}: use {NOT_SETTABLE[name]} instead")
        if name not in PARAMETER_CONSTRAINTS:
            raise ValueError(
                f"--set {item!r}: unknown parameter {name!r}; valid names: {', '.join(valid)} "
                "(--list-params shows their values)"
            )
        if name in out:
            raise ValueError(f"--set gives {name} twice")
        constraints = PARAMETER_CONSTRAINTS[name]
        value = _parse(text, constraints)
        try:
            validate_parameter_constraints({name: constraints}, {name: value}, caller_name="--set")
        except ValueError:
            raise ValueError(f"--set {name}={text}: {name} takes {describe(constraints)}") from None
        out[name] = value
    return out


def describe(constraints: list) -> str:
    """What a parameter's constraint list accepts, briefly: ``int >= 1``, ``a | b``, ..."""
    from numbers import Integral

    from sklearn.utils._param_validation import Interval, Options, StrOptions

    parts = []
    for c in constraints:
        if c is None:
            parts.append("none")
        elif c == "boolean":
            parts.append("true | false")
        elif isinstance(c, StrOptions):
            parts.append(" | ".join(sorted(c.options)))
        elif isinstance(c, Options):
            parts.append(" | ".join(str(option) for option in sorted(c.options)))
        elif isinstance(c, Interval):
            kind = "int" if c.type is Integral else "float"
            low = None if c.left is None else f"{c.left:g}"
            high = None if c.right is None else f"{c.right:g}"
            if high is None:
                parts.append(f"{kind} {'>=' if c.closed in ('left', 'both') else '>'} {low}")
            else:
                left = "[" if c.closed in ("left", "both") else "("
                right = "]" if c.closed in ("right", "both") else ")"
                parts.append(f"{kind} in {left}{low}, {high}{right}")
        else:
            parts.append("auto or a torch device")
    return " or ".join(parts)


def _parse(text: str, constraints: list) -> Any:
    """``text`` as the type the constraints name (left as text when it parses as none)."""
    from numbers import Integral

    from sklearn.utils._param_validation import Interval, Options, StrOptions

    if None in constraints and text.lower() in ("none", "null"):
        return None
    for c in constraints:
        if isinstance(c, Options) and not isinstance(c, StrOptions) and c.type is Integral:
            with contextlib.suppress(ValueError):
                return int(text)
        if c == "boolean":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
        elif isinstance(c, Interval):
            try:
                return int(text) if c.type is Integral else float(text)
            except ValueError:
                continue
    return text


def parameter_table() -> str:
    """Every parameter ``--set`` reaches, what it accepts, and its value in each preset."""
    from latent_sculpting.model.estimator import LatentSculpting
    from latent_sculpting.model.params import PARAMETER_CONSTRAINTS

    names = ["default", *sorted(n for n in PRESETS if n != "default")]
    values = {p: LatentSculpting(**PRESETS[p]).get_params() for p in names}
    rows = [["parameter", "accepts", *names]]
    for name, constraints in PARAMETER_CONSTRAINTS.items():
        if name not in NOT_SETTABLE:
            shown = [_show(values[p][name]) for p in names]
            rows.append([name, describe(constraints), *shown])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    skipped = "; ".join(f"{n}: {flag}" for n, flag in NOT_SETTABLE.items())
    return "\n".join([*lines, "", f"set elsewhere: {skipped}"])


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


class _ListParams(argparse.Action):
    """Print :func:`parameter_table` and exit, like ``--help``."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        kwargs.update(nargs=0, default=argparse.SUPPRESS)
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        print(parameter_table())
        parser.exit()
