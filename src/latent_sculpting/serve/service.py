"""An HTTP scoring service for one fitted model (FastAPI; run it with uvicorn).

``POST /v1/score`` takes flow records as JSON (a list of objects, or ``{"flows": [...]}``) or
as a CSV body (``Content-Type: text/csv``) and answers one object per flow with ``score``,
``p_value``, ``is_attack``, ``flagged_by`` and ``explanation`` (for a flagged flow, its top
features: each a ``{feature, value, benign_median, benign_percentile, tail, score_drop, text}``
object, :meth:`~latent_sculpting.monitor.explain.FeatureReason.to_dict`; null for the others;
``?explain=false`` leaves the field out), plus the flow's identifier fields when it has any
(as the text sent: a JSON number becomes its text, a CSV cell stays as written). A client
that sends ``Accept: text/csv`` gets the same columns as CSV instead, the text ``sculpt score``
writes to a CSV file (the explanation as its one-line text).
Records go through the model's :class:`~latent_sculpting.io.flowspec.FlowSpec` and the one
:class:`~latent_sculpting.serve.scoring.Scorer`, so the numbers are those of ``sculpt score``.
``GET /v1/model`` describes the model; ``GET /v1/drift`` compares the last flows scored with the
model's benign training traffic (:mod:`latent_sculpting.monitor.drift`, over a rolling window; the
verdict is looked at after every tenth of the window and logged when it changes); ``GET /health``
answers when it is up.

Requests are untrusted (docs/reference/security.md): every limit below is checked before the work it
bounds, and a bad request gets a 4xx answer naming the record and field, never a 500 and never
a guess. A record that lacks a field the model needs, or holds null in a numeric one, is refused
(422): the service does not impute. Limits: body size (413, also once a ``Content-Encoding:
gzip`` body is decompressed), flows per request (413), fields per record (422, for a CSV body
counted on its header line before it is parsed), JSON nesting depth and number length (400). An
optional bearer token guards every endpoint but ``/health`` (the scheme's case does not matter,
RFC 7235); an optional list of allowed ``Host`` names refuses the others (DNS rebinding). CSV
answers escape text that a spreadsheet would run as a formula
(:func:`~latent_sculpting.serve.outputs.escape_formulas`). The OpenAPI schema is served only when
asked for, and no page that loads scripts from elsewhere is ever served.
"""

from __future__ import annotations

import datetime
import hmac
import itertools
import json
import logging
import math
import operator
import os
import re
import threading
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from latent_sculpting.errors import FlowInputError
from latent_sculpting.io.encoding import encode
from latent_sculpting.io.flowspec import model_spec
from latent_sculpting.io.formats import get_format
from latent_sculpting.io.readers.delimited import header_names, parse_bytes
from latent_sculpting.serve.outputs import escape_formulas
from latent_sculpting.serve.scoring import (
    OUTPUT_COLUMNS,
    ScoredBatch,
    Scorer,
    drift_monitor,
    drift_summary,
)
from latent_sculpting.threads import set_process_threads

__all__ = [
    "CONFIG_ENV",
    "LIMITS",
    "app_from_config",
    "check_allowed_hosts",
    "create_app",
    "model_card",
]

logger = logging.getLogger(__name__)

#: Documented request limits (docs/reference/security.md); ``create_app`` takes overrides.
LIMITS = {
    "max_body_bytes": 10 * 1024 * 1024,
    "max_flows": 100_000,
    "max_fields_per_record": 1_024,
    "max_json_depth": 8,
    "max_number_digits": 64,
}


#: Environment variable naming the JSON file each worker process of ``sculpt serve --workers``
#: builds its app from (:func:`app_from_config`).
CONFIG_ENV = "SCULPT_SERVE_CONFIG"

_CONFIG_KEYS = {
    "model",
    "device",
    "token",
    "openapi",
    "limits",
    "drift_window",
    "threads",
    "allowed_hosts",
}


class RequestError(Exception):
    """A request the service refuses: status code and a JSON-able detail."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def model_card(model: Any) -> dict[str, Any]:
    """What ``GET /v1/model`` answers: input spec, threshold, calibration, provenance.

    File names of the training data are reported without their folders: a service must not
    reveal its host's paths.
    """
    from latent_sculpting import __version__

    info = dict(getattr(model, "training_info_", None) or {})
    if "files" in info:
        info["files"] = [str(name).replace("\\", "/").rsplit("/", 1)[-1] for name in info["files"]]
    threshold = float(model.threshold_)
    params = model.get_params()
    return {
        "input": model_spec(model).to_dict(),
        "n_features": int(model.n_features_in_),
        "threshold": threshold if math.isfinite(threshold) else None,
        "target_fpr": model.target_fpr,
        "percentile": model.percentile,
        "calibration_size": int(len(model.calibration_scores_)),
        "score": model.score,
        "explanations": getattr(model, "benign_profile_", None) is not None,
        "training_data": info or None,
        "package_version": __version__,
        "params": {k: v for k, v in params.items() if k not in ("verbose", "device")},
    }


def create_app(
    model: Any,
    *,
    token: str | None = None,
    openapi: bool = False,
    limits: dict[str, int] | None = None,
    drift_window: int = 10_000,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """Build the service around a fitted ``model``.

    Parameters
    ----------
    model : LatentSculpting
        Fitted, with an input spec (``sculpt train`` models always have one).
    token : str, optional
        Require ``Authorization: Bearer <token>`` on every endpoint but ``/health`` (``bearer``
        in any case: RFC 7235 makes the scheme case-insensitive).
    openapi : bool, default False
        Serve the OpenAPI schema at ``/openapi.json`` (no interactive page either way).
    limits : dict, optional
        Overrides of :data:`LIMITS`.
    drift_window : int, default 10000
        Flows the drift report of ``GET /v1/drift`` covers: the most recent ones.
    allowed_hosts : sequence of str, optional
        The ``Host`` names requests may carry (``example.com``, ``*.example.com``,
        ``127.0.0.1``, ``[::1]``); any other gets 400 ``Invalid host header`` (Starlette's
        ``TrustedHostMiddleware``). None: any host. A service on loopback without a token
        should name its own names, so that a web page whose name was rebound to 127.0.0.1
        cannot use it (DNS rebinding); ``sculpt serve`` does so by default.

    Returns
    -------
    FastAPI
        Serve it with ``uvicorn.run(app, host="127.0.0.1", port=8000)``.
    """
    limits = {**LIMITS, **(limits or {})}
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise ValueError(f"unknown limits {sorted(unknown)}; known: {sorted(LIMITS)}")
    if any(int(v) < 1 for v in limits.values()):
        raise ValueError(f"limits must be positive, got {limits}")
    if token is not None and len(token) < 16:
        raise ValueError("a bearer token must have at least 16 characters")
    if not hasattr(model, "flow_"):
        raise ValueError("the model is not fitted")
    if not isinstance(drift_window, int) or drift_window < 10:
        raise ValueError(f"drift_window must be an integer >= 10, got {drift_window!r}")
    hosts = None if allowed_hosts is None else check_allowed_hosts(allowed_hosts)
    card = model_card(model)
    parser = RecordParser(model_spec(model), limits)
    scorer = Scorer(model, drift=drift_monitor(model, window=drift_window))
    if scorer.explain_missing:
        logger.warning("%s", scorer.explain_missing)
    # The verdict is looked at again after every tenth of the window, and logged when it changed.
    verdict = {"warning": False, "rows": 0}
    # torch modules are not documented thread-safe for concurrent forward passes; FastAPI runs
    # blocking work in a thread pool, so scoring is serialised.
    lock = threading.Lock()
    expected = None if token is None else token.encode()

    app = FastAPI(
        title="latent-sculpting",
        description="Zero-day attack detection in network flows.",
        version=card["package_version"],
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if openapi else None,
    )

    # A coroutine, so that FastAPI runs it on the event loop: a plain function dependency is
    # handed to a worker thread and back on every request, which cost more than a comparison.
    async def authorize(request: Request) -> None:
        if expected is not None:
            scheme, _, given = request.headers.get("authorization", "").strip().partition(" ")
            # Compared whatever the scheme, so that the time taken says nothing either way.
            matches = hmac.compare_digest(given.strip().encode(), expected)
            if not (matches and scheme.lower() == "bearer"):
                raise RequestError(401, "missing or wrong bearer token")

    @app.exception_handler(RequestError)
    async def _refused(request: Request, error: RequestError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(
            status_code=error.status, content={"detail": error.detail}, headers=headers
        )

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model", dependencies=[Depends(authorize)])
    def describe() -> dict[str, Any]:
        return card

    @app.get("/v1/drift", dependencies=[Depends(authorize)])
    def drift() -> dict[str, Any]:
        if scorer.drift is None:
            raise RequestError(
                404, "this model file has no drift bins (an older version wrote it); retrain it"
            )
        tally = scorer.tally
        report = drift_summary(scorer.drift, rows=tally.rows, labelled_rows=tally.labelled_rows)
        return {**report, "window": drift_window}

    def check_drift() -> None:
        if scorer.drift is None or scorer.tally.rows - verdict["rows"] < drift_window // 10:
            return
        verdict["rows"] = scorer.tally.rows
        report = scorer.drift.report()
        if report.warning != verdict["warning"]:
            verdict["warning"] = report.warning
            log = logger.warning if report.warning else logger.info
            log("%s", report)

    # The scoring route checks the token itself rather than through a dependency: FastAPI's
    # dependency resolution cost a single-flow request a tenth of its time. Every other
    # route keeps the dependency; the tests send each one without the token.
    @app.post(
        "/v1/score",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _json_schema(parser.spec)},
                    "text/csv": {"schema": {"type": "string"}},
                },
            },
            "responses": {
                "200": {
                    "description": "One record per flow: JSON, or CSV for `Accept: text/csv`",
                    "content": {"text/csv": {"schema": {"type": "string"}}},
                }
            },
        },
    )
    async def score(request: Request) -> Response:
        await authorize(request)
        explain = _explain_flag(request.query_params.get("explain"))
        as_csv = _answer_is_csv(request.headers.get("accept"))
        body = await _read_body(request, limits["max_body_bytes"])
        body = _decoded(body, request.headers.get("content-encoding"), limits["max_body_bytes"])
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        records = parser.parse(body, kind)

        def _score() -> ScoredBatch:
            with lock:
                return _score_locked()

        def _score_locked() -> ScoredBatch:
            scored = scorer.score_columns(parser.encode(records, scorer.context), explain=explain)
            check_drift()
            return scored

        try:
            # A request is scored on the event loop when no other scoring runs and its scoring
            # blocks the loop no longer than parsing its body did: a worker thread costs a
            # small request as much as scoring it, and under load a 1,024-flow request a sixth
            # more CPU (BENCHMARKS.md: the thread's scoring contends with the loop's parsing of
            # the next body). A larger one, or one that would wait for the lock, goes to a
            # thread so the loop keeps answering meanwhile.
            cost = records.num_rows * (_EXPLAINED_COST if explain else 1)
            if cost <= _INLINE_FLOWS and lock.acquire(blocking=False):
                try:
                    scored = _score_locked()
                finally:
                    lock.release()
            else:
                scored = await anyio.to_thread.run_sync(_score)
            if as_csv:
                table = escape_formulas(scored.table(), keep=scorer.output_columns)
                return _CsvAnswer(content=table, headers=_VARY)
            return _Answer(content=_records(scored), headers=_VARY)
        except RequestError:
            raise
        except Exception:  # noqa: BLE001 - a bug must not reach the client as a traceback
            logger.exception("scoring failed")
            return JSONResponse(status_code=500, content={"detail": "internal error"})

    app.state.scorer = scorer
    if hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts, www_redirect=False)
    return app


def check_allowed_hosts(hosts: Sequence[str]) -> list[str]:
    """``hosts`` as :func:`create_app` takes them, checked: names, addresses (an IPv6 one in
    brackets, as the ``Host`` header writes it), ``*.domain`` or ``*`` (any).

    Raises
    ------
    ValueError
        For an empty list, an empty name, one with a port or a path, or a wildcard elsewhere
        than a leading ``*.``.
    """
    if isinstance(hosts, str) or not hosts:
        raise ValueError(f"allowed hosts must be a non-empty list of names, got {hosts!r}")
    checked = []
    for host in hosts:
        name = str(host).strip()
        rest = name[2:] if name.startswith("*.") else name
        if not rest or (name != "*" and "*" in rest):
            raise ValueError(f"allowed host {host!r}: a name, an address, '*.domain' or '*'")
        bracketed = name.startswith("[") and name.endswith("]")
        if "/" in name or (":" in name and not bracketed):
            raise ValueError(
                f"allowed host {host!r}: a name without port or path (an IPv6 address in "
                "brackets, e.g. [::1])"
            )
        checked.append(name)
    return checked


def app_from_config(path: str | os.PathLike[str] | None = None) -> FastAPI:
    """The app of one worker process: loads and checks the model named in a config file.

    ``sculpt serve --workers N`` writes the file (readable by its owner only) and starts the
    workers with uvicorn, which calls this factory in each of them; the bearer token travels in
    the file, never in a command line.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The JSON config: ``model`` (path), ``device``, ``token`` (or null), ``openapi``,
        ``limits``, ``drift_window`` and ``allowed_hosts`` (or null), as :func:`create_app`
        takes them, and ``threads``, the
        worker's intra-op thread cap (:func:`~latent_sculpting.threads.set_process_threads`).
        Default: the file named by the :data:`CONFIG_ENV` environment variable.

    Returns
    -------
    FastAPI
    """
    from latent_sculpting.model.estimator import LatentSculpting

    if path is None:
        path = os.environ.get(CONFIG_ENV)
        if not path:
            raise ValueError(f"no service config: set {CONFIG_ENV} to the file's path")
    try:
        with open(path, encoding="utf-8") as file:
            config = json.load(file)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not a JSON service config ({error})") from None
    if not isinstance(config, dict) or set(config) != _CONFIG_KEYS:
        keys = sorted(config) if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path}: a service config has keys {sorted(_CONFIG_KEYS)}, got {keys}")
    for key, kind in (("model", str), ("device", str), ("openapi", bool), ("limits", dict)):
        if not isinstance(config[key], kind):
            raise ValueError(f"{path}: {key!r} must be a {kind.__name__}, got {config[key]!r}")
    if config["token"] is not None and not isinstance(config["token"], str):
        raise ValueError(f"{path}: 'token' must be a string or null")
    threads = config["threads"]
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"{path}: 'threads' must be a whole number at least 1, got {threads!r}")
    set_process_threads(threads)
    hosts = config["allowed_hosts"]
    if hosts is not None and not (
        isinstance(hosts, list) and all(isinstance(h, str) for h in hosts)
    ):
        raise ValueError(f"{path}: 'allowed_hosts' must be a list of names or null")
    model = LatentSculpting.load(config["model"], device=config["device"])
    return create_app(
        model,
        token=config["token"],
        openapi=config["openapi"],
        limits=config["limits"],
        drift_window=config["drift_window"],
        allowed_hosts=hosts,
    )


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
        if b"0" * run in body.translate(_DIGITS_AS_ZERO):
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

        # Both limits are checked on the body, strings removed, before json.loads recurses or
        # converts a number: a hook per number would cost more than the parsing itself.
        bare = _STRING.sub(b"", body)
        if _nesting(bare) > self.limits["max_json_depth"]:
            raise RequestError(400, f"JSON nested deeper than {self.limits['max_json_depth']}")
        long = _long_number(bare, self.limits["max_number_digits"])
        if long:
            raise RequestError(
                400, f"a number of {long} characters; at most {self.limits['max_number_digits']}"
            )
        try:
            return json.loads(body, parse_constant=constant)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
            raise RequestError(400, f"malformed JSON body: {error}") from None

    def _csv(self, body: bytes) -> Parsed:
        limit = self.limits["max_fields_per_record"]
        # Before any parsing: a header of a million names cost Arrow and the csv module seconds
        # of the event loop, only to be refused for its columns afterwards.
        fields = _header_fields(body)
        if fields > limit:
            raise RequestError(422, f"{fields} columns; at most {limit}")
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


class _Answer(Response):
    """A scoring answer as JSON, rendered by orjson: with ``json`` (Starlette's
    ``JSONResponse``) rendering took as long as scoring a 1,024-flow request. The records hold
    only JSON-safe values (:func:`_records`), so the text is what ``JSONResponse`` would write,
    up to the spelling of numbers."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class _CsvAnswer(Response):
    """A scoring answer as CSV (``Accept: text/csv``): the columns and text ``sculpt score``
    writes to a CSV file for these flows (:meth:`ScoredBatch.table`, written by pyarrow), one
    line per flow. For a batch it is the cheaper answer: pyarrow writes the columns without a
    Python object per flow, where JSON records are built one dictionary per flow."""

    media_type = "text/csv"

    def render(self, content: Any) -> bytes:
        sink = pa.BufferOutputStream()
        pacsv.write_csv(content, sink)
        return sink.getvalue().to_pybytes()


#: Answers depend on the request's Accept header; a cache between client and service must know.
_VARY = {"Vary": "Accept"}


def _answer_is_csv(accept: str | None) -> bool:
    """Whether ``Accept`` prefers CSV to JSON, the default: ``text/csv`` (or ``text/*``) with a
    higher quality than ``application/json`` (or ``application/*``, ``*/*``), a named type
    winning a tie with a wildcard; a tie otherwise, or a header that names neither, is JSON."""
    if not accept or "text/" not in accept.lower():
        return False
    best = {"csv": (0.0, -1), "json": (0.0, -1)}
    for entry in accept.lower().split(","):
        kind, *parameters = (part.strip() for part in entry.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        for answer, specific, family in (
            ("csv", "text/csv", "text/*"),
            ("json", "application/json", "application/*"),
        ):
            rank = {specific: 2, family: 1, "*/*": 0}.get(kind)
            if rank is not None and rank > best[answer][1]:
                best[answer] = (quality, rank)
    return best["csv"][0] > 0 and best["csv"] > best["json"]


def _explain_flag(value: str | None) -> bool:
    """The ``explain`` query parameter: absent or true/1/yes explains, false/0/no does not."""
    if value is None:
        return True
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise RequestError(400, f"explain={value!r}; use explain=true or explain=false")


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


#: Requests of at most this many flows are scored on the event loop when the scorer is free
#: (about 10 ms of scoring on one core, about what parsing them as CSV takes there)...
_INLINE_FLOWS = 2_048
#: ... counting each flow explained as this many (explaining a 1,024-flow request took about
#: six times as long as scoring it, BENCHMARKS.md).
_EXPLAINED_COST = 8

#: Distinct sets of field names whose matching to the model's columns a parser remembers.
_KNOWN_FIELD_SETS = 64

#: A field a record lacks (None would be a field holding null).
_ABSENT = object()

#: Every digit as "0" (for ``bytes.translate``): a run of digits is then one substring search.
_DIGITS_AS_ZERO = bytes(0x30 if 0x30 <= i <= 0x39 else i for i in range(256))

# A JSON string, written "unrolled" (runs of plain characters consumed at once): the same
# strings as the alternation of one character at a time, matched several times faster.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def _nesting(bare: bytes) -> int:
    """Deepest bracket nesting of a JSON body whose strings were removed, counted in C speed
    (numpy) before ``json.loads`` recurses."""
    text = np.frombuffer(bare, dtype=np.uint8)
    # Comparisons rather than np.isin: isin sorts its arguments, which cost more than the rest
    # of a one-flow request's checks.
    step = ((text == 0x5B) | (text == 0x7B)).astype(np.int64)
    step -= (text == 0x5D) | (text == 0x7D)
    return int(np.cumsum(step).max(initial=0))


def _long_number(bare: bytes, digits: int) -> int:
    """Characters of the first number longer than ``digits`` in a JSON body whose strings were
    removed, 0 when there is none (outside strings these characters only ever appear in numbers,
    and in true/false one at a time)."""
    found = re.search(rb"[-+0-9.eE]{%d,}" % (digits + 1), bare)
    return 0 if found is None else len(found.group())


def _header_fields(body: bytes) -> int:
    """Fields on a CSV body's first line, counted in C: its commas outside quoted names, plus
    one. Exact for a header :func:`~latent_sculpting.io.readers.delimited.header_names` reads;
    the time is one scan of the line (bounded by the body limit)."""
    end = body.find(b"\n")
    line = body if end < 0 else body[:end]
    if b'"' in line:
        line = _CSV_QUOTED.sub(b"", line)
    return line.count(b",") + 1


#: A quoted CSV field (a doubled quote inside it is part of it).
_CSV_QUOTED = re.compile(rb'"[^"]*(?:""[^"]*)*"')

#: What a gzip stream starts with (RFC 1952).
_GZIP_MAGIC = b"\x1f\x8b"


def _decoded(body: bytes, encoding: str | None, limit: int) -> bytes:
    """The request body as sent before its ``Content-Encoding``: as is, or decompressed from
    gzip, at most ``limit`` bytes of it (a small body that decompresses to gigabytes is refused
    after ``limit + 1`` bytes, never held whole)."""
    coding = (encoding or "").strip().lower()
    if coding in ("", "identity"):
        if body.startswith(_GZIP_MAGIC):
            raise RequestError(
                400,
                "the body is gzip-compressed (it starts with bytes 1f 8b) but the request has "
                "no Content-Encoding: gzip header; add it, or send the body uncompressed",
            )
        return body
    if coding not in ("gzip", "x-gzip"):
        raise RequestError(
            415, f"unsupported Content-Encoding {encoding!r}; send the body as is or gzip"
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing only
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as error:
        raise RequestError(
            400, f"Content-Encoding gzip, but the body is not gzip ({error})"
        ) from None
    if len(data) > limit:
        raise RequestError(413, f"request body exceeds the {limit}-byte limit once decompressed")
    if not inflater.eof:
        raise RequestError(400, "Content-Encoding gzip, but the gzip stream is cut short")
    if inflater.unused_data:
        raise RequestError(400, "Content-Encoding gzip, but bytes follow the gzip stream")
    return data


def _json_schema(spec: Any) -> dict[str, Any]:
    categorical = {c.column for c in spec.categorical}
    properties = {
        name: {"type": "string"} if name in categorical else {"type": "number"}
        for name in spec.required_columns()
    }
    record = {"type": "object", "properties": properties, "required": list(properties)}
    return {"type": "array", "items": record, "minItems": 1}


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, "invalid Content-Length header") from None
        if size > limit:
            raise RequestError(413, f"request body of {size} bytes exceeds the {limit}-byte limit")
    chunks, total = [], 0
    # Also count while reading: a chunked body has no Content-Length to check up front.
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise RequestError(413, f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _records(scored: ScoredBatch) -> list[dict[str, Any]]:
    """The answer: one JSON-safe object per flow (NaN becomes null, numpy scalars Python
    numbers): identifiers, ``score``, ``p_value``, ``is_attack``, ``flagged_by``, then
    ``explanation`` (its reasons, or null for a flow not flagged) when the flows were explained,
    and the label when the records carried one.

    Built column by column from Python lists: a cell-by-cell conversion, or a pandas frame,
    costs more than scoring a small request.
    """
    identifiers = scored.identifiers
    names = list(identifiers.column_names) + list(OUTPUT_COLUMNS)
    columns = [_arrow_json_list(column) for column in identifiers.columns]
    columns += [
        _json_floats(scored.score),
        _json_floats(scored.p_value),
        scored.is_attack.tolist(),
        scored.flagged_by.tolist(),
    ]
    if scored.explanations is not None:
        names.append("explanation")
        columns.append(
            [
                None if e is None else [reason.to_dict() for reason in e.reasons]
                for e in scored.explanations
            ]
        )
    if scored.labels is not None:
        names.append(scored.label_column)
        columns.append(_json_list(scored.labels.tolist()))
    return list(map(dict, map(zip, itertools.repeat(names), zip(*columns, strict=True))))


def _json_floats(values: np.ndarray) -> list[Any]:
    out = values.tolist()
    if np.isfinite(values).all():
        return out
    return [_json_value(v) for v in out]


def _arrow_json_list(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """An Arrow column's values, JSON-safe. Text, integers and booleans are as Arrow gives them
    (nulls None); any other type is checked value by value."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_integer(kind) or pa.types.is_boolean(kind):
        # Checking each of a 1,024-flow answer's identifiers cost more than rendering them.
        return column.to_pylist()
    return _json_list(column.to_pylist())


def _json_list(values: list[Any]) -> list[Any]:
    if set(map(type, values)) <= {str}:  # all text: one pass in C, not a generator's
        return values
    return [_json_value(v) for v in values]


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic):
        return _json_value(value.item())
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)
