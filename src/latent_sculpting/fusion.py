"""Put scores of different kinds on one scale, and fuse them: Fisher's method on tail p-values.

The ``default`` preset scores a flow twice, by the flow's negative log-likelihood and by a
forest's attack probability (docs/presets.md). The two live on unrelated scales, so each becomes
a p-value against benign *reference* flows held out of every fit, and the fused score is
Fisher's statistic ``sum_k -log p_k`` (Fisher 1925): higher is more anomalous, and a flow
extreme in either channel is extreme in the sum.

An empirical p-value stops at ``1 / (n + 1)``: every flow beyond the largest reference score
would tie, and the attacks that matter most are exactly there. Above the reference's upper
decile the tail is therefore an exponential fitted to the excesses, the peaks-over-threshold
model of extreme value theory with shape 0 (Pickands 1975; Balkema and de Haan 1974), as SPOT
uses for streaming anomaly thresholds (Siffer et al., KDD 2017). It keeps ``-log p`` continuous
and strictly increasing in the score, so ranks within the tail survive the fusion. The
extrapolation is trusted only so far (``max_extrapolation`` nats beyond the smallest empirical
p-value): without a bound, one channel's wildest scores (a benign flow the density finds
bizarre) would outvote everything the other channel says, and on the zero-shot protocol the
bound raised the fused AUPRC from 0.989 to 0.992 (docs/presets.md).

The fused score is itself thresholded on a *separate* benign calibration split, so the
detector's conformal guarantee does not depend on how well the tail model fits.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["TailPValue", "fisher"]


class TailPValue:
    """``-log p`` of scores against benign reference scores, with an exponential upper tail.

    Parameters
    ----------
    tail : float, default=0.1
        Share of the reference scores, the highest, whose excesses fit the exponential tail.
    max_extrapolation : float, default=5.0
        ``-log p`` stops at ``log(n + 1) + max_extrapolation``: p-values go at most
        ``exp(max_extrapolation)`` times below the smallest one ``n`` references can show.
    min_scale : float, default=0.0
        Floor of the tail's scale, for scores with a natural resolution. A forest that gives
        nearly every benign reference flow probability 0 leaves no excesses to fit; with the
        floor at one tree's vote, each further tree voting "attack" divides the p-value by e.

    Attributes
    ----------
    reference_ : numpy.ndarray
        Sorted reference scores.
    threshold_ : float
        ``u``, the score where the tail starts.
    scale_ : float
        Mean excess over ``u`` of the reference scores above it (the exponential's MLE).
    """

    def __init__(
        self, tail: float = 0.1, max_extrapolation: float = 5.0, min_scale: float = 0.0
    ) -> None:
        if not 0 < tail < 1:
            raise ValueError(f"tail must be in (0, 1), got {tail}")
        if not max_extrapolation >= 0:
            raise ValueError(f"max_extrapolation must be >= 0, got {max_extrapolation}")
        if not min_scale >= 0:
            raise ValueError(f"min_scale must be >= 0, got {min_scale}")
        self.tail = tail
        self.max_extrapolation = max_extrapolation
        self.min_scale = min_scale

    def fit(self, reference: np.ndarray) -> TailPValue:
        reference = np.sort(np.asarray(reference, dtype=np.float64))
        if reference.ndim != 1 or len(reference) < 10:
            raise ValueError(f"need at least 10 reference scores, got {len(reference)}")
        if not np.isfinite(reference).all():
            raise ValueError("reference scores must be finite")
        self.reference_ = reference
        self.threshold_ = float(reference[int((1 - self.tail) * len(reference))])
        excess = reference[reference >= self.threshold_] - self.threshold_
        # A tail of ties has no spread; a small scale keeps -log p finite and increasing.
        spread = float(reference[-1] - reference[0])
        self.scale_ = max(float(excess.mean()), self.min_scale, 1e-6 * (spread + 1.0))
        return self

    def neg_log_p(self, scores: np.ndarray) -> np.ndarray:
        """``-log p``: empirical below ``threshold_``, ``-log p(u) + (s - u) / scale_`` above.

        The empirical p-value is ``(1 + #{reference >= s}) / (n + 1)``; at ``s = u`` both
        pieces agree, so the result is continuous. The tail stops rising at
        ``log(n + 1) + max_extrapolation``.
        """
        scores = np.asarray(scores, dtype=np.float64)
        n = len(self.reference_)
        at_least = n - np.searchsorted(self.reference_, scores, side="left")
        empirical = np.log(n + 1) - np.log1p(at_least)
        at_u = n - np.searchsorted(self.reference_, self.threshold_, side="left")
        tail = np.log(n + 1) - np.log1p(at_u) + (scores - self.threshold_) / self.scale_
        tail = np.minimum(tail, np.log(n + 1) + self.max_extrapolation)
        return np.where(scores > self.threshold_, tail, empirical)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config = {"tail": self.tail, "max_extrapolation": self.max_extrapolation}
        config["min_scale"] = self.min_scale
        config.update(threshold_=self.threshold_, scale_=self.scale_)
        return config, {"reference": self.reference_}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> TailPValue:
        model = cls(config["tail"], config["max_extrapolation"], config["min_scale"])
        model.reference_ = np.asarray(arrays["reference"], dtype=np.float64)
        model.threshold_ = float(config["threshold_"])
        model.scale_ = float(config["scale_"])
        return model


def fisher(neg_log_ps: list[np.ndarray]) -> np.ndarray:
    """Fisher's combination ``sum_k -log p_k`` (half the usual chi-squared statistic)."""
    return np.sum(neg_log_ps, axis=0)
