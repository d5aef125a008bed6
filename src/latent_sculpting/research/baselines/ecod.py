"""ECOD with its empirical CDFs estimated on the training rows only.

References
----------
.. [1] Li, Zhao, Hu, Botta, Ionescu, Chen. "ECOD: Unsupervised Outlier Detection Using Empirical
   Cumulative Distribution Functions." IEEE TKDE, 2022.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import skew

__all__ = ["InductiveECOD"]


class InductiveECOD:
    """ECOD [1]_ fitted once, scoring each row against the training ECDFs alone.

    NOTE[DIFF]: PyOD's ``ECOD.decision_function`` concatenates the training rows with the rows
    being scored and re-estimates the ECDFs on both, so a flow's score depends on the rest of its
    batch, and a batch of attacks shifts the reference distribution. The zero-shot protocol
    thresholds scores of held-out benign flows and applies that threshold to test flows, which
    needs each score to be a fixed function of its own row; here the ECDFs come from the
    training rows only, with add-one smoothing so that an unseen extreme gets a finite score.
    The outlier score follows the paper's Algorithm 1: the largest of the summed left-tail,
    right-tail and skewness-chosen tail scores (PyOD takes the maximum per dimension first).

    Attributes
    ----------
    sorted_ : ndarray of shape (n_samples, n_features)
        Each training column, sorted.
    skewness_ : ndarray of shape (n_features,)
    """

    def fit(self, X: np.ndarray, y: object = None) -> InductiveECOD:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            raise ValueError(f"X must be 2-D with at least 2 rows, got shape {X.shape}")
        self.sorted_ = np.sort(X, axis=0)
        self.skewness_ = np.nan_to_num(skew(X, axis=0))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        n = len(self.sorted_)
        left = np.empty_like(X)
        right = np.empty_like(X)
        for j in range(X.shape[1]):
            column = self.sorted_[:, j]
            at_most = np.searchsorted(column, X[:, j], side="right")
            at_least = n - np.searchsorted(column, X[:, j], side="left")
            left[:, j] = -np.log((at_most + 1) / (n + 1))
            right[:, j] = -np.log((at_least + 1) / (n + 1))
        chosen = np.where(self.skewness_ < 0, left, right)
        return np.max([left.sum(axis=1), right.sum(axis=1), chosen.sum(axis=1)], axis=0)
