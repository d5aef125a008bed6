"""Our detector's presets and its ablations as
:class:`~latent_sculpting.research.baselines.Method`\\ s.

References
----------
.. [1] Chhetri, Thapa, Kumar, Chen. "Latent Sculpting for Zero-Shot Generalization."
   arXiv:2512.22179.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from latent_sculpting.io.context.config import parse_context
from latent_sculpting.model.channels.registry import SIDE_CHANNELS
from latent_sculpting.model.estimator import LatentSculpting
from latent_sculpting.model.params import check_params

__all__ = ["ABLATIONS", "SculptingMethod"]

#: Ablations of a preset: estimator arguments that replace the preset's, and what each removes.
ABLATIONS: dict[str, tuple[dict[str, Any], str]] = {
    # Of the paper presets (and "fused"): the parts of the two-stage design.
    "stage1": ({}, "Stage 1 alone: nearest-centroid margin d(benign) - d(attack)"),
    "stage2": (
        {
            "stage1": False,
            "score": "nll",
            "svdd_dim": 0,
            "forest_trees": 0,
            "boost_iter": 0,
            "knn_prototypes": 0,
            "stack_folds": 0,
        },
        "Stage 2 alone: the flow on the scaled features, no encoder, no other channel",
    ),
    "ce": ({"loss": "cross_entropy"}, "encoder trained with plain cross-entropy"),
    "nosep": ({"gamma": 0.0}, "sculpting loss without its separation term (gamma = 0)"),
    # Of the default: each of its parts removed or replaced in turn.
    "noboost": ({"boost_iter": 0}, "without the gradient-boosted trees"),
    "noknn": ({"knn_prototypes": 0}, "without the distance to benign prototypes"),
    "noflow": ({"flow_transforms": 0}, "without the flow (the benign density of Stage 2)"),
    "neighbours": (
        {"stack_neighbours": 1},
        "weights learned on folds that also leave out each held-out family's nearest sibling",
    ),
    "fisher": (
        {"score": "fisher", "stack_folds": 0},
        "the same channels summed with equal weights (Fisher), no learned weights",
    ),
    "forest": (
        {"boost_iter": 0, "forest_trees": 100},
        "a random forest instead of the gradient-boosted trees",
    ),
    "sculpt": (
        {
            "stage1": True,
            "svdd_dim": 32,
            "flow_standardize": True,
            "score": "fisher",
            "stack_folds": 0,
        },
        "the flow on the sculpted code (Stage 1) and a Deep SVDD embedding, equal weights "
        "(learned weights would need Stage 1 refitted per fold)",
    ),
}


class SculptingMethod:
    """A :class:`~latent_sculpting.LatentSculpting` configuration as a comparable method.

    Parameters
    ----------
    name : str
    params : dict
        Estimator arguments (a preset, possibly with overrides), checked here, before any fit.
    stage1_only : bool, default=False
        Score with the Stage-1 nearest-centroid margin ``distance_benign - distance_attack`` of
        the fitted model instead of its decision function; its native rule is ``margin > 0``.
    random_state : int or None, default=None
    shared : dict or None, default=None
        Fitted models keyed by configuration, shared by methods that are fitted on the same rows
        within one seed of one run: "Stage 1 alone" reads the model its preset already fitted
        rather than training it again. The caller owns it and must give each set of training
        rows its own dict.

    Attributes
    ----------
    model_ : LatentSculpting
    reused_fit_ : bool
        Whether ``fit`` took an already fitted model from ``shared`` (its fit time is then ~0).
    native_threshold_ : float
        The model's own ``threshold_`` (its preset's percentile and calibration rule), or 0 for
        ``stage1_only``.
    """

    library = "latent_sculpting"

    def __init__(
        self,
        name: str,
        params: dict[str, Any],
        *,
        stage1_only: bool = False,
        random_state: int | None = None,
        shared: dict | None = None,
    ) -> None:
        if stage1_only and not params.get("stage1", True):
            raise ValueError(f"{name}: stage1_only needs stage1=True, got params {params}")
        try:
            check_params(LatentSculpting(**params, random_state=random_state).get_params())
        except ValueError as error:
            raise ValueError(f"method {name}: {error}") from None
        self.name = name
        self.params = dict(params)
        self.stage1_only = stage1_only
        self.random_state = random_state
        self.shared = shared
        supervised = self.params.get("stage1", True) or any(
            self.params.get(cls.parameter, 0) > 0 and cls.supervised
            for cls in SIDE_CHANNELS.values()
        )
        self.trains_on = "benign+attacks" if supervised else "benign"
        self.feature_transform = self.params.get("feature_transform", "none")
        # The context columns the benchmark appends to this method's features (None: none).
        self.context_config = parse_context(self.params.get("context", "off"))
        self.native_threshold_: float | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def fit(
        self, X: np.ndarray, y: np.ndarray, labels: np.ndarray | None = None
    ) -> SculptingMethod:
        key = (repr(sorted(self.params.items())), self.random_state)
        cached = None if self.shared is None else self.shared.get(key)
        self.reused_fit_ = cached is not None
        if cached is not None:
            self.model_ = cached
        else:
            model = LatentSculpting(**self.params, random_state=self.random_state)
            if self.trains_on == "benign":
                X = np.asarray(X)[np.asarray(y) == 0]
                model.fit(X, None)
            else:
                model.fit(X, y, groups=labels)
            self.model_ = model
            if self.shared is not None:
                self.shared[key] = model
        self.native_threshold_ = 0.0 if self.stage1_only else float(self.model_.threshold_)
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise ValueError(f"{self.name} is not fitted; call fit first")
        if not self.stage1_only:
            return self.model_.decision_function(X)
        details = self.model_.score_details(X)
        return (details["distance_benign"] - details["distance_attack"]).astype(np.float64)
