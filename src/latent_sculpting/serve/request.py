"""A scoring request as bytes, and its limits (docs/reference/security.md): the body read within
its size limit, its ``Content-Encoding`` undone within the same limit, the JSON nesting depth and
number length and the CSV header's width checked on the raw bytes, before any parser runs, and
the ``explain`` query parameter. Every refusal is a :class:`RequestError`, which the service
answers with its status and detail.
"""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np
from fastapi import Request

__all__ = [
    "LIMITS",
    "RequestError",
    "check_csv_header",
    "check_json_limits",
    "decoded_body",
    "explain_flag",
    "has_digit_run",
    "read_body",
]

#: Documented request limits (docs/reference/security.md); ``create_app`` takes overrides.
LIMITS = {
    "max_body_bytes": 10 * 1024 * 1024,
    "max_flows": 100_000,
    "max_fields_per_record": 1_024,
    "max_json_depth": 8,
    "max_number_digits": 64,
}


class RequestError(Exception):
    """A request the service refuses: status code and a JSON-able detail."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail


async def read_body(request: Request, limit: int) -> bytes:
    """The body of ``request``, refused (413) once it passes ``limit`` bytes: by its
    ``Content-Length`` before reading, and while reading a chunked one."""
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


def explain_flag(value: str | None) -> bool:
    """The ``explain`` query parameter: absent or true/1/yes explains, false/0/no does not."""
    if value is None:
        return True
    text = value.strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise RequestError(400, f"explain={value!r}; use explain=true or explain=false")


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


def has_digit_run(body: bytes, run: int) -> bool:
    """Whether ``body`` holds ``run`` digits in a row anywhere, strings included (one pass in C)."""
    return b"0" * run in body.translate(_DIGITS_AS_ZERO)


def check_json_limits(body: bytes, limits: dict[str, int]) -> None:
    """400 when a JSON body nests deeper than ``max_json_depth`` or holds a number longer than
    ``max_number_digits`` characters.

    Both are checked on the body with its strings removed, before ``json.loads`` recurses or
    converts a number: a conversion hook per number would cost more than the parsing itself.
    """
    bare = _STRING.sub(b"", body)
    if _nesting(bare) > limits["max_json_depth"]:
        raise RequestError(400, f"JSON nested deeper than {limits['max_json_depth']}")
    long = _long_number(bare, limits["max_number_digits"])
    if long:
        raise RequestError(
            400, f"a number of {long} characters; at most {limits['max_number_digits']}"
        )


def check_csv_header(body: bytes, limit: int) -> None:
    """422 when a CSV body's header names more than ``limit`` fields, counted before any parsing:
    a header of a million names cost Arrow and the csv module seconds of the event loop, only
    to be refused for its columns afterwards."""
    fields = _header_fields(body)
    if fields > limit:
        raise RequestError(422, f"{fields} columns; at most {limit}")


#: A quoted CSV field (a doubled quote inside it is part of it).
_CSV_QUOTED = re.compile(rb'"[^"]*(?:""[^"]*)*"')

#: What a gzip stream starts with (RFC 1952).
_GZIP_MAGIC = b"\x1f\x8b"


def decoded_body(body: bytes, encoding: str | None, limit: int) -> bytes:
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
