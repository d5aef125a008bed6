"""The two-stage Latent Sculpting detector as a scikit-learn / PyOD-style estimator.

Stage 1 trains an encoder on benign flows and known attacks with a sculpting loss, so that benign
codes form a dense hypersphere and attacks lie at least a margin away. Stage 2 fits a Masked
Autoregressive Flow to the codes of benign training flows. A flow is an attack when Stage 1 puts it
nearer the attack centroid, or when its negative log-likelihood under the flow exceeds a
percentile of benign scores.

References
----------
.. [1] Chhetri, Thapa, Kumar, Chen. "Latent Sculpting for Zero-Shot Generalization: A Manifold
   Learning Approach to Out-of-Distribution Anomaly Detection." arXiv:2512.22179.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.metrics import f1_score, roc_auc_score
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from .deep_sad import DeepSAD
from .encoders import build_encoder
from .fastpath import (
    FLOW_CHUNK,
    FastMAF,
    encoder_chunk,
    reference_scoring,
    run_chunked,
    scoring_threads,
)
from .flows import LatentDensity
from .forest import AttackForest
from .fusion import TailPValue, fisher
from .losses import build_loss
from .preprocessing import FeaturePreprocessor

__all__ = ["LatentSculpting", "PERCENTILES"]

#: Percentiles of benign scores at which thresholds are always computed (the paper's sweep).
PERCENTILES = (85.0, 90.0, 95.0, 97.0, 99.0)

# Scores of flows that Stage 1 already calls attacks start here, so that they rank above every
# Stage-2 score (the paper's AUROC does the same with "max Stage-2 score + 1" over the evaluated
# set; a fixed offset keeps each flow's score independent of the rest of its batch). Stage-2 NLLs
# are clipped just below it.
STAGE1_OFFSET = 1e12

# Rows preprocessed and scored at a time by decision_function and score_details.
_SCORE_BLOCK = 65_536

_SCORES = ("two_stage", "nll", "combined", "fisher")
_CALIBRATIONS = ("train", "holdout")
_SELECTIONS = ("centroid_f1", "distance_auroc", "last")


class LatentSculpting(BaseEstimator):
    """Two-stage zero-shot attack detector: latent sculpting, then MAF density [1]_.

    Parameters
    ----------
    feature_transform : {"none", "log1p", "quantile"}, default="none"
        Transform applied to the raw features before scaling.
    scaler : {"standard", "minmax", "none"}, default="standard"
    stage1 : bool, default=True
        Train the sculpting encoder. ``False`` fits the flow directly on the scaled features
        (the "Stage 2 alone" ablation, and the only choice for benign-only data).
    encoder : {"cnn_transformer", "ft_transformer", "mlp", "bias_free"}, default="cnn_transformer"
    latent_dim, d_model, n_heads, n_layers, d_ffn : int
        Encoder sizes; see :func:`latent_sculpting.encoders.build_encoder`.
    dropout : float, default=0.1
    loss : {"dual_centroid", "binary_sculpting", "cross_entropy"}, default="dual_centroid"
    alpha, beta, gamma, margin, radius : float
        Loss weights; see :mod:`latent_sculpting.losses`.
    input_noise : float, default=0.1
        Standard deviation of the Gaussian noise added to scaled inputs during Stage-1 training.
    lr, weight_decay : float
        AdamW settings of Stage 1.
    batch_size, epochs : int
        Stage-1 batch size and epochs.
    grad_clip : float, default=1.0
        Gradient-norm clip for both stages.
    validation_fraction : float, default=0.1
        Share of the Stage-1 training rows held out to pick the best epoch.
    selection : {"centroid_f1", "distance_auroc", "last"}, default="centroid_f1"
        How the best Stage-1 epoch is picked on the validation rows: the anomaly F1 of the
        nearest-centroid rule (the reference code), the AUROC of the squared distance to the
        benign centroid (what the Binary Latent Sculpting loss optimises), or the last epoch.
    undersample_benign : bool, default=True
        Undersample benign rows for Stage 1 to the size of the largest attack class (all benign
        training rows still go to Stage 2).
    flow_transforms, flow_hidden, flow_hidden_layers : int
        MAF size: MADE transforms, hidden width, hidden layers per MADE.
    flow_lr : float, default=5e-4
    flow_epochs, flow_batch_size : int
    flow_standardize : bool, default=False
        Standardise the flow's input (mean and std of the benign training inputs). Sculpted
        codes have very unequal scales, attack directions pushed to the margin and benign ones
        packed tight; the MAF's standard-normal base fits them in fewer epochs once scaled. The
        paper's code feeds the raw codes.
    svdd_dim : int, default=0
        Width of a benign-only Deep SVDD embedding (:class:`~latent_sculpting.deep_sad.DeepSAD`
        with ``eta=0``) appended to the latent code as the flow's input; 0 for none. Stage 1
        keeps the directions that separate benign flows from the *known* attacks and squeezes
        the rest; this channel keeps what it squeezed (docs/presets.md).
    forest_trees : int, default=0
        Trees of the random forest (:class:`~latent_sculpting.forest.AttackForest`) that
        ``score="fisher"`` trains on the scaled features against the known attacks and fuses
        with the flow; ignored by the other scores.
    score : {"two_stage", "nll", "combined", "fisher"}, default="two_stage"
        ``"two_stage"`` is the paper's rule: Stage-1 attacks rank above every flow-scored row.
        ``"nll"`` uses the flow alone. ``"combined"`` adds the standardised NLL and the
        standardised squared distance to the benign centroid, both measured on benign training
        codes. ``"fisher"`` turns the flow's NLL and the forest's attack probability into
        p-values against held-out benign *reference* flows and adds their ``-log``
        (:mod:`~latent_sculpting.fusion`); it needs ``forest_trees > 0`` and
        ``calibration="holdout"``, whose held-out rows are then split in halves, one for the
        reference and one for the threshold.
    percentile : float, default=95.0
        Percentile of benign calibration scores used as ``threshold_``.
    calibration : {"train", "holdout"}, default="train"
        ``"train"`` sets thresholds on benign training codes (the paper). ``"holdout"`` keeps
        ``calibration_fraction`` of the benign rows out of both stages and sets thresholds and
        conformal p-values on them.
    calibration_fraction : float, default=0.2
    target_fpr : float or None, default=None
        If given, ``threshold_`` is the split-conformal threshold whose false-positive rate on
        exchangeable benign flows is at most ``target_fpr``; overrides ``percentile``.
    random_state : int or None, default=None
    device : str, default="auto"
        ``"auto"`` takes CUDA when available.
    verbose : bool, default=False
        Show progress bars.

    Attributes
    ----------
    preprocessor_ : FeaturePreprocessor
    encoder_ : torch.nn.Module or None
    flow_ : LatentDensity
    flow_scaler_ : FeaturePreprocessor or None
        The flow input's standardisation (``flow_standardize=True``).
    svdd_ : DeepSAD or None
        The benign-only embedding appended to the codes (``svdd_dim > 0``).
    forest_ : AttackForest or None
    tails_ : dict of str to TailPValue
        For ``score="fisher"``: the p-value model of each channel (``"nll"``, ``"forest"``).
    center_benign_, center_attack_ : torch.Tensor or None
        Stage-1 centroids, from the Stage-1 training rows.
    thresholds_ : dict of float to float
        Threshold at each percentile of :data:`PERCENTILES` (and ``percentile``).
    threshold_ : float
    calibration_scores_ : numpy.ndarray
        Sorted benign calibration scores behind thresholds and p-values.
    score_stats_ : dict
        Means and standard deviations used by ``score="combined"``.
    n_features_in_ : int
    feature_names_in_ : numpy.ndarray, optional
    history_ : dict
        Per-epoch losses and validation F1, best epoch, and seconds per stage.

    Examples
    --------
    >>> from latent_sculpting import LatentSculpting, preset
    >>> model = LatentSculpting(**preset("fast"), random_state=0)  # doctest: +SKIP
    >>> model.fit(X_train, y_train).decision_function(X_test)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        feature_transform: str = "none",
        scaler: str = "standard",
        stage1: bool = True,
        encoder: str = "cnn_transformer",
        latent_dim: int = 32,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 3,
        d_ffn: int = 256,
        dropout: float = 0.1,
        loss: str = "dual_centroid",
        alpha: float = 0.1,
        beta: float = 0.1,
        gamma: float = 1.0,
        margin: float = 5.0,
        radius: float = 0.0,
        input_noise: float = 0.1,
        lr: float = 3e-4,
        weight_decay: float = 1e-2,
        batch_size: int = 512,
        epochs: int = 10,
        grad_clip: float = 1.0,
        validation_fraction: float = 0.1,
        selection: str = "centroid_f1",
        undersample_benign: bool = True,
        flow_transforms: int = 16,
        flow_hidden: int = 512,
        flow_hidden_layers: int = 1,
        flow_lr: float = 5e-4,
        flow_epochs: int = 10,
        flow_batch_size: int = 512,
        flow_standardize: bool = False,
        svdd_dim: int = 0,
        forest_trees: int = 0,
        score: str = "two_stage",
        percentile: float = 95.0,
        calibration: str = "train",
        calibration_fraction: float = 0.2,
        target_fpr: float | None = None,
        random_state: int | None = None,
        device: str = "auto",
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
        self.radius = radius
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
        self.score = score
        self.percentile = percentile
        self.calibration = calibration
        self.calibration_fraction = calibration_fraction
        self.target_fpr = target_fpr
        self.random_state = random_state
        self.device = device
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting

    def fit(self, X: Any, y: Any = None, *, groups: Sequence[str] | None = None) -> LatentSculpting:
        """Fit both stages.

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

        Returns
        -------
        self
        """
        self._validate_params()
        X = self._check_X(X, fitting=True)
        y = self._check_y(y, len(X))
        groups_arr = None if groups is None else np.asarray(groups).astype(str)
        if groups_arr is not None and len(groups_arr) != len(X):
            raise ValueError(f"groups has {len(groups_arr)} entries but X has {len(X)} rows")
        self.device_ = _resolve_device(self.device)
        rng = np.random.default_rng(self.random_state)
        self.history_ = {"seconds": {}}

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(2**31)))
            fit_index, cal_index = self._calibration_split(y, rng)
            ref_index = None
            if self.score == "fisher":
                # Half the held-out benign rows place each channel's p-values, half set the
                # threshold: the threshold then stays a valid conformal one.
                held_out = rng.permutation(cal_index)
                half = len(held_out) // 2
                ref_index, cal_index = np.sort(held_out[:half]), np.sort(held_out[half:])

            start = time.perf_counter()
            self.preprocessor_ = FeaturePreprocessor(
                feature_transform=self.feature_transform, scaler=self.scaler
            ).fit(X[fit_index])
            Z = self.preprocessor_.transform(X)
            self.history_["seconds"]["preprocess"] = time.perf_counter() - start

            start = time.perf_counter()
            if self.stage1:
                self._fit_stage1(
                    Z[fit_index],
                    y[fit_index],
                    None if groups_arr is None else groups_arr[fit_index],
                    rng,
                )
            else:
                self.encoder_ = None
                self.center_benign_ = self.center_attack_ = None
            self.history_["seconds"]["stage1"] = time.perf_counter() - start

            start = time.perf_counter()
            benign = fit_index[y[fit_index] == 0]
            oob = self._fit_side_channels(Z, y, benign, rng)
            self.history_["seconds"]["side_channels"] = time.perf_counter() - start

            start = time.perf_counter()
            codes = self._encode(Z[benign])
            self.flow_scaler_ = None
            inputs = self._flow_input(Z[benign], codes)
            if self.flow_standardize:
                self.flow_scaler_ = FeaturePreprocessor(scaler="standard").fit(inputs)
                inputs = self.flow_scaler_.transform(inputs)
            self._fit_stage2(inputs)
            self.history_["seconds"]["stage2"] = time.perf_counter() - start

            self.tails_ = {}
            if ref_index is not None:
                ref = self._channels(Z[ref_index], score=False, forest=oob[ref_index])
                self.tails_ = {
                    "nll": TailPValue().fit(ref["nll"]),
                    "forest": TailPValue(min_scale=1 / self.forest_trees).fit(
                        ref["forest_probability"]
                    ),
                }
            self._calibrate(
                codes,
                inputs,
                Z[cal_index] if cal_index is not None else None,
                None if oob is None else oob[cal_index],
            )
        return self

    def _fit_side_channels(
        self, Z: np.ndarray, y: np.ndarray, benign: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray | None:
        """Fit the Deep SVDD embedding (on ``benign`` rows) and the forest (on every row).

        Returns the forest's out-of-bag probability of every row (None without a forest).
        Benign rows are the forest's minority class (a few thousand against tens of thousands
        of attacks here), so it also learns from the held-out benign rows; their scores for
        the tails and the threshold are out-of-bag votes, of trees that never saw them, as in
        the jackknife+-after-bootstrap (Kim, Xu and Barber, NeurIPS 2020).
        """
        # Seeds are drawn only for the channels in use, so that presets without them draw
        # exactly what they drew before these channels existed.
        self.svdd_ = self.forest_ = None
        if self.svdd_dim > 0:
            seed = int(rng.integers(2**31))
            self.svdd_ = DeepSAD(eta=0.0, rep_dim=self.svdd_dim, random_state=seed)
            self.svdd_.fit(Z[benign])
        if self.score != "fisher":
            return None
        seed = int(rng.integers(2**31))
        self.forest_ = AttackForest(self.forest_trees, random_state=seed).fit(Z, y)
        oob = self.forest_.oob_proba_
        del self.forest_.oob_proba_  # fit-time only
        # A row in every bootstrap sample has no out-of-bag vote (about 0.37**trees of rows).
        missing = ~np.isfinite(oob)
        if missing.any():
            oob[missing] = self.forest_.predict_proba(Z[missing])
        return oob

    def _validate_params(self) -> None:
        choices = {"score": _SCORES, "calibration": _CALIBRATIONS, "selection": _SELECTIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.score == "two_stage" and not self.stage1:
            raise ValueError("score='two_stage' needs stage1=True; use score='nll'")
        if self.score == "combined" and not self.stage1:
            raise ValueError("score='combined' needs stage1=True; use score='nll'")
        if self.score == "fisher" and self.forest_trees < 1:
            raise ValueError(f"score='fisher' needs forest_trees >= 1, got {self.forest_trees}")
        if self.score == "fisher" and self.calibration != "holdout":
            raise ValueError("score='fisher' needs calibration='holdout' for its reference rows")
        for name in ("svdd_dim", "forest_trees"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.percentile < 100:
            raise ValueError(f"percentile must be in (0, 100), got {self.percentile}")
        if self.target_fpr is not None and not 0 < self.target_fpr < 1:
            raise ValueError(f"target_fpr must be in (0, 1), got {self.target_fpr}")
        for name in ("validation_fraction", "calibration_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        for name in ("epochs", "flow_epochs", "batch_size", "flow_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")

    def _check_y(self, y: Any, n: int) -> np.ndarray:
        if y is None:
            y = np.zeros(n, dtype=np.int64)
        y = np.asarray(y)
        if y.ndim != 1 or len(y) != n:
            raise ValueError(f"y must be 1-D with {n} entries (one per row of X), got {y.shape}")
        values = set(np.unique(y).tolist())
        if not values <= {0, 1}:
            raise ValueError(
                f"y must hold 0 (benign) and 1 (attack) only, found {sorted(values, key=str)}"
            )
        if 0 not in values:
            raise ValueError("y has no benign rows (0): Stage 2 needs benign flows to fit")
        if self.stage1 and values == {0}:
            raise ValueError(
                "y has only one class (benign): Stage 1 needs known attacks (1); "
                "pass stage1=False (and score='nll') for a benign-only model"
            )
        return y.astype(np.int64)

    def _calibration_split(
        self, y: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray | None]:
        index = np.arange(len(y))
        if self.calibration == "train":
            return index, None
        benign = rng.permutation(index[y == 0])
        n_cal = int(round(self.calibration_fraction * len(benign)))
        if n_cal < 20 or n_cal == len(benign):
            raise ValueError(
                f"calibration='holdout' needs at least 20 held-out benign rows; "
                f"{len(benign)} benign rows x calibration_fraction={self.calibration_fraction} "
                f"gives {n_cal}"
            )
        cal = np.sort(benign[:n_cal])
        return np.setdiff1d(index, cal), cal

    def _fit_stage1(
        self, Z: np.ndarray, y: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator
    ) -> None:
        rows = _undersample(y, groups, rng) if self.undersample_benign else np.arange(len(y))
        rows = rng.permutation(rows)
        n_val = max(2, int(round(self.validation_fraction * len(rows))))
        val, train = _stratified_head(rows, y, n_val, rng)
        if (y[train] == 1).sum() == 0 or (y[train] == 0).sum() == 0:
            raise ValueError("Stage 1 needs benign and attack rows after the validation split")

        n_features = Z.shape[1]
        self.encoder_ = build_encoder(
            self.encoder,
            n_features,
            latent_dim=self.latent_dim,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ffn=self.d_ffn,
            dropout=self.dropout,
        ).to(self.device_)
        criterion = build_loss(
            self.loss,
            latent_dim=self.latent_dim,
            alpha=self.alpha,
            beta=self.beta,
            gamma=self.gamma,
            margin=self.margin,
            radius=self.radius,
        ).to(self.device_)
        params = [*self.encoder_.parameters(), *criterion.parameters()]
        optimizer = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        steps = self.epochs * math.ceil(len(train) / self.batch_size)
        # NOTE[DIFF]: the reference code builds CosineAnnealingLR with T_max in steps but steps
        # it once per epoch, so its learning rate barely decays; we step per batch, as intended.
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)

        X_train = torch.as_tensor(Z[train], device=self.device_)
        y_train = torch.as_tensor(y[train], device=self.device_)
        X_val, y_val = torch.as_tensor(Z[val], device=self.device_), y[val]
        generator = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**31)))

        best_quality, best_state, best_epoch = -math.inf, None, 0
        losses, val_f1s = [], []
        bar = tqdm(
            range(self.epochs),
            desc="stage 1 (encoder)",
            disable=not self.verbose,
            unit="epoch",
            leave=False,
        )
        for epoch in bar:
            self.encoder_.train()
            total, batches = 0.0, 0
            order = torch.randperm(len(train), generator=generator).to(self.device_)
            for batch in order.split(self.batch_size):
                if len(batch) < 2:
                    continue  # batch norm (bias_free encoder) needs two rows
                xb = X_train[batch]
                if self.input_noise > 0:
                    noise = torch.randn(xb.shape, generator=generator).to(self.device_)
                    xb = xb + self.input_noise * noise
                loss = criterion(self.encoder_(xb), y_train[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
                optimizer.step()
                schedule.step()
                total, batches = total + loss.item(), batches + 1
            losses.append(total / batches)

            self._set_centroids(X_train, y_train)
            val_codes = self._encode_tensor(X_val)
            f1 = f1_score(y_val, self._stage1_attack(val_codes).cpu().numpy(), zero_division=0)
            val_f1s.append(float(f1))
            if self.selection == "centroid_f1":
                quality = f1
            elif self.selection == "distance_auroc":
                distance = _sqdist(val_codes, self.center_benign_).cpu().numpy()
                quality = roc_auc_score(y_val, distance)
            else:
                quality = epoch  # "last": every epoch beats the one before
            if quality > best_quality:
                best_quality, best_epoch = quality, epoch + 1
                best_state = copy.deepcopy(self.encoder_.state_dict())
            bar.set_postfix(loss=f"{losses[-1]:.4f}", val_f1=f"{f1:.4f}")
        bar.close()

        self.encoder_.load_state_dict(best_state)
        self.encoder_.eval()
        self._set_centroids(X_train, y_train)
        self.history_.update(
            stage1_loss=losses,
            stage1_val_f1=val_f1s,
            best_epoch=best_epoch,
            n_stage1_train=int(len(train)),
            n_stage1_val=int(len(val)),
        )

    def _set_centroids(self, X: torch.Tensor, y: torch.Tensor) -> None:
        codes = self._encode_tensor(X)
        self.center_benign_ = codes[y == 0].mean(dim=0)
        self.center_attack_ = codes[y == 1].mean(dim=0)

    def _fit_stage2(self, codes: np.ndarray) -> None:
        self.flow_ = LatentDensity(
            codes.shape[1],
            transforms=self.flow_transforms,
            hidden_features=self.flow_hidden,
            hidden_layers=self.flow_hidden_layers,
        ).to(self.device_)
        optimizer = torch.optim.Adam(self.flow_.parameters(), lr=self.flow_lr)
        data = torch.as_tensor(codes, device=self.device_)
        generator = torch.Generator(device="cpu").manual_seed(int(torch.randint(2**31, ())))
        losses = []
        bar = tqdm(
            range(self.flow_epochs),
            desc="stage 2 (flow)",
            disable=not self.verbose,
            unit="epoch",
            leave=False,
        )
        for _ in bar:
            self.flow_.train()
            total, batches = 0.0, 0
            order = torch.randperm(len(data), generator=generator).to(self.device_)
            for batch in order.split(self.flow_batch_size):
                loss = self.flow_(data[batch]).mean()
                if not torch.isfinite(loss):
                    continue  # a diverging batch is skipped, as in the reference code
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.flow_.parameters(), self.grad_clip)
                optimizer.step()
                total, batches = total + loss.item(), batches + 1
            losses.append(total / max(batches, 1))
            bar.set_postfix(nll=f"{losses[-1]:.3f}")
        bar.close()
        self.flow_.eval()
        self.history_["stage2_nll"] = losses

    def _calibrate(
        self,
        benign_codes: np.ndarray,
        benign_inputs: np.ndarray,
        Z_cal: np.ndarray | None,
        cal_forest: np.ndarray | None = None,
    ) -> None:
        # Thresholds from the held-out rows Z_cal, or, without them, from the benign training
        # rows, whose codes and flow inputs fit has already computed.
        nll = self._nll(benign_inputs)
        dist = self._benign_distance(benign_codes)
        self.score_stats_ = {
            "nll_mean": float(nll.mean()),
            "nll_std": float(nll.std() + 1e-12),
            "dist_mean": float(dist.mean()),
            "dist_std": float(dist.std() + 1e-12),
        }
        if Z_cal is None:
            # The paper: percentiles of the NLL of the benign codes the flow was trained on.
            cal = nll if self.score != "combined" else self._score(benign_codes, {"nll": nll})
        else:
            cal = self._channels(Z_cal, forest=cal_forest)["score"]
        self.calibration_scores_ = np.sort(cal.astype(np.float64))
        percentiles = sorted({*PERCENTILES, float(self.percentile)})
        self.thresholds_ = {
            p: float(np.percentile(self.calibration_scores_, p)) for p in percentiles
        }
        if self.target_fpr is None:
            self.threshold_ = self.thresholds_[float(self.percentile)]
        else:
            self.threshold_ = conformal_threshold(self.calibration_scores_, self.target_fpr)

    # ------------------------------------------------------------------ scoring

    def decision_function(self, X: Any) -> np.ndarray:
        """Anomaly score of each flow; higher is more anomalous.

        With ``score="two_stage"`` a flow that Stage 1 calls an attack scores
        ``STAGE1_OFFSET`` plus its margin (distance to the benign centroid minus distance to the
        attack centroid), above every Stage-2 NLL.
        """
        parts = [self._channels(Z)["score"] for Z in self._transform_blocks(X)]
        return np.concatenate(parts)

    def predict(self, X: Any) -> np.ndarray:
        """1 for an attack, 0 for benign, at ``threshold_``."""
        return (self.decision_function(X) > self.threshold_).astype(np.int64)

    def p_values(self, X: Any) -> np.ndarray:
        """Split-conformal p-values: the share of benign calibration scores at least as high.

        ``(1 + #{calibration scores >= s}) / (n + 1)``; valid p-values when
        ``calibration="holdout"`` and the flow is exchangeable with the held-out benign rows.
        """
        scores = self.decision_function(X)
        return conformal_p_values(self.calibration_scores_, scores)

    def transform(self, X: Any) -> np.ndarray:
        """Latent codes of ``X`` (the scaled features when ``stage1=False``)."""
        return self._encode(self._transform(X))

    def score_details(self, X: Any) -> dict[str, np.ndarray]:
        """Everything behind the score: NLL, forest probability, distances, verdicts, score."""
        blocks = []
        for Z in self._transform_blocks(X):
            out = self._channels(Z)
            codes = out.pop("codes")
            if self.stage1:
                t = torch.as_tensor(codes, device=self.device_)
                out["distance_benign"] = _sqdist(t, self.center_benign_).cpu().numpy()
                out["distance_attack"] = _sqdist(t, self.center_attack_).cpu().numpy()
                out["stage1_attack"] = out["distance_attack"] < out["distance_benign"]
            blocks.append(out)
        return {key: np.concatenate([b[key] for b in blocks]) for key in blocks[0]}

    def _channels(
        self, Z: np.ndarray, *, score: bool = True, forest: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Codes, flow NLL, forest probability (with a forest) and score of scaled rows ``Z``.

        ``forest`` replaces the forest's probabilities (its out-of-bag votes while fitting).
        """
        codes = self._encode(Z)
        out = {"codes": codes, "nll": self._nll(self._flow_input(Z, codes))}
        if forest is not None:
            out["forest_probability"] = forest
        elif getattr(self, "forest_", None) is not None:
            out["forest_probability"] = self.forest_.predict_proba(Z)
        if score:
            out["score"] = self._score(codes, out)
        return out

    def _flow_input(self, Z: np.ndarray, codes: np.ndarray) -> np.ndarray:
        if getattr(self, "svdd_", None) is not None:
            codes = np.hstack([codes, self.svdd_.transform(Z)])
        if getattr(self, "flow_scaler_", None) is not None:
            codes = self.flow_scaler_.transform(codes)
        return codes

    def _score(self, codes: np.ndarray, channels: dict[str, np.ndarray]) -> np.ndarray:
        nll = np.minimum(channels["nll"], STAGE1_OFFSET / 2)
        if self.score == "nll":
            return nll
        if self.score == "fisher":
            return fisher(
                [
                    self.tails_["nll"].neg_log_p(nll),
                    self.tails_["forest"].neg_log_p(channels["forest_probability"]),
                ]
            )
        if self.score == "combined":
            s = self.score_stats_
            dist = self._benign_distance(codes)
            return (nll - s["nll_mean"]) / s["nll_std"] + (dist - s["dist_mean"]) / s["dist_std"]
        t = torch.as_tensor(codes, device=self.device_)
        d_b = _sqdist(t, self.center_benign_).cpu().numpy().astype(np.float64)
        d_a = _sqdist(t, self.center_attack_).cpu().numpy().astype(np.float64)
        return np.where(d_a < d_b, STAGE1_OFFSET + (d_b - d_a), nll)

    def _benign_distance(self, codes: np.ndarray) -> np.ndarray:
        if not self.stage1:
            return np.zeros(len(codes))
        t = torch.as_tensor(codes, device=self.device_)
        return _sqdist(t, self.center_benign_).cpu().numpy().astype(np.float64)

    def _stage1_attack(self, codes: torch.Tensor) -> torch.Tensor:
        return _sqdist(codes, self.center_attack_) < _sqdist(codes, self.center_benign_)

    def _transform(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "flow_")
        return self.preprocessor_.transform(self._check_X(X, fitting=False))

    def _transform_blocks(self, X: Any) -> Iterator[np.ndarray]:
        # Scaled features of _SCORE_BLOCK rows at a time, so that scoring's working memory
        # (float64 transforms, activations, codes) stays bounded however large X is.
        check_is_fitted(self, "flow_")
        arr = self._check_X(X, fitting=False)
        for start in range(0, max(len(arr), 1), _SCORE_BLOCK):
            yield self.preprocessor_.transform(arr[start : start + _SCORE_BLOCK])

    def _use_fastpath(self) -> bool:
        return not (getattr(self, "_reference_scoring", False) or reference_scoring())

    @torch.inference_mode()
    def _encode_tensor(self, X: torch.Tensor, batch: int = 8192) -> torch.Tensor:
        if self.encoder_ is None:
            return X
        self.encoder_.eval()
        if self._use_fastpath():
            with scoring_threads():
                return run_chunked(self.encoder_, X, encoder_chunk(self.encoder_))
        return torch.cat([self.encoder_(part) for part in X.split(batch)])

    def _encode(self, Z: np.ndarray) -> np.ndarray:
        if not self.stage1:
            return np.ascontiguousarray(Z, dtype=np.float32)
        codes = self._encode_tensor(torch.as_tensor(Z, device=self.device_))
        return codes.float().cpu().numpy()

    @torch.inference_mode()
    def _nll(self, codes: np.ndarray, batch: int = 8192) -> np.ndarray:
        t = torch.as_tensor(codes, device=self.device_)
        if self._use_fastpath():
            with scoring_threads():
                nll = run_chunked(self._fast_flow(), t, FLOW_CHUNK).double().cpu().numpy()
        else:
            nll = torch.cat([self.flow_(part) for part in t.split(batch)]).double().cpu().numpy()
        # A code far outside the benign manifold can overflow to +inf; it is maximally anomalous.
        return np.nan_to_num(nll, nan=STAGE1_OFFSET / 2, posinf=STAGE1_OFFSET / 2)

    def _fast_flow(self) -> FastMAF:
        # FastMAF copies the masked weights, so rebuild it when the flow is replaced or its
        # parameters change in place (training, load_state_dict bump their version counters).
        key = (id(self.flow_), tuple(p._version for p in self.flow_.parameters()))
        cached = getattr(self, "_fast_flow_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, FastMAF(self.flow_.maf).to(self.device_))
            self._fast_flow_cache = cached
        return cached[1]

    def _check_X(self, X: Any, *, fitting: bool) -> np.ndarray:
        columns = getattr(X, "columns", None)
        if columns is not None:
            names = np.asarray([str(c) for c in columns], dtype=object)
            if fitting:
                self.feature_names_in_ = names
            elif hasattr(self, "feature_names_in_"):
                missing = [c for c in self.feature_names_in_ if c not in set(names)]
                if missing:
                    raise ValueError(
                        f"X is missing {len(missing)} feature column(s) the model was fitted "
                        f"on: {missing[:10]}"
                    )
                X = X[list(self.feature_names_in_)]
        elif fitting and hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        try:
            arr = np.asarray(X, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise ValueError(f"X must be numeric: {error}") from None
        if arr.ndim != 2:
            raise ValueError(f"X must be 2-D (rows x features), got shape {arr.shape}")
        if fitting:
            if len(arr) == 0:
                raise ValueError("X has no rows")
            self.n_features_in_ = arr.shape[1]
        elif arr.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {arr.shape[1]} features, but the model was fitted on {self.n_features_in_}"
            )
        bad = ~np.isfinite(arr)
        if bad.any():
            rows, cols = np.nonzero(bad)
            raise ValueError(
                f"X has {bad.sum()} NaN or infinite value(s), first at row {rows[0]}, "
                f"column {cols[0]}; clean them first (latent_sculpting.data replaces them by 0)"
            )
        return arr

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | Path) -> Path:
        """Write the fitted model to one safetensors file (atomically); see :mod:`.persistence`."""
        from .persistence import save_model

        return save_model(self, path)

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> LatentSculpting:
        """Load a model written by :meth:`save`; never unpickles anything."""
        from .persistence import load_model

        return load_model(path, device=device)


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


def _sqdist(codes: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    return (codes - center).pow(2).sum(dim=1)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _undersample(y: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Rows for Stage 1: all attacks, benign cut to the size of the largest attack class."""
    attack = np.flatnonzero(y == 1)
    benign = np.flatnonzero(y == 0)
    if groups is None:
        largest = len(attack)
    else:
        _, counts = np.unique(groups[attack], return_counts=True)
        largest = int(counts.max())
    keep = rng.choice(benign, size=min(largest, len(benign)), replace=False)
    return np.sort(np.concatenate([attack, keep]))


def _stratified_head(
    rows: np.ndarray, y: np.ndarray, n_head: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split shuffled ``rows`` into a head of about ``n_head`` rows and the rest, keeping the
    benign/attack ratio in both."""
    head = []
    for label in (0, 1):
        members = rows[y[rows] == label]
        take = max(1, int(round(n_head * len(members) / len(rows))))
        head.append(members[:take])
    head_rows = np.concatenate(head)
    return rng.permutation(head_rows), rows[~np.isin(rows, head_rows)]
