"""Side channels: scores of the scaled features beside the flow, for a fusion to combine.

A side channel is a small class with ``fit``, ``score``, ``get_state`` and ``from_state``,
registered in :data:`SIDE_CHANNELS`; an estimator parameter sizes it and switches it off at 0.
The estimator fits every channel that is on, scores rows with it, stores it in the model file,
and hands its scores to the ``score`` rule (:mod:`latent_sculpting.model.fusion`) under its
``name``.
Adding one (a kNN distance on the scaled features, say) takes the class, its entry in
:data:`SIDE_CHANNELS`, and its parameter in the estimator and the presets.

**Supervised or benign-only.** A channel that learns from known attacks (the forest, the
boosted trees) sets ``supervised = True``; one that learns only what benign traffic looks like
(the distance to benign prototypes) sets ``False``. A pseudo-zero-day fold
(:mod:`latent_sculpting.model.folds`) refits only the supervised ones; adapting a model to another
network (:mod:`latent_sculpting.model.adapt`) refits only the others, like the flow, on that
network's benign flows (``fit`` then sees benign rows only), and keeps the supervised ones.

**Held-out rows.** The rules are fitted and thresholded on benign rows held out of every fit, so
``fit`` returns *out-of-sample* scores for them: a channel that learns from them too (the
forest, for which benign flows are the minority class worth every row) must score them with a
model that did not see them (the forest's out-of-bag votes); one that has no such votes (the
boosted trees) is fitted without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

import numba
import numpy as np

from latent_sculpting.model.channels.boost import AttackBooster
from latent_sculpting.model.channels.forest import AttackForest
from latent_sculpting.model.channels.prototypes import kmeans_prototypes
from latent_sculpting.model.state import check_object, shown

__all__ = [
    "SIDE_CHANNELS",
    "BoostChannel",
    "ForestChannel",
    "NeighbourChannel",
    "SideChannel",
    "enabled_channels",
]


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
    #: Whether it learns from known attacks (then a pseudo-zero-day fold refits it without the
    #: held-out family); a benign-only channel is reused as fitted there, and refitted on a new
    #: network's benign flows by :mod:`latent_sculpting.model.adapt`.
    supervised: ClassVar[bool]

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
    def from_state(
        cls,
        config: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        size: int | None = None,
        n_features: int | None = None,
    ) -> SideChannel:
        """Rebuild from :meth:`get_state` output, every key and array checked (a model file is
        untrusted input); given ``size`` (the model's :attr:`parameter`) and ``n_features``
        (its scaled width), the channel must be of that size and read that many features."""
        ...


class NeighbourChannel:
    """Distance to the nearest benign prototype: a benign-only channel for what no known attack
    resembles.

    The prototypes are the centres of a k-means clustering of the benign training rows (all the
    rows when there are no more than ``n_prototypes``), in the scaled feature space. A flow far
    from every benign prototype is unlike benign traffic whatever it resembles; on validation
    folds this catches the families a supervised channel misses (a port scan or an
    infiltration that looks like no known attack; docs/research/presets.md). Prototypes rather
    than every benign row bound the model file and the scoring cost (one matrix product with
    ``n_prototypes`` rows per flow).

    Parameters
    ----------
    n_prototypes : int
    random_state : int or None, default=None

    Attributes
    ----------
    prototypes_ : numpy.ndarray of shape (n_prototypes, n_features), float32
    """

    name = "knn"
    column = "knn_distance"
    parameter = "knn_prototypes"
    #: Learns from benign rows only: it needs no refit when an attack family is held out, and
    #: adapting to a new network's benign traffic refits it.
    supervised = False
    resolution = 0.0
    #: Rows scored per matrix product (bounds the distance block to a few MiB).
    _BLOCK = 1024

    def __init__(self, n_prototypes: int, *, random_state: int | None = None) -> None:
        self.n_prototypes = n_prototypes
        self.random_state = random_state

    def fit(self, Z: np.ndarray, y: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        keep = np.ones(len(y), dtype=bool)
        keep[held_out] = False
        benign = np.asarray(Z[keep & (y == 0)], dtype=np.float32)
        if len(benign) == 0:
            raise ValueError("the neighbour channel needs benign rows to fit on")
        if len(benign) <= self.n_prototypes:
            self._set_prototypes(np.unique(benign, axis=0))
        else:
            self._set_prototypes(kmeans_prototypes(benign, self.n_prototypes, self.random_state))
        return self.score(Z[held_out])

    def score(self, Z: np.ndarray) -> np.ndarray:
        Z = np.asarray(Z, dtype=np.float32)
        P = self.prototypes_
        out = np.empty(len(Z))
        for start in range(0, len(Z), self._BLOCK):
            block = Z[start : start + self._BLOCK]
            # |z - p|^2 = |z|^2 - 2 z.p + |p|^2 with the product in float32 (BLAS) finds the
            # prototypes that can be the nearest: those within the product's rounding bound of
            # the smallest. The distance is then computed directly in float64 to each of them,
            # and the least taken. The expanded form alone loses everything to cancellation
            # near a prototype, and BLAS rounds a one-row product unlike a many-row one: two
            # prototypes 1e-3 apart swapped places with the batch a flow came in, and moved a
            # Zeek flow's score by 0.05. The exact least distance does not depend on it.
            squares = (block.astype(np.float64) ** 2).sum(axis=1)
            _nearest(
                block @ P.T,
                squares,
                self._norms,
                block,
                self._wide,
                _rounding_slack(squares, self._largest_norm, P.shape[1]),
                out[start : start + self._BLOCK],
            )
        return out

    def merged(self, other: NeighbourChannel) -> NeighbourChannel:
        """A channel whose prototypes are this one's and ``other``'s (duplicates once): the
        distance to the nearest benign prototype of either (``sculpt adapt
        --keep-training-prototypes``)."""
        both = np.concatenate([self.prototypes_, other.prototypes_])
        _, first = np.unique(both, axis=0, return_index=True)
        merged = type(self)(len(first), random_state=other.random_state)
        merged._set_prototypes(np.ascontiguousarray(both[np.sort(first)]))
        return merged

    def _set_prototypes(self, prototypes: np.ndarray) -> None:
        """The prototypes, and the float64 forms :meth:`score` reads (their squared norms and
        the prototypes themselves), computed once."""
        self.prototypes_ = prototypes
        self._norms = (prototypes.astype(np.float64) ** 2).sum(axis=1)
        self._largest_norm = float(self._norms.max())
        self._wide = prototypes.astype(np.float64)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"n_prototypes": self.n_prototypes}, {"prototypes": self.prototypes_}

    @classmethod
    def from_state(
        cls,
        config: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        size: int | None = None,
        n_features: int | None = None,
    ) -> NeighbourChannel:
        n = int(config["n_prototypes"])
        prototypes = np.asarray(arrays.get("prototypes"))
        if n < 1:
            raise ValueError(f"neighbour channel needs n_prototypes >= 1, got {n}")
        if prototypes.ndim != 2 or not 0 < len(prototypes) <= n:
            raise ValueError(
                f"neighbour prototypes have shape {prototypes.shape}, at most {n} rows"
            )
        if prototypes.dtype != np.float32 or not np.isfinite(prototypes).all():
            raise ValueError("neighbour prototypes must be finite float32")
        # No size check: after `sculpt adapt --keep-training-prototypes` the channel holds the
        # training prototypes beside the new ones, more than the model's parameter.
        _check_fit(n, None, prototypes.shape[1], n_features)
        channel = cls(n)
        channel._set_prototypes(prototypes)
        return channel


class ForestChannel:
    """A random forest's known-attack probability
    (:class:`~latent_sculpting.model.channels.forest.AttackForest`).

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
    supervised = True

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
    def from_state(
        cls,
        config: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        size: int | None = None,
        n_features: int | None = None,
    ) -> ForestChannel:
        config = check_object(config, "its config", {"n_trees", "forest"})
        if size is not None and config["n_trees"] != size:
            raise ValueError(f"{shown(config['n_trees'])} trees, but forest_trees={size}")
        n_trees = int(config["n_trees"])
        if n_trees < 1:
            raise ValueError(f"forest channel needs at least one tree, got n_trees={n_trees}")
        channel = cls(n_trees)
        forest = channel.forest_ = AttackForest.from_state(config["forest"], arrays)
        if forest.n_estimators != n_trees:
            raise ValueError(f"{forest.n_estimators} trees stored for {n_trees}")
        _check_fit(n_trees, None, forest.n_features_in_, n_features)
        return channel


class BoostChannel:
    """Boosted trees' known-attack log-odds
    (:class:`~latent_sculpting.model.channels.boost.AttackBooster`).

    Boosting has no out-of-bag votes: every tree is fitted to the errors of all the trees
    before it, on every training row. So the booster is fitted on every row but the held-out
    ones, as every part of the model but the forest is, and scores those out of sample.

    Parameters
    ----------
    n_iter : int
        Boosting iterations at most (``max_iter``; early stopping may keep fewer).
    random_state : int or None, default=None

    Attributes
    ----------
    booster_ : AttackBooster
    """

    name = "boost"
    supervised = True
    column = "boost_logit"
    parameter = "boost_iter"
    #: Log-odds are continuous: no step between them is too small to mean something.
    resolution = 0.0

    def __init__(self, n_iter: int, *, random_state: int | None = None) -> None:
        self.n_iter = n_iter
        self.random_state = random_state

    def fit(self, Z: np.ndarray, y: np.ndarray, held_out: np.ndarray) -> np.ndarray:
        train = np.ones(len(Z), dtype=bool)
        train[held_out] = False
        booster = AttackBooster(self.n_iter, random_state=self.random_state)
        # scikit-learn's booster works on float64 and would convert a float32 copy of the rows
        # itself; converting here drops the float32 copy before it makes its own splits (a
        # gigabyte at full scale). The values, and so the trees, are the same.
        self.booster_ = booster.fit(Z[train].astype(np.float64), y[train])
        return self.booster_.decision_function(Z[held_out])

    def score(self, Z: np.ndarray) -> np.ndarray:
        return self.booster_.decision_function(Z)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The booster's state; its ``max_iter`` is the channel's ``n_iter``."""
        return self.booster_.get_state()

    @classmethod
    def from_state(
        cls,
        config: dict[str, Any],
        arrays: dict[str, np.ndarray],
        *,
        size: int | None = None,
        n_features: int | None = None,
    ) -> BoostChannel:
        booster = AttackBooster.from_state(config, arrays)
        _check_fit(booster.max_iter, size, booster.n_features_in_, n_features)
        channel = cls(booster.max_iter)
        channel.booster_ = booster
        return channel


def _rounding_slack(squares: np.ndarray, largest_norm: float, width: int) -> np.ndarray:
    """How far above the smallest expanded squared distance of each row the expanded distance
    of the truly nearest prototype can be: twice the bound on the error of one expanded
    distance (``largest_norm``: the largest squared prototype norm). A float32 dot product of
    ``width`` terms, in any order, errs by at most
    ``width * u * |z| |p|`` (u = 2^-24), doubled in ``-2 z.p``; the float64 sums add
    ``(width + 3) * 2^-53`` of the magnitudes. Each bound is doubled again for safety: a wider
    slack only computes a few more direct distances."""
    u32, u64 = 2.0**-24, 2.0**-53
    z, p = np.sqrt(squares), np.sqrt(largest_norm)
    product = 2.0 * width * u32 / (1.0 - width * u32) * z * p
    sums = (width + 3) * u64 * (squares + 2.0 * z * p + largest_norm)
    return 4.0 * (product + sums)


@numba.njit(nogil=True, cache=True)
def _nearest(cross, squares, norms, Z, P, slack, out):
    """``out[i] = min |Z[i] - P[j]|`` in float64, summed feature by feature, over the ``j``
    whose ``(squares[i] - 2 cross[i, j]) + norms[j]`` (``cross`` float32, widened exactly) is
    within ``slack[i]`` of the least such value: the prototypes that can be the nearest. The
    least value keeps eight running minima, which the processor updates in parallel; the order
    of a minimum does not change it (the scaled features are finite, so there is no NaN)."""
    m = cross.shape[1]
    row = np.empty(m)
    for i in range(cross.shape[0]):
        for j in range(m):
            row[j] = (squares[i] - 2.0 * np.float64(cross[i, j])) + norms[j]
        b0 = b1 = b2 = b3 = b4 = b5 = b6 = b7 = np.inf
        j = 0
        while j + 8 <= m:
            b0 = min(b0, row[j])
            b1 = min(b1, row[j + 1])
            b2 = min(b2, row[j + 2])
            b3 = min(b3, row[j + 3])
            b4 = min(b4, row[j + 4])
            b5 = min(b5, row[j + 5])
            b6 = min(b6, row[j + 6])
            b7 = min(b7, row[j + 7])
            j += 8
        while j < m:
            b0 = min(b0, row[j])
            j += 1
        limit = min(min(min(b0, b1), min(b2, b3)), min(min(b4, b5), min(b6, b7))) + slack[i]
        least = np.inf
        for j in range(m):
            if row[j] <= limit:
                total = 0.0
                for k in range(Z.shape[1]):
                    d = np.float64(Z[i, k]) - P[j, k]
                    total += d * d
                least = min(least, total)
        out[i] = np.sqrt(least)


#: Every side channel, in the order they are fitted (which fixes the order of seed draws).
SIDE_CHANNELS: dict[str, type[SideChannel]] = {
    ForestChannel.name: ForestChannel,
    BoostChannel.name: BoostChannel,
    NeighbourChannel.name: NeighbourChannel,
}


def _check_fit(size: int, expected_size: int | None, width: int, n_features: int | None) -> None:
    """A stored channel is of the model's size and reads the model's scaled features."""
    if expected_size is not None and size != expected_size:
        raise ValueError(f"its size is {size}; the model's parameter says {expected_size}")
    if n_features is not None and width != n_features:
        raise ValueError(f"it reads {width} features; the model has {n_features}")


def enabled_channels(params: Mapping[str, Any]) -> list[str]:
    """Names of the side channels that the estimator parameters ``params`` switch on."""
    return [name for name, cls in SIDE_CHANNELS.items() if params.get(cls.parameter, 0) > 0]
