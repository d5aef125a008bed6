"""End to end, live, on synthetic lab traffic: does `sculpt watch --interface` raise an incident
for every attack tool it was never trained on, within 30 s, and none on benign traffic?

Issue #33's "done when", in four phases on one lab (``lab.py``: real servers, scripted benign
clients, real attack tools, all in network namespaces):

1. **train**: benign clients and the *known* tools (:data:`KNOWN`), captured on the router's
   server-side veth, metered with the sensor's timeouts (:data:`IDLE_TIMEOUT`,
   :data:`ACTIVE_TIMEOUT`), labelled, and ``sculpt train`` on them;
2. **calibrate**: benign clients only, captured; ``sculpt incidents`` measures how often benign
   hosts raise incidents of each score (a capture the model did not train on);
3. **attack**: ``sculpt watch --interface r-srv --incidents --target-incidents`` runs in the
   router's namespace while the clients go on and the *withheld* tools (:data:`WITHHELD`: a SYN
   scan, a UDP scan, masscan, SSH password guessing, a SYN flood, slowloris) run, one attacker
   address each. An attack is caught when an incident with its attacker as source is raised
   (ECS ``event.type: start``) within :data:`DEADLINE_S` of the attack's start; an incident of
   any other source is a false one;
4. **benign**: the sensor again, benign clients only, for ``--benign-seconds`` (600 for the
   issue's ten minutes): every incident is a false one.

Everything here is synthetic lab traffic: measured for the sensor's behaviour, never pooled with
the real datasets. The grouping (gap, flagged flows, target) and the model's threshold are fixed
below before any phase runs; nothing is tuned on phases 3 and 4.

    python benchmarks/lab/live.py --out /tmp/live --benign-seconds 600
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab as L  # noqa: E402

SCULPT = [
    sys.executable,
    "-c",
    "import sys; from latent_sculpting.cli import main; sys.exit(main())",
]
#: nfstream's timeouts for training and for the sensor alike: a flow reaches the sensor when it
#: ends, so these bound how late a scan's probe or a slow connection is seen.
IDLE_TIMEOUT, ACTIVE_TIMEOUT = 5, 10
#: An attack must raise its incident within this many seconds of its start.
DEADLINE_S = 30.0
#: The grouping, fixed before any run: a gap of a minute, five flagged flows, and a target of
#: one false incident per benign host-day (the calibration says when that is below what it
#: can resolve: then only scores above every benign incident it saw are reported). An
#: incident scores the most evidence it gathers within DEADLINE_S (``--incident-window``):
#: what a tool shows within the deadline is all that can raise it in time, and with
#: whole-incident sums (up to d85c327) one benign host, flagged now and then for the 20
#: minutes of the calibration, summed to 216 and set a bar of 94 flagged flows that two
#: tools never reached. Set from that run's calibration side before the next runs.
GROUPING = [
    "--incident-gap", "60", "--incident-min-flagged", "5", "--incident-window", f"{DEADLINE_S:g}",
]  # fmt: skip
TARGET_INCIDENTS = "1"
PERCENTILE = "99"

#: (at seconds, tool, attacker). Known tools train the model; withheld ones it never sees.
KNOWN = [
    L.ScheduleEntry(10, "nmap-connect", 1),
    L.ScheduleEntry(20, "hydra-ftp", 2),
    L.ScheduleEntry(30, "slow-post", 4),
    L.ScheduleEntry(85, "hydra-http", 3),
]
WITHHELD = [
    L.ScheduleEntry(15, "nmap-syn", 1),
    L.ScheduleEntry(35, "hydra-ssh", 2),
    L.ScheduleEntry(70, "hping3-syn-flood", 3),
    L.ScheduleEntry(100, "slowloris", 4),
    L.ScheduleEntry(150, "nmap-udp", 5),
    L.ScheduleEntry(175, "masscan", 6),
]
ATTACKERS = 6
#: Benign clients, and the seconds of the training and calibration captures. The first runs
#: had 3 clients and 120 s: 486 benign training flows, 50 of them setting the threshold, and a
#: p-value floor of 1/51; the model then flagged 13 % of live benign flows, benign hosts
#: reached incident scores of 16-34, and in one of two runs the SSH guessing (21 flows) stayed
#: below that. More benign traffic is what the training side showed was missing.
CLIENTS, CAPTURE_SECONDS = 6, 240
#: The benign calibration capture lasts this many times the benign run it guards (at least
#: CAPTURE_SECONDS). An incident threshold at a target the capture cannot resolve is the highest
#: benign incident score it saw, so it must see more benign host-time than the run: with 240 s
#: (ca1949f) the highest of 3 benign incidents was 13.89 and the 600 s benign run raised 2
#: incidents above it. If benign time is exchangeable, the highest benign score of a
#: calibration c times as long as the run falls in the run with probability about 1 / (c + 1):
#: a third at c = 2, which the run of 02c34a1 (windowed scores) met with a false incident. At
#: c = 4 it is a fifth; only a calibration of days (a real deployment's) makes it small.
CALIBRATE_PER_BENIGN = 4.0


def calibrate_seconds_for(benign_seconds: float) -> float:
    """Seconds of the calibration capture for a benign run of ``benign_seconds``."""
    return max(float(CAPTURE_SECONDS), CALIBRATE_PER_BENIGN * benign_seconds)


def sculpt(*args: str) -> None:
    subprocess.run([*SCULPT, *args], check=True)


def capture_session(
    lab: L.Lab, out: Path, name: str, *, seconds: float, seed: int, schedule=()
) -> dict:
    """Capture a session on the router's server-side veth and label its flows."""
    capture = L.Capture(lab.procs, lab.router, L.CAPTURE_INTERFACE, out / f"{name}.pcap")
    try:
        logs, rows = L.session(lab, duration=seconds, seed=seed, schedule=schedule)
        time.sleep(2.0)
    finally:
        stats = capture.stop()
    L.write_labels(out / f"{name}-labels.csv", rows)
    summary = L.label_capture(
        out / f"{name}.pcap",
        out / f"{name}-labels.csv",
        out / f"{name}.parquet",
        idle_timeout=IDLE_TIMEOUT,
        active_timeout=ACTIVE_TIMEOUT,
    )
    return {
        "capture": asdict(stats),
        "flows": summary["by_label"],
        "attacks": [asdict(r) for r in rows],
    }


class Sensor:
    """``sculpt watch --interface`` in the router's namespace, writing ECS lines to a file."""

    def __init__(self, lab: L.Lab, model: Path, events: Path) -> None:
        self.events, self.err_path = events, events.with_suffix(".stderr")
        argv = [
            "ip", "netns", "exec", lab.router, *SCULPT, "watch", str(model),
            "--interface", L.CAPTURE_INTERFACE,
            "--idle-timeout", str(IDLE_TIMEOUT), "--active-timeout", str(ACTIVE_TIMEOUT),
            "--incidents", *GROUPING, "--target-incidents", TARGET_INCIDENTS,
            "--max-delay-ms", "500", "-o", str(events), "--json",
        ]  # fmt: skip
        self.err = open(self.err_path, "wb")  # noqa: SIM115 - closed in stop()
        self.procs = lab.procs
        self.proc = lab.procs.start(argv, stdout=subprocess.DEVNULL, stderr=self.err)
        deadline = time.monotonic() + 60
        while b"watching interface" not in self.err_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise L.LabError(f"sculpt watch did not start: {self.err_path.read_text()}")
            time.sleep(0.1)
        time.sleep(2.0)  # nfstream's capture socket opens after the line

    def stop(self) -> dict:
        """SIGTERM (the sensor scores what is pending and exits 0); its summary."""
        time.sleep(IDLE_TIMEOUT + 3)  # the last flows end and are scored
        os.killpg(self.proc.pid, signal.SIGTERM)
        rc = self.proc.wait(60)
        self.procs.forget(self.proc)
        self.err.close()
        text = self.err_path.read_text()
        if rc != 0:
            raise L.LabError(f"sculpt watch exited {rc}: {text[-2000:]}")
        return json.loads(text[text.index("{\n") :])


def raised_incidents(events: Path) -> list[dict]:
    """The incidents the sensor raised while open: source and wall-clock time raised."""
    out = []
    for line in events.read_text().splitlines():
        event = json.loads(line)
        kind = event.get("event", {})
        if kind.get("dataset") == "latent_sculpting.incident" and kind.get("type") == ["start"]:
            incident = event["latent_sculpting"]["incident"]
            created = datetime.fromisoformat(kind["created"].replace("Z", "+00:00")).timestamp()
            out.append(
                {
                    "source": event["source"]["ip"],
                    "raised": created,
                    "n_flagged": incident["n_flagged"],
                    "explanation": incident["explanation"],
                }
            )
    return out


def score_attacks(attacks: list[dict], raised: list[dict]) -> list[dict]:
    """Each attack, caught or not: the first incident of its attacker raised after its start."""
    rows = []
    for attack in attacks:
        mine = [
            r
            for r in raised
            if r["source"] == attack["attacker"] and r["raised"] >= attack["start"]
        ]
        delay = min((r["raised"] - attack["start"] for r in mine), default=None)
        rows.append(
            {
                "tool": attack["tool"],
                "family": attack["family"],
                "attacker": attack["attacker"],
                "raised_after_s": delay,
                "caught": delay is not None and delay <= DEADLINE_S,
            }
        )
    return rows


def run(
    out: Path,
    *,
    benign_seconds: float,
    calibrate_seconds: float | None = None,
    seed: int = 7,
    preset: str = "default",
) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    if calibrate_seconds is None:
        calibrate_seconds = calibrate_seconds_for(benign_seconds)
    result: dict = {
        "notice": L.SYNTHETIC_NOTICE,
        "seed": seed,
        "preset": preset,
        "clients": CLIENTS,
        "capture_seconds": CAPTURE_SECONDS,
        "calibrate_seconds": calibrate_seconds,
        "timeouts_s": [IDLE_TIMEOUT, ACTIVE_TIMEOUT],
        "grouping": GROUPING,
        "target_incidents": TARGET_INCIDENTS,
        "percentile": PERCENTILE,
    }
    model = out / "model.sculpt"
    with L.Lab(clients=CLIENTS, attackers=ATTACKERS) as lab:
        result["train"] = capture_session(
            lab, out, "train", seconds=CAPTURE_SECONDS, seed=seed, schedule=KNOWN
        )
        began = time.monotonic()
        sculpt(
            "train", "--data", str(out / "train.parquet"), "--label-column", L.LABEL_COLUMN,
            "--benign-label", L.BENIGN, "--preset", preset, "--percentile", PERCENTILE,
            "--quiet", "-o", str(model),
        )  # fmt: skip
        result["train"]["seconds"] = time.monotonic() - began
        result["calibrate"] = capture_session(
            lab, out, "calibrate", seconds=calibrate_seconds, seed=seed + 1
        )
        sculpt("incidents", str(model), str(out / "calibrate.parquet"), *GROUPING)

        sensor = Sensor(lab, model, out / "attack-events.jsonl")
        _, rows = L.session(lab, duration=210, seed=seed + 2, schedule=WITHHELD)
        summary = sensor.stop()
        raised = raised_incidents(out / "attack-events.jsonl")
        attackers = {r.attacker for r in rows}
        attacks = score_attacks([asdict(r) for r in rows], raised)
        result["attack"] = {
            "sensor": summary,
            "attacks": attacks,
            "recall": sum(a["caught"] for a in attacks) / len(attacks),
            "false_incidents": [r for r in raised if r["source"] not in attackers],
        }

        sensor = Sensor(lab, model, out / "benign-events.jsonl")
        logs, _ = L.session(lab, duration=benign_seconds, seed=seed + 3)
        summary = sensor.stop()
        result["benign"] = {
            "seconds": benign_seconds,
            "sensor": summary,
            "clients": [asdict(log) for log in logs],
            "false_incidents": raised_incidents(out / "benign-events.jsonl"),
        }
    (out / "live.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def describe(result: dict) -> str:
    attack, benign = result["attack"], result["benign"]
    lines = ["withheld tool        family      raised after"]
    for a in attack["attacks"]:
        after = "never" if a["raised_after_s"] is None else f"{a['raised_after_s']:.1f} s"
        lines.append(
            f"{a['tool']:<20} {a['family']:<11} {after}{'' if a['caught'] else '  MISSED'}"
        )
    lines.append(
        f"recall {attack['recall']:.2f} within {DEADLINE_S:.0f} s; false incidents during the "
        f"attacks {len(attack['false_incidents'])}; in {benign['seconds']:.0f} s of benign "
        f"traffic {len(benign['false_incidents'])} ({benign['sensor']['flows']:,} flows, "
        f"{benign['sensor']['alerts']:,} alerts, capture drops "
        f"{benign['sensor'].get('capture_drops', 0)})"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for captures, model, events")
    parser.add_argument("--benign-seconds", type=float, default=600.0)
    parser.add_argument(
        "--calibrate-seconds",
        type=float,
        help=f"seconds of the benign calibration capture (default {CALIBRATE_PER_BENIGN:g} "
        f"times --benign-seconds, at least {CAPTURE_SECONDS})",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args(argv)
    missing = L.missing_requirements(attacks=[e.attack for e in KNOWN + WITHHELD])
    if missing:
        print("cannot run the lab: " + "; ".join(missing), file=sys.stderr)
        return 2
    L.install_signal_handlers()
    result = run(
        Path(args.out),
        benign_seconds=args.benign_seconds,
        calibrate_seconds=args.calibrate_seconds,
        seed=args.seed,
        preset=args.preset,
    )
    print(describe(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
