"""The method interface shared by baselines and our detector, and a wrapper for library models.

Every method of ``sculpt benchmark`` (and its views ``compare`` and ``sweep``) is fitted on the
same rows and scored by the same code, so the only thing that differs between methods is the
method. A method says what it trains on (benign flows only, or benign flows and labelled known
attacks), which heavy-tail transform it applies before standard scaling, and gives a continuous
anomaly score, higher for more anomalous flows. Thresholds are set outside the method (see
:mod:`latent_sculpting.research.benchmark`).
"""

from __future__ import annotations

import contextlib
import random
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning

from latent_sculpting.model.preprocessing import FEATURE_TRANSFORMS, FeaturePreprocessor

__all__ = ["EstimatorMethod", "Method", "preserve_global_rng"]

TRAINS_ON = ("benign", "benign+attacks")


@runtime_checkable
class Method(Protocol):
    """What the benchmark engine needs from a detector.

    Attributes
    ----------
    name : str
        Name in tables and on the command line.
    trains_on : {"benign", "benign+attacks"}
        ``"benign"``: fitted on benign flows only (one-class); ``"benign+attacks"``: also uses the
        labelled known attacks (supervised or semi-supervised).
    feature_transform : {"none", "log1p", "quantile"}
        Transform of the raw features before standard scaling.
    library : str
        Where the model comes from, for the table.
    native_threshold_ : float or None
        After ``fit``: the method's own decision rule on its score (0.5 for a classifier's
        attack probability, the percentile of our detector's preset), or None if it has none.
    """

    name: str
    trains_on: str
    feature_transform: str
    library: str
    native_threshold_: float | None

    def fit(self, X: np.ndarray, y: np.ndarray, labels: np.ndarray) -> Method:
        """Fit on raw features ``X``, 0/1 targets ``y`` and the canonical ``labels``."""
        ...

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Anomaly score of each row of raw features ``X``; higher is more anomalous."""
        ...


@contextlib.contextmanager
def preserve_global_rng() -> Iterator[None]:
    """Restore Python's, NumPy's and torch's global RNG states on exit.

    PyOD's deep-learning base class seeds all three global generators in its constructor; this
    keeps that side effect from changing what other methods draw in the same process.
    """
    py_state, np_state = random.getstate(), np.random.get_state()  # noqa: NPY002
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)  # noqa: NPY002


class EstimatorMethod:
    """A scikit-learn or PyOD model on preprocessed features, as a :class:`Method`.

    The :class:`~latent_sculpting.model.preprocessing.FeaturePreprocessor` (``feature_transform``,
    then
    standard scaling, constant columns dropped) is fitted on the rows the model is fitted on,
    never on scored rows.

    Parameters
    ----------
    name : str
    build : callable
        ``build(random_state) -> estimator``; a fresh unfitted model.
    trains_on : {"benign", "benign+attacks"}
        ``"benign"`` fits on the rows with ``y == 0`` only and scores with the model's
        ``decision_function`` (PyOD's convention: higher is more anomalous);
        ``"benign+attacks"`` fits on all rows with their 0/1 targets.
    feature_transform : {"none", "log1p", "quantile"}, default="log1p"
    library : str, default=""
    score : {"auto", "proba", "decision_function"}, default="auto"
        How the fitted model scores: the attack probability ``predict_proba[:, 1]`` (native
        threshold 0.5) or ``decision_function``. ``"auto"`` takes the probability for
        ``"benign+attacks"`` and ``decision_function`` for ``"benign"``.
    max_fit_rows : int or None, default=None
        Fit on at most this many random rows (for models whose cost grows quadratically, like a
        kernel SVM); None uses every row.
    random_state : int or None, default=None

    Attributes
    ----------
    preprocessor_ : FeaturePreprocessor
    estimator_ : object
    native_threshold_ : float or None
    n_fit_rows_ : int
    context_config : ContextConfig or None
        The context columns the benchmark appends to its features (``rf-context``); None for
        none.
    """

    context_config = None

    def __init__(
        self,
        name: str,
        build: Callable[[int | None], Any],
        *,
        trains_on: str,
        feature_transform: str = "log1p",
        library: str = "",
        score: str = "auto",
        max_fit_rows: int | None = None,
        random_state: int | None = None,
    ) -> None:
        if trains_on not in TRAINS_ON:
            raise ValueError(f"trains_on must be one of {TRAINS_ON}, got {trains_on!r}")
        if feature_transform not in FEATURE_TRANSFORMS:
            raise ValueError(
                f"feature_transform must be one of {FEATURE_TRANSFORMS}, got {feature_transform!r}"
            )
        if score not in ("auto", "proba", "decision_function"):
            raise ValueError(f"score must be 'auto', 'proba' or 'decision_function', got {score!r}")
        if max_fit_rows is not None and max_fit_rows < 2:
            raise ValueError(f"max_fit_rows must be at least 2, got {max_fit_rows}")
        self.name = name
        self.build = build
        self.trains_on = trains_on
        self.feature_transform = feature_transform
        self.library = library
        self.score = score
        self.max_fit_rows = max_fit_rows
        self.random_state = random_state
        self.native_threshold_: float | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, trains_on={self.trains_on!r})"

    def fit(
        self, X: np.ndarray, y: np.ndarray, labels: np.ndarray | None = None
    ) -> EstimatorMethod:
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y).astype(np.int64)
        if len(y) != len(X):
            raise ValueError(f"y has {len(y)} entries but X has {len(X)} rows")
        rows = np.flatnonzero(y == 0) if self.trains_on == "benign" else np.arange(len(y))
        if self.trains_on == "benign+attacks" and len(np.unique(y)) < 2:
            raise ValueError(f"{self.name} needs benign (0) and attack (1) rows, got only {y[0]}")
        if len(rows) < 2:
            raise ValueError(f"{self.name} needs at least 2 training rows, got {len(rows)}")
        if self.max_fit_rows is not None and len(rows) > self.max_fit_rows:
            rng = np.random.default_rng(self.random_state)
            rows = np.sort(rng.choice(rows, size=self.max_fit_rows, replace=False))
        self.preprocessor_ = FeaturePreprocessor(
            feature_transform=self.feature_transform, scaler="standard"
        ).fit(X[rows])
        Z = self.preprocessor_.transform(X[rows])
        with preserve_global_rng(), warnings.catch_warnings():
            # A capped iteration budget is a deliberate cost choice (see
            # docs/research/baselines.md), not a failure worth a warning per seed.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.estimator_ = self.build(self.random_state)
            if self.trains_on == "benign":
                self.estimator_.fit(Z)
            else:
                self.estimator_.fit(Z, y[rows])
        self.n_fit_rows_ = len(rows)
        self.native_threshold_ = 0.5 if self._uses_proba() else None
        return self

    def _uses_proba(self) -> bool:
        if self.score == "auto":
            return self.trains_on == "benign+attacks"
        return self.score == "proba"

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "estimator_"):
            raise ValueError(f"{self.name} is not fitted; call fit first")
        Z = self.preprocessor_.transform(np.asarray(X, dtype=np.float32))
        with preserve_global_rng():
            if self._uses_proba():
                return self.estimator_.predict_proba(Z)[:, 1].astype(np.float64)
            return np.asarray(self.estimator_.decision_function(Z), dtype=np.float64).ravel()
