"""The context stage on flow tables: a format's endpoint columns in, context columns out.

:class:`ContextStage` is what an input pipeline calls: it reads the start time and endpoints
of each record through the format's
:meth:`~latent_sculpting.io.formats.base.FlowFormat.endpoint_roles`, sorts the records by start
time (stably; the features come back in the table's own row order), computes
:func:`~latent_sculpting.io.context.features.context_features` and carries the state from one
table to the next, so that the files of one run, read in time order, share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.context.config import ContextConfig, describe, parse_feature_name
from latent_sculpting.io.context.features import context_features
from latent_sculpting.io.context.state import ContextState
from latent_sculpting.io.formats.base import FlowFormat, refuse_context_on_samples

__all__ = [
    "ContextStage",
    "flow_endpoints",
    "missing_endpoints",
    "start_seconds",
    "start_times",
]

_SCALE = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


class ContextStage:
    """Context features for flow tables, the state carried from each table to the next.

    Parameters
    ----------
    config : ContextConfig, optional
        The default configuration when None.

    Attributes
    ----------
    state_ : ContextState
        The flows seen so far (set by :meth:`fit_transform`; advanced by each call).
    lacking_ : tuple of str
        Optional endpoint roles the format's records lack (``state``: every failed share is
        then 0, which says nothing).
    notes_ : dict of str to int
        Counts of what was decided about the last table's values (e.g. flows with no
        connection state, counted as answered).
    out_of_order_ : int
        Records of the last table that started before an earlier row of it (the table was
        sorted by start time for them).

    Examples
    --------
    >>> stage = ContextStage()                                     # doctest: +SKIP
    >>> first = stage.fit_transform(table_a, ZEEK, sources=[path_a])  # doctest: +SKIP
    >>> second = stage.transform(table_b, ZEEK)                   # doctest: +SKIP
    """

    def __init__(self, config: ContextConfig | None = None) -> None:
        self.config = ContextConfig() if config is None else config

    @property
    def feature_names_(self) -> list[str]:
        return self.config.feature_names

    def fit_transform(
        self,
        table: pa.Table,
        fmt: FlowFormat,
        *,
        sources: Iterable[Any] | None = None,
    ) -> pa.Table:
        """Start from an empty state and featurise ``table``.

        Parameters
        ----------
        table : pyarrow.Table
            Records with the format's canonical column names, in any row order.
        fmt : FlowFormat
        sources : iterable of path, optional
            The files the records came from; a known per-class sample among them is refused
            (:func:`~latent_sculpting.io.formats.base.refuse_context_on_samples`).

        Returns
        -------
        pyarrow.Table
            One float64 column per context feature, rows in ``table``'s order.
        """
        if sources is not None:
            refuse_context_on_samples(sources)
        self.state_ = ContextState(self.config)
        return self.transform(table, fmt)

    def transform(
        self,
        table: pa.Table,
        fmt: FlowFormat,
        state: ContextState | None = None,
        *,
        sources: Iterable[Any] | None = None,
    ) -> pa.Table:
        """Featurise ``table`` after the flows already in ``state`` (``state_`` when None),
        advancing that state.

        Raises
        ------
        FlowInputError
            When the format carries no start time and endpoints, a value cannot be read (the
            column and row named), or the table starts before the state's latest flow (tables
            must follow each other in time; within a table any order is sorted).
        """
        if sources is not None:
            refuse_context_on_samples(sources)
        if state is None:
            if not hasattr(self, "state_"):
                raise ValueError("this ContextStage has no state yet: call fit_transform first")
            state = self.state_
        if state.config != self.config:
            raise ValueError("the state was made with another context configuration")
        endpoints = flow_endpoints(table, fmt)
        self.lacking_ = endpoints.pop("lacking")
        self.notes_ = endpoints.pop("notes")
        time = endpoints["time"]
        order = None
        self.out_of_order_ = 0
        if len(time) > 1 and (time[1:] < time[:-1]).any():
            self.out_of_order_ = int((time[1:] < np.maximum.accumulate(time)[:-1]).sum())
            order = np.argsort(time, kind="stable")
            endpoints = {k: _take(v, order) for k, v in endpoints.items()}
        if len(time) and endpoints["time"][0] < state.time:
            first = int(np.argmin(time))
            raise FlowInputError(
                f"the records start at {endpoints['time'][0]!r} s (table row {first + 1}), before "
                f"the latest flow already seen ({state.time!r} s): the files of one run must "
                "follow each other in time (each file may be in any order)",
                line=first + 1,
            )
        try:
            features, names = context_features(
                state,
                endpoints["time"],
                endpoints["src"],
                endpoints["dst"],
                endpoints["dport"],
                endpoints["proto"],
                endpoints["bytes"],
                endpoints["packets"],
                failed=endpoints.get("failed"),
            )
        except ValueError as error:
            raise FlowInputError(f"context features: {error}") from None
        if order is not None:
            back = np.empty_like(features)
            back[order] = features
            features = back
        return pa.table({name: features[:, j] for j, name in enumerate(names)})

    def entities(
        self, table: pa.Table, fmt: FlowFormat, rows: Sequence[int] | None = None
    ) -> dict[str, list[str]]:
        """Who each kind's features are about, in words, for ``rows`` of ``table`` (all when
        None): ``src`` ``10.0.0.3``, ``pair`` ``10.0.0.3 -> 10.0.0.9``, ``service``
        ``10.0.0.9 port 80/tcp``."""
        found = fmt.endpoint_roles(table.column_names)
        if found is None:
            raise FlowInputError(missing_endpoints(fmt, table.column_names))
        roles, _ = found
        if rows is not None:
            table = table.take(pa.array(np.asarray(rows, np.int64)))
        text = {r: _strings(table.column(roles[r])) for r in ("src", "dst", "dport", "proto")}
        return {
            "src": text["src"],
            "pair": [f"{s} -> {d}" for s, d in zip(text["src"], text["dst"], strict=True)],
            "service": [
                f"{d} port {p}/{q}"
                for d, p, q in zip(text["dst"], text["dport"], text["proto"], strict=True)
            ],
        }

    def describe(self, name: str, value: float, entity: str | None = None) -> str:
        """Words for one context feature's value (:func:`~.config.describe`)."""
        return describe(name, value, self.config, entity)

    def kind(self, name: str) -> str:
        """The entity kind (``src``, ``pair``, ``service``) a feature is about, to pick its
        entity from :meth:`entities`."""
        return parse_feature_name(name, self.config)[0]


def _take(values: Any, order: np.ndarray) -> Any:
    if values is None:
        return None
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.take(pa.array(order))
    return values[order]


def _strings(column: pa.ChunkedArray) -> list[str]:
    return [str(v) for v in column.to_pylist()]


def missing_endpoints(fmt: FlowFormat, columns: Sequence[str]) -> str:
    if not fmt.endpoint_columns:
        return (
            f"the {fmt.name} format carries no start time and endpoints, so its records "
            "cannot have context features"
        )
    wanted = ", ".join(
        f"{role}: {names if isinstance(names, str) else ' + '.join(names)}"
        for role, names in fmt.endpoint_columns.items()
    )
    return (
        f"context features need each flow's start time and endpoints; these {fmt.name} "
        f"records lack some of them (wanted {wanted}; the table has {', '.join(columns)})"
    )


def start_times(table: pa.Table, fmt: FlowFormat) -> np.ndarray:
    """Each record's start time in seconds (float64), as :func:`flow_endpoints` reads it.

    Raises
    ------
    FlowInputError
        When the records lack their endpoint columns or a start time cannot be read.
    """
    found = fmt.endpoint_roles(table.column_names)
    if found is None:
        raise FlowInputError(missing_endpoints(fmt, table.column_names))
    roles, units = found
    return start_seconds(table.column(roles["time"]), units.get("time", "s"), roles["time"], fmt)


def flow_endpoints(table: pa.Table, fmt: FlowFormat) -> dict[str, Any]:
    """The start time (float64 seconds), hosts, destination port, protocol (Arrow arrays),
    bytes and packets (float64), and failed flags (or None) of each record, in row order;
    with ``lacking`` (optional roles absent) and ``notes`` (counts of decisions made).

    Raises
    ------
    FlowInputError
        When the format or the table lacks the endpoint columns, or a value cannot be read
        (the column and row named).
    """
    found = fmt.endpoint_roles(table.column_names)
    if found is None:
        raise FlowInputError(missing_endpoints(fmt, table.column_names))
    roles, _ = found
    out: dict[str, Any] = {"time": start_times(table, fmt)}
    for role in ("src", "dst", "dport", "proto"):
        column = table.column(roles[role])
        out[role] = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    for role in ("bytes", "packets"):
        names = roles[role]
        out[role] = sum(
            _counts(table.column(n), n) for n in ((names,) if isinstance(names, str) else names)
        )
    notes: dict[str, int] = {}
    lacking = tuple(r for r in ("sport", "state", "duration") if r not in roles)
    if "state" in roles:
        failed, unknown = _failed(table.column(roles["state"]), fmt, roles["state"])
        out["failed"] = failed
        if unknown:
            notes[f"flows with no {roles['state']}, counted as answered"] = unknown
    else:
        out["failed"] = None
    out["lacking"] = lacking
    out["notes"] = notes
    return out


def _first_null(column: pa.ChunkedArray) -> int:
    return int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])


def start_seconds(column: pa.ChunkedArray, unit: str, name: str, fmt: FlowFormat) -> np.ndarray:
    """A format's start-time column (``unit``: one of
    :data:`~latent_sculpting.io.formats.base.TIME_UNITS`) as float64 epoch seconds.

    Raises
    ------
    FlowInputError
        For a missing, unreadable or non-finite time (column ``name`` and row named).
    """
    if column.null_count:
        row = _first_null(column)
        raise FlowInputError(
            f"column {name!r}, table row {row + 1}: no start time", column=name, line=row + 1
        )
    kind = column.type
    if pa.types.is_timestamp(kind):
        micros = column.cast(pa.timestamp("us", tz=kind.tz)).cast(pa.int64())
        return micros.to_numpy().astype(np.float64) * 1e-6
    if unit == "datetime":
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise FlowInputError(
                f"column {name!r} holds {kind}, not date-time text ({fmt.time_hint})",
                column=name,
            )
        try:
            parsed = pc.cast(column, pa.timestamp("us"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            row, value = _unparsed(column)
            raise FlowInputError(
                f"column {name!r}, table row {row + 1}: {value!r} is not an ISO 8601 date-time "
                f"({fmt.time_hint})",
                column=name,
                line=row + 1,
            ) from None
        return parsed.cast(pa.int64()).to_numpy().astype(np.float64) * 1e-6
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        # Numbers sent as text (the service keeps identifier fields as the client sent them).
        try:
            column = pc.cast(column, pa.float64())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            row = next(i for i, v in enumerate(column.to_pylist()) if not _is_number(v))
            raise FlowInputError(
                f"column {name!r}, table row {row + 1}: {column[row].as_py()!r} is not a number "
                f"of {unit} ({fmt.time_hint})",
                column=name,
                line=row + 1,
            ) from None
        kind = column.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        raise FlowInputError(
            f"column {name!r} holds {kind}, not a number of {unit} ({fmt.time_hint})", column=name
        )
    values = column.to_numpy().astype(np.float64) * _SCALE[unit]
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FlowInputError(
            f"column {name!r}, table row {row + 1}: start time {values[row]!r} is not finite",
            column=name,
            line=row + 1,
        )
    return values


def _is_number(text: Any) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True


def _unparsed(column: pa.ChunkedArray) -> tuple[int, Any]:
    for row, value in enumerate(column.to_pylist()):
        try:
            pc.cast(pa.array([value]), pa.timestamp("us"))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return row, value
    return 0, column[0].as_py()


def _counts(column: pa.ChunkedArray, name: str) -> np.ndarray:
    if column.null_count:
        row = _first_null(column)
        raise FlowInputError(
            f"column {name!r}, table row {row + 1}: empty; context features need every flow's "
            "bytes and packets",
            column=name,
            line=row + 1,
        )
    if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type)):
        raise FlowInputError(f"column {name!r} holds {column.type}, not counts", column=name)
    values = column.to_numpy().astype(np.float64)
    bad = ~np.isfinite(values) | (values < 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise FlowInputError(
            f"column {name!r}, table row {row + 1}: {values[row]!r} is not a count",
            column=name,
            line=row + 1,
        )
    return values


def _failed(column: pa.ChunkedArray, fmt: FlowFormat, name: str) -> tuple[np.ndarray, int]:
    """Failed flags from a state column, and how many rows had no state (counted answered)."""
    unknown = column.null_count
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        failed = pc.is_in(column, value_set=pa.array(sorted(fmt.failed_states)))
    elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type):
        failed = pc.equal(column, 0)
    else:
        raise FlowInputError(
            f"column {name!r} holds {column.type}: neither connection states nor a packet count",
            column=name,
        )
    flags = failed.fill_null(False).to_numpy(zero_copy_only=False)
    return np.asarray(flags, dtype=bool), unknown
