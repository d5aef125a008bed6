"""What a flagged flow carries: the features named as its reasons, rendered as one short
line of text and as JSON-able dicts.

:class:`Explanation` and :class:`FeatureReason` are built by
:func:`latent_sculpting.monitor.explain.explain`; :func:`row_reasons` turns its chosen units into
reasons, placing each value among the benign values of a
:class:`~latent_sculpting.monitor.profile.BenignProfile`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from latent_sculpting.io.context.config import describe_feature
from latent_sculpting.monitor.profile import BenignProfile

__all__ = ["NO_DEVIATION", "Explanation", "FeatureReason", "format_number", "row_reasons"]

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


def row_reasons(
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
    n_numeric = len(profile.numeric_)
    rows = np.repeat(np.arange(n), k)
    units = chosen.reshape(-1)
    valid = units >= 0
    numeric = valid & (units < n_numeric)
    safe = np.where(numeric, units, 0)
    feature = profile.numeric_[safe]
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
    words = describe_feature(name, value)
    if words is None:
        text = f"{name} {format_number(value)} ({where}, median {format_number(median)})"
    else:  # a context feature, in words
        text = f"{words} ({where}, median {format_number(median)})"
    percentile = 100.0 * (below + 1.0 - above) / 2.0
    return FeatureReason(name, value, median, percentile, tail, drop, text)


def _categorical_reason(
    profile: BenignProfile, block: int, hot: int, tail: float, drop: float | None
) -> FeatureReason:
    column = list(profile.categorical_)[block]
    idx = profile.blocks_[block]
    value = _category(profile.feature_names_[idx[hot]], column)
    usual = _category(profile.feature_names_[idx[profile.modes_[block]]], column)
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
