"""The benign reference of the drift check: per-feature quantile bins of the benign training
features with the share of rows in each, each feature's training range, and the detector's
target false-positive rate (:class:`DriftReference`). It bins new flows for the monitors of
:mod:`latent_sculpting.monitor.drift`, and is saved with the model through
:meth:`~DriftReference.get_state`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DriftReference", "check_features"]

_STATE_VERSION = 1
_ARRAYS = ("edges", "n_edges", "shares", "minimum", "maximum")
#: Rows binned at a time when the bins are fitted.
_FIT_BLOCK = 65_536
#: References whose features have at most this many edges count them by comparison, edge rank
#: by edge rank (:meth:`DriftReference.bin_index`); more are searched column by column.
_COMPARE_EDGES = 64


class DriftReference:
    """Per-feature quantile bins of the benign training features, and their benign shares.

    Bins are ``(-inf, e_0], (e_0, e_1], ..., (e_last, inf)``, each edge an observed training
    value. They are equal-frequency bins built greedily over a feature's sorted distinct values
    (:func:`_equal_frequency_edges`): a bin closes at the value that brings it nearest to an
    equal share of the rows not yet binned. For continuous values these are the usual quantile
    bins. Ties cannot be split, so a point mass (the zeros of a flag count, 90 % of the rows)
    fills a bin of its own and the rows beyond it share the bins left, rather than one bin
    as quantile cuts that fall on the same value would leave them: a change among the few
    non-zero values still shows. A feature with ``k <= n_bins`` distinct values gets at most
    ``k`` bins; every bin holds training rows. A constant feature has one bin, so its PSI is
    0 whatever happens; a change in it shows as values outside the training range, which the
    report counts separately.

    Parameters
    ----------
    n_bins : int, default=10
        Bins per feature at most; ties and few distinct values leave fewer.

    Attributes
    ----------
    feature_names_ : list of str
        Feature names, in column order.
    target_fpr_ : float
        The detector's target false-positive rate on benign flows.
    n_reference_ : int
        Training rows the bins were fitted on.
    n_edges_ : ndarray of shape (n_features,), int32
        Edges per feature; feature ``j`` has ``n_edges_[j] + 1`` bins.
    edges_ : ndarray of shape (n_edges_.sum(),), float32
        Every feature's strictly increasing edges, concatenated in feature order.
    shares_ : ndarray of shape (n_edges_.sum() + n_features,), float32
        Share of training rows in each bin, concatenated in feature order; each feature's sum to 1.
    minimum_, maximum_ : ndarray of shape (n_features,), float32
        Each feature's training range.
    """

    def __init__(self, *, n_bins: int = 10) -> None:
        self.n_bins = n_bins

    def fit(self, X: np.ndarray, *, feature_names: list[str], target_fpr: float) -> DriftReference:
        """Fit the bins on benign training features.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            Benign training features, finite.
        feature_names : list of str
            Unique column names of ``X``.
        target_fpr : float
            The detector's target false-positive rate, in (0, 1); for a percentile threshold
            ``P``, ``(100 - P) / 100``.

        Raises
        ------
        ValueError
            If ``n_bins`` < 2, the names are not unique or do not match the columns, there are
            fewer rows than ``n_bins``, a value is not finite (naming row and column) or
            ``target_fpr`` is outside (0, 1).
        """
        if not isinstance(self.n_bins, int | np.integer) or self.n_bins < 2:
            raise ValueError(f"n_bins must be an integer >= 2, got {self.n_bins!r}")
        names = _check_names(feature_names)
        # Edges are stored as float32, the features' type; a value beyond its range is refused.
        X = check_features(check_features(X, names).astype(np.float32, copy=False), names)
        if len(X) < self.n_bins:
            raise ValueError(f"need at least n_bins={self.n_bins} rows to fit bins, got {len(X)}")
        self.target_fpr_ = _check_fpr(target_fpr)
        minimum, maximum = X.min(axis=0), X.max(axis=0)
        edges = [_equal_frequency_edges(X[:, j], self.n_bins) for j in range(X.shape[1])]
        self.feature_names_ = names
        self.n_reference_ = len(X)
        self.n_edges_ = np.asarray([len(e) for e in edges], dtype=np.int32)
        self.edges_ = np.concatenate(edges).astype(np.float32)
        self.minimum_, self.maximum_ = minimum, maximum
        # Counted in row blocks: the bin index of every value at once would be 8 bytes per
        # value (gigabytes for millions of training flows); the counts are the same.
        counts = np.zeros(self.n_extended, dtype=np.int64)
        for start in range(0, len(X), _FIT_BLOCK):
            index = self.bin_index(X[start : start + _FIT_BLOCK])
            counts += np.bincount(index.ravel(), minlength=self.n_extended)
        self.shares_ = (self.bin_counts(counts) / len(X)).astype(np.float32)
        return self

    @property
    def n_extended(self) -> int:
        """Extended bins over all features (:meth:`bin_index`): each feature's ``n_edges_ + 1``
        bins, plus one below and one above its training range."""
        return int(self.n_edges_.sum()) + 3 * len(self.feature_names_)

    def bin_edges(self, feature: int | str) -> np.ndarray:
        """The edges of one feature, by index or name."""
        j = self.feature_names_.index(feature) if isinstance(feature, str) else int(feature)
        start = int(self.n_edges_[:j].sum())
        return self.edges_[start : start + int(self.n_edges_[j])]

    def bin_index(self, X: np.ndarray) -> np.ndarray:
        """Each value's *extended* bin, numbered across features: shape (n_rows, n_features).

        A feature's extended bins are: below its training minimum, its bins, above its
        maximum. One ``bincount`` of the result then gives both the PSI counts (the end bins
        take the out-of-range values back) and the out-of-range counts.
        """
        n_rows, n_features = X.shape
        sizes, offsets, bounds, padded = self._layout()
        if padded is not None:
            # Edges below each value, counted with one comparison of the whole matrix per edge
            # rank (features with fewer edges padded with +inf, below no finite value): a
            # request of one flow would otherwise pay numpy's call overhead once per feature.
            # The same counts as searchsorted(side="left").
            index = np.ones((n_rows, n_features), dtype=np.intp)
            for edge in padded:
                index += edge < X
        else:
            index = np.empty((n_rows, n_features), dtype=np.intp)
            for j in range(n_features):
                edges = self.edges_[bounds[j] : bounds[j + 1]]
                index[:, j] = np.searchsorted(edges, X[:, j], side="left") + 1
        below = X < self.minimum_
        above = X > self.maximum_
        index[below] = 0
        index = np.where(above, sizes - 1, index)
        index += offsets
        return index

    def bin_counts(self, extended: np.ndarray) -> np.ndarray:
        """Per-bin counts (``shares_``'s layout) from counts of :meth:`bin_index`'s extended
        bins: the values outside the training range join the open end bins."""
        return _regular(extended, self.n_edges_)

    def outside_counts(self, extended: np.ndarray) -> np.ndarray:
        """Per-feature count of values below or above the training range, from counts of
        :meth:`bin_index`'s extended bins."""
        return _outside(extended, self.n_edges_)

    def _layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """What :meth:`bin_index` reads of the edges: each feature's extended bin count,
        where its bins start, where its edges start, and the edges padded into one
        (rank, feature) array (None when some feature has too many edges for that). Computed
        once per fitted reference: building them took longer than binning a one-flow request."""
        cached = self.__dict__.get("_layout_cache")
        if cached is not None and cached[0] is self.edges_ and cached[1] is self.n_edges_:
            return cached[2]
        n_features = len(self.n_edges_)
        sizes = self.n_edges_.astype(np.int64) + 3
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        bounds = np.concatenate([[0], np.cumsum(self.n_edges_)])
        widest = int(self.n_edges_.max(initial=0))
        padded = None
        if widest <= _COMPARE_EDGES:
            padded = np.full((widest, n_features), np.inf, dtype=self.edges_.dtype)
            rank = np.arange(len(self.edges_)) - np.repeat(bounds[:-1], self.n_edges_)
            padded[rank, np.repeat(np.arange(n_features), self.n_edges_)] = self.edges_
        layout = (sizes, offsets, bounds, padded)
        # One assignment: scoring threads may read it while another computes it.
        self._layout_cache = (self.edges_, self.n_edges_, layout)
        return layout

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """JSON-able config and flat arrays, for the model file."""
        config = {
            "version": _STATE_VERSION,
            "n_bins": int(self.n_bins),
            "feature_names": list(self.feature_names_),
            "target_fpr": float(self.target_fpr_),
            "n_reference": int(self.n_reference_),
        }
        arrays = {
            "edges": self.edges_,
            "n_edges": self.n_edges_,
            "shares": self.shares_,
            "minimum": self.minimum_,
            "maximum": self.maximum_,
        }
        return config, {k: np.ascontiguousarray(v) for k, v in arrays.items()}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> DriftReference:
        """Rebuild a fitted reference from :meth:`get_state` output, checking every value.

        Raises
        ------
        ValueError
            Naming what is wrong: an unknown version, a missing key or array, names that are not
            unique strings, a target outside (0, 1), arrays of the wrong shape or kind, edges
            that are not finite or not strictly increasing within the training range, a range
            with minimum above maximum, shares outside [0, 1] or not summing to 1 per feature.
        """
        if not isinstance(config, dict):
            raise ValueError(f"drift state config must be a dict, got {type(config).__name__}")
        if config.get("version") != _STATE_VERSION:
            raise ValueError(f"unsupported drift state version {config.get('version')!r}")
        missing = [
            k for k in ("n_bins", "feature_names", "target_fpr", "n_reference") if k not in config
        ]
        missing += [k for k in _ARRAYS if k not in arrays]
        if missing:
            raise ValueError(f"drift state lacks {missing}")
        n_bins, n_reference = config["n_bins"], config["n_reference"]
        if not isinstance(n_bins, int) or isinstance(n_bins, bool) or n_bins < 2:
            raise ValueError(f"drift state n_bins must be an integer >= 2, got {n_bins!r}")
        if not isinstance(n_reference, int) or isinstance(n_reference, bool) or n_reference < 1:
            raise ValueError(
                f"drift state n_reference must be a positive integer, got {n_reference!r}"
            )
        names = _check_names(config["feature_names"])
        n_features = len(names)
        a = {k: np.asarray(arrays[k]) for k in _ARRAYS}
        for key in _ARRAYS:
            if a[key].ndim != 1:
                raise ValueError(f"drift state array {key!r} must be 1-D, got shape {a[key].shape}")
        if a["n_edges"].dtype.kind not in "iu":
            raise ValueError(f"drift state n_edges must be integers, got {a['n_edges'].dtype}")
        for key in ("edges", "shares", "minimum", "maximum"):
            if a[key].dtype.kind != "f":
                raise ValueError(f"drift state {key!r} must be floating point, got {a[key].dtype}")
            if not np.isfinite(a[key]).all():
                raise ValueError(f"drift state {key!r} holds non-finite values")
        for key in ("n_edges", "minimum", "maximum"):
            if a[key].shape != (n_features,):
                raise ValueError(
                    f"drift state {key!r} has shape {a[key].shape}, expected ({n_features},) "
                    f"for {n_features} feature names"
                )
        n_edges = a["n_edges"].astype(np.int64)
        if (n_edges < 0).any() or (n_edges > n_bins - 1).any():
            raise ValueError(f"drift state n_edges must lie in [0, {n_bins - 1}], got {n_edges}")
        if len(a["edges"]) != n_edges.sum():
            raise ValueError(
                f"drift state has {len(a['edges'])} edges, n_edges says {int(n_edges.sum())}"
            )
        if len(a["shares"]) != n_edges.sum() + n_features:
            raise ValueError(
                f"drift state has {len(a['shares'])} bin shares, expected "
                f"{int(n_edges.sum()) + n_features} (n_edges + 1 per feature)"
            )
        bad = np.flatnonzero(a["minimum"] > a["maximum"])
        if len(bad):
            raise ValueError(f"drift state minimum exceeds maximum for feature {names[bad[0]]!r}")
        shares = a["shares"]
        if ((shares < 0) | (shares > 1)).any():
            raise ValueError("drift state bin shares must lie in [0, 1]")
        edge_bounds = np.concatenate([[0], np.cumsum(n_edges)])
        share_bounds = np.concatenate([[0], np.cumsum(n_edges + 1)])
        for j, name in enumerate(names):
            e = a["edges"][edge_bounds[j] : edge_bounds[j + 1]]
            if (np.diff(e) <= 0).any():
                raise ValueError(f"drift state edges of feature {name!r} are not increasing: {e}")
            if len(e) and (e[0] < a["minimum"][j] or e[-1] >= a["maximum"][j]):
                raise ValueError(
                    f"drift state edges of feature {name!r} leave its training range "
                    f"[{a['minimum'][j]}, {a['maximum'][j]}]"
                )
            total = float(shares[share_bounds[j] : share_bounds[j + 1]].astype(np.float64).sum())
            if abs(total - 1.0) > 1e-4:
                raise ValueError(
                    f"drift state bin shares of feature {name!r} sum to {total}, not 1"
                )
        model = cls(n_bins=n_bins)
        model.feature_names_ = names
        model.target_fpr_ = _check_fpr(config["target_fpr"])
        model.n_reference_ = n_reference
        model.n_edges_ = n_edges.astype(np.int32)
        model.edges_ = a["edges"].astype(np.float32)
        model.shares_ = shares.astype(np.float32)
        model.minimum_ = a["minimum"].astype(np.float32)
        model.maximum_ = a["maximum"].astype(np.float32)
        return model


def _equal_frequency_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges of at most ``n_bins`` bins ``(e_i, e_(i+1)]`` of about equal counts; ties kept whole.

    Walks the cumulative counts of the sorted distinct values: each bin closes at the value
    where the count reaches an equal share of the rows left for the bins left, or one value
    earlier when that is nearer the share. An edge at the maximum would leave the last bin
    empty and is not kept.
    """
    distinct, counts = np.unique(values, return_counts=True)
    cumulative = np.cumsum(counts)
    n = int(cumulative[-1])
    edges, done, first, bins_left = [], 0, 0, n_bins
    while bins_left > 1 and first < len(distinct) - 1:
        goal = done + (n - done) / bins_left
        i = int(np.searchsorted(cumulative, goal, side="left"))
        if i > first and cumulative[i] - goal > goal - cumulative[i - 1]:
            i -= 1
        if i >= len(distinct) - 1:
            break
        edges.append(distinct[i])
        done, first, bins_left = int(cumulative[i]), i + 1, bins_left - 1
    return np.asarray(edges, dtype=values.dtype)


def _regular(extended: np.ndarray, n_edges: np.ndarray) -> np.ndarray:
    """Per-bin counts from extended counts: out-of-range values join the open end bins."""
    sizes = n_edges.astype(np.int64) + 3
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    inner = np.ones(len(extended), dtype=bool)
    inner[starts] = inner[starts + sizes - 1] = False
    regular = extended[inner].astype(np.float64)
    first = np.concatenate([[0], np.cumsum(sizes - 2)[:-1]])
    regular[first] += extended[starts]
    regular[first + sizes - 3] += extended[starts + sizes - 1]
    return regular


def _outside(extended: np.ndarray, n_edges: np.ndarray) -> np.ndarray:
    """Per-feature count of values below or above the training range."""
    sizes = n_edges.astype(np.int64) + 3
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return extended[starts] + extended[starts + sizes - 1]


def _check_names(feature_names: Any) -> list[str]:
    if isinstance(feature_names, str) or not hasattr(feature_names, "__iter__"):
        raise ValueError(f"feature_names must be a list of strings, got {feature_names!r}")
    names = list(feature_names)
    if not names:
        raise ValueError("feature_names is empty")
    wrong = [name for name in names if not isinstance(name, str)]
    if wrong:
        raise ValueError(f"feature names must be strings, got {wrong[0]!r}")
    if len(set(names)) < len(names):
        repeated = next(name for j, name in enumerate(names) if name in names[:j])
        raise ValueError(f"feature names must be unique, {repeated!r} repeats")
    return names


def check_features(X: Any, names: list[str]) -> np.ndarray:
    """``X`` as a numeric matrix with a column per name, every value finite (an error names the
    row and column of the first that is not)."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"X has shape {X.shape}, expected (n_rows, {len(names)}) for the features")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X must be numeric, got dtype {X.dtype}")
    finite = np.isfinite(X)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(
            f"X holds a non-finite value {X[row, col]} at row {row}, column {names[col]!r}"
        )
    return X


def _check_fpr(target_fpr: Any) -> float:
    if isinstance(target_fpr, bool) or not isinstance(target_fpr, int | float | np.floating):
        raise ValueError(f"target_fpr must be a number in (0, 1), got {target_fpr!r}")
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    return float(target_fpr)
