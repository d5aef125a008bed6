"""NetFlow/IPFIX flow records in their common text forms: what each column means for a model.

Two families of column names are recognised (files are read by the CSV or Parquet reader):

- the NF-* datasets of Sarhan, Layeghy and Portmann (NF-UNSW-NB15, NF-BoT-IoT, NF-ToN-IoT,
  NF-CSE-CIC-IDS2018, NF-UQ-NIDS; versions 1 to 3), whose columns are nProbe's NetFlow v9 field
  names (``IPV4_SRC_ADDR``, ``L4_SRC_PORT``, ``IN_BYTES``, ``FLOW_DURATION_MILLISECONDS``, ...)
  with the labels ``Label`` (0/1) and ``Attack`` (the class);
- nfdump's CSV (``nfdump -r FILE -o csv``): 1.6's short names (``ts,te,td,sa,da,sp,dp,pr,flg,
  fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,nh,nhb,svln,dvln,ismc,odmc,idmc,
  osmc,mpls1..mpls10,cl,sl,al,ra,eng,exid,tr``) and 1.7's long ones (``cnt,af,firstSeen,
  lastSeen,proto,srcAddr,srcPort,dstAddr,dstPort,srcAS,dstAS,input,output,flags,srcTos,packets,
  bytes`` and the ``csv:%...`` fields). nfdump 1.6 appends a ``Summary`` block after the flows;
  cut it off first (docs/reference/formats.md says how).

Roles: addresses, ports, times, interfaces, AS numbers, masks, next hops, VLANs, MACs, MPLS
labels, exporter ids and DNS transaction ids are identifiers; so are the TTLs (``MIN_TTL``,
``MAX_TTL``), which name the sending host's operating system and its distance rather than what
the flow does (in the NF datasets they single out the testbed's attacking hosts). Protocol
numbers, nDPI's ``L7_PROTO``, TCP flag sets, ToS bytes, ICMP types, DNS query types, FTP return
codes, forwarding status and direction are categorical (numbers whose size means nothing). Counts,
sizes, durations, throughputs, inter-arrival times and latencies are numeric features.
``Attack`` is the label column (``Benign`` for benign flows); ``Label`` (its 0/1 twin) and
NF-UQ-NIDS's ``Dataset`` are left out of the features.

Endpoints (for context features), in the first spelling present: NF-v3's
``FLOW_START_MILLISECONDS`` with ``IPV4_SRC_ADDR``/``IPV4_DST_ADDR``, ``L4_*_PORT``,
``PROTOCOL``, ``OUT_PKTS`` as the state (no reply packet: unanswered),
``FLOW_DURATION_MILLISECONDS``, ``IN_BYTES + OUT_BYTES`` and ``IN_PKTS + OUT_PKTS`` (versions 1
and 2 have no start time, so no context); nfdump 1.6's ``ts`` (date-time text), ``sa``/``da``,
``sp``/``dp``, ``pr``, ``td`` (seconds), ``ibyt + obyt``, ``ipkt + opkt`` (or ``ibyt``,
``ipkt`` alone); nfdump 1.7's ``firstSeen``, ``srcAddr``/``dstAddr``, ``srcPort``/``dstPort``,
``proto``, ``bytes``, ``packets`` (or ``inBytes``, ``inPackets``). nfdump's flows carry no
state: exporters of one-way flows leave the return counters at 0, so a zero there would not
mean unanswered.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from latent_sculpting.io.formats.base import FlowFormat, normalize_column_name

__all__ = ["NETFLOW", "NetFlow"]

_NF_SIGNATURE = (
    "IPV4_SRC_ADDR",
    "IPV4_DST_ADDR",
    "L4_SRC_PORT",
    "L4_DST_PORT",
    "PROTOCOL",
    "IN_BYTES",
    "OUT_BYTES",
    "IN_PKTS",
    "OUT_PKTS",
)
_NFDUMP16_SIGNATURE = ("ts", "te", "td", "sa", "da", "sp", "dp", "pr", "ipkt", "ibyt")
_NFDUMP17_SIGNATURE = ("firstSeen", "lastSeen", "proto", "srcAddr", "dstAddr", "srcPort", "dstPort")

_NF_IDENTIFIERS = (
    "IPV4_SRC_ADDR",
    "IPV4_DST_ADDR",
    "IPV6_SRC_ADDR",
    "IPV6_DST_ADDR",
    "L4_SRC_PORT",
    "L4_DST_PORT",
    "FLOW_START_MILLISECONDS",
    "FLOW_END_MILLISECONDS",
    "DNS_QUERY_ID",
    "MIN_TTL",
    "MAX_TTL",
)
_NF_CATEGORICAL = (
    "PROTOCOL",
    "L7_PROTO",
    "TCP_FLAGS",
    "CLIENT_TCP_FLAGS",
    "SERVER_TCP_FLAGS",
    "ICMP_TYPE",
    "ICMP_IPV4_TYPE",
    "DNS_QUERY_TYPE",
    "FTP_COMMAND_RET_CODE",
)
_NFDUMP16_IDENTIFIERS = (
    "ts",
    "te",
    "tr",
    "sa",
    "da",
    "sp",
    "dp",
    "in",
    "out",
    "sas",
    "das",
    "smk",
    "dmk",
    "nh",
    "nhb",
    "svln",
    "dvln",
    "ismc",
    "odmc",
    "idmc",
    "osmc",
    *(f"mpls{i}" for i in range(1, 11)),
    "ra",
    "eng",
    "exid",
)
_NFDUMP16_CATEGORICAL = ("pr", "flg", "fwd", "stos", "dtos", "dir")
_NFDUMP17_IDENTIFIERS = (
    "cnt",
    "firstSeen",
    "lastSeen",
    "received",
    "srcAddr",
    "dstAddr",
    "srcPort",
    "dstPort",
    "srcNet",
    "dstNet",
    "srcAS",
    "dstAS",
    "nextAS",
    "prevAS",
    "input",
    "output",
    "srcMask",
    "dstMask",
    "srcVlan",
    "dstVlan",
    "nextIP",
    "bgpNextIP",
    "routerIP",
    "inSrcMac",
    "outDstMac",
    "inDstMac",
    "outSrcMac",
    *(f"mplsLabel{i}" for i in range(1, 11)),
    "engine",
    "exporterID",
    "flowID",
    "minTTL",
    "maxTTL",
)
_NFDUMP17_CATEGORICAL = (
    "af",
    "proto",
    "flags",
    "fwdStatus",
    "tos",
    "srcTos",
    "dstTos",
    "direction",
    "biDirection",
    "icmpType",
    "icmpCode",
)


_NF3_ENDPOINTS = {
    "time": "FLOW_START_MILLISECONDS",
    "src": "IPV4_SRC_ADDR",
    "dst": "IPV4_DST_ADDR",
    "sport": "L4_SRC_PORT",
    "dport": "L4_DST_PORT",
    "proto": "PROTOCOL",
    "state": "OUT_PKTS",
    "duration": "FLOW_DURATION_MILLISECONDS",
    "bytes": ("IN_BYTES", "OUT_BYTES"),
    "packets": ("IN_PKTS", "OUT_PKTS"),
}
_NFDUMP16_ENDPOINTS = {
    "time": "ts",
    "src": "sa",
    "dst": "da",
    "sport": "sp",
    "dport": "dp",
    "proto": "pr",
    "duration": "td",
    "bytes": ("ibyt", "obyt"),
    "packets": ("ipkt", "opkt"),
}
_NFDUMP17_ENDPOINTS = {
    "time": "firstSeen",
    "src": "srcAddr",
    "dst": "dstAddr",
    "sport": "srcPort",
    "dport": "dstPort",
    "proto": "proto",
    "bytes": "bytes",
    "packets": "packets",
}


def _names(columns: Sequence[str]) -> set[str]:
    return {normalize_column_name(c).casefold() for c in columns}


def _has_all(names: set[str], signature: Sequence[str]) -> bool:
    return all(column.casefold() in names for column in signature)


class NetFlow(FlowFormat):
    """NetFlow/IPFIX records: the NF-* datasets' columns, or nfdump's CSV."""

    name = "netflow"
    description = "NetFlow/IPFIX text exports: NF-* datasets (nProbe v9 names) or nfdump CSV"
    label_column = "Attack"
    benign_label = "Benign"
    identifier_columns = _NF_IDENTIFIERS + _NFDUMP16_IDENTIFIERS + _NFDUMP17_IDENTIFIERS
    categorical_columns = _NF_CATEGORICAL + _NFDUMP16_CATEGORICAL + _NFDUMP17_CATEGORICAL
    ignored_columns = {
        "Attack": "the label column (attack class): as a feature it would give the answer away",
        "Label": "the 0/1 label beside Attack: as a feature it would give the answer away",
        "Dataset": "names the source dataset (NF-UQ-NIDS merges four): a model would learn "
        "which dataset a flow came from, not what it does",
        "endReason": "how the exporter ended the flow (timeout, end of capture): an artefact "
        "of the exporter's settings",
    }

    endpoint_columns = _NF3_ENDPOINTS
    endpoint_units = {"time": "ms", "duration": "ms"}
    endpoint_alternatives = (
        (_NFDUMP16_ENDPOINTS, {"time": "datetime", "duration": "s"}),
        (
            {**_NFDUMP16_ENDPOINTS, "bytes": "ibyt", "packets": "ipkt"},
            {"time": "datetime", "duration": "s"},
        ),
        (_NFDUMP17_ENDPOINTS, {"time": "datetime"}),
        (
            {**_NFDUMP17_ENDPOINTS, "bytes": "inBytes", "packets": "inPackets"},
            {"time": "datetime"},
        ),
    )
    time_hint = (
        "NF-v3's FLOW_START_MILLISECONDS is milliseconds since the epoch; nfdump writes its "
        "first-seen time as date-time text (2016-09-15 12:34:56.789); the NF datasets' "
        "versions 1 and 2 carry no start time"
    )

    def matches(self, columns: Sequence[str]) -> bool:
        """The NF-* datasets' core v9 fields, nfdump 1.6's or nfdump 1.7's CSV header."""
        names = _names(columns)
        nfdump17 = _has_all(names, _NFDUMP17_SIGNATURE) and (
            {"packets", "inpackets"} & names and {"bytes", "inbytes"} & names
        )
        return (
            _has_all(names, _NF_SIGNATURE) or _has_all(names, _NFDUMP16_SIGNATURE) or bool(nfdump17)
        )

    def labels(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Label strings, stripped; any spelling of ``benign`` becomes ``Benign``."""
        out = super().labels(column)
        for index, value in enumerate(out):
            if value is not None and value.casefold() == "benign":
                out[index] = "Benign"
        return out


#: The NetFlow/IPFIX format.
NETFLOW = NetFlow()
