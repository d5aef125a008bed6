"""The shared model flags: --set reaches every parameter, typed and checked; --list-params."""

import pytest

from latent_sculpting.cli import build_parser, main
from latent_sculpting.cli.common import (
    NOT_SETTABLE,
    check_model,
    describe,
    model_overrides,
    parameter_table,
    parse_settings,
)
from latent_sculpting.model.params import PARAMETER_CONSTRAINTS


def test_values_are_parsed_to_each_parameters_type():
    parsed = parse_settings(
        [
            "epochs=3",
            "lr=1e-3",
            "flow_standardize=false",
            "undersample_benign=Yes",
            "score=nll",
            "target_fpr=none",
            "device=cpu",
            " margin = 7 ",
        ]
    )
    assert parsed == {
        "epochs": 3,
        "lr": 1e-3,
        "flow_standardize": False,
        "undersample_benign": True,
        "score": "nll",
        "target_fpr": None,
        "device": "cpu",
        "margin": 7.0,
    }
    assert type(parsed["epochs"]) is int and type(parsed["margin"]) is float


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("epochs", "expected NAME=VALUE"),
        ("epoch=3", "unknown parameter 'epoch'; valid names: feature_transform, "),
        ("epochs=3.5", "epochs takes int >= 1"),
        ("epochs=0", "epochs takes int >= 1"),
        ("score=combined", "score takes fisher | nll | two_stage"),
        ("flow_standardize=maybe", "flow_standardize takes true | false"),
        ("target_fpr=1.5", r"target_fpr takes float in \(0, 1\) or none"),
        ("random_state=3", "use --seed"),
        ("verbose=true", "use --quiet"),
    ],
)
def test_bad_settings_say_what_is_accepted(setting, message):
    with pytest.raises(ValueError, match=message):
        parse_settings([setting])


def test_a_parameter_set_twice_or_by_a_disagreeing_alias_is_refused():
    with pytest.raises(ValueError, match="gives epochs twice"):
        parse_settings(["epochs=2", "epochs=3"])
    args = build_parser().parse_args(["train", "-o", "m", "--epochs", "3", "--set", "epochs=4"])
    with pytest.raises(ValueError, match="--epochs 3 and --set epochs=4 disagree"):
        model_overrides(args)
    args = build_parser().parse_args(
        ["train", "-o", "m", "--epochs", "3", "--set", "epochs=3", "--calibration-fraction", "0.3"]
    )
    assert model_overrides(args) == {"epochs": 3, "calibration_fraction": 0.3}
    # compare and benchmark take --set too, and apply it to our presets only.
    args = build_parser().parse_args(["compare", "--set", "forest_trees=7"])
    assert model_overrides(args) == {"forest_trees": 7}


def test_a_combination_is_checked_with_the_preset():
    check_model("fused", {"score": "nll", "forest_trees": 0})
    check_model("default", {"score": "fisher", "stack_folds": 0})
    with pytest.raises(ValueError, match="forest_trees=100 fits a forest channel"):
        check_model("fused", {"score": "nll"})
    with pytest.raises(ValueError, match="boost_iter=100 fits a boost channel"):
        check_model("default", {"score": "nll"})


def test_every_settable_parameter_is_listed_with_its_preset_values():
    table = parameter_table()
    header, *rows = table.splitlines()
    assert header.split()[:3] == ["parameter", "accepts", "default"]
    listed = {row.split()[0] for row in rows if row and not row.startswith("set elsewhere")}
    assert listed == set(PARAMETER_CONSTRAINTS) - set(NOT_SETTABLE)
    assert any(row.split()[:2] == ["forest_trees", "int"] for row in rows)
    assert describe(PARAMETER_CONSTRAINTS["percentile"]) == "float in (0, 100)"


@pytest.mark.parametrize("command", ["train", "reproduce", "compare", "sweep"])
def test_every_model_building_command_has_set_and_list_params(command, capsys):
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([command, "--list-params"])
    assert stop.value.code == 0
    assert "forest_trees" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert "--list-params lists them" in " ".join(capsys.readouterr().out.split())


def test_bad_settings_stop_a_command_before_it_reads_data(capsys, tmp_path):
    code = main(["reproduce", "--set", "score=nll", "--data", str(tmp_path / "absent")])
    assert code == 2
    assert "boost_iter=100 fits a boost channel" in capsys.readouterr().err


#: The least each command needs to parse, and the commands --threads is on.
THREADS_COMMANDS = {
    "reproduce": [],
    "train": ["-o", "m.sculpt"],
    "score": ["m.sculpt", "flows.csv", "-o", "out.parquet"],
    "serve": ["m.sculpt"],
    "adapt": ["m.sculpt", "--benign", "b.csv", "-o", "a.sculpt"],
    "export": ["m.sculpt", "--onnx", "-o", "m.onnx"],
    "benchmark": [],
    "compare": [],
    "sweep": [],
}


@pytest.mark.parametrize("command", sorted(THREADS_COMMANDS))
def test_every_command_that_computes_takes_threads(command, capsys):
    parser = build_parser()
    argv = [command, *THREADS_COMMANDS[command]]
    assert parser.parse_args(argv).threads is None  # auto
    assert parser.parse_args([*argv, "--threads", "auto"]).threads == "auto"
    assert parser.parse_args([*argv, "--threads", "3"]).threads == 3
    for bad in ("0", "-2", "two"):
        with pytest.raises(SystemExit):
            parser.parse_args([*argv, "--threads", bad])
        error = capsys.readouterr().err
        assert f"argument --threads: takes auto or a whole number at least 1, got '{bad}'" in error


def test_threads_sets_n_jobs_unless_set_gives_it():
    from latent_sculpting.cli.common import apply_threads

    parser = build_parser()
    args = parser.parse_args(["train", "-o", "m.sculpt", "--threads", "2"])
    assert apply_threads(args, {}) == {"n_jobs": 2}
    args = parser.parse_args(["train", "-o", "m.sculpt", "--set", "n_jobs=-1"])
    assert apply_threads(args, model_overrides(args)) == {"n_jobs": -1}
    args = parser.parse_args(["train", "-o", "m.sculpt", "--threads", "2", "--set", "n_jobs=3"])
    with pytest.raises(ValueError, match="--threads 2 and --set n_jobs=3 disagree"):
        apply_threads(args, model_overrides(args))
    assert parse_settings(["n_jobs=-1"]) == {"n_jobs": -1}
    assert describe(PARAMETER_CONSTRAINTS["n_jobs"]) == "-1 or int >= 1 or none"
    with pytest.raises(ValueError, match="n_jobs takes -1 or int >= 1 or none"):
        parse_settings(["n_jobs=0"])
