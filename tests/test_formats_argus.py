"""Argus binetflow (CTU-13, Stratosphere) and other unfamiliar files, from reading to scoring.

No real Argus file is in the repository: the files here are synthetic, written by the tests in
the CTU-13 layout (its columns, value forms and labels), with the payload columns some captures
add. Each trains with ``sculpt train`` and scores with ``sculpt score``, with no identifier,
time or payload among the features.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from latent_sculpting import LatentSculpting
from latent_sculpting.cli import main
from latent_sculpting.data import read_flows
from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.formats import detect_format, get_format

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

#: Columns that identify a flow or carry its payload: never features of an Argus model.
NEVER_FEATURES = ("StartTime", "SrcAddr", "Sport", "DstAddr", "Dport", "srcUdata", "dstUdata")
#: The columns of a CTU-13 capture (capture20110810.binetflow), in order.
CTU13_COLUMNS = (
    "StartTime,Dur,Proto,SrcAddr,Sport,Dir,DstAddr,Dport,State,sTos,dTos,TotPkts,TotBytes,"
    "SrcBytes,Label"
).split(",")
#: Options that keep a fit to seconds: the fast preset, calibration on held-out benign flows.
FAST = ["--preset", "fast", "--set", "calibration_fraction=0.3", "--quiet"]


def synthetic_binetflow(n_normal=300, n_botnet=120, n_background=80, *, seed=0, udata=True):
    """A synthetic CTU-13-like capture: normal hosts' web and DNS flows, a bot's short IRC and
    scan flows, and unlabelled background; rows in time order."""
    rng = np.random.default_rng(seed)
    kinds = ["normal"] * n_normal + ["botnet"] * n_botnet + ["background"] * n_background
    kinds = rng.permutation(kinds)
    n = len(kinds)
    start = pd.Timestamp("2011-08-10 09:46:53") + pd.to_timedelta(
        np.cumsum(rng.exponential(0.4, n)), "s"
    )
    rows = []
    for i, kind in enumerate(kinds):
        if kind == "botnet":
            proto, dport, state = "tcp", rng.choice([6667, 25, 80]), rng.choice(["S_", "SR_SA"])
            dur, pkts = rng.exponential(0.05), int(rng.integers(1, 4))
            label = f"flow=From-Botnet-V42-TCP-CC{int(rng.integers(1, 9))}-IRC"
            src = "147.32.84.165"
        else:
            proto = rng.choice(["tcp", "udp"], p=[0.7, 0.3])
            dport = 80 if proto == "tcp" else 53
            state = "FSPA_FSPA" if proto == "tcp" else "CON"
            dur, pkts = rng.exponential(2.0), int(rng.integers(4, 40))
            label = (
                "flow=To-Normal-V42-HTTP" if kind == "normal" else "flow=Background-UDP-Established"
            )
            src = f"147.32.84.{int(rng.integers(1, 250))}"
        nbytes = pkts * int(rng.integers(60, 1400))
        row = {
            "StartTime": start[i].strftime("%Y/%m/%d %H:%M:%S.%f"),
            "Dur": round(float(dur), 6),
            "Proto": proto,
            "SrcAddr": src,
            "Sport": int(rng.integers(1024, 65535)),
            "Dir": rng.choice(["   ->", "  <->"]),
            "DstAddr": f"{int(rng.integers(1, 223))}.{int(rng.integers(0, 255))}.0.{i % 250}",
            "Dport": int(dport),
            "State": state,
            "sTos": 0 if rng.random() < 0.9 else None,
            "dTos": 0 if rng.random() < 0.6 else None,
            "TotPkts": pkts,
            "TotBytes": nbytes,
            "SrcBytes": int(nbytes * rng.uniform(0.2, 0.8)),
        }
        if udata:
            row["srcUdata"] = "s[32]=" + base64.b64encode(rng.bytes(24)).decode()
            row["dstUdata"] = "d[32]=" + base64.b64encode(rng.bytes(24)).decode()
        row["Label"] = label
        rows.append(row)
    return pd.DataFrame(rows)


def write(frame: pd.DataFrame, path, sep: str):
    frame.to_csv(path, sep=sep, index=False)
    return path


def test_the_format_is_detected_and_its_columns_have_their_roles(tmp_path):
    frame = synthetic_binetflow()
    assert detect_format(list(frame.columns)).name == "argus"
    assert detect_format(CTU13_COLUMNS).name == "argus"  # the CTU-13 header, no payloads
    table = read_flows(write(frame, tmp_path / "capture.binetflow", ","))
    spec = table.spec
    assert spec.format == "argus" and spec.label_column == "Label"
    assert spec.benign_label == "Normal"
    assert spec.numeric == ("Dur", "TotPkts", "TotBytes", "SrcBytes")
    assert [c.column for c in spec.categorical] == ["Proto", "Dir", "State", "sTos", "dTos"]
    assert {"StartTime", "SrcAddr", "Sport", "DstAddr", "Dport"} <= set(spec.identifiers)
    dropped = dict(spec.dropped)
    assert "payload" in dropped["srcUdata"] and "payload" in dropped["dstUdata"]
    assert not any(
        name.split("=")[0] in NEVER_FEATURES or name.startswith("Label")
        for name in spec.feature_names
    )
    # Background flows are nobody's label: left out of what is learned, and counted.
    assert table.label_counts() == {"Normal": 300, "Botnet": 120}
    assert table.report.unlabelled_left_out == {"Background": 80}
    assert "left out 80 flows labelled 'Background'" in str(table.report)
    assert get_format("argus").endpoint_columns["time"] == "StartTime"


def test_ctu_labels_are_read_as_botnet_normal_or_background():
    labels = get_format("argus").labels(
        pa.array(
            [
                "flow=From-Botnet-V42-TCP-CC6-Plain-HTTP-Encrypted-Data",
                "flow=From-Botnet-V44-TCP-Attempt-To-Normal",  # an attack, whatever else it says
                "flow=To-Normal-V42-UDP-NTP-server",
                "flow=From-Normal-V42-Grill",
                "flow=Background-UDP-Established",
                " flow=To-Background-CVUT-Proxy ",
                "LEGITIMATE",
                None,
            ]
        )
    )
    assert labels.tolist() == [
        "Botnet",
        "Botnet",
        "Normal",
        "Normal",
        "Background",
        "Background",
        "LEGITIMATE",
        None,
    ]


def test_a_capture_of_background_only_is_refused(tmp_path):
    frame = synthetic_binetflow(0, 0, 50)
    with pytest.raises(FlowInputError, match=r"every one of the 50 flows is labelled 'Background'"):
        read_flows(write(frame, tmp_path / "background.binetflow", ","))


@pytest.mark.parametrize("sep", [",", "\t"], ids=["comma", "tab"])
def test_argus_binetflow_trains_and_scores(tmp_path, capsys, sep):
    train = write(synthetic_binetflow(seed=1), tmp_path / "train.binetflow", sep)
    model_path = tmp_path / "argus.sculpt"
    assert main(["train", "--data", str(train), *FAST, "-o", str(model_path), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["format"] == "argus" and summary["label_counts"] == {
        "Normal": 300,
        "Botnet": 120,
    }
    assert summary["cleaning"]["unlabelled_left_out"] == {"Background": 80}
    assert "left out 80 flows labelled 'Background'" in captured.err
    model = LatentSculpting.load(model_path)
    assert model.spec_.format == "argus"
    features = list(model.feature_names_in_)
    assert features[:4] == ["Dur", "TotPkts", "TotBytes", "SrcBytes"]
    assert not any(name.split("=")[0] in NEVER_FEATURES for name in features)

    test = write(synthetic_binetflow(seed=2), tmp_path / "test.binetflow", sep)
    out = tmp_path / "scored.csv"
    assert main(["score", str(model_path), str(test), "-o", str(out), "--json", "--quiet"]) == 0
    result = json.loads(capsys.readouterr().out)
    scored = pd.read_csv(out)
    assert len(scored) == result["rows"] == 500  # background flows are scored too
    assert {"StartTime", "SrcAddr", "Sport", "DstAddr", "Dport"} <= set(scored.columns)
    # The tally of benign and attack flows leaves the background out.
    labelled = result["labelled"]
    assert (labelled["benign_rows"], labelled["attack_rows"]) == (300, 120)
    assert labelled["attack_flagged"] > 0.8 * 120  # the bot's flows are unlike the normal ones


def test_a_tab_separated_flow_file_trains_and_scores(tmp_path, capsys):
    rng = np.random.default_rng(3)
    n = 400
    attack = rng.random(n) < 0.25
    frame = pd.DataFrame(
        {
            "src_ip": [f"10.0.{i // 250}.{i % 250}" for i in range(n)],
            "bytes": np.where(attack, rng.integers(40, 80, n), rng.integers(500, 5000, n)),
            "packets": np.where(attack, 1, rng.integers(4, 60, n)),
            "duration": np.where(attack, rng.exponential(0.01, n), rng.exponential(3.0, n)),
            "service": rng.choice(["http", "dns", "ssh"], n),
            "class": np.where(attack, "scan", "normal"),
        }
    )
    flows = write(frame, tmp_path / "flows.tsv", "\t")
    model_path = tmp_path / "tsv.sculpt"
    args = ["--label-column", "class", "--benign-label", "normal", "-o", str(model_path)]
    assert main(["train", "--data", str(flows), *FAST, *args]) == 0
    model = LatentSculpting.load(model_path)
    assert model.spec_.numeric == ("bytes", "packets", "duration")
    assert model.spec_.identifiers == ("src_ip",)
    assert "service=(other)" in model.feature_names_in_
    capsys.readouterr()
    out = tmp_path / "scored.parquet"
    assert main(["score", str(model_path), str(flows), "-o", str(out), "--quiet"]) == 0
    scored = pd.read_parquet(out)
    assert len(scored) == n and list(scored["src_ip"][:2]) == ["10.0.0.0", "10.0.0.1"]


def test_a_csv_with_a_timestamp_column_trains_and_scores_without_it(tmp_path, capsys):
    frame = synthetic_binetflow(seed=4, udata=False).drop(columns=["SrcAddr", "DstAddr"])
    frame = frame.rename(columns={"StartTime": "first_seen", "Label": "verdict"})
    frame["verdict"] = np.where(frame["verdict"].str.contains("Botnet"), "attack", "ok")
    frame = frame.drop(columns=["Sport", "Dport"])  # no address or port: the time alone
    flows = write(frame, tmp_path / "flows.csv", ",")
    model_path = tmp_path / "ts.sculpt"
    args = ["--label-column", "verdict", "--benign-label", "ok", "-o", str(model_path)]
    assert main(["train", "--data", str(flows), *FAST, *args, "--json"]) == 0
    dropped = dict(json.loads(capsys.readouterr().out)["spec"]["dropped"])
    assert dropped["first_seen"].startswith("its values read as times (e.g. '2011/08/10 09:46")
    model = LatentSculpting.load(model_path)
    assert model.spec_.format == "table" and "first_seen" in model.spec_.identifiers
    assert not any(name.startswith("first_seen") for name in model.feature_names_in_)
    out = tmp_path / "scored.csv"
    assert main(["score", str(model_path), str(flows), "-o", str(out), "--quiet"]) == 0
    assert list(pd.read_csv(out)["first_seen"][:1]) == list(frame["first_seen"][:1])
    # --keep makes the time a feature again (a categorical one here: its text values).
    kept = tmp_path / "kept.sculpt"
    keep = ["--keep", "first_seen", "--max-categories", "4"]
    assert main(["train", "--data", str(flows), *FAST, *args[:4], *keep, "-o", str(kept)]) == 0
    assert "first_seen=(other)" in LatentSculpting.load(kept).feature_names_in_
