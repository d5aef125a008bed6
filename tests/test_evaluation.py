"""Metrics of the protocol: known answers for thresholds, recall, realised FPR and F1."""

from __future__ import annotations

import numpy as np
import pytest

from latent_sculpting.research.evaluation import (
    f1_at_prevalence,
    fold_metrics,
    fpr_key,
    recall_at_fpr,
    threshold_at_fpr,
)


def test_threshold_flags_at_most_the_rate_of_held_out_scores():
    scores = np.arange(1, 1001, dtype=float)  # 1 .. 1000
    assert threshold_at_fpr(scores, 0.01) == 990.0  # 991..1000 above: 10 = 1 %
    assert threshold_at_fpr(scores, 0.001) == 999.0  # only 1000 above
    assert threshold_at_fpr(scores[::-1], 0.05) == 950.0  # order does not matter
    # Fewer rows than 1/rate: the threshold is the largest score, nothing held out is flagged.
    assert threshold_at_fpr(scores[:500], 0.001) == 500.0
    with pytest.raises(ValueError, match="fpr must be in"):
        threshold_at_fpr(scores, 0.0)
    with pytest.raises(ValueError, match="at least one score"):
        threshold_at_fpr([], 0.01)


def test_recall_at_fpr_known_answer():
    benign = np.arange(100, dtype=float)  # threshold at 5 %: 94 (95..99 above)
    attacks = np.array([10.0, 94.0, 94.5, 200.0])
    assert recall_at_fpr(benign, attacks, 0.05) == 0.5


def test_f1_at_prevalence_known_answers():
    # Balanced, recall 0.8, FPR 0.2: precision 0.8 / (0.8 + 0.2) = 0.8, F1 0.8.
    assert f1_at_prevalence(0.8, 0.2, 0.5) == pytest.approx(0.8)
    # One attack per 1,000 flows, recall 1, FPR 1 %: precision 0.001 / (0.001 + 0.00999).
    precision = 0.001 / (0.001 + 0.01 * 0.999)
    assert f1_at_prevalence(1.0, 0.01, 0.001) == pytest.approx(2 * precision / (precision + 1))
    assert f1_at_prevalence(0.0, 0.0, 0.5) == 0.0
    assert f1_at_prevalence(1.0, 0.0, 0.01) == 1.0
    with pytest.raises(ValueError, match="prevalence"):
        f1_at_prevalence(1.0, 0.1, 0.0)


def test_fold_metrics_known_answers():
    calibration = np.arange(1000, dtype=float)
    benign = np.array([0.0, 995.0, 999.5, 2000.0])
    attacks = np.array([500.0, 990.0, 1e6])
    m = fold_metrics(
        calibration, benign, attacks, prevalence=0.25, attack_labels=np.array(["a", "b", "b"])
    )
    assert [fpr_key(f) for f in (0.05, 0.01, 0.001)] == ["0.05", "0.01", "0.001"]
    assert m["threshold"] == {"0.05": 949.0, "0.01": 989.0, "0.001": 998.0}
    assert m["recall_at_fpr"] == {"0.05": 2 / 3, "0.01": 2 / 3, "0.001": 1 / 3}
    assert m["realised_fpr"] == {"0.05": 0.75, "0.01": 0.75, "0.001": 0.5}
    assert m["per_class_recall"]["0.01"] == {"a": 0.0, "b": 1.0}
    assert m["f1_balanced"]["0.01"] == pytest.approx(f1_at_prevalence(2 / 3, 0.75, 0.5))
    assert m["f1_prevalence"]["0.01"] == pytest.approx(f1_at_prevalence(2 / 3, 0.75, 0.25))
    # AUROC: of 12 (attack, benign) pairs the attack scores higher in 1 + 1 + 4.
    assert m["auroc"] == pytest.approx(6 / 12)
    unknown = fold_metrics(calibration, benign, attacks, prevalence=np.nan)
    assert np.isnan(unknown["f1_prevalence"]["0.01"])
