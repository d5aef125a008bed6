"""Incidents end to end: calibration on held-out benign Zeek flows, ``sculpt incidents``,
``sculpt score --incidents`` with and without ``--target-incidents``, and the report page."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from latent_sculpting import LatentSculpting
from latent_sculpting.cli import main
from latent_sculpting.monitor.incident_calibration import (
    calibration_path,
    load_calibration,
    save_calibration,
)
from latent_sculpting.monitor.incident_io import read_incidents
from latent_sculpting.monitor.incidents import IncidentConfig

pytestmark = pytest.mark.slow

START = 1_600_000_200.0  # a multiple of the 600 s windows


def zeek_flows(seed: int, start: float, hours: float, scanner: bool) -> pd.DataFrame:
    """Benign hosts 10.0.0.1-6 browsing and resolving names; with ``scanner``, 10.0.0.66
    sweeps 300 ports of 10.0.0.1 with unanswered SYNs in 30 s (labelled Malicious)."""
    rng = np.random.default_rng(seed)
    n = int(hours * 600)
    time = start + np.sort(rng.uniform(0, hours * 3600, n))
    web = rng.random(n) < 0.7
    rows = pd.DataFrame(
        {
            "ts": time,
            "id.orig_h": [f"10.0.0.{i}" for i in rng.integers(1, 7, n)],
            "id.orig_p": rng.integers(30000, 60000, n),
            "id.resp_h": np.where(web, "93.184.216.34", "10.0.0.53"),
            "id.resp_p": np.where(web, 443, 53),
            "proto": np.where(web, "tcp", "udp"),
            "service": np.where(web, "ssl", "dns"),
            "duration": rng.gamma(2.0, 0.5, n),
            "orig_bytes": rng.integers(200, 2000, n),
            "resp_bytes": rng.integers(500, 50000, n),
            "conn_state": np.where(web, "SF", "SF"),
            "history": np.where(web, "ShADadFf", "Dd"),
            "orig_pkts": rng.integers(3, 30, n),
            "resp_pkts": rng.integers(3, 60, n),
            "label": "Benign",
        }
    )
    rows["orig_ip_bytes"] = rows["orig_bytes"] + 40 * rows["orig_pkts"]
    rows["resp_ip_bytes"] = rows["resp_bytes"] + 40 * rows["resp_pkts"]
    if scanner:
        k = 300
        scan = pd.DataFrame(
            {
                "ts": start + 1800 + np.arange(k) * 0.1,
                "id.orig_h": "10.0.0.66",
                "id.orig_p": 40000,
                "id.resp_h": "10.0.0.1",
                "id.resp_p": np.arange(1, k + 1),
                "proto": "tcp",
                "service": "-",
                "duration": 0.0,
                "orig_bytes": 0,
                "resp_bytes": 0,
                "conn_state": "S0",
                "history": "S",
                "orig_pkts": 1,
                "resp_pkts": 0,
                "label": "Malicious",
                "orig_ip_bytes": 44,
                "resp_ip_bytes": 0,
            }
        )
        rows = pd.concat([rows, scan]).sort_values("ts", kind="stable")
    rows.insert(1, "uid", [f"C{i}" for i in range(len(rows))])
    return rows.reset_index(drop=True)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    folder = tmp_path_factory.mktemp("incidents")
    zeek_flows(0, START, 2.0, scanner=True).to_csv(folder / "train.csv", index=False)
    zeek_flows(1, START + 86_400, 6.0, scanner=False).to_csv(folder / "benign.csv", index=False)
    zeek_flows(2, START + 2 * 86_400, 2.0, scanner=True).to_csv(folder / "test.csv", index=False)
    model = folder / "model.sculpt"
    argv = ["train", "--data", str(folder / "train.csv"), "--preset", "fast"]
    assert main([*argv, "--target-fpr", "0.01", "-o", str(model), "--quiet"]) == 0
    return folder, model


def covered_host_days(path, window_s: float) -> float:
    """Host-days as the calibration counts them, computed here independently: each host's active
    windows, each for its overlap with the file's first-to-last flow span."""
    flows = pd.read_csv(path)
    lo, hi = flows["ts"].min(), flows["ts"].max()
    windows = set(
        zip(flows["id.orig_h"], np.floor(flows["ts"] / window_s).astype(int), strict=True)
    )
    seconds = sum(max(0.0, min((w + 1) * window_s, hi) - max(w * window_s, lo)) for _, w in windows)
    return seconds / 86_400


def test_a_capture_shorter_than_a_window_counts_its_own_span(lab, capsys):
    """20 minutes of 6 hosts are 2 host-hours, not 6 (one hour-window each): counting whole
    windows would understate every false-incident rate threefold."""
    folder, model = lab
    flows = pd.read_csv(folder / "benign.csv")
    short = flows[flows["ts"] < flows["ts"].min() + 1200]
    short.to_csv(folder / "short.csv", index=False)
    out = folder / "short.incidents.json"
    assert main(["incidents", str(model), str(folder / "short.csv"), "-o", str(out)]) == 0
    capsys.readouterr()
    data = json.loads(out.read_text())
    span = short["ts"].max() - short["ts"].min()
    assert data["hosts"] == 6 and data["windows"] == 6
    assert data["host_days"] == pytest.approx(6 * span / 86_400)
    assert data["host_days"] == pytest.approx(covered_host_days(folder / "short.csv", 3600))


def test_score_without_calibration_says_uncalibrated(lab, capsys):
    folder, model = lab
    out = folder / "plain.jsonl"
    argv = ["score", str(model), str(folder / "test.csv"), "-o", str(folder / "plain.parquet")]
    assert main([*argv, "--incidents", str(out), "--quiet", "--no-drift"]) == 0
    assert "grouped but uncalibrated" in capsys.readouterr().err
    incidents = read_incidents(out)
    scans = [i for i in incidents if i["source"] == "10.0.0.66"]
    assert len(scans) == 1 and scans[0]["n_flagged"] >= 250
    assert "ports of 10.0.0.1" in scans[0]["explanation"]
    assert not scans[0]["calibrated"] and scans[0]["rate"] is None
    # Flow indices are output rows of the scored file, and those rows are the scanner's.
    scored = pd.read_parquet(folder / "plain.parquet")
    rows = scored.iloc[scans[0]["flow_indices"]]
    assert (rows["id.orig_h"] == "10.0.0.66").all() and rows["is_attack"].all()


def test_calibrate_then_target(lab, capsys):
    folder, model = lab
    argv = ["incidents", str(model), str(folder / "benign.csv"), "--window-s", "600"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "benign hosts over" in printed
    calibration = load_calibration(calibration_path(model), LatentSculpting.load(model))
    # 6 hosts active in all 36 windows; the first and last covered from the first and last flow.
    assert calibration.hosts == 6 and calibration.windows == 6 * 36
    assert calibration.host_days == pytest.approx(covered_host_days(folder / "benign.csv", 600))
    assert 6 * 35 * 600 / 86400 < calibration.host_days < 6 * 36 * 600 / 86400
    assert calibration.scores == tuple(sorted(calibration.scores))
    target = 1.0
    out = folder / "target.jsonl"
    argv = ["score", str(model), str(folder / "test.csv"), "-o", str(folder / "t.parquet")]
    argv += ["--incidents", str(out), "--target-incidents", str(target), "--quiet", "--json"]
    assert main([*argv, "--no-drift"]) == 0
    summary = json.loads(capsys.readouterr().out)["incidents"]
    assert summary["calibrated"] and summary["threshold"] == calibration.threshold(target)
    incidents = read_incidents(out)
    assert [i["source"] for i in incidents if i["source"] == "10.0.0.66"] == ["10.0.0.66"]
    assert all(i["score"] >= summary["threshold"] for i in incidents)
    assert all(i["rate"] <= target for i in incidents)
    # The benign rate on held-out benign traffic is what the calibration promised, at most.
    assert calibration.rate(summary["threshold"]) <= target


def test_a_windowed_calibration_and_its_scoring(lab, capsys):
    """``--incident-window`` reaches the calibration and the scoring alike: the calibration
    records it and scoring without it is refused (what a window does to a score:
    tests/test_incidents.py)."""
    folder, model = lab
    whole, windowed = folder / "whole.json", folder / "windowed.json"
    argv = ["incidents", str(model), str(folder / "benign.csv"), "--json"]
    assert main([*argv, "-o", str(whole)]) == 0
    assert main([*argv, "-o", str(windowed), "--incident-window", "30"]) == 0
    capsys.readouterr()
    whole, windowed = load_calibration(whole), load_calibration(windowed)
    assert windowed.grouping["window_s"] == 30.0 and "window_s" not in whole.grouping
    assert (windowed.flows, windowed.host_days) == (whole.flows, whole.host_days)
    out = folder / "w.jsonl"
    argv = ["score", str(model), str(folder / "test.csv"), "-o", str(folder / "w.parquet")]
    argv += ["--incidents", str(out), "--incident-calibration", str(folder / "windowed.json")]
    argv += ["--target-incidents", "1", "--quiet", "--no-drift"]
    assert main(argv) != 0
    assert "'window_s': 30.0" in capsys.readouterr().err
    assert main([*argv, "--incident-window", "30"]) == 0
    scans = [i for i in read_incidents(out) if i["source"] == "10.0.0.66"]
    assert len(scans) == 1 and scans[0]["score"] >= windowed.threshold(1.0)


def test_calibration_file_is_checked(lab, tmp_path):
    folder, model = lab
    fitted = LatentSculpting.load(model)
    path = calibration_path(model)
    if not path.is_file():
        main(["incidents", str(model), str(folder / "benign.csv")])
    good = json.loads(path.read_text())
    for key, value in (("scores", [2.0, 1.0]), ("host_days", 0), ("model", "x"), ("kind", "?")):
        (tmp_path / "bad.json").write_text(json.dumps({**good, key: value}))
        with pytest.raises(ValueError, match="damaged incident calibration"):
            load_calibration(tmp_path / "bad.json")
    calibration = load_calibration(path)
    fitted.threshold_ = fitted.threshold_ + 1.0  # as sculpt adapt would move it
    with pytest.raises(ValueError, match="another model"):
        load_calibration(path, fitted)
    with pytest.raises(ValueError, match="grouping"):
        calibration.check_grouping(IncidentConfig(gap_s=1.0))
    save_calibration(calibration, tmp_path / "copy.json")
    assert load_calibration(tmp_path / "copy.json") == calibration


def test_report_puts_incidents_first(lab, capsys):
    folder, model = lab
    scored, listed = folder / "r.parquet", folder / "r.jsonl"
    argv = ["score", str(model), str(folder / "test.csv"), "-o", str(scored), "--quiet"]
    assert main([*argv, "--incidents", str(listed), "--no-drift"]) == 0
    for extra in ([], ["--incidents", str(listed)]):
        page_path = folder / "page.html"
        assert main(["report", str(scored), "-o", str(page_path), *extra]) == 0
        page = page_path.read_text()
        incidents_at, flows_at = page.index("<h2>Incidents</h2>"), page.index("Flagged flows")
        assert incidents_at < flows_at
        first = page.index('<div class="incident">')
        # The scan is the highest-scoring incident: its card comes first, with its picture.
        card = page[first : page.index("</div>", first)]
        assert "#1 10.0.0.66: " in card and "ports of 10.0.0.1" in card
        assert "data:image/png;base64," in card and "its flagged flows (20 of" in card
        assert ("Grouped by <code>sculpt report</code>" in page) == (not extra)
