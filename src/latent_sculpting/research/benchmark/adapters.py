"""The benchmark's dataset adapters: what each dataset's columns and labels mean for the zero-day
protocol.

An adapter names the column (or columns) a dataset's class comes from and the benign class, the
columns that must never be features (identifiers and label columns), the categorical columns,
its attack families (the classes withheld together in a fold) and its campaigns (classes from
one attack campaign, kept out of training together). :mod:`.datasets` reads a dataset through
its adapter.

The family maps and the reasons for each choice are in ``docs/research/protocol.md``; the
adapters are kept together so that the protocol's data choices read in one place.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.fitting import fit_spec
from latent_sculpting.io.flowspec import FlowSpec
from latent_sculpting.io.formats import get_format
from latent_sculpting.io.formats.cicids2017 import ATTEMPTED_SUFFIX

__all__ = [
    "DATASETS",
    "SHARED_VARIABLE",
    "CICIDS2017Adapter",
    "DatasetAdapter",
    "IoT23Adapter",
    "UNSWNB15Adapter",
    "data_root",
    "get_adapter",
]

#: Where the benchmark looks for the datasets that do not ship with the package: ``data/``
#: inside the folder the ``SCULPT_SHARED`` environment variable names, else ``../shared/data``
#: (relative to the working directory: the repository's checkout sits beside ``shared/``).
SHARED_VARIABLE = "SCULPT_SHARED"


def data_root() -> Path:
    """The folder holding one sub-folder per dataset (see :data:`SHARED_VARIABLE`)."""
    return Path(os.environ.get(SHARED_VARIABLE, "../shared")) / "data"


class DatasetAdapter:
    """What one dataset means to the zero-day protocol. Subclasses set the attributes and
    :meth:`classes`.

    Attributes
    ----------
    name : str
        Registry key (``--datasets NAME``).
    title : str
    folder : str
        Sub-folder of :func:`data_root` holding the files (None: ships with the package).
    format : str
        Registered format the files are read with.
    benign : str
        The benign class.
    identifiers : tuple of str
        Columns that identify a flow: never features (those present are passed as ``drop``).
    label_columns : tuple of str
        Columns the class is read from: never features.
    keep : tuple of str
        Feature columns whose names read like identifiers.
    categorical : tuple of str
        The categorical feature columns the fitted spec must have (checked).
    families : dict of str to tuple of str
        Family name -> classes (those absent from the data are dropped). A class may belong to
        several families (IoT-23's ``C&C-FileDownload``): it is then tested in each of their
        folds and kept out of training in all of them.
    campaigns : tuple of tuple of str
        Classes from one campaign: when one is withheld, all are kept out of training.
    download : str
        Where to get the full release (for users and docs).
    """

    name: str = ""
    title: str = ""
    folder: str | None = None
    format: str = "table"
    benign: str = ""
    identifiers: tuple[str, ...] = ()
    label_columns: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    categorical: tuple[str, ...] = ()
    families: Mapping[str, tuple[str, ...]] = {}
    campaigns: tuple[tuple[str, ...], ...] = ()
    download: str = ""

    def default_path(self) -> Path:
        return data_root() / str(self.folder)

    def classes(self, records: pa.Table, source: object) -> tuple[np.ndarray, np.ndarray, dict]:
        """Class of each record.

        Returns
        -------
        classes : ndarray of object
        keep : ndarray of bool
            Rows to use (False: left out, counted in ``notes``).
        notes : dict of str to int
            Rows left out, by reason.
        """
        raise NotImplementedError

    def family_map(self, present: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """Families restricted to the classes present (empty families omitted)."""
        out = {}
        for name, classes in self.families.items():
            kept = tuple(c for c in classes if c in present)
            if kept:
                out[name] = kept
        return out

    def natural_counts(self, path: Path | None) -> dict[str, int] | None:
        """Rows per class in the full release when ``path`` is a sample of it (None: the data
        read is taken as it is)."""
        return None

    def fit_spec(self, records: pa.Table, *, source: object = "the training rows") -> FlowSpec:
        """The fold's input spec, fitted on its training records only; roles checked.

        Raises
        ------
        ValueError
            If the spec's categorical columns differ from :attr:`categorical`, or a label or
            identifier column became a feature.
        """
        columns = set(records.column_names)
        never = [c for c in (*self.identifiers, *self.label_columns) if c in columns]
        kwargs: dict = {"format": self.format, "source": source}
        if self.format == "table":
            kwargs.update(
                label_column=None,
                drop=never,
                keep=[c for c in self.keep if c in columns],
            )
        spec = fit_spec(records, **kwargs)
        cats = tuple(c.column for c in spec.categorical)
        if set(cats) != set(self.categorical):
            raise ValueError(
                f"{self.name}: categorical columns {sorted(cats)} differ from the adapter's "
                f"{sorted(self.categorical)}; name every text column's role in the adapter"
            )
        sources = set(spec.numeric) | set(cats)
        leaked = sorted(sources & set(never) | sources & set(self.label_columns))
        if leaked:
            raise ValueError(f"{self.name}: label or identifier column(s) {leaked} are features")
        return spec

    def __repr__(self) -> str:
        return f"<dataset {self.name}>"


def _text_column(records: pa.Table, name: str, source: object) -> np.ndarray:
    if name not in records.column_names:
        raise FlowInputError(
            f"{source}: no column {name!r} (columns: {records.column_names})", column=name
        )
    column = records.column(name)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        column = column.cast(pa.string())
    return np.asarray(column.to_pylist(), dtype=object)


class CICIDS2017Adapter(DatasetAdapter):
    name = "cicids2017"
    title = "CIC-IDS-2017"
    format = "cicids2017"
    benign = "BENIGN"
    label_columns = ("Label",)
    download = (
        "the original MachineLearningCSV.zip of the Canadian Institute for Cybersecurity "
        "(https://www.unb.ca/cic/datasets/ids-2017.html), or the improved re-extraction of "
        "Engelen et al. (https://intrusion-detection.distrinet-research.be/WTMC2021/)"
    )
    families = {
        "DoS": ("DoS Hulk", "DoS GoldenEye", "DoS slowloris", "DoS Slowhttptest"),
        "DDoS": ("DDoS",),
        "PortScan": ("PortScan", "Infiltration - Portscan"),
        "Brute Force": ("FTP-Patator", "SSH-Patator"),
        "Web Attack": (
            "Web Attack - Brute Force",
            "Web Attack - XSS",
            "Web Attack - Sql Injection",
        ),
        "Bot": ("Bot",),
        "Infiltration": ("Infiltration",),
    }
    # The port scan the infiltrated host ran is part of the infiltration campaign: training on
    # it while Infiltration is withheld would teach the model that host's traffic.
    campaigns = (("Infiltration", "Infiltration - Portscan"),)
    #: The paper's four withheld classes (Chhetri et al., arXiv:2512.22179).
    paper = ("DoS slowloris", "DoS Slowhttptest", "Bot", "Infiltration")
    #: Rows per class in the full improved release (non-attempted; the embedded sample's
    #: SOURCE.md), for F1 at the natural prevalence: the sample keeps 0.47 % of benign flows.
    improved_counts = {
        "BENIGN": 1_582_566,
        "FTP-Patator": 3_972,
        "SSH-Patator": 2_961,
        "DoS Hulk": 158_468,
        "DoS GoldenEye": 7_567,
        "DoS slowloris": 3_859,
        "DoS Slowhttptest": 1_740,
        "Heartbleed": 11,
        "Infiltration - Portscan": 71_767,
        "Web Attack - Brute Force": 73,
        "Infiltration": 36,
        "Web Attack - XSS": 18,
        "Web Attack - Sql Injection": 13,
        "PortScan": 159_066,
        "DDoS": 95_144,
        "Bot": 736,
    }

    def default_path(self) -> Path:
        from latent_sculpting.data import sample_path

        return sample_path()

    def natural_counts(self, path: Path | None) -> dict[str, int] | None:
        from latent_sculpting.data import sample_path

        if path is not None and Path(path).resolve() == sample_path().resolve():
            return dict(self.improved_counts)
        return None

    def classes(self, records: pa.Table, source: object) -> tuple[np.ndarray, np.ndarray, dict]:
        fmt = get_format(self.format)
        if "Label" not in records.column_names:
            raise FlowInputError(f"{source}: no 'Label' column", column="Label")
        classes = fmt.labels(records.column("Label"))
        # Attempted attacks (improved release) carry no attack payload: neither benign traffic
        # nor the attack; left out, as Engelen et al. advise against training on them as attacks.
        attempted = np.fromiter(
            (str(c).endswith(ATTEMPTED_SUFFIX) for c in classes), bool, len(classes)
        )
        if "Attempted Category" in records.column_names:
            category = pd.to_numeric(
                pd.Series(records.column("Attempted Category").to_pylist()), errors="coerce"
            )
            attempted |= category.fillna(-1).to_numpy() != -1
        missing = pd.isna(classes)
        notes = {}
        if attempted.any():
            notes["attempted attacks (improved release) left out"] = int(attempted.sum())
        if missing.any():
            notes["rows without a label left out"] = int(missing.sum())
        return classes, ~(attempted | missing), notes


class UNSWNB15Adapter(DatasetAdapter):
    name = "unsw-nb15"
    title = "UNSW-NB15"
    folder = "unsw_nb15"
    benign = "Normal"
    # `id` is a row number; `label` repeats `attack_cat` as 0/1.
    identifiers = ("id",)
    label_columns = ("attack_cat", "label")
    # Counters whose names contain `dport`, `sport` or `ips`: features, not identifiers.
    keep = ("ct_src_dport_ltm", "ct_dst_sport_ltm", "is_sm_ips_ports")
    categorical = ("proto", "service", "state")
    download = (
        "the partitioned UNSW_NB15_training-set.csv and UNSW_NB15_testing-set.csv of UNSW "
        "Canberra (https://research.unsw.edu.au/projects/unsw-nb15-dataset)"
    )
    families = {
        c: (c,)
        for c in (
            "Generic",
            "Exploits",
            "Fuzzers",
            "DoS",
            "Reconnaissance",
            "Analysis",
            "Backdoor",
            "Shellcode",
            "Worms",
        )
    }
    # Spellings in other copies of the release (the raw CSVs pad names and say "Backdoors").
    aliases = {"backdoors": "Backdoor"}

    def classes(self, records: pa.Table, source: object) -> tuple[np.ndarray, np.ndarray, dict]:
        raw = _text_column(records, "attack_cat", source)
        known = {c.casefold(): c for c in (self.benign, *self.families)}
        known.update({k: v for k, v in self.aliases.items()})
        classes = np.empty(len(raw), dtype=object)
        for i, value in enumerate(raw):
            text = "" if value is None else str(value).strip()
            name = known.get(text.casefold()) if text else self.benign
            if name is None:
                raise FlowInputError(
                    f"{source}, row {i + 1}: unknown attack_cat {value!r} (known: "
                    f"{', '.join(sorted(set(known.values())))})",
                    line=i + 1,
                    column="attack_cat",
                )
            classes[i] = name
        if "label" in records.column_names:
            flag = pd.to_numeric(pd.Series(records.column("label").to_pylist()), errors="coerce")
            disagree = np.flatnonzero(flag.to_numpy() != (classes != self.benign).astype(float))
            if len(disagree):
                i = int(disagree[0])
                raise FlowInputError(
                    f"{source}, row {i + 1}: label {records.column('label')[i].as_py()!r} "
                    f"disagrees with attack_cat "
                    f"{raw[i]!r} ({len(disagree)} row(s) disagree)",
                    line=i + 1,
                    column="label",
                )
        return classes, np.ones(len(classes), bool), {}


class IoT23Adapter(DatasetAdapter):
    name = "iot-23"
    title = "IoT-23 (Zeek conn.log)"
    folder = "iot23_zeek"
    # The zeek format knows conn.log's roles; the lists below are what the adapter checks.
    format = "zeek"
    benign = "Benign"
    identifiers = (
        "ts",
        "uid",
        "id.orig_h",
        "id.orig_p",
        "id.resp_h",
        "id.resp_p",
        "tunnel_parents",
        "local_orig",
        "local_resp",
    )
    label_columns = ("label", "detailed-label")
    # Byte counters whose names contain `ip`: features, not identifiers.
    keep = ("orig_ip_bytes", "resp_ip_bytes")
    categorical = ("proto", "service", "conn_state", "history")
    download = (
        "the labelled conn.log files of the Stratosphere Laboratory "
        "(https://www.stratosphereips.org/datasets-iot23), as CSV with Zeek's column names"
    )
    #: Tokens of a detailed label (split at "-") -> the family they put the class in. Names of
    #: malware (Torii, Mirai) name no family.
    tokens = {
        "C&C": "C&C",
        "HeartBeat": "C&C",
        "DDoS": "DDoS",
        "PartOfAHorizontalPortScan": "PortScan",
        "FileDownload": "FileDownload",
        "Attack": "Attack",
        "Okiru": "Okiru",
    }
    unset = ("", "-", "(empty)")

    def family_map(self, present: Sequence[str]) -> dict[str, tuple[str, ...]]:
        out: dict[str, list[str]] = {}
        for name in sorted(c for c in present if c != self.benign):
            for token in name.split("-"):
                family = self.tokens.get(token)
                if family is not None and name not in out.setdefault(family, []):
                    out[family].append(name)
        return {f: tuple(c) for f, c in out.items()}

    def classes(self, records: pa.Table, source: object) -> tuple[np.ndarray, np.ndarray, dict]:
        label = _text_column(records, "label", source)
        detail = _text_column(records, "detailed-label", source)
        classes = np.empty(len(label), dtype=object)
        keep = np.ones(len(label), bool)
        unlabelled = 0
        for i, (lab, det) in enumerate(zip(label, detail, strict=True)):
            lab = "" if lab is None else str(lab).strip()
            det = "" if det is None else str(det).strip()
            if lab.casefold() == "benign":
                if det not in self.unset:
                    raise FlowInputError(
                        f"{source}, row {i + 1}: benign flow with detailed-label {det!r}",
                        line=i + 1,
                        column="detailed-label",
                    )
                classes[i] = self.benign
            elif lab.casefold() == "malicious":
                if det in self.unset:
                    # No family to withhold it with, so it could leak into any fold's training.
                    keep[i] = False
                    unlabelled += 1
                classes[i] = det
            else:
                raise FlowInputError(
                    f"{source}, row {i + 1}: label {lab!r} is neither Benign nor Malicious",
                    line=i + 1,
                    column="label",
                )
        notes = {"malicious rows without a detailed label left out": unlabelled}
        return classes, keep, {k: v for k, v in notes.items() if v}


#: Registered datasets, in report order.
DATASETS: dict[str, DatasetAdapter] = {
    a.name: a for a in (CICIDS2017Adapter(), UNSWNB15Adapter(), IoT23Adapter())
}


def get_adapter(name: str) -> DatasetAdapter:
    """The adapter called ``name``.

    Raises
    ------
    ValueError
        If there is none; the message lists them.
    """
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}") from None
