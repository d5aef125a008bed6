"""Zeek ``conn.log`` records: what each column of a Zeek connection means for a model.

Covers Zeek's own TSV and JSON logs (read by :mod:`latent_sculpting.io.readers.zeek`), the labelled
``conn.log.labeled`` files of the Stratosphere Laboratory (IoT-23, CTU-SME-11), and CSV or
Parquet conversions that keep Zeek's column names (the IoT-23 CSVs).

Roles
-----
- identifiers (carried to the output, never features): ``ts``, ``uid``, the connection id
  (``id.orig_h``, ``id.orig_p``, ``id.resp_h``, ``id.resp_p``), ``tunnel_parents``, and
  ``local_orig``/``local_resp``, with the columns that name a host, a network or a time in the
  usual packages (MAC addresses, VLANs, community id, country codes). ``local_orig`` and
  ``local_resp`` say whether a host is inside ``Site::local_nets``: a setting of the sensor,
  not behaviour of the connection; a model would learn one site's address plan, and most
  logs (IoT-23, Slips' samples) leave them unset.
- categorical features: ``proto``, ``service``, ``conn_state``, ``history`` (and ``ip_proto``,
  ``speculative_service`` where present).
- numeric features: ``duration``, ``orig_bytes``, ``resp_bytes``, ``missed_bytes``,
  ``orig_pkts``, ``orig_ip_bytes``, ``resp_pkts``, ``resp_ip_bytes``. Zeek leaves ``duration``,
  ``orig_bytes`` and ``resp_bytes`` unset when a connection's duration is zero (one packet, or
  all at one instant), so they are often null. No engineered ratio: nothing we measured says
  one helps more than the raw counts do.
- labels: ``label`` (``Benign``/``Malicious``, plus ``Unknown`` in CTU-SME-11) is the label
  column; ``detailed-label`` (IoT-23: the attack, ``C&C``, ``DDoS``,
  ``PartOfAHorizontalPortScan``...; CTU-SME-11, which spells it ``detailedlabel``: a free-text
  description) is a second label. Both are left out of the features: either would give the
  answer away.

Endpoints (for context features): ``ts`` (seconds), ``id.orig_h`` -> ``id.resp_h``,
``id.orig_p``/``id.resp_p``, ``proto``, ``conn_state`` (failed or unanswered: ``S0``, no reply;
``REJ``, rejected; ``RSTOS0``/``RSTRH``, a reset before any handshake; ``SH``/``SHR``, a close
before any handshake: the attempts Zeek's own scan detection counts), ``duration``, bytes
``orig_ip_bytes + resp_ip_bytes`` and packets ``orig_pkts + resp_pkts``. The IP-level byte
counts are taken rather than ``orig_bytes``/``resp_bytes`` because Zeek always sets them, while
it leaves the payload counts unset when a connection's duration is zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from latent_sculpting.io.formats.base import FlowFormat, check_unique, normalize_column_name

__all__ = ["ZEEK", "ZeekConn"]

# Columns a Zeek conn.log always has; a file with all of them is one (whatever else it holds).
_SIGNATURE = (
    "ts",
    "id.orig_h",
    "id.orig_p",
    "id.resp_h",
    "id.resp_p",
    "proto",
    "conn_state",
    "orig_pkts",
    "resp_pkts",
)
# Spellings of the second label column, mapped to IoT-23's.
_DETAILED = {"detailedlabel", "detailed_label", "detailed-label", "detailed label"}
# Canonical spellings of the label values, whatever their case in the file.
_LABELS = {"benign": "Benign", "malicious": "Malicious", "unknown": "Unknown"}
# How the unset or empty marker reaches a label column through a CSV conversion.
_UNSET = {"", "-", "(empty)"}


class ZeekConn(FlowFormat):
    """Zeek ``conn.log`` connection records, labelled (Stratosphere) or not."""

    name = "zeek"
    description = "Zeek conn.log (TSV, JSON or a CSV/Parquet with Zeek's columns)"
    label_column = "label"
    benign_label = "Benign"
    identifier_columns = (
        "ts",
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "tunnel_parents",
        "local_orig",
        "local_resp",
        "orig_l2_addr",
        "resp_l2_addr",
        "vlan",
        "inner_vlan",
        "community_id",
        "orig_cc",
        "resp_cc",
    )
    categorical_columns = (
        "proto",
        "service",
        "conn_state",
        "history",
        "ip_proto",
        "speculative_service",
    )
    ignored_columns = {
        "label": "a label column (Benign/Malicious): as a feature it would give the answer away",
        "detailed-label": "a second label column (the attack or a description of the flow): as "
        "a feature it would give the answer away",
    }

    endpoint_columns = {
        "time": "ts",
        "src": "id.orig_h",
        "dst": "id.resp_h",
        "sport": "id.orig_p",
        "dport": "id.resp_p",
        "proto": "proto",
        "state": "conn_state",
        "duration": "duration",
        "bytes": ("orig_ip_bytes", "resp_ip_bytes"),
        "packets": ("orig_pkts", "resp_pkts"),
    }
    endpoint_units = {"time": "s", "duration": "s"}
    failed_states = frozenset({"S0", "REJ", "RSTOS0", "RSTRH", "SH", "SHR"})
    time_hint = "Zeek's ts is seconds since the epoch (its JSON logs' ISO 8601 times are read so)"

    def matches(self, columns: Sequence[str]) -> bool:
        """A Zeek conn.log: every column of :data:`_SIGNATURE` is present."""
        names = {normalize_column_name(c) for c in columns}
        return all(column in names for column in _SIGNATURE)

    def canonical_columns(self, columns: Sequence[str], *, source: object = "input") -> dict:
        """As the base class, with every spelling of the second label (``detailedlabel``,
        ``detailed_label``) named ``detailed-label``."""
        rename = super().canonical_columns(columns, source=source)
        for raw, canonical in rename.items():
            if canonical.casefold() in _DETAILED:
                rename[raw] = "detailed-label"
        check_unique(list(rename.items()), source)
        return rename

    def labels(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Label strings: ``Benign``/``Malicious``/``Unknown`` whatever their case (IoT-23's
        honeypot captures write ``benign``); unset markers (``-``, ``(empty)``, empty) -> None;
        other values (detailed labels) stripped and kept."""
        out = super().labels(column)
        for index, value in enumerate(out):
            if value is None:
                continue
            if value in _UNSET:
                out[index] = None
            else:
                out[index] = _LABELS.get(value.casefold(), value)
        return out


#: The Zeek conn.log format.
ZEEK = ZeekConn()
