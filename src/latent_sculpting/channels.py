"""Side channels: scores of the scaled features beside the flow, for a fusion to combine.

A side channel is a small class with ``fit``, ``score``, ``get_state`` and ``from_state``,
registered in :data:`SIDE_CHANNELS`; an estimator parameter sizes it and switches it off at 0.
The estimator fits every channel that is on, scores rows with it, stores it in the model file,
and hands its scores to the ``score`` rule (:mod:`latent_sculpting.fusion`) under its ``name``.
Adding one (a kNN distance on the scaled features, say) takes the class, its entry in
:data:`SIDE_CHANNELS`, and its parameter in the estimator and the presets.

**Benign-describing channels.** A channel that learns only what benign traffic looks like (a
kNN distance to benign flows, say) sets ``describes_benign = True``: adapting a model to another
network (:mod:`latent_sculpting.adapt`) then refits it, like the flow, on that network's benign
flows, calling ``fit`` with benign rows only. A channel that learns attacks (the forest) keeps
``False`` and is kept as it is.

**Held-out rows.** The rules are fitted and thresholded on benign rows held out of every fit, so
``fit`` returns *out-of-sample* scores for them: a channel that learns from them too (the
forest, for which benign flows are the minority class worth every row) must score them with a
model that did not see them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numpy as np

from .forest import AttackForest

__all__ = ["SIDE_CHANNELS", "ForestChannel", "SideChannel", "enabled_channels"]


class SideChannel(Protocol):
    """What the estimator needs of a side channel."""

    #: Key of its scores for the fusion, and of its state in the model file.
    name: ClassVar[str]
    #: Column of :meth:`LatentSculpting.score_details` holding its score.
    column: ClassVar[str]
    #: The estimator parameter that sizes it; 0 switches it off.
    parameter: ClassVar[str]
    #: Smallest step between its scores that means something (floors the fusion's tail scale).
    resolution: float
    #: Whether it learns only benign traffic, so that adapting the model to another network
    #: refits it on that network's benign flows (:mod:`latent_sculpting.adapt`).
    describes_benign: ClassVar[bool]

    def __init__(self, size: int, *, random_state: int | None = None) -> None:
        """``size`` is the value of :attr:`parameter`, ``random_state`` a seed of its own."""
        ...

    def fit(self, Z: np.ndarray, y: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        """Fit on scaled rows ``Z`` (0/1 targets ``y``); out-of-sample scores of ``held_out``."""
        ...

    def score(self, Z: np.ndarray) -> np.ndarray:
        """Score of each scaled row, higher for more anomalous."""
        ...

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]: ...

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> SideChannel: ...


class ForestChannel:
    """A random forest's known-attack probability (:class:`~latent_sculpting.forest.AttackForest`).

    The forest learns from every row, the held-out benign ones included: benign rows are its
    minority class (a few thousand against tens of thousands of attacks on CIC-IDS-2017). Their
    scores for the fusion and the threshold are out-of-bag votes, of trees that never saw them,
    as in the jackknife+-after-bootstrap (Kim, Xu and Barber, NeurIPS 2020).

    Parameters
    ----------
    n_trees : int
    random_state : int or None, default=None

    Attributes
    ----------
    forest_ : AttackForest
    """

    name = "forest"
    column = "forest_probability"
    parameter = "forest_trees"
    describes_benign = False

    def __init__(self, n_trees: int, *, random_state: int | None = None) -> None:
        self.n_trees = n_trees
        self.random_state = random_state

    @property
    def resolution(self) -> float:
        """One tree's vote."""
        return 1.0 / self.n_trees

    def fit(self, Z: np.ndarray, y: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        self.forest_ = AttackForest(self.n_trees, random_state=self.random_state).fit(Z, y)
        oob = self.forest_.oob_proba_[held_out]
        del self.forest_.oob_proba_  # fit-time only
        # A row in every bootstrap sample has no out-of-bag vote (about 0.37**trees of rows);
        # it gets the whole forest's.
        missing = ~np.isfinite(oob)
        if missing.any():
            oob[missing] = self.forest_.predict_proba(Z[held_out[missing]])
        return oob

    def score(self, Z: np.ndarray) -> np.ndarray:
        return self.forest_.predict_proba(Z)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config, arrays = self.forest_.get_state()
        return {"n_trees": self.n_trees, "forest": config}, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> ForestChannel:
        n_trees = int(config["n_trees"])
        if n_trees < 1:
            raise ValueError(f"forest channel needs at least one tree, got n_trees={n_trees}")
        channel = cls(n_trees)
        channel.forest_ = AttackForest.from_state(config["forest"], arrays)
        return channel


#: Every side channel, in the order they are fitted (which fixes the order of seed draws).
SIDE_CHANNELS: dict[str, type[SideChannel]] = {ForestChannel.name: ForestChannel}


def enabled_channels(params: Mapping[str, Any]) -> list[str]:
    """Names of the side channels that the estimator parameters ``params`` switch on."""
    return [name for name, cls in SIDE_CHANNELS.items() if params.get(cls.parameter, 0) > 0]
