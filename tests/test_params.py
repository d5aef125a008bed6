"""The parameter table: it covers the constructor, and the cross-parameter checks say what to do."""

import inspect

import pytest

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.model.params import PARAMETER_CONSTRAINTS, RUN_PARAMETERS, check_params


def params(base="fused", **change):
    return LatentSculpting(**{**preset(base), **change}).get_params()


def test_every_constructor_parameter_has_constraints():
    signature = inspect.signature(LatentSculpting.__init__).parameters
    assert set(PARAMETER_CONSTRAINTS) == set(signature) - {"self"}
    assert set(RUN_PARAMETERS) <= set(PARAMETER_CONSTRAINTS)
    assert LatentSculpting._parameter_constraints is PARAMETER_CONSTRAINTS


def test_a_valid_set_passes_and_one_bad_value_names_parameter_and_value():
    check_params(params())
    check_params(params("default"))
    check_params(params("default", score="fisher", stack_folds=0))
    check_params(params(score="nll", forest_trees=0, target_fpr=0.05, random_state=3))
    with pytest.raises(ValueError, match="'svdd_dim' parameter.*Got -1 instead"):
        check_params(params(svdd_dim=-1))
    with pytest.raises(TypeError):  # scikit-learn's error is both a ValueError and a TypeError
        check_params(params(stage1="yes"))


def test_every_problem_of_a_combination_is_reported_at_once():
    with pytest.raises(ValueError) as error:
        check_params(params(score="two_stage", stage1=False, target_fpr=0.1, calibration="train"))
    message = str(error.value)
    assert "needs stage1=True" in message
    assert "forest_trees=100 fits a forest channel that score='two_stage' does not use" in message
    assert "target_fpr=0.1 needs calibration='holdout'" in message


def test_attention_heads_are_checked_only_where_they_apply():
    check_params(params(encoder="mlp", d_model=10, n_heads=4))
    check_params(params(encoder="ft_transformer", d_model=10, n_heads=4, stage1=False))
    with pytest.raises(ValueError, match="d_model=10 over n_heads=4"):
        check_params(params(encoder="cnn_transformer", d_model=10, n_heads=4))
