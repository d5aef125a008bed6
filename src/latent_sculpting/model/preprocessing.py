"""Feature preprocessing fitted on training rows only: transform, variance filter, scaling.

Chhetri et al., "Latent Sculpting for Zero-Shot Generalization" (arXiv:2512.22179) standardise
the CIC-IDS-2017 flow features before the encoder. This module adds the options the project
compares (a signed ``log1p`` and a normal-output quantile transform for the heavy-tailed
counters) and drops constant columns, which several CIC-IDS-2017 bulk and flag features are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.preprocessing import QuantileTransformer
from sklearn.utils.validation import check_is_fitted

from latent_sculpting.model.state import (
    check_array,
    check_int,
    check_number,
    check_object,
    few,
    shown,
)

__all__ = ["FEATURE_TRANSFORMS", "SCALERS", "FeaturePreprocessor"]

FEATURE_TRANSFORMS = ("none", "log1p", "quantile")
SCALERS = ("standard", "none")
_STATE_VERSION = 1
#: The parameters a stored state may hold.
_PARAMS = {
    "feature_transform",
    "scaler",
    "variance_threshold",
    "quantile_subsample",
    "random_state",
}


class FeaturePreprocessor(TransformerMixin, BaseEstimator):
    """Transform, drop near-constant columns, then scale; fitted on training rows only.

    Parameters
    ----------
    feature_transform : {"none", "log1p", "quantile"}, default "none"
        ``"log1p"`` is signed, ``sign(x) * log1p(|x|)``, because CIC-IDS-2017 has negative
        values (e.g. ``Fwd Header Length``, ``-1`` window sizes). ``"quantile"`` is scikit-learn's
        :class:`~sklearn.preprocessing.QuantileTransformer` with normal output and at most 1000
        quantiles. (Named ``feature_transform`` rather than ``transform`` so that it does not
        shadow the :meth:`transform` method.)
    scaler : {"standard", "none"}, default "standard"
        Standardisation (the paper's choice) or nothing.
    variance_threshold : float, default 0.0
        Columns whose variance after ``feature_transform`` is <= this, or that are constant on
        the training rows, are dropped.
    quantile_subsample : int, default 100_000
        Rows used to estimate the quantiles.
    random_state : int, default 0
        Seed of the quantile subsample.

    Attributes
    ----------
    n_features_in_ : int
        Columns expected by :meth:`transform`.
    support_ : ndarray of shape (n_features_in_,), bool
        Columns kept by the variance filter.
    variances_ : ndarray of shape (n_features_in_,)
        Column variances after ``feature_transform`` on the training rows.
    center_ : ndarray of shape (n_kept,)
        Subtracted before scaling (the mean; zeros for ``scaler="none"``).
    scale_ : ndarray of shape (n_kept,)
        Divisor after centring (the std, 1 where that is 0; ones for ``scaler="none"``).
    quantile_ : QuantileTransformer or None
        The fitted quantile transform (``feature_transform="quantile"``).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.array([[0.0, 1.0, 5.0], [0.0, 3.0, 5.0]])
    >>> pre = FeaturePreprocessor().fit(X)
    >>> pre.support_.tolist()
    [False, True, False]
    >>> pre.transform(X).ravel().tolist()
    [-1.0, 1.0]
    """

    #: Rows transformed at a time by :meth:`transform` (a few tens of MiB of float64).
    _BLOCK = 65_536

    def __init__(
        self,
        *,
        feature_transform: str = "none",
        scaler: str = "standard",
        variance_threshold: float = 0.0,
        quantile_subsample: int = 100_000,
        random_state: int = 0,
    ) -> None:
        self.feature_transform = feature_transform
        self.scaler = scaler
        self.variance_threshold = variance_threshold
        self.quantile_subsample = quantile_subsample
        self.random_state = random_state

    # ----------------------------------------------------------------------------------------
    def _validate_params(self) -> None:
        if self.feature_transform not in FEATURE_TRANSFORMS:
            raise ValueError(
                f"feature_transform must be one of {FEATURE_TRANSFORMS}, "
                f"got {self.feature_transform!r}"
            )
        if self.scaler not in SCALERS:
            raise ValueError(f"scaler must be one of {SCALERS}, got {self.scaler!r}")
        if not self.variance_threshold >= 0:
            raise ValueError(f"variance_threshold must be >= 0, got {self.variance_threshold!r}")
        if self.quantile_subsample < 1:
            raise ValueError(f"quantile_subsample must be >= 1, got {self.quantile_subsample!r}")

    def _check_array(self, X: Any, *, fitting: bool) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_rows, n_features), got shape {X.shape}")
        if not np.issubdtype(X.dtype, np.number) and X.dtype != bool:
            raise ValueError(f"X must be numeric, got dtype {X.dtype}")
        if not fitting and X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} columns, but FeaturePreprocessor was fitted with "
                f"{self.n_features_in_}"
            )
        if fitting and X.shape[0] < 1:
            raise ValueError(f"X has no rows, shape {X.shape}")
        finite = np.isfinite(X)
        if not finite.all():
            row, col = np.argwhere(~finite)[0]
            raise ValueError(
                f"X contains NaN or inf (first at row {row}, column {col}: {X[row, col]}); "
                "clean it first (latent_sculpting.data replaces them by 0)"
            )
        return X

    def _apply_transform(self, X: np.ndarray) -> np.ndarray:
        # float64 for the transform: CIC counters reach 1e8 and float32 would lose the low bits
        # that distinguish near-constant columns.
        if self.feature_transform == "log1p":
            # sign(x) * log1p(|x|), in place in one float64 copy (the value of the plain
            # expression, bit for bit): at millions of rows each temporary is gigabytes.
            Z = np.array(X, dtype=np.float64)
            np.abs(Z, out=Z)
            np.log1p(Z, out=Z)
            return np.copysign(Z, X, out=Z)
        X = np.asarray(X, dtype=np.float64)
        if self.feature_transform == "quantile":
            return self.quantile_.transform(X)
        return X

    # ----------------------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> FeaturePreprocessor:
        """Fit on training rows only.

        Parameters
        ----------
        X : array-like of shape (n_rows, n_features)
            Finite training features.
        y : ignored

        Returns
        -------
        self

        Raises
        ------
        ValueError
            On an invalid parameter, non-2-D / empty / non-finite ``X``, or when every column
            is dropped by the variance filter.
        """
        self._validate_params()
        X = self._check_array(X, fitting=True)
        self.n_features_in_ = int(X.shape[1])
        self.quantile_ = None
        if self.feature_transform == "quantile":
            self.quantile_ = QuantileTransformer(
                n_quantiles=int(min(1000, X.shape[0])),
                output_distribution="normal",
                subsample=int(self.quantile_subsample),
                random_state=self.random_state,
            ).fit(X.astype(np.float64))
        Z = self._apply_transform(X)
        self.variances_ = Z.var(axis=0)
        # A constant column can show a variance of ~1e-30 from summation rounding, so constancy
        # is tested exactly as well.
        constant = Z.max(axis=0) == Z.min(axis=0)
        self.support_ = (self.variances_ > self.variance_threshold) & ~constant
        if not self.support_.any():
            raise ValueError(
                f"every column has variance <= variance_threshold={self.variance_threshold}; "
                "nothing left to model"
            )
        # Rebinding frees the full array once the kept columns are copied. (Their statistics
        # cannot be read off the full array's: numpy's column sums depend on the array's width
        # in the last bits.)
        Z = Z[:, self.support_]
        if self.scaler == "standard":
            center, scale = Z.mean(axis=0), Z.std(axis=0)
        else:
            center, scale = np.zeros(Z.shape[1]), np.ones(Z.shape[1])
        # Kept columns are not constant, but a tiny spread may round to 0; dividing by 1 then
        # leaves the column centred instead of producing inf.
        scale[scale == 0] = 1.0
        self.center_, self.scale_ = center, scale
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Transform, select and scale ``X``.

        Returns
        -------
        ndarray of shape (n_rows, n_kept), float32

        Raises
        ------
        ValueError
            If ``X`` has the wrong number of columns or contains NaN / inf.
        """
        check_is_fitted(self, "support_")
        X = self._check_array(X, fitting=False)
        # Row blocks, so that the float64 working copy stays small however many rows come;
        # every step is per row, so the result does not depend on the blocks.
        out = np.empty((len(X), int(self.support_.sum())), dtype=np.float32)
        for start in range(0, len(X), self._BLOCK):
            Z = self._apply_transform(X[start : start + self._BLOCK])[:, self.support_]
            Z -= self.center_
            Z /= self.scale_
            out[start : start + self._BLOCK] = Z
        return out

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Names of the kept columns (``x0``, ``x1``, ... unless ``input_features`` is given)."""
        check_is_fitted(self, "support_")
        if input_features is None:
            input_features = [f"x{i}" for i in range(self.n_features_in_)]
        names = np.asarray(input_features, dtype=object)
        if names.shape != (self.n_features_in_,):
            raise ValueError(
                f"input_features has {names.size} names, expected {self.n_features_in_}"
            )
        return names[self.support_]

    # ----------------------------------------------------------------------------------------
    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state as a JSON-able config and named arrays (no pickle).

        Returns
        -------
        config : dict
            Parameters, ``n_features_in_`` and a format version.
        arrays : dict of str to ndarray
            ``support``, ``variances``, ``center``, ``scale`` and, for the quantile transform,
            ``quantiles`` and ``references``.
        """
        check_is_fitted(self, "support_")
        config = {
            "version": _STATE_VERSION,
            "params": self.get_params(),
            "n_features_in_": self.n_features_in_,
        }
        arrays = {
            "support": self.support_.copy(),
            "variances": self.variances_.copy(),
            "center": self.center_.copy(),
            "scale": self.scale_.copy(),
        }
        if self.quantile_ is not None:
            arrays["quantiles"] = self.quantile_.quantiles_.copy()
            arrays["references"] = self.quantile_.references_.copy()
        return config, arrays

    @classmethod
    def from_state(cls, config: Any, arrays: dict[str, np.ndarray]) -> FeaturePreprocessor:
        """Rebuild a fitted preprocessor from :meth:`get_state` output, every key and array
        checked first (a model file is untrusted input).

        Checked: the config's keys and parameters (as :meth:`fit` checks them, and each of its
        JSON type), exactly the arrays the transform needs, each of its dtype and shape and
        finite; at least one column kept, no negative variance, positive scales (0 and 1 for
        ``scaler="none"``), 2 to 1000 sorted quantiles on evenly spaced references.

        Raises
        ------
        ValueError
            Naming the key, array or value at fault.
        """
        config = check_object(config, "its config", {"version", "params", "n_features_in_"})
        if config["version"] != _STATE_VERSION:
            raise ValueError(f"unsupported FeaturePreprocessor state version {config['version']!r}")
        settings = check_object(config["params"], "its params", set(), _PARAMS)
        if settings.get("feature_transform", "none") not in FEATURE_TRANSFORMS:
            raise ValueError(f"feature_transform {shown(settings['feature_transform'])}")
        if settings.get("scaler", "standard") not in SCALERS:
            raise ValueError(f"scaler {shown(settings['scaler'])}")
        check_number(settings.get("variance_threshold", 0.0), "variance_threshold")
        check_int(settings.get("quantile_subsample", 1), "quantile_subsample", 1, 2**62)
        if settings.get("random_state") is not None:
            check_int(settings["random_state"], "random_state", 0, 2**32 - 1)
        pre = cls(**settings)
        pre._validate_params()
        n_features = check_int(config["n_features_in_"], "n_features_in_", 1, 2**31)
        quantile = pre.feature_transform == "quantile"
        needed = {"support", "variances", "center", "scale"} | (
            {"quantiles", "references"} if quantile else set()
        )
        missing, unknown = sorted(needed - set(arrays)), sorted(set(arrays) - needed)
        if missing or unknown:
            raise ValueError(f"arrays missing {missing}, unknown {few(unknown)}")
        pre.n_features_in_ = n_features
        pre.support_ = check_array(arrays, "support", np.bool_, (n_features,))
        kept = int(pre.support_.sum())
        if kept == 0:
            raise ValueError("it keeps no column")
        pre.variances_ = check_array(arrays, "variances", np.float64, (n_features,))
        if bool((pre.variances_ < 0).any()):
            raise ValueError("negative variances")
        pre.center_ = check_array(arrays, "center", np.float64, (kept,))
        pre.scale_ = check_array(arrays, "scale", np.float64, (kept,))
        if not bool((pre.scale_ > 0).all()):
            raise ValueError("scales must be positive")
        if pre.scaler == "none" and not (
            bool((pre.center_ == 0).all()) and bool((pre.scale_ == 1).all())
        ):
            raise ValueError("scaler='none' centres at 0 and scales by 1")
        pre.quantile_ = None
        if quantile:
            quantiles = check_array(arrays, "quantiles", np.float64, (None, n_features))
            if not 2 <= len(quantiles) <= 1_000:
                raise ValueError(f"{len(quantiles)} quantiles; 2 to 1000 expected")
            if bool((np.diff(quantiles, axis=0) < 0).any()):
                raise ValueError("quantiles are not sorted")
            references = check_array(arrays, "references", np.float64, (len(quantiles),))
            if not np.allclose(references, np.linspace(0, 1, len(quantiles))):
                raise ValueError("quantile references are not evenly spaced over [0, 1]")
            qt = QuantileTransformer(
                n_quantiles=quantiles.shape[0],
                output_distribution="normal",
                subsample=int(pre.quantile_subsample),
                random_state=pre.random_state,
            )
            # Restores exactly the fitted attributes QuantileTransformer.transform reads.
            qt.quantiles_ = quantiles
            qt.references_ = references
            qt.n_quantiles_ = quantiles.shape[0]
            qt.n_features_in_ = n_features
            pre.quantile_ = qt
        return pre
