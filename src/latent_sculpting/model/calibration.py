"""Calibration on benign flows: held-out splits, thresholds, conformal and tail p-values.

Thresholds are percentiles of benign *calibration* scores, or, for a target false-positive rate,
the split-conformal threshold (Vovk, Gammerman and Shafer 2005; Lei et al. 2018): with
calibration flows held out of every fit, a fresh benign flow exchangeable with them exceeds it
with probability at most the target. :class:`TailPValue` turns one channel's scores into
``-log p`` against benign *reference* flows, a second held-out set, so that channels on
unrelated scales can be fused (:mod:`latent_sculpting.model.fusion`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from latent_sculpting.model.state import check_array, check_number, check_object, few, shown

__all__ = [
    "MIN_HELD_OUT",
    "PERCENTILES",
    "TailPValue",
    "calibration_rows",
    "check_calibration_scores",
    "check_thresholds",
    "check_calibration_rows",
    "check_holdout_rows",
    "conformal_rows",
    "effective_fpr",
    "min_calibration_rows",
    "conformal_p_values",
    "conformal_threshold",
    "fit_splits",
    "holdout_split",
    "reference_split",
    "thresholds",
]

#: Percentiles of benign scores at which thresholds are always computed (the paper's sweep).
PERCENTILES = (85.0, 90.0, 95.0, 97.0, 99.0)

#: Fewest held-out benign rows that ``calibration="holdout"`` accepts.
MIN_HELD_OUT = 20


def effective_fpr(target_fpr: float | None, percentile: float) -> float:
    """The false-positive rate a threshold aims at: ``target_fpr``, else ``1 - percentile/100``."""
    return target_fpr if target_fpr is not None else 1 - percentile / 100


def min_calibration_rows(target_fpr: float | None) -> int:
    """Fewest calibration scores a threshold needs: :func:`conformal_rows` for a
    ``target_fpr``, and never fewer than :data:`MIN_HELD_OUT`."""
    if target_fpr is None:
        return MIN_HELD_OUT
    return max(MIN_HELD_OUT, conformal_rows(target_fpr))


def conformal_rows(target_fpr: float) -> int:
    """Fewest calibration scores that have a split-conformal threshold for ``target_fpr``.

    The ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` scores exists only when
    ``n >= 1/alpha - 1`` (99 for 1 %, 999 for 0.1 %); this is that ``n``, found in the float
    arithmetic :func:`conformal_threshold` itself uses.

    Raises
    ------
    ValueError
        If ``target_fpr`` is not in (0, 1).
    """
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr!r}")
    n = max(1, math.ceil(1 / target_fpr) - 2)
    while _conformal_rank(n, target_fpr) > n:
        n += 1
    return n


def _conformal_rank(n: int, target_fpr: float) -> int:
    """The rank, among ``n`` sorted calibration scores, of the split-conformal threshold."""
    return math.ceil((n + 1) * (1 - target_fpr))


def calibration_rows(n_benign: int, fraction: float, needs_reference: bool) -> int:
    """How many calibration rows ``fit`` sets the threshold on: of ``n_benign`` benign rows,
    ``round(fraction * n_benign)`` are held out (:func:`holdout_split`), and a score rule that
    needs reference rows takes half of those (:func:`reference_split`)."""
    n_held = int(round(fraction * n_benign))
    return n_held - (n_held // 2 if needs_reference else 0)


def check_calibration_rows(
    n_calibration: int,
    target_fpr: float | None,
    *,
    coarse: bool = False,
    what: str = "",
    ways_out: str = "",
) -> None:
    """Refuse a ``target_fpr`` that ``n_calibration`` rows cannot guarantee
    (:func:`conformal_rows`), unless ``coarse`` accepts the coarser threshold: the largest
    calibration score, whose false-positive rate is at most ``1 / (n + 1)``.

    The floor of :data:`MIN_HELD_OUT` held-out rows is :func:`holdout_split`'s to check.

    Parameters
    ----------
    what : str
        Where the rows come from, for the message.
    ways_out : str
        What the caller can change, for the message.

    Raises
    ------
    ValueError
        Naming the count, the minimum, the ways out and the override.
    """
    if target_fpr is None or coarse:
        return
    needed = conformal_rows(target_fpr)
    if n_calibration >= needed:
        return
    source = f" ({what})" if what else ""
    floor = 1 / (n_calibration + 1)
    raise ValueError(
        f"target FPR {target_fpr:g} needs at least {needed:,} calibration flows held out of "
        f"every fit, and there would be {n_calibration:,}{source}: no threshold guarantees it, "
        f"so nothing would be flagged. {ways_out}or accept a coarser threshold "
        f"(coarse_threshold=True; its false-positive rate is then at most 1/(n+1) = {floor:.3g})"
    )


def check_holdout_rows(
    n_benign: int,
    fraction: float,
    needs_reference: bool,
    target_fpr: float | None,
    *,
    coarse: bool = False,
) -> None:
    """Refuse, before any fitting, a threshold that the benign rows a fit holds out of
    ``n_benign`` (:func:`calibration_rows`) cannot set (:func:`check_calibration_rows`)."""
    n_cal = calibration_rows(n_benign, fraction, needs_reference)
    halved = ", half of them for the score rule's reference" if needs_reference else ""
    check_calibration_rows(
        n_cal,
        target_fpr,
        coarse=coarse,
        what=f"{n_benign:,} benign rows x calibration_fraction {fraction:g}" + halved,
        ways_out="Hold out more (a larger calibration_fraction), bring more benign flows, "
        "aim at a larger target_fpr, ",
    )


def fit_splits(
    y: np.ndarray,
    calibration: str,
    fraction: float,
    needs_reference: bool,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows a fit learns from, the benign reference rows and the benign calibration rows.

    With ``calibration="holdout"``, :func:`holdout_split` holds ``fraction`` of the benign rows
    out of every fit, and for a score rule that ``needs_reference``, :func:`reference_split`
    halves them; with ``"train"`` every row is fitted on. Draws from ``rng`` in that order.
    """
    fit_rows, held_out = np.arange(len(y)), np.zeros(0, dtype=np.int64)
    if calibration == "holdout":
        fit_rows, held_out = holdout_split(y, fraction, rng)
    reference = np.zeros(0, dtype=np.int64)
    if needs_reference:
        reference, held_out = reference_split(held_out, rng)
    return fit_rows, reference, held_out


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
    calibration: np.ndarray,
    percentile: float,
    target_fpr: float | None,
    *,
    coarse: bool = False,
) -> tuple[dict[float, float], float]:
    """Threshold at each of :data:`PERCENTILES` and ``percentile``, and the one in use.

    The one in use is the ``percentile`` threshold, or with ``target_fpr`` the split-conformal
    one (:func:`conformal_threshold`, ``coarse`` passed on).
    """
    by_percentile = {
        p: float(np.percentile(calibration, p)) for p in sorted({*PERCENTILES, float(percentile)})
    }
    if target_fpr is None:
        return by_percentile, by_percentile[float(percentile)]
    return by_percentile, conformal_threshold(calibration, target_fpr, coarse=coarse)


def check_calibration_scores(scores: np.ndarray) -> np.ndarray:
    """Stored calibration scores (float64, finite: :func:`~latent_sculpting.model.state.
    check_tensor`): not empty and sorted, or every p-value would be 1."""
    if len(scores) == 0:
        raise ValueError("there are none")
    if np.any(np.diff(scores) < 0):
        raise ValueError("they are not sorted")
    return scores


def check_thresholds(
    stored: Any,
    threshold: Any,
    calibration: np.ndarray,
    percentile: float,
    target_fpr: float | None,
    *,
    coarse: bool = False,
) -> tuple[dict[float, float], float]:
    """Stored thresholds (by percentile, as JSON keys) and the one in use, which must be those
    the calibration scores give (:func:`thresholds`): a NaN threshold would flag nothing.

    ``+inf`` is accepted where the conformal rule gives it (too few calibration scores for
    ``target_fpr``).
    """
    by_percentile, expected = thresholds(calibration, percentile, target_fpr, coarse=coarse)
    if not isinstance(stored, dict):
        raise ValueError(f"thresholds_ must be an object, got {shown(stored)}")
    try:
        given = {float(k): v for k, v in stored.items()}
    except ValueError:
        raise ValueError(f"thresholds_ keys {few(list(stored))} are not percentiles") from None
    if set(given) != set(by_percentile):
        raise ValueError(
            f"thresholds_ at percentiles {few(sorted(given))}, expected {sorted(by_percentile)}"
        )
    for p, value in given.items():
        value = check_number(value, f"the P{p:g} threshold")
        if not math.isclose(value, by_percentile[p], rel_tol=1e-9, abs_tol=1e-12):
            raise ValueError(
                f"the P{p:g} threshold {value!r} is not P{p:g} of the calibration scores "
                f"({by_percentile[p]!r})"
            )
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise ValueError(f"threshold_ must be a number, got {shown(threshold)}")
    if not (
        threshold == expected or math.isclose(threshold, expected, rel_tol=1e-9, abs_tol=1e-12)
    ):
        rule = f"target_fpr={target_fpr}" if target_fpr is not None else f"percentile={percentile}"
        raise ValueError(
            f"threshold_ {threshold!r} is not the threshold that {rule} gives on the "
            f"calibration scores ({expected!r})"
        )
    return {p: float(v) for p, v in given.items()}, float(threshold)


def conformal_threshold(
    calibration: np.ndarray, target_fpr: float, *, coarse: bool = False
) -> float:
    """Split-conformal threshold: ``P(score > threshold) <= target_fpr`` for a fresh benign flow.

    The ``ceil((n + 1)(1 - alpha))``-th smallest of ``n`` calibration scores (Vovk et al.; Lei et
    al. 2018). When ``n`` is too small for the target (``n < 1/alpha - 1``,
    :func:`min_calibration_rows`), no finite threshold guarantees it: ``inf`` is returned
    (nothing is flagged), or with ``coarse`` the largest score, whose false-positive rate is at
    most ``1 / (n + 1)``. ``fit`` and ``adapt`` refuse that case before fitting
    (:func:`check_calibration_rows`), so only a caller that skipped the check meets it.
    """
    scores = np.sort(np.asarray(calibration, dtype=np.float64))
    k = _conformal_rank(len(scores), target_fpr)
    if k > len(scores):
        return float(scores[-1]) if coarse and len(scores) else math.inf
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
    density finds bizarre) would outvote everything another channel says (docs/research/presets.md
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
    def from_state(
        cls, config: Any, arrays: dict[str, np.ndarray], *, what: str = "the tail"
    ) -> TailPValue:
        """Rebuild from :meth:`get_state` output, every key and array checked (a model file is
        untrusted input); ``what`` names the tail in errors.

        Raises
        ------
        ValueError
            If the config lacks a key or holds a non-finite number, the reference is not a
            sorted, finite 1-D array of at least 10 scores, the scale is not positive, or the
            threshold and scale are not those the reference gives.
        """
        config = check_object(config, what, set(_TAIL_KEYS), {"interpolate"})
        for key in _TAIL_KEYS:
            check_number(config[key], f"{what}'s {key}")
        # A tail saved before the interpolation existed has no "interpolate": it kept its steps.
        interpolate = config.get("interpolate", False)
        if not isinstance(interpolate, bool):
            raise ValueError(f"{what}'s interpolate is not true or false, got {interpolate!r}")
        model = cls(
            config["tail"],
            config["max_extrapolation"],
            config["min_scale"],
            interpolate=interpolate,
        )
        reference = check_array(arrays, "reference", np.float64, (None,))
        if len(reference) < 10:
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
        refit = cls(model.tail, model.max_extrapolation, model.min_scale).fit(reference)
        for key in ("threshold_", "scale_"):
            stored, expected = getattr(model, key), getattr(refit, key)
            if not math.isclose(stored, expected, rel_tol=1e-9, abs_tol=1e-12):
                raise ValueError(
                    f"{what}'s {key} {stored!r} is not its reference scores' ({expected!r})"
                )
        return model


#: The keys of a tail's stored config, each a finite number.
_TAIL_KEYS = ("tail", "max_extrapolation", "min_scale", "threshold_", "scale_")
