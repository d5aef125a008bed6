"""Input formats: what each kind of flow record means (one module per format).

``--format NAME`` on the command line picks one; ``--format auto`` (the default) asks each
format in :data:`FORMATS` order whether a file's columns are its own, the generic ``table``
last.
"""

from __future__ import annotations

from collections.abc import Sequence

from latent_sculpting.io.formats.argus import ARGUS
from latent_sculpting.io.formats.base import FlowFormat, normalize_column_name
from latent_sculpting.io.formats.cicids2017 import CICIDS2017
from latent_sculpting.io.formats.netflow import NETFLOW
from latent_sculpting.io.formats.nfstream import NFSTREAM
from latent_sculpting.io.formats.table import TABLE
from latent_sculpting.io.formats.zeek_conn import ZEEK

__all__ = ["FORMATS", "FlowFormat", "detect_format", "get_format", "normalize_column_name"]

#: Registered formats, in the order auto-detection tries them (the generic table last).
FORMATS: dict[str, FlowFormat] = {
    f.name: f for f in (CICIDS2017, ZEEK, NETFLOW, NFSTREAM, ARGUS, TABLE)
}


def get_format(name: str) -> FlowFormat:
    """The registered format called ``name``.

    Raises
    ------
    ValueError
        If no format has that name; the message lists them.
    """
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown format {name!r}; choose one of {', '.join(FORMATS)} or 'auto'"
        ) from None


def detect_format(columns: Sequence[str]) -> FlowFormat:
    """The first registered format whose :meth:`~FlowFormat.matches` accepts ``columns``."""
    for fmt in FORMATS.values():
        if fmt.matches(columns):
            return fmt
    return FORMATS["table"]
