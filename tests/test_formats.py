"""Formats of Zeek conn.logs, NetFlow exports and nfstream flows: detection, roles, labels."""

from __future__ import annotations

import collections

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from shared_files import shared

from latent_sculpting.io.formats import FORMATS, detect_format, get_format
from latent_sculpting.io.formats.netflow import NETFLOW
from latent_sculpting.io.formats.nfstream import NFSTREAM
from latent_sculpting.io.formats.zeek_conn import ZEEK
from latent_sculpting.io.readers import zeek as zeek_reader

ZEEK_NUMERIC = {
    "duration",
    "orig_bytes",
    "resp_bytes",
    "missed_bytes",
    "orig_pkts",
    "orig_ip_bytes",
    "resp_pkts",
    "resp_ip_bytes",
}

# Column sets of the NF-* datasets (Sarhan et al.): version 1, and the extended sets of versions
# 2 and 3 (v3 adds the flow times and inter-arrival statistics).
NF_V1 = (
    "IPV4_SRC_ADDR L4_SRC_PORT IPV4_DST_ADDR L4_DST_PORT PROTOCOL L7_PROTO IN_BYTES OUT_BYTES "
    "IN_PKTS OUT_PKTS TCP_FLAGS FLOW_DURATION_MILLISECONDS Label Attack"
).split()
NF_V2_EXTRA = (
    "CLIENT_TCP_FLAGS SERVER_TCP_FLAGS DURATION_IN DURATION_OUT MIN_TTL MAX_TTL LONGEST_FLOW_PKT "
    "SHORTEST_FLOW_PKT MIN_IP_PKT_LEN MAX_IP_PKT_LEN SRC_TO_DST_SECOND_BYTES "
    "DST_TO_SRC_SECOND_BYTES RETRANSMITTED_IN_BYTES RETRANSMITTED_IN_PKTS RETRANSMITTED_OUT_BYTES "
    "RETRANSMITTED_OUT_PKTS SRC_TO_DST_AVG_THROUGHPUT DST_TO_SRC_AVG_THROUGHPUT "
    "NUM_PKTS_UP_TO_128_BYTES NUM_PKTS_128_TO_256_BYTES NUM_PKTS_256_TO_512_BYTES "
    "NUM_PKTS_512_TO_1024_BYTES NUM_PKTS_1024_TO_1514_BYTES TCP_WIN_MAX_IN TCP_WIN_MAX_OUT "
    "ICMP_TYPE ICMP_IPV4_TYPE DNS_QUERY_ID DNS_QUERY_TYPE DNS_TTL_ANSWER FTP_COMMAND_RET_CODE"
).split()
NF_V3_EXTRA = (
    "FLOW_START_MILLISECONDS FLOW_END_MILLISECONDS SRC_TO_DST_IAT_MIN SRC_TO_DST_IAT_MAX "
    "SRC_TO_DST_IAT_AVG SRC_TO_DST_IAT_STDDEV DST_TO_SRC_IAT_MIN DST_TO_SRC_IAT_MAX "
    "DST_TO_SRC_IAT_AVG DST_TO_SRC_IAT_STDDEV"
).split()
NFDUMP16 = (
    "ts,te,td,sa,da,sp,dp,pr,flg,fwd,stos,ipkt,ibyt,opkt,obyt,in,out,sas,das,smk,dmk,dtos,dir,"
    "nh,nhb,svln,dvln,ismc,odmc,idmc,osmc,mpls1,mpls2,mpls3,mpls4,mpls5,mpls6,mpls7,mpls8,mpls9,"
    "mpls10,cl,sl,al,ra,eng,exid,tr"
).split(",")
NFDUMP17 = (
    "cnt,af,firstSeen,lastSeen,proto,srcAddr,srcPort,dstAddr,dstPort,srcAS,dstAS,input,output,"
    "flags,srcTos,packets,bytes"
).split(",")


def roles(fmt, columns, label=None):
    """Columns by role under ``fmt`` (case-insensitive, as the formats match)."""

    def key(names):
        return {n.casefold() for n in names}

    ident = key(fmt.identifier_columns)
    cat = key(fmt.categorical_columns)
    ignored = key(fmt.ignored_columns)
    out = collections.defaultdict(set)
    for column in columns:
        folded = column.casefold()
        role = (
            "label"
            if column == label
            else "identifier"
            if folded in ident
            else "categorical"
            if folded in cat
            else "ignored"
            if folded in ignored
            else "numeric"
        )
        out[role].add(column)
    return out


def test_registered_before_the_generic_table():
    names = list(FORMATS)
    assert names[-1] == "table"
    assert {"zeek", "netflow", "nfstream"} < set(names[:-1])
    assert get_format("zeek") is ZEEK and get_format("netflow") is NETFLOW
    assert get_format("nfstream") is NFSTREAM


# --- Zeek -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "ctu-sme-11-conn.log.labeled",
        "mixed-json-conn.log",
        "mixed-tsv-conn.log",
        "portscan-horizontal-conn.log",
        "portscan-vertical-conn.log",
    ],
)
def test_every_shared_zeek_log_is_zeek_with_its_roles(name):
    columns = zeek_reader.columns(shared("data", "zeek_logs", name))
    assert ZEEK.matches(columns) and detect_format(columns) is ZEEK
    assert not NETFLOW.matches(columns) and not NFSTREAM.matches(columns)
    canonical = list(ZEEK.canonical_columns(columns).values())
    by_role = roles(ZEEK, canonical, ZEEK.label_column)
    assert by_role["numeric"] == ZEEK_NUMERIC
    assert by_role["categorical"] <= {"proto", "service", "conn_state", "history"}
    assert {"ts", "uid", "id.orig_h", "id.resp_p"} <= by_role["identifier"]
    assert {"local_orig", "local_resp"} & set(canonical) <= by_role["identifier"]


def test_labelled_log_canonical_labels_and_counts():
    path = shared("data", "zeek_logs", "ctu-sme-11-conn.log.labeled")
    table = pa.Table.from_batches(list(zeek_reader.batches(path)))
    rename = ZEEK.canonical_columns(table.column_names)
    assert rename["detailedlabel"] == "detailed-label"
    assert roles(ZEEK, rename.values(), "label")["ignored"] == {"detailed-label"}
    labels = ZEEK.labels(table.column("label"))
    assert collections.Counter(labels) == {"Malicious": 719, "Benign": 44, "Unknown": 3}
    detailed = ZEEK.labels(table.column("detailedlabel"))
    assert sum(v is None for v in detailed) == 3  # (empty) -> ''
    with pytest.raises(ValueError, match="appears as 'detailedlabel' and 'detailed-label'"):
        ZEEK.canonical_columns(["ts", "detailedlabel", "detailed-label"], source="x.log")


IOT23_LABELS = {  # label, detailed-label per SOURCE.md
    "CTU-Honeypot-Capture-4-1-labeled.csv": ({"Benign": 452}, {}),
    "CTU-Malware-Capture-34-1-labeled.csv": (
        {"Malicious": 21_222, "Benign": 1_923},
        {"DDoS": 14_394, "C&C": 6_706, "PartOfAHorizontalPortScan": 122},
    ),
    "CTU-Malware-Capture-44-1-labeled.csv": (
        {"Benign": 211, "Malicious": 26},
        {"C&C": 14, "C&C-FileDownload": 11, "DDoS": 1},
    ),
}


def read_iot23(name: str) -> pa.Table:
    path = shared("data", "iot23_zeek", name)
    text = {"label": pa.string(), "detailed-label": pa.string()}
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=text))


@pytest.mark.parametrize("name", sorted(IOT23_LABELS))
def test_iot23_csv_is_zeek_with_labels(name):
    table = read_iot23(name)
    assert detect_format(table.column_names) is ZEEK
    label, detailed = IOT23_LABELS[name]
    assert collections.Counter(ZEEK.labels(table.column("label"))) == label
    counts = collections.Counter(ZEEK.labels(table.column("detailed-label")))
    assert counts.pop(None) == label.get("Benign", 0)  # benign flows have no detailed label
    assert counts == detailed


def test_all_iot23_captures_add_up_to_source_md():
    folder = shared("data", "iot23_zeek")
    totals = collections.Counter()
    for path in sorted(folder.glob("*.csv")):
        totals.update(ZEEK.labels(read_iot23(path.name).column("label")))
    # 1,956 written 'benign' and 15,200 'Benign' are one class.
    assert totals == {"Benign": 17_156, "Malicious": 29_506}


# --- NetFlow --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "columns",
    [NF_V1, NF_V1 + NF_V2_EXTRA, NF_V1 + NF_V2_EXTRA + NF_V3_EXTRA, NFDUMP16, NFDUMP17],
    ids=["nf-v1", "nf-v2", "nf-v3", "nfdump-1.6", "nfdump-1.7"],
)
def test_netflow_column_sets_are_netflow(columns):
    assert NETFLOW.matches(columns) and detect_format(columns) is NETFLOW
    assert not ZEEK.matches(columns) and not NFSTREAM.matches(columns)
    by_role = roles(NETFLOW, columns, "Attack" if "Attack" in columns else None)
    addresses = {"IPV4_SRC_ADDR", "IPV4_DST_ADDR", "sa", "da", "srcAddr", "dstAddr"}
    ports = {"L4_SRC_PORT", "L4_DST_PORT", "sp", "dp", "srcPort", "dstPort"}
    assert (addresses | ports) & set(columns) <= by_role["identifier"]
    assert {"PROTOCOL", "pr", "proto"} & set(columns) <= by_role["categorical"]
    assert {"IN_BYTES", "ibyt", "bytes"} & set(columns) <= by_role["numeric"]
    assert not by_role["numeric"] & {"Label", "MIN_TTL", "FLOW_START_MILLISECONDS", "ts"}


def test_netflow_nf_v2_roles_exactly():
    by_role = roles(NETFLOW, NF_V1 + NF_V2_EXTRA, "Attack")
    assert by_role["ignored"] == {"Label"}
    assert by_role["categorical"] == {
        "PROTOCOL",
        "L7_PROTO",
        "TCP_FLAGS",
        "CLIENT_TCP_FLAGS",
        "SERVER_TCP_FLAGS",
        "ICMP_TYPE",
        "ICMP_IPV4_TYPE",
        "DNS_QUERY_TYPE",
        "FTP_COMMAND_RET_CODE",
    }
    assert by_role["identifier"] == {
        "IPV4_SRC_ADDR",
        "IPV4_DST_ADDR",
        "L4_SRC_PORT",
        "L4_DST_PORT",
        "DNS_QUERY_ID",
        "MIN_TTL",
        "MAX_TTL",
    }
    assert len(by_role["numeric"]) == 43 - 9 - 4 - 3  # 43 v2 features less the other roles


def test_synthetic_nf_csv_labels(tmp_path):
    # SYNTHETIC rows written by hand in NF-v1's columns: no real NetFlow file is shared.
    path = tmp_path / "synthetic-nf-v1.csv"
    path.write_text(
        ",".join(NF_V1)
        + "\n59.166.0.2,4894,149.171.126.3,53,17,5.212,146,178,2,2,0,0,0,Benign\n"
        + "175.45.176.1,0,149.171.126.16,0,6,0.0,4480,0,80,0,2,15000,1,Exploits\n"
        + "59.166.0.1,1024,149.171.126.9,80,6,7.0,800,1200,6,6,27,10,0, benign \n"
    )
    table = pacsv.read_csv(path)
    assert detect_format(table.column_names) is NETFLOW
    assert list(NETFLOW.labels(table.column(NETFLOW.label_column))) == [
        "Benign",
        "Exploits",
        "Benign",
    ]


def test_synthetic_nfdump_csv_is_netflow(tmp_path):
    # SYNTHETIC nfdump 1.6 `-o csv` lines (header as nfdump prints it, summary cut off).
    path = tmp_path / "synthetic-nfdump.csv"
    row = (
        "2023-11-14 22:13:20.000,2023-11-14 22:13:21.000,1.000,10.5.0.1,8.8.8.8,51000,443,TCP,"
        "....,0,0,3,1500,0,0,1,2,64500,15169,24,32,0,0,0.0.0.0,0.0.0.0,0,0,00:00:00:00:00:00,"
        "00:00:00:00:00:00,00:00:00:00:00:00,00:00:00:00:00:00,0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,"
        "0-0-0,0-0-0,0-0-0,0-0-0,0-0-0,0.000,0.000,0.000,192.168.1.1,0/0,1,"
        "2023-11-14 22:13:25.000"
    )
    path.write_text(",".join(NFDUMP16) + "\n" + row + "\n")
    table = pacsv.read_csv(path)
    assert table.num_columns == len(NFDUMP16)
    assert detect_format(table.column_names) is NETFLOW
    assert roles(NETFLOW, table.column_names)["numeric"] == {
        "td",
        "ipkt",
        "ibyt",
        "opkt",
        "obyt",
        "cl",
        "sl",
        "al",
    }


# --- nfstream ---------------------------------------------------------------------------------


def test_nfstream_columns_and_roles():
    pcap = pytest.importorskip("latent_sculpting.io.readers.pcap")
    pytest.importorskip("nfstream")
    columns = ["source_file", *pcap.columns()]
    assert NFSTREAM.matches(columns) and detect_format(columns) is NFSTREAM
    assert NFSTREAM.matches(columns[1:])  # nfstream's own CSV, without source_file
    assert not ZEEK.matches(columns) and not NETFLOW.matches(columns)
    by_role = roles(NFSTREAM, columns)
    assert by_role["categorical"] == set(NFSTREAM.categorical_columns)
    assert by_role["ignored"] == {"expiration_id", "content_type"}
    assert set(NFSTREAM.identifier_columns) <= set(columns)
    numeric = by_role["numeric"]
    assert len(numeric) == 86 + 1 - 22 - 5 - 2
    assert all(
        name.startswith(("bidirectional_", "src2dst_", "dst2src_"))
        or name == "application_is_guessed"
        for name in numeric
    )
    assert not any(name.endswith(("_seen_ms", "_ip", "_port", "_mac", "_oui")) for name in numeric)
