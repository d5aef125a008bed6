"""Scoring a batch of flows into an output table: the unit shared by every scoring engine.

``sculpt score`` (local, streaming), the HTTP service and the Ray engine all call
:func:`score_frame`, so a flow gets the same columns and the same numbers whichever way it is
scored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .estimator import LatentSculpting, conformal_p_values

__all__ = ["OUTPUT_COLUMNS", "score_frame"]

#: Columns appended to the input's identifier columns, in order.
OUTPUT_COLUMNS = ("score", "p_value", "is_attack", "flagged_by")


def score_frame(
    model: LatentSculpting, features: Any, identifiers: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Score one batch of flows.

    Parameters
    ----------
    model : LatentSculpting
        A fitted detector.
    features : DataFrame or array of shape (n, n_features)
        Raw flow features; a DataFrame is matched to the model's feature names.
    identifiers : DataFrame, optional
        Identifier columns of the same rows (IPs, ports, timestamp, ...), copied to the output.

    Returns
    -------
    DataFrame
        ``identifiers`` followed by ``score`` (higher = more anomalous), ``p_value``
        (split-conformal, against benign calibration flows), ``is_attack`` (``score >
        threshold_``) and ``flagged_by`` (``"stage1"`` when the Stage-1 nearest-centroid rule
        calls the flow an attack, ``"stage2"`` when only the score threshold does, ``""`` for
        benign).
    """
    details = model.score_details(features)
    score = details["score"]
    is_attack = score > model.threshold_
    stage1 = details.get("stage1_attack", np.zeros(len(score), dtype=bool))
    flagged_by = np.where(is_attack & stage1, "stage1", np.where(is_attack, "stage2", ""))
    out = (
        identifiers.reset_index(drop=True).copy()
        if identifiers is not None
        else pd.DataFrame(index=pd.RangeIndex(len(score)))
    )
    if len(out) != len(score):
        raise ValueError(
            f"identifiers has {len(out)} rows but features has {len(score)}; they must align"
        )
    out["score"] = score
    out["p_value"] = conformal_p_values(model.calibration_scores_, score)
    out["is_attack"] = is_attack
    out["flagged_by"] = flagged_by
    return out
