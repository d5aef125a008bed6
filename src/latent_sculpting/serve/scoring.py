"""Scoring a batch of flows: the one scorer every engine shares.

``sculpt score`` (one process), the Ray engine (one actor per worker) and the HTTP service all
turn records into a :class:`~latent_sculpting.io.encoding.FlowBatch` and hand it to a
:class:`Scorer`, so a flow gets the same columns and the same numbers whichever way it is
scored, and the flag counts of a run are kept in one place (:class:`ScoreTally`). By default
each flagged flow is explained (:mod:`latent_sculpting.monitor.explain`) with the benign profile the
model file holds; a model written before profiles existed scores without explanations. A scorer
given a :class:`~latent_sculpting.monitor.drift.DriftMonitor` (:func:`drift_monitor`) also counts
what
it scores against the model's benign training traffic, for the drift report.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from latent_sculpting.io.encoding import FlowBatch
from latent_sculpting.io.flowspec import model_spec
from latent_sculpting.io.formats import get_format
from latent_sculpting.model.estimator import conformal_p_values
from latent_sculpting.monitor.drift import DriftMonitor, RollingDriftMonitor
from latent_sculpting.monitor.explain import Explainer
from latent_sculpting.monitor.reasons import Explanation

__all__ = [
    "NO_PROFILE",
    "OUTPUT_COLUMNS",
    "ScoreTally",
    "ScoredBatch",
    "Scorer",
    "default_explainer",
    "drift_monitor",
    "drift_summary",
    "new_run",
]

#: Columns appended to the input's identifier columns, in order; ``explanation`` follows them
#: when flows are explained.
OUTPUT_COLUMNS = ("score", "p_value", "is_attack", "flagged_by")
#: Why a model cannot explain its alerts.
NO_PROFILE = (
    "the model file holds no benign profile (it was written before explanations existed): "
    "flows are scored without explanations; train it again to get them"
)


def default_explainer(model: Any) -> Explainer | None:
    """The model's own explainer: its ``benign_profile_`` and its ``decision_function``, with
    :class:`~latent_sculpting.monitor.explain.Explainer`'s defaults; None when the model has no
    profile
    (a model file written before profiles existed)."""
    profile = getattr(model, "benign_profile_", None)
    if profile is None:
        return None
    return Explainer(profile, model.decision_function)


@dataclass
class ScoreTally:
    """Counts over every batch a scorer has seen (a run's summary).

    ``benign_*``/``attack_*`` count rows whose label was benign/an attack, when the records
    carried labels.
    """

    rows: int = 0
    flagged: int = 0
    flagged_stage1: int = 0
    flagged_stage2: int = 0
    labelled_rows: int = 0
    benign_rows: int = 0
    benign_flagged: int = 0
    attack_rows: int = 0
    attack_flagged: int = 0

    def add(
        self,
        is_attack: np.ndarray,
        flagged_by: np.ndarray,
        benign: np.ndarray | None,
        labelled: np.ndarray | None = None,
    ) -> None:
        """Count a batch; ``benign`` says which rows are labelled benign, and ``labelled``
        (default: every row, when ``benign`` is given) which carry a label at all."""
        self.rows += len(is_attack)
        self.flagged += int(is_attack.sum())
        self.flagged_stage1 += int((flagged_by == "stage1").sum())
        self.flagged_stage2 += int((flagged_by == "stage2").sum())
        if benign is not None and labelled is not None:
            is_attack, benign = is_attack[labelled], benign[labelled]
        if benign is not None:
            self.labelled_rows += len(benign)
            self.benign_rows += int(benign.sum())
            self.benign_flagged += int((is_attack & benign).sum())
            self.attack_rows += int((~benign).sum())
            self.attack_flagged += int((is_attack & ~benign).sum())

    def merge(self, other: ScoreTally) -> None:
        for key, value in asdict(other).items():
            setattr(self, key, getattr(self, key) + value)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rows": self.rows,
            "flagged": self.flagged,
            "flagged_share": self.flagged / self.rows if self.rows else 0.0,
            "flagged_by": {"stage1": self.flagged_stage1, "stage2": self.flagged_stage2},
        }
        if self.labelled_rows:
            out["labelled"] = {
                "benign_rows": self.benign_rows,
                "benign_flagged": self.benign_flagged,
                "attack_rows": self.attack_rows,
                "attack_flagged": self.attack_flagged,
            }
        return out


@dataclass
class ScoredBatch:
    """One scored batch (:meth:`Scorer.score_columns`): the identifier columns and, row-aligned
    with them, the arrays :meth:`Scorer.score` puts in its frame.

    ``explanations`` holds one :class:`~latent_sculpting.monitor.reasons.Explanation` per flagged
    row
    and None for the others, or is None when the batch was not explained; ``labels`` are the
    records' labels (in column ``label_column``), when they carried them.
    """

    identifiers: pa.Table
    score: np.ndarray
    p_value: np.ndarray
    is_attack: np.ndarray
    flagged_by: np.ndarray
    explanations: list[Explanation | None] | None = None
    labels: np.ndarray | None = None
    label_column: str | None = None

    def __len__(self) -> int:
        return len(self.score)

    def frame(self) -> pd.DataFrame:
        """The frame :meth:`Scorer.score` returns."""
        out = self.identifiers.to_pandas()
        out["score"] = self.score
        out["p_value"] = self.p_value
        out["is_attack"] = self.is_attack
        out["flagged_by"] = self.flagged_by
        if self.explanations is not None:
            out["explanation"] = np.array(
                ["" if e is None else e.text() for e in self.explanations], dtype=object
            )
        if self.labels is not None:
            out[self.label_column] = self.labels
        return out

    def table(self) -> pa.Table:
        """:meth:`frame`'s columns as an Arrow table, built without pandas (the service's CSV
        answers: the text ``sculpt score`` writes for these rows)."""
        names = list(self.identifiers.column_names) + list(OUTPUT_COLUMNS)
        # from_pandas: NaN becomes null, as it does when the frame is written.
        columns = list(self.identifiers.columns) + [
            pa.array(self.score, pa.float64(), from_pandas=True),
            pa.array(self.p_value, pa.float64(), from_pandas=True),
            pa.array(self.is_attack, pa.bool_()),
            pa.array(self.flagged_by, pa.string()),
        ]
        if self.explanations is not None:
            names.append("explanation")
            columns.append(
                pa.array(["" if e is None else e.text() for e in self.explanations], pa.string())
            )
        if self.labels is not None:
            names.append(self.label_column)
            columns.append(pa.array(self.labels, from_pandas=True))
        return pa.Table.from_arrays(columns, names=names)


class Scorer:
    """Scores batches of flows with one fitted model and tallies the verdicts.

    Parameters
    ----------
    model : LatentSculpting
        A fitted detector; its ``spec_`` describes the records.
    explain : bool, default True
        Add an ``explanation`` column: for each flagged flow its top features with their values
        and how unusual each is among benign training flows
        (:mod:`latent_sculpting.monitor.explain`),
        an empty string for the others. Needs the model's ``benign_profile_``; without one (a
        model file written before profiles existed) there is no column and
        :attr:`explain_missing` says why.
    explainer : Explainer, optional
        The explainer to use instead of :func:`default_explainer` (implies ``explain``).
    drift : DriftMonitor, optional
        Counts every scored flow's features and flag (:func:`drift_monitor`). When the records
        carry labels, only the flows labelled benign are counted: the question is whether
        *benign* traffic still looks like the benign training traffic, and attacks are meant to
        differ and to be flagged. Their flags are then false alarms, and the report says so;
        flows without labels may be attacks, and the report says that it cannot tell.

    Attributes
    ----------
    tally : ScoreTally
    explainer : Explainer or None
        What explains flagged flows; None when flows are not explained.
    explain_missing : str or None
        :data:`NO_PROFILE` when explanations were asked for and the model cannot give them.
    context : ContextState or None
        For a model with context features: the state of the run the scored records belong to
        (:func:`new_run`), which whoever encodes them passes to
        :func:`~latent_sculpting.io.encoding.encode` and so advances (``sculpt score``: the
        files of one run; ``sculpt serve``: every request of the process, in the order they
        are scored).
    """

    def __init__(
        self,
        model: Any,
        *,
        explain: bool = True,
        explainer: Explainer | None = None,
        drift: DriftMonitor | None = None,
    ) -> None:
        self.model = model
        self.explain_missing = None
        if explainer is None and explain:
            explainer = default_explainer(model)
            if explainer is None:
                self.explain_missing = NO_PROFILE
        self.explainer = explainer
        self.drift = drift
        self.spec = model_spec(model)
        self.tally = ScoreTally()
        self.context = new_run(self.spec)

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The columns :meth:`score` appends to the identifiers (before the label column)."""
        return OUTPUT_COLUMNS + (("explanation",) if self.explainer is not None else ())

    def score(self, batch: FlowBatch, *, explain: bool = True) -> pd.DataFrame:
        """Identifier columns, then ``score`` (higher = more anomalous), ``p_value``
        (split-conformal, against benign calibration flows), ``is_attack`` (``score >
        threshold_``), ``flagged_by`` (``"stage1"`` when the Stage-1 nearest-centroid rule calls
        the flow an attack, ``"stage2"`` when only the score threshold does, ``""`` for benign),
        ``explanation`` when the scorer explains and ``explain`` is true (text for flagged
        flows, ``""`` for the others), and, when the records carry it, the label column."""
        return self.score_explained(batch, explain=explain)[0]

    def score_explained(
        self, batch: FlowBatch, *, explain: bool = True
    ) -> tuple[pd.DataFrame, list[Explanation | None] | None]:
        """:meth:`score`, and the explanation of each row (None for a row not flagged); None
        instead of the list when flows are not explained."""
        scored = self.score_columns(batch, explain=explain)
        return scored.frame(), scored.explanations

    def score_columns(self, batch: FlowBatch, *, explain: bool = True) -> ScoredBatch:
        """What :meth:`score` returns, as arrays beside the identifier table rather than one
        frame: a service answering one flow at a time would spend more on building a pandas
        frame than on scoring it."""
        if getattr(self.model, "stage1", False):
            details = self.model.score_details(batch.X)
            score, stage1 = details["score"], details["stage1_attack"]
        else:
            # The score alone: decision_function skips the channels the score rule weights 0
            # (score_details computes every channel), and gives the same numbers.
            score = self.model.decision_function(batch.X)
            stage1 = np.zeros(len(score), dtype=bool)
        is_attack = score > self.model.threshold_
        flagged_by = np.where(is_attack & stage1, "stage1", np.where(is_attack, "stage2", ""))
        found = None
        if self.explainer is not None and explain:
            found = self._explanations(batch.X, score, is_attack)
        benign = labelled = None
        if batch.labels is not None:
            benign = np.asarray(batch.labels == self.spec.benign_label, dtype=bool)
            unlabelled = get_format(self.spec.format).unlabelled_labels
            if unlabelled:  # CTU-13's Background: neither benign nor attack
                labelled = ~np.isin(batch.labels.astype(str), unlabelled)
        self.tally.add(is_attack, flagged_by, benign, labelled)
        if self.drift is not None:
            counted = slice(None) if benign is None else benign
            self.drift.update(
                batch.X[counted], is_attack[counted], labelled_benign=benign is not None
            )
        return ScoredBatch(
            identifiers=batch.identifiers,
            score=score,
            p_value=conformal_p_values(self.model.calibration_scores_, score),
            is_attack=is_attack,
            flagged_by=flagged_by,
            explanations=found,
            labels=batch.labels,
            label_column=self.spec.label_column,
        )

    def _explanations(
        self, X: np.ndarray, score: np.ndarray, flagged: np.ndarray
    ) -> list[Explanation | None]:
        found: list[Explanation | None] = [None] * len(score)
        rows = np.flatnonzero(flagged)
        if len(rows):
            explained = self.explainer.explain(X[rows], score[rows], batch_rows=len(score))
            for row, explanation in zip(rows.tolist(), explained, strict=True):
                found[row] = explanation
        return found


def new_run(spec: Any) -> Any:
    """A fresh context state for a run of records of ``spec``; None for a spec without
    context features. Bounded: each of its tables holds at most the configuration's
    ``max_entities``, evicting the entities whose last flow is oldest."""
    if spec.context is None:
        return None
    from latent_sculpting.io.context.state import ContextState

    return ContextState(spec.context)


def drift_monitor(model: Any, *, window: int | None = None) -> DriftMonitor | None:
    """A drift monitor against ``model``'s benign training traffic (its ``drift_reference_``).

    Parameters
    ----------
    model : LatentSculpting
    window : int, optional
        Report on the last ``window`` flows only (:class:`RollingDriftMonitor`, for a service);
        None: on every flow counted.

    Returns
    -------
    DriftMonitor or None
        None when the model file predates drift bins.
    """
    reference = getattr(model, "drift_reference_", None)
    if reference is None:
        return None
    if window is None:
        return DriftMonitor(reference)
    return RollingDriftMonitor(reference, window=window)


def drift_summary(monitor: DriftMonitor, *, rows: int, labelled_rows: int) -> dict[str, Any]:
    """The monitor's report as JSON-able dict, saying which of the ``rows`` scored flows it
    counted (all of them, or, of the ``labelled_rows`` that carried labels, the benign ones)."""
    out = monitor.report().to_dict()
    if labelled_rows == 0:
        out["counted"] = "all flows"
    elif labelled_rows == rows:
        out["counted"] = "flows labelled benign"
    else:
        out["counted"] = "flows labelled benign, and every flow of the unlabelled inputs"
    return out
