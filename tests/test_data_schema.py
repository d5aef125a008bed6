"""Canonical schema: feature names, aliases, labels, schema detection."""

import pyarrow.parquet as pq
import pytest

from latent_sculpting.data import sample_path
from latent_sculpting.data.schema import (
    CANONICAL_FEATURES,
    CANONICAL_LABELS,
    IDENTIFIER_COLUMNS,
    IMPROVED_TO_CANONICAL,
    canonical_label,
    canonical_labels,
    detect_schema,
)


def test_canonical_features_are_the_original_names_without_identifiers(original_columns):
    original = original_columns
    assert len(CANONICAL_FEATURES) == 76
    assert len(set(CANONICAL_FEATURES)) == 76
    assert len(original) == 79
    assert "Destination Port" not in CANONICAL_FEATURES
    assert "Fwd Header Length.1" not in CANONICAL_FEATURES
    assert not set(IDENTIFIER_COLUMNS) & set(CANONICAL_FEATURES)
    assert set(IMPROVED_TO_CANONICAL.values()) <= set(CANONICAL_FEATURES)


def test_detect_improved_schema_from_the_vendored_parquet():
    names = pq.read_schema(sample_path() / "monday.parquet").names
    schema, rename = detect_schema(names)
    assert schema == "improved"
    assert sorted(rename.values()) == sorted(CANONICAL_FEATURES)
    assert rename["Total Fwd Packet"] == "Total Fwd Packets"
    assert rename["Fwd Seg Size Min"] == "min_seg_size_forward"


def test_detect_original_schema_with_leading_spaces(original_columns):
    original = original_columns
    raw = [original[0]] + [" " + c for c in original[1:]]
    schema, rename = detect_schema(raw)
    assert schema == "original"
    assert rename[" Flow Duration"] == "Flow Duration"
    assert " Fwd Header Length.1" not in rename


def test_detect_schema_error_names_source_and_missing_columns(original_columns):
    cols = [c for c in original_columns if c != "Flow IAT Max"]
    with pytest.raises(ValueError, match=r"bad\.csv.*missing 1 column.*'Flow IAT Max'"):
        detect_schema(cols, source="bad.csv")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Web Attack \x96 Brute Force", "Web Attack - Brute Force"),
        ("Web Attack \u2013 XSS", "Web Attack - XSS"),
        ("Web Attack - SQL Injection", "Web Attack - Sql Injection"),
        ("web  attack-sql injection", "Web Attack - Sql Injection"),
        ("Botnet", "Bot"),
        ("Portscan", "PortScan"),
        ("DoS Slowloris", "DoS slowloris"),
        ("  BENIGN ", "BENIGN"),
        ("ftp-patator", "FTP-Patator"),
        ("Infiltration - Portscan", "Infiltration - Portscan"),
        ("Infiltration", "Infiltration"),
        ("Botnet - Attempted", "Bot - Attempted"),
        ("not a class", None),
    ],
)
def test_canonical_label(raw, expected):
    assert canonical_label(raw) == expected


def test_every_canonical_label_maps_to_itself():
    assert [canonical_label(x) for x in CANONICAL_LABELS] == list(CANONICAL_LABELS)


def test_canonical_labels_rejects_unknown_names():
    assert canonical_labels(["botnet", "Bot", "DoS Slowloris"]) == ("Bot", "DoS slowloris")
    with pytest.raises(ValueError, match="'Zeus'"):
        canonical_labels(["Zeus"])
