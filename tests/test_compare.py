"""``sculpt compare``: the common protocol, its files and its numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latent_sculpting.cli import main
from latent_sculpting.compare import calibration_holdout, compare
from latent_sculpting.data import zero_shot_splits
from latent_sculpting.experiment import cap_per_class

METHODS = ["knn", "rf", "ecod", "fast", "fast-stage1"]


@pytest.fixture(scope="module")
def tiny_table(sample_table):
    return cap_per_class(sample_table, 250)


@pytest.fixture(scope="module")
def run(tiny_table, tmp_path_factory, recording):
    out = tmp_path_factory.mktemp("compare")
    factory, log = recording

    results = compare(
        table=tiny_table,
        methods=METHODS,
        seeds=[0, 1],
        out=out,
        verbose=False,
        threads=1,
        factory=factory,
    )
    return results, out, log


def _unit_interval(values):
    for value in values:
        assert 0.0 <= value <= 1.0, value


def test_compare_writes_files_and_metrics_in_unit_interval(run):
    results, out, _ = run
    for name in ("compare.json", "compare.md", "compare_bars.png", "compare_zero_shot_curves.png"):
        assert (out / name).stat().st_size > 0
    on_disk = json.loads((out / "compare.json").read_text())
    assert set(on_disk["methods"]) == set(METHODS)
    assert sorted(on_disk["order"]) == sorted(METHODS)
    for entry in on_disk["methods"].values():
        assert len(entry["per_seed"]) == 2
        for split in ("known", "zero_shot"):
            stats = entry[split]
            _unit_interval(
                stats[k]["mean"] for k in ("f1", "auroc", "auprc", "precision", "recall", "fpr")
            )
        _unit_interval(s["mean"] for s in entry["zero_shot"]["per_attack_recall"].values())
        assert set(entry["zero_shot"]["per_attack_recall"]) == {
            "Bot",
            "DoS Slowhttptest",
            "DoS slowloris",
            "Infiltration",
        }
        assert entry["seconds"]["fit"]["mean"] >= 0 and entry["seconds"]["score"]["mean"] > 0
    assert "native" in on_disk["methods"]["rf"] and "native" not in on_disk["methods"]["knn"]
    assert on_disk["methods"]["rf"]["native"]["threshold"]["mean"] == 0.5
    cfg = on_disk["config"]
    assert len(cfg["data_files"]) == 5 and all(len(f["sha256"]) == 64 for f in cfg["data_files"])
    assert cfg["machine"] and cfg["date"]


def test_order_is_by_zero_shot_auroc_and_table_follows_it(run):
    results, out, _ = run
    aurocs = [results["methods"][n]["zero_shot"]["auroc"]["mean"] for n in results["order"]]
    assert aurocs == sorted(aurocs, reverse=True)
    text = (out / "compare.md").read_text()
    positions = [text.index(f"| {n} |") for n in results["order"]]
    assert positions == sorted(positions)
    assert "Recall (%) per withheld attack class" in text


def test_every_method_fits_on_the_same_rows_without_the_calibration_rows(run, tiny_table):
    _, _, log = run
    splits = zero_shot_splits(tiny_table, seed=42)
    fit_rows, calibration = calibration_holdout(splits.train.y, 0.2, 42)
    for entry in log:
        np.testing.assert_array_equal(entry["X"], splits.train.X[fit_rows])
        assert not entry["labels"] & {"Bot", "DoS Slowhttptest", "DoS slowloris", "Infiltration"}


def test_common_threshold_keeps_calibration_fpr(run):
    results, _, _ = run
    for entry in results["methods"].values():
        # The threshold is P95 of held-out benign scores: on the reserved benign test rows the
        # false-positive rate stays in the neighbourhood of 5 %, whatever the method.
        assert entry["zero_shot"]["fpr"]["mean"] < 0.25


def test_calibration_holdout_is_benign_disjoint_and_seeded():
    y = np.r_[np.zeros(200), np.ones(100)].astype(int)
    fit, cal = calibration_holdout(y, 0.2, 7)
    assert len(cal) == 40 and (y[cal] == 0).all()
    assert not set(fit) & set(cal) and len(fit) + len(cal) == len(y)
    np.testing.assert_array_equal(cal, calibration_holdout(y, 0.2, 7)[1])
    with pytest.raises(ValueError, match="holdout must be in"):
        calibration_holdout(y, 1.5, 0)
    with pytest.raises(ValueError, match="need at least 20"):
        calibration_holdout(y[:150], 0.1, 0)


def test_compare_rejects_bad_arguments(tiny_table, tmp_path):
    with pytest.raises(ValueError, match="unknown method 'svm'"):
        compare(table=tiny_table, methods=["svm"], out=tmp_path, verbose=False)
    with pytest.raises(ValueError, match="percentile must be in"):
        compare(table=tiny_table, methods=["knn"], percentile=100, out=tmp_path, verbose=False)


def test_cli_compare(tmp_path, capsys):
    code = main(
        [
            "compare",
            "--max-per-class",
            "250",
            "--methods",
            "ecod",
            "knn@none",
            "--seeds",
            "0",
            "--no-plots",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert "knn@none" in capsys.readouterr().out
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["methods"]["knn@none"]["feature_transform"] == "none"
    assert not (tmp_path / "compare_bars.png").exists()
    assert main(["compare", "--methods", "nope", "--out", str(tmp_path)]) == 2


def test_merge_of_one_seed_runs_equals_the_two_seed_run(tmp_path):
    def cli(seeds, out):
        args = ["compare", "--max-per-class", "250", "--methods", "ecod", "knn", "--seeds"]
        assert main([*args, *map(str, seeds), "--no-plots", "--quiet", "--out", str(out)]) == 0
        return json.loads((out / "compare.json").read_text())

    both = cli([0, 1], tmp_path / "both")
    cli([0], tmp_path / "s0")
    cli([1], tmp_path / "s1")
    assert (
        main(
            [
                "compare",
                "--merge",
                str(tmp_path / "s0"),
                str(tmp_path / "s1"),
                "--out",
                str(tmp_path / "merged"),
            ]
        )
        == 0
    )
    merged = json.loads((tmp_path / "merged" / "compare.json").read_text())
    assert merged["config"]["seeds_done"] == [0, 1]
    for name in ("ecod", "knn"):
        assert merged["methods"][name]["zero_shot"]["auroc"] == pytest.approx(
            both["methods"][name]["zero_shot"]["auroc"]
        )
    # The same seed twice, or runs of other methods, are refused.
    assert (
        main(
            [
                "compare",
                "--merge",
                str(tmp_path / "s0"),
                str(tmp_path / "both"),
                "--out",
                str(tmp_path / "bad"),
            ]
        )
        == 2
    )


def test_parallel_seeds_give_the_sequential_results(tiny_table, tmp_path):
    kwargs = {"table": tiny_table, "methods": ["knn", "fast"], "seeds": [0, 1], "threads": 1}
    sequential = compare(**kwargs, out=tmp_path / "seq", verbose=False, plots=False)
    parallel = compare(**kwargs, out=tmp_path / "par", verbose=False, plots=False, jobs=2)
    assert parallel["config"]["jobs"] == 2
    assert parallel["config"]["seeds_done"] == [0, 1]
    for name in ("knn", "fast"):
        for seq, par in zip(
            sequential["methods"][name]["per_seed"],
            parallel["methods"][name]["per_seed"],
            strict=True,
        ):
            assert par["seed"] == seq["seed"]
            assert par["zero_shot"]["auroc"] == pytest.approx(seq["zero_shot"]["auroc"], abs=1e-9)
            assert par["threshold"] == pytest.approx(seq["threshold"], rel=1e-6)
    assert (tmp_path / "par" / "seeds" / "seed-1" / "compare.json").is_file()
    assert "2 at a time" in (tmp_path / "par" / "compare.md").read_text()
