"""Adapting a fitted detector to another network from benign flows of that network.

A detector's benign density and its conformal threshold describe the benign traffic it was
trained on; on another network (other devices, services, link speeds) benign flows are not
exchangeable with those, and the false-alarm rate promised by ``target_fpr`` no longer holds.
This module owns :func:`adapt`, behind :meth:`LatentSculpting.adapt
<latent_sculpting.LatentSculpting.adapt>`, which splits the model's parts in two:

- **kept**, what the model learned about attacks: the feature preprocessor (the scale every
  part reads), the Stage-1 encoder and centroids, every side channel that learns from attacks
  (``supervised = True`` in :mod:`latent_sculpting.model.channels.registry`: the random forest, the
  boosted
  trees) and the stacked rule's channel weights (learned on held-out attack families);
- **refit on the new benign flows**: the Deep SVDD embedding, the flow (the benign density:
  fine-tuned, see below), every benign-only side channel (``supervised = False``: the distance
  to benign prototypes; ``keep_training_prototypes`` keeps the training prototypes beside the
  new ones), the fusion's tails of the flow and of those channels,
  the conformal calibration, the drift bins and the benign profile.

The flow is fine-tuned on the new flows, starting from the trained one, for as many optimiser
steps as its training took (at least ``flow_epochs`` epochs, at most :data:`MAX_FINE_TUNE` times
as many). An adaptation brings a few hundred flows to fit on: a flow fitted afresh on them
takes a few dozen steps and is a poor density, and one trained longer from scratch overfits
them; started from a density learned on thousands of flows, the same rows refine it. On the
validation case (the CIC sample's Monday-Tuesday -> Wednesday; docs/results/network-shift.md)
the flow alone ranked the new day's attacks better fine-tuned than fitted afresh. It is not a
memory of the training network: the density moves onto the new flows, away from the old ones,
as a fresh fit's does (a synthetic test checks both). ``fresh_flow`` fits it afresh instead; a
model with a Deep SVDD embedding always does (the embedding is refit, so the flow's input
changes), and so does every model when the trained flow cannot be fine-tuned on the new flows:
when some lie so far outside the training traffic that the loss or its gradient is not finite,
every step would be skipped or clipped to nothing (the adaptation's record says so).

When the densities are refit, the kept channels keep their fusion tails as well: placed on
thousands of training reference flows, they are better estimates than a tail refitted on the few
hundred new flows an adaptation sets aside for it, which extrapolates far beyond where those
flows reach and so lets one channel's score swamp the sum. Any shift in the kept channels'
scores on the new network is absorbed by the threshold, which is always recalibrated on new
flows.

The new flows are split at random into rows the densities are fitted on and rows held out of
every fit; the held-out rows place the fusion's tails and set the threshold, so the threshold is
split-conformal for the new network: a fresh benign flow of that network, exchangeable with the
held-out ones, is flagged with probability at most ``target_fpr``.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from latent_sculpting.model.calibration import (
    MIN_HELD_OUT,
    calibration_rows,
    min_calibration_rows,
    reference_split,
)
from latent_sculpting.model.channels.deep_sad import DeepSAD
from latent_sculpting.model.fusion import FUSIONS
from latent_sculpting.model.parts import FittedParts
from latent_sculpting.model.validation import check_features
from latent_sculpting.monitor.drift import DriftMonitor

__all__ = ["MAX_FINE_TUNE", "MIN_FIT_ROWS", "adapt", "min_benign_rows"]

#: Fewest new benign rows the densities are refit on.
MIN_FIT_ROWS = 100

#: Most epochs of the flow's fine-tune, as a multiple of ``flow_epochs``: 15 (300 epochs for
#: the default preset) was the most tried on the validation case, and bounds the time a model
#: file's record of its training rows can ask for.
MAX_FINE_TUNE = 15


def adapt(
    model: Any,
    X_benign: Any,
    *,
    refit: bool = True,
    keep_training_prototypes: bool = False,
    fresh_flow: bool = False,
    calibration_fraction: float = 0.5,
    random_state: int | None = None,
    coarse_threshold: bool | None = None,
) -> Any:
    """Refit what describes benign traffic on benign flows of a new network, in place.

    Parameters
    ----------
    model : LatentSculpting
        A fitted detector.
    X_benign : array-like of shape (n_rows, n_features)
        Raw features of flows of the new network, all declared benign: an attack among them is
        learned as normal traffic. A DataFrame's columns are matched by name.
    refit : bool, default=True
        Refit the benign densities (Deep SVDD, flow, benign-only side channels) on part of
        the rows. ``False`` keeps every fitted part and only recalibrates on all the rows: the
        fusion's tails of the benign-only parts, the threshold, the drift bins and the benign
        profile (for a model
        already trained on flows of this network, ``sculpt train --benign-extra``).
    keep_training_prototypes : bool, default=False
        With ``refit``, keep the benign prototypes of the training flows beside the ones fitted
        on the new flows: the distance channel then measures how far a flow is from benign
        traffic of either network, rather than of the new one alone (the flow's density is
        refit on the new flows either way; without ``refit`` every prototype is kept anyway).
        For the same network later (new days, a changed mix) rather than another network: a
        flow like the training network's benign traffic is then not unusual on the new one
        either, which on another network can hide its attacks (docs/results/network-shift.md:
        AUROC +0.012 and +0.019 on two later-days cases of the CIC sample, -0.060 on IoT-23
        capture 8-1, whose attacks look like the other captures' benign traffic).
    fresh_flow : bool, default=False
        With ``refit``, fit the flow afresh on the new flows (``flow_epochs`` epochs) rather
        than fine-tune the trained one (see the module's description): what ``adapt`` did
        before, kept for comparison and for adapting on many flows, where a fresh fit takes
        as many steps as training did.
    calibration_fraction : float, default=0.5
        With ``refit``, the share of the rows held out of every fit (for Fisher's fusion, half
        of them place the tails, half set the threshold).
    random_state : int or None, default=None
        Seed of the split and the refits; None takes the model's ``random_state``.
    coarse_threshold : bool or None, default=None
        Set the model's ``coarse_threshold`` (accept a ``target_fpr`` that the calibration
        rows cannot guarantee; see :class:`~latent_sculpting.LatentSculpting`); None keeps it.

    Returns
    -------
    model
        The same model, adapted; its ``calibration`` parameter becomes ``"holdout"``.
        ``model.training_info_["adaptations"]`` gains a record: rows, how they were split, how
        many of them the model flagged before and the drift verdict on them, how the flow was
        refit (``"fine-tuned"``, ``"fitted afresh"``, ``"kept"``, or ``"none"`` for a model
        without a flow) and for how many epochs,
        the old and new threshold, the seed and the date.

    Raises
    ------
    ValueError
        If the model is not fitted, ``X_benign`` lacks the model's features or holds a value
        that is not finite, ``calibration_fraction`` is outside (0, 1), or the rows are too few
        for the model's ``target_fpr`` (the message says how many are needed).
    """
    check_is_fitted(model, "flow_")
    if coarse_threshold is not None:
        model.set_params(coarse_threshold=bool(coarse_threshold))
    if not 0 < calibration_fraction < 1:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {calibration_fraction}")
    names = getattr(model, "feature_names_in_", None)
    X = check_features(X_benign, n_features=model.n_features_in_, feature_names=names)
    seed = model.random_state if random_state is None else random_state
    rng = np.random.default_rng(seed)
    fit_rows, reference, held_out = _split(model, len(X), refit, calibration_fraction, rng)

    parts = model.parts_
    flags_before = model.predict(X).astype(bool)
    record = {
        "rows": len(X),
        "refit": refit,
        "kept_training_prototypes": False,  # set below, from what the refit did
        "flow": "kept" if parts.flow is not None else "none",
        "flow_epochs": 0,
        "fit_rows": len(fit_rows),
        "reference_rows": len(reference),
        "calibration_rows": len(held_out),
        "flagged_before": int(flags_before.sum()),
        "threshold_before": _finite_or_none(parts.threshold),
        "drift_before": _drift_summary(model, X, flags_before),
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(2**31)))
        Z = parts.preprocessor.transform(X)
        held = np.r_[reference, held_out]
        side, merged = {}, []
        if refit:
            side, merged = _refit_densities(model, Z, fit_rows, held, rng, keep_training_prototypes)
            events = list(parts.svdd.training_events_) if parts.svdd is not None else []
            if parts.flow is not None:  # a model without a flow refits its prototypes alone
                _refit_flow(model, Z[fit_rows], fresh_flow, record, events)
            if events:  # absent otherwise, as in a fit's history
                record["training_events"] = events
        for name, channel in parts.channels.items():
            if name not in side:  # kept: it never saw these rows
                side[name] = channel.score(Z[held])
        n_ref = len(reference)
        if parts.fusion.needs_reference:
            # The tails only: the stacked rule's weights were learned on held-out attack
            # families, which the new benign flows say nothing about. When the densities are
            # refit, the kept channels keep their tails too (see FisherFusion.fit_tails); the
            # threshold below is what moves their false alarms to the new network. Without a
            # refit (--benign-extra: every part already saw the new network) all tails are
            # placed on the new flows, as measured in docs/results/network-shift.md.
            resolution = {name: c.resolution for name, c in parts.channels.items()}
            at_ref = {name: scores[:n_ref] for name, scores in side.items()}
            kept = [name for name, c in parts.channels.items() if c.supervised and refit]
            parts.fusion.fit_tails(
                parts.channel_scores(Z[reference], at_ref), resolution, keep=kept
            )
        at_cal = {name: scores[n_ref:] for name, scores in side.items()}
        calibration = parts.fusion.combine(parts.channel_scores(Z[held_out], at_cal))
    parts.calibrate(calibration, model.percentile, model.target_fpr)
    # The threshold now comes from held-out rows, whatever the model was calibrated on before.
    model.calibration = "holdout"
    model.describe_benign(X)
    record.update(
        kept_training_prototypes=bool(merged),
        threshold=_finite_or_none(parts.threshold),
        random_state=seed,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    info = dict(getattr(model, "training_info_", None) or {})
    info["adaptations"] = [*info.get("adaptations", []), record]
    model.training_info_ = info
    return model


def _refit_flow(
    model: Any, Z_fit: np.ndarray, fresh_flow: bool, record: dict, events: list[dict]
) -> None:
    """Fine-tune the flow on the new flows' scaled rows, or fit it afresh (``fresh_flow``, a
    Deep SVDD embedding refitted under it, or a fine-tune that could not take a step);
    ``events`` receives the training loop's reports."""
    parts = model.parts_
    fine_tune = parts.svdd is None and not fresh_flow
    if fine_tune:
        blocked = _fine_tune_blocked(parts, Z_fit)
        if blocked:
            # Every step would be skipped or zeroed and the flow stay the training network's:
            # fit it afresh instead.
            fine_tune = False
            record["flow_fine_tune_refused"] = blocked
    epochs = _fine_tune_epochs(model, len(Z_fit)) if fine_tune else model.flow_epochs
    _, model.history_["stage2_nll"] = parts.fit_flow(
        Z_fit,
        model.get_params(deep=False),
        fine_tune_epochs=epochs if fine_tune else None,
        events=events,
    )
    record.update(flow="fine-tuned" if fine_tune else "fitted afresh", flow_epochs=epochs)


def min_benign_rows(model: Any, *, refit: bool = True, calibration_fraction: float = 0.5) -> int:
    """Fewest benign rows :func:`adapt` accepts for ``model`` with these settings.

    The threshold's calibration rows must number at least ``ceil(1 / target_fpr) - 1`` (without
    ``target_fpr``, :data:`~latent_sculpting.model.calibration.MIN_HELD_OUT`); for Fisher's fusion
    as
    many again place its tails; with ``refit`` the rest, at least :data:`MIN_FIT_ROWS`, refit
    the densities.
    """
    n = _calibration_rows_needed(model)
    while _shortfall(model, n, refit, calibration_fraction):
        n += 1
    return n


def _calibration_rows_needed(model: Any) -> int:
    """:func:`~latent_sculpting.model.calibration.min_calibration_rows`, or with the model's
    ``coarse_threshold`` the fewest any threshold takes."""
    if model.coarse_threshold:
        return MIN_HELD_OUT
    return min_calibration_rows(model.target_fpr)


def _sizes(model: Any, n: int, refit: bool, fraction: float) -> tuple[int, int, int]:
    """Rows to fit on, tail reference rows and calibration rows, of ``n`` benign rows."""
    n_held = int(round(fraction * n)) if refit else n
    n_cal = calibration_rows(n_held, 1.0, FUSIONS[model.score].needs_reference)
    return n - n_held, n_held - n_cal, n_cal


def _shortfall(model: Any, n: int, refit: bool, fraction: float) -> list[str]:
    """What ``n`` rows split this way lack, in words; empty when they suffice."""
    n_fit, _, n_cal = _sizes(model, n, refit, fraction)
    needed = _calibration_rows_needed(model)
    reason = f"target_fpr={model.target_fpr}" if model.target_fpr is not None else "a threshold"
    out = []
    if n_cal < needed:
        out.append(f"{reason} needs {needed} calibration flows held out of every fit, got {n_cal}")
    if refit and n_fit < MIN_FIT_ROWS:
        out.append(f"the benign density needs {MIN_FIT_ROWS} flows to refit on, got {n_fit}")
    return out


def _split(
    model: Any, n: int, refit: bool, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows to fit on, tail reference rows and calibration rows; each sorted.

    Raises
    ------
    ValueError
        If a part is too small for the model (see :func:`min_benign_rows`).
    """
    shortfall = _shortfall(model, n, refit, fraction)
    if shortfall:
        needed = min_benign_rows(model, refit=refit, calibration_fraction=fraction)
        raise ValueError(
            f"{n} benign flows are too few to adapt this model ({'; '.join(shortfall)}); "
            f"bring at least {needed} benign flows of the new network"
            + (
                ", or hold out more of them (a larger calibration_fraction), or accept a "
                "coarser threshold (coarse_threshold=True: a false-positive rate of at most "
                f"1/(n+1) for n calibration flows, n >= {MIN_HELD_OUT})"
                if model.target_fpr is not None and not model.coarse_threshold
                else ""
            )
        )
    n_fit = _sizes(model, n, refit, fraction)[0]
    order = rng.permutation(n)
    held = order[n_fit:]
    reference = np.zeros(0, dtype=np.int64)
    if FUSIONS[model.score].needs_reference:
        reference, held = reference_split(held, rng)
    return np.sort(order[:n_fit]), reference, np.sort(held)


def _refit_densities(
    model: Any,
    Z: np.ndarray,
    fit_rows: np.ndarray,
    held_out: np.ndarray,
    rng: np.random.Generator,
    keep_prototypes: bool = False,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Refit the Deep SVDD embedding and every benign-only side channel on the
    scaled rows ``Z[fit_rows]`` (with ``keep_prototypes``, a channel that can keeps its
    training prototypes beside the new ones); those channels' out-of-sample scores of
    ``Z[held_out]``, and the names of the channels that kept their training prototypes."""
    parts = model.parts_
    if parts.svdd is not None:
        parts.svdd = DeepSAD(
            eta=0.0, rep_dim=model.svdd_dim, random_state=int(rng.integers(2**31))
        ).fit(Z[fit_rows])
    scores, merged = {}, []
    rows = np.r_[fit_rows, held_out]
    for name, channel in parts.channels.items():
        if not channel.supervised:
            fresh = type(channel)(
                getattr(model, channel.parameter), random_state=int(rng.integers(2**31))
            )
            local_held = np.arange(len(fit_rows), len(rows))
            scores[name] = fresh.fit(Z[rows], np.zeros(len(rows), np.int64), local_held)
            if keep_prototypes and hasattr(channel, "merged"):
                fresh = channel.merged(fresh)
                scores[name] = fresh.score(Z[held_out])
                merged.append(name)
            parts.channels[name] = fresh
    return scores, merged


def _fine_tune_blocked(parts: FittedParts, Z: np.ndarray) -> str | None:
    """Why the fitted flow cannot be fine-tuned on the scaled rows ``Z``, or None when it can
    (:meth:`FittedParts.fine_tune_blocked`)."""
    worst = parts.fine_tune_blocked(Z)
    if worst is None:
        return None
    return (
        f"the trained flow finds some of the {len(Z)} new flows it would be fine-tuned on so "
        f"unlikely (NLL up to {worst:.3g}) that its gradient is not finite, so it was fitted "
        "afresh"
    )


def _fine_tune_epochs(model: Any, n_rows: int) -> int:
    """Epochs over ``n_rows`` that give the flow's fine-tune as many optimiser steps as its
    training fit took, between ``flow_epochs`` and :data:`MAX_FINE_TUNE` times that.

    The training rows come from the model's history (informational, so checked: a missing or
    malformed count counts as ``n_rows``, and the bounds cap what a file can ask for).
    """
    batch, epochs = model.flow_batch_size, model.flow_epochs
    trained = (getattr(model, "history_", None) or {}).get("n_benign_density")
    if not isinstance(trained, int) or isinstance(trained, bool) or trained < 1:
        trained = n_rows
    steps = math.ceil(trained / batch) * epochs
    wanted = math.ceil(steps / math.ceil(n_rows / batch))
    return int(min(max(wanted, epochs), MAX_FINE_TUNE * epochs))


def _drift_summary(model: Any, X: np.ndarray, flags: np.ndarray) -> dict[str, Any] | None:
    """The drift verdict on the new flows against the model's benign training traffic, before
    adapting: whether they differ, which features moved (the largest PSI first), what it meant
    for false alarms."""
    reference = getattr(model, "drift_reference_", None)
    if reference is None:
        return None
    # The flows are benign by the user's word: a flag among them is a false alarm.
    report = DriftMonitor(reference).update(X, flags, labelled_benign=True).report()
    order = np.lexsort((-report.out_of_range_share, -report.psi))
    moved = [report.feature_names[j] for j in order if report.feature_drifted[j]]
    return {
        "drifted": report.drifted,
        "flag_rate_exceeded": report.flag_rate_exceeded,
        "flagged_share": report.flagged_share,
        "moved_features": moved,
        "consequence": report.consequence,
    }


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
