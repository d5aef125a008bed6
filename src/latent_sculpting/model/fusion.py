"""How channel scores combine into the detector's score: the ``score`` parameter's rules.

Every rule reads a dict of per-flow channel scores: ``"nll"`` (the Stage-2 flow's negative
log-likelihood), with Stage 1 ``"distance_benign"`` and ``"distance_attack"`` (squared
distances of the code to the two centroids), and one entry per side channel
(:mod:`latent_sculpting.model.channels.registry`, e.g. ``"forest"``). It maps them to one score,
higher for
more anomalous.

``"nll"``
    The flow alone.
``"two_stage"``
    The paper's rule [1]_: a flow nearer the attack centroid is an attack and ranks above every
    flow the flow model scores.
``"fisher"``
    The flow and every side channel, each turned into ``-log p`` against benign *reference*
    flows held out of every fit (:class:`~latent_sculpting.model.calibration.TailPValue`), summed:
    Fisher's statistic (Fisher 1925). The channels live on unrelated scales; p-values put them
    on one, and a flow extreme in any channel is extreme in the sum. The fused score is itself
    thresholded on a *separate* benign calibration split, so the detector's conformal guarantee
    does not depend on how well the tail model fits.

``"stacked"``
    As ``"fisher"``, with one weight per channel (0, 1/2 or 1) learned on pseudo-zero-day
    folds of the training data: each known attack family held out in turn, the supervised
    channels refitted without it, and the weights kept that best separate the held-out families
    from the benign reference flows (the mean of AUROC and recall at 1 % false positives;
    :class:`StackedFusion`). A channel that sees what only it sees keeps its full weight;
    one that only adds benign noise at low false-positive rates is down-weighted or dropped,
    per data set rather than once for all.

A new rule is a class with ``fit``, ``combine``, ``get_state`` and ``from_state`` registered in
:data:`FUSIONS`.

References
----------
.. [1] Chhetri, Thapa, Kumar, Chen. arXiv:2512.22179.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from latent_sculpting.model.calibration import TailPValue
from latent_sculpting.model.state import check_number, check_object, few, shown

__all__ = [
    "FUSIONS",
    "NLL_CAP",
    "STAGE1_OFFSET",
    "FisherFusion",
    "Fusion",
    "NLLFusion",
    "StackedFusion",
    "TwoStageFusion",
    "criterion",
    "fisher",
]

# Scores of flows that Stage 1 already calls attacks start here, so that they rank above every
# Stage-2 score (the paper's AUROC does the same with "max Stage-2 score + 1" over the evaluated
# set; a fixed offset keeps each flow's score independent of the rest of its batch).
STAGE1_OFFSET = 1e12
#: Stage-2 NLLs are clipped here, just below :data:`STAGE1_OFFSET`; a code so far outside the
#: benign manifold that its NLL overflows is maximally anomalous.
NLL_CAP = STAGE1_OFFSET / 2


class Fusion:
    """Base of the rules: what each needs, and no fitted state.

    Subclasses override :meth:`combine`, and :meth:`fit`, :meth:`get_state` and
    :meth:`from_state` when they learn from reference rows.
    """

    #: Whether the rule is fitted on benign reference rows (then held out of every fit).
    needs_reference: ClassVar[bool] = False
    #: Whether the rule reads side channels (then at least one must be on; and a side channel
    #: is refused under a rule that would ignore it).
    uses_side_channels: ClassVar[bool] = False
    #: Whether the rule reads the Stage-1 distances (then ``stage1=True`` is required).
    needs_stage1: ClassVar[bool] = False
    #: Whether the rule learns from pseudo-zero-day folds (each known family held out in turn,
    #: the supervised channels refitted without it); ``fit`` then takes ``folds``.
    needs_folds: ClassVar[bool] = False

    def fit(self, reference: Mapping[str, np.ndarray], resolution: Mapping[str, float]) -> Any:
        """Fit on the channel scores of benign reference rows (a no-op here).

        ``resolution`` names the side channels, each with the smallest step between its scores
        that means something.
        """
        return self

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """The score of each flow from its channel scores."""
        raise NotImplementedError

    def channels_read(self) -> frozenset[str]:
        """Names of the channel scores :meth:`combine` reads; the scorer computes no other
        (a channel weighted 0 by the stacked rule costs nothing when only the score is asked)."""
        return frozenset({"nll"})

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state as a JSON-able config and named arrays (no pickle)."""
        return {}, {}

    @classmethod
    def from_state(
        cls, config: Any, arrays: dict[str, np.ndarray], *, channels: Sequence[str] | None = None
    ) -> Any:
        """Rebuild from :meth:`get_state` output, every key and array checked (a model file is
        untrusted input). ``channels``, when given, are the channels the model scores with in
        order (the flow's ``"nll"`` first when it has one, then the side channels): a rule
        with a tail per channel must have exactly theirs, and no other arrays.

        Raises
        ------
        ValueError
            Naming the key, tail or array at fault.
        """
        check_object(config, "its config", set())
        if arrays:
            raise ValueError(f"this score rule has no arrays, got {few(sorted(arrays))}")
        return cls()


def clipped_nll(scores: Mapping[str, np.ndarray]) -> np.ndarray:
    """The flow's NLL, clipped at :data:`NLL_CAP`."""
    return np.minimum(scores["nll"], NLL_CAP)


class NLLFusion(Fusion):
    """The flow's NLL alone."""

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        return clipped_nll(scores)


class TwoStageFusion(Fusion):
    """The paper's two-stage rule: Stage-1 attacks score ``STAGE1_OFFSET`` plus their margin
    ``distance_benign - distance_attack``, every other flow its NLL."""

    needs_stage1 = True

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        d_b = scores["distance_benign"].astype(np.float64)
        d_a = scores["distance_attack"].astype(np.float64)
        return np.where(d_a < d_b, STAGE1_OFFSET + (d_b - d_a), clipped_nll(scores))

    def channels_read(self) -> frozenset[str]:
        return frozenset({"nll", "distance_benign", "distance_attack"})


class FisherFusion(Fusion):
    """Fisher's sum of tail ``-log p`` of the flow's NLL and of every side channel.

    Attributes
    ----------
    tails_ : dict of str to TailPValue
        The p-value model of each channel, ``"nll"`` first (when the model has a flow),
        fitted on reference scores.
    """

    needs_reference = True
    uses_side_channels = True

    def fit(
        self, reference: Mapping[str, np.ndarray], resolution: Mapping[str, float]
    ) -> FisherFusion:
        """Fit a tail on the reference scores of the flow's NLL (when ``reference`` has them)
        and of each side channel in ``resolution``, whose value floors the channel's tail
        scale."""
        return self.fit_tails(reference, resolution)

    def fit_tails(
        self,
        reference: Mapping[str, np.ndarray],
        resolution: Mapping[str, float],
        *,
        keep: Collection[str] = (),
    ) -> FisherFusion:
        """Fit only the tails, as :meth:`fit` does, and keep whatever else the rule learned
        (the stacked rule's weights): the tails describe benign traffic, and adapting a model
        to another network (:mod:`latent_sculpting.model.adapt`) refits them on its benign flows.

        ``keep`` names channels whose fitted tail stays as it is (``reference`` need not hold
        their scores). Adapting keeps the tails of the channels it keeps: theirs were placed on
        thousands of training reference flows, and a tail refitted on the few hundred new flows
        an adaptation has left extrapolates far beyond where those flows reach.
        """
        old = getattr(self, "tails_", {})
        missing = [name for name in keep if name not in old]
        if missing:
            raise ValueError(f"no fitted tail to keep for {missing}")
        tails = {}
        if "nll" in keep:
            tails["nll"] = old["nll"]
        elif "nll" in reference:  # a model without a flow (flow_transforms=0) has none
            tails["nll"] = TailPValue().fit(reference["nll"])
        for name, step in resolution.items():
            tails[name] = (
                old[name] if name in keep else TailPValue(min_scale=step).fit(reference[name])
            )
        self.tails_ = tails
        return self

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        clipped = {**scores, "nll": clipped_nll(scores)} if "nll" in scores else scores
        return fisher([tail.neg_log_p(clipped[name]) for name, tail in self.tails_.items()])

    def channels_read(self) -> frozenset[str]:
        return frozenset(self.tails_)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config: dict[str, Any] = {"tails": {}}
        arrays = {}
        for name, tail in self.tails_.items():
            config["tails"][name], tail_arrays = tail.get_state()
            arrays.update({f"{name}.{key}": value for key, value in tail_arrays.items()})
        return config, arrays

    @classmethod
    def from_state(
        cls, config: Any, arrays: dict[str, np.ndarray], *, channels: Sequence[str] | None = None
    ) -> FisherFusion:
        tails = check_object(config, "its config", {"tails"})["tails"]
        if not isinstance(tails, dict) or (channels is not None and list(tails) != channels):
            listed = list(tails) if isinstance(tails, dict) else shown(tails)
            raise ValueError(f"tails of {listed}, channels {channels}")
        expected = {f"{name}.reference" for name in tails}
        if channels is not None and set(arrays) != expected:
            raise ValueError(f"arrays {few(sorted(arrays))}, expected {sorted(expected)}")
        model = cls()
        model.tails_ = {}
        for name, tail_config in tails.items():
            tail_arrays = {
                key.removeprefix(f"{name}."): value
                for key, value in arrays.items()
                if key.startswith(f"{name}.")
            }
            model.tails_[name] = TailPValue.from_state(
                tail_config, tail_arrays, what=f"the {name} tail"
            )
        if not model.tails_:
            raise ValueError("Fisher fusion state has no tails")
        return model


class StackedFusion(FisherFusion):
    """Fisher's sum with a learned weight per channel: ``sum_k w_k (-log p_k)``.

    Parameters
    ----------
    fprs : sequence of float, default=(0.01,)
        The false-positive rates whose recalls, with the AUROC, score a weighting on a fold:
        the criterion is the mean of the AUROC and the recall at each. Adding 0.1 % to 1 % was
        tried on validation folds (docs/research/presets.md) and tied, so the default stays 1 %
        alone.

    Attributes
    ----------
    tails_ : dict of str to TailPValue
    weights_ : dict of str to float
        Each channel's weight; all 1 (plain Fisher) when no fold could be formed.
    fold_scores_ : list of float
        Mean criterion of the chosen weighting per fold (for the model's history).
    """

    needs_folds = True
    #: The weights each channel may take; a weighting of all zeros is not allowed.
    WEIGHTS = (1.0, 0.5, 0.0)

    def __init__(self, fprs: Sequence[float] = (0.01,)) -> None:
        self.fprs = tuple(float(f) for f in fprs)
        if not self.fprs or not all(0 < f < 1 for f in self.fprs):
            raise ValueError(f"fprs must be false-positive rates in (0, 1), got {fprs!r}")

    def fit(
        self,
        reference: Mapping[str, np.ndarray],
        resolution: Mapping[str, float],
        folds: Sequence[Mapping[str, Mapping[str, np.ndarray]]] = (),
    ) -> StackedFusion:
        """Fit the tails on ``reference`` and choose the weights on ``folds``.

        Each fold is ``{"reference": {channel: scores}, "attack": {channel: scores}}``: every
        channel's scores of the benign reference flows and of one held-out family's flows, by
        channels that never saw that family. Each fold's scores are put on its own tails (a
        supervised channel refitted without the family has its own scale). A weighting scores
        the mean of the AUROC and the recall at each of ``fprs`` on a fold, each threshold
        being the benign reference flows' ``1 - fpr`` quantile; the weighting with the best
        mean over folds wins, the earlier in :meth:`grid` order on ties (all ones, plain
        Fisher, first).
        """
        super().fit(reference, resolution)
        names = list(self.tails_)
        grid = self.grid(len(names))
        self.weights_ = dict.fromkeys(names, 1.0)
        self.fold_scores_ = []
        if not folds:
            return self
        table = np.zeros((len(folds), len(grid)))
        for i, fold in enumerate(folds):
            benign, attack = [], []
            for name in names:
                step = resolution.get(name, 0.0) if name != "nll" else 0.0
                tail = TailPValue(min_scale=step).fit(_clip(name, fold["reference"][name]))
                benign.append(tail.neg_log_p(_clip(name, fold["reference"][name])))
                attack.append(tail.neg_log_p(_clip(name, fold["attack"][name])))
            B, A = np.vstack(benign), np.vstack(attack)
            for j, weights in enumerate(grid):
                w = np.asarray(weights)[:, None]
                table[i, j] = criterion((w * B).sum(0), (w * A).sum(0), self.fprs)
        best = int(np.argmax(table.mean(axis=0)))
        self.weights_ = dict(zip(names, map(float, grid[best]), strict=True))
        self.fold_scores_ = [float(v) for v in table[:, best]]
        return self

    @classmethod
    def grid(cls, n: int) -> list[tuple[float, ...]]:
        """Every weighting of ``n`` channels, all ones first, none all zeros."""
        return [w for w in itertools.product(cls.WEIGHTS, repeat=n) if any(w)]

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        total = None
        for name, tail in self.tails_.items():
            if self.weights_[name]:
                score = clipped_nll(scores) if name == "nll" else scores[name]
                term = self.weights_[name] * tail.neg_log_p(score)
                total = term if total is None else total + term
        return total

    def channels_read(self) -> frozenset[str]:
        return frozenset(name for name in self.tails_ if self.weights_[name])

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config, arrays = super().get_state()
        config.update(fprs=list(self.fprs), weights=self.weights_, fold_scores=self.fold_scores_)
        return config, arrays

    @classmethod
    def from_state(
        cls, config: Any, arrays: dict[str, np.ndarray], *, channels: Sequence[str] | None = None
    ) -> StackedFusion:
        # The criterion's rates are "fprs"; files written before it took several hold "fpr".
        rates = "fprs" if isinstance(config, dict) and "fpr" not in config else "fpr"
        config = check_object(config, "its config", {"tails", rates, "weights", "fold_scores"})
        fprs = config[rates] if rates == "fprs" else [config[rates]]
        if not isinstance(fprs, list) or not 1 <= len(fprs) <= 16:  # a handful in use
            raise ValueError(f"its fprs {shown(fprs)} are not a short list")
        for value in fprs:
            check_number(value, "its fpr")
            if not 0 < value < 1:
                raise ValueError(f"its fpr {value!r} is not in (0, 1)")
        scores = config["fold_scores"]
        if not isinstance(scores, list) or len(scores) > 1 << 10:  # stack_folds' cap
            raise ValueError(f"its fold scores {shown(scores)} are not a short list")
        for value in scores:
            check_number(value, "a fold score")
        plain = FisherFusion.from_state({"tails": config["tails"]}, arrays, channels=channels)
        model = cls(fprs)
        model.tails_ = plain.tails_
        weights = config["weights"]
        if not isinstance(weights, dict) or set(weights) != set(model.tails_):
            raise ValueError(f"stacked fusion weights {weights!r} do not match its channels")
        for name, value in weights.items():
            if value not in cls.WEIGHTS:
                raise ValueError(f"stacked fusion weight of {name!r} is {value!r}")
        if not any(weights.values()):
            raise ValueError("stacked fusion weights are all zero")
        model.weights_ = {name: float(value) for name, value in weights.items()}
        model.fold_scores_ = [float(v) for v in scores]
        return model


def _clip(name: str, scores: np.ndarray) -> np.ndarray:
    return np.minimum(scores, NLL_CAP) if name == "nll" else np.asarray(scores)


def criterion(benign: np.ndarray, attack: np.ndarray, fprs: Sequence[float]) -> float:
    """The mean of the AUROC of attack scores against benign ones and of the recall at each
    false-positive rate in ``fprs`` (threshold: the benign scores' ``1 - fpr`` quantile)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(benign)), np.ones(len(attack))]
    values = [roc_auc_score(y, np.r_[benign, attack])]
    values += [float(np.mean(attack > np.quantile(benign, 1 - fpr))) for fpr in fprs]
    return float(np.mean(values))


#: ``score`` parameter value -> rule.
FUSIONS: dict[str, type[Fusion]] = {
    "two_stage": TwoStageFusion,
    "nll": NLLFusion,
    "fisher": FisherFusion,
    "stacked": StackedFusion,
}


def fisher(neg_log_ps: list[np.ndarray]) -> np.ndarray:
    """Fisher's combination ``sum_k -log p_k`` (half the usual chi-squared statistic)."""
    return np.sum(neg_log_ps, axis=0)
