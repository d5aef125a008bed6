"""Why a flow was flagged: the features whose deviations explain the model's score.

:func:`explain` names, for each flow it is given (the flagged ones), the ``k`` features whose
deviations explain the *model's* score: the flow's most unusual features against the benign
profile (:class:`~latent_sculpting.monitor.profile.BenignProfile`) are candidates, and among
them those whose reset to the benign median lowers the model's score most are kept, one at a
time (greedy). The model enters only as its ``decision_function``, called a bounded number of
times on the explained rows; without it, the ``k`` most unusual features are named.

A categorical column (its one-hot indicator features ``proto=tcp``, ..., ``proto=(other)``, see
:mod:`latent_sculpting.io.flowspec`) is explained as one unit: its value is the indicator that is
set, how unusual it is is the share of benign flows with that value, and its reset is the
benign flows' most common value.

Each flow gets an :class:`~latent_sculpting.monitor.reasons.Explanation`
(:mod:`latent_sculpting.monitor.reasons`). :class:`Explainer` holds one profile, one model and
a budget of model calls per scored batch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from latent_sculpting.monitor.checks import as_matrix
from latent_sculpting.monitor.profile import BenignProfile
from latent_sculpting.monitor.reasons import Explanation, row_reasons

__all__ = ["CHUNK_ROWS", "Explainer", "explain"]

#: Rows handed to ``decision_function`` at a time, which bounds the explanation's memory.
CHUNK_ROWS = 65_536


def explain(
    profile: BenignProfile,
    X: Any,
    decision_function: Callable[[np.ndarray], Any] | None = None,
    *,
    scores: Any = None,
    k: int = 3,
    n_candidates: int = 16,
    max_evaluations: int | None = None,
) -> list[Explanation]:
    """Explain each row of ``X`` (the flagged flows) by ``k`` features.

    Candidates are the row's ``n_candidates`` most unusual units against the benign profile
    (smallest tail probability first; ties, e.g. several values beyond every benign value, go
    to the one farthest from the benign median in units of the benign range); a unit whose
    value already equals its benign reset value is never named. With ``decision_function``,
    the named units are chosen greedily: each step resets, row by row, every remaining
    candidate on top of the units chosen so far, scores all those variants in one batch and
    keeps the candidate that lowers the score most. Without it, the ``k`` most unusual
    candidates are named (a model-blind baseline).

    Parameters
    ----------
    profile : BenignProfile
        Fitted on the model's benign training flows.
    X : array-like of shape (n_rows, n_features)
        The rows to explain, as the model sees them.
    decision_function : callable, optional
        The model's ``decision_function``: float32 rows -> one score per row, higher is more
        anomalous.
    scores : array-like of shape (n_rows,), optional
        The rows' scores, when already known (saves one call).
    k : int, default 3
        Features named per row.
    n_candidates : int, default 16
        Most unusual units the model chooses among, per row (at least ``k``).
    max_evaluations : int, optional
        Most variant rows handed to ``decision_function`` in all (see Notes); default no bound.

    Returns
    -------
    list of Explanation
        One per row, in order.

    Notes
    -----
    The greedy search scores ``m + (m - 1) + ... + (m - k + 1)`` variants per row for ``m``
    candidates. Under ``max_evaluations`` the search shrinks to fit: fewer candidates (``m > k``
    while that fits), else one greedy step among as many candidates as fit (the other names
    in order of surprise), else none (names in order of surprise only). ``decision_function``
    is called at most ``k`` times (plus once when ``scores`` is not given), each call on at most
    :data:`CHUNK_ROWS` rows (more rows are split into more calls).

    A reset of one feature leaves the features a format derives from it (engineered ones) as
    they were: the model is asked about the flow with that one value changed.

    Raises
    ------
    ValueError
        For a bad ``X``, ``scores``, ``k``, ``n_candidates`` or ``max_evaluations``, or a
        ``decision_function`` whose answer is not one finite score per row.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if isinstance(n_candidates, bool) or not isinstance(n_candidates, int) or n_candidates < k:
        raise ValueError(f"n_candidates must be an integer >= k ({k}), got {n_candidates!r}")
    if max_evaluations is not None and (
        isinstance(max_evaluations, bool)
        or not isinstance(max_evaluations, int)
        or max_evaluations < 0
    ):
        raise ValueError(f"max_evaluations must be an integer >= 0, got {max_evaluations!r}")
    X = as_matrix(X, len(profile.feature_names_), what="X")
    n = len(X)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != n or not np.isfinite(scores).all():
            raise ValueError(f"scores must be {n} finite numbers, got shape {scores.shape}")
    if n == 0:
        return []
    tails, distance, deviates, below, above, hot = profile.assess(X)
    key = np.where(deviates, tails, np.inf)
    order = np.lexsort((-distance, key), axis=-1)[:, : min(n_candidates, tails.shape[1])]
    candidates = np.where(np.take_along_axis(deviates, order, axis=1), order, -1)

    m, steps = 0, 0
    if decision_function is not None:
        per_row = math.inf if max_evaluations is None else max_evaluations / n
        m, steps = _plan(per_row, k, candidates.shape[1])
    drops = np.full((n, k), np.nan)
    reset_scores = None
    if steps:
        if scores is None:
            scores = _call(decision_function, X)
        picked, drops[:, :steps], after = _greedy(
            profile, X, scores, candidates[:, :m], steps, decision_function
        )
        chosen = _fill(picked, candidates, k)
        if steps == k:
            reset_scores = after
    else:
        chosen = candidates[:, :k]
    reasons = row_reasons(profile, X, chosen, drops, tails, below, above, hot)
    return [
        Explanation(
            reasons[i],
            score=None if scores is None else float(scores[i]),
            score_reset=None if reset_scores is None else float(reset_scores[i]),
        )
        for i in range(n)
    ]


def _plan(per_row: float, k: int, n_candidates: int) -> tuple[int, int]:
    """``(candidates, greedy steps)`` whose evaluations per row fit ``per_row``."""
    steps = min(k, n_candidates)

    def cost(m: int) -> int:
        return m * steps - steps * (steps - 1) // 2

    for m in range(n_candidates, steps, -1):  # more candidates than names: the model chooses
        if cost(m) <= per_row:
            return m, steps
    if n_candidates <= k and cost(n_candidates) <= per_row:  # few units: it orders them all
        return n_candidates, steps
    m = int(min(n_candidates, per_row))
    return (m, 1) if m >= 2 else (0, 0)


def _greedy(
    profile: BenignProfile,
    X: np.ndarray,
    scores: np.ndarray,
    candidates: np.ndarray,
    steps: int,
    decision_function: Callable[[np.ndarray], Any],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chosen units (n, steps; -1 where a row ran out of candidates), each step's score drop
    and the score with every chosen unit reset."""
    n, m = candidates.shape
    chosen = np.full((n, steps), -1, dtype=np.int64)
    drops = np.full((n, steps), np.nan)
    current = scores.copy()
    available = candidates >= 0
    for step in range(steps):
        rows, slots = np.nonzero(available)
        if len(rows) == 0:
            break
        units = np.empty((len(rows), step + 1), dtype=np.int64)
        units[:, :step] = chosen[rows, :step]
        units[:, step] = candidates[rows, slots]
        variant = np.full((n, m), np.inf)
        for start in range(0, len(rows), CHUNK_ROWS):
            part = slice(start, start + CHUNK_ROWS)
            variants = profile.reset(X[rows[part]], units[part])
            variant[rows[part], slots[part]] = _call(decision_function, variants)
        best = np.argmin(variant, axis=1)
        picked = np.flatnonzero(available.any(axis=1))
        new = variant[picked, best[picked]]
        chosen[picked, step] = candidates[picked, best[picked]]
        drops[picked, step] = current[picked] - new
        current[picked] = new
        available[picked, best[picked]] = False
    return chosen, drops, current


def _fill(picked: np.ndarray, candidates: np.ndarray, k: int) -> np.ndarray:
    """``picked`` (n, s) followed by the most unusual candidates not picked, to ``k`` names."""
    s = picked.shape[1]
    if s >= k:
        return picked
    taken = (candidates[:, :, None] == picked[:, None, :]).any(axis=2) | (candidates < 0)
    rest_order = np.argsort(taken, axis=1, kind="stable")[:, : k - s]
    rest = np.take_along_axis(candidates, rest_order, axis=1)
    rest[np.take_along_axis(taken, rest_order, axis=1)] = -1
    return np.hstack([picked, rest])


def _call(decision_function: Callable[[np.ndarray], Any], X: np.ndarray) -> np.ndarray:
    scores = np.asarray(decision_function(X), dtype=np.float64).reshape(-1)
    if len(scores) != len(X) or not np.isfinite(scores).all():
        raise ValueError(
            f"decision_function must return {len(X)} finite scores, got shape {scores.shape}"
        )
    return scores


class Explainer:
    """Explains the flagged flows of each scored batch with one profile and one model, within
    a budget of model evaluations (what :class:`~latent_sculpting.serve.scoring.Scorer` takes).

    Parameters
    ----------
    profile : BenignProfile
        Fitted on the model's benign training flows.
    decision_function : callable
        The model's ``decision_function``.
    k : int, default 3
        Features named per flagged flow.
    n_candidates : int, default 16
        Most unusual features the model chooses among (:func:`explain`).
    budget : float or None, default 1.0
        Variant rows the model may score per batch, as a multiple of the batch's rows: with
        1.0, explaining a batch scores at most as many rows again as scoring it did, whatever
        share of it is flagged (the search shrinks to fit, see :func:`explain`). None: no bound.
    """

    def __init__(
        self,
        profile: BenignProfile,
        decision_function: Callable[[np.ndarray], Any],
        *,
        k: int = 3,
        n_candidates: int = 16,
        budget: float | None = 1.0,
    ) -> None:
        if not callable(decision_function):
            raise TypeError("decision_function must be callable")
        if budget is not None and not (isinstance(budget, int | float) and budget >= 0):
            raise ValueError(f"budget must be a number >= 0 or None, got {budget!r}")
        self.profile = profile
        self.decision_function = decision_function
        self.k = k
        self.n_candidates = n_candidates
        self.budget = budget

    def explain(
        self, X: Any, scores: Any = None, *, batch_rows: int | None = None
    ) -> list[Explanation]:
        """Explanations of the flagged rows ``X`` of a batch of ``batch_rows`` rows (default
        ``len(X)``)."""
        rows = len(X) if batch_rows is None else batch_rows
        limit = None if self.budget is None else int(self.budget * rows)
        return explain(
            self.profile,
            X,
            self.decision_function,
            scores=scores,
            k=self.k,
            n_candidates=self.n_candidates,
            max_evaluations=limit,
        )
