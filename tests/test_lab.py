"""The synthetic-traffic lab (benchmarks/lab/lab.py): labelling, schedules, bounds, and a live run.

The live tests need root, ``ip netns`` and the lab's Debian tools (benchmarks/lab/install.sh);
they skip with the reason otherwise. Lab traffic is synthetic: for end-to-end tests and
operational measurements, never pooled with the real datasets.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "lab"))

import lab  # noqa: E402

PCAPS = Path(__file__).resolve().parent / "data" / "pcaps"


def _row(attacker, tool, start, end, family="scan"):
    return lab.LabelRow(attacker, tool, family, start, end, 0, False, tool)


def _flows(rows):
    """nfstream-like flows: (src, dst, first seen in seconds)."""
    return pd.DataFrame(
        {
            "src_ip": [r[0] for r in rows],
            "dst_ip": [r[1] for r in rows],
            "bidirectional_first_seen_ms": [int(r[2] * 1000) for r in rows],
            "bidirectional_packets": [3] * len(rows),
        }
    )


# --------------------------------------------------------------------------------------------
# Labelling, without root


def test_label_flows_by_address_and_window():
    a1, a2, srv, cli = "10.77.101.2", "10.77.102.2", "10.77.1.2", "10.77.11.2"
    rows = [
        _row(a1, "nmap-syn", 100.0, 110.0),
        _row(a1, "masscan", 120.0, 130.0),
        _row(a2, "hydra-ssh", 105.0, 140.0, "bruteforce"),
    ]
    flows = _flows(
        [
            (a1, srv, 101.0),  # inside the scan
            (srv, a1, 111.5),  # attacker as destination, within the 2 s slack after the scan
            (a1, srv, 115.0),  # between the two windows of a1
            (a1, srv, 119.0),  # slack of the masscan window
            (a2, srv, 106.0),
            (cli, srv, 106.0),  # benign during an attack
            (a1, srv, 50.0),  # before any window
        ]
    )
    out = lab.label_flows(flows, rows, slack_s=2.0)
    assert list(out["label"]) == [
        "nmap-syn",
        "nmap-syn",
        lab.UNSCHEDULED,
        "masscan",
        "hydra-ssh",
        lab.BENIGN,
        lab.UNSCHEDULED,
    ]
    assert list(out["family"])[:5] == ["scan", "scan", lab.UNSCHEDULED, "scan", "bruteforce"]
    assert list(flows.columns) == list(out.columns)[:4]  # the input is left alone


def test_label_flows_overlapping_windows_take_the_latest_start():
    a1, srv = "10.77.101.2", "10.77.1.2"
    rows = [_row(a1, "first", 100.0, 110.0), _row(a1, "second", 108.5, 120.0)]
    flows = _flows([(a1, srv, 109.0), (a1, srv, 105.0)])
    for order in (rows, rows[::-1]):  # whatever order the labels file has
        out = lab.label_flows(flows, order, slack_s=1.0)
        assert list(out["label"]) == ["second", "first"]


def test_label_flows_no_slack_and_bad_input():
    a1, srv = "10.77.101.2", "10.77.1.2"
    rows = [_row(a1, "nmap-syn", 100.0, 110.0)]
    out = lab.label_flows(_flows([(a1, srv, 110.5)]), rows, slack_s=0.0)
    assert list(out["label"]) == [lab.UNSCHEDULED]
    with pytest.raises(ValueError, match="bidirectional_first_seen_ms"):
        lab.label_flows(_flows([(a1, srv, 1.0)]).drop(columns="bidirectional_first_seen_ms"), rows)
    with pytest.raises(ValueError, match="slack_s"):
        lab.label_flows(_flows([(a1, srv, 1.0)]), rows, slack_s=-1)


def test_labels_file_round_trip_and_errors(tmp_path):
    rows = [_row("10.77.101.2", "nmap-syn", 100.25, 110.5), _row("10.77.102.2", "x", 1.0, 2.0)]
    path = tmp_path / "labels.csv"
    lab.write_labels(path, rows)
    assert lab.read_labels(path) == rows
    text = path.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([text[0], text[1].replace("110.5", "oops"), text[2]]) + "\n")
    with pytest.raises(ValueError, match=r"bad\.csv line 2"):
        lab.read_labels(bad)
    bad.write_text("\n".join([text[0], text[1].replace("110.5", "99.0")]) + "\n")
    with pytest.raises(ValueError, match="line 2: end 99.0 before start 100.25"):
        lab.read_labels(bad)
    bad.write_text("attacker,tool\n1,2\n")
    with pytest.raises(ValueError, match="columns"):
        lab.read_labels(bad)


def test_schedule_validation():
    good = [{"at": 5, "attack": "nmap-syn", "attacker": 2}, {"at": 1, "attack": "masscan",
                                                              "attacker": 1}]  # fmt: skip
    parsed = lab.parse_schedule(good, attackers=2, duration=10)
    assert [e.attack for e in parsed] == ["masscan", "nmap-syn"]  # in time order
    cases = [
        ({"at": 10, "attack": "nmap-syn", "attacker": 1}, r"at=10"),
        ({"at": 1, "attack": "nmap-xmas", "attacker": 1}, "unknown attack 'nmap-xmas'"),
        ({"at": 1, "attack": "nmap-syn", "attacker": 3}, r"attacker=3 must be in 1\.\.2"),
        ({"at": True, "attack": "nmap-syn", "attacker": 1}, "at=True"),
        ({"at": 1, "attack": "nmap-syn"}, "want keys"),
    ]
    for entry, message in cases:
        with pytest.raises(ValueError, match=message):
            lab.parse_schedule([entry], attackers=2, duration=10)
    with pytest.raises(ValueError, match="JSON list"):
        lab.parse_schedule({"at": 1}, attackers=2, duration=10)


def test_default_schedule_uses_every_attack_within_the_default_run():
    entries = lab.default_schedule()
    assert sorted(e.attack for e in entries) == sorted(lab.ATTACKS)
    lab.parse_schedule(
        [{"at": e.at, "attack": e.attack, "attacker": e.attacker} for e in entries],
        attackers=4,
        duration=150,
    )
    # Each attack's time bound ends it by the end of the run plus one timeout at most.
    assert max(e.at + lab.ATTACKS[e.attack].timeout_s for e in entries) <= 150 + 20


def test_every_attack_is_bounded_in_count_and_time(tmp_path):
    class FakeLab:
        server = lab.Host("x-srv", "server", 0, "10.77.1.2", "10.77.1.1", "r-srv")

    attacker = lab.Host("x-a1", "attacker", 1, "10.77.101.2", "10.77.101.1", "r-a1")
    # What bounds the size of each tool's work, besides the time limit.
    size_bounds = {
        "nmap": ["--host-timeout"],
        "hydra": ["-L", "-P"],
        "hping3": ["-c"],
        "slowhttptest": ["-l", "-c"],
        "masscan": ["--rate", "-p"],
    }
    for name, attack in lab.ATTACKS.items():
        argv = attack.argv(FakeLab(), attacker, tmp_path)
        assert 0 < attack.timeout_s <= 60, name
        assert argv[0] == attack.tool and attack.tool in lab.ATTACK_TOOLS, name
        for flag in size_bounds[attack.tool]:
            assert flag in argv, (name, flag)
        assert argv[-1].endswith("10.77.1.2") or "10.77.1.2" in " ".join(argv), name
        assert "{" not in " ".join(argv), name
    users = (tmp_path / "users.txt").read_text().split()
    assert 0 < len(users) * len(lab.GUESS_PASSWORDS) <= 100


def test_tcpreplay_argv_and_summary():
    argv = lab.tcpreplay_argv("rp0", "x.pcap", pps=3000, loop=2, duration=5.5)
    assert argv == ["tcpreplay", "-i", "rp0", "--stats=0", "--pps=3000", "--loop=2",
                    "--duration=6", "x.pcap"]  # fmt: skip
    assert "--topspeed" in lab.tcpreplay_argv("rp0", "x.pcap", topspeed=True)
    for bad, message in [
        ({}, "exactly one"),
        ({"pps": 1, "mbps": 1}, "exactly one"),
        ({"pps": 0}, "pps must be > 0"),
        ({"pps": 1, "loop": 0}, "loop"),
        ({"pps": 1, "duration": 0}, "duration"),
    ]:
        with pytest.raises(ValueError, match=message):
            lab.tcpreplay_argv("rp0", "x.pcap", **bad)
    # tcpreplay 4.4.3's own summary (from a replay of tests/data/pcaps/dropbox.pcap).
    text = """Actual: 848 packets (90532 bytes) sent in 0.170195 seconds
Rated: 531924.9 Bps, 4.25 Mbps, 4982.52 pps
Statistics for network device: rp0
	Successful packets:        848
	Failed packets:            0
"""
    assert lab.parse_tcpreplay(text) == {
        "packets": 848,
        "bytes": 90532,
        "seconds": 0.170195,
        "mbps": 4.25,
        "pps": 4982.52,
        "failed_packets": 0,
    }
    with pytest.raises(lab.LabError, match="summary"):
        lab.parse_tcpreplay("tcpreplay: something else\n")


def test_prefix_and_sizes_are_checked():
    with pytest.raises(ValueError, match="prefix"):
        lab.Lab("bad prefix")
    with pytest.raises(ValueError, match="prefix"):
        lab.Lab("../etc")
    with pytest.raises(ValueError, match="clients"):
        lab.Lab("ok", clients=0)
    with pytest.raises(ValueError, match="leaf number 255"):
        lab.leaf_addresses(255)


# --------------------------------------------------------------------------------------------
# Live, as root with the tools


def _skip_reasons(**kwargs) -> list[str]:
    try:
        return lab.missing_requirements(**kwargs)
    except OSError as err:  # e.g. no `ip` at all
        return [str(err)]


def _pcap_times(pcap: Path, expression: str) -> list[float]:
    out = subprocess.run(
        ["tcpdump", "-n", "-tt", "-r", str(pcap), *shlex.split(expression)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [float(line.split()[0]) for line in out.splitlines() if line.strip()]


def _nothing_left(names: list[str]) -> None:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [n for n in names if n in listed.split()], listed
    for name in names:
        assert not Path("/run/netns", name).exists()
        assert not Path("/etc/netns", name).exists()
    # No lab veth ever lives in the machine's own namespace; check that none leaked there.
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert not [line for line in links.splitlines() if " r-srv" in line or " r-c1" in line]


@pytest.mark.slow
@pytest.mark.lab
def test_lab_benign_session_and_a_scan_are_captured_labelled_and_torn_down(tmp_path):
    reasons = _skip_reasons(attacks=["nmap-connect"])
    if reasons:
        pytest.skip("lab unavailable: " + "; ".join(reasons))
    prefix = f"t{time.time_ns() % 10**9}"
    pcap = tmp_path / "lab.pcap"
    started = time.monotonic()
    with lab.Lab(prefix, clients=2, attackers=1) as the_lab:
        names = the_lab.namespaces
        assert all(the_lab.services_alive().values())
        capture = lab.Capture(the_lab.procs, the_lab.router, lab.CAPTURE_INTERFACE, pcap)
        schedule = [lab.ScheduleEntry(1.0, "nmap-connect", 1)]
        logs, rows = lab.session(the_lab, duration=6.0, seed=3, schedule=schedule)
        stats = capture.stop()
        alive = the_lab.services_alive()
    _nothing_left(names)
    assert all(alive.values()), alive
    assert stats.captured and stats.dropped == 0, stats

    attacker, server = the_lab.attackers[0].address, the_lab.server.address
    (row,) = rows
    assert (row.attacker, row.tool, row.returncode, row.ended_by_timeout) == (
        attacker,
        "nmap-connect",
        0,
        False,
    )
    attack_times = _pcap_times(pcap, f"host {attacker}")
    assert len(attack_times) >= 300  # a SYN and an answer per port at least
    # The labels cover the attacker's packets (the capture clock is the labels' clock).
    assert all(row.start <= t <= row.end + 1.0 for t in attack_times)
    for client, log in zip(the_lab.clients, logs, strict=True):
        assert log.address == client.address and sum(log.actions.values()) >= 1
        assert not log.failures, log
        assert _pcap_times(pcap, f"src host {client.address} and dst host {server}")

    labels = tmp_path / "labels.csv"
    lab.write_labels(labels, rows)
    summary = lab.label_capture(pcap, labels, tmp_path / "flows.parquet")
    flows = pd.read_parquet(tmp_path / "flows.parquet")
    assert summary["unscheduled_attacker_flows"] == 0
    scan = flows[(flows["src_ip"] == attacker) | (flows["dst_ip"] == attacker)]
    assert len(scan) >= 300 and set(scan["label"]) == {"nmap-connect"}
    assert set(flows.loc[flows.index.difference(scan.index), "label"]) == {lab.BENIGN}
    assert summary["by_label"]["nmap-connect"]["flows"] == len(scan)
    assert time.monotonic() - started < 60


@pytest.mark.slow
@pytest.mark.lab
def test_lab_is_torn_down_after_an_error_inside_it():
    reasons = _skip_reasons()
    if reasons:
        pytest.skip("lab unavailable: " + "; ".join(reasons))
    prefix = f"e{time.time_ns() % 10**9}"
    the_lab = lab.Lab(prefix, clients=1, attackers=1)
    stop = threading.Event()
    with pytest.raises(RuntimeError, match="planted"), the_lab:
        names = the_lab.namespaces
        client = threading.Thread(
            target=lab.run_client,
            args=(the_lab, the_lab.clients[0]),
            kwargs={"seed": 1, "until": time.time() + 30, "stop": stop},
            daemon=True,
        )
        client.start()
        time.sleep(1.0)
        raise RuntimeError("planted")
    stop.set()
    client.join(10)
    assert not client.is_alive()
    _nothing_left(names)
    # A second lab with the same prefix comes up: nothing of the first blocks it.
    with lab.Lab(prefix, clients=1, attackers=1) as again:
        assert all(again.services_alive().values())
    _nothing_left(names)


@pytest.mark.slow
@pytest.mark.lab
def test_replay_reaches_the_capture_end_whole():
    reasons = _skip_reasons(replay=True)
    if reasons:
        pytest.skip("replay unavailable: " + "; ".join(reasons))
    prefix = f"r{time.time_ns() % 10**9}"
    pcap = PCAPS / "dropbox.pcap"
    result = lab.replay(pcap, prefix=prefix, delay=0, verify=True, pps=4000)
    sent = result["tcpreplay"]["packets"]
    assert sent == len(_pcap_times(pcap, "")) and result["tcpreplay"]["failed_packets"] == 0
    assert result["capture"] == {"captured": sent, "dropped_by_kernel": 0}
    _nothing_left([f"{prefix}-tap"])


@pytest.mark.slow
@pytest.mark.lab
def test_live_sensor_raises_every_withheld_tool_and_nothing_on_benign_traffic(tmp_path):
    """Issue #33 end to end (benchmarks/lab/live.py): `sculpt watch --interface` on the lab's
    veth raises an incident for each withheld tool's attacker within 30 s of its start, and
    none in a benign-only run (LAB_LIVE_BENIGN_S seconds: 60 by default, 600 for the issue's
    ten minutes; the calibration capture lasts four times that, at least 240 s). About 14 minutes
    with the default, beyond what CI may spend: it runs when LAB_LIVE=1 (README, Tests)."""
    import live

    if os.environ.get("LAB_LIVE") != "1":
        pytest.skip("the live end-to-end run takes about 14 minutes: set LAB_LIVE=1 to run it")
    reasons = _skip_reasons(attacks=[e.attack for e in live.KNOWN + live.WITHHELD])
    if reasons:
        pytest.skip("lab unavailable: " + "; ".join(reasons))
    seconds = float(os.environ.get("LAB_LIVE_BENIGN_S", "60"))
    result = live.run(tmp_path / "live", benign_seconds=seconds)
    print(live.describe(result))
    attack, benign = result["attack"], result["benign"]
    assert attack["recall"] == 1.0, attack["attacks"]
    assert attack["false_incidents"] == [] and benign["false_incidents"] == []
    assert benign["sensor"]["flows"] > 100 and benign["sensor"].get("capture_drops", 0) == 0
