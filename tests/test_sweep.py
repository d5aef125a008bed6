"""``sculpt sweep``: each fold withholds one family and never trains on it."""

from __future__ import annotations

import json

import pytest

from latent_sculpting.cli import main
from latent_sculpting.experiment import cap_per_class
from latent_sculpting.sweep import FAMILIES, sweep

METHODS = ["ecod", "rf"]
SEEDS = [0, 1]


@pytest.fixture(scope="module")
def tiny_table(sample_table):
    return cap_per_class(sample_table, 200)


@pytest.fixture(scope="module")
def run(tiny_table, tmp_path_factory, recording):
    out = tmp_path_factory.mktemp("sweep")
    factory, log = recording

    results = sweep(
        table=tiny_table,
        methods=METHODS,
        seeds=SEEDS,
        out=out,
        verbose=False,
        threads=1,
        factory=factory,
    )
    return results, out, log


def test_sweep_never_trains_on_the_family_it_tests(run):
    results, _, log = run
    families = list(results["families"])
    assert families == list(FAMILIES)
    per_family = len(METHODS) * len(SEEDS)
    assert len(log) == len(families) * per_family
    all_attacks = {c for classes in FAMILIES.values() for c in classes}
    for i, entry in enumerate(log):
        family = families[i // per_family]
        withheld = set(FAMILIES[family])
        assert not entry["labels"] & withheld, (family, entry["labels"] & withheld)
        # ... and does train on every other family.
        assert all_attacks - withheld <= entry["labels"]
        assert "BENIGN" in entry["labels"] and "Heartbleed" in entry["labels"]


def test_sweep_metrics_and_files(run):
    results, out, _ = run
    for name in ("sweep.json", "sweep.md", "sweep_heatmap.png"):
        assert (out / name).stat().st_size > 0
    data = json.loads((out / "sweep.json").read_text())
    for entry in data["families"].values():
        assert set(entry["methods"]) == set(METHODS)
        for stats in entry["methods"].values():
            for key in ("recall", "auroc", "test_fpr"):
                assert 0.0 <= stats[key]["mean"] <= 1.0
            assert len(stats["per_seed"]) == len(SEEDS)
            assert set(stats["per_class_recall"]) == set(entry["classes"])
    text = (out / "sweep.md").read_text()
    assert "| PortScan (" in text and "recall at 1 % benign FPR" in text


def test_sweep_skips_absent_families_and_validates(tiny_table, tmp_path):
    results = sweep(
        table=tiny_table,
        methods=["ecod"],
        families={"Bot": ("Bot",), "Ghost": ("Heartbleed - Attempted",)},
        out=tmp_path,
        verbose=False,
        plots=False,
    )
    assert list(results["families"]) == ["Bot"] and results["skipped"] == ["Ghost"]
    with pytest.raises(ValueError, match="fpr must be in"):
        sweep(table=tiny_table, methods=["ecod"], fpr=0, out=tmp_path, verbose=False)
    with pytest.raises(ValueError, match="unknown method"):
        sweep(table=tiny_table, methods=["nope"], out=tmp_path, verbose=False)


def test_cli_sweep(tmp_path, capsys):
    code = main(
        [
            "sweep",
            "--max-per-class",
            "200",
            "--methods",
            "ecod",
            "--families",
            "Bot",
            "DDoS",
            "--fpr",
            "0.05",
            "--no-plots",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    assert "Bot" in capsys.readouterr().out
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert list(data["families"]) == ["Bot", "DDoS"] and data["config"]["fpr"] == 0.05
