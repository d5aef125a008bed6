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

The reference lives in :mod:`latent_sculpting.monitor.drift_reference`, the report and its
statistics in :mod:`latent_sculpting.monitor.drift_report`; this module holds the monitors and
exports all four classes.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

from latent_sculpting.monitor.drift_reference import DriftReference, check_features
from latent_sculpting.monitor.drift_report import DriftCounts, DriftReport, build_report

__all__ = ["DriftMonitor", "DriftReference", "DriftReport", "RollingDriftMonitor"]


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
            self._counts = DriftCounts.zeros(self.reference.n_extended)

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
        return build_report(self, total)

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
        if bins.shape != (self.reference.n_extended,) or (bins < 0).any():
            raise ValueError(
                f"drift counts have {bins.shape} bins, expected ({self.reference.n_extended},) "
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
            self._merge(DriftCounts(bins, n, flagged, labelled))
        return self

    def _merge(self, counts: DriftCounts) -> None:
        self._counts.bins += counts.bins
        self._counts.n += counts.n
        self._counts.flagged += counts.flagged
        self._counts.labelled += counts.labelled

    def _prepare(self, X: np.ndarray, flagged: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = check_features(X, self.reference.feature_names_)
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
        return self.reference.bin_index(X), flags.astype(bool)

    def _add(self, index: np.ndarray, flags: np.ndarray, labelled: bool) -> None:
        self._counts.add(index, flags, labelled)

    def _total(self) -> DriftCounts:
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
            self._buckets: deque[DriftCounts] = deque(maxlen=self.n_buckets)

    def _add(self, index: np.ndarray, flags: np.ndarray, labelled: bool) -> None:
        capacity = self._bucket_size * self.n_buckets
        if len(index) >= capacity:
            # Only the last full ring of flows can be in the window.
            index, flags = index[-capacity:], flags[-capacity:]
            self._buckets.clear()
        start = 0
        while start < len(index):
            if not self._buckets or self._buckets[-1].n >= self._bucket_size:
                self._buckets.append(DriftCounts.zeros(self.reference.n_extended))
            bucket = self._buckets[-1]
            stop = min(len(index), start + self._bucket_size - bucket.n)
            bucket.add(index[start:stop], flags[start:stop], labelled)
            start = stop

    def _merge(self, counts: DriftCounts) -> None:
        raise TypeError("a rolling window takes flows in order; merge counts into a DriftMonitor")

    def _total(self) -> DriftCounts:
        total = DriftCounts.zeros(self.reference.n_extended)
        for bucket in self._buckets:
            total.bins += bucket.bins
            total.n += bucket.n
            total.flagged += bucket.flagged
            total.labelled += bucket.labelled
        return total
