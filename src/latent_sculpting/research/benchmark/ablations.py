"""Datasets that are ablations of a benchmark dataset: selectable with ``--datasets``, never run
by default, never pooled with the dataset they vary.

- ``unsw-nb15-noct``: UNSW-NB15 without its authors' connection counts (their context).
- ``iot-23-doubtful-out``: IoT-23 less the Benign-labelled flows to a network its labels call a
  C&C server's (a check of how much the C&C fold's figures rest on those labels).
"""

from __future__ import annotations

import ipaddress

import numpy as np
import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.research.benchmark.adapters import DATASETS, IoT23Adapter, UNSWNB15Adapter

__all__ = [
    "ABLATION_DATASETS",
    "MAIN_DATASETS",
    "UNSW_CONNECTION_COUNTS",
    "IoT23DoubtfulOut",
    "UNSWWithoutCounts",
]

#: UNSW-NB15's connection features (its authors' context, features 36-42 of the dataset's
#: description): counts of connections of the same source, destination, service or ports
#: among the last 100 connections. ``ct_state_ttl``, ``ct_flw_http_mthd`` and ``ct_ftp_cmd``
#: describe the flow itself and stay.
UNSW_CONNECTION_COUNTS = (
    "ct_srv_src",
    "ct_srv_dst",
    "ct_dst_ltm",
    "ct_src_ltm",
    "ct_src_dport_ltm",
    "ct_dst_sport_ltm",
    "ct_dst_src_ltm",
)


class UNSWWithoutCounts(UNSWNB15Adapter):
    """UNSW-NB15 with its connection counts (:data:`UNSW_CONNECTION_COUNTS`) left out of the
    features: what the per-flow features alone detect."""

    name = "unsw-nb15-noct"
    title = "UNSW-NB15 without its connection counts (ct_*)"
    identifiers = (*UNSWNB15Adapter.identifiers, *UNSW_CONNECTION_COUNTS)
    keep = tuple(c for c in UNSWNB15Adapter.keep if c not in UNSW_CONNECTION_COUNTS)


class IoT23DoubtfulOut(IoT23Adapter):
    """IoT-23 less its Benign-labelled flows to a network that flows labelled C&C reach.

    IoT-23's labels come from rules on addresses and times. In capture 42 the infected host
    opens 1,947 connections to 185.244.25.183:4975 over 1.8 hours, starting 7 s after its
    labelled malware download, all labelled Benign; 185.244.25.235, in the same /24, is the
    labelled C&C server of capture 34, where 65 flows to that very server are labelled Benign
    too. Such rows teach every method that beacons to that network are benign and set the
    thresholds of the C&C fold. This ablation leaves out every Benign flow whose responder lies
    in a /24 (IPv6: /64) that a flow of the C&C family reaches, and counts them in the notes;
    it relabels nothing. Context features still see the flows left out (they were traffic).
    """

    name = "iot-23-doubtful-out"
    title = "IoT-23 without Benign flows to a C&C server's network"
    #: The family whose responders' networks are looked for, and the prefix lengths.
    family = "C&C"
    prefix = {4: 24, 6: 64}

    def classes(self, records: pa.Table, source: object) -> tuple[np.ndarray, np.ndarray, dict]:
        classes, keep, notes = super().classes(records, source)
        if "id.resp_h" not in records.column_names:
            raise FlowInputError(
                f"{source}: no column 'id.resp_h' (the responder address this dataset needs)",
                column="id.resp_h",
            )
        networks = [self._network(h) for h in records.column("id.resp_h").to_pylist()]
        present = sorted({str(c) for c in classes[keep]})
        members = set(self.family_map(present).get(self.family, ()))
        servers = {n for n, c, k in zip(networks, classes, keep, strict=True) if k and c in members}
        servers.discard(None)
        doubtful = (
            keep
            & (classes == self.benign)
            & np.fromiter((n in servers for n in networks), dtype=bool, count=len(networks))
        )
        keep = keep & ~doubtful
        if doubtful.any():
            notes[f"Benign flows to a network {self.family} flows reach"] = int(doubtful.sum())
        return classes, keep, notes

    def _network(self, address: object) -> str | None:
        try:
            ip = ipaddress.ip_address(str(address).strip())
        except ValueError:
            return None  # unset or not an address: matches no network
        return str(ipaddress.ip_network(f"{ip}/{self.prefix[ip.version]}", strict=False))


#: Datasets that are ablations of another: selectable, never run by default.
ABLATION_DATASETS = (UNSWWithoutCounts.name, IoT23DoubtfulOut.name)
#: What a benchmark runs by default: every dataset but the ablations.
MAIN_DATASETS = tuple(n for n in DATASETS if n not in ABLATION_DATASETS)
for _adapter in (UNSWWithoutCounts(), IoT23DoubtfulOut()):
    DATASETS.setdefault(_adapter.name, _adapter)
