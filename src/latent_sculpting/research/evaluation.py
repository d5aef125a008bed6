"""Metrics of the zero-shot protocol, shared by ``reproduce`` and ``benchmark``.

Everything here works on plain arrays of scores (higher = more anomalous), so a baseline from
PyOD and our detector are measured by the same code. Thresholds at a benign false-positive rate
come from benign rows held out of every fit (:func:`threshold_at_fpr`); F1 at a prevalence is
computed from the recall and the realised false-positive rate (:func:`f1_at_prevalence`), so it
does not depend on how many benign test rows happened to be drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from latent_sculpting.model.calibration import conformal_rows

__all__ = [
    "BENIGN_TEST_ROWS_PER_FPR",
    "FPRS",
    "aggregate",
    "binary_metrics",
    "f1_at_prevalence",
    "fold_metrics",
    "fpr_key",
    "min_rows_at_fpr",
    "per_class_recall",
    "recall_at_fpr",
    "resolvable",
    "threshold_at_fpr",
    "threshold_rank",
]

#: Benign false-positive rates of the reported operating points: 5 % (the paper's P95), and the
#: 1 % and 0.1 % at which analysts run detectors that see millions of benign flows a day.
FPRS: tuple[float, ...] = (0.05, 0.01, 0.001)


#: A recall at a false-positive rate ``alpha`` is reported only on at least this many times
#: ``1 / alpha`` benign test rows: ten expected false positives at the nominal rate, so the
#: realised rate is known to about a third of itself (1 / sqrt(10)), not to a row or two.
BENIGN_TEST_ROWS_PER_FPR = 10


def fpr_key(fpr: float) -> str:
    """The JSON key of an operating point: ``0.01 -> "0.01"``."""
    return f"{fpr:g}"


def min_rows_at_fpr(fpr: float) -> dict[str, int]:
    """Fewest benign rows of each role at which a recall at ``fpr`` is reported.

    ``test_benign``: ``BENIGN_TEST_ROWS_PER_FPR / fpr`` (10,000 at 0.1 %, 1,000 at 1 %), so that
    the realised false-positive rate is measured, not guessed from one or two rows.
    ``calibration``: ``1 / fpr - 1`` (999 at 0.1 %), the fewest held-out rows whose threshold
    can reach the rate at all (:func:`latent_sculpting.model.calibration.conformal_rows`, the
    rule of the estimator's conformal threshold); with fewer the threshold is the largest
    held-out score and the rate is not the one named.

    Raises
    ------
    ValueError
        If ``fpr`` is not in (0, 1).
    """
    calibration = conformal_rows(fpr)  # checks fpr
    return {
        "test_benign": math.ceil(BENIGN_TEST_ROWS_PER_FPR / fpr - 1e-9),
        "calibration": calibration,
    }


def resolvable(fpr: float, test_benign: int, calibration: int) -> bool:
    """Whether a fold with these benign row counts resolves a recall at ``fpr``
    (:func:`min_rows_at_fpr`): the one rule by which benchmark tables print such a recall or
    "n/a", and by which means, ranks and paired intervals take it in or leave it out."""
    need = min_rows_at_fpr(fpr)
    return test_benign >= need["test_benign"] and calibration >= need["calibration"]


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of ``pred``; AUROC and AUPRC of ``scores``; the benign FPR.

    Parameters
    ----------
    y_true : array of {0, 1}
        1 for attacks.
    scores : array of float
        Continuous anomaly scores (higher = more anomalous).
    pred : array of {0, 1}
        The thresholded decision.
    """
    y_true = np.asarray(y_true).astype(int)
    pred = np.asarray(pred).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, pred, average="binary", zero_division=0
    )
    both = len(np.unique(y_true)) == 2
    benign = y_true == 0
    return {
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auroc": float(roc_auc_score(y_true, scores)) if both else float("nan"),
        "auprc": float(average_precision_score(y_true, scores)) if both else float("nan"),
        "fpr": float(pred[benign].mean()) if benign.any() else float("nan"),
    }


def per_class_recall(labels: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Share of each class's rows predicted as attacks (its recall, for an attack class)."""
    labels = np.asarray(labels).astype(str)
    pred = np.asarray(pred).astype(bool)
    return {str(c): float(pred[labels == c].mean()) for c in np.unique(labels)}


def threshold_at_fpr(benign_scores: np.ndarray, fpr: float) -> float:
    """The threshold that flags at most ``fpr`` of ``benign_scores`` (a flow is flagged when its
    score is strictly above it).

    With ``n`` scores it is the ``floor(n * fpr) + 1``-th largest score, so at most
    ``floor(n * fpr)`` of them lie above it (fewer with ties). When ``n * fpr < 1`` that is the
    largest score: the rate cannot be resolved from so few rows (a 0.1 % threshold needs at least
    1,000 held-out benign rows), and the threshold is as strict as the rows allow.

    Raises
    ------
    ValueError
        If ``fpr`` is not in (0, 1), or there are no finite scores.
    """
    if not 0 < fpr < 1:
        raise ValueError(f"fpr must be in (0, 1), got {fpr!r}")
    scores = np.sort(np.asarray(benign_scores, dtype=np.float64).ravel())
    if len(scores) == 0 or not np.isfinite(scores).all():
        raise ValueError("threshold_at_fpr needs at least one score, all finite")
    return float(scores[threshold_rank(len(scores), fpr)])


def threshold_rank(n: int, fpr: float) -> int:
    """Position, in ``n`` benign scores sorted ascending, of :func:`threshold_at_fpr`'s
    threshold: ``n - 1 - floor(n * fpr)``."""
    return n - 1 - int(np.floor(n * fpr + 1e-9))


def recall_at_fpr(benign_scores: np.ndarray, attack_scores: np.ndarray, fpr: float) -> float:
    """Recall on ``attack_scores`` at :func:`threshold_at_fpr` of ``benign_scores``."""
    threshold = threshold_at_fpr(benign_scores, fpr)
    return float((np.asarray(attack_scores) > threshold).mean())


def f1_at_prevalence(recall: float, fpr: float, prevalence: float) -> float:
    """F1 of a detector with this recall and benign false-positive rate on traffic in which a
    share ``prevalence`` of the flows are attacks.

    Precision is ``recall * p / (recall * p + fpr * (1 - p))``; F1 is 0 when nothing is flagged
    or nothing is caught. ``prevalence=0.5`` gives the F1 on a balanced set.
    """
    if not 0 < prevalence < 1:
        raise ValueError(f"prevalence must be in (0, 1), got {prevalence!r}")
    caught = recall * prevalence
    flagged = caught + fpr * (1 - prevalence)
    if caught <= 0 or flagged <= 0:
        return 0.0
    precision = caught / flagged
    return float(2 * precision * recall / (precision + recall))


def fold_metrics(
    calibration: np.ndarray,
    benign: np.ndarray,
    attacks: np.ndarray,
    *,
    prevalence: float,
    attack_labels: np.ndarray | None = None,
    fprs: Iterable[float] = FPRS,
) -> dict:
    """Every metric of one withheld family for one fitted method.

    Parameters
    ----------
    calibration : array of float
        Scores of benign rows held out of every fit: they, and only they, set the thresholds.
    benign : array of float
        Scores of the benign test rows.
    attacks : array of float
        Scores of the withheld family's test rows.
    prevalence : float
        Share of attacks in the traffic for ``f1_prevalence`` (NaN: not known, and neither is
        that F1).
    attack_labels : array of str, optional
        Class of each attack row, for ``per_class_recall``.
    fprs : iterable of float
        Operating points.

    Returns
    -------
    dict
        ``auroc``, ``auprc`` (family against benign test rows), and per operating point (keys
        :func:`fpr_key`): ``threshold``, ``recall_at_fpr``, ``realised_fpr`` (on the benign test
        rows), ``f1_balanced``, ``f1_prevalence`` and ``per_class_recall``.
    """
    benign = np.asarray(benign, dtype=np.float64)
    attacks = np.asarray(attacks, dtype=np.float64)
    both = len(benign) > 0 and len(attacks) > 0
    y = np.r_[np.zeros(len(benign)), np.ones(len(attacks))]
    scores = np.r_[benign, attacks]
    out: dict = {
        "auroc": float(roc_auc_score(y, scores)) if both else float("nan"),
        "auprc": float(average_precision_score(y, scores)) if both else float("nan"),
        "threshold": {},
        "recall_at_fpr": {},
        "realised_fpr": {},
        "f1_balanced": {},
        "f1_prevalence": {},
        "per_class_recall": {},
    }
    for fpr in fprs:
        key = fpr_key(fpr)
        threshold = threshold_at_fpr(calibration, fpr)
        recall = float((attacks > threshold).mean()) if len(attacks) else float("nan")
        realised = float((benign > threshold).mean()) if len(benign) else float("nan")
        out["threshold"][key] = threshold
        out["recall_at_fpr"][key] = recall
        out["realised_fpr"][key] = realised
        out["f1_balanced"][key] = f1_at_prevalence(recall, realised, 0.5)
        out["f1_prevalence"][key] = (
            f1_at_prevalence(recall, realised, prevalence) if 0 < prevalence < 1 else float("nan")
        )
        if attack_labels is not None:
            out["per_class_recall"][key] = per_class_recall(attack_labels, attacks > threshold)
    return out


def aggregate(runs: Iterable[Mapping]) -> dict:
    """Mean and sample standard deviation (``ddof=1``) over seeds, recursively.

    ``[{"f1": 0.8, "x": {"a": 1}}, {"f1": 0.9, "x": {"a": 3}}]`` becomes
    ``{"f1": {"mean": 0.85, "std": 0.0707}, "x": {"a": {"mean": 2.0, "std": 1.414}}}``. Keys
    missing from some runs are aggregated over the runs that have them. The sample standard
    deviation estimates the spread of a new run; with one value it is undefined (NaN).
    """
    runs = list(runs)
    keys = list(dict.fromkeys(k for run in runs for k in run))
    out = {}
    for key in keys:
        values = [run[key] for run in runs if key in run]
        if all(isinstance(v, Mapping) for v in values):
            out[key] = aggregate(values)
        else:
            arr = np.asarray(values, dtype=np.float64)
            finite = arr[np.isfinite(arr)]
            out[key] = {
                "mean": float(finite.mean()) if len(finite) else float("nan"),
                "std": float(finite.std(ddof=1)) if len(finite) > 1 else float("nan"),
            }
    return out
