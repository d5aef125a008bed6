"""Pseudo-zero-day folds of the training data, for a score rule that learns from them.

A detector meets attacks it has never seen; a rule that combines channels should be chosen for
how well it catches *those*, not the known attacks the supervised channels were fitted on. The
training data can stage that test itself: hold each known attack family out in turn, refit the
supervised channels without it (the benign-only channels and the flow never saw an attack, so
they are reused as fitted), and score the held-out family and the benign reference flows. The
``"stacked"`` rule (:class:`~latent_sculpting.model.fusion.StackedFusion`) chooses its channel
weights on these folds. Nothing here reads the calibration rows: the detector's threshold stays
conformal.

The folds' refits are independent: they run on up to the estimator's ``n_jobs`` workers
(:func:`latent_sculpting.threads.map_workers`), each fold with the seed the sequential fit gives
it, so the folds are the same bits whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from latent_sculpting.model.parts import FittedParts
from latent_sculpting.threads import map_workers, resolve_n_jobs

__all__ = ["MIN_FAMILY_ROWS", "pseudo_zero_day_folds"]

#: Fewest training rows a family needs to be held out as a fold (fewer say little about it).
MIN_FAMILY_ROWS = 20


def pseudo_zero_day_folds(
    parts: FittedParts,
    params: Mapping[str, Any],
    Z: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    fit_rows: np.ndarray,
    reference: np.ndarray,
    reference_scores: dict[str, np.ndarray],
    train_rows: np.ndarray | None = None,
) -> list[dict[str, dict[str, np.ndarray]]]:
    """One fold per known attack family (the ``stack_folds`` largest with at least
    :data:`MIN_FAMILY_ROWS` fitting rows; none when fewer than two families qualify).

    Parameters
    ----------
    parts : FittedParts
        Fitted but for the fusion: the channels and the flow are used.
    params : dict
        The estimator's parameters: ``stack_folds``, ``stack_neighbours``, ``n_jobs`` and each
        supervised channel's size.
    Z : ndarray
        Scaled features of every row given to ``fit``.
    y, groups : ndarray
        0/1 targets and the attack family (or class) of every row.
    fit_rows, reference : ndarray of int
        Rows the channels were fitted on, and the benign reference rows (held out of every fit).
    reference_scores : dict
        Every channel's out-of-sample scores of the reference rows.
    train_rows : ndarray of int, optional
        Rows a fold's refits may train on (the held-out family's are always left out): a
        subset of ``fit_rows``, for a fit that samples its benign rows (``max_benign_rows``);
        None for ``fit_rows``. Never the calibration rows, so that the weights chosen here do
        not depend on the rows that set the threshold.

    Returns
    -------
    list of dict
        ``{"reference": {channel: scores}, "attack": {channel: scores}}`` per fold, for the
        flow's NLL and every side channel.
    """
    if groups is None or params["stack_folds"] == 0:
        return []
    attacks = fit_rows[y[fit_rows] == 1]
    attack_families = groups[attacks]
    families, counts = np.unique(attack_families, return_counts=True)
    order = np.lexsort((families, -counts))  # largest first, ties by name
    eligible = [families[i] for i in order if counts[i] >= MIN_FAMILY_ROWS]
    if len(eligible) < 2:
        return []
    chosen = eligible[: params["stack_folds"]]
    helds = [attacks[attack_families == family] for family in chosen]
    # Each fold's refits also leave out the families nearest the held-out one (none by
    # default): a held-out family that has a close sibling among the known ones is half
    # recognised by trees that learned the sibling, unlike a family new to the network.
    neighbours = _nearest_families(Z, attacks, attack_families, chosen, params["stack_neighbours"])
    excluded = [
        attacks[np.isin(attack_families, [family, *neighbours[family]])] for family in chosen
    ]
    supervised = {name: c for name, c in parts.channels.items() if c.supervised}
    train = fit_rows if train_rows is None else train_rows
    tasks = [
        (channel, params[channel.parameter], Z, y, held, left_out, reference, train)
        for held, left_out in zip(helds, excluded, strict=True)
        for channel in supervised.values()
    ]
    refits = iter(map_workers(_refit_without, tasks, resolve_n_jobs(params["n_jobs"])))
    folds = []
    for held in helds:
        as_fitted = parts.channel_scores(Z[held])
        fold = {"reference": {}, "attack": {}}
        if "nll" in reference_scores:  # a model without a flow has none
            fold["reference"]["nll"] = reference_scores["nll"]
            fold["attack"]["nll"] = as_fitted["nll"]
        for name, channel in parts.channels.items():
            if channel.supervised:
                fold["reference"][name], fold["attack"][name] = next(refits)
            else:
                fold["reference"][name] = reference_scores[name]
                fold["attack"][name] = as_fitted[name]
        folds.append(fold)
    return folds


def _nearest_families(
    Z: np.ndarray, attacks: np.ndarray, families: np.ndarray, chosen: list, k: int
) -> dict[Any, list]:
    """For each chosen family, the ``k`` other known families whose mean scaled features lie
    nearest its own (Euclidean; ties by name); fewer when that would leave the refits no
    attack family to train on (one always stays)."""
    names = np.unique(families)
    k = min(k, len(names) - 2)
    if k <= 0:
        return {family: [] for family in chosen}
    means = np.vstack([Z[attacks[families == name]].mean(axis=0) for name in names])
    out = {}
    for family in chosen:
        i = int(np.searchsorted(names, family))
        distance = np.linalg.norm(means - means[i], axis=1)
        order = [j for j in np.lexsort((names, distance)) if j != i]
        out[family] = [names[j] for j in order[:k]]
    return out


def _refit_without(
    channel: Any,
    size: int,
    Z: np.ndarray,
    y: np.ndarray,
    held: np.ndarray,
    left_out: np.ndarray,
    reference: np.ndarray,
    train: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """A fresh copy of ``channel`` fitted on the ``train`` rows but the ``left_out`` ones (the
    ``held`` family's and its neighbours'); its out-of-sample scores of the reference rows and
    its scores of the held family."""
    rows = np.union1d(np.setdiff1d(train, left_out), reference)
    clone = type(channel)(size, random_state=channel.random_state)
    reference_scores = clone.fit(Z[rows], y[rows], np.searchsorted(rows, reference))
    return reference_scores, clone.score(Z[held])
