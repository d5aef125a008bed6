"""Training and adapting a detector from flow files: the library behind ``sculpt train`` and
``sculpt adapt``.

The command line parses arguments and prints; everything it decides about the data lives here,
so that a script gets the same model as the command:

- :func:`read_training_data` reads the labelled flows (and the ``benign_extra`` flows of the
  network the model is for) with one :class:`~latent_sculpting.io.flowspec.FlowSpec`;
- :func:`fit_training_data` fits a preset on them: with no attack row it fits the benign side
  alone (:func:`~latent_sculpting.model.presets.benign_only`), trains on half of the
  ``benign_extra`` flows and recalibrates on the other half, and records where the model came
  from in ``training_info_``;
- :func:`read_benign_flows` and :func:`adapt_from_files` adapt a fitted model to another
  network's benign flows.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latent_sculpting.io.context.config import parse_context
from latent_sculpting.io.flowspec import FlowSpec, model_spec
from latent_sculpting.io.table import FlowTable, cap_rows, read_flows
from latent_sculpting.model.adapt import min_benign_rows
from latent_sculpting.model.channels.registry import SIDE_CHANNELS
from latent_sculpting.model.estimator import LatentSculpting
from latent_sculpting.model.presets import benign_only, preset
from latent_sculpting.threads import limit_threads

__all__ = [
    "EXTRA_HELD_OUT",
    "TrainingData",
    "adapt_from_files",
    "context_setting",
    "fit_training_data",
    "read_benign_flows",
    "read_training_data",
]

#: Share of the ``benign_extra`` flows held out of every fit, for the tails and the threshold.
EXTRA_HELD_OUT = 0.5


@dataclass
class TrainingData:
    """Flows read for training.

    Attributes
    ----------
    table : FlowTable
        The labelled (or unlabelled, all benign) training flows.
    extra : FlowTable or None
        Benign flows of the network the model is for (``benign_extra``).
    extra_left_out : Counter
        ``extra`` rows labelled as attacks and left out (``benign_rows_only``), per label.
    notices : list of str
        What the caller should tell the user (decisions taken on the data).
    """

    table: FlowTable
    extra: FlowTable | None = None
    extra_left_out: Counter = field(default_factory=Counter)
    notices: list[str] = field(default_factory=list)


def read_training_data(
    files: Sequence[Path],
    *,
    format: str = "auto",
    label_column: str | None = None,
    benign_label: str | None = None,
    unlabelled: bool = False,
    drop: Sequence[str] = (),
    keep: Sequence[str] = (),
    max_categories: int = 32,
    max_per_class: int | None = None,
    benign_extra: Sequence[Path] = (),
    benign_rows_only: bool = False,
    seed: int = 0,
    context: str = "off",
) -> TrainingData:
    """Read the training flows, and the ``benign_extra`` flows with the same spec.

    ``context`` is the estimator's parameter (:func:`context_setting`): with context on, the
    files are one run, read in the order of their first flows with the context state carried
    across them (:func:`latent_sculpting.io.runs.run_context`); the ``benign_extra`` files are
    another run, with a state of their own.

    Raises
    ------
    ValueError
        If the files cannot be read as flows (the file, row and column are named), the benign
        label is absent, ``max_per_class`` is below 1, or ``benign_extra`` holds flows labelled
        as attacks without ``benign_rows_only``.
    """
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"--max-per-class must be at least 1, got {max_per_class}")
    table = read_flows(
        files,
        format=format,
        label_column=label_column,
        benign_label=benign_label,
        unlabelled=unlabelled,
        drop=drop,
        keep=keep,
        max_categories=max_categories,
        keep_identifiers=False,  # training never reads them; millions of strings otherwise
        context=parse_context(context),
    )
    if max_per_class is not None:
        table = cap_rows(table, max_per_class, seed)
    _check_benign_label(table)
    data = TrainingData(table)
    if benign_extra:
        data.extra, data.extra_left_out = read_benign_flows(
            benign_extra, table.spec, benign_rows_only=benign_rows_only
        )
        if data.extra_left_out:
            n = sum(data.extra_left_out.values())
            data.notices.append(f"--benign-extra: left out {n:,} flows labelled as attacks")
    return data


def context_setting(preset_name: str, overrides: Mapping[str, Any] | None = None) -> str:
    """The ``context`` parameter that ``preset_name`` with ``overrides`` fits with: what
    :func:`read_training_data` must read the flows with."""
    return str({**preset(preset_name), **(overrides or {})}["context"])


def fit_training_data(
    data: TrainingData,
    *,
    preset_name: str = "default",
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    verbose: bool = False,
    max_per_class: int | None = None,
) -> LatentSculpting:
    """Fit the preset (with ``overrides``) on the flows read; with ``data.extra``, train on half
    of those flows and recalibrate the threshold, the tails and the drift bins on the other
    half (an adaptation without refit, recorded in ``training_info_``).

    Notices about decisions taken (benign-only data) are appended to ``data.notices``.

    Raises
    ------
    ValueError
        If the parameters do not fit together, or the held-out benign flows are too few for
        the threshold (before any fitting; the message says how many are needed).
    """
    from latent_sculpting import __version__

    table = data.table
    y = table.y if table.labels is not None else np.zeros(len(table), dtype=np.int64)
    params = {**preset(preset_name), **(overrides or {})}
    params.update(random_state=seed, verbose=verbose)
    only_benign = not y.any()
    if only_benign:
        params = benign_only(params)
        kept = [c.name for c in SIDE_CHANNELS.values() if params[c.parameter] > 0]
        data.notices.append(
            "no attack rows in the data; fitting the benign side alone "
            f"(the flow{''.join(' and the ' + c + ' channel' for c in kept)}, "
            f"score={params['score']!r}), without a known-attack channel"
        )
    model = LatentSculpting(**params)
    groups = table.labels if table.labels is not None and not only_benign else None
    X = table.frame()
    counts = (
        table.label_counts() if table.labels is not None else {"(unlabelled, benign)": len(table)}
    )
    info = {
        "files": [f.name for f in table.files],
        "rows": len(table),
        "label_counts": counts,
        "max_per_class": max_per_class,
        "preset": preset_name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
    }
    extra_held = None
    if data.extra is not None:
        extra_fit, extra_held = _split_extra(model, data.extra, seed)
        X = pd.concat([X, extra_fit.frame()], ignore_index=True)
        y = np.r_[y, np.zeros(len(extra_fit), dtype=np.int64)]
        if groups is not None:
            groups = np.r_[groups, np.full(len(extra_fit), table.spec.benign_label, dtype=object)]
        info["benign_extra"] = {
            "files": [f.name for f in data.extra.files],
            "rows": len(data.extra),
            "trained_on": len(extra_fit),
            "held_out": len(extra_held),
        }
    info.update(benign_rows=int((y == 0).sum()), attack_rows=int(y.sum()))
    with limit_threads(1):
        model.fit(X, y, groups=groups, spec=table.spec, training_info=info)
        if extra_held is not None:
            # The threshold, the tails and the drift bins are those of the network the model
            # is for.
            model.adapt(extra_held.frame(), refit=False, random_state=seed)
    return model


def read_benign_flows(
    files: Sequence[Path], spec: FlowSpec, *, benign_rows_only: bool
) -> tuple[FlowTable, Counter]:
    """Flows declared benign, read with a model's input spec; labelled attacks refused.

    Returns
    -------
    table : FlowTable
    left_out : Counter
        Rows left out per label (``benign_rows_only``); empty otherwise.

    Raises
    ------
    ValueError
        If the files lack a column the model needs (named), hold a bad value, or carry labels
        of attacks without ``benign_rows_only`` (the labels, their counts and the first row
        are named).
    """
    table = read_flows(files, spec=spec)
    if table.labels is None or spec.benign_label is None:
        return table, Counter()
    attack = table.labels != spec.benign_label
    counts = Counter(str(label) for label in table.labels[attack])
    if not counts:
        return table, counts
    if not benign_rows_only:
        first = int(np.flatnonzero(attack)[0])
        shown = ", ".join(f"{label!r} {n:,}" for label, n in counts.most_common(8))
        before = int((table.source < table.source[first]).sum())  # rows of earlier files
        raise ValueError(
            f"the benign flows carry labels in column {spec.label_column!r}, and "
            f"{int(attack.sum()):,} of {len(table):,} are not {spec.benign_label!r} ({shown}; "
            f"the first is data row {first - before + 1} of "
            f"{table.files[table.source[first]]}): every flow given is learned as benign. "
            "Remove them, or pass --benign-rows-only to use only the rows labelled benign"
        )
    if attack.all():
        raise ValueError(
            f"no flow is labelled {spec.benign_label!r} in column {spec.label_column!r}; "
            f"labels found: {', '.join(counts)}"
        )
    return table.subset(~attack), counts


def adapt_from_files(
    model: LatentSculpting,
    files: Sequence[Path],
    *,
    benign_rows_only: bool = False,
    **adapt_options: Any,
) -> tuple[dict[str, Any], FlowTable, Counter]:
    """Adapt ``model`` in place to the benign flows in ``files``
    (:meth:`~latent_sculpting.LatentSculpting.adapt` takes ``adapt_options``).

    Returns
    -------
    record : dict
        The adaptation's record (also the last of ``training_info_["adaptations"]``), with the
        files read and the labelled attacks left out.
    table : FlowTable
        The benign flows adapted to.
    left_out : Counter
        Rows labelled as attacks and left out (``benign_rows_only``), per label.
    """
    table, left_out = read_benign_flows(files, model_spec(model), benign_rows_only=benign_rows_only)
    with limit_threads(1):
        model.adapt(table.frame(), **adapt_options)
    record = model.training_info_["adaptations"][-1]
    record["files"] = [f.name for f in table.files]
    if left_out:
        record["left_out_labelled_attacks"] = dict(left_out)
    return record, table, left_out


def _check_benign_label(table: FlowTable) -> None:
    if table.labels is None:
        return
    spec = table.spec
    present = set(np.unique(table.labels).tolist())
    if spec.benign_label not in present:
        shown = sorted(present, key=str)[:20]
        raise ValueError(
            f"benign label {spec.benign_label!r} not found in column {spec.label_column!r}; "
            f"labels present: {shown}. Pass --benign-label"
        )


def _split_extra(model: LatentSculpting, extra: FlowTable, seed: int) -> tuple[Any, Any]:
    """The ``benign_extra`` flows to train on and those held out for calibration.

    Raises
    ------
    ValueError
        Before any fitting, if the held-out part would be too small for the model.
    """
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
