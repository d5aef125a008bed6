"""The scoring service's request parser: a JSON or CSV body turned into checked columns of the
model's raw inputs (:class:`Parsed`), then encoded as ``sculpt score`` encodes a file.

A record that lacks a field the model needs, holds null in a numeric one, or a list or object
where a single value belongs, is refused (422) with its record and field: the service does not
impute. The body's own limits are checked first (:mod:`latent_sculpting.serve.request`).
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.encoding import encode
from latent_sculpting.io.formats import get_format
from latent_sculpting.io.readers.delimited import header_names, parse_bytes
from latent_sculpting.serve.request import (
    RequestError,
    check_csv_header,
    check_json_limits,
    has_digit_run,
)

__all__ = ["Parsed", "RecordParser"]

#: Distinct sets of field names whose matching to the model's columns a parser remembers.
_KNOWN_FIELD_SETS = 64

#: A field a record lacks (None would be a field holding null).
_ABSENT = object()


@dataclass
class Parsed:
    """A parsed request: its columns, and the model's numeric inputs as one float64 matrix when
    the parser read them straight from JSON (then not among the columns)."""

    table: pa.Table
    numeric: np.ndarray | None = None

    @property
    def num_rows(self) -> int:
        return self.table.num_rows if self.numeric is None else len(self.numeric)


@dataclass(frozen=True)
class _Plan:
    """How a :class:`RecordParser` reads JSON records with one set of field names."""

    #: The request's name of each field the model needs, and whether it is numeric.
    fields: list[tuple[str, bool]]
    #: The numeric ones' names, in the model's order (the spec's numeric inputs first).
    numeric: list[str]
    #: The categorical ones' names.
    categorical: list[str]
    #: Every other field, in the request's order: kept as text (identifiers, the label).
    texts: list[str]
    #: Reads :attr:`texts` of one record, as a tuple.
    text_getter: Any


class RecordParser:
    """Turns a request body into checked records (:class:`Parsed`) of the model's raw columns."""

    def __init__(self, spec: Any, limits: dict[str, int]) -> None:
        self.spec = spec
        self.limits = limits
        self.format = get_format(spec.format)
        required = spec.required_columns()
        self.numeric = [c for c in required if c not in {k.column for k in spec.categorical}]
        self.required = required
        self._plans: dict[tuple[str, ...], _Plan] = {}
        self._csv_headers: dict[tuple[str, ...], dict[str, pa.DataType]] = {}

    # -- bodies --------------------------------------------------------------------------------

    def parse(self, body: bytes, kind: str) -> Parsed:
        if not body.strip():
            raise RequestError(400, "empty request body; send flows as JSON or CSV")
        if kind in ("text/csv", "application/csv"):
            return self._csv(body)
        if kind in ("application/json", "") or kind.endswith("+json"):
            return self._json(body)
        raise RequestError(
            415, f"unsupported Content-Type {kind!r}; use application/json or text/csv"
        )

    def _json(self, body: bytes) -> Parsed:
        data = self._quick_json(body)
        if data is _ABSENT:
            data = self._checked_json(body)
        records = _flow_records(data)
        if records is None:
            raise RequestError(422, 'JSON body must be a list of flow objects or {"flows": [...]}')
        self._check_count(len(records))
        return self._table(records)

    def _quick_json(self, body: bytes) -> Any:
        """The body as orjson parses it, when that is sure to be what :meth:`_checked_json`
        gives (the same values, within both limits); ``_ABSENT`` otherwise, and then the checked
        parse gives the answer, refusals and their words included.

        The checked parse strips every string from the body to count brackets and measure
        numbers outside them, which cost ten times orjson's parse of a 1,024-flow body. Here two
        passes in C over the raw body suffice for the bodies clients send: counting brackets,
        strings included, can only over-count containers, and digits, strings included, only
        over-measure numbers.
        """
        # A number longer than the limit has a run of at least (limit - 3) / 3 digits (beside
        # at most a sign, a point, an "e" and the exponent's sign); an integer of 19 digits or
        # more may pass 64 bits, which orjson reads as a float where json keeps it exact.
        run = min(19, max(1, (self.limits["max_number_digits"] - 3) // 3))
        if has_digit_run(body, run):
            return _ABSENT
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _ABSENT  # NaN, a lone surrogate, a byte-order mark... : json's answer
        records = _flow_records(data)
        if records is None:
            return _ABSENT
        # Brackets equal to the records' objects, their list and the wrapper: no other
        # container anywhere, so the body is 2 deep (3 wrapped).
        wrapped = records is not data
        containers = len(records) + 1 + wrapped
        if body.count(b"[") + body.count(b"{") != containers:
            return _ABSENT
        if 2 + wrapped > self.limits["max_json_depth"]:
            return _ABSENT
        return data

    def _checked_json(self, body: bytes) -> Any:
        """The body parsed by json after both limits were checked on it, or a 400 naming what
        is wrong."""

        def constant(text: str) -> None:
            raise RequestError(400, f"{text} is not valid JSON; send numbers, or null")

        check_json_limits(body, self.limits)
        try:
            return json.loads(body, parse_constant=constant)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise RequestError(400, f"malformed JSON body: {error}") from None

    def _csv(self, body: bytes) -> Parsed:
        check_csv_header(body, self.limits["max_fields_per_record"])
        try:
            types = self._csv_types(tuple(header_names(body, source="the request")))
            table = parse_bytes(body, types, source="the request")
        except FlowInputError as error:
            raise RequestError(400 if error.syntax else 422, {"error": str(error)}) from None
        self._check_count(table.num_rows)
        if table.num_columns > self.limits["max_fields_per_record"]:
            raise RequestError(
                422, f"{table.num_columns} columns; at most {self.limits['max_fields_per_record']}"
            )
        return Parsed(table)

    def _csv_types(self, names: tuple[str, ...]) -> dict[str, pa.DataType]:
        """The type each column of a CSV body with this header is read as: the model's numeric
        inputs as numbers; identifiers as the text the client sent, so they come back as sent
        (no timestamp or address reinterpreted). Categorical columns and the label are typed
        as files are (pyarrow's guess): a categorical value must read as it did in training
        ("True" is guessed as a boolean there).

        Kept per header, as the JSON plans are per set of field names: clients send the same
        header request after request, and matching it against the format cost a 1,024-flow
        body a twentieth of its parse.
        """
        return _remembered(self._csv_headers, names, lambda: self._column_types(names))

    def _column_types(self, names: tuple[str, ...]) -> dict[str, pa.DataType]:
        rename = self.format.canonical_columns(list(names), source="the request")
        numeric = set(self.numeric)
        identifiers = {c.casefold() for c in self.spec.identifiers}
        return {
            raw: pa.float64() if canon in numeric else pa.string()
            for raw, canon in rename.items()
            if canon in numeric or canon.casefold() in identifiers
        }

    def _check_count(self, n: int) -> None:
        if n == 0:
            raise RequestError(422, "no flows in the request")
        if n > self.limits["max_flows"]:
            raise RequestError(413, f"{n} flows in one request; at most {self.limits['max_flows']}")

    # -- records -------------------------------------------------------------------------------

    def _table(self, records: list[dict]) -> Parsed:
        limit = self.limits["max_fields_per_record"]
        keys: dict[str, None] = dict.fromkeys(records[0]) if records else {}
        first = records[0].keys() if records else None
        uniform = True
        for i, record in enumerate(records):
            if len(record) > limit:
                raise RequestError(422, f"record {i + 1}: {len(record)} fields; at most {limit}")
            if record.keys() != first:  # most requests repeat one set of names
                keys.update(dict.fromkeys(record))
                uniform = False
        plan = self._plan(tuple(keys))
        fields, numeric_raw = plan.fields, plan.numeric
        columns = {}
        matrix = _number_rows(records, numeric_raw)
        if matrix is None:  # a value to convert or refuse: column by column
            for raw in numeric_raw:
                checked = _numeric_column([r.get(raw, _ABSENT) for r in records])
                if checked is None:
                    self._refuse(records, fields)
                columns[raw] = checked
        else:
            # The spec's numeric inputs go to encode as the matrix; the few other columns the
            # format derives features from, as columns.
            for j in range(len(self.spec.numeric), len(numeric_raw)):
                columns[numeric_raw[j]] = pa.array(matrix[:, j])
        for raw in plan.categorical:  # categorical fields: present, and single values
            if any(_not_single(r.get(raw, _ABSENT)) for r in records):
                self._refuse(records, fields)
        # Every other field, column by column: read with one itemgetter per record when every
        # record has the same names (most requests), else field by field.
        if uniform:
            by_column = zip(*map(plan.text_getter, records), strict=True)
        else:
            by_column = ([r.get(raw) for r in records] for raw in plan.texts)
        texts, text_columns = [], []
        for raw, values in zip(plan.texts, by_column, strict=False):
            if any(isinstance(v, list | dict) for v in values):
                continue  # not a column the model or the output uses
            texts.extend(None if v is None else str(v) for v in values)
            text_columns.append(raw)
        # Every text column in one conversion, then sliced (zero-copy): a conversion costs more
        # than a one-flow request's column holds.
        flat = pa.array(texts, pa.string())
        n = len(records)
        for k, raw in enumerate(text_columns):
            columns[raw] = flat.slice(k * n, n)
        table = pa.table({raw: columns[raw] for raw in keys if raw in columns})
        if matrix is None:
            return Parsed(table)
        return Parsed(table, np.ascontiguousarray(matrix[:, : len(self.spec.numeric)]))

    def _plan(self, keys: tuple[str, ...]) -> _Plan:
        """How to read records with these field names: the request's own name of each field
        the model needs and whether it is numeric (:meth:`_fields`), the numeric ones, the
        categorical ones, and every other field (read as text).

        Clients send the same field names request after request, so the plan is kept per set
        of names: matching names against the format costs more than a small request's
        scoring.
        """
        return _remembered(self._plans, keys, lambda: self._new_plan(keys))

    def _new_plan(self, keys: tuple[str, ...]) -> _Plan:
        fields = self._fields(keys)
        numeric = [raw for raw, is_numeric in fields if is_numeric]
        taken = set(numeric)
        texts = [raw for raw in keys if raw not in taken]
        categorical = [raw for raw, is_numeric in fields if not is_numeric]
        return _Plan(fields, numeric, categorical, texts, _fields_getter(texts))

    def _fields(self, keys: tuple[str, ...]) -> list[tuple[str, bool]]:
        """The request's own name of each field the model needs, and whether it is numeric."""
        try:
            rename = self.format.canonical_columns(list(keys), source="the request")
        except FlowInputError as error:
            raise RequestError(422, {"error": str(error)}) from None
        raw_of = {canon.casefold(): raw for raw, canon in rename.items()}
        missing_everywhere = [c for c in self.required if c.casefold() not in raw_of]
        if missing_everywhere:
            raise RequestError(
                422,
                {
                    "error": f"{len(missing_everywhere)} field(s) the model needs are missing",
                    "missing_columns": missing_everywhere,
                },
            )
        numeric = set(self.numeric)
        return [(raw_of[c.casefold()], c in numeric) for c in self.required]

    @staticmethod
    def _refuse(records: list[dict], fields: list[tuple[str, bool]]) -> None:
        """422 naming the first records and fields that are missing or not single values.

        Records count from 1, as rows do in the errors of files and of ``encode``."""
        problems = []
        for i, record in enumerate(records):
            for raw, numeric in fields:
                if raw not in record:
                    problems.append(f"record {i + 1} lacks field {raw!r}")
                    continue
                value = record[raw]
                if numeric and not _is_number(value):
                    problems.append(f"record {i + 1} field {raw!r}: {value!r} is not a number")
                elif isinstance(value, list | dict):
                    problems.append(f"record {i + 1} field {raw!r}: not a single value")
                if len(problems) >= 10:
                    break
            if len(problems) >= 10:
                break
        raise RequestError(422, {"error": "; ".join(problems)})

    def encode(self, parsed: Parsed, context: Any = None) -> Any:
        try:
            # Missing and non-finite values are refused, whatever the model's policy for files:
            # the service never imputes (a JSON number beyond float64, 1e400, reads as inf).
            return encode(
                self.spec,
                parsed.table,
                source="the request",
                numeric=parsed.numeric,
                nonfinite="error",
                context=context,
            )
        except FlowInputError as error:
            detail: dict[str, Any] = {"error": str(error).replace("row ", "record ", 1)}
            if error.missing:
                detail["missing_columns"] = error.missing
            raise RequestError(422, detail) from None


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    if isinstance(value, int | float):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return False


def _numeric_column(values: list[Any]) -> pa.Array | None:
    """``values`` as a float64 column, or None when one of them is not a number."""
    if all(type(v) is float or type(v) is int for v in values):
        try:
            return pa.array(np.asarray(values, dtype=np.float64))
        except OverflowError:
            pass  # an int beyond float64: _to_float below makes it infinite, as one by one
    elif not all(_is_number(v) for v in values):
        return None
    return pa.array([_to_float(v) for v in values], pa.float64())


def _not_single(value: Any) -> bool:
    return value is _ABSENT or isinstance(value, list | dict)


def _flow_records(data: Any) -> list[dict] | None:
    """The flow records of a parsed JSON body (a list of objects, or ``{"flows": [...]}``), or
    None when it is neither."""
    if isinstance(data, dict) and set(data) == {"flows"}:
        data = data["flows"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        return None
    return data


def _remembered(cache: dict, key: tuple[str, ...], build: Callable[[], Any]) -> Any:
    """``cache[key]``, built on a miss (nothing is kept when building raises). A cache of
    :data:`_KNOWN_FIELD_SETS` entries is emptied before the next goes in: a client sending ever
    new names must not grow it without bound."""
    value = cache.get(key)
    if value is None:
        value = build()
        if len(cache) >= _KNOWN_FIELD_SETS:
            cache.clear()
        cache[key] = value
    return value


def _fields_getter(names: list[str]) -> Callable[[dict], tuple]:
    """Reads the fields ``names`` of one record as a tuple (one ``itemgetter`` call; a
    record lacking one raises KeyError), however many names there are, none included."""
    if len(names) == 1:
        name = names[0]
        return lambda record: (record[name],)
    if not names:
        return lambda record: ()
    return operator.itemgetter(*names)


def _number_rows(records: list[dict], raws: list[str]) -> np.ndarray | None:
    """The fields ``raws`` of every record as one float64 matrix (a row per record), or None
    when a record lacks one or one is not a JSON number that fits a float (those are converted
    or refused column by column)."""
    if not raws:
        return np.empty((len(records), 0))
    try:
        rows = list(map(_fields_getter(raws), records))
    except KeyError:
        return None
    # Exactly int and float: a bool is an int to isinstance, and must be refused.
    if not set(map(type, itertools.chain.from_iterable(rows))) <= {float, int}:
        return None
    try:
        return np.array(rows, dtype=np.float64).reshape(len(records), len(raws))
    except OverflowError:
        return None


def _to_float(value: Any) -> float:
    # Python ints of any size become floats here; one beyond float32's range is then refused
    # by encode with its record and field.
    try:
        return float(value)
    except OverflowError:
        return math.copysign(math.inf, value)
