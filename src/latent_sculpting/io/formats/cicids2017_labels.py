"""CIC-IDS-2017's label vocabulary: the canonical labels of both releases, and the mapping of
any raw spelling to them (dash variants, cp1252 bytes, whitespace, case, the improved release's
aliases and "attempted" labels). See :mod:`latent_sculpting.io.formats.cicids2017`.
"""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Iterable

from latent_sculpting.io.formats.base import cell_text

__all__ = [
    "ATTEMPTED_SUFFIX",
    "BENIGN",
    "CANONICAL_LABELS",
    "LABEL_COLUMN",
    "canonical_label",
    "canonical_labels",
    "known_label",
]

LABEL_COLUMN = "Label"
BENIGN = "BENIGN"
ATTEMPTED_SUFFIX = " - Attempted"

#: Canonical label vocabulary: the original release's labels (ASCII dash in web attacks) plus
#: the improved-only ``Infiltration - Portscan``, which is an attack class, never benign.
CANONICAL_LABELS: tuple[str, ...] = (
    "BENIGN",
    "Bot",
    "DDoS",
    "DoS GoldenEye",
    "DoS Hulk",
    "DoS Slowhttptest",
    "DoS slowloris",
    "FTP-Patator",
    "Heartbleed",
    "Infiltration",
    "Infiltration - Portscan",
    "PortScan",
    "SSH-Patator",
    "Web Attack - Brute Force",
    "Web Attack - XSS",
    "Web Attack - Sql Injection",
)

# Improved-release spellings (and a few common ones from other copies) of canonical labels,
# before normalisation; matching is then case-, dash- and whitespace-insensitive.
_LABEL_ALIASES: dict[str, str] = {
    "Botnet": "Bot",
    "Portscan": "PortScan",
    "Port Scan": "PortScan",
    "DoS Slowloris": "DoS slowloris",
    "Web Attack - SQL Injection": "Web Attack - Sql Injection",
    "Benign": "BENIGN",
}

_DASHES = "\x96\x97\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufffd"
_DASH_RE = re.compile(rf"\s*[{_DASHES}-]\s*")
_SPACE_RE = re.compile(r"\s+")


def _label_key(label: str) -> str:
    """Normalise a label for matching: unify dashes (dropping spaces around them), collapse
    whitespace, casefold. ``"Web Attack \x96 XSS"`` and ``"web attack-xss"`` give the same key.
    """
    text = unicodedata.normalize("NFKC", label)
    text = _DASH_RE.sub("-", text)
    return _SPACE_RE.sub(" ", text).strip().casefold()


_LABEL_LOOKUP: dict[str, str] = {_label_key(name): name for name in CANONICAL_LABELS}
_LABEL_LOOKUP.update({_label_key(alias): name for alias, name in _LABEL_ALIASES.items()})
_ATTEMPTED_KEY = _label_key(ATTEMPTED_SUFFIX)


def canonical_label(label: str) -> str | None:
    """Map one raw label to the canonical vocabulary.

    Matching is case-insensitive, accepts any dash variant (the cp1252 byte ``0x96`` decoded as
    ``"\\x96"`` or as an en dash, hyphens, minus signs) and normalises whitespace; improved-release
    aliases (``Botnet``, ``Portscan``, ``DoS Slowloris``, ``Web Attack - SQL Injection``) are
    recognised. Improved-release "attempted" labels (``"<class> - Attempted"``) map to
    ``"<canonical class> - Attempted"``.

    Returns
    -------
    str or None
        The canonical label, or ``None`` when the label is unknown.

    Examples
    --------
    >>> canonical_label("Web Attack \\x96 Brute Force")
    'Web Attack - Brute Force'
    >>> canonical_label(" botnet ")
    'Bot'
    >>> canonical_label("DoS Hulk - Attempted")
    'DoS Hulk - Attempted'
    >>> canonical_label("Something else") is None
    True
    """
    key = _label_key(label)
    if key in _LABEL_LOOKUP:
        return _LABEL_LOOKUP[key]
    if key.endswith(_ATTEMPTED_KEY):
        base = _LABEL_LOOKUP.get(key[: -len(_ATTEMPTED_KEY)])
        if base is not None:
            return base + ATTEMPTED_SUFFIX
    return None


def canonical_labels(labels: Iterable[str], *, strict: bool = True) -> tuple[str, ...]:
    """Canonicalise user-given class names (e.g. the withheld classes of the protocol).

    Raises
    ------
    ValueError
        If ``strict`` and a name is not a known label.
    """
    if isinstance(labels, str):
        labels = (labels,)
    out: list[str] = []
    for raw in labels:
        name = canonical_label(str(raw))
        if name is None:
            if strict:
                raise ValueError(
                    f"unknown class name {raw!r}; known labels: {', '.join(CANONICAL_LABELS)}"
                )
            name = str(raw).strip()
        if name not in out:
            out.append(name)
    return tuple(out)


def known_label(raw: object) -> str:
    """The canonical label of one raw label; an unknown one stripped, with a warning."""
    text = cell_text(raw)
    label = canonical_label(text)
    if label is None:
        label = text.strip()
        warnings.warn(
            f"unknown label {label!r}: kept as its own (attack) class, not benign", stacklevel=4
        )
    return label
