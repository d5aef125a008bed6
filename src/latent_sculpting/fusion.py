"""How channel scores combine into the detector's score: the ``score`` parameter's rules.

Every rule reads a dict of per-flow channel scores: ``"nll"`` (the Stage-2 flow's negative
log-likelihood), with Stage 1 ``"distance_benign"`` and ``"distance_attack"`` (squared
distances of the code to the two centroids), and one entry per side channel
(:mod:`latent_sculpting.channels`, e.g. ``"forest"``). It maps them to one score, higher for
more anomalous.

``"nll"``
    The flow alone.
``"two_stage"``
    The paper's rule [1]_: a flow nearer the attack centroid is an attack and ranks above every
    flow the flow model scores.
``"fisher"``
    The flow and every side channel, each turned into ``-log p`` against benign *reference*
    flows held out of every fit (:class:`~latent_sculpting.calibration.TailPValue`), summed:
    Fisher's statistic (Fisher 1925). The channels live on unrelated scales; p-values put them
    on one, and a flow extreme in any channel is extreme in the sum. The fused score is itself
    thresholded on a *separate* benign calibration split, so the detector's conformal guarantee
    does not depend on how well the tail model fits.

A new rule is a class with ``fit``, ``combine``, ``get_state`` and ``from_state`` registered in
:data:`FUSIONS`.

References
----------
.. [1] Chhetri, Thapa, Kumar, Chen. arXiv:2512.22179.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from .calibration import TailPValue

__all__ = [
    "FUSIONS",
    "NLL_CAP",
    "STAGE1_OFFSET",
    "FisherFusion",
    "Fusion",
    "NLLFusion",
    "TwoStageFusion",
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

    def fit(self, reference: Mapping[str, np.ndarray], resolution: Mapping[str, float]) -> Any:
        """Fit on the channel scores of benign reference rows (a no-op here).

        ``resolution`` names the side channels, each with the smallest step between its scores
        that means something.
        """
        return self

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        """The score of each flow from its channel scores."""
        raise NotImplementedError

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Fitted state as a JSON-able config and named arrays (no pickle)."""
        return {}, {}

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> Any:
        """Rebuild from :meth:`get_state` output."""
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


class FisherFusion(Fusion):
    """Fisher's sum of tail ``-log p`` of the flow's NLL and of every side channel.

    Attributes
    ----------
    tails_ : dict of str to TailPValue
        The p-value model of each channel, ``"nll"`` first, fitted on reference scores.
    """

    needs_reference = True
    uses_side_channels = True

    def fit(
        self, reference: Mapping[str, np.ndarray], resolution: Mapping[str, float]
    ) -> FisherFusion:
        """Fit a tail on the reference scores of the flow's NLL and of each side channel in
        ``resolution``, whose value floors the channel's tail scale."""
        self.tails_ = {"nll": TailPValue().fit(reference["nll"])}
        for name, step in resolution.items():
            self.tails_[name] = TailPValue(min_scale=step).fit(reference[name])
        return self

    def combine(self, scores: Mapping[str, np.ndarray]) -> np.ndarray:
        clipped = {**scores, "nll": clipped_nll(scores)}
        return fisher([tail.neg_log_p(clipped[name]) for name, tail in self.tails_.items()])

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        config: dict[str, Any] = {"tails": {}}
        arrays = {}
        for name, tail in self.tails_.items():
            config["tails"][name], tail_arrays = tail.get_state()
            arrays.update({f"{name}.{key}": value for key, value in tail_arrays.items()})
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> FisherFusion:
        model = cls()
        model.tails_ = {}
        for name, tail_config in config["tails"].items():
            tail_arrays = {
                key.removeprefix(f"{name}."): value
                for key, value in arrays.items()
                if key.startswith(f"{name}.")
            }
            model.tails_[name] = TailPValue.from_state(tail_config, tail_arrays)
        if "nll" not in model.tails_:
            raise ValueError(f"Fisher fusion state lacks the 'nll' tail: {sorted(model.tails_)}")
        return model


#: ``score`` parameter value -> rule.
FUSIONS: dict[str, type[Fusion]] = {
    "two_stage": TwoStageFusion,
    "nll": NLLFusion,
    "fisher": FisherFusion,
}


def fisher(neg_log_ps: list[np.ndarray]) -> np.ndarray:
    """Fisher's combination ``sum_k -log p_k`` (half the usual chi-squared statistic)."""
    return np.sum(neg_log_ps, axis=0)
