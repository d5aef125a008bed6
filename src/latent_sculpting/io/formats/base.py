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

import re
from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from latent_sculpting.errors import FlowInputError

__all__ = ["FlowFormat", "normalize_column_name"]

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
        _check_unique([(c, normalize_column_name(c)) for c in columns], source)
        return {c: normalize_column_name(c) for c in columns}

    def ignored(self, canonical: Sequence[str]) -> dict[str, str]:
        """Why each of these canonical columns is left out (neither feature nor identifier)."""
        keys = {k.casefold(): v for k, v in self.ignored_columns.items()}
        return {c: keys[c.casefold()] for c in canonical if c.casefold() in keys}

    def labels(self, column: pa.Array | pa.ChunkedArray) -> np.ndarray:
        """Canonical label strings of a label column (object array); null stays None."""
        values = column.to_pylist()
        return np.asarray([None if v is None else _text(v).strip() for v in values], dtype=object)

    def derive(self, columns: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Engineered features from the (float64) numeric columns named in :meth:`needs`."""
        return {}

    def needs(self) -> tuple[str, ...]:
        """Canonical numeric columns :meth:`derive` reads."""
        return ()

    def __repr__(self) -> str:
        return f"<format {self.name}>"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        for encoding in ("utf-8", "cp1252", "latin-1"):
            try:
                return value.decode(encoding)
            except UnicodeDecodeError:
                continue
    return str(value)


def _check_unique(pairs: Sequence[tuple[str, str]], source: object) -> None:
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
