"""``sculpt serve``: an HTTP scoring service for a saved model (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys

from .common import add_threads_flag

TOKEN_ENV = "SCULPT_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="serve a saved model over HTTP: POST /v1/score, GET /v1/model, GET /v1/drift, "
        "GET /health",
        description="Start an HTTP service that scores flows sent as JSON records or CSV with "
        "the same numbers as `sculpt score`. Needs the serve extra "
        "(pip install latent-sculpting[serve]).",
    )
    parser.add_argument("model", help="model file written by `sculpt train`")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=10.0,
        metavar="MB",
        help="largest request body in MiB; larger ones get 413 (default 10)",
    )
    parser.add_argument(
        "--token",
        metavar="TOKEN",
        help="require `Authorization: Bearer TOKEN` on every endpoint but /health (at least 16 "
        f"characters; default: the {TOKEN_ENV} environment variable, which keeps it out of "
        "the process list)",
    )
    parser.add_argument(
        "--openapi",
        action="store_true",
        help="serve the OpenAPI schema at /openapi.json (no interactive page is ever served)",
    )
    parser.add_argument(
        "--drift-window",
        type=int,
        default=10_000,
        metavar="N",
        help="GET /v1/drift compares the last N flows scored with the model's benign training "
        "traffic (default 10000)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_threads_flag(parser)
    parser.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from ..service import create_app
    except ImportError as error:
        raise ValueError(
            f"sculpt serve needs FastAPI and uvicorn: install latent-sculpting[serve] ({error})"
        ) from None
    from ..estimator import LatentSculpting

    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be in 1..65535, got {args.port}")
    if args.max_body_mb <= 0:
        raise ValueError(f"--max-body-mb must be positive, got {args.max_body_mb}")
    if args.drift_window < 10:
        raise ValueError(f"--drift-window must be at least 10, got {args.drift_window}")
    token = args.token or os.environ.get(TOKEN_ENV) or None
    if token is None and not _is_loopback(args.host):
        print(
            f"sculpt serve: warning: listening on {args.host}, reachable from other machines, "
            f"without a token; set {TOKEN_ENV} (or --token) or put it behind a proxy that "
            "authenticates",
            file=sys.stderr,
        )
    model = LatentSculpting.load(args.model, device=args.device)
    app = create_app(
        model,
        token=token,
        openapi=args.openapi,
        limits={"max_body_bytes": int(args.max_body_mb * 1024 * 1024)},
        drift_window=args.drift_window,
    )
    print(f"serving {args.model} on http://{args.host}:{args.port} (Ctrl-C stops)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
