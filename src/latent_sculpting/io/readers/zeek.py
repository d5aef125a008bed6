"""Zeek logs as Zeek writes them: tab-separated with a ``#`` header, or JSON lines.

This module owns the *syntax* of Zeek's ASCII writer (``#separator``, ``#set_separator``,
``#empty_field``, ``#unset_field``, ``#fields``, ``#types``; ``#open``/``#close``/``#path`` and
any other ``#`` line skipped) and of its JSON writer (one object per line, ``id.orig_h``-style
flattened keys, unset fields left out). What the columns of a ``conn.log`` mean is
:mod:`latent_sculpting.io.formats.zeek_conn`'s business.

Zeek types become Arrow types as follows; JSON values of fields Zeek's ``conn.log`` defines get the
same types (:data:`CONN_TYPES`), other JSON fields keep the type their JSON values have (number:
``int64`` when every value is whole, else ``float64``; ``true``/``false``: ``bool``; text:
``string``; an array: ``string``, its elements joined by ``,`` as the TSV writer does).

==================================== ============================================================
Zeek type                            Arrow
==================================== ============================================================
``time``, ``interval``               ``float64`` seconds (ISO 8601 times, Zeek's JSON option, too)
``count``, ``int``, ``port``         ``int64``; a ``count`` above 2**63-1 is an error, not wrapped
``double``                           ``float64``
``bool`` (``T``/``F``)               ``bool``
``addr``, ``string``, ``enum``, ...  ``string``
``set[...]``, ``vector[...]``        ``string`` as written (``a,b``)
==================================== ============================================================

The unset marker (``-``) becomes null; the empty marker (``(empty)``) becomes an empty string.
Values are otherwise kept as written (Zeek's ``\\xHH`` escapes are not undone).

Labelled variants: Stratosphere's ``conn.log.labeled`` files either declare their label columns
in ``#fields`` (CTU-SME-11: ``label``, ``detailedlabel``) or, as IoT-23's originals do, pack
``tunnel_parents   label   detailed-label`` into the last field with spaces instead of tabs, in
the header and in every row; such a packed field is split into its named columns.

Both syntaxes are read in blocks of lines through pyarrow's CSV and JSON readers, so memory stays
constant whatever the log's size, and every error names the file, the line and the column.

This module sniffs the syntax and streams the batches; the TSV syntax is read by
:mod:`._zeek_tsv`, the JSON lines by :mod:`._zeek_json`, and the types of both converted by
:mod:`._zeek_types`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.readers import _text
from latent_sculpting.io.readers._zeek_json import json_schema, json_tables
from latent_sculpting.io.readers._zeek_tsv import read_header, strip_lead, tsv_tables
from latent_sculpting.io.readers._zeek_types import CONN_TYPES

__all__ = ["CONN_TYPES", "batches", "columns", "sniff"]

PathLike = str | Path

# Bytes of text read at a time per requested row: a conn.log line is 150-300 bytes.
_BYTES_PER_ROW = 384
_MIN_BLOCK = 1 << 20
_MAX_BLOCK = 64 << 20


# ---------------------------------------------------------------------------------------------
# Sniffing


def sniff(head: bytes) -> bool:
    """Whether the first bytes of a file are a Zeek log.

    A TSV log starts with Zeek's ``#separator`` line. A JSON log's first line is an object
    holding ``ts``, ``id.orig_h`` and ``id.resp_h``: the time and Zeek's flattened connection
    id, which every connection-oriented Zeek log (conn, dns, http, ssl, ...) has and other JSON
    lines (NetFlow collectors' or Suricata's ``src_ip``, nested ``{"id": {...}}`` objects) do
    not. Whether the log is a ``conn.log`` is decided later by its columns.
    """
    text = strip_lead(head)
    if text.startswith(b"#separator"):
        return True
    if not text.startswith(b"{"):
        return False
    first = text.split(b"\n", 1)[0]
    try:
        record = json.loads(first)
    except ValueError:
        # A first line longer than the sniffed head: look for the keys in what there is.
        return all(b'"%s"' % key in first for key in (b"ts", b"id.orig_h", b"id.resp_h"))
    return isinstance(record, dict) and {"ts", "id.orig_h", "id.resp_h"} <= record.keys()


def _is_tsv(path: Path) -> bool:
    """True for Zeek's TSV, False for its JSON lines; anything else is an error."""
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not sniff(head):
        raise FlowInputError(
            f"{path}, line 1: not a Zeek log (neither a '#separator' header nor JSON lines "
            "with Zeek's 'ts', 'id.orig_h' and 'id.resp_h' keys)",
            path=path,
            line=1,
        )
    return strip_lead(head).startswith(b"#")


# ---------------------------------------------------------------------------------------------
# Public API


def columns(path: PathLike) -> list[str]:
    """Column names of a Zeek log: its ``#fields`` (packed label fields split), or, for JSON,
    every key that appears in the file, in order of first appearance.

    Raises
    ------
    FlowInputError
        If the header is malformed (missing ``#fields``/``#types``, lengths differ) or a JSON line
        does not parse.
    """
    path = Path(path)
    if _is_tsv(path):
        return list(read_header(path).names)
    return list(json_schema(path, _block_bytes(65_536)).names)


def batches(
    path: PathLike, batch_rows: int = 65_536, types: Mapping[str, pa.DataType] | None = None
) -> Iterator[pa.RecordBatch]:
    """Stream a Zeek log as record batches of ``batch_rows`` rows (the last one shorter).

    Parameters
    ----------
    path : path
        A Zeek TSV or JSON-lines log.
    batch_rows : int, default 65536
    types : mapping of str to pyarrow.DataType, optional
        Column name -> wanted type, cast after the Zeek types are applied.

    Raises
    ------
    FlowInputError
        Naming the file, the 1-based line and the column: a row with the wrong number of
        fields, a value that does not parse as its declared type (or does not cast to the wanted
        one), a ``count`` above int64, a line that is not a JSON object.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be >= 1, got {batch_rows}")
    path = Path(path)
    block = _block_bytes(batch_rows)
    tables = tsv_tables(path, block) if _is_tsv(path) else json_tables(path, block)
    wanted = dict(types or {})
    cast = (_text.cast_wanted(path, table, line_of, wanted) for table, line_of in tables)
    yield from _text.rebatch(cast, batch_rows)


def _block_bytes(batch_rows: int) -> int:
    return int(min(_MAX_BLOCK, max(_MIN_BLOCK, batch_rows * _BYTES_PER_ROW)))
