"""Every preset gives the scores saved in tests/data/reference_scores.npz (reference_scores.py)."""

import numpy as np
import pytest
from reference_scores import PATH, PRESET_NAMES, preset_scores


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_preset_scores_match_the_saved_reference(name):
    saved = np.load(PATH, allow_pickle=False)
    now = preset_scores(name)
    for key, value in now.items():
        np.testing.assert_allclose(
            value, saved[f"{name}/{key}"], rtol=1e-5, atol=1e-6, err_msg=f"{name} {key}"
        )
