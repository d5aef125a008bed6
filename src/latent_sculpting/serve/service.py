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
verdict is looked at after every tenth of the window and logged when it changes); ``GET
/v1/incidents`` (when the app groups incidents) lists the open incidents and the most recently
closed ones of the flows scored so far, grouped as ``sculpt score --incidents`` groups them
(every request must then carry the flows' start times and endpoints); ``GET /health`` answers
when it is up.

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

This module is the app: its routes, the token and host checks, and the worker config of
``sculpt serve --workers``. A request's bytes and limits are read by
:mod:`latent_sculpting.serve.request`, its records by :mod:`latent_sculpting.serve.records`, and
the answers written by :mod:`latent_sculpting.serve.answers`.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.trustedhost import TrustedHostMiddleware

from latent_sculpting.io.flowspec import model_spec
from latent_sculpting.serve.answers import (
    VARY,
    CsvAnswer,
    JsonAnswer,
    answer_is_csv,
    json_records,
    model_card,
)
from latent_sculpting.serve.outputs import escape_formulas
from latent_sculpting.serve.records import RecordParser
from latent_sculpting.serve.request import (
    LIMITS,
    RequestError,
    decoded_body,
    explain_flag,
    read_body,
)
from latent_sculpting.serve.scoring import ScoredBatch, Scorer, drift_monitor, drift_summary
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


#: Requests of at most this many flows are scored on the event loop when the scorer is free
#: (about 10 ms of scoring on one core, about what parsing them as CSV takes there)...
_INLINE_FLOWS = 2_048
#: ... counting each flow explained as this many (explaining a 1,024-flow request took about
#: six times as long as scoring it, BENCHMARKS.md).
_EXPLAINED_COST = 8


def create_app(
    model: Any,
    *,
    token: str | None = None,
    openapi: bool = False,
    limits: dict[str, int] | None = None,
    drift_window: int = 10_000,
    allowed_hosts: Sequence[str] | None = None,
    incidents: Any = None,
    incident_calibration: Any = None,
    incident_memory: int = 1_000,
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
    incidents : IncidentConfig, optional
        Group the flows of every request into incidents (one stream, in the order the requests
        are scored) and list them at ``GET /v1/incidents``. A request whose records lack the
        start time or endpoints is then refused (422, naming what is wanted). One process must
        see every flow of a host: ``sculpt serve --incidents`` runs one worker.
    incident_calibration : IncidentCalibration, optional
        Checked against the model and ``incidents``; gives each incident its rate.
    incident_memory : int, default 1000
        Closed incidents kept for ``GET /v1/incidents`` (the most recent).

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
    grouping = _incident_grouping(model, incidents, incident_calibration, incident_memory)
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

    @app.get("/v1/incidents", dependencies=[Depends(authorize)])
    def incident_list() -> dict[str, Any]:
        if grouping is None:
            raise RequestError(
                404, "this service does not group incidents: start it with sculpt serve --incidents"
            )
        with lock:
            return grouping.listing()

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
        explain = explain_flag(request.query_params.get("explain"))
        as_csv = answer_is_csv(request.headers.get("accept"))
        body = await read_body(request, limits["max_body_bytes"])
        body = decoded_body(body, request.headers.get("content-encoding"), limits["max_body_bytes"])
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        records = parser.parse(body, kind)
        if grouping is not None:
            roles = grouping.roles(records.table.column_names)

        def _score() -> ScoredBatch:
            with lock:
                return _score_locked()

        def _score_locked() -> ScoredBatch:
            scored = scorer.score_columns(parser.encode(records, scorer.context), explain=explain)
            check_drift()
            if grouping is not None:
                grouping.add(scored.frame(), roles)
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
                return CsvAnswer(content=table, headers=VARY)
            return JsonAnswer(content=json_records(scored), headers=VARY)
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


def _json_schema(spec: Any) -> dict[str, Any]:
    categorical = {c.column for c in spec.categorical}
    properties = {
        name: {"type": "string"} if name in categorical else {"type": "number"}
        for name in spec.required_columns()
    }
    record = {"type": "object", "properties": properties, "required": list(properties)}
    return {"type": "array", "items": record, "minItems": 1}


class _Incidents:
    """The service's incident grouping: one grouper over every request, and the closed
    incidents it keeps for ``GET /v1/incidents``."""

    def __init__(self, model: Any, grouper: Any, memory: int) -> None:
        from collections import deque

        self.format = model_spec(model).format
        self.grouper = grouper
        self.closed: deque = deque(maxlen=memory)

    def roles(self, columns: Sequence[str]) -> tuple[dict[str, str], str]:
        """The records' time and endpoint columns; 422 when they lack them."""
        from latent_sculpting.monitor.incident_io import incident_columns

        try:
            return incident_columns(self.format, columns)
        except ValueError as error:
            raise RequestError(422, str(error)) from None

    def add(self, scored: Any, roles: tuple[dict[str, str], str]) -> None:
        from latent_sculpting.monitor.incident_io import incident_frame

        # The identifiers come back as the text sent: a numeric time is read as a number.
        names, unit = roles
        column = scored[names["time"]]
        if unit != "datetime" and column.dtype == object:
            numbers = pd.to_numeric(column, errors="coerce")
            bad = numbers.isna() | ~np.isfinite(numbers.to_numpy(dtype=float))
            if bad.any():
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise RequestError(
                    422,
                    f"record {row + 1}, field {names['time']!r}: {column.iat[row]!r} is "
                    "not a start time (a number)",
                )
            scored[names["time"]] = numbers.astype(np.float64)
        self.closed.extend(self.grouper.add(incident_frame(scored, self.format, roles)))
        self.grouper.take_raised()  # the listing shows open incidents as they stand

    def listing(self) -> dict[str, Any]:
        grouper = self.grouper
        return {
            "open": [i.to_dict() for i in grouper.open_incidents()],
            "closed": [i.to_dict() for i in self.closed],
            "calibrated": grouper.calibrated,
            "threshold": grouper.threshold,
            "grouping": grouper.config.grouping(),
            "counts": dict(grouper.stats),
        }


def _incident_grouping(model: Any, config: Any, calibration: Any, memory: int) -> _Incidents | None:
    if config is None:
        if calibration is not None:
            raise ValueError("an incident calibration needs an incident grouping (incidents=)")
        return None
    from latent_sculpting.io.formats import get_format
    from latent_sculpting.monitor.incident_io import incident_columns
    from latent_sculpting.monitor.incidents import IncidentGrouper

    if not isinstance(memory, int) or isinstance(memory, bool) or memory < 1:
        raise ValueError(f"incident_memory must be a positive integer, got {memory!r}")
    fmt = model_spec(model).format
    if not get_format(fmt).endpoint_columns:
        incident_columns(fmt, [])  # raises, naming the format
    if calibration is not None:
        calibration.check_model(model)
    return _Incidents(model, IncidentGrouper(config, calibration), memory)
