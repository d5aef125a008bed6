"""The drift report where flows are scored: ``sculpt score`` (summary, file, stderr), the Ray
engine's workers, and the service's ``GET /v1/drift``; warnings on shifted traffic, none on
traffic like the training traffic."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.cli import main
from latent_sculpting.data import iter_flow_batches, read_flows, sample_path
from latent_sculpting.monitor.drift import DriftMonitor, RollingDriftMonitor
from latent_sculpting.serve.engines.local import drift_path, score_files
from latent_sculpting.serve.scoring import Scorer, drift_monitor

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

TARGET = 0.05


@pytest.fixture(scope="module")
def files(tmp_path_factory, slower_network):
    """Raw files of the embedded sample: training rows (60 % of the benign flows, 200 of each
    attack), the other 40 % of the benign flows with and without labels, the same on a slower
    network, and the held-out benign flows mixed with attacks."""
    folder = tmp_path_factory.mktemp("drift")
    days = ("monday", "tuesday", "wednesday", "thursday", "friday")
    raw = pd.concat([pd.read_parquet(sample_path() / f"{d}.parquet") for d in days])
    raw = raw.sample(frac=1.0, random_state=0).reset_index(drop=True)
    benign = raw[raw["Label"] == "BENIGN"]
    cut = int(0.6 * len(benign))
    attacks = raw[raw["Label"] != "BENIGN"].groupby("Label").head(200)
    pd.concat([benign.iloc[:cut], attacks]).to_parquet(folder / "train.parquet")
    held = benign.iloc[cut:]
    held.to_parquet(folder / "held.parquet")
    held.drop(columns=["Label"]).to_parquet(folder / "held-unlabelled.parquet")
    slower_network(held.drop(columns=["Label"])).to_parquet(folder / "slow.parquet")
    others = raw[raw["Label"] != "BENIGN"].drop(attacks.index).head(len(held))
    mixed = pd.concat([held, others])
    mixed.to_parquet(folder / "mixed.parquet")
    mixed.drop(columns=["Label"]).to_parquet(folder / "mixed-unlabelled.parquet")
    return folder


@pytest.fixture(scope="module")
def model_path(files):
    table = read_flows(files / "train.parquet")
    model = LatentSculpting(**{**preset("fast"), "target_fpr": TARGET}, random_state=0)
    model.fit(table.frame(), table.y, groups=table.labels, spec=table.spec)
    return model.save(files / "model.sculpt")


@pytest.fixture(scope="module")
def model(model_path):
    return LatentSculpting.load(model_path)


def test_no_warning_on_held_out_benign_flows_like_the_training_flows(model, files, tmp_path):
    out = tmp_path / "held.parquet"
    summary = score_files(model, files / "held.parquet", out, progress=False)
    drift = summary["drift"]
    assert not drift["warning"] and not drift["drifted"] and drift["reasons"] == []
    assert drift["n_flows"] == summary["rows"] and drift["counted"] == "flows labelled benign"
    assert drift["n_labelled_benign"] == drift["n_flows"]
    assert drift["flagged_share"] < 2 * TARGET
    assert summary["drift_file"] == str(drift_path(out)) == str(out) + ".drift.json"
    assert json.loads(drift_path(out).read_text()) == drift


def test_a_warning_names_the_moved_features_on_a_slower_network(model, files, tmp_path):
    summary = score_files(model, files / "slow.parquet", tmp_path / "slow.csv", progress=False)
    drift = summary["drift"]
    assert drift["drifted"] and drift["counted"] == "all flows" and drift["n_labelled_benign"] == 0
    moved = [name for name, f in drift["features"].items() if f["drifted"]]
    assert "Flow Duration" in moved and "Flow Bytes/s" in moved
    assert drift["top_features"][0]["drifted"]
    named_first = drift["top_features"][0]["feature"]
    assert any(named_first in reason for reason in drift["reasons"])
    # The same flows scored without the shift: no warning (the shift, not the flows, moved).
    plain = score_files(
        model, files / "held-unlabelled.parquet", tmp_path / "plain.csv", progress=False
    )
    assert not plain["drift"]["warning"]


def test_only_flows_labelled_benign_are_counted_when_labels_are_there(model, files, tmp_path):
    labelled = score_files(model, files / "mixed.parquet", tmp_path / "a.parquet", progress=False)
    n_benign = len(pd.read_parquet(files / "held.parquet"))
    assert labelled["drift"]["n_flows"] == n_benign
    assert labelled["drift"]["n_flagged"] == labelled["labelled"]["benign_flagged"]
    assert not labelled["drift"]["warning"]
    # Without labels every flow counts: half are attacks, flagged, and unlike benign traffic.
    # The report must not call the flags false alarms: it cannot know they are not attacks.
    blind = score_files(
        model, files / "mixed-unlabelled.parquet", tmp_path / "b.parquet", progress=False
    )
    drift = blind["drift"]
    assert drift["n_flows"] == 2 * n_benign and drift["n_labelled_benign"] == 0
    assert drift["drifted"] and drift["flag_rate_exceeded"]
    assert "the flag rate alone cannot tell which" in drift["consequence"]
    assert "attacks among the flows move features too" in drift["consequence"]
    assert "false-alarm rate exceeds" not in drift["consequence"]


def test_sculpt_score_says_so_on_stderr_and_in_its_json(model_path, files, tmp_path, capsys):
    out = tmp_path / "slow.parquet"
    assert main(["score", str(model_path), str(files / "slow.parquet"), "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"sculpt score: warning: drift \([\d,]+ flows\): ", err)
    report = json.loads(drift_path(out).read_text())
    assert report["drifted"] and report["top_features"][0]["feature"] in err
    assert str(drift_path(out)) in err and "sculpt adapt" in err
    argv = ["score", str(model_path), str(files / "held.parquet"), "-o", str(tmp_path / "h.csv")]
    assert main([*argv, "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["drift"]["drifted"] is False
    assert "flows labelled benign): no drift detected" in captured.err
    assert main([*argv, "--quiet"]) == 0
    assert capsys.readouterr().err == ""  # no progress bar, no verdict when there is no drift
    none = tmp_path / "none.parquet"
    argv = ["score", str(model_path), str(files / "slow.parquet"), "-o", str(none)]
    assert main([*argv, "--no-drift", "--quiet"]) == 0
    assert capsys.readouterr().err == "" and not drift_path(none).exists()


def test_many_flagged_flows_alone_are_not_called_drift_on_stderr(model, files, capsys):
    from latent_sculpting.cli.score import print_drift

    # 20 of 100 unlabelled benign flows flagged against a 5 % target: many, and no drift.
    monitor = DriftMonitor(model.drift_reference_)
    rows = read_flows(files / "held-unlabelled.parquet").X[:100]
    flags = [1] * 20 + [0] * 80
    report = drift_summary_of(monitor.update(rows, flags))
    assert report["warning"] and report["flag_rate_exceeded"] and not report["drifted"]
    print_drift(report, "x.drift.json")
    err = capsys.readouterr().err
    assert err.startswith("sculpt score: warning: many flows flagged (100 flows): 20 % of flows ")
    assert "the flag rate alone cannot tell which" in err and "drift (" not in err


def drift_summary_of(monitor):
    from latent_sculpting.serve.scoring import drift_summary

    return drift_summary(monitor, rows=monitor.n_flows, labelled_rows=0)


def test_a_model_file_without_drift_bins_scores_and_says_so(model, files, tmp_path, capsys):
    old = LatentSculpting.load(model.save(tmp_path / "m.sculpt"))
    old.drift_reference_ = None
    path = old.save(tmp_path / "old.sculpt")
    assert LatentSculpting.load(path).drift_reference_ is None
    out = tmp_path / "s.parquet"
    assert main(["score", str(path), str(files / "slow.parquet"), "-o", str(out), "--quiet"]) == 0
    assert "has no drift bins" in capsys.readouterr().err
    assert out.exists() and not drift_path(out).exists()


def test_merged_worker_counts_give_the_report_of_one_monitor(model, files):
    from latent_sculpting.serve.engines.ray import FileScorer

    whole = Scorer(model, drift=drift_monitor(model))
    for batch in iter_flow_batches(model.spec_, files / "mixed.parquet", 500):
        whole.score(batch)
    # The Ray engine's actor class, run in this process on the file in two halves.
    halves = []
    frame = pd.read_parquet(files / "mixed.parquet")
    actor = FileScorer((files / "model.sculpt").read_bytes(), 300)
    for i, part in enumerate((frame.iloc[: len(frame) // 2], frame.iloc[len(frame) // 2 :])):
        part.to_parquet(files / f"half{i}.parquet")
        result = actor.score(str(files / f"half{i}.parquet"), str(files / f"shard{i}.parquet"))
        halves.append(result["drift"])
    merged = DriftMonitor(model.drift_reference_)
    for counts in halves:
        merged.add_counts(json.loads(json.dumps(counts)))  # as Ray would carry them
    assert merged.get_counts() == whole.drift.get_counts()
    assert merged.report().to_dict() == whole.drift.report().to_dict()


def test_add_counts_refuses_counts_of_another_reference_or_a_rolling_window(model):
    monitor = DriftMonitor(model.drift_reference_)
    counts = monitor.get_counts()
    with pytest.raises(ValueError, match="bins"):
        monitor.add_counts({**counts, "bins": counts["bins"][:-1]})
    with pytest.raises(ValueError, match="0 <= flagged <= n"):
        monitor.add_counts({**counts, "flagged": 3})
    with pytest.raises(ValueError, match="values for 2 flows"):
        monitor.add_counts({**counts, "n": 2})
    with pytest.raises(TypeError, match="rolling window"):
        RollingDriftMonitor(model.drift_reference_, window=100).add_counts(counts)


# ------------------------------------------------------------------ the service

TOKEN = "drift-token-of-some-length"


@pytest.fixture(scope="module")
def client(model):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from latent_sculpting.serve.service import create_app

    app = create_app(model, token=TOKEN, drift_window=1000)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def _post(client, frame: pd.DataFrame) -> None:
    response = client.post(
        "/v1/score", content=frame.to_csv(index=False), headers={"Content-Type": "text/csv"}
    )
    assert response.status_code == 200, response.text


def test_service_reports_drift_over_its_rolling_window(client, files, caplog, slower_network):
    assert client.get("/v1/drift", headers={"Authorization": "Bearer wrong"}).status_code == 401
    empty = client.get("/v1/drift").json()
    assert empty["n_flows"] == 0 and not empty["drifted"] and empty["window"] == 1000
    held = pd.read_parquet(files / "held-unlabelled.parquet")
    _post(client, held.iloc[:1000])
    report = client.get("/v1/drift").json()
    assert report["n_flows"] == 1000 and not report["drifted"]
    with caplog.at_level("WARNING", logger="latent_sculpting.serve.service"):
        _post(client, slower_network(held.iloc[:1000]))
    report = client.get("/v1/drift").json()
    assert report["drifted"] and report["n_flows"] == 1000  # only the slow flows now
    assert all(re.search("IAT|Duration|/s", f["feature"]) for f in report["top_features"])
    assert any("DRIFT" in record.getMessage() for record in caplog.records)


def test_service_without_drift_bins_answers_404(model, files):
    pytest.importorskip("fastapi")
    import copy

    from fastapi.testclient import TestClient

    from latent_sculpting.serve.service import create_app

    old = copy.copy(model)
    old.drift_reference_ = None
    with TestClient(create_app(old)) as c:
        response = c.get("/v1/drift")
        assert response.status_code == 404 and "no drift bins" in response.json()["detail"]
    with pytest.raises(ValueError, match="drift_window"):
        create_app(model, drift_window=5)
