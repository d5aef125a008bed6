"""Shared fixtures: the vendored sample, ORIGINAL-schema files, a recording method factory."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from latent_sculpting.data import load_cicids2017, sample_path
from latent_sculpting.io.formats.cicids2017 import CANONICAL_FEATURES, IMPROVED_TO_CANONICAL

# Original-release spelling of each canonical label (0x96 dash decoded as cp1252 en dash).
ORIGINAL_LABELS = {
    "Web Attack - Brute Force": "Web Attack \u2013 Brute Force",
    "Web Attack - XSS": "Web Attack \u2013 XSS",
    "Web Attack - SQL Injection": "Web Attack \u2013 Sql Injection",
    "Botnet": "Bot",
    "Portscan": "PortScan",
    "DoS Slowloris": "DoS slowloris",
}

# Column order of the original MachineLearningCSV files (stripped names).
ORIGINAL_COLUMNS = (
    ["Destination Port"]
    + list(CANONICAL_FEATURES[:55])
    + ["Fwd Header Length.1"]
    + list(CANONICAL_FEATURES[55:])
    + ["Label"]
)


@pytest.fixture(scope="session")
def sample_table():
    """The vendored improved-release sample, loaded once per session."""
    return load_cicids2017()


@pytest.fixture(scope="session")
def improved_rows() -> pd.DataFrame:
    """A few real rows of the vendored sample (improved schema), covering several labels."""
    frame = pd.read_parquet(sample_path() / "thursday.parquet")
    picks = [frame[frame["Label"] == lab].head(3) for lab in frame["Label"].unique()]
    return pd.concat(picks, ignore_index=True)


def to_original_frame(improved: pd.DataFrame) -> pd.DataFrame:
    """Rewrite improved-schema rows with original-release column names and labels."""
    out = improved.rename(columns=IMPROVED_TO_CANONICAL)
    out["Destination Port"] = out["Dst Port"]
    out["Fwd Header Length.1"] = out["Fwd Header Length"]
    out["Label"] = out["Label"].map(lambda s: ORIGINAL_LABELS.get(s, s))
    return out[ORIGINAL_COLUMNS]


def write_original_csv(path: Path, frame: pd.DataFrame, overrides: dict | None = None) -> Path:
    """Write ``frame`` as the original release does: cp1252, leading spaces in the header.

    ``overrides`` maps (row, column) to a raw text cell (e.g. ``"Infinity"``).
    """
    overrides = overrides or {}
    header = ",".join(ORIGINAL_COLUMNS[:1] + [" " + c for c in ORIGINAL_COLUMNS[1:]])
    lines = [header]
    cols = list(frame.columns)
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = [repr(v) if isinstance(v, float) else str(v) for v in row]
        for (r, c), text in overrides.items():
            if r == i:
                cells[cols.index(c)] = text
        lines.append(",".join(cells))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("cp1252"))
    return path


@pytest.fixture
def original_csv(tmp_path, improved_rows):
    """An ORIGINAL-schema CSV made from real sample rows, with Infinity/NaN cells."""
    frame = to_original_frame(improved_rows)
    overrides = {
        (0, "Flow Bytes/s"): "Infinity",
        (0, "Flow Packets/s"): "Infinity",
        (1, "Flow Bytes/s"): "NaN",
        (1, "Flow Packets/s"): "NaN",
        (2, "Flow Packets/s"): "-Infinity",
    }
    path = write_original_csv(tmp_path / "Thursday-WorkingHours.pcap_ISCX.csv", frame, overrides)
    return path, frame, overrides


@pytest.fixture(scope="session")
def original_columns() -> list[str]:
    """Stripped column names of an original MachineLearningCSV file (79)."""
    return list(ORIGINAL_COLUMNS)


@pytest.fixture(scope="session")
def original_writer():
    """``(to_original_frame, write_original_csv)`` helpers for tests that build their own files."""
    return to_original_frame, write_original_csv


class RecordingMethod:
    """Wraps a method and records the rows and labels it is fitted on."""

    def __init__(self, inner, log: list) -> None:
        self.inner, self.log = inner, log

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def fit(self, X, y, labels):
        self.log.append({"name": self.inner.name, "X": X.copy(), "labels": set(labels)})
        self.inner.fit(X, y, labels)
        return self

    def decision_function(self, X):
        return self.inner.decision_function(X)


@pytest.fixture(scope="module")
def recording():
    """A ``make_method`` factory whose methods log what they are fitted on, and that log."""
    from latent_sculpting.research.baselines import make_method

    log: list = []

    def factory(name, seed, shared):
        return RecordingMethod(make_method(name, seed, shared), log)

    return factory, log


@pytest.fixture(scope="session")
def shared_data():
    """The folder of the datasets that do not ship with the package (``../shared/data`` beside
    the repository, or ``$SCULPT_SHARED/data``); skips when it is absent."""
    from shared_files import SHARED

    root = SHARED / "data"
    if not (root / "unsw_nb15").is_dir() or not (root / "iot23_zeek").is_dir():
        pytest.skip(f"the shared datasets are not at {root.resolve()} (set SCULPT_SHARED)")
    return root.resolve()


def _slower(frame: pd.DataFrame, factor: float = 20.0) -> pd.DataFrame:
    out = frame.copy()
    for column in out.columns:
        if re.search(r"Duration|IAT|Active|Idle|Flow Time", column):
            out[column] = out[column] * factor
        elif column.endswith("/s") or "Bulk Rate" in column:
            out[column] = out[column] / factor
    return out


@pytest.fixture(scope="session")
def slower_network():
    """``f(frame)``: CIC-IDS-2017 flows (raw or canonical column names) as a network 20 times
    slower would show them: durations, gaps and active/idle times x 20, rates / 20."""
    return _slower
