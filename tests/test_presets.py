"""Presets: complete, valid, and independent of the constructor's defaults."""

import pytest

from latent_sculpting import PRESETS, LatentSculpting, preset
from latent_sculpting.model.params import PARAMETER_CONSTRAINTS, RUN_PARAMETERS, check_params


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_names_every_parameter_but_the_run_settings(name):
    # Then no constructor default reaches a preset: changing one cannot change its models.
    assert set(preset(name)) == set(PARAMETER_CONSTRAINTS) - set(RUN_PARAMETERS)
    check_params(LatentSculpting(**preset(name)).get_params())


def test_the_paper_presets_keep_the_papers_choices():
    v1 = preset("paper-v1")
    assert v1["encoder"] == "cnn_transformer" and v1["loss"] == "dual_centroid"
    assert v1["score"] == "two_stage" and v1["calibration"] == "train"
    assert v1["selection"] == "centroid_f1" and not v1["flow_standardize"]
    assert v1["svdd_dim"] == v1["forest_trees"] == 0
    v2 = preset("paper-v2")
    assert v2["encoder"] == "ft_transformer" and v2["percentile"] == 85.0


def test_preset_is_a_copy_and_unknown_names_list_the_known_ones():
    copy = preset("fast")
    copy["epochs"] = 99
    assert PRESETS["fast"]["epochs"] != 99
    with pytest.raises(ValueError, match="unknown preset 'nope'.*'default'"):
        preset("nope")
