"""Calibration on benign flows: held-out splits, thresholds, conformal and tail p-values.

Thresholds are percentiles of benign *calibration* scores, or, for a target false-positive rate,
the split-conformal threshold (Vovk, Gammerman and Shafer 2005; Lei et al. 2018): with
calibration flows held out of every fit, a fresh benign flow exchangeable with them exceeds it
with probability at most the target. :class:`TailPValue` turns one channel's scores into
``-log p`` against benign *reference* flows, a second held-out set, so that channels on
unrelated scales can be fused (:mod:`latent_sculpting.fusion`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

__all__ = [
    "PERCENTILES",
    "TailPValue",
    "conformal_p_values",
    "conformal_threshold",
    "holdout_split",
    "min_calibration_rows",
    "reference_split",
    "thresholds",
]

#: Percentiles of benign scores at which thresholds are always computed (the paper's sweep).
PERCENTILES = (85.0, 90.0, 95.0, 97.0, 99.0)

#: Fewest held-out benign rows that ``calibration="holdout"`` accepts.
MIN_HELD_OUT = 20


def holdout_split(
    y: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rows to fit on and benign rows held out of every fit, both sorted.

    Raises
    ------
    ValueError
        If fewer than :data:`MIN_HELD_OUT` benign rows, or all of them, would be held out.
    """
    index = np.arange(len(y))
    benign = rng.permutation(index[y == 0])
    n_held = int(round(fraction * len(benign)))
    if n_held < MIN_HELD_OUT or n_held == len(benign):
        raise ValueError(
            f"calibration='holdout' needs at least {MIN_HELD_OUT} held-out benign rows and some "
            f"left to fit on; {len(benign)} benign rows x calibration_fraction={fraction} "
            f"gives {n_held}"
        )
    held_out = np.sort(benign[:n_held])
    return np.setdiff1d(index, held_out), held_out


def reference_split(
    held_out: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Halves of the held-out rows: one places each channel's p-values (the reference), the
    other sets the threshold, which so stays a valid conformal one. Both sorted."""
    shuffled = rng.permutation(held_out)
    half = len(shuffled) // 2
    return np.sort(shuffled[:half]), np.sort(shuffled[half:])


def thresholds(
    calibration: np.ndarray, percentile: float, target_fpr: float | None
) -> tuple[dict[float, float], float]:
    """Threshold at each of :data:`PERCENTILES` and ``percentile``, and the one in use.

    The one in use is the ``percentile`` threshold, or with ``target_fpr`` the split-conformal
    one (:func:`conformal_threshold`).
    """
    by_percentile = {
        p: float(np.percentile(calibration, p)) for p in sorted({*PERCENTILES, float(percentile)})
    }
    if target_fpr is None:
        return by_percentile, by_percentile[float(percentile)]
    return by_percentile, conformal_threshold(calibration, target_fpr)


def min_calibration_rows(target_fpr: float) -> int:
    """Fewest calibration scores whose split-conformal threshold can meet ``target_fpr``.

    :func:`conformal_threshold` takes the ``ceil((n + 1)(1 - alpha))``-th smallest of ``n``
    scores, which exists only when ``n >= 1 / alpha - 1`` (99 at 1 %, 999 at 0.1 %); with fewer,
    no finite threshold guarantees the rate. Computed with the same arithmetic as the threshold,
    so the two never disagree at the boundary.

    Raises
    ------
    ValueError
        If ``target_fpr`` is not in (0, 1).
    """
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr!r}")
    n = max(1, math.ceil(1 / target_fpr) - 2)
    while math.ceil((n + 1) * (1 - target_fpr)) > n:
        n += 1
    return n


def conformal_threshold(calibration: np.ndarray, target_fpr: float) -> float:
    """Split-conformal threshold: ``P(score > threshold) <= target_fpr`` for a fresh benign flow.

    The ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` calibration scores (Vovk et al.; Lei et
    al. 2018). When ``n`` is too small for the target, no finite threshold guarantees it and
    ``inf`` is returned (nothing is flagged), with a warning.
    """
    scores = np.sort(np.asarray(calibration, dtype=np.float64))
    k = math.ceil((len(scores) + 1) * (1 - target_fpr))
    if k > len(scores):
        warnings.warn(
            f"{len(scores)} calibration scores cannot guarantee target_fpr={target_fpr}: "
            f"need at least {math.ceil(1 / target_fpr) - 1}; threshold set to +inf",
            stacklevel=2,
        )
        return math.inf
    return float(scores[k - 1])


def conformal_p_values(calibration: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """``(1 + #{calibration >= s}) / (n + 1)`` for each score ``s``; ``calibration`` sorted."""
    n = len(calibration)
    at_least = n - np.searchsorted(calibration, scores, side="left")
    return (1 + at_least) / (n + 1)


class TailPValue:
    """``-log p`` of scores against benign reference scores, with an exponential upper tail.

    An empirical p-value stops at ``1 / (n + 1)``: every flow beyond the largest reference score
    would tie, and the attacks that matter most are exactly there. Above the reference's upper
    decile the tail is therefore an exponential fitted to the excesses, the peaks-over-threshold
    model of extreme value theory with shape 0 (Pickands 1975; Balkema and de Haan 1974), as
    SPOT uses for streaming anomaly thresholds (Siffer et al., KDD 2017). It keeps ``-log p``
    continuous and strictly increasing in the score, so ranks within the tail survive a fusion.
    The extrapolation is trusted only so far (``max_extrapolation`` nats beyond the smallest
    empirical p-value): without a bound, one channel's wildest scores (a benign flow the
    density finds bizarre) would outvote everything another channel says (docs/presets.md
    measures the bound).

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
        self,
        tail: float = 0.1,
        max_extrapolation: float = 5.0,
        min_scale: float = 0.0,
        *,
        interpolate: bool = True,
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
        self.interpolate = interpolate

    def fit(self, reference: np.ndarray) -> TailPValue:
        """Fit on benign reference scores (at least 10, finite)."""
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
        """``-log p``: interpolated empirical below ``threshold_``, ``-log p(u) + (s - u) /
        scale_`` above; continuous and non-decreasing in the score everywhere.

        At a reference score ``r`` the empirical p-value is ``(1 + #{reference >= r}) /
        (n + 1)``; between two consecutive distinct reference scores the count is interpolated
        linearly. A step function would let a rounding difference of one ulp in a channel's
        score (a matrix product summed in another order in another batch) move a flow's score
        by a whole reference rank; interpolated, the score moves by as little as its input
        did, so scores do not depend on the batch a flow is scored in. At ``s = u`` both pieces
        agree. The tail stops rising at ``log(n + 1) + max_extrapolation``.
        """
        scores = np.asarray(scores, dtype=np.float64)
        n = len(self.reference_)
        values, first, at_u = self._steps()
        if self.interpolate:
            below = np.interp(scores, values, first)
        else:  # model files written before the interpolation keep their steps
            below = np.searchsorted(self.reference_, scores, side="left")
        empirical = np.log(n + 1) - np.log1p(n - below)
        tail = np.log(n + 1) - np.log1p(at_u) + (scores - self.threshold_) / self.scale_
        tail = np.minimum(tail, np.log(n + 1) + self.max_extrapolation)
        return np.where(scores > self.threshold_, tail, empirical)

    def _steps(self) -> tuple[np.ndarray, np.ndarray, int]:
        """The reference's distinct scores, how many reference scores lie strictly below each
        (as float64), and how many lie at or above ``threshold_``: what :meth:`neg_log_p`
        reads, computed once per fitted reference rather than per call (sorting thousands of
        reference scores cost more than scoring a one-flow request)."""
        key = (self.reference_, self.threshold_)
        cached = self.__dict__.get("_steps_cache")
        if cached is None or cached[0][0] is not key[0] or cached[0][1] != key[1]:
            values, first = np.unique(self.reference_, return_index=True)
            n = len(self.reference_)
            at_u = n - int(np.searchsorted(self.reference_, self.threshold_, side="left"))
            # Set in one assignment: scoring threads may read it while another computes it.
            cached = self._steps_cache = (key, (values, first.astype(np.float64), at_u))
        return cached[1]

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state as a JSON-able config and named arrays (no pickle)."""
        config = {"tail": self.tail, "max_extrapolation": self.max_extrapolation}
        config["min_scale"] = self.min_scale
        config.update(threshold_=self.threshold_, scale_=self.scale_, interpolate=self.interpolate)
        return config, {"reference": self.reference_}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> TailPValue:
        """Rebuild from :meth:`get_state` output.

        Raises
        ------
        ValueError
            If the reference is not a sorted, finite 1-D array of at least 10 scores, or the
            scale is not positive.
        """
        # A tail saved before the interpolation existed has no "interpolate": it kept its steps.
        interpolate = config.get("interpolate", False)
        if not isinstance(interpolate, bool):
            raise ValueError(f"tail's interpolate must be true or false, got {interpolate!r}")
        model = cls(
            config["tail"],
            config["max_extrapolation"],
            config["min_scale"],
            interpolate=interpolate,
        )
        reference = np.asarray(arrays["reference"], dtype=np.float64)
        if reference.ndim != 1 or len(reference) < 10 or not np.isfinite(reference).all():
            raise ValueError(
                f"tail reference must be at least 10 finite scores, got shape {reference.shape}"
            )
        if np.any(np.diff(reference) < 0):
            raise ValueError("tail reference scores must be sorted")
        model.reference_ = reference
        model.threshold_ = float(config["threshold_"])
        model.scale_ = float(config["scale_"])
        if not model.scale_ > 0:
            raise ValueError(f"tail scale must be positive, got {model.scale_}")
        return model
