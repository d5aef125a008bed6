"""`sculpt reproduce` end to end on a small real slice, and the metric helpers."""

import json
import math
import os
import stat

import numpy as np
import pytest

from latent_sculpting.cli import main
from latent_sculpting.research.evaluation import aggregate, binary_metrics, per_class_recall

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

WITHHELD = ["DoS slowloris", "DoS Slowhttptest", "Bot", "Infiltration"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce")
    code = main(
        [
            "reproduce",
            "--preset",
            "fast",
            "--seeds",
            "0",
            "--epochs",
            "1",
            "--flow-epochs",
            "1",
            "--max-per-class",
            "200",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    return out


def _leaves(obj):
    if isinstance(obj, dict):
        for value in obj.values():
            yield from _leaves(value)
    else:
        yield obj


def test_reproduce_writes_results_markdown_and_plots(run_dir):
    for name in (
        "results.json",
        "results.md",
        "zero_shot_curves.png",
        "score_histograms.png",
        "latent_projection.png",
    ):
        assert (run_dir / name).stat().st_size > 0, name
    assert not list(run_dir.glob(".*tmp*"))
    # Written through a private temporary file, but published with ordinary permissions.
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE((run_dir / "results.json").stat().st_mode) == 0o666 & ~umask


def test_results_json_has_the_documented_keys_and_sane_metrics(run_dir):
    results = json.loads((run_dir / "results.json").read_text())
    for block in ("known", "zero_shot"):
        for metric in ("f1", "auroc", "auprc", "precision", "recall"):
            stat = results[block][metric]
            assert set(stat) == {"mean", "std"}
            assert 0 <= stat["mean"] <= 1
    recall = results["zero_shot"]["per_attack_recall"]
    assert sorted(recall) == sorted(WITHHELD)
    assert sorted(results["thresholds"]) == ["85", "90", "95", "97", "99"]
    values = [v for v in _leaves(results["thresholds"]) if isinstance(v, float)]
    assert all(0 <= v <= 1 for v in values if not math.isnan(v))
    assert len(set(values)) > 5  # metrics are not all equal
    config = results["config"]
    assert config["seeds"] == [0] and config["params"]["epochs"] == 1
    assert all(len(f["sha256"]) == 64 for f in config["data_files"])
    assert {"stage1", "stage2"} <= set(config["seconds"]["per_stage_mean"])
    markdown = (run_dir / "results.md").read_text()
    assert "0.867" in markdown and "Infiltration" in markdown


def test_reproduce_rejects_an_unknown_withheld_class(tmp_path, capsys):
    code = main(
        [
            "reproduce",
            "--preset",
            "fast",
            "--withhold",
            "Teleportation",
            "--seeds",
            "0",
            "--max-per-class",
            "50",
            "--out",
            str(tmp_path),
            "--quiet",
        ]
    )
    assert code == 2
    assert "Teleportation" in capsys.readouterr().err


def test_binary_metrics_known_answer():
    y = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.6, 0.4, 0.9])
    m = binary_metrics(y, scores, scores > 0.5)
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == 0.5
    assert m["auroc"] == 0.75 and m["fpr"] == 0.5


def test_per_class_recall_and_aggregate():
    recall = per_class_recall(np.array(["Bot", "Bot", "DDoS"]), np.array([1, 0, 1]))
    assert recall == {"Bot": 0.5, "DDoS": 1.0}
    agg = aggregate([{"f1": 0.8, "x": {"a": 1.0}}, {"f1": 0.9, "x": {"a": 3.0}}])
    # Sample std (ddof=1): sqrt(((0.8 - 0.85)^2 + (0.9 - 0.85)^2) / 1).
    assert agg["f1"]["mean"] == pytest.approx(0.85)
    assert agg["f1"]["std"] == pytest.approx(0.05 * np.sqrt(2))
    assert agg["x"]["a"] == {"mean": 2.0, "std": pytest.approx(np.sqrt(2))}
    one = aggregate([{"f1": 0.8}])["f1"]
    assert one["mean"] == 0.8 and np.isnan(one["std"])
