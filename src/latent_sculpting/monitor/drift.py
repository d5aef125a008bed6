"""Input drift: does the traffic being scored still look like the benign training traffic?

A detector's conformal false-alarm rate (``--target-fpr``) holds only for benign flows that are
exchangeable with the benign flows it was calibrated on. This module owns the check that they
still are, from the features and flags alone:

- :class:`DriftReference`, fitted on the benign training features: per-feature quantile bins
  with the benign share of each, each feature's training range, and the target false-positive
  rate. A few KB; saved with the model through :meth:`~DriftReference.get_state`.
- :class:`DriftMonitor` accumulates bin counts of scored batches in ``O(features x bins)``
  memory; :class:`RollingDriftMonitor` keeps the same counts for the last flows only, for a
  long-running service. Both are thread-safe; a monitor's counts travel between processes as
  JSON (:meth:`~DriftMonitor.get_counts`, :meth:`~DriftMonitor.add_counts`).
- :class:`DriftReport`: the population stability index (PSI) and the share outside the training
  range per feature, the flagged share against the target with a one-sided binomial test, and
  two separate findings in plain words. *The traffic moved* (features unlike the benign
  training traffic) is evidence that the false-alarm target may no longer hold. *Many flows
  are flagged* says nothing about why: attacks are meant to be flagged, so the flag rate is a
  false-alarm rate only when the flows counted are known to be benign (labelled so); otherwise
  the report says that it cannot tell attacks from false alarms.

PSI is the Jeffreys divergence between the binned training and observed distributions,
``sum_i (q_i - p_i) log(q_i / p_i)`` (Siddiqi, *Credit Risk Scorecards*, 2006). Scaled by
``n m / (n + m)`` it is approximately chi-squared with ``bins - 1`` degrees of freedom when
nothing moved (Yurdakul, *Statistical Properties of the Population Stability Index*, 2018);
the verdict uses that to ignore a large PSI that a few flows alone could produce.

It is long because it holds the statistics (PSI, range shares, a binomial test on the
flag rate), their fitted reference, and two monitors (one-shot and rolling, thread-safe and
mergeable across processes) that share them.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import gammaln
from scipy.stats import binom, chi2

__all__ = ["DriftMonitor", "DriftReference", "DriftReport", "RollingDriftMonitor"]

_STATE_VERSION = 1
_ARRAYS = ("edges", "n_edges", "shares", "minimum", "maximum")
#: An empty bin counts as half a flow, so that ``log(q / p)`` stays finite (see DriftReport).
PSI_FLOOR_COUNT = 0.5
#: Rows binned at a time when the bins are fitted.
_FIT_BLOCK = 65_536
#: References whose features have at most this many edges count them by comparison, edge rank
#: by edge rank (:meth:`DriftReference._bin_index`); more are searched column by column.
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
        X = _check_features(_check_features(X, names).astype(np.float32, copy=False), names)
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
        counts = np.zeros(self._n_extended, dtype=np.int64)
        for start in range(0, len(X), _FIT_BLOCK):
            index = self._bin_index(X[start : start + _FIT_BLOCK])
            counts += np.bincount(index.ravel(), minlength=self._n_extended)
        self.shares_ = (_regular(counts, self.n_edges_) / len(X)).astype(np.float32)
        return self

    @property
    def n_features_(self) -> int:
        return len(self.feature_names_)

    @property
    def _n_extended(self) -> int:
        return int(self.n_edges_.sum()) + 3 * len(self.feature_names_)

    def bin_edges(self, feature: int | str) -> np.ndarray:
        """The edges of one feature, by index or name."""
        j = self.feature_names_.index(feature) if isinstance(feature, str) else int(feature)
        start = int(self.n_edges_[:j].sum())
        return self.edges_[start : start + int(self.n_edges_[j])]

    def _bin_index(self, X: np.ndarray) -> np.ndarray:
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

    def _layout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """What :meth:`_bin_index` reads of the edges: each feature's extended bin count,
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


@dataclass(frozen=True)
class DriftReport:
    """What the scored flows say about drift: per feature, the flagged share, and a verdict.

    PSI is computed on a feature's training bins, the end bins open so that they take the
    values beyond the training range. An empty observed bin counts as ``PSI_FLOOR_COUNT`` (half
    a flow), and so does an empty training bin, which fitting never leaves but a hand-made state
    may: without a floor one empty bin makes PSI infinite whatever its training share, while
    half a flow bounds its term by ``p log(2 m p)`` for ``m`` flows, growing only as the
    evidence for the empty bin does.

    Attributes
    ----------
    n_flows, n_flagged : int
        Flows counted, and those the detector flagged.
    n_labelled_benign : int
        Flows counted that were known benign, by a label (:meth:`DriftMonitor.update`). When it
        is ``n_flows`` the flag rate is a false-alarm rate; otherwise flagged flows may be
        attacks.
    n_reference : int
        Benign training rows of the reference.
    target_fpr : float
        The detector's target false-positive rate.
    flagged_share : float
        ``n_flagged / n_flows``; NaN without flows. It counts every flagged flow, real attacks
        included, so it bounds the false-alarm rate from above.
    flag_rate_p_value : float
        One-sided binomial test of "the flag rate is at most ``target_fpr``".
    flag_rate_exceeded : bool
        ``flagged_share > fpr_factor * target_fpr`` and ``flag_rate_p_value < alpha``: many
        flows are flagged. Attacks or false alarms: only labels tell (``n_labelled_benign``).
    feature_names : list of str
    psi, psi_p_value : ndarray of shape (n_features,)
        Population stability index per feature, and the chi-squared p-value of
        ``psi * n m / (n + m)`` on ``bins - 1`` degrees of freedom (1 for a one-bin feature,
        whose PSI is 0).
    out_of_range_share, out_of_range_p_value : ndarray of shape (n_features,)
        Share of flows outside the feature's training range, and the exchangeability p-value of
        that many: with ``n`` training and ``m`` new flows exchangeable, ``k`` of the new ones
        fall outside the training range with probability at most
        ``(k + 1) C(m, k) / C(n + m, k)`` (ties only make it smaller).
    feature_drifted : ndarray of shape (n_features,), bool
        PSI above ``psi_threshold``, or out-of-range share above ``out_of_range_threshold``,
        with the matching p-value below ``alpha / n_features`` (Bonferroni).
    drifted : bool
        Any feature drifted: the traffic moved against the benign training traffic.
    warning : bool
        ``drifted`` or ``flag_rate_exceeded``: the report is worth a warning.
    top_features : list of str
        The features that moved most: the drifted ones first, then by PSI.
    reasons : list of str
        Why ``warning`` is set, one line per test that fired; empty when it is not.
    traffic : str
        What the features say, in plain words: whether the traffic moved, and what that
        means for the false-alarm target.
    flag_rate : str
        What the flag rate says, in plain words, and what it cannot say.
    consequence : str
        The two together, as one line: what the report means.
    thresholds : dict
        The verdict's parameters.
    """

    n_flows: int
    n_flagged: int
    n_labelled_benign: int
    n_reference: int
    target_fpr: float
    flagged_share: float
    flag_rate_p_value: float
    flag_rate_exceeded: bool
    feature_names: list[str]
    psi: np.ndarray
    psi_p_value: np.ndarray
    out_of_range_share: np.ndarray
    out_of_range_p_value: np.ndarray
    feature_drifted: np.ndarray
    drifted: bool
    warning: bool
    top_features: list[str]
    reasons: list[str]
    traffic: str
    flag_rate: str
    consequence: str
    thresholds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; NaN (no flows yet) becomes None."""
        index = {name: j for j, name in enumerate(self.feature_names)}
        features = {
            name: {
                "psi": _num(self.psi[j]),
                "psi_p_value": _num(self.psi_p_value[j]),
                "out_of_range_share": _num(self.out_of_range_share[j]),
                "out_of_range_p_value": _num(self.out_of_range_p_value[j]),
                "drifted": bool(self.feature_drifted[j]),
            }
            for name, j in index.items()
        }
        out = {
            "warning": self.warning,
            "drifted": self.drifted,
            "flag_rate_exceeded": self.flag_rate_exceeded,
            "consequence": self.consequence,
            "traffic": self.traffic,
            "flag_rate": self.flag_rate,
            "reasons": list(self.reasons),
            "n_flows": self.n_flows,
            "n_flagged": self.n_flagged,
            "n_labelled_benign": self.n_labelled_benign,
            "flagged_share": _num(self.flagged_share),
            "target_fpr": self.target_fpr,
            "flag_rate_p_value": _num(self.flag_rate_p_value),
            "n_reference": self.n_reference,
            "top_features": [{"feature": name, **features[name]} for name in self.top_features],
            "features": features,
            "thresholds": dict(self.thresholds),
        }
        json.dumps(out, allow_nan=False)  # fails here, not in a client, if a NaN slipped in
        return out

    def __str__(self) -> str:
        head = (
            "DRIFT" if self.drifted else "MANY FLAGGED" if self.flag_rate_exceeded else "no drift"
        )
        lines = [f"drift check ({self.n_flows:,} flows): {head}: {self.consequence}"]
        if self.n_flows:
            moved = []
            for name in self.top_features:
                j = self.feature_names.index(name)
                outside = self.out_of_range_share[j]
                beyond = f", {_pct(outside)} outside training range" if outside > 0 else ""
                moved.append(f"{name} (PSI {self.psi[j]:.2f}{beyond})")
            lines.append("  moved most: " + "; ".join(moved))
        return "\n".join(lines)


class DriftMonitor:
    """Counts of scored flows in the reference's bins, and the drift report they give.

    ``update`` takes each scored batch: its features and the detector's 0/1 flags. Memory is
    one count per bin and feature whatever the number of flows (plus, during ``update``, one
    index per value of the batch). Thread-safe: updates and reports from several threads see
    whole batches.

    Parameters
    ----------
    reference : DriftReference
        Fitted on the detector's benign training features.
    psi_threshold : float, default=0.25
        PSI above which a feature has moved: the customary "significant shift" level of credit
        scoring (Siddiqi 2006; below 0.1 "no change", 0.1-0.25 "some change"), about what
        moving a normal feature's mean by half its standard deviation gives.
    out_of_range_threshold : float, default=0.01
        Share of flows outside a feature's training range above which it has moved. For new
        flows exchangeable with the ``n`` training flows the expected share is at most
        ``2 / (n + 1)``; 1 % of flows is many times that for any reference worth fitting,
        and catches changes in features that were constant in training (one bin, PSI 0).
    fpr_factor : float, default=2.0
        The flag rate must exceed ``fpr_factor * target_fpr``: a doubling of false alarms is
        the smallest change worth acting on. On exchangeable traffic the realised rate of a
        split-conformal threshold reaches twice the target for fewer than 0.5 % of models
        calibrated on ``10 / target_fpr`` benign flows (its law is ``Beta(n + 1 - k, k)``), but
        for 13.5 % of those calibrated on the fewest that are allowed, ``1 / target_fpr - 1``;
        the warning is then true of that model.
    alpha : float, default=1e-3
        Significance of every test: the binomial test of the flag rate, and each feature's PSI
        and out-of-range tests at ``alpha / n_features``. A report may be asked for often (a
        service polled every minute), and each look is another chance of a false warning.
    n_top : int, default=5
        Features listed in ``top_features``.
    """

    def __init__(
        self,
        reference: DriftReference,
        *,
        psi_threshold: float = 0.25,
        out_of_range_threshold: float = 0.01,
        fpr_factor: float = 2.0,
        alpha: float = 1e-3,
        n_top: int = 5,
    ) -> None:
        if not hasattr(reference, "shares_"):
            raise ValueError("reference is not fitted; call DriftReference.fit first")
        if not psi_threshold > 0:
            raise ValueError(f"psi_threshold must be > 0, got {psi_threshold}")
        if not 0 < out_of_range_threshold < 1:
            raise ValueError(
                f"out_of_range_threshold must be in (0, 1), got {out_of_range_threshold}"
            )
        if not fpr_factor >= 1:
            raise ValueError(f"fpr_factor must be >= 1, got {fpr_factor}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        if not isinstance(n_top, int) or n_top < 0:
            raise ValueError(f"n_top must be a non-negative integer, got {n_top!r}")
        self.reference = reference
        self.psi_threshold = psi_threshold
        self.out_of_range_threshold = out_of_range_threshold
        self.fpr_factor = fpr_factor
        self.alpha = alpha
        self.n_top = n_top
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every flow counted so far."""
        with self._lock:
            self._counts = _Counts.zeros(self.reference._n_extended)

    @property
    def n_flows(self) -> int:
        """Flows the next report covers."""
        with self._lock:
            return self._total().n

    def update(
        self, X: np.ndarray, flagged: np.ndarray, *, labelled_benign: bool = False
    ) -> DriftMonitor:
        """Count one scored batch.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            The batch's features, finite, columns in the reference's order.
        flagged : array-like of shape (n_rows,)
            The detector's decision per flow: 0/1 or bool.
        labelled_benign : bool, default=False
            Every flow of the batch is known benign (by its label): its flags are false alarms.

        Raises
        ------
        ValueError
            If ``X`` has the wrong number of columns or a non-finite value (naming row and
            column), or ``flagged`` has the wrong length or a value other than 0 and 1.
        """
        index, flags = self._prepare(X, flagged)
        with self._lock:
            self._add(index, flags, bool(labelled_benign))
        return self

    def report(self) -> DriftReport:
        """The drift report of every flow counted so far."""
        with self._lock:
            total = self._total().copy()
        return _build_report(self, total)

    def get_counts(self) -> dict[str, Any]:
        """The counts behind the next report, JSON-able, for :meth:`add_counts` of a monitor
        in another process (the Ray engine's workers each count their own files)."""
        with self._lock:
            total = self._total()
            return {
                "bins": total.bins.tolist(),
                "n": total.n,
                "flagged": total.flagged,
                "labelled_benign": total.labelled,
            }

    def add_counts(self, counts: dict[str, Any]) -> DriftMonitor:
        """Add :meth:`get_counts` of a monitor on the same reference.

        Raises
        ------
        ValueError
            If the counts do not fit the reference's bins or contradict each other.
        """
        bins = np.asarray(counts.get("bins", ()), dtype=np.int64)
        n, flagged = counts.get("n"), counts.get("flagged")
        labelled = counts.get("labelled_benign")
        n_features = len(self.reference.feature_names_)
        if bins.shape != (self.reference._n_extended,) or (bins < 0).any():
            raise ValueError(
                f"drift counts have {bins.shape} bins, expected ({self.reference._n_extended},) "
                "non-negative counts of a monitor on the same reference"
            )
        if not isinstance(n, int) or not isinstance(flagged, int) or not 0 <= flagged <= n:
            raise ValueError(f"drift counts need integers 0 <= flagged <= n, got {flagged}, {n}")
        if not isinstance(labelled, int) or not 0 <= labelled <= n:
            raise ValueError(
                f"drift counts need an integer 0 <= labelled_benign <= n, got {labelled!r}, {n}"
            )
        if int(bins.sum()) != n * n_features:
            raise ValueError(f"drift counts hold {int(bins.sum())} values for {n} flows")
        with self._lock:
            self._merge(_Counts(bins, n, flagged, labelled))
        return self

    def _merge(self, counts: _Counts) -> None:
        self._counts.bins += counts.bins
        self._counts.n += counts.n
        self._counts.flagged += counts.flagged
        self._counts.labelled += counts.labelled

    def _prepare(self, X: np.ndarray, flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = _check_features(X, self.reference.feature_names_)
        flags = np.asarray(flagged)
        if flags.shape != (len(X),):
            raise ValueError(f"flagged has shape {flags.shape}, expected ({len(X)},) for X")
        if flags.dtype.kind not in "biuf":
            raise ValueError(f"flagged must be 0/1 or bool, got dtype {flags.dtype}")
        bad = np.flatnonzero((flags != 0) & (flags != 1))
        if len(bad):
            raise ValueError(
                f"flagged must be 0 or 1, got {flags[bad[0]].item()!r} at row {bad[0]}"
            )
        return self.reference._bin_index(X), flags.astype(bool)

    def _add(self, index: np.ndarray, flags: np.ndarray, labelled: bool) -> None:
        self._counts.add(index, flags, labelled)

    def _total(self) -> _Counts:
        return self._counts


class RollingDriftMonitor(DriftMonitor):
    """A :class:`DriftMonitor` whose reports cover only the most recent flows.

    The window is a ring of ``n_buckets`` count arrays of ``ceil(window / n_buckets)`` flows
    each; a batch is split across buckets flow by flow, and when the newest bucket is full the
    oldest is dropped. A report therefore covers the last ``window`` flows to within one bucket
    (at least ``window - window / n_buckets`` once that many arrived), in
    ``O(n_buckets x features x bins)`` memory.

    Parameters
    ----------
    reference : DriftReference
    window : int, default=10_000
        Flows a report covers.
    n_buckets : int, default=10
        Granularity of the window.
    **thresholds
        ``psi_threshold``, ``out_of_range_threshold``, ``fpr_factor``, ``alpha``, ``n_top``:
        see :class:`DriftMonitor`.
    """

    def __init__(
        self,
        reference: DriftReference,
        *,
        window: int = 10_000,
        n_buckets: int = 10,
        **thresholds: Any,
    ) -> None:
        if not isinstance(n_buckets, int) or n_buckets < 1:
            raise ValueError(f"n_buckets must be a positive integer, got {n_buckets!r}")
        if not isinstance(window, int) or window < n_buckets:
            raise ValueError(f"window must be an integer >= n_buckets={n_buckets}, got {window!r}")
        self.window = window
        self.n_buckets = n_buckets
        self._bucket_size = -(-window // n_buckets)
        super().__init__(reference, **thresholds)

    def reset(self) -> None:
        with self._lock:
            self._buckets: deque[_Counts] = deque(maxlen=self.n_buckets)

    def _add(self, index: np.ndarray, flags: np.ndarray, labelled: bool) -> None:
        capacity = self._bucket_size * self.n_buckets
        if len(index) >= capacity:
            # Only the last full ring of flows can be in the window.
            index, flags = index[-capacity:], flags[-capacity:]
            self._buckets.clear()
        start = 0
        while start < len(index):
            if not self._buckets or self._buckets[-1].n >= self._bucket_size:
                self._buckets.append(_Counts.zeros(self.reference._n_extended))
            bucket = self._buckets[-1]
            stop = min(len(index), start + self._bucket_size - bucket.n)
            bucket.add(index[start:stop], flags[start:stop], labelled)
            start = stop

    def _merge(self, counts: _Counts) -> None:
        raise TypeError("a rolling window takes flows in order; merge counts into a DriftMonitor")

    def _total(self) -> _Counts:
        total = _Counts.zeros(self.reference._n_extended)
        for bucket in self._buckets:
            total.bins += bucket.bins
            total.n += bucket.n
            total.flagged += bucket.flagged
            total.labelled += bucket.labelled
        return total


@dataclass
class _Counts:
    """Extended-bin counts of some flows, how many, how many were flagged, and how many were
    known benign by a label."""

    bins: np.ndarray
    n: int = 0
    flagged: int = 0
    labelled: int = 0

    @classmethod
    def zeros(cls, size: int) -> _Counts:
        return cls(np.zeros(size, dtype=np.int64))

    def add(self, index: np.ndarray, flags: np.ndarray, labelled: bool) -> None:
        self.bins += np.bincount(index.ravel(), minlength=len(self.bins))
        self.n += len(index)
        self.flagged += int(flags.sum())
        self.labelled += len(index) if labelled else 0

    def copy(self) -> _Counts:
        return _Counts(self.bins.copy(), self.n, self.flagged, self.labelled)


def _build_report(monitor: DriftMonitor, counts: _Counts) -> DriftReport:
    ref = monitor.reference
    names, n, m = ref.feature_names_, ref.n_reference_, counts.n
    n_features = len(names)
    thresholds = {
        "psi_threshold": monitor.psi_threshold,
        "out_of_range_threshold": monitor.out_of_range_threshold,
        "fpr_factor": monitor.fpr_factor,
        "alpha": monitor.alpha,
    }
    target = ref.target_fpr_
    if m == 0:
        nan = np.full(n_features, np.nan)
        return DriftReport(
            n_flows=0, n_flagged=0, n_labelled_benign=0, n_reference=n, target_fpr=target,
            flagged_share=np.nan, flag_rate_p_value=np.nan, flag_rate_exceeded=False,
            feature_names=list(names), psi=nan, psi_p_value=nan, out_of_range_share=nan,
            out_of_range_p_value=nan, feature_drifted=np.zeros(n_features, dtype=bool),
            drifted=False, warning=False, top_features=[], reasons=[],
            traffic="no flows counted yet", flag_rate="no flows counted yet",
            consequence="no flows counted yet", thresholds=thresholds,
        )  # fmt: skip
    psi = _psi(ref.shares_, _regular(counts.bins, ref.n_edges_), ref.n_edges_, n, m)
    df = np.maximum(ref.n_edges_, 1)
    psi_p = np.where(ref.n_edges_ > 0, chi2.sf(psi * n * m / (n + m), df), 1.0)
    outside = _outside(counts.bins, ref.n_edges_)
    oor_share = outside / m
    oor_p = _out_of_range_p_value(outside, n, m)
    level = monitor.alpha / n_features
    moved_psi = (psi > monitor.psi_threshold) & (psi_p < level)
    moved_oor = (oor_share > monitor.out_of_range_threshold) & (oor_p < level)
    feature_drifted = moved_psi | moved_oor

    share = counts.flagged / m
    # binomtest(k, m, target, alternative="greater").pvalue, as scipy computes it, without
    # building its result object: the service looks at the verdict after every tenth of its
    # window, which for 1,024-flow requests is every request.
    fpr_p = min(1.0, float(binom.sf(counts.flagged - 1, m, target)))
    flag_rate_exceeded = bool(share > monitor.fpr_factor * target and fpr_p < monitor.alpha)

    order = [int(j) for j in np.lexsort((-oor_share, -psi, ~feature_drifted))]
    top = [names[j] for j in order[: monitor.n_top]]
    reasons = []
    if flag_rate_exceeded:
        reasons.append(
            f"{_pct(share)} of flows flagged, over {monitor.fpr_factor:g} x the "
            f"{_pct(target)} target (binomial p {_p(fpr_p)})"
        )
    for label, moved, shown in (
        (f"PSI above {monitor.psi_threshold:g}", moved_psi, lambda j: f"{psi[j]:.2f}"),
        (
            f"over {_pct(monitor.out_of_range_threshold)} outside the training range",
            moved_oor,
            lambda j: _pct(oor_share[j]),
        ),
    ):
        hits = [j for j in order if moved[j]]
        if hits:
            listed = _listing([f"{names[j]} ({shown(j)})" for j in hits])
            reasons.append(f"{label} on {len(hits)} feature(s): {listed}")
    drifted = bool(feature_drifted.any())
    moved_names = [names[j] for j in order if feature_drifted[j]]
    traffic, flag_rate = _findings(
        moved_names, share, target, flag_rate_exceeded, known_benign=counts.labelled == m
    )
    if flag_rate_exceeded and drifted:
        consequence = f"{traffic}; and {flag_rate}"
    elif flag_rate_exceeded:
        consequence = f"{flag_rate}; {traffic}"
    elif drifted:
        consequence = f"{traffic} ({_pct(share)} of flows flagged so far)"
    else:
        consequence = (
            f"no drift detected: {_pct(share)} of flows flagged against a {_pct(target)} target"
        )
    return DriftReport(
        n_flows=m, n_flagged=counts.flagged, n_labelled_benign=counts.labelled, n_reference=n,
        target_fpr=target, flagged_share=share, flag_rate_p_value=fpr_p,
        flag_rate_exceeded=flag_rate_exceeded, feature_names=list(names), psi=psi,
        psi_p_value=psi_p, out_of_range_share=oor_share, out_of_range_p_value=oor_p,
        feature_drifted=feature_drifted, drifted=drifted,
        warning=drifted or flag_rate_exceeded, top_features=top, reasons=reasons,
        traffic=traffic, flag_rate=flag_rate, consequence=consequence, thresholds=thresholds,
    )  # fmt: skip


def _findings(
    moved: list[str], share: float, target: float, exceeded: bool, *, known_benign: bool
) -> tuple[str, str]:
    """What the features say, and what the flag rate says, each in plain words.

    A feature that moved is evidence that the traffic is unlike the benign training traffic;
    only when the flows are known benign is it evidence about benign traffic alone, since
    attacks among them move features too. A high flag rate is a false-alarm rate only for flows
    known benign: otherwise attacks (which the detector is meant to flag) and false alarms on
    changed benign traffic both raise it, and nothing in the counts tells them apart.
    """
    rate = f"{_pct(share)} of flows flagged against a {_pct(target)} target"
    if not moved:
        traffic = "no feature moved against the benign training traffic"
    elif known_benign:
        traffic = (
            f"the benign traffic moved: {len(moved)} feature(s) unlike the benign training "
            f"traffic ({_listing(moved)}); the {_pct(target)} false-alarm target is not "
            "guaranteed for it: recalibrate or retrain on recent benign traffic"
        )
    else:
        traffic = (
            f"the traffic moved: {len(moved)} feature(s) unlike the benign training traffic "
            f"({_listing(moved)}); if benign traffic moved, the {_pct(target)} false-alarm "
            "target is not guaranteed for it (recalibrate or retrain on recent benign "
            "traffic), though attacks among the flows move features too"
        )
    if not exceeded:
        flag_rate = rate
    elif known_benign:
        flag_rate = (
            f"the false-alarm rate exceeds the target: {_pct(share)} of flows labelled benign "
            f"flagged against a {_pct(target)} target"
        )
    else:
        flag_rate = (
            f"{rate}: attacks among them, or false alarms on benign traffic unlike the "
            "training traffic; the flag rate alone cannot tell which (labels, or a look at the "
            "flagged flows, can)"
        )
    return traffic, flag_rate


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


def _psi(shares: np.ndarray, counts: np.ndarray, n_edges: np.ndarray, n: int, m: int) -> np.ndarray:
    """Per-feature PSI of observed bin ``counts`` (of ``m`` flows) against training ``shares``."""
    p = np.maximum(shares.astype(np.float64), PSI_FLOOR_COUNT / n)
    q = np.maximum(counts, PSI_FLOOR_COUNT) / m
    starts = np.concatenate([[0], np.cumsum(n_edges.astype(np.int64) + 1)[:-1]])
    return np.add.reduceat((q - p) * np.log(q / p), starts)


def _out_of_range_p_value(outside: np.ndarray, n: int, m: int) -> np.ndarray:
    """``min(1, (k + 1) C(m, k) / C(n + m, k))`` per feature, for ``k`` values outside."""
    k = outside.astype(np.float64)
    log_p = (
        np.log1p(k)
        + gammaln(m + 1) - gammaln(m - k + 1)
        - gammaln(n + m + 1) + gammaln(n + m - k + 1)
    )  # fmt: skip
    return np.minimum(1.0, np.exp(log_p))


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


def _check_features(X: Any, names: list[str]) -> np.ndarray:
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


def _listing(items: list[str], shown: int = 3) -> str:
    more = f" and {len(items) - shown} more" if len(items) > shown else ""
    return ", ".join(items[:shown]) + more


def _pct(share: float) -> str:
    """A share as a percentage: ``0.417 -> '41.7 %'``, ``0.01 -> '1 %'``."""
    return f"{100 * share:.3g} %" if share < 0.001 else f"{round(100 * share, 1):g} %"


def _p(p_value: float) -> str:
    return f"= {p_value:.2g}" if p_value >= 1e-300 else "< 1e-300"


def _num(value: Any) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None
