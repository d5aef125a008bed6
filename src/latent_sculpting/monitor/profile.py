"""The benign profile: where a flow's feature values stand among benign training flows.

:class:`BenignProfile` summarises the benign training feature matrix feature by feature
(quantiles on a fixed grid, whose middle level is the median; the share of each categorical
value), so that placing a value among benign values costs a binary search. It is what
:mod:`latent_sculpting.monitor.explain` explains alerts against.

A categorical column (its one-hot indicator features ``proto=tcp``, ..., ``proto=(other)``, see
:mod:`latent_sculpting.io.flowspec`) is one unit: how unusual its value is is the share of
benign flows with that value, and its reset is the benign flows' most common value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numba
import numpy as np

from latent_sculpting.monitor.checks import (
    MAX_NAME_LENGTH,
    as_matrix,
    check_names,
    check_one_hot,
)

__all__ = ["LEVELS", "BenignProfile", "spec_categorical"]

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
    numeric_ : ndarray of int64
        Indices of the numeric (non-indicator) features, in feature order.
    blocks_ : list of ndarray of int64
        Per categorical column, in :attr:`categorical_` order: indices of its indicators.
    modes_ : list of int
        Per categorical column: position in its block of its most common benign value.
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
        X = as_matrix(X, None, what="X")
        names = check_names(feature_names)
        if len(names) != X.shape[1]:
            raise ValueError(f"{len(names)} feature names for {X.shape[1]} columns of X")
        if len(X) == 0:
            raise ValueError("X has no rows; a benign profile needs benign training flows")
        blocks = _blocks(names, categorical or {})
        for column, idx in blocks.items():
            check_one_hot(X[:, idx], column, "X")
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
        self.numeric_ = np.flatnonzero(~in_block)
        self.blocks_ = [np.asarray(idx, dtype=np.int64) for idx in self.categorical_.values()]
        self.modes_ = [int(np.argmax(self.shares_[c])) for c in self.categorical_]
        self._median_level = int(np.flatnonzero(self.levels_ == 0.5)[0])
        self.units_ = tuple(self.feature_names_[j] for j in self.numeric_) + tuple(
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
        X = as_matrix(X, len(self.feature_names_), what="X")
        return _positions(X, self.quantiles_, self.levels_)

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
        X = as_matrix(X, len(self.feature_names_), what="X")
        return self.assess(X)[0]

    def assess(self, X: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per row and unit: tail, distance from the benign value (tie-break), whether it
        deviates; and the numeric ``below``/``above`` and each block's set indicator.

        ``X`` is a checked matrix (:func:`~latent_sculpting.monitor.checks.as_matrix` with
        this profile's feature count); :meth:`unit_tails` checks it first."""
        numeric = X[:, self.numeric_]
        below, above = self.position(X)
        below, above = below[:, self.numeric_], above[:, self.numeric_]
        median = self.median_[self.numeric_].astype(np.float64)
        spread = (self.quantiles_[-1] - self.quantiles_[0])[self.numeric_].astype(np.float64)
        distance = np.abs(numeric - median) / np.maximum(spread, np.finfo(np.float32).tiny)
        tails = [self._tail(below, above)]
        distances = [distance]
        deviates = [numeric != median]
        hot = []
        for b, (column, idx) in enumerate(zip(self.categorical_, self.blocks_, strict=True)):
            check_one_hot(X[:, idx], column, "the explained rows")
            h = np.argmax(X[:, idx], axis=1)
            hot.append(h)
            tails.append(np.maximum(self.shares_[column][h], self.floor_)[:, None])
            differs = h != self.modes_[b]
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
        X = as_matrix(X, len(self.feature_names_), what="X").copy()
        units = np.asarray(units, dtype=np.int64).reshape(len(X), -1)
        if units.size and (units.min() < -1 or units.max() >= len(self.units_)):
            raise ValueError(f"unit indices must be in [-1, {len(self.units_)}), got {units}")
        n_numeric = len(self.numeric_)
        median = self.median_
        for slot in units.T:
            rows = np.flatnonzero((slot >= 0) & (slot < n_numeric))
            cols = self.numeric_[slot[rows]]
            X[rows, cols] = median[cols]
            for b, idx in enumerate(self.blocks_):
                rows = np.flatnonzero(slot == n_numeric + b)
                X[np.ix_(rows, idx)] = 0.0
                X[rows, idx[self.modes_[b]]] = 1.0
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
        names = check_names(names, what="benign profile: 'feature_names'")
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


# numba, not numpy: explaining a batch places every value of every flagged flow on its
# feature's quantile grid, and numpy's whole-matrix passes (a comparison per level, then a
# dozen temporaries) cost more than the model's calls; one pass per value is about 10x less.
@numba.njit(nogil=True, cache=True, error_model="numpy")
def _positions(
    X: np.ndarray, quantiles: np.ndarray, levels: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`BenignProfile.position`: per value, the grid quantiles of its feature below it
    (``left``) and at or below it (``right``, binary searches); on a grid quantile (a tie) the
    shares come from the neighbouring levels, between two of them the level is interpolated."""
    n, d = X.shape
    last = len(levels) - 1
    below = np.empty((n, d))
    above = np.empty((n, d))
    for i in range(n):
        for j in range(d):
            x = np.float64(X[i, j])
            lo, hi = 0, last + 1
            while lo < hi:
                mid = (lo + hi) // 2
                if quantiles[mid, j] < x:
                    lo = mid + 1
                else:
                    hi = mid
            left = lo
            hi = last + 1
            while lo < hi:
                mid = (lo + hi) // 2
                if quantiles[mid, j] <= x:
                    lo = mid + 1
                else:
                    hi = mid
            right = lo
            if right > left:
                below[i, j] = levels[left - 1] if left > 0 else 0.0
                above[i, j] = 1.0 - levels[right] if right <= last else 0.0
                continue
            if left == 0:
                level = 0.0
            elif left > last:
                level = 1.0
            else:
                q0 = np.float64(quantiles[left - 1, j])
                frac = (x - q0) / (np.float64(quantiles[left, j]) - q0)
                frac = min(max(frac, 0.0), 1.0)
                level = levels[left - 1] + frac * (levels[left] - levels[left - 1])
            below[i, j] = level
            above[i, j] = 1.0 - level
    return below, above
