"""The two-stage Latent Sculpting detector as a scikit-learn / PyOD-style estimator.

Stage 1 trains an encoder on benign flows and known attacks with a sculpting loss, so that benign
codes form a dense hypersphere and attacks lie at least a margin away. Stage 2 fits a Masked
Autoregressive Flow to the codes of benign training flows. A score rule combines the flow's
negative log-likelihood with the Stage-1 centroids or with side channels [1]_.

This module owns the public API, the order of the parts and the random draws between them; each
part lives in its own module: the held-out splits and thresholds in :mod:`.calibration`, the
features in :mod:`.preprocessing`, Stage 1 in :mod:`.stage1`, the Deep SVDD embedding in
:mod:`.deep_sad`, the side channels in :mod:`.channels`, Stage 2 in :mod:`.stage2`, the score
rules in :mod:`.fusion`, the parameter checks in :mod:`.params`, the data checks in
:mod:`.validation`, model files in :mod:`.persistence`. It runs to about 500 lines because the
43 parameters' documentation and constructor take about 200 of them.

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
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from latent_sculpting.io.flowspec import FlowSpec, spec_for_features
from latent_sculpting.model.calibration import (
    PERCENTILES,
    calibration_rows,
    check_calibration_rows,
    conformal_p_values,
    effective_fpr,
    holdout_split,
    reference_split,
)
from latent_sculpting.model.channels.deep_sad import DeepSAD
from latent_sculpting.model.channels.registry import SIDE_CHANNELS, enabled_channels
from latent_sculpting.model.density.fastpath import (
    SCORE_BLOCK,
    map_blocks,
    scoring_workers,
)
from latent_sculpting.model.folds import pseudo_zero_day_folds
from latent_sculpting.model.fusion import FUSIONS
from latent_sculpting.model.params import PARAMETER_CONSTRAINTS, check_params
from latent_sculpting.model.parts import FIELDS, FittedParts
from latent_sculpting.model.persistence import load_model, save_model
from latent_sculpting.model.preprocessing import FeaturePreprocessor
from latent_sculpting.model.stage1.train import STAGE1_PARAMETERS, fit_stage1
from latent_sculpting.model.validation import check_features, check_fit_data

__all__ = ["PERCENTILES", "LatentSculpting"]


class LatentSculpting(BaseEstimator):
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
    preprocessor_ : FeaturePreprocessor
    encoder_ : torch.nn.Module or None
    center_benign_, center_attack_ : torch.Tensor or None
        Stage-1 centroids, from the Stage-1 training rows.
    svdd_ : DeepSAD or None
        The benign-only embedding beside the codes (``svdd_dim > 0``).
    flow_scaler_ : FeaturePreprocessor or None
        The flow input's standardisation (``flow_standardize=True``).
    flow_ : LatentDensity or None
        None when ``flow_transforms=0``.
    channels_ : dict of str to side channel
        The side channels that are on (``"forest"``, ``"boost"``), by name.
    fusion_ : latent_sculpting.model.fusion.Fusion
        The fitted score rule (for ``"fisher"``, the tails of each channel).
    thresholds_ : dict of float to float
        Threshold at each percentile of :data:`~latent_sculpting.model.calibration.PERCENTILES`
        (and ``percentile``).
    threshold_ : float
    calibration_scores_ : numpy.ndarray
        Sorted benign calibration scores behind thresholds and p-values.
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray, optional
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

    _parameter_constraints: ClassVar[dict[str, list]] = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        *,
        feature_transform: str = "log1p",
        scaler: str = "standard",
        stage1: bool = False,
        encoder: str = "mlp",
        latent_dim: int = 32,
        d_model: int = 256,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ffn: int = 256,
        dropout: float = 0.1,
        loss: str = "binary_sculpting",
        alpha: float = 0.1,
        beta: float = 0.1,
        gamma: float = 1.0,
        margin: float = 5.0,
        input_noise: float = 0.1,
        lr: float = 3e-4,
        weight_decay: float = 1e-2,
        batch_size: int = 512,
        epochs: int = 10,
        grad_clip: float = 1.0,
        validation_fraction: float = 0.1,
        selection: str = "distance_auroc",
        undersample_benign: bool = True,
        flow_transforms: int = 5,
        flow_hidden: int = 128,
        flow_hidden_layers: int = 1,
        flow_lr: float = 5e-4,
        flow_epochs: int = 20,
        flow_batch_size: int = 512,
        flow_standardize: bool = False,
        svdd_dim: int = 0,
        forest_trees: int = 0,
        boost_iter: int = 100,
        knn_prototypes: int = 1024,
        stack_folds: int = 8,
        stack_neighbours: int = 0,
        max_benign_rows: int | None = 262_144,
        score: str = "stacked",
        percentile: float = 95.0,
        calibration: str = "holdout",
        calibration_fraction: float = 0.2,
        target_fpr: float | None = None,
        coarse_threshold: bool = False,
        random_state: int | None = None,
        device: str = "auto",
        n_jobs: int | None = None,
        verbose: bool = False,
    ) -> None:
        self.feature_transform = feature_transform
        self.scaler = scaler
        self.stage1 = stage1
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.d_model = d_model
        self.n_heads = n_heads
        self.n_layers = n_layers
        self.d_ffn = d_ffn
        self.dropout = dropout
        self.loss = loss
        self.alpha = alpha
        self.beta = beta
        self.gamma = gamma
        self.margin = margin
        self.input_noise = input_noise
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.epochs = epochs
        self.grad_clip = grad_clip
        self.validation_fraction = validation_fraction
        self.selection = selection
        self.undersample_benign = undersample_benign
        self.flow_transforms = flow_transforms
        self.flow_hidden = flow_hidden
        self.flow_hidden_layers = flow_hidden_layers
        self.flow_lr = flow_lr
        self.flow_epochs = flow_epochs
        self.flow_batch_size = flow_batch_size
        self.flow_standardize = flow_standardize
        self.svdd_dim = svdd_dim
        self.forest_trees = forest_trees
        self.boost_iter = boost_iter
        self.knn_prototypes = knn_prototypes
        self.stack_folds = stack_folds
        self.stack_neighbours = stack_neighbours
        self.max_benign_rows = max_benign_rows
        self.score = score
        self.percentile = percentile
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.target_fpr = target_fpr
        self.coarse_threshold = coarse_threshold
        self.random_state = random_state
        self.device = device
        self.n_jobs = n_jobs
        self.verbose = verbose

    def __copy__(self) -> LatentSculpting:
        # The fitted attributes are views of ``parts_``: a shallow copy gets its own parts
        # (sharing the part objects), so that replacing a part of the copy leaves this one be,
        # as it would if the attributes were its own.
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        if "parts_" in self.__dict__:
            new.parts_ = copy.copy(self.parts_)
        return new

    def _validate_params(self) -> None:
        check_params(self.get_params(deep=False), caller=type(self).__name__)

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
        X, y, groups_arr, names = check_fit_data(X, y, groups, stage1=self.stage1)
        self.training_info_ = dict(training_info or {})
        self.n_features_in_ = X.shape[1]
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
            self._check_calibration_rows(int((y == 0).sum()))
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
            fit_rows, held_out = np.arange(len(y)), np.zeros(0, dtype=np.int64)
            if self.calibration == "holdout":
                fit_rows, held_out = holdout_split(y, self.calibration_fraction, rng)
            reference = np.zeros(0, dtype=np.int64)
            if parts.fusion.needs_reference:
                reference, held_out = reference_split(held_out, rng)

            with self._timed("preprocess"):
                parts.preprocessor = FeaturePreprocessor(
                    feature_transform=self.feature_transform, scaler=self.scaler
                ).fit(X[fit_rows])
                Z = parts.preprocessor.transform(X)
            with self._timed("stage1"):
                groups_fit = None if groups_arr is None else groups_arr[fit_rows]
                self._fit_stage1(Z[fit_rows], y[fit_rows], groups_fit, rng, events)
            benign = self._benign_sample(fit_rows[y[fit_rows] == 0], rng)
            with self._timed("side_channels"):
                rows = np.concatenate([reference, held_out])
                out_of_sample = self._fit_side_channels(Z, y, benign, rows, rng)
                if self.svdd_ is not None:
                    events.extend(self.svdd_.training_events_)
            with self._timed("stage2"):
                benign_inputs, self.history_["stage2_nll"] = parts.fit_flow(
                    Z[benign], self.get_params(deep=False), events=events
                )
                if benign_inputs is None:
                    del self.history_["stage2_nll"]

            n_ref = len(reference)
            if parts.fusion.needs_reference:
                side = {name: scores[:n_ref] for name, scores in out_of_sample.items()}
                resolution = {name: c.resolution for name, c in parts.channels.items()}
                reference_scores = parts.channel_scores(Z[reference], side)
                if parts.fusion.needs_folds:
                    with self._timed("folds"):
                        train = np.union1d(fit_rows[y[fit_rows] == 1], benign)
                        folds = pseudo_zero_day_folds(
                            parts,
                            self.get_params(deep=False),
                            Z,
                            y,
                            groups_arr,
                            fit_rows,
                            reference,
                            reference_scores,
                            train,
                        )
                    parts.fusion.fit(reference_scores, resolution, folds)
                    self.history_["fusion_weights"] = dict(parts.fusion.weights_)
                else:
                    parts.fusion.fit(reference_scores, resolution)
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

    def _check_calibration_rows(self, n_benign: int) -> None:
        """Refuse, before any fitting, a threshold that the held-out benign rows cannot set."""
        needs_reference = FUSIONS[self.score].needs_reference
        n_cal = calibration_rows(n_benign, self.calibration_fraction, needs_reference)
        halved = ", half of them for the score rule's reference" if needs_reference else ""
        check_calibration_rows(
            n_cal,
            self.target_fpr,
            coarse=self.coarse_threshold,
            what=f"{n_benign:,} benign rows x calibration_fraction {self.calibration_fraction:g}"
            + halved,
            ways_out="Hold out more (a larger calibration_fraction), bring more benign flows, "
            "aim at a larger target_fpr, ",
        )

    def _benign_sample(self, benign: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``benign``, or a sorted random sample of ``max_benign_rows`` of them when there are
        more (no draw otherwise, so that a fit below the budget is the fit without one)."""
        cap = self.max_benign_rows
        self.history_["n_benign_density"] = min(len(benign), cap or len(benign))
        if cap is None or len(benign) <= cap:
            return benign
        return np.sort(rng.choice(benign, size=cap, replace=False))

    def _fit_stage1(
        self,
        Z: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray | None,
        rng: np.random.Generator,
        events: list[dict],
    ) -> None:
        parts = self.parts_
        parts.encoder = parts.center_benign = parts.center_attack = None
        if not self.stage1:
            return
        params = {name: getattr(self, name) for name in STAGE1_PARAMETERS}
        fitted = fit_stage1(
            Z,
            y,
            groups,
            rng,
            **params,
            device=parts.device,
            fast=parts.fast,
            verbose=self.verbose,
            events=events,
        )
        parts.encoder = fitted.encoder
        parts.center_benign, parts.center_attack = fitted.center_benign, fitted.center_attack
        self.history_.update(fitted.history)

    def _fit_side_channels(
        self,
        Z: np.ndarray,
        y: np.ndarray,
        benign: np.ndarray,
        held_out: np.ndarray,
        rng: np.random.Generator,
    ) -> dict[str, np.ndarray]:
        """Fit the Deep SVDD embedding (on ``benign`` rows) and every side channel that is on;
        each channel's out-of-sample scores of the ``held_out`` rows."""
        # Seeds are drawn only for the parts in use, so that a model without them draws
        # exactly what it would draw if they did not exist.
        parts = self.parts_
        parts.svdd = None
        if self.svdd_dim > 0:
            seed = int(rng.integers(2**31))
            parts.svdd = DeepSAD(eta=0.0, rep_dim=self.svdd_dim, random_state=seed)
            parts.svdd.fit(Z[benign])
        parts.channels, scores = {}, {}
        # A benign-only channel sees the benign fitting rows (the sample, under
        # max_benign_rows) and the held-out rows it scores, as adapt refits it.
        benign_rows = np.r_[benign, held_out]
        local_held = np.arange(len(benign), len(benign_rows))
        for name in enabled_channels(self.get_params(deep=False)):
            cls = SIDE_CHANNELS[name]
            channel = cls(getattr(self, cls.parameter), random_state=int(rng.integers(2**31)))
            if channel.supervised:
                scores[name] = channel.fit(Z, y, held_out)
            else:
                scores[name] = channel.fit(Z[benign_rows], y[benign_rows], local_held)
            parts.channels[name] = channel
        return scores

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
            scores = self.parts_.channel_scores(self.parts_.preprocessor.transform(rows))
            out = {"nll": scores["nll"]} if "nll" in scores else {}
            out.update({c.column: scores[name] for name, c in self.channels_.items()})
            out["score"] = self.fusion_.combine(scores)
            if self.stage1:
                out["distance_benign"] = scores["distance_benign"]
                out["distance_attack"] = scores["distance_attack"]
                out["stage1_attack"] = out["distance_attack"] < out["distance_benign"]
            return out

        blocks = self._map_blocks(X, details)
        return {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}

    def _map_blocks(self, X: Any, score: Callable[[np.ndarray], Any], *, flow: bool = True) -> list:
        """``score`` of each :data:`~.fastpath.SCORE_BLOCK`-row block of the checked ``X``, in
        order, on :func:`~.fastpath.scoring_workers` threads when there are several blocks.
        Blocks bound scoring's working memory (float64 transforms, activations) however large
        ``X`` is. ``flow``: whether ``score`` runs the flow (its fast copy is then checked once
        here; checking it walks the flow's parameters, more than scoring one flow costs)."""
        check_is_fitted(self, "flow_")
        names = getattr(self, "feature_names_in_", None)
        arr = check_features(X, n_features=self.n_features_in_, feature_names=names)
        blocks = [arr[start : start + SCORE_BLOCK] for start in range(0, len(arr), SCORE_BLOCK)]
        if flow and self.flow_ is not None and self.parts_.fast:
            self.parts_.fast_flow()  # built once here rather than by each worker
        return map_blocks(score, blocks or [arr], scoring_workers())

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


def _view(field: str) -> property:
    """The estimator's fitted attribute ``field_``: a view of :class:`FittedParts`'s field."""

    def get(self: LatentSculpting) -> Any:
        try:
            parts = self.__dict__["parts_"]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} is not fitted: no {field}_") from None
        return getattr(parts, field)

    def set(self: LatentSculpting, value: Any) -> None:
        if "parts_" not in self.__dict__:
            self.parts_ = FittedParts()
        setattr(self.parts_, field, value)

    return property(get, set, doc=f"The fitted part ``parts_.{field}``.")


for _field in FIELDS:
    setattr(LatentSculpting, f"{_field}_", _view(_field))
del _field
