"""The CIC-IDS-2017 format: feature names, aliases, labels, release detection, derived features."""

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from latent_sculpting.data import sample_path
from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.formats import detect_format
from latent_sculpting.io.formats.cicids2017 import (
    CANONICAL_FEATURES,
    CANONICAL_LABELS,
    CICIDS2017,
    IDENTIFIER_COLUMNS,
    IMPROVED_TO_CANONICAL,
    canonical_label,
    canonical_labels,
    detect_schema,
    engineered_features,
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


def test_engineered_features_known_answers():
    out = engineered_features(
        np.array([100.0, 0.0, 60.0]), np.array([4.0, 0.0, 3.0]), np.array([2e6, 5.0, 0.0])
    )
    np.testing.assert_allclose(out, [[25.0, 2.0], [0.0, 0.0], [20.0, 0.0]])
    assert out.dtype == np.float32


def test_format_is_detected_and_maps_either_release_to_canonical_names(original_columns):
    improved = pq.read_schema(sample_path() / "monday.parquet").names
    assert detect_format(improved) is CICIDS2017
    assert detect_format([" " + c for c in original_columns]) is CICIDS2017
    assert detect_format(["a", "b", "Label"]).name == "table"
    rename = CICIDS2017.canonical_columns([" " + c for c in original_columns])
    assert rename[" Flow Duration"] == "Flow Duration"
    assert not any(v == "Fwd Header Length.1" for v in rename.values())  # the duplicate column
    # Canonical names map to themselves, so records already renamed read the same.
    canonical = list(rename.values())
    assert CICIDS2017.canonical_columns(canonical) == {c: c for c in canonical}


def test_the_same_column_twice_is_refused(original_columns):
    columns = list(original_columns) + [" Flow Duration"]
    with pytest.raises(FlowInputError, match="'Flow Duration' appears"):
        CICIDS2017.canonical_columns(columns)


def test_labels_are_canonical_and_unknown_ones_warned():
    raw = pa.array(["Botnet", "Web Attack \x96 XSS", None, "Zeus"])
    with pytest.warns(UserWarning, match="'Zeus'"):
        labels = CICIDS2017.labels(raw)
    assert labels.tolist() == ["Bot", "Web Attack - XSS", None, "Zeus"]


@pytest.mark.parametrize("repeat", [2, 40])  # 8 rows take the per-value path, 160 the dictionary
def test_labels_are_the_same_for_a_few_rows_and_many(repeat):
    raw = pa.chunked_array([["Botnet", "Web Attack \x96 XSS", None, "Zeus"] * repeat])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = CICIDS2017.labels(raw)
    assert labels.tolist() == ["Bot", "Web Attack - XSS", None, "Zeus"] * repeat
    assert labels.dtype == object
    # One warning per distinct unknown label, however often it occurs.
    assert [str(w.message) for w in caught] == [
        "unknown label 'Zeus': kept as its own (attack) class, not benign"
    ]
