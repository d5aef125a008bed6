"""Metrics of the zero-shot protocol, shared by ``reproduce``, ``compare`` and ``sweep``.

Everything here works on plain arrays of scores (higher = more anomalous), so a baseline from
PyOD and our detector are measured by the same code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

__all__ = ["aggregate", "binary_metrics", "per_class_recall", "recall_at_fpr"]


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


def recall_at_fpr(benign_scores: np.ndarray, attack_scores: np.ndarray, fpr: float) -> float:
    """Recall on ``attack_scores`` at the threshold that flags ``fpr`` of ``benign_scores``."""
    threshold = np.quantile(np.asarray(benign_scores, dtype=np.float64), 1 - fpr)
    return float((np.asarray(attack_scores) > threshold).mean())


def aggregate(runs: Iterable[Mapping]) -> dict:
    """Mean and (population) standard deviation over seeds, recursively.

    ``[{"f1": 0.8, "x": {"a": 1}}, {"f1": 0.9, "x": {"a": 3}}]`` becomes
    ``{"f1": {"mean": 0.85, "std": 0.05}, "x": {"a": {"mean": 2.0, "std": 1.0}}}``. Keys missing
    from some runs are aggregated over the runs that have them.
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
                "std": float(finite.std()) if len(finite) else float("nan"),
            }
    return out
