"""The packet-capture example of docs/guides/example-pcap.md, end to end: extract the ordinary
captures, train a benign-only model, score every shared capture in one command, report the
alerts with their explanations. Then the folder forms a capture comes in, and bad captures."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shared_files import shared

pytest.importorskip("nfstream", reason="the capture extra (nfstream) is not installed")

from latent_sculpting import LatentSculpting  # noqa: E402
from latent_sculpting.cli import main  # noqa: E402

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

ORDINARY_SHARED = ("ssh.pcap", "http_auth.pcap", "smb_deletefile.pcap", "ftp_failed.pcap")
ORDINARY_HERE = Path(__file__).parent / "data" / "pcaps"
SCANS = ("synscan.pcap", "tcp_0_1000_20190821.pcap", "udp_0_1000_20190821.pcap")
DOC = Path(__file__).resolve().parents[1] / "docs" / "guides" / "example-pcap.md"
# Explanations the doc quotes whole. Where most of a batch is flagged the names come from the
# benign profile alone, not from the model, so these texts do not move with its training.
SYN_PROBE = (
    "bidirectional_bytes 58 (below 99.7 % of benign, median 595); src2dst_max_ps 58 (below "
    "99.5 % of benign, median 237); bidirectional_mean_ps 58 (below 99.5 % of benign, median 199)"
)
MASSCAN_PROBE = (
    "bidirectional_bytes 64 (below 99.6 % of benign, median 595); application_confidence = "
    "(other) (in 1.29 % of benign flows, usually 6); src2dst_bytes 64 (below 99.3 % of benign, "
    "median 350)"
)
DOWNLOAD = (
    "dst2src_bytes 706336 (above every benign value, median 110); dst2src_ack_packets 500 "
    "(above every benign value, median 0); bidirectional_bytes 717463 (above every benign "
    "value, median 595)"
)


def doc_table() -> dict[tuple[str, ...], tuple[int, int]]:
    """The doc's flows flagged per capture: (captures of a row) -> (flows, flagged)."""
    text = DOC.read_text()
    table = text[text.index("Flows flagged per capture") : text.index("## 4.")]
    rows = {}
    for line in table.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        names = tuple(re.findall(r"`([^`]+\.pcap)`", cells[0]))
        if names:
            flows = sum(int(n.replace(",", "")) for n in cells[2].split("+"))
            rows[names] = (flows, int(cells[3].replace(",", "")))
    return rows


def _in_doc(text: str) -> bool:
    # The doc wraps its lines; compare with every run of whitespace as one space.
    return " ".join(text.split()) in " ".join(DOC.read_text().split())


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    """The example's three commands; their folder."""
    pcaps = shared("pcaps")
    folder = tmp_path_factory.mktemp("example")
    ordinary = [str(pcaps / name) for name in ORDINARY_SHARED] + [str(ORDINARY_HERE)]
    flows, model = folder / "ordinary.parquet", folder / "ordinary.sculpt"
    assert main(["extract", *ordinary, "-o", str(flows), "--quiet"]) == 0
    assert main(["train", "--data", str(flows), "--unlabeled", "-o", str(model), "--quiet"]) == 0
    scored = folder / "scored.parquet"
    assert main(["score", str(model), str(pcaps), "-o", str(scored), "--quiet"]) == 0
    return folder


def test_ordinary_captures_train_a_benign_only_model_that_explains(example):
    flows = pd.read_parquet(example / "ordinary.parquet")
    assert len(flows) == 233  # 5 flows of the shared captures, 228 of tests/data/pcaps
    assert flows["source_file"].map(lambda p: Path(p).name).nunique() == 11
    model = LatentSculpting.load(example / "ordinary.sculpt")
    # Benign-only data: the flow and the distance to benign prototypes, Fisher's sum.
    assert not model.stage1 and model.score == "fisher" and list(model.channels_) == ["knn"]
    assert model.spec_.format == "nfstream" and model.benign_profile_.n_samples_ == 233
    # 47 flows held out: 23 place the channels' tails, 24 set the threshold (P95).
    assert len(model.calibration_scores_) == 24
    assert [len(tail.reference_) for tail in model.fusion_.tails_.values()] == [23, 23]
    assert model.threshold_ == pytest.approx(np.percentile(model.calibration_scores_, 95))
    # Fewer fit flows (186) than the preset's prototypes: the prototypes are the flows.
    assert len(model.channels_["knn"].prototypes_) <= 233 - 47


def test_every_shared_capture_is_scored_in_one_command(example):
    scored = pd.read_parquet(example / "scored.parquet")
    names = sorted(p.name for p in shared("pcaps").glob("*.pcap"))
    assert sorted(scored["source_file"].unique()) == names and len(names) == 22
    assert len(scored) == 4425
    flagged = scored["is_attack"].to_numpy()
    explained = scored["explanation"].to_numpy() != ""
    np.testing.assert_array_equal(explained, flagged)
    # The doc's table, row by row: every capture, its flows exactly, its alerts within 2 or 2 %
    # (a model's training is deterministic given its seed, but not across every platform).
    table = doc_table()
    assert sorted(name for row in table for name in row) == names
    for row, (flows, flagged_in_doc) in table.items():
        rows = scored[scored["source_file"].isin(row)]
        assert len(rows) == flows, row
        assert abs(rows["is_attack"].sum() - flagged_in_doc) <= max(2, 0.02 * flagged_in_doc), row
    share = scored.groupby("source_file")["is_attack"].mean()
    assert all(share[name] > 0.9 for name in SCANS)  # "93-97 % of the scans' flows"
    # Each alert names features and where their values stand among benign ones.
    reasons = scored.loc[flagged, "explanation"].str.split("; ")
    assert reasons.map(len).min() >= 1 and reasons.map(len).max() == 3
    where = r"\((?:above|below) (?:every benign value|[\d.]+ % of benign)|\(in [\d.]+ % of benign"
    assert reasons.explode().str.contains(where).all()
    # The explanations the doc quotes, as often as it says.
    said = scored.loc[flagged].groupby("source_file")["explanation"].value_counts()
    assert _in_doc(SYN_PROBE) and abs(said["synscan.pcap"][SYN_PROBE] - 1848) <= 0.02 * 1848
    assert _in_doc(MASSCAN_PROBE) and said["udp_0_1000_20190821.pcap"].index[0] == MASSCAN_PROBE
    assert said["tcp_0_1000_20190821.pcap"].index[0] == MASSCAN_PROBE
    assert _in_doc(DOWNLOAD) and list(said["exe_download.pcap"].index) == [DOWNLOAD]
    # 24 calibration flows, one of them above every alert: the highest alerts have p = 2/25.
    assert scored.loc[flagged, "p_value"].min() == pytest.approx(2 / 25)


def test_the_alerts_page_shows_the_top_alerts_with_explanations(example, capsys):
    page_path = example / "alerts.html"
    scored = example / "scored.parquet"
    assert main(["report", str(scored), "-o", str(page_path), "--top", "20"]) == 0
    page = page_path.read_text()
    assert page.count('<div class="incident">') >= 1  # nfstream flows have times and addresses
    assert page.split("<h2>Flagged flows</h2>")[1].count("<tr><td") == 20
    assert re.search(r"4,425 flows, [\d,]+ flagged", page)
    assert "synscan.pcap" in page and "benign" in page


def test_captures_are_read_from_folders_whatever_their_suffix(example, tmp_path):
    pcaps = shared("pcaps")
    folder = tmp_path / "captures"
    folder.mkdir()
    shutil.copy(pcaps / "nmap_80_vanilla.pcap", folder / "vanilla.cap")
    shutil.copy(pcaps / "http-manipulated.pcap", folder / "manipulated.pcapng")  # pcapng inside
    shutil.copy(pcaps / "esnet-README.nmap.md", folder / "README.md")  # not a flow file
    out = tmp_path / "scored.csv"
    assert main(["score", str(example / "ordinary.sculpt"), str(folder), "-o", str(out)]) == 0
    scored = pd.read_csv(out, keep_default_na=False)
    assert scored["source_file"].value_counts().to_dict() == {
        "vanilla.cap": 3,
        "manipulated.pcapng": 2,
    }


def test_a_corrupt_capture_in_a_folder_stops_scoring_and_writes_nothing(example, tmp_path, capsys):
    folder = tmp_path / "captures"
    folder.mkdir()
    shutil.copy(shared("pcaps", "ssh.pcap"), folder / "a.pcap")
    data = bytearray(shared("pcaps", "nmap_80_vanilla.pcap").read_bytes())
    data[24 + 8 : 24 + 12] = (10**7).to_bytes(4, "little")  # the first record's length
    (folder / "b.pcap").write_bytes(bytes(data))
    out = tmp_path / "scored.parquet"
    assert main(["score", str(example / "ordinary.sculpt"), str(folder), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "b.pcap" in err and "packet 1 at byte 24 claims 10000000 bytes" in err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["captures"]


def test_extracted_files_keep_their_own_source_file(example, tmp_path):
    flows = example / "ordinary.parquet"
    copy = tmp_path / "copy.parquet"
    shutil.copy(flows, copy)
    out = tmp_path / "scored.parquet"
    model = str(example / "ordinary.sculpt")
    assert main(["score", model, str(flows), str(copy), "-o", str(out), "--quiet"]) == 0
    scored = pd.read_parquet(out)
    assert len(scored) == 2 * 233
    source = pd.read_parquet(flows)["source_file"].tolist()
    assert scored["source_file"].tolist() == 2 * source  # the captures, not the Parquet files
