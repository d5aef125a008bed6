"""What the scoring service answers: the model card of ``GET /v1/model``, and the scored flows of
``POST /v1/score`` as JSON records or, when the request's ``Accept`` header prefers it, as the
CSV text ``sculpt score`` writes.
"""

from __future__ import annotations

import datetime
import itertools
import math
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
from fastapi.responses import Response

from latent_sculpting.io.flowspec import model_spec
from latent_sculpting.serve.scoring import OUTPUT_COLUMNS, ScoredBatch

__all__ = ["VARY", "CsvAnswer", "JsonAnswer", "answer_is_csv", "json_records", "model_card"]


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


class JsonAnswer(Response):
    """A scoring answer as JSON, rendered by orjson: with ``json`` (Starlette's
    ``JSONResponse``) rendering took as long as scoring a 1,024-flow request. The records hold
    only JSON-safe values (:func:`json_records`), so the text is what ``JSONResponse`` would write,
    up to the spelling of numbers."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class CsvAnswer(Response):
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
VARY = {"Vary": "Accept"}


def answer_is_csv(accept: str | None) -> bool:
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


def json_records(scored: ScoredBatch) -> list[dict[str, Any]]:
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
