"""Flows metered by nfstream (``sculpt extract``'s output): what each column means for a model.

Roles
-----
- identifiers: ``source_file``, ``id``, addresses, MAC addresses and their OUIs (the vendor of
  a host's network card), ports, VLAN and tunnel ids, every ``*_first_seen_ms``/
  ``*_last_seen_ms`` time, and what nDPI read of a host's identity: ``requested_server_name``
  (SNI or HTTP Host), ``client_fingerprint``/``server_fingerprint`` (JA3/JA4-style TLS hashes)
  and ``user_agent``. They name hosts and times, not behaviour, and are carried to the output
  for the analyst.
- categorical features: ``protocol`` (the IP protocol number), ``ip_version``,
  ``application_name`` and ``application_category_name`` (nDPI's), ``application_confidence``
  (how nDPI decided: a code, not a quantity).
- numeric features: every duration, packet and byte count, packet-size and inter-arrival
  statistic, TCP flag count, and ``application_is_guessed`` (0/1).
- left out: ``expiration_id`` (how the meter ended the flow: idle or active timeout, or the end
  of the capture; an artefact of the settings and of where the capture stops) and
  ``content_type`` (free text from an HTTP header, empty for every other flow).

Endpoints (for context features): ``bidirectional_first_seen_ms`` (milliseconds), ``src_ip``
-> ``dst_ip``, ``src_port``/``dst_port``, ``protocol``, ``dst2src_packets`` as the state (no
reply packet: unanswered), ``bidirectional_duration_ms``, ``bidirectional_bytes`` and
``bidirectional_packets``.

Extracted flows carry no label; a labelled table built from them names its label column with
``--label-column``.
"""

from __future__ import annotations

from collections.abc import Sequence

from latent_sculpting.io.formats.base import FlowFormat, normalize_column_name

__all__ = ["NFSTREAM", "NFStreamFlows"]

_SIGNATURE = (
    "bidirectional_first_seen_ms",
    "bidirectional_packets",
    "bidirectional_bytes",
    "src2dst_packets",
    "dst2src_packets",
)


class NFStreamFlows(FlowFormat):
    """Bidirectional flows with nfstream's columns (``sculpt extract``, ``NFStreamer``)."""

    name = "nfstream"
    description = "nfstream flows, as written by `sculpt extract`"
    identifier_columns = (
        "source_file",
        "id",
        "src_ip",
        "src_mac",
        "src_oui",
        "src_port",
        "dst_ip",
        "dst_mac",
        "dst_oui",
        "dst_port",
        "vlan_id",
        "tunnel_id",
        "bidirectional_first_seen_ms",
        "bidirectional_last_seen_ms",
        "src2dst_first_seen_ms",
        "src2dst_last_seen_ms",
        "dst2src_first_seen_ms",
        "dst2src_last_seen_ms",
        "requested_server_name",
        "client_fingerprint",
        "server_fingerprint",
        "user_agent",
    )
    categorical_columns = (
        "protocol",
        "ip_version",
        "application_name",
        "application_category_name",
        "application_confidence",
    )
    ignored_columns = {
        "expiration_id": "how the meter ended the flow (idle or active timeout, end of the "
        "capture): an artefact of the settings and of where the capture stops",
        "content_type": "free text from an HTTP header, empty for every other flow",
    }

    endpoint_columns = {
        "time": "bidirectional_first_seen_ms",
        "src": "src_ip",
        "dst": "dst_ip",
        "sport": "src_port",
        "dport": "dst_port",
        "proto": "protocol",
        "state": "dst2src_packets",
        "duration": "bidirectional_duration_ms",
        "bytes": "bidirectional_bytes",
        "packets": "bidirectional_packets",
    }
    endpoint_units = {"time": "ms", "duration": "ms"}
    time_hint = "nfstream's bidirectional_first_seen_ms is milliseconds since the epoch"

    def matches(self, columns: Sequence[str]) -> bool:
        """nfstream's bidirectional and per-direction counters are all present."""
        names = {normalize_column_name(c) for c in columns}
        return all(column in names for column in _SIGNATURE)


#: The nfstream flow format.
NFSTREAM = NFStreamFlows()
