"""A model file saved by the package before it was split into subpackages scores as it did.

``tests/data/pre-restructure/`` holds a ``fast``-preset model written by commit 39b825e and its
scores of every 10th flow of the embedded sample (``make.py`` there says how). Model files hold
no module paths (safetensors and JSON, never pickles), so moving modules must not change what a
file means.
"""

from pathlib import Path

import numpy as np
import pytest

from latent_sculpting import LatentSculpting
from latent_sculpting.data import read_flows, sample_path

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

HERE = Path(__file__).parent / "data" / "pre-restructure"


@pytest.fixture(scope="module")
def scored():
    model = LatentSculpting.load(HERE / "fast.sculpt")
    X = read_flows(sample_path(), spec=model.spec_).X[::10]
    return model, X, np.load(HERE / "fast-scores.npz")


def test_a_file_saved_before_the_restructure_gives_its_scores(scored):
    model, X, expected = scored
    # Float32 arithmetic in BLAS and torch kernels that differ by CPU: 1e-6 relative; a scale
    # moved by 1e-3 moves the scores by far more (the next test).
    np.testing.assert_allclose(model.decision_function(X), expected["scores"], rtol=1e-6, atol=1e-6)
    # p-values are ranks among the calibration scores: a score within rounding of a
    # calibration score may cross it, so nearly all, not all, must be equal.
    same = model.p_values(X) == expected["p_values"]
    assert same.mean() >= 0.999


def test_the_comparison_sees_a_scale_moved_by_a_thousandth(scored):
    model, X, expected = scored
    scale = model.preprocessor_.scale_
    model.preprocessor_.scale_ = scale * (1 + 1e-3)
    try:
        moved = model.decision_function(X)
    finally:
        model.preprocessor_.scale_ = scale
    assert not np.allclose(moved, expected["scores"], rtol=1e-6, atol=1e-6)
