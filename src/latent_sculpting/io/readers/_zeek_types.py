"""Zeek's types as Arrow types, for both of Zeek's syntaxes (:mod:`latent_sculpting.io.readers.zeek`
has the table): the kind of each Zeek type, and the conversion of a column of text (TSV) or of
already typed JSON values to it, with errors that name the file, line and column.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from latent_sculpting.io.readers import _text

__all__ = ["ARROW_OF_KIND", "CONN_TYPES", "INT64_MAX", "convert_typed", "kind_of", "to_seconds"]

#: Zeek types of the fields a ``conn.log`` can hold (Zeek 3 to 7, with the usual packages), used
#: for JSON logs, which carry no ``#types`` line. Other JSON fields keep their JSON type.
CONN_TYPES: dict[str, str] = {
    "ts": "time",
    "uid": "string",
    "id.orig_h": "addr",
    "id.orig_p": "port",
    "id.resp_h": "addr",
    "id.resp_p": "port",
    "proto": "enum",
    "service": "string",
    "duration": "interval",
    "orig_bytes": "count",
    "resp_bytes": "count",
    "conn_state": "string",
    "local_orig": "bool",
    "local_resp": "bool",
    "missed_bytes": "count",
    "history": "string",
    "orig_pkts": "count",
    "orig_ip_bytes": "count",
    "resp_pkts": "count",
    "resp_ip_bytes": "count",
    "tunnel_parents": "set[string]",
    "ip_proto": "count",
    "orig_l2_addr": "string",
    "resp_l2_addr": "string",
    "vlan": "int",
    "inner_vlan": "int",
    "community_id": "string",
    "speculative_service": "string",
    "orig_cc": "string",
    "resp_cc": "string",
    "label": "string",
    "detailed-label": "string",
    "detailedlabel": "string",
}

INT64_MAX = 2**63 - 1


def kind_of(ztype: str) -> str:
    """What a Zeek type is read as: ``time``, ``float``, ``count``, ``int``, ``bool`` or
    ``string``."""
    if ztype in ("time", "interval"):
        return "time"
    if ztype == "double":
        return "float"
    if ztype == "count":
        return "count"
    if ztype in ("int", "port"):
        return "int"
    if ztype == "bool":
        return "bool"
    return "string"


def convert_typed(
    path: Path, name: str, ztype: str, values: pa.Array, line_of: Callable[[int], int]
) -> pa.Array:
    """Text (or, from JSON, already typed) values of Zeek type ``ztype`` to the Arrow type."""
    kind = kind_of(ztype)
    if kind == "string":
        return values if pa.types.is_string(values.type) else values.cast(pa.string())
    if kind == "bool":
        if pa.types.is_boolean(values.type):
            return values
        if pa.types.is_null(values.type):
            return values.cast(pa.bool_())
        ok = pc.or_(pc.is_null(values), pc.is_in(values, pa.array(["T", "F"])))
        _text.fail_where(path, name, ztype, values, ok, line_of, "is not T or F")
        return pc.equal(values, "T")
    if kind == "time":
        return to_seconds(path, name, ztype, values, line_of)
    if kind == "float":
        return _text.cast(path, name, values, pa.float64(), line_of, expected=ztype)
    if kind == "count" and pa.types.is_string(values.type):
        wide = _text.cast(path, name, values, pa.uint64(), line_of, expected=ztype)
        ok = pc.fill_null(pc.less_equal(wide, pa.scalar(INT64_MAX, pa.uint64())), True)
        _text.fail_where(path, name, ztype, values, ok, line_of, "is above 2**63-1")
        return wide.cast(pa.int64())
    out = _text.cast(path, name, values, pa.int64(), line_of, expected=ztype)
    if kind == "count":
        ok = pc.fill_null(pc.greater_equal(out, 0), True)
        _text.fail_where(path, name, ztype, values, ok, line_of, "is negative")
    return out


def to_seconds(
    path: Path, name: str, ztype: str, values: pa.Array, line_of: Callable[[int], int]
) -> pa.Array:
    """Times as float64 seconds: Zeek's epoch seconds, or ISO 8601 text or Arrow timestamps."""
    if pa.types.is_timestamp(values.type):
        micros = values.cast(pa.timestamp("us", tz=values.type.tz)).cast(pa.int64())
        return pc.divide(micros.cast(pa.float64()), 1e6)
    if not pa.types.is_string(values.type):
        return _text.cast(path, name, values, pa.float64(), line_of, expected=ztype)
    try:
        return values.cast(pa.float64())
    except _text.ARROW_ERRORS:
        pass
    # Zeek's ISO 8601 time option (LogAscii::json_timestamps / use_iso8601).
    try:
        stamps = values.cast(pa.timestamp("us", tz="UTC"))
    except _text.ARROW_ERRORS:
        return _text.cast(path, name, values, pa.float64(), line_of, expected=ztype)
    return to_seconds(path, name, ztype, stamps, line_of)


# ---------------------------------------------------------------------------------------------
# JSON lines


#: The Arrow type of each kind of Zeek type (:func:`kind_of`).
ARROW_OF_KIND = {
    "time": pa.float64(),
    "float": pa.float64(),
    "count": pa.int64(),
    "int": pa.int64(),
    "bool": pa.bool_(),
    "string": pa.string(),
}
