"""The drift check's verdict: the population stability index (PSI) and the share outside the
training range per feature, the flagged share against the target with a one-sided binomial
test, and the findings in plain words (:class:`DriftReport`), built from the counts a monitor
of :mod:`latent_sculpting.monitor.drift` keeps (:class:`DriftCounts`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from scipy.special import gammaln
from scipy.stats import binom, chi2

__all__ = ["PSI_FLOOR_COUNT", "DriftCounts", "DriftReport", "build_report"]

#: An empty bin counts as half a flow, so that ``log(q / p)`` stays finite (see DriftReport).
PSI_FLOOR_COUNT = 0.5


class DriftSettings(Protocol):
    """What :func:`build_report` reads of a monitor (a
    :class:`~latent_sculpting.monitor.drift.DriftMonitor`): its reference and thresholds. A
    protocol, so that the report does not import the monitor that imports it."""

    reference: Any
    psi_threshold: float
    out_of_range_threshold: float
    fpr_factor: float
    alpha: float
    n_top: int


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


@dataclass
class DriftCounts:
    """Extended-bin counts of some flows, how many, how many were flagged, and how many were
    known benign by a label."""

    bins: np.ndarray
    n: int = 0
    flagged: int = 0
    labelled: int = 0

    @classmethod
    def zeros(cls, size: int) -> DriftCounts:
        return cls(np.zeros(size, dtype=np.int64))

    def add(self, index: np.ndarray, flags: np.ndarray, labelled: bool) -> None:
        self.bins += np.bincount(index.ravel(), minlength=len(self.bins))
        self.n += len(index)
        self.flagged += int(flags.sum())
        self.labelled += len(index) if labelled else 0

    def copy(self) -> DriftCounts:
        return DriftCounts(self.bins.copy(), self.n, self.flagged, self.labelled)


def build_report(monitor: DriftSettings, counts: DriftCounts) -> DriftReport:
    """The report of ``counts`` against the monitor's reference, at its thresholds."""
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
    psi = _psi(ref.shares_, ref.bin_counts(counts.bins), ref.n_edges_, n, m)
    df = np.maximum(ref.n_edges_, 1)
    psi_p = np.where(ref.n_edges_ > 0, chi2.sf(psi * n * m / (n + m), df), 1.0)
    outside = ref.outside_counts(counts.bins)
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
