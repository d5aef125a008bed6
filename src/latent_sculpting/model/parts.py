"""The fitted parts of a detector, and the public methods every user of them calls.

:class:`~latent_sculpting.model.estimator.LatentSculpting` fits the parts in order, through the
fitting methods below, and owns their random draws (each method draws from the generator it is
given); :class:`FittedParts` holds what it fitted and is what scoring, adaptation
(:mod:`latent_sculpting.model.adapt`) and the pseudo-zero-day folds
(:mod:`latent_sculpting.model.folds`) work on, through the methods below and never through a
private method of the estimator. The estimator's fitted attributes (``preprocessor_``,
``flow_``, ``channels_``, ``threshold_``, ...) are views of the fields here.

Each part validates its own state when it is built from a model file
(``from_state``); :mod:`latent_sculpting.model.persistence` loops over them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from latent_sculpting.model.calibration import thresholds
from latent_sculpting.model.channels.deep_sad import DeepSAD
from latent_sculpting.model.channels.registry import SIDE_CHANNELS, enabled_channels
from latent_sculpting.model.density.fastpath import (
    SCORE_BLOCK,
    FastMAF,
    encode,
    map_blocks,
    reference_scoring,
    scoring_workers,
)
from latent_sculpting.model.density.train import (
    STAGE2_PARAMETERS,
    fine_tune_blocked,
    fit_flow,
    flow_inputs,
    negative_log_likelihood,
)
from latent_sculpting.model.preprocessing import FeaturePreprocessor
from latent_sculpting.model.stage1.train import STAGE1_PARAMETERS, fit_stage1, sqdist
from latent_sculpting.monitor.drift import DriftReference
from latent_sculpting.monitor.profile import BenignProfile, spec_categorical

__all__ = ["FIELDS", "FittedParts", "fitted_attribute"]


@dataclass(eq=False)
class FittedParts:
    """Everything a fitted detector scores with.

    Attributes
    ----------
    preprocessor : FeaturePreprocessor
        Raw features to the scaled rows every other part reads.
    encoder : torch.nn.Module or None
        The Stage-1 encoder; None when the flow reads the scaled features.
    center_benign, center_attack : torch.Tensor or None
        The Stage-1 centroids, from the Stage-1 training rows.
    svdd : DeepSAD or None
        The benign-only embedding beside the codes (``svdd_dim > 0``).
    flow_scaler : FeaturePreprocessor or None
        The flow input's standardisation (``flow_standardize=True``).
    flow : LatentDensity or None
        The Stage-2 density; None for a model without a flow (``flow_transforms=0``).
    channels : dict of str to side channel
        The side channels that are on (``"forest"``, ``"boost"``, ...), by name.
    fusion : Fusion
        The fitted score rule (for ``"fisher"``, the tails of each channel).
    calibration_scores : numpy.ndarray
        Sorted benign calibration scores behind the thresholds and p-values.
    thresholds : dict of float to float
        Threshold at each percentile of
        :data:`~latent_sculpting.model.calibration.PERCENTILES` (and ``percentile``).
    threshold : float
        The threshold in use.
    drift_reference, benign_profile : DriftReference, BenignProfile or None
        The benign training traffic, feature by feature (drift; explanations).
    device : torch.device
    reference_path : bool
        Score through the plain PyTorch modules instead of the fast path (benchmarks and
        tests compare the two).
    """

    preprocessor: FeaturePreprocessor | None = None
    encoder: torch.nn.Module | None = None
    center_benign: torch.Tensor | None = None
    center_attack: torch.Tensor | None = None
    svdd: Any = None
    flow_scaler: FeaturePreprocessor | None = None
    flow: Any = None
    channels: dict[str, Any] = field(default_factory=dict)
    fusion: Any = None
    calibration_scores: np.ndarray | None = None
    thresholds: dict[float, float] = field(default_factory=dict)
    threshold: float = float("nan")
    drift_reference: DriftReference | None = None
    benign_profile: BenignProfile | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    reference_path: bool = False
    _fast_flow_cache: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ scoring

    @property
    def fast(self) -> bool:
        """Whether scoring takes the fast path (:mod:`~latent_sculpting.model.density.fastpath`)."""
        return not (self.reference_path or reference_scoring())

    def encode(self, Z: np.ndarray) -> np.ndarray:
        """Latent codes of scaled rows (the rows themselves, float32, without an encoder)."""
        if self.encoder is None:
            return np.ascontiguousarray(Z, dtype=np.float32)
        codes = encode(self.encoder, torch.as_tensor(Z, device=self.device), fast=self.fast)
        return codes.float().cpu().numpy()

    def flow_inputs(self, Z: np.ndarray) -> np.ndarray:
        """The flow's inputs of scaled rows: the code, the Deep SVDD embedding when there is
        one, through the flow's scaler."""
        embedding = None if self.svdd is None else self.svdd.transform(Z)
        return flow_inputs(self.encode(Z), embedding, self.flow_scaler)

    def nll(self, inputs: np.ndarray) -> np.ndarray:
        """The flow's negative log-likelihood of flow inputs (float64, capped)."""
        fast_flow = self.fast_flow() if self.fast else None
        return negative_log_likelihood(self.flow, inputs, device=self.device, fast_flow=fast_flow)

    def fast_flow(self) -> FastMAF:
        """The flow's fast copy, rebuilt when the flow is replaced or its weights change."""
        # FastMAF copies the masked weights, so rebuild it when the flow is replaced or its
        # parameters change in place (training, load_state_dict bump their version counters).
        key = (id(self.flow), tuple(p._version for p in self.flow.parameters()))
        if self._fast_flow_cache is None or self._fast_flow_cache[0] != key:
            self._fast_flow_cache = (key, FastMAF(self.flow.maf).to(self.device))
        return self._fast_flow_cache[1]

    def channel_scores(
        self,
        Z: np.ndarray,
        side: Mapping[str, np.ndarray] | None = None,
        *,
        only: Collection[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Every channel's scores of scaled rows ``Z``, by name (those in ``only``, when
        given); ``side`` replaces the side channels' (their out-of-sample scores while
        fitting)."""
        scores = {}
        wanted = {"nll", "distance_benign", "distance_attack"}
        if self.flow is not None and (only is None or not wanted.isdisjoint(only)):
            codes = self.encode(Z)
            embedding = None if self.svdd is None else self.svdd.transform(Z)
            scores["nll"] = self.nll(flow_inputs(codes, embedding, self.flow_scaler))
            if self.encoder is not None:
                t = torch.as_tensor(codes, device=self.device)
                scores["distance_benign"] = sqdist(t, self.center_benign).cpu().numpy()
                scores["distance_attack"] = sqdist(t, self.center_attack).cpu().numpy()
        for name, channel in self.channels.items():
            if only is None or name in only:
                scores[name] = channel.score(Z) if side is None else side[name]
        return scores

    def score(self, Z: np.ndarray) -> np.ndarray:
        """The detector's score of scaled rows: the fusion of the channels it reads."""
        return self.fusion.combine(self.channel_scores(Z, only=self.fusion.channels_read()))

    def score_details(self, Z: np.ndarray, *, stage1: bool) -> dict[str, np.ndarray]:
        """Everything behind the score of scaled rows: the flow's NLL (when there is a flow),
        each side channel's score (by its column, e.g. ``forest_probability``), the score, and
        with ``stage1`` the distances to the centroids and its verdict ``stage1_attack``."""
        scores = self.channel_scores(Z)
        out = {"nll": scores["nll"]} if "nll" in scores else {}
        out.update({c.column: scores[name] for name, c in self.channels.items()})
        out["score"] = self.fusion.combine(scores)
        if stage1:
            out["distance_benign"] = scores["distance_benign"]
            out["distance_attack"] = scores["distance_attack"]
            out["stage1_attack"] = out["distance_attack"] < out["distance_benign"]
        return out

    def map_blocks(
        self, X: np.ndarray, score: Callable[[np.ndarray], Any], *, flow: bool = True
    ) -> list:
        """``score`` of each :data:`~.fastpath.SCORE_BLOCK`-row block of checked rows ``X``, in
        order, on :func:`~.fastpath.scoring_workers` threads when there are several blocks.
        Blocks bound scoring's working memory (float64 transforms, activations) however large
        ``X`` is. ``flow``: whether ``score`` runs the flow (its fast copy is then checked once
        here; checking it walks the flow's parameters, more than scoring one flow costs)."""
        blocks = [X[start : start + SCORE_BLOCK] for start in range(0, len(X), SCORE_BLOCK)]
        if flow and self.flow is not None and self.fast:
            self.fast_flow()  # built once here rather than by each worker
        return map_blocks(score, blocks or [X], scoring_workers())

    # ------------------------------------------------------------------ fitting
    # ``params`` are the estimator's parameters (``get_params``); ``rng`` is the estimator's
    # generator, from which each method draws in a fixed order, so a fit is the same bits
    # whoever calls it.

    def fit_stage1(
        self,
        Z: np.ndarray,
        y: np.ndarray,
        groups: np.ndarray | None,
        rng: np.random.Generator,
        params: Mapping[str, Any],
        *,
        events: list[dict] | None = None,
    ) -> dict[str, Any]:
        """Fit the Stage-1 encoder and its centroids on scaled rows (none without
        ``params["stage1"]``); the training history (:func:`~.stage1.train.fit_stage1`).
        ``events`` receives the training loop's reports."""
        self.encoder = self.center_benign = self.center_attack = None
        if not params["stage1"]:
            return {}
        fitted = fit_stage1(
            Z,
            y,
            groups,
            rng,
            **{name: params[name] for name in STAGE1_PARAMETERS},
            device=self.device,
            fast=self.fast,
            verbose=params["verbose"],
            events=events,
        )
        self.encoder = fitted.encoder
        self.center_benign, self.center_attack = fitted.center_benign, fitted.center_attack
        return fitted.history

    def fit_side_channels(
        self,
        Z: np.ndarray,
        y: np.ndarray,
        benign: np.ndarray,
        held_out: np.ndarray,
        rng: np.random.Generator,
        params: Mapping[str, Any],
    ) -> dict[str, np.ndarray]:
        """Fit the Deep SVDD embedding (on ``benign`` rows) and every side channel that is on;
        each channel's out-of-sample scores of the ``held_out`` rows."""
        # Seeds are drawn only for the parts in use, so that a model without them draws
        # exactly what it would draw if they did not exist.
        self.svdd = None
        if params["svdd_dim"] > 0:
            seed = int(rng.integers(2**31))
            self.svdd = DeepSAD(eta=0.0, rep_dim=params["svdd_dim"], random_state=seed)
            self.svdd.fit(Z[benign])
        self.channels, scores = {}, {}
        # A benign-only channel sees the benign fitting rows (the sample, under
        # max_benign_rows) and the held-out rows it scores, as adapt refits it.
        benign_rows = np.r_[benign, held_out]
        local_held = np.arange(len(benign), len(benign_rows))
        for name in enabled_channels(params):
            cls = SIDE_CHANNELS[name]
            channel = cls(params[cls.parameter], random_state=int(rng.integers(2**31)))
            if channel.supervised:
                scores[name] = channel.fit(Z, y, held_out)
            else:
                scores[name] = channel.fit(Z[benign_rows], y[benign_rows], local_held)
            self.channels[name] = channel
        return scores

    def fit_fusion(
        self,
        reference_scores: Mapping[str, np.ndarray],
        folds: Sequence[Mapping[str, Mapping[str, np.ndarray]]] | None = None,
    ) -> None:
        """Fit the score rule on the benign reference rows' channel scores, and for a rule
        that learns from them, on the pseudo-zero-day ``folds`` (:mod:`.folds`)."""
        resolution = {name: c.resolution for name, c in self.channels.items()}
        if folds is None:
            self.fusion.fit(reference_scores, resolution)
        else:
            self.fusion.fit(reference_scores, resolution, folds)

    def fit_flow(
        self,
        Z_benign: np.ndarray,
        params: Mapping[str, Any],
        *,
        fine_tune_epochs: int | None = None,
        events: list[dict] | None = None,
    ) -> tuple[np.ndarray | None, list | None]:
        """Fit the flow (and its input's scaler) on scaled benign rows (no flow when
        ``flow_transforms=0``).

        ``params`` are the estimator's (:data:`STAGE2_PARAMETERS`, ``flow_standardize``,
        ``verbose``). With ``fine_tune_epochs``, the fitted flow is trained that many more
        epochs on the rows instead (its input's scaler kept: the flow is only valid on the
        inputs it was trained on), as :func:`~latent_sculpting.model.adapt.adapt` does.
        ``events`` receives the training loop's reports (a diverged epoch, its restart).

        Returns
        -------
        inputs, losses : numpy.ndarray, list of float; or None, None without a flow
            The benign rows' flow inputs, and the flow's training loss per epoch.
        """
        if params["flow_transforms"] == 0:
            self.flow = self.flow_scaler = None
            return None, None
        kwargs = {name: params[name] for name in STAGE2_PARAMETERS}
        verbose = bool(params.get("verbose", False))
        if fine_tune_epochs is not None:
            inputs = self.flow_inputs(Z_benign)
            kwargs["flow_epochs"] = fine_tune_epochs
            self.flow, losses = fit_flow(
                inputs, **kwargs, device=self.device, verbose=verbose, init=self.flow, events=events
            )
            return inputs, losses
        embedding = None if self.svdd is None else self.svdd.transform(Z_benign)
        inputs = flow_inputs(self.encode(Z_benign), embedding, None)
        self.flow_scaler = None
        if params["flow_standardize"]:
            self.flow_scaler = FeaturePreprocessor(scaler="standard").fit(inputs)
            inputs = self.flow_scaler.transform(inputs)
        self.flow, losses = fit_flow(
            inputs, **kwargs, device=self.device, verbose=verbose, events=events
        )
        return inputs, losses

    def fine_tune_blocked(self, Z: np.ndarray) -> float | None:
        """The largest NLL of the scaled rows ``Z`` when the flow could not be fine-tuned on
        them, None when it could
        (:func:`~latent_sculpting.model.density.train.fine_tune_blocked`)."""
        return fine_tune_blocked(self.flow, self.flow_inputs(Z), device=self.device)

    def calibrate(
        self,
        scores: np.ndarray,
        percentile: float,
        target_fpr: float | None,
        *,
        coarse: bool = False,
    ) -> None:
        """Set the calibration scores (sorted) and the thresholds from benign ``scores``
        (:func:`~latent_sculpting.model.calibration.thresholds`)."""
        self.calibration_scores = np.sort(np.asarray(scores).astype(np.float64))
        self.thresholds, self.threshold = thresholds(
            self.calibration_scores, percentile, target_fpr, coarse=coarse
        )

    def describe_benign(
        self,
        X_benign: np.ndarray,
        feature_names: Sequence[str],
        *,
        target_fpr: float,
        spec: Any = None,
    ) -> None:
        """What benign traffic looks like, feature by feature, in raw units: the bins that
        scoring compares new traffic with (drift) and the quantiles that explain an alert.
        Neither takes part in the score."""
        names = [str(n) for n in feature_names]
        self.drift_reference = DriftReference().fit(
            X_benign, feature_names=names, target_fpr=target_fpr
        )
        categorical = spec_categorical(spec) if spec is not None else None
        self.benign_profile = BenignProfile().fit(X_benign, names, categorical=categorical)


#: The estimator's fitted attribute (``name_``) of each field.
FIELDS = (
    "preprocessor",
    "encoder",
    "center_benign",
    "center_attack",
    "svdd",
    "flow_scaler",
    "flow",
    "channels",
    "fusion",
    "calibration_scores",
    "thresholds",
    "threshold",
    "drift_reference",
    "benign_profile",
    "device",
)


def fitted_attribute(name: str) -> property:
    """The estimator's fitted attribute ``name_``: a view of the field ``name`` of its
    ``parts_`` (unfitted until it has them; setting one gives it parts)."""

    def get(self: Any) -> Any:
        try:
            parts = self.__dict__["parts_"]
        except KeyError:
            raise AttributeError(f"{type(self).__name__} is not fitted: no {name}_") from None
        return getattr(parts, name)

    def set(self: Any, value: Any) -> None:
        if "parts_" not in self.__dict__:
            self.parts_ = FittedParts()
        setattr(self.parts_, name, value)

    return property(get, set, doc=f"The fitted part ``parts_.{name}``.")
