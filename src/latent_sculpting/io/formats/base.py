"""What a kind of flow record means: the base class every input format derives from.

A *format* knows the semantics of a family of flow records, whatever file syntax carries them
(CSV, Parquet, Zeek's TSV or JSON, packets turned into flows): which columns are features,
which are categorical, which identify a flow (addresses, ports, timestamps) and never reach a
model, which column holds the label and how labels are spelt, and which features are derived
from others. File syntax is the business of :mod:`latent_sculpting.io.readers`; turning a batch
into model inputs with a fitted :class:`~latent_sculpting.io.flowspec.FlowSpec` is the business of
:mod:`latent_sculpting.io.flowspec`. A format is stateless; everything learned from data lives in
the spec.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from latent_sculpting.errors import FlowInputError

__all__ = [
    "ENDPOINT_ROLES",
    "PER_CLASS_SAMPLES",
    "FlowFormat",
    "TIME_UNITS",
    "normalize_column_name",
    "per_class_sample",
    "refuse_context_on_samples",
]

#: What a flow's endpoint columns say: its start time, source and destination host, ports and
#: protocol, whether it was answered (``state``), its duration, and its bytes and packets (both
#: directions). Time, hosts, ports and protocol identify a flow and are never model features.
ENDPOINT_ROLES = (
    "time",
    "src",
    "dst",
    "sport",
    "dport",
    "proto",
    "state",
    "duration",
    "bytes",
    "packets",
)
#: The roles a format needs before its records can have context.
REQUIRED_ROLES = ("time", "src", "dst", "dport", "proto", "bytes", "packets")
#: Units of the ``time`` and ``duration`` roles: seconds, milliseconds, microseconds, or
#: ``datetime`` (ISO 8601 text, or an Arrow timestamp column).
TIME_UNITS = ("s", "ms", "us", "datetime")

_SPACE_RE = re.compile(r"\s+")


def normalize_column_name(name: str) -> str:
    """Strip a column name, drop a BOM and collapse inner whitespace.

    ``" Flow  Duration"`` becomes ``"Flow Duration"``.
    """
    return _SPACE_RE.sub(" ", str(name).replace("\ufeff", "")).strip()


class FlowFormat:
    """Semantics of one kind of flow record. Subclasses override the class attributes and, where
    their records need it, the methods.

    Attributes
    ----------
    name : str
        Registry key (``--format NAME`` on the command line), lower case.
    description : str
        One line for ``--help`` and error messages.
    label_column : str or None
        Canonical name of the label column when the user names none.
    benign_label : str or None
        Label of benign flows (after :meth:`labels`) when the user names none.
    unlabelled_labels : tuple of str
        Labels (after :meth:`labels`) that say nobody labelled the flow (CTU-13's
        ``Background``): such rows are left out of training and adaptation, counted, and are
        neither benign nor attack in a scored file's tally.
    identifier_columns : tuple of str
        Canonical names that identify a flow (addresses, ports, times, ids): carried to the
        output, never features. Matching is case-insensitive.
    categorical_columns : tuple of str or None
        Canonical names of categorical feature columns; None lets
        :func:`~latent_sculpting.io.fitting.fit_spec` infer them (text columns).
    numeric_columns : tuple of str or None
        Canonical names of the numeric feature columns when the format fixes them (every other
        column is then an identifier, the label or left out); None lets
        :func:`~latent_sculpting.io.fitting.fit_spec` infer them from the column types.
    ignored_columns : dict of str to str
        Canonical column name -> why it is neither a feature nor an identifier (it is left out,
        and the reason is reported).
    engineered : tuple of str
        Names of the features :meth:`derive` computes.
    endpoint_columns : dict of str to str or tuple of str, or None
        Role (one of :data:`ENDPOINT_ROLES`) -> canonical column name, or a tuple of names
        whose values are summed (``bytes``: the bytes of both directions); None when the
        format carries no start time and endpoints. ``state`` is a text column of connection
        states (failed: one of :attr:`failed_states`) or a count of reply packets (failed: 0).
    endpoint_units : dict of str to str
        Unit (one of :data:`TIME_UNITS`) of the ``time`` and ``duration`` roles.
    endpoint_alternatives : tuple of (dict, dict)
        Further (``endpoint_columns``, ``endpoint_units``) pairs for other spellings of the
        format's records, tried in order after the first (NetFlow: NF-v3, nfdump 1.6, 1.7).
    failed_states : frozenset of str
        Values of a text ``state`` column that mean the connection failed or went unanswered.
    time_hint : str
        Said when the ``time`` column cannot be read (what the format's time columns look
        like, and which releases lack usable ones).
    """

    name: str = ""
    description: str = ""
    label_column: str | None = None
    benign_label: str | None = None
    unlabelled_labels: tuple[str, ...] = ()
    identifier_columns: tuple[str, ...] = ()
    categorical_columns: tuple[str, ...] | None = None
    numeric_columns: tuple[str, ...] | None = None
    ignored_columns: Mapping[str, str] = {}
    engineered: tuple[str, ...] = ()
    endpoint_columns: Mapping[str, str | tuple[str, ...]] | None = None
    endpoint_units: Mapping[str, str] = {}
    endpoint_alternatives: tuple[
        tuple[Mapping[str, str | tuple[str, ...]], Mapping[str, str]], ...
    ] = ()
    failed_states: frozenset[str] = frozenset()
    time_hint: str = ""

    def matches(self, columns: Sequence[str]) -> bool:
        """Whether a file with these (raw) column names holds this format's records; used by
        ``--format auto``. The generic table matches everything, so it is tried last."""
        return False

    def canonical_columns(self, columns: Sequence[str], *, source: object = "input") -> dict:
        """Map each raw column name to its canonical name (whitespace normalised by default).
        Applied to canonical names it changes nothing.

        Raises
        ------
        ValueError
            If two raw columns map to the same canonical name (the message names them and
            ``source``).
        """
        check_unique([(c, normalize_column_name(c)) for c in columns], source)
        return {c: normalize_column_name(c) for c in columns}

    def ignored(self, canonical: Sequence[str]) -> dict[str, str]:
        """Why each of these canonical columns is left out (neither feature nor identifier)."""
        keys = {k.casefold(): v for k, v in self.ignored_columns.items()}
        return {c: keys[c.casefold()] for c in canonical if c.casefold() in keys}

    def labels(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Canonical label strings of a label column (object array); null stays None."""
        values = column.to_pylist()
        return np.asarray(
            [None if v is None else cell_text(v).strip() for v in values], dtype=object
        )

    def derive(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Engineered features from the (float64) numeric columns named in :meth:`needs`."""
        return {}

    def needs(self) -> tuple[str, ...]:
        """Canonical numeric columns :meth:`derive` reads."""
        return ()

    def endpoint_roles(
        self, columns: Sequence[str]
    ) -> tuple[dict[str, str | tuple[str, ...]], dict[str, str]] | None:
        """The endpoint columns of a table with these canonical column names, and their units.

        Each spelling (:attr:`endpoint_columns`, then :attr:`endpoint_alternatives`) is tried
        in turn; the first whose columns for every role of :data:`REQUIRED_ROLES` are present
        wins, with the optional roles (``sport``, ``state``, ``duration``) it also finds. Names
        are returned as the table spells them (matching ignores case).

        Returns
        -------
        (roles, units) or None
            None when no spelling's required columns are all present.
        """
        present = {c.casefold(): c for c in columns}
        spellings = [(self.endpoint_columns, self.endpoint_units), *self.endpoint_alternatives]
        for roles, units in spellings:
            if not roles:
                continue
            found: dict[str, str | tuple[str, ...]] = {}
            for role, names in roles.items():
                group = (names,) if isinstance(names, str) else tuple(names)
                if all(n.casefold() in present for n in group):
                    hit = tuple(present[n.casefold()] for n in group)
                    found[role] = hit[0] if isinstance(names, str) else hit
            if all(role in found for role in REQUIRED_ROLES):
                return found, dict(units)
        return None

    def __repr__(self) -> str:
        return f"<format {self.name}>"


#: Files known to be per-class random samples (SHA-256 of the file -> what it is). Counts of
#: flows in a time window measure the sampling there, not the traffic, so context features are
#: refused on them (:func:`refuse_context_on_samples`).
PER_CLASS_SAMPLES: Mapping[str, str] = {
    digest: (
        f"the embedded CIC-IDS-2017 sample ({day}.parquet): at most 2,500-5,000 random flows "
        "per class, about 0.5 % of benign flows and 5-100 % of each attack class"
    )
    for day, digest in (
        ("monday", "e871f3bc8b5d0f5ce034aea65673a98b7e751bed30be24785cf1f46189019a00"),
        ("tuesday", "c1fe21d42b230a579e99a8381bd47efa5e3fdfd7cc2b80b86e3b4496400adf80"),
        ("wednesday", "4fe1e8c5b41503e4fe363c838a3965865f9556d3a47bf23194877e76eabc9de1"),
        ("thursday", "a1a66289669e862690db888dc333e628944a3652b33251ae128f6b9d2b21bec3"),
        ("friday", "924fe09b041e15d397ce472d14765c6d8ab27af27d2702a01ad4838f057fd068"),
    )
}
# Sizes of the files above: a file of another size is not hashed.
_SAMPLE_SIZES = frozenset({404_183, 1_518_567, 4_003_428, 733_120, 2_286_549})


def per_class_sample(path: str | os.PathLike) -> str | None:
    """What a file is when it is a known per-class sample (:data:`PER_CLASS_SAMPLES`), else
    None. Recognised by content, wherever the copy lies; only files of a known sample's size
    are hashed."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size not in _SAMPLE_SIZES:
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return PER_CLASS_SAMPLES.get(digest.hexdigest())


def refuse_context_on_samples(paths: Iterable[str | os.PathLike]) -> None:
    """Refuse context features on files that are per-class samples.

    Raises
    ------
    FlowInputError
        Naming the first such file and why: a per-class random sample keeps a different
        share of each class, so the number of flows of a host in a time window measures the
        sampling (benign hosts seem quiet, attackers busy), not the traffic, and a model
        would learn the sampling.
    """
    for path in paths:
        what = per_class_sample(path)
        if what is not None:
            raise FlowInputError(
                f"{path}: context features are refused on {what}. In a per-class random "
                "sample the flows around a flow were thinned at a different rate for each "
                "class, so counts of a host's flows in a time window would measure the "
                "sampling, not the traffic. Use complete captures (e.g. the full CIC-IDS-2017 "
                "release, or IoT-23's Zeek logs), or leave context off for this data.",
                path=path,
            )


def cell_text(value: object) -> str:
    """A cell as text: bytes decoded as UTF-8, else cp1252, else latin-1."""
    if isinstance(value, bytes):
        for encoding in ("utf-8", "cp1252", "latin-1"):
            try:
                return value.decode(encoding)
            except UnicodeDecodeError:
                continue
    return str(value)


def check_unique(pairs: Sequence[tuple[str, str]], source: object) -> None:
    """Refuse two raw columns that name the same canonical column."""
    seen: dict[str, str] = {}
    for raw, canonical in pairs:
        key = canonical.casefold()
        if key in seen:
            same = "twice" if seen[key] == raw else f"as {seen[key]!r} and {raw!r}"
            raise FlowInputError(
                f"{source}: column {canonical!r} appears {same} (whitespace and case "
                "ignored); remove one",
                column=canonical,
            )
        seen[key] = raw
