"""An HTTP scoring service for one fitted model (FastAPI; run it with uvicorn).

``POST /v1/score`` takes flow records as JSON (a list of objects, or ``{"flows": [...]}``) or as a
CSV body (``Content-Type: text/csv``) and answers one object per flow with ``score``,
``p_value``, ``is_attack`` and ``flagged_by``, plus the flow's identifier fields when it has any.
Flows are scored by :func:`latent_sculpting.scoring.score_frame`, so the numbers are those of
``sculpt score``. ``GET /v1/model`` describes the model; ``GET /health`` answers when it is up.

Bad requests get a 4xx answer and never stop the service: missing or non-numeric feature
columns a 422 naming them, bodies over the size limit a 413, malformed JSON or CSV a 400.
"""

from __future__ import annotations

import io
import json
import math
import threading
from typing import Any

import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from .estimator import LatentSculpting
from .inputs import FlowInputError, model_inputs
from .scoring import score_frame

__all__ = ["DEFAULT_MAX_BODY_BYTES", "MAX_FLOWS_PER_REQUEST", "create_app", "model_card"]

DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
#: Flows per request; larger batches belong to ``sculpt score``.
MAX_FLOWS_PER_REQUEST = 100_000


class _RequestError(Exception):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


def model_card(model: LatentSculpting) -> dict[str, Any]:
    """What ``GET /v1/model`` answers: features, threshold, calibration, training data, versions."""
    from . import __version__
    from .persistence import FORMAT_NAME, FORMAT_VERSION

    meta = dict(getattr(model, "metadata_", None) or {})
    params = model.get_params()
    threshold = float(model.threshold_)
    return {
        "features": [str(c) for c in getattr(model, "feature_names_in_", [])],
        "n_features": int(model.n_features_in_),
        "threshold": threshold if math.isfinite(threshold) else None,
        "target_fpr": model.target_fpr,
        "percentile": model.percentile,
        "calibration": model.calibration,
        "calibration_size": int(len(model.calibration_scores_)),
        "stage1": bool(model.stage1),
        "score": model.score,
        "training_data": meta.get("training_data"),
        "created": meta.get("created"),
        "trained_with_package_version": meta.get("package_version"),
        "package_version": __version__,
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "preset": meta.get("preset"),
        "params": {k: v for k, v in params.items() if k not in ("verbose", "device")},
    }


def create_app(model: LatentSculpting, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> FastAPI:
    """Build the service around a fitted ``model``.

    Parameters
    ----------
    model : LatentSculpting
        Fitted, with feature names (``sculpt train`` models always have them).
    max_body_bytes : int, default 10 MiB
        Request bodies longer than this get a 413 before they are parsed.

    Returns
    -------
    FastAPI
        Serve it with ``uvicorn.run(app, host="127.0.0.1", port=8000)``.
    """
    if max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be positive, got {max_body_bytes}")
    if not hasattr(model, "flow_"):
        raise ValueError("the model is not fitted")
    card = model_card(model)
    training = card["training_data"] or {}
    label_column = training.get("label_column")
    # torch modules are not documented thread-safe for concurrent forward passes; FastAPI runs
    # sync endpoints in a thread pool, so scoring is serialised.
    lock = threading.Lock()

    app = FastAPI(
        title="latent-sculpting",
        description="Zero-day attack detection in network flows (arXiv:2512.22179).",
        version=card["package_version"],
    )

    @app.exception_handler(_RequestError)
    async def _request_error(request: Request, error: _RequestError) -> JSONResponse:
        return JSONResponse(status_code=error.status, content={"detail": error.detail})

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/model")
    def describe() -> dict[str, Any]:
        return card

    @app.post("/v1/score")
    async def score(request: Request) -> JSONResponse:
        body = await _read_body(request, max_body_bytes)
        frame = _parse(body, request.headers.get("content-type", ""))
        try:
            inputs = model_inputs(model, frame, label_column=label_column)
        except FlowInputError as error:
            detail: dict[str, Any] = {"error": str(error)}
            if error.missing:
                detail["missing_columns"] = error.missing
            if error.non_numeric:
                detail["non_numeric_columns"] = error.non_numeric
            raise _RequestError(422, detail) from None
        except ValueError as error:
            raise _RequestError(422, {"error": str(error)}) from None
        # Scoring holds the GIL for short stretches only; run it off the event loop so /health
        # stays responsive during a large batch.
        import anyio.to_thread

        def _score() -> pd.DataFrame:
            with lock:
                return score_frame(model, inputs.features, inputs.identifiers)

        try:
            scored = await anyio.to_thread.run_sync(_score)
        except ValueError as error:
            raise _RequestError(422, {"error": str(error)}) from None
        return JSONResponse(content=_records(scored))

    return app


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise _RequestError(400, "invalid Content-Length header") from None
        if size > limit:
            raise _RequestError(413, f"request body of {size} bytes exceeds the {limit}-byte limit")
    chunks, total = [], 0
    # Also count while reading: a chunked body has no Content-Length to check up front.
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _RequestError(413, f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(body: bytes, content_type: str) -> pd.DataFrame:
    kind = content_type.split(";")[0].strip().lower()
    if not body.strip():
        raise _RequestError(400, "empty request body; send flows as JSON or CSV")
    if kind in ("text/csv", "application/csv"):
        try:
            frame = pd.read_csv(io.BytesIO(body), skipinitialspace=False)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise _RequestError(400, f"malformed CSV body: {error}") from None
    elif kind in ("application/json", "") or kind.endswith("+json"):
        try:
            data = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise _RequestError(400, f"malformed JSON body: {error}") from None
        if isinstance(data, dict) and "flows" in data:
            data = data["flows"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise _RequestError(422, 'JSON body must be a list of flow objects or {"flows": [...]}')
        frame = pd.DataFrame.from_records(data)
    else:
        raise _RequestError(
            415, f"unsupported Content-Type {kind!r}; use application/json or text/csv"
        )
    if len(frame) == 0:
        raise _RequestError(422, "no flows in the request")
    if len(frame) > MAX_FLOWS_PER_REQUEST:
        raise _RequestError(
            413, f"{len(frame)} flows in one request; at most {MAX_FLOWS_PER_REQUEST}"
        )
    return frame


def _records(scored: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-safe records: NaN becomes null, numpy scalars become Python numbers."""
    out = scored.astype(object).where(scored.notna(), None)
    records = out.to_dict(orient="records")
    for record in records:
        for key, value in record.items():
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and not math.isfinite(value):
                value = None
            record[key] = value
    return records
