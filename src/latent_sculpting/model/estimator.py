"""The two-stage Latent Sculpting detector as a scikit-learn / PyOD-style estimator.

Stage 1 trains an encoder on benign flows and known attacks with a sculpting loss, so that benign
codes form a dense hypersphere and attacks lie at least a margin away. Stage 2 fits a Masked
Autoregressive Flow to the codes of benign training flows. A score rule combines the flow's
negative log-likelihood with the Stage-1 centroids or with side channels [1]_.

This module owns the public API, the order of the parts and the random draws between them; the
fitted parts and the methods that fit and score each of them are :class:`~.parts.FittedParts`,
and each part lives in its own module: the held-out splits and thresholds in :mod:`.calibration`,
the features in :mod:`.preprocessing`, Stage 1 in :mod:`.stage1`, the Deep SVDD embedding and
the side channels in :mod:`.channels`, Stage 2 in :mod:`.density`, the score rules in
:mod:`.fusion`, the constructor and parameter checks in :mod:`.params`, the data checks in
:mod:`.validation`, model files in :mod:`.persistence`. The 48 parameters are documented here.

References
----------
.. [1] Chhetri, Thapa, Kumar, Chen. "Latent Sculpting for Zero-Shot Generalization: A Manifold
   Learning Approach to Out-of-Distribution Anomaly Detection." arXiv:2512.22179.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from latent_sculpting.io.flowspec import FlowSpec, spec_for_features
from latent_sculpting.model.calibration import (
    PERCENTILES,
    check_holdout_rows,
    conformal_p_values,
    effective_fpr,
    fit_splits,
)
from latent_sculpting.model.folds import pseudo_zero_day_folds
from latent_sculpting.model.fusion import FUSIONS
from latent_sculpting.model.params import Parameters, check_spec_context
from latent_sculpting.model.parts import FIELDS, FittedParts, fitted_attribute
from latent_sculpting.model.persistence import load_model, save_model
from latent_sculpting.model.preprocessing import FeaturePreprocessor
from latent_sculpting.model.validation import check_features, check_fit_data

__all__ = ["PERCENTILES", "LatentSculpting"]


class LatentSculpting(Parameters):
    """Two-stage zero-shot attack detector: latent sculpting, then MAF density [1]_.

    The defaults are the ``default`` preset (:mod:`latent_sculpting.model.presets`).

    Parameters
    ----------
    feature_transform : {"none", "log1p", "quantile"}, default="log1p"
        Transform applied to the raw features before scaling.
    scaler : {"standard", "none"}, default="standard"
    stage1 : bool, default=False
        Train the sculpting encoder. ``False`` fits the flow directly on the scaled features
        (the "Stage 2 alone" ablation, and the only choice for benign-only data).
    encoder : {"cnn_transformer", "ft_transformer", "mlp"}, default="mlp"
    latent_dim, d_model, n_heads, n_layers, d_ffn : int, default=32, 256, 4, 2, 256
        Encoder sizes; see :func:`latent_sculpting.model.stage1.encoders.build_encoder`.
    dropout : float, default=0.1
    loss : {"dual_centroid", "binary_sculpting", "cross_entropy"}, default="binary_sculpting"
    alpha, beta, gamma, margin : float, default=0.1, 0.1, 1.0, 5.0
        Loss weights; see :mod:`latent_sculpting.model.stage1.losses`.
    input_noise : float, default=0.1
        Standard deviation of the Gaussian noise added to scaled inputs during Stage-1 training.
    lr, weight_decay : float, default=3e-4, 1e-2
        AdamW settings of Stage 1.
    batch_size, epochs : int, default=512, 10
        Stage-1 batch size and epochs.
    grad_clip : float, default=1.0
        Gradient-norm clip for both stages.
    validation_fraction : float, default=0.1
        Share of the Stage-1 training rows held out to pick the best epoch.
    selection : {"centroid_f1", "distance_auroc"}, default="distance_auroc"
        How the best Stage-1 epoch is picked on the validation rows: the anomaly F1 of the
        nearest-centroid rule (the reference code), or the AUROC of the squared distance to
        the benign centroid (what the Binary Latent Sculpting loss optimises).
    undersample_benign : bool, default=True
        Undersample benign rows for Stage 1 to the size of the largest attack class (all benign
        training rows still go to Stage 2).
    flow_transforms, flow_hidden, flow_hidden_layers : int, default=5, 128, 1
        MAF size: MADE transforms, hidden width, hidden layers per MADE. ``flow_transforms=0``
        fits no flow: the ``"fisher"`` and ``"stacked"`` rules then combine the side channels
        alone (the flow's ablation, ``default-noflow`` in the benchmark).
    flow_lr : float, default=5e-4
    flow_epochs, flow_batch_size : int, default=20, 512
    flow_standardize : bool, default=False
        Standardise the flow's input (mean and std of the benign training inputs). Sculpted
        codes have very unequal scales, attack directions pushed to the margin and benign ones
        packed tight; the MAF's standard-normal base fits them in fewer epochs once scaled. The
        paper's code feeds the raw codes.
    svdd_dim : int, default=0
        Width of a benign-only Deep SVDD embedding
        (:class:`~latent_sculpting.model.channels.deep_sad.DeepSAD`
        with ``eta=0``) appended to the latent code as the flow's input; 0 for none. Stage 1
        keeps the directions that separate benign flows from the *known* attacks and squeezes
        the rest; this channel keeps what it squeezed (docs/research/presets.md).
    forest_trees : int, default=0
        Trees of the random forest side channel
        (:class:`~latent_sculpting.model.channels.registry.ForestChannel`)
        trained on the scaled features against the known attacks; 0 for none. Only
        ``score="fisher"`` uses it, and it needs one.
    boost_iter : int, default=100
        Boosting iterations at most of the gradient-boosted trees side channel
        (:class:`~latent_sculpting.model.channels.registry.BoostChannel`, scikit-learn's histogram
        gradient
        boosting, binary, against the known attacks; its score is the log-odds); 0 for none.
        Only ``score="fisher"`` uses it; the booster is fitted without the held-out rows.
    stack_folds : int, default=8
        Most known attack families the ``"stacked"`` rule holds out in turn to learn its
        weights (:mod:`latent_sculpting.model.folds`); 0 with any other rule.
    stack_neighbours : int, default=0
        Other known families each of those folds also leaves out of its refits: the ones whose
        mean scaled features lie nearest the held-out family's, so that it is as new to the
        refitted trees as an unseen family is (it alone is scored).
    knn_prototypes : int, default=1024
        Benign prototypes of the neighbour side channel
        (:class:`~latent_sculpting.model.channels.registry.NeighbourChannel`): the distance of a
        flow's scaled
        features to the nearest k-means centre of the benign training rows; 0 for none.
    max_benign_rows : int or None, default=262144
        Most benign fitting rows that the benign densities (the flow, the Deep SVDD embedding,
        the benign prototypes) and the pseudo-zero-day fold refits train on: a seeded random
        sample of them when there are more; None for all. The supervised side channels' own
        fit, the calibration and reference rows and the drift bins always use every row. A
        budget for full-scale data (millions of benign flows): a density of a few dozen
        features does not need every one of them, and its cost grows with each (BENCHMARKS.md).
    score : {"two_stage", "nll", "fisher", "stacked"}, default="stacked"
        The rule of :mod:`latent_sculpting.model.fusion`. ``"two_stage"`` is the paper's: Stage-1
        attacks rank above every flow-scored row. ``"nll"`` uses the flow alone. ``"fisher"``
        turns the flow's NLL and each side channel's score into p-values against held-out benign
        *reference* flows and adds their ``-log``; it needs ``calibration="holdout"``, whose
        held-out rows are then split in halves, one for the reference and one for the threshold.
        ``"stacked"`` weights that sum per channel, the weights learned on pseudo-zero-day
        folds (each known attack family in ``groups`` held out in turn; at most
        ``stack_folds`` of them, the largest); it needs ``stage1=False``.
    percentile : float, default=95.0
        Percentile of benign calibration scores used as ``threshold_``.
    calibration : {"train", "holdout"}, default="holdout"
        ``"train"`` sets thresholds on the flow's NLL of the benign training rows (the paper).
        ``"holdout"`` keeps ``calibration_fraction`` of the benign rows out of every fit and
        sets thresholds and conformal p-values on their scores.
    calibration_fraction : float, default=0.2
    target_fpr : float or None, default=None
        If given, ``threshold_`` is the split-conformal threshold whose false-positive rate on
        exchangeable benign flows is at most ``target_fpr``; overrides ``percentile``. Needs
        ``calibration="holdout"``. Too few held-out benign flows for it (fewer than
        ``1/target_fpr - 1`` calibration flows,
        :func:`~latent_sculpting.model.calibration.conformal_rows`) are refused before
        fitting, unless ``coarse_threshold``.
    coarse_threshold : bool, default=False
        Accept a ``target_fpr`` that the calibration flows cannot guarantee: the threshold is
        then the largest calibration score, whose false-positive rate is at most ``1/(n+1)``
        for ``n`` calibration flows (``history_["fpr_floor"]``).
    context : str, default="off"
        Context features after the per-flow ones (:mod:`latent_sculpting.io.context`): "off",
        "on", or time scales in seconds ("10,60,600"). Computed where records are read; a
        ``spec`` given to :meth:`fit` must hold the same.
    random_state : int or None, default=None
    device : str, default="auto"
        A torch device; ``"auto"`` takes CUDA when available.
    n_jobs : int or None, default=None
        Workers that fit the pseudo-zero-day folds' supervised channels at once (``"stacked"``
        rule); None is 1, -1 one per CPU this process may use. Each worker runs one intra-op
        thread (:mod:`latent_sculpting.threads`), and the fit is the same, bit for bit, for
        every value.
    verbose : bool, default=False
        Show progress bars.

    Attributes
    ----------
    parts_ : FittedParts
        The fitted parts (:class:`~latent_sculpting.model.parts.FittedParts`, which describes
        each). ``preprocessor_``, ``encoder_``, ``center_benign_``, ``center_attack_``,
        ``svdd_``, ``flow_scaler_``, ``flow_``, ``channels_``, ``fusion_``,
        ``calibration_scores_``, ``thresholds_``, ``threshold_``, ``drift_reference_``,
        ``benign_profile_`` and ``device_`` are views of its fields.
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray, optional
    spec_ : FlowSpec, optional
        How flow records become ``X`` (see :meth:`fit`).
    training_info_ : dict
        Where the training rows came from (see :meth:`fit`).
    history_ : dict
        Per-epoch losses and validation F1, best epoch, and seconds per stage; under
        ``training_events`` (only when there were any) the training loops' reports of
        exploded epochs trained again and of skipped non-finite batches
        (:func:`~latent_sculpting.model.training.train_epochs`).

    Examples
    --------
    >>> from latent_sculpting import LatentSculpting, preset
    >>> model = LatentSculpting(**preset("fast"), random_state=0)  # doctest: +SKIP
    >>> model.fit(X_train, y_train).decision_function(X_test)  # doctest: +SKIP
    """

    def __copy__(self) -> LatentSculpting:
        # The fitted attributes are views of ``parts_``: a shallow copy gets its own parts
        # (sharing the part objects), so that replacing a part of the copy leaves this one be,
        # as it would if the attributes were its own.
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        if "parts_" in self.__dict__:
            new.parts_ = copy.copy(self.parts_)
        return new

    # ------------------------------------------------------------------ fitting

    def fit(
        self,
        X: Any,
        y: Any = None,
        *,
        groups: Sequence[str] | None = None,
        spec: FlowSpec | None = None,
        training_info: Mapping[str, Any] | None = None,
    ) -> LatentSculpting:
        """Fit both stages, the side channels, the score rule and the thresholds.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Raw (unscaled) flow features; a DataFrame's column names are remembered and
            checked at scoring time.
        y : array-like of shape (n_samples,), optional
            0 for benign, 1 for known attacks. ``None`` means all benign, which requires
            ``stage1=False``.
        groups : array-like of str, optional
            Attack class of each row. Only used to undersample benign rows for Stage 1 to the
            size of the largest attack class; without it all attacks count as one class.
        spec : FlowSpec, optional
            How flow records became ``X`` (:func:`latent_sculpting.io.fitting.fit_spec`); stored
            as ``spec_`` so that files and requests are read as the training data was. Without
            it, a DataFrame's columns are taken as a plain numeric table's.
        training_info : dict, optional
            Where the training rows came from (files, counts, preset, date), kept as
            ``training_info_`` in the model file; :meth:`adapt` appends its records to it.

        Returns
        -------
        self
        """
        self._validate_params()
        params = self.get_params(deep=False)
        X, y, groups_arr, names = check_fit_data(X, y, groups, stage1=self.stage1)
        self.training_info_ = dict(training_info or {})
        self.n_features_in_ = X.shape[1]
        check_spec_context(self.context, spec, named=names is not None)
        if spec is not None:
            if names is not None and list(names) != spec.feature_names:
                raise ValueError("X's columns are not the features of the spec given")
            if spec.n_features != X.shape[1]:
                raise ValueError(f"the spec has {spec.n_features} features, X {X.shape[1]}")
            names = np.asarray(spec.feature_names, dtype=object)
        if names is not None:
            self.feature_names_in_ = names
            self.spec_ = spec if spec is not None else spec_for_features(names)
        else:
            for name in ("feature_names_in_", "spec_"):
                if hasattr(self, name):
                    delattr(self, name)
        if self.calibration == "holdout":
            check_holdout_rows(
                int((y == 0).sum()),
                self.calibration_fraction,
                FUSIONS[self.score].needs_reference,
                self.target_fpr,
                coarse=self.coarse_threshold,
            )
        self.parts_ = parts = FittedParts(
            device=torch.device(
                ("cuda" if torch.cuda.is_available() else "cpu")
                if self.device == "auto"
                else self.device
            ),
            fusion=FUSIONS[self.score](),
        )
        rng = np.random.default_rng(self.random_state)
        self.history_ = {"seconds": {}}
        events: list[dict] = []
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**31)))
            fit_rows, reference, held_out = fit_splits(
                y, self.calibration, self.calibration_fraction, parts.fusion.needs_reference, rng
            )
            with self._timed("preprocess"):
                parts.preprocessor = FeaturePreprocessor(
                    feature_transform=self.feature_transform, scaler=self.scaler
                ).fit(X[fit_rows])
                Z = parts.preprocessor.transform(X)
            with self._timed("stage1"):
                groups_fit = None if groups_arr is None else groups_arr[fit_rows]
                history = parts.fit_stage1(
                    Z[fit_rows], y[fit_rows], groups_fit, rng, params, events=events
                )
                self.history_.update(history)
            benign = self._benign_sample(fit_rows[y[fit_rows] == 0], rng)
            with self._timed("side_channels"):
                rows = np.concatenate([reference, held_out])
                out_of_sample = parts.fit_side_channels(Z, y, benign, rows, rng, params)
                if parts.svdd is not None:
                    events.extend(parts.svdd.training_events_)
            with self._timed("stage2"):
                benign_inputs, self.history_["stage2_nll"] = parts.fit_flow(
                    Z[benign], params, events=events
                )
                if benign_inputs is None:
                    del self.history_["stage2_nll"]

            n_ref = len(reference)
            if parts.fusion.needs_reference:
                side = {name: scores[:n_ref] for name, scores in out_of_sample.items()}
                reference_scores = parts.channel_scores(Z[reference], side)
                folds = None
                if parts.fusion.needs_folds:
                    with self._timed("folds"):
                        train = np.union1d(fit_rows[y[fit_rows] == 1], benign)
                        folds = pseudo_zero_day_folds(
                            parts, params, Z, y, groups_arr, fit_rows, reference,
                            reference_scores, train,
                        )  # fmt: skip
                parts.fit_fusion(reference_scores, folds)
                if folds is not None:
                    self.history_["fusion_weights"] = dict(parts.fusion.weights_)
            if self.calibration == "train":
                # The paper: the flow's NLL of the benign rows it was trained on.
                cal = parts.nll(benign_inputs)
            else:
                side = {name: scores[n_ref:] for name, scores in out_of_sample.items()}
                cal = parts.fusion.combine(parts.channel_scores(Z[held_out], side))
            parts.calibrate(cal, self.percentile, self.target_fpr, coarse=self.coarse_threshold)
        with self._timed("benign_profile"):
            self.describe_benign(X[y == 0])
        if events:  # absent otherwise, so that an ordinary fit's history is what it was
            self.history_["training_events"] = events
        return self

    def describe_benign(self, X_benign: np.ndarray) -> None:
        """Describe benign traffic, feature by feature, in raw units: the bins that scoring
        compares new traffic with (``drift_reference_``) and the quantiles that explain an
        alert (``benign_profile_``). Neither takes part in the score; ``fit`` and ``adapt``
        call it with the benign rows they learned from."""
        names = getattr(self, "feature_names_in_", range(self.n_features_in_))
        target = effective_fpr(self.target_fpr, self.percentile)
        self.parts_.describe_benign(
            X_benign, names, target_fpr=target, spec=getattr(self, "spec_", None)
        )

    def _benign_sample(self, benign: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``benign``, or a sorted random sample of ``max_benign_rows`` of them when there are
        more (no draw otherwise, so that a fit below the budget is the fit without one)."""
        cap = self.max_benign_rows
        self.history_["n_benign_density"] = min(len(benign), cap or len(benign))
        if cap is None or len(benign) <= cap:
            return benign
        return np.sort(rng.choice(benign, size=cap, replace=False))

    @contextlib.contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        yield
        self.history_["seconds"][stage] = time.perf_counter() - start

    def adapt(
        self,
        X_benign: Any,
        *,
        refit: bool = True,
        keep_training_prototypes: bool = False,
        fresh_flow: bool = False,
        calibration_fraction: float = 0.5,
        random_state: int | None = None,
        coarse_threshold: bool | None = None,
    ) -> LatentSculpting:
        """Adapt the fitted model to another network from benign flows of that network.

        Keeps what the model learned about attacks (preprocessor, Stage 1, the supervised side
        channels with their fusion tails, the stacked rule's weights) and refits what describes
        benign traffic (Deep SVDD, the flow, the benign-only side channels and their tails, the
        conformal threshold on held-out rows, drift bins, benign profile); see
        :func:`latent_sculpting.model.adapt.adapt` for the parameters. Every row is learned as
        benign: an attack among them will not be flagged afterwards.

        Returns
        -------
        self
        """
        from latent_sculpting.model.adapt import adapt

        return adapt(
            self,
            X_benign,
            refit=refit,
            keep_training_prototypes=keep_training_prototypes,
            fresh_flow=fresh_flow,
            calibration_fraction=calibration_fraction,
            random_state=random_state,
            coarse_threshold=coarse_threshold,
        )

    # ------------------------------------------------------------------ scoring

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly score of each flow; higher is more anomalous.

        With ``score="two_stage"`` a flow that Stage 1 calls an attack scores
        ``STAGE1_OFFSET`` (:mod:`latent_sculpting.model.fusion`) plus its margin (distance to the
        benign centroid minus distance to the attack centroid), above every Stage-2 NLL.
        """
        check_is_fitted(self, "flow_")
        parts = self.parts_

        def score(rows: np.ndarray) -> np.ndarray:
            return parts.score(parts.preprocessor.transform(rows))

        return np.concatenate(
            self._map_blocks(X, score, flow="nll" in parts.fusion.channels_read())
        )

    def predict(self, X: Any) -> np.ndarray:
        """1 for an attack, 0 for benign, at ``threshold_``."""
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    def p_values(self, X: Any) -> np.ndarray:
        """Split-conformal p-values: the share of benign calibration scores at least as high.

        ``(1 + #{calibration scores >= s}) / (n + 1)``; valid p-values when
        ``calibration="holdout"`` and the flow is exchangeable with the held-out benign rows.
        """
        return conformal_p_values(self.calibration_scores_, self.decision_function(X))

    def transform(self, X: Any) -> np.ndarray:
        """Latent codes of ``X`` (the scaled features when ``stage1=False``)."""
        return np.concatenate(
            self._map_blocks(
                X,
                lambda rows: self.parts_.encode(self.parts_.preprocessor.transform(rows)),
                flow=False,
            )
        )

    def score_details(self, X: Any) -> dict[str, np.ndarray]:
        """Everything behind the score: the flow's NLL (when there is a flow), each side
        channel's score (e.g.
        ``forest_probability``), the score, and with Stage 1 the distances to the centroids
        and its verdict ``stage1_attack``."""

        def details(rows: np.ndarray) -> dict[str, np.ndarray]:
            Z = self.parts_.preprocessor.transform(rows)
            return self.parts_.score_details(Z, stage1=self.stage1)

        blocks = self._map_blocks(X, details)
        return {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}

    def _map_blocks(self, X: Any, score: Callable[[np.ndarray], Any], *, flow: bool = True) -> list:
        """``score`` of each block of the checked ``X``, in order
        (:meth:`~.parts.FittedParts.map_blocks`)."""
        check_is_fitted(self, "flow_")
        names = getattr(self, "feature_names_in_", None)
        arr = check_features(X, n_features=self.n_features_in_, feature_names=names)
        return self.parts_.map_blocks(arr, score, flow=flow)

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one safetensors file (atomically); see :mod:`.persistence`."""
        return save_model(self, path)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> LatentSculpting:
        """Load a model written by :meth:`save`; never unpickles anything."""
        params, fitted = load_model(path, device=device)
        return cls._from_state(params, fitted)

    @classmethod
    def _from_state(cls, params: dict[str, Any], fitted: dict[str, Any]) -> LatentSculpting:
        """A fitted model from checked parameters and fitted attributes (:func:`load_model`)."""
        model = cls(**params)
        model.parts_ = FittedParts()
        for name, value in fitted.items():
            setattr(model, name, value)
        return model


for _field in FIELDS:
    setattr(LatentSculpting, f"{_field}_", fitted_attribute(_field))
del _field
