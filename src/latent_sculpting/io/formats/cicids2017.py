"""CIC-IDS-2017 flow records (CICFlowMeter features), in either public release.

Two releases are in use: the ORIGINAL ``MachineLearningCSV`` release (Sharafaldin et al., 2018),
used by Chhetri et al., "Latent Sculpting for Zero-Shot Generalization" (arXiv:2512.22179), and
the IMPROVED re-extraction of Engelen, Rimmer and Joosen (WTMC 2021), from which the embedded
sample comes. Both map to one canonical feature set (the 76 flow features the releases share,
named as in the original release with leading spaces stripped), the paper's two engineered
features, and one canonical label vocabulary. Each file's release is detected from its header,
so a model trained on one release scores files of the other.

Endpoints (for context features): ``Timestamp`` (the improved release's
``2017-07-03 12:00:00.847886``), ``Src IP``/``Dst IP`` (``Source IP``/``Destination IP`` in the
original release's GeneratedLabelledFlows), ports, ``Protocol``, ``Total Backward Packets`` as
the state (no reply packet: unanswered), ``Flow Duration`` (microseconds), the forward and
backward payload lengths and packet counts. The original release's Timestamp (``3/7/2017
8:55``: minutes, a 12-hour clock without AM/PM) cannot order flows, so it is refused, and its
MachineLearningCSV files have neither time nor addresses. The embedded sample is a per-class
random sample: context is refused on it
(:func:`~latent_sculpting.io.formats.base.per_class_sample`).

The label vocabulary and the mapping of raw labels to it are in
:mod:`latent_sculpting.io.formats.cicids2017_labels`; this module re-exports its names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from latent_sculpting.io.formats.base import FlowFormat, check_unique, normalize_column_name
from latent_sculpting.io.formats.cicids2017_labels import (
    ATTEMPTED_SUFFIX,
    BENIGN,
    CANONICAL_LABELS,
    LABEL_COLUMN,
    canonical_label,
    canonical_labels,
    known_label,
)

__all__ = [
    "ATTEMPTED_SUFFIX",
    "BENIGN",
    "CANONICAL_FEATURES",
    "CANONICAL_LABELS",
    "CICIDS2017",
    "ENGINEERED_FEATURES",
    "IDENTIFIER_COLUMNS",
    "LABEL_COLUMN",
    "canonical_label",
    "canonical_labels",
    "detect_schema",
    "engineered_features",
]


#: The 76 flow features shared by both releases, in original-release order (names stripped).
#: ``Destination Port`` (an identifier) and the duplicated ``Fwd Header Length.1`` are excluded.
CANONICAL_FEATURES: tuple[str, ...] = (
    "Flow Duration",
    "Total Fwd Packets",
    "Total Backward Packets",
    "Total Length of Fwd Packets",
    "Total Length of Bwd Packets",
    "Fwd Packet Length Max",
    "Fwd Packet Length Min",
    "Fwd Packet Length Mean",
    "Fwd Packet Length Std",
    "Bwd Packet Length Max",
    "Bwd Packet Length Min",
    "Bwd Packet Length Mean",
    "Bwd Packet Length Std",
    "Flow Bytes/s",
    "Flow Packets/s",
    "Flow IAT Mean",
    "Flow IAT Std",
    "Flow IAT Max",
    "Flow IAT Min",
    "Fwd IAT Total",
    "Fwd IAT Mean",
    "Fwd IAT Std",
    "Fwd IAT Max",
    "Fwd IAT Min",
    "Bwd IAT Total",
    "Bwd IAT Mean",
    "Bwd IAT Std",
    "Bwd IAT Max",
    "Bwd IAT Min",
    "Fwd PSH Flags",
    "Bwd PSH Flags",
    "Fwd URG Flags",
    "Bwd URG Flags",
    "Fwd Header Length",
    "Bwd Header Length",
    "Fwd Packets/s",
    "Bwd Packets/s",
    "Min Packet Length",
    "Max Packet Length",
    "Packet Length Mean",
    "Packet Length Std",
    "Packet Length Variance",
    "FIN Flag Count",
    "SYN Flag Count",
    "RST Flag Count",
    "PSH Flag Count",
    "ACK Flag Count",
    "URG Flag Count",
    "CWE Flag Count",
    "ECE Flag Count",
    "Down/Up Ratio",
    "Average Packet Size",
    "Avg Fwd Segment Size",
    "Avg Bwd Segment Size",
    "Fwd Avg Bytes/Bulk",
    "Fwd Avg Packets/Bulk",
    "Fwd Avg Bulk Rate",
    "Bwd Avg Bytes/Bulk",
    "Bwd Avg Packets/Bulk",
    "Bwd Avg Bulk Rate",
    "Subflow Fwd Packets",
    "Subflow Fwd Bytes",
    "Subflow Bwd Packets",
    "Subflow Bwd Bytes",
    "Init_Win_bytes_forward",
    "Init_Win_bytes_backward",
    "act_data_pkt_fwd",
    "min_seg_size_forward",
    "Active Mean",
    "Active Std",
    "Active Max",
    "Active Min",
    "Idle Mean",
    "Idle Std",
    "Idle Max",
    "Idle Min",
)

#: Improved-release names of the features that were renamed; every other canonical feature has
#: the same name in both releases.
IMPROVED_TO_CANONICAL: dict[str, str] = {
    "Total Fwd Packet": "Total Fwd Packets",
    "Total Bwd packets": "Total Backward Packets",
    "Total Length of Fwd Packet": "Total Length of Fwd Packets",
    "Total Length of Bwd Packet": "Total Length of Bwd Packets",
    "Packet Length Min": "Min Packet Length",
    "Packet Length Max": "Max Packet Length",
    "CWR Flag Count": "CWE Flag Count",
    "Fwd Segment Size Avg": "Avg Fwd Segment Size",
    "Bwd Segment Size Avg": "Avg Bwd Segment Size",
    "Fwd Bytes/Bulk Avg": "Fwd Avg Bytes/Bulk",
    "Fwd Packet/Bulk Avg": "Fwd Avg Packets/Bulk",
    "Fwd Bulk Rate Avg": "Fwd Avg Bulk Rate",
    "Bwd Bytes/Bulk Avg": "Bwd Avg Bytes/Bulk",
    "Bwd Packet/Bulk Avg": "Bwd Avg Packets/Bulk",
    "Bwd Bulk Rate Avg": "Bwd Avg Bulk Rate",
    "FWD Init Win Bytes": "Init_Win_bytes_forward",
    "Bwd Init Win Bytes": "Init_Win_bytes_backward",
    "Fwd Act Data Pkts": "act_data_pkt_fwd",
    "Fwd Seg Size Min": "min_seg_size_forward",
}

#: Flow features present only in the improved release; not used as model features because
#: the original release (the paper's data) lacks them.
IMPROVED_EXTRA_FEATURES: tuple[str, ...] = (
    "Fwd RST Flags",
    "Bwd RST Flags",
    "ICMP Code",
    "ICMP Type",
    "Total TCP Flow Time",
)

#: Columns that identify a flow rather than describe it. They never reach the model (a port or
#: an IP address would let it memorise the testbed) but are kept alongside for reporting.
IDENTIFIER_COLUMNS: tuple[str, ...] = (
    "id",
    "Flow ID",
    "Src IP",
    "Src Port",
    "Dst IP",
    "Dst Port",
    "Destination Port",
    "Protocol",
    "Timestamp",
    "Attempted Category",
)

#: Original-release columns that duplicate another one (``Fwd Header Length.1`` repeats
#: ``Fwd Header Length``); dropped on load.
ORIGINAL_DUPLICATE_COLUMNS: tuple[str, ...] = ("Fwd Header Length.1",)

#: The paper's two engineered features, appended after the canonical ones.
ENGINEERED_FEATURES: tuple[str, ...] = (
    "Fwd Bytes/Packet (engineered)",
    "Fwd Packets/s (engineered)",
)

# Per release: the file's spelling of each canonical feature -> canonical name.
SCHEMAS: dict[str, dict[str, str]] = {
    "original": {name: name for name in CANONICAL_FEATURES},
    "improved": {
        **{name: name for name in CANONICAL_FEATURES if name not in IMPROVED_TO_CANONICAL.values()},
        **IMPROVED_TO_CANONICAL,
    },
}


def detect_schema(columns: Sequence[str], *, source: object = "<columns>") -> tuple[str, dict]:
    """Which CIC-IDS-2017 release a file's columns come from.

    Returns
    -------
    schema : {"original", "improved"}
    rename : dict
        Each raw column name that holds a canonical feature -> its canonical name.

    Raises
    ------
    ValueError
        If the columns match neither release; the message names ``source`` and the canonical
        features missing under the closer schema.
    """
    folded = {normalize_column_name(c).casefold(): c for c in columns}
    closest: tuple[str, list[str]] = ("", [])
    for schema, table in SCHEMAS.items():
        rename = {folded[k.casefold()]: v for k, v in table.items() if k.casefold() in folded}
        if len(rename) == len(CANONICAL_FEATURES):
            return schema, rename
        found = set(rename.values())
        missing = [k for k, v in table.items() if v not in found]
        if not closest[0] or len(missing) < len(closest[1]):
            closest = (schema, missing)
    schema, missing = closest
    shown = ", ".join(repr(m) for m in missing[:20])
    more = f" (and {len(missing) - 20} more)" if len(missing) > 20 else ""
    raise ValueError(
        f"{source}: columns match neither the original nor the improved CIC-IDS-2017 schema; "
        f"closest is {schema!r}, which is missing {len(missing)} column(s): {shown}{more}"
    )


def engineered_features(
    total_fwd_bytes: np.ndarray,
    total_fwd_packets: np.ndarray,
    flow_duration_us: np.ndarray,
    *,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The paper's two engineered features, in the order of :data:`ENGINEERED_FEATURES`.

    * ``"Fwd Bytes/Packet (engineered)"`` = ``Total Length of Fwd Packets / Total Fwd Packets``,
      0 when there are no forward packets;
    * ``"Fwd Packets/s (engineered)"`` = ``Total Fwd Packets / (Flow Duration / 1e6)``
      (``Flow Duration`` is in microseconds), 0 when the duration is <= 0.
    """
    if out is None:
        out = np.empty((len(total_fwd_packets), len(ENGINEERED_FEATURES)), dtype=np.float32)
    packets = np.asarray(total_fwd_packets, dtype=np.float64)
    seconds = np.asarray(flow_duration_us, dtype=np.float64) / 1e6
    # The zero guards are the paper's choice; they also keep a zero-duration flow from producing
    # exactly the inf values that the original release is criticised for.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        has_packets = packets > 0
        out[:, 0] = np.where(has_packets, np.asarray(total_fwd_bytes, np.float64) / packets, 0.0)
        out[:, 1] = np.where(seconds > 0, packets / seconds, 0.0)
    return out


def _closest_rename(columns: Sequence[str]) -> dict[str, str]:
    """Raw -> canonical name of every feature column, under the release the columns match
    best (missing features are left for the caller to report by name)."""
    folded = {normalize_column_name(c).casefold(): c for c in columns}
    best: dict[str, str] = {}
    for table in SCHEMAS.values():
        rename = {folded[k.casefold()]: v for k, v in table.items() if k.casefold() in folded}
        if len(rename) > len(best):
            best = rename
    return best


_IDENTIFIER_KEYS = {c.casefold() for c in IDENTIFIER_COLUMNS}
_DUPLICATE_KEYS = {c.casefold() for c in ORIGINAL_DUPLICATE_COLUMNS}
_EXTRA_REASON = "not in the original release (the paper's data), so not a model feature"


class CICIDS2017Format(FlowFormat):
    """CICFlowMeter records of CIC-IDS-2017, original or improved release."""

    name = "cicids2017"
    description = "CIC-IDS-2017 CSV/Parquet (CICFlowMeter), original or improved release"
    label_column = LABEL_COLUMN
    benign_label = BENIGN
    identifier_columns = IDENTIFIER_COLUMNS
    categorical_columns = ()
    numeric_columns = CANONICAL_FEATURES
    engineered = ENGINEERED_FEATURES
    endpoint_columns = {
        "time": "Timestamp",
        "src": "Src IP",
        "dst": "Dst IP",
        "sport": "Src Port",
        "dport": "Dst Port",
        "proto": "Protocol",
        "state": "Total Backward Packets",
        "duration": "Flow Duration",
        "bytes": ("Total Length of Fwd Packets", "Total Length of Bwd Packets"),
        "packets": ("Total Fwd Packets", "Total Backward Packets"),
    }
    endpoint_units = {"time": "datetime", "duration": "us"}
    endpoint_alternatives = (
        (
            {
                **endpoint_columns,
                "src": "Source IP",
                "dst": "Destination IP",
                "sport": "Source Port",
                "dport": "Destination Port",
            },
            {"time": "datetime", "duration": "us"},
        ),
    )
    time_hint = (
        "CIC-IDS-2017's improved release writes Timestamp as 2017-07-03 12:00:00.847886; the "
        "original release's GeneratedLabelledFlows write 3/7/2017 8:55 (minutes, and a "
        "12-hour clock without AM/PM), from which the order of flows cannot be recovered, and "
        "its MachineLearningCSV files have no Timestamp at all"
    )

    def matches(self, columns: Sequence[str]) -> bool:
        try:
            detect_schema(columns)
        except ValueError:
            return False
        return True

    def canonical_columns(self, columns: Sequence[str], *, source: object = "input") -> dict:
        """Canonical feature names for the release's spelling; identifiers, the label and other
        columns keep their (whitespace-normalised) names; the original release's duplicated
        ``Fwd Header Length.1`` is left out."""
        rename = _closest_rename(columns)
        pairs = []
        for raw in columns:
            if raw in rename:
                pairs.append((raw, rename[raw]))
            elif normalize_column_name(raw).casefold() not in _DUPLICATE_KEYS:
                pairs.append((raw, normalize_column_name(raw)))
        check_unique(pairs, source)
        return dict(pairs)

    def ignored(self, canonical: Sequence[str]) -> dict[str, str]:
        """Why each column that is neither feature, identifier nor label is left out."""
        features = set(CANONICAL_FEATURES)
        out = {}
        for name in canonical:
            key = name.casefold()
            if name in features or key in _IDENTIFIER_KEYS or key == LABEL_COLUMN.casefold():
                continue
            out[name] = _EXTRA_REASON
        return out

    def labels(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Canonical labels; an unknown label is kept as its own (attack) class, with a warning
        (once per distinct label)."""
        if len(column) <= _FEW_ROWS:
            # A service request's few flows: the four Arrow calls of the dictionary path cost
            # more than mapping the values one by one.
            seen: dict[object, str] = {}
            out = np.empty(len(column), dtype=object)
            for i, raw in enumerate(column.to_pylist()):
                if raw is not None:
                    if raw not in seen:
                        seen[raw] = known_label(raw)
                    out[i] = seen[raw]
            return out
        encoded = column.dictionary_encode()
        if isinstance(encoded, pa.ChunkedArray):
            encoded = encoded.combine_chunks()
        mapped = [known_label(raw) for raw in encoded.dictionary.to_pylist()]
        lookup = np.asarray(mapped + [None], dtype=object)
        indices = encoded.indices.fill_null(len(mapped)).to_numpy(zero_copy_only=False)
        return lookup[indices]

    def needs(self) -> tuple[str, ...]:
        return ("Total Length of Fwd Packets", "Total Fwd Packets", "Flow Duration")

    def derive(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = engineered_features(*(columns[name] for name in self.needs()))
        return {name: out[:, j] for j, name in enumerate(ENGINEERED_FEATURES)}


#: Label columns this short are mapped value by value rather than through a dictionary.
_FEW_ROWS = 64


CICIDS2017 = CICIDS2017Format()
