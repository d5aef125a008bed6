"""Why a flow was flagged: the benign profile of each feature, and explanations of alerts.

:class:`BenignProfile` summarises the benign training feature matrix feature by feature
(quantiles on a fixed grid, whose middle level is the median; the share of each categorical
value), so that placing a value among benign values costs a binary search. :func:`explain`
names, for each flow it is given (the flagged ones), the ``k`` features whose deviations explain
the *model's* score: the flow's most unusual features against the profile are candidates, and
among them those whose reset to the benign median lowers the model's score most are kept, one
at a time (greedy). The model enters only as its ``decision_function``, called a bounded number
of times on the explained rows; without it, the ``k`` most unusual features are named.

A categorical column (its one-hot indicator features ``proto=tcp``, ..., ``proto=(other)``, see
:mod:`latent_sculpting.io.flowspec`) is explained as one unit: its value is the indicator that is
set, how unusual it is is the share of benign flows with that value, and its reset is the
benign flows' most common value.

:class:`Explanation` and :class:`FeatureReason` are what a flagged flow carries; they render as
one short line of text and as JSON-able dicts.

It is long because the benign profile, the search for the features that matter (with its
budget of model calls) and the rendering of reasons are one pipeline whose parts are tested
together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "LEVELS",
    "BenignProfile",
    "Explainer",
    "Explanation",
    "FeatureReason",
    "explain",
    "format_number",
    "spec_categorical",
]

#: Default quantile levels of a profile: fine in both tails, where explanations live; the
#: extremes are the benign minimum and maximum, 0.5 is the median.
LEVELS = (
    0.0,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    0.75,
    0.9,
    0.95,
    0.975,
    0.99,
    0.995,
    0.9975,
    0.999,
    1.0,
)
STATE_VERSION = 1
#: Bounds on a profile read from a model file (they keep a tampered file from asking for
#: absurd allocations).
MAX_FEATURES = 10_000
MAX_LEVELS = 1_001
MAX_NAME_LENGTH = 512
#: Profiles with at most this many quantile levels are searched by comparison, level by level
#: (:meth:`BenignProfile._ranks`).
_COMPARE_LEVELS = 64
#: Rows handed to ``decision_function`` at a time, which bounds the explanation's memory.
CHUNK_ROWS = 65_536
#: The text of a flagged flow in which no feature differs from the benign reset values.
NO_DEVIATION = "no feature differs from its benign median"


@dataclass(frozen=True)
class FeatureReason:
    """One feature named in an explanation.

    Attributes
    ----------
    feature : str
        A numeric feature's name, or a categorical column's name.
    value : float or str
        The flow's value (a categorical column's value as text).
    benign_median : float or str
        The benign median (a categorical column's most common benign value): what the value is
        reset to when its deviation is removed.
    benign_percentile : float or None
        Mid-rank percentile of the value among benign values (0 below every benign value, 100
        above every one); None for a categorical column.
    tail : float
        How unusual the value is: its two-sided tail probability among benign values (for a
        categorical column, the share of benign flows with that value), never below the
        profile's floor ``1 / (n + 1)`` for ``n`` benign flows.
    score_drop : float or None
        How much the model's score fell when this feature was reset, after the features named
        before it (zero or negative when no remaining candidate lowered it); None when the
        model did not choose this feature.
    text : str
        One short human phrase.
    """

    feature: str
    value: float | str
    benign_median: float | str
    benign_percentile: float | None
    tail: float
    score_drop: float | None
    text: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (plain Python numbers and strings)."""
        return {
            "feature": self.feature,
            "value": self.value,
            "benign_median": self.benign_median,
            "benign_percentile": self.benign_percentile,
            "tail": self.tail,
            "score_drop": self.score_drop,
            "text": self.text,
        }


@dataclass(frozen=True)
class Explanation:
    """Why one flow was flagged: its named features, most important first.

    Attributes
    ----------
    reasons : tuple of FeatureReason
    score : float or None
        The flow's score, when known.
    score_reset : float or None
        The model's score with every named feature reset to its benign value; None when the
        model was not consulted.
    """

    reasons: tuple[FeatureReason, ...]
    score: float | None = None
    score_reset: float | None = None

    @property
    def features(self) -> list[str]:
        """The named features (categorical columns by their column name), in order."""
        return [r.feature for r in self.reasons]

    def text(self) -> str:
        """One short line: the reasons' phrases joined by ``"; "``."""
        return "; ".join(r.text for r in self.reasons) if self.reasons else NO_DEVIATION

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict: ``features`` (list of :meth:`FeatureReason.to_dict`), ``score``,
        ``score_reset`` and ``text``."""
        return {
            "features": [r.to_dict() for r in self.reasons],
            "score": self.score,
            "score_reset": self.score_reset,
            "text": self.text(),
        }

    def __str__(self) -> str:
        return self.text()


def spec_categorical(spec: Any) -> dict[str, list[str]]:
    """The one-hot blocks of a :class:`~latent_sculpting.io.flowspec.FlowSpec`, as
    :meth:`BenignProfile.fit` takes them: categorical column -> its indicator feature names."""
    return {c.column: list(c.feature_names) for c in spec.categorical}


class BenignProfile:
    """Per-feature summary of benign training flows: where a value stands among them.

    For a value ``v`` of a numeric feature, the grid of benign quantiles gives ``below``, the
    share of benign values strictly below ``v``, and ``above``, the share strictly above it:
    interpolated linearly in the level between two grid quantiles, and a lower bound when ``v``
    equals a grid quantile (discrete features such as flag counts have large ties, and the
    quantiles are observed values, so a tie is found exactly). From these:

    - the two-sided tail probability ``min(1, 2 min(1 - below, 1 - above))``, floored at
      ``floor_ = 1 / (n + 1)`` for ``n`` benign rows, the smallest a sample of ``n`` can witness:
      a value beyond every benign value gets exactly the floor;
    - the mid-rank percentile ``100 (below + 1 - above) / 2``.

    A categorical column's value is as unusual as its share of benign flows (floored the same).

    Parameters
    ----------
    levels : sequence of float, default :data:`LEVELS`
        Quantile levels, strictly increasing from 0 to 1, including 0.5.

    Attributes
    ----------
    feature_names_ : tuple of str
    n_samples_ : int
        Benign rows the profile was fitted on.
    levels_ : ndarray of shape (n_levels,), float64
    quantiles_ : ndarray of shape (n_levels, n_features), float32
        Benign quantiles (observed values: ``method="inverted_cdf"``).
    categorical_ : dict of str to tuple of int
        Categorical column -> indices of its indicator features.
    shares_ : dict of str to ndarray
        Categorical column -> share of benign rows with each of its indicators set.
    units_ : tuple of str
        What an explanation can name: numeric features in feature order, then categorical
        columns.
    """

    def __init__(self, *, levels: Sequence[float] = LEVELS) -> None:
        self.levels = levels

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        X: Any,
        feature_names: Sequence[str],
        *,
        categorical: Mapping[str, Sequence[str]] | None = None,
    ) -> BenignProfile:
        """Summarise benign rows ``X``.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            Benign training flows as the model sees them (float32, finite).
        feature_names : sequence of str
        categorical : mapping of str to sequence of str, optional
            Categorical column -> the names of its one-hot indicator features
            (:func:`spec_categorical` of the model's spec).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For an empty or non-finite ``X``, names that do not match its columns or repeat, or
            an indicator block that is not one-hot in every row (the row and column named).
        """
        levels = _check_levels(np.asarray(self.levels, dtype=np.float64))
        X = _as_matrix(X, None, what="X")
        names = _check_names(feature_names)
        if len(names) != X.shape[1]:
            raise ValueError(f"{len(names)} feature names for {X.shape[1]} columns of X")
        if len(X) == 0:
            raise ValueError("X has no rows; a benign profile needs benign training flows")
        blocks = _blocks(names, categorical or {})
        for column, idx in blocks.items():
            _check_one_hot(X[:, idx], column, "X")
        self.feature_names_ = names
        self.n_samples_ = len(X)
        self.levels_ = levels
        self.quantiles_ = np.quantile(X, levels, axis=0, method="inverted_cdf").astype(np.float32)
        self.categorical_ = blocks
        self.shares_ = {c: X[:, idx].mean(axis=0, dtype=np.float64) for c, idx in blocks.items()}
        self._build()
        return self

    def _build(self) -> None:
        """Lookup structures of the explanation units, from the fitted attributes."""
        in_block = np.zeros(len(self.feature_names_), dtype=bool)
        for idx in self.categorical_.values():
            in_block[list(idx)] = True
        self._numeric = np.flatnonzero(~in_block)
        self._blocks = [np.asarray(idx, dtype=np.int64) for idx in self.categorical_.values()]
        self._modes = [int(np.argmax(self.shares_[c])) for c in self.categorical_]
        self._median_level = int(np.flatnonzero(self.levels_ == 0.5)[0])
        self.units_ = tuple(self.feature_names_[j] for j in self._numeric) + tuple(
            self.categorical_
        )
        self._unit_index = {name: u for u, name in enumerate(self.units_)}
        if len(self._unit_index) != len(self.units_):
            raise ValueError("a categorical column has the name of a numeric feature")

    @property
    def floor_(self) -> float:
        """The smallest tail probability reported: ``1 / (n_samples_ + 1)``."""
        return 1.0 / (self.n_samples_ + 1)

    @property
    def median_(self) -> np.ndarray:
        """Benign median of every feature (the level-0.5 quantile), float32."""
        return self.quantiles_[self._median_level]

    # ------------------------------------------------------------------ where values stand

    def position(self, X: Any) -> tuple[np.ndarray, np.ndarray]:
        """Shares of benign values strictly below and strictly above each value of ``X``.

        Returns
        -------
        below, above : ndarray of shape (n_rows, n_features), float64
            Defined for every feature; for indicator features use :meth:`unit_tails`.
        """
        X = _as_matrix(X, len(self.feature_names_), what="X")
        left, right = self._ranks(X)
        lv = self.levels_
        last = len(lv) - 1
        columns = np.arange(X.shape[1])
        tied = right > left
        # Between two grid quantiles: interpolate the level.
        k = np.clip(left, 1, last)
        lo = self.quantiles_[k - 1, columns].astype(np.float64)
        hi = self.quantiles_[k, columns].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.clip((X - lo) / (hi - lo), 0.0, 1.0)
        level = lv[k - 1] + frac * (lv[k] - lv[k - 1])
        level = np.where(left == 0, 0.0, np.where(left > last, 1.0, level))
        # On a grid quantile (a tie): bounds from the neighbouring levels.
        tie_below = np.where(left > 0, lv[np.maximum(left - 1, 0)], 0.0)
        tie_above = np.where(right <= last, 1.0 - lv[np.minimum(right, last)], 0.0)
        below = np.where(tied, tie_below, level)
        above = np.where(tied, tie_above, 1.0 - level)
        return below, above

    def _ranks(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per value of ``X``: grid quantiles of its feature below it, and at or below it
        (``searchsorted`` left and right, column by column).

        With few levels (the default grid has 19) one comparison of the whole matrix per level
        does it: a request of one flow would otherwise pay numpy's call overhead once per
        feature, which cost more than scoring it. Many levels (a profile may hold up to
        :data:`MAX_LEVELS`) are searched column by column. The counts are the same either way.
        """
        q = self.quantiles_
        if len(q) <= _COMPARE_LEVELS:
            left = np.zeros(X.shape, dtype=np.intp)
            right = np.zeros(X.shape, dtype=np.intp)
            for level in q:
                left += level < X
                right += level <= X
            return left, right
        left = np.empty(X.shape, dtype=np.intp)
        right = np.empty(X.shape, dtype=np.intp)
        for j in range(X.shape[1]):
            left[:, j] = np.searchsorted(q[:, j], X[:, j], side="left")
            right[:, j] = np.searchsorted(q[:, j], X[:, j], side="right")
        return left, right

    def tail_probability(self, X: Any) -> np.ndarray:
        """Two-sided benign tail probability of every value of ``X`` (see the class docstring);
        for indicator features use :meth:`unit_tails`."""
        below, above = self.position(X)
        return self._tail(below, above)

    def _tail(self, below: np.ndarray, above: np.ndarray) -> np.ndarray:
        tail = np.minimum(1.0, 2.0 * np.minimum(1.0 - below, 1.0 - above))
        return np.maximum(tail, self.floor_)

    def unit_tails(self, X: Any) -> np.ndarray:
        """How unusual each explanation unit (:attr:`units_`) of each row is, shape
        (n_rows, n_units): numeric features' tail probabilities, then each categorical
        column's benign share of the row's value."""
        X = _as_matrix(X, len(self.feature_names_), what="X")
        return self._assess(X)[0]

    def _assess(self, X: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per row and unit: tail, distance from the benign value (tie-break), whether it
        deviates; and the numeric ``below``/``above`` and each block's set indicator."""
        numeric = X[:, self._numeric]
        below, above = self.position(X)
        below, above = below[:, self._numeric], above[:, self._numeric]
        median = self.median_[self._numeric].astype(np.float64)
        spread = (self.quantiles_[-1] - self.quantiles_[0])[self._numeric].astype(np.float64)
        distance = np.abs(numeric - median) / np.maximum(spread, np.finfo(np.float32).tiny)
        tails = [self._tail(below, above)]
        distances = [distance]
        deviates = [numeric != median]
        hot = []
        for b, (column, idx) in enumerate(zip(self.categorical_, self._blocks, strict=True)):
            _check_one_hot(X[:, idx], column, "the explained rows")
            h = np.argmax(X[:, idx], axis=1)
            hot.append(h)
            tails.append(np.maximum(self.shares_[column][h], self.floor_)[:, None])
            differs = h != self._modes[b]
            distances.append(differs[:, None].astype(np.float64))
            deviates.append(differs[:, None])
        return (
            np.hstack(tails),
            np.hstack(distances),
            np.hstack(deviates),
            below,
            above,
            hot,
        )

    def reset(self, X: Any, units: np.ndarray) -> np.ndarray:
        """A copy of ``X`` with the given units of each row set to their benign values.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
        units : int array of shape (n_rows, n_reset)
            Unit indices (into :attr:`units_`) per row; -1 leaves a slot empty.

        Returns
        -------
        ndarray of shape (n_rows, n_features), float32
            Numeric features at their benign median, categorical columns at their most common
            benign value.
        """
        X = _as_matrix(X, len(self.feature_names_), what="X").copy()
        units = np.asarray(units, dtype=np.int64).reshape(len(X), -1)
        if units.size and (units.min() < -1 or units.max() >= len(self.units_)):
            raise ValueError(f"unit indices must be in [-1, {len(self.units_)}), got {units}")
        n_numeric = len(self._numeric)
        median = self.median_
        for slot in units.T:
            rows = np.flatnonzero((slot >= 0) & (slot < n_numeric))
            cols = self._numeric[slot[rows]]
            X[rows, cols] = median[cols]
            for b, idx in enumerate(self._blocks):
                rows = np.flatnonzero(slot == n_numeric + b)
                X[np.ix_(rows, idx)] = 0.0
                X[rows, idx[self._modes[b]]] = 1.0
        return X

    def unit_index(self, name: str) -> int:
        """Index of a unit (:attr:`units_`) by its name."""
        try:
            return self._unit_index[name]
        except KeyError:
            raise ValueError(f"{name!r} is not a feature or categorical column") from None

    # ------------------------------------------------------------------ state

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Config (JSON-able) and arrays: what a model file stores, a few KB."""
        config = {
            "version": STATE_VERSION,
            "feature_names": list(self.feature_names_),
            "n_samples": int(self.n_samples_),
            "categorical": {c: list(idx) for c, idx in self.categorical_.items()},
        }
        shares = [self.shares_[c] for c in self.categorical_]
        arrays = {
            "levels": self.levels_.copy(),
            "quantiles": self.quantiles_.copy(),
            "shares": np.concatenate(shares) if shares else np.zeros(0, dtype=np.float64),
        }
        return config, arrays

    @classmethod
    def from_state(cls, config: Any, arrays: Mapping[str, Any]) -> BenignProfile:
        """A fitted profile from :meth:`get_state` output (e.g. read from a model file).

        Raises
        ------
        ValueError
            Naming the first key or array that is missing, of the wrong type or shape,
            non-finite, unsorted, or inconsistent with the others.
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"benign profile: config must be an object, got {type(config)}")
        if config.get("version") != STATE_VERSION:
            raise ValueError(
                f"benign profile: version {config.get('version')!r}; this package reads "
                f"{STATE_VERSION}"
            )
        names = config.get("feature_names")
        if not isinstance(names, list) or not 0 < len(names) <= MAX_FEATURES:
            raise ValueError(f"benign profile: 'feature_names' must be 1 to {MAX_FEATURES} names")
        names = _check_names(names, what="benign profile: 'feature_names'")
        n = config.get("n_samples")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"benign profile: 'n_samples' must be a positive integer, got {n!r}")
        missing = {"levels", "quantiles", "shares"} - set(arrays)
        if missing:
            raise ValueError(f"benign profile: arrays {sorted(missing)} missing")
        levels = _array(arrays["levels"], "levels", ndim=1)
        if len(levels) > MAX_LEVELS:
            raise ValueError(f"benign profile: {len(levels)} levels; at most {MAX_LEVELS}")
        levels = _check_levels(levels.astype(np.float64), what="benign profile: 'levels'")
        quantiles = _array(arrays["quantiles"], "quantiles", ndim=2)
        if quantiles.shape != (len(levels), len(names)):
            raise ValueError(
                f"benign profile: 'quantiles' has shape {quantiles.shape}, expected "
                f"({len(levels)}, {len(names)}) (levels x features)"
            )
        if (np.diff(quantiles, axis=0) < 0).any():
            j = int(np.flatnonzero((np.diff(quantiles, axis=0) < 0).any(axis=0))[0])
            raise ValueError(f"benign profile: quantiles of {names[j]!r} are not sorted")
        raw = config.get("categorical")
        if not isinstance(raw, Mapping):
            raise ValueError("benign profile: 'categorical' must be an object")
        blocks: dict[str, tuple[int, ...]] = {}
        seen: set[int] = set()
        for column, idx in raw.items():
            if not isinstance(column, str) or not 0 < len(column) <= MAX_NAME_LENGTH:
                raise ValueError(f"benign profile: categorical column {column!r} is not a name")
            if (
                not isinstance(idx, list)
                or not idx
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in idx)
                or not all(0 <= i < len(names) for i in idx)
                or len(set(idx)) != len(idx)
                or seen & set(idx)
            ):
                raise ValueError(
                    f"benign profile: categorical column {column!r} must list distinct feature "
                    f"indices in [0, {len(names)}) that no other column lists"
                )
            seen |= set(idx)
            blocks[column] = tuple(idx)
        shares = _array(arrays["shares"], "shares", ndim=1).astype(np.float64)
        width = sum(len(idx) for idx in blocks.values())
        if len(shares) != width:
            raise ValueError(
                f"benign profile: 'shares' has {len(shares)} values for {width} indicator features"
            )
        if ((shares < 0) | (shares > 1)).any():
            raise ValueError("benign profile: 'shares' must lie in [0, 1]")
        profile = cls(levels=tuple(levels.tolist()))
        profile.feature_names_ = names
        profile.n_samples_ = n
        profile.levels_ = levels
        profile.quantiles_ = np.ascontiguousarray(quantiles, dtype=np.float32)
        profile.categorical_ = blocks
        profile.shares_ = {}
        start = 0
        for column, idx in blocks.items():
            part = shares[start : start + len(idx)]
            if abs(part.sum() - 1.0) > 1e-6:
                raise ValueError(
                    f"benign profile: shares of categorical column {column!r} sum to "
                    f"{part.sum():.6g}, not 1"
                )
            profile.shares_[column] = part.copy()
            start += len(idx)
        profile._build()
        return profile


# ---------------------------------------------------------------------------- explaining


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
    X = _as_matrix(X, len(profile.feature_names_), what="X")
    n = len(X)
    if scores is not None:
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != n or not np.isfinite(scores).all():
            raise ValueError(f"scores must be {n} finite numbers, got shape {scores.shape}")
    if n == 0:
        return []
    tails, distance, deviates, below, above, hot = profile._assess(X)
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
    reasons = _reasons(profile, X, chosen, drops, tails, below, above, hot)
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


def _reasons(
    profile: BenignProfile,
    X: np.ndarray,
    chosen: np.ndarray,
    drops: np.ndarray,
    tails: np.ndarray,
    below: np.ndarray,
    above: np.ndarray,
    hot: list[np.ndarray],
) -> list[tuple[FeatureReason, ...]]:
    """The reasons of every row; values are gathered with numpy, then turned into Python
    objects in one pass (this is per-alert work, so it is kept lean)."""
    n, k = chosen.shape
    n_numeric = len(profile._numeric)
    rows = np.repeat(np.arange(n), k)
    units = chosen.reshape(-1)
    valid = units >= 0
    numeric = valid & (units < n_numeric)
    safe = np.where(numeric, units, 0)
    feature = profile._numeric[safe]
    value = X[rows, feature].astype(np.float64).tolist()
    median = profile.median_[feature].astype(np.float64).tolist()
    b = below[rows, safe].tolist()
    a = above[rows, safe].tolist()
    tail = tails[rows, np.where(valid, units, 0)].tolist()
    drop = drops.reshape(-1).tolist()
    units_list, numeric_list = units.tolist(), numeric.tolist()
    names = profile.feature_names_
    out: list[tuple[FeatureReason, ...]] = []
    row: list[FeatureReason] = []
    for t in range(n * k):
        u = units_list[t]
        if u >= 0:
            d = None if math.isnan(drop[t]) else drop[t]
            if numeric_list[t]:
                row.append(
                    _numeric_reason(names[feature[t]], value[t], median[t], b[t], a[t], tail[t], d)
                )
            else:
                row.append(
                    _categorical_reason(
                        profile, u - n_numeric, int(hot[u - n_numeric][t // k]), tail[t], d
                    )
                )
        if t % k == k - 1:
            out.append(tuple(row))
            row = []
    return out


def _numeric_reason(
    name: str,
    value: float,
    median: float,
    below: float,
    above: float,
    tail: float,
    drop: float | None,
) -> FeatureReason:
    if below >= 1.0:
        where = "above every benign value"
    elif above >= 1.0:
        where = "below every benign value"
    elif below >= above:
        where = f"above {_percent_floor(below)} % of benign"
    else:
        where = f"below {_percent_floor(above)} % of benign"
    text = f"{name} {format_number(value)} ({where}, median {format_number(median)})"
    percentile = 100.0 * (below + 1.0 - above) / 2.0
    return FeatureReason(name, value, median, percentile, tail, drop, text)


def _categorical_reason(
    profile: BenignProfile, block: int, hot: int, tail: float, drop: float | None
) -> FeatureReason:
    column = list(profile.categorical_)[block]
    idx = profile._blocks[block]
    value = _category(profile.feature_names_[idx[hot]], column)
    usual = _category(profile.feature_names_[idx[profile._modes[block]]], column)
    share = float(profile.shares_[column][hot])
    seen = (
        "never in benign flows"
        if share == 0.0
        else f"in {format_number(100.0 * share)} % of benign flows"
    )
    text = f"{column} = {value} ({seen}, usually {usual})"
    return FeatureReason(column, value, usual, None, tail, drop, text)


def _category(feature: str, column: str) -> str:
    """``"sctp"`` from indicator ``"proto=sctp"`` of column ``"proto"``."""
    prefix = f"{column}="
    return feature[len(prefix) :] if feature.startswith(prefix) else feature


def format_number(value: float) -> str:
    """A short rendering: integers as integers, other values to 3 significant digits with a
    compact exponent (``1.2e8``)."""
    if math.isfinite(value) and value == int(value) and abs(value) < 1e6:
        return str(int(value))
    text = f"{value:.3g}"
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if exponent else text


def _percent_floor(share: float) -> str:
    """A share below 1 as a percentage rounded down, with enough decimals not to read 100."""
    for digits in (1, 2, 3):
        scale = 10**digits
        percent = math.floor(share * 100 * scale) / scale
        if percent < 100:
            break
    return f"{percent:.{digits}f}".rstrip("0").rstrip(".")


# ---------------------------------------------------------------------------- validation


def _as_matrix(X: Any, n_features: int | None, *, what: str) -> np.ndarray:
    try:
        arr = np.asarray(X, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{what} must be numeric: {error}") from None
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (rows x features), got shape {arr.shape}")
    if n_features is not None and arr.shape[1] != n_features:
        raise ValueError(f"{what} has {arr.shape[1]} features; the profile has {n_features}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"{what} has a NaN or infinite value at row {row}, column {col}")
    return arr


def _check_names(names: Sequence[Any], *, what: str = "feature_names") -> tuple[str, ...]:
    names = list(names)
    for name in names:
        if not isinstance(name, str) or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise ValueError(f"{what}: {name!r} is not a name of 1 to {MAX_NAME_LENGTH} characters")
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{what}: names repeat: {repeated[:5]}")
    return tuple(names)


def _check_levels(levels: np.ndarray, *, what: str = "levels") -> np.ndarray:
    if (
        levels.ndim != 1
        or len(levels) < 3
        or not np.isfinite(levels).all()
        or levels[0] != 0.0
        or levels[-1] != 1.0
        or (np.diff(levels) <= 0).any()
        or not (levels == 0.5).any()
    ):
        raise ValueError(
            f"{what} must increase strictly from 0 to 1 and include 0.5, got {levels.tolist()}"
        )
    return levels


def _array(value: Any, name: str, *, ndim: int) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"benign profile: {name!r} is not a numeric array") from None
    if arr.ndim != ndim:
        raise ValueError(f"benign profile: {name!r} must be {ndim}-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"benign profile: {name!r} holds NaN or infinite values")
    return arr


def _blocks(names: tuple[str, ...], categorical: Mapping[str, Sequence[str]]) -> dict:
    index = {name: j for j, name in enumerate(names)}
    blocks: dict[str, tuple[int, ...]] = {}
    seen: set[int] = set()
    for column, features in categorical.items():
        features = list(features)
        if not features:
            raise ValueError(f"categorical column {column!r} has no indicator features")
        unknown = [f for f in features if f not in index]
        if unknown:
            raise ValueError(f"categorical column {column!r}: no features named {unknown[:5]}")
        idx = tuple(index[f] for f in features)
        if seen & set(idx) or len(set(idx)) != len(idx):
            raise ValueError(f"categorical column {column!r} shares indicator features")
        seen |= set(idx)
        blocks[str(column)] = idx
    return blocks


def _check_one_hot(block: np.ndarray, column: str, what: str) -> None:
    ok = ((block == 0) | (block == 1)).all(axis=1) & (block.sum(axis=1) == 1)
    if not ok.all():
        row = int(np.flatnonzero(~ok)[0])
        raise ValueError(
            f"{what}, row {row}: the indicators of categorical column {column!r} are not one-hot "
            f"(values {block[row].tolist()})"
        )


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
