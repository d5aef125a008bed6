"""How many held-out benign flows a threshold needs: one rule for fit, adapt and the CLI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.cli import main
from latent_sculpting.model.calibration import (
    calibration_rows,
    check_calibration_rows,
    conformal_rows,
    conformal_threshold,
)
from latent_sculpting.model.parts import FittedParts

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("alpha", "n"), [(0.1, 9), (0.05, 19), (0.01, 99), (0.001, 999)])
def test_conformal_rows_is_the_fewest_scores_with_a_threshold(alpha, n):
    assert conformal_rows(alpha) == n
    assert math.isfinite(conformal_threshold(np.arange(float(n)), alpha))
    assert conformal_threshold(np.arange(float(n - 1)), alpha) == math.inf


def test_calibration_rows_count_as_fit_splits_them():
    # 643 benign rows x 0.2 = 129 held out; a rule with reference rows keeps half (65).
    assert calibration_rows(643, 0.2, needs_reference=True) == 65
    assert calibration_rows(643, 0.2, needs_reference=False) == 129


def test_check_names_the_count_the_minimum_and_the_ways_out():
    with pytest.raises(ValueError, match=r"needs at least 99 .* there would be 65") as info:
        check_calibration_rows(65, 0.01, ways_out="Hold out more, ")
    assert "Hold out more" in str(info.value) and "1/(n+1) = 0.0152" in str(info.value)
    check_calibration_rows(65, 0.01, coarse=True)  # accepted
    check_calibration_rows(99, 0.01)
    check_calibration_rows(5, None)  # no target: holdout_split's floor decides


def table(n_benign: int, seed: int = 0) -> pd.DataFrame:
    """Synthetic flows: ``n_benign`` benign rows and two attack families of 150 rows."""
    rng = np.random.default_rng(seed)
    benign = rng.normal(size=(n_benign, 6))
    scan = rng.normal(size=(150, 6)) + 4 * np.eye(6)[0]
    flood = rng.normal(size=(150, 6)) + 4 * np.eye(6)[1]
    frame = pd.DataFrame(np.vstack([benign, scan, flood]), columns=[f"f{i}" for i in range(6)])
    frame["label"] = ["normal"] * n_benign + ["scan"] * 150 + ["flood"] * 150
    return frame


def train(tmp_path, *extra: str) -> int:
    src = tmp_path / "flows.csv"
    table(650).to_csv(src, index=False)
    return main(
        [
            "train",
            "--data",
            str(src),
            "--label-column",
            "label",
            "--benign-label",
            "normal",
            "--preset",
            "fast",
            "--target-fpr",
            "0.01",
            "-o",
            str(tmp_path / "m.sculpt"),
            "--quiet",
            *extra,
        ]
    )


def test_train_refuses_650_benign_flows_for_one_percent(tmp_path, capsys):
    # 650 x 0.2 = 130 held out, 65 set the threshold after the reference half: fewer than 99.
    assert train(tmp_path) == 2
    err = capsys.readouterr().err
    assert "needs at least 99 calibration flows" in err and "there would be 65" in err
    assert "calibration_fraction" in err and "coarse_threshold" in err
    assert "Warning" not in err and not (tmp_path / "m.sculpt").exists()


def test_train_accepts_the_coarser_threshold_when_told_and_prints_its_floor(tmp_path, capsys):
    assert train(tmp_path, "--coarse-threshold") == 0
    err = capsys.readouterr().err
    assert "at most 1/(n+1) = 0.0152" in err
    model = LatentSculpting.load(tmp_path / "m.sculpt")
    assert len(model.calibration_scores_) == 65 and model.coarse_threshold
    assert model.threshold_ == model.calibration_scores_[-1]


def test_fit_refuses_before_fitting(monkeypatch):
    frame = table(650)
    X, y = frame.drop(columns="label").to_numpy(np.float32), (frame["label"] != "normal").to_numpy()
    model = LatentSculpting(**{**preset("fast"), "target_fpr": 0.01}, random_state=0)
    monkeypatch.setattr(FittedParts, "fit_stage1", None)  # reaching it would fail otherwise
    with pytest.raises(ValueError, match="there would be 65"):
        model.fit(X, y.astype(int), groups=frame["label"].to_numpy())
