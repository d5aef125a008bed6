"""``sculpt serve``: an HTTP scoring service for a saved model (FastAPI on uvicorn)."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from latent_sculpting.cli.common import add_threads_flag, threads_from_args
from latent_sculpting.cli.incidents import (
    add_grouping_flags,
    calibration_from_args,
    config_from_args,
    refuse_unused_incident_flags,
)

TOKEN_ENV = "SCULPT_TOKEN"

#: More worker processes than this is a typo, not a deployment.
MAX_WORKERS = 256


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
        "--workers",
        type=_workers,
        default=1,
        metavar="N",
        help="worker processes sharing the port (default 1). Each loads the model itself "
        "(N times the memory) and keeps its own state: GET /v1/drift reports on the last "
        "--drift-window flows scored by the worker that answers, and each worker logs its "
        "own drift verdict changes",
    )
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
    parser.add_argument(
        "--allowed-hosts",
        nargs="+",
        metavar="HOST",
        help="Host header names requests may carry (e.g. scorer.example.com, *.example.com, "
        "10.0.0.5, [::1]); others get 400. Default on a loopback address: localhost, "
        "127.0.0.1, [::1] and --host, so that a web page whose name was rebound to this "
        "machine cannot reach the service (DNS rebinding); on any other address: any host. "
        "'*' allows any",
    )
    parser.add_argument(
        "--incidents",
        action="store_true",
        help="group the flows of every request into incidents, listed at GET /v1/incidents "
        "(requests must carry start times and endpoints; one worker)",
    )
    add_grouping_flags(parser)
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    add_threads_flag(
        parser,
        help="intra-op threads of each worker: torch, BLAS and Arrow (default 1: a worker "
        "scores one request at a time, and parallelism comes from --workers; threads that meet "
        "at barriers stall when another process holds a core)",
    )
    parser.add_argument(
        "--log-level", default="info", choices=("critical", "error", "warning", "info", "debug")
    )
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from latent_sculpting.serve.service import CONFIG_ENV, check_allowed_hosts, create_app
    except ImportError as error:
        raise ValueError(
            f"sculpt serve needs FastAPI and uvicorn: install latent-sculpting[serve] ({error})"
        ) from None
    from latent_sculpting.model.estimator import LatentSculpting
    from latent_sculpting.threads import set_process_threads

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
    hosts = check_allowed_hosts(args.allowed_hosts or default_allowed_hosts(args.host))
    allowed_hosts = None if hosts == ["*"] else hosts
    limits = {"max_body_bytes": int(args.max_body_mb * 1024 * 1024)}
    threads = 1 if args.threads is None else threads_from_args(args)
    # Built here also with several workers, so that a bad model file or option is one clear
    # error before any worker starts, not one per worker restart.
    model = LatentSculpting.load(args.model, device=args.device)
    incidents = calibration = None
    if args.incidents:
        if args.workers != 1:
            raise ValueError(
                "--incidents needs one worker (--workers 1): a host's flows must all reach "
                "the process that groups them"
            )
        incidents, calibration = config_from_args(args), calibration_from_args(args, model)
    else:
        refuse_unused_incident_flags(args, "--incidents")
    app = create_app(
        model,
        token=token,
        openapi=args.openapi,
        limits=limits,
        drift_window=args.drift_window,
        allowed_hosts=allowed_hosts,
        incidents=incidents,
        incident_calibration=calibration,
    )
    where = f"http://{args.host}:{args.port}"
    if args.workers == 1:
        set_process_threads(threads)
        print(f"serving {args.model} on {where} (Ctrl-C stops)", file=sys.stderr)
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
        return 0
    del app, model
    config = {
        "model": str(Path(args.model).resolve()),
        "device": args.device,
        "token": token,
        "openapi": args.openapi,
        "limits": limits,
        "drift_window": args.drift_window,
        "threads": threads,
        "allowed_hosts": allowed_hosts,
    }
    with _config_file(config) as path:
        os.environ[CONFIG_ENV] = str(path)
        print(
            f"serving {args.model} on {where} with {args.workers} workers (Ctrl-C stops)",
            file=sys.stderr,
        )
        try:
            _run_workers(
                uvicorn.Config(
                    "latent_sculpting.serve.service:app_from_config",
                    factory=True,
                    workers=args.workers,
                    host=args.host,
                    port=args.port,
                    log_level=args.log_level,
                )
            )
        finally:
            os.environ.pop(CONFIG_ENV, None)
    return 0


def _run_workers(config: Any) -> None:
    """What ``uvicorn.run`` does for several workers, with Nagle's algorithm off and, on Linux,
    a listening socket of each worker's own.

    **Nagle.** uvicorn binds the shared listening socket without naming its protocol, so asyncio
    does not recognise the accepted connections as TCP and leaves Nagle's algorithm on: every
    answer on a kept-alive connection then waited about 40 ms for the client's delayed
    acknowledgement (two workers answered at p50 48 ms whatever the load: BENCHMARKS.md;
    Kludex/uvicorn#3149). TCP_NODELAY set on a listening socket is inherited by the
    connections it accepts.

    **One socket per worker.** Workers sharing one listening socket all wake on a new
    connection, and the event loop that wins accepts every connection waiting: under a load
    of kept-alive connections one worker held them all and the others sat idle (measured:
    one worker at 0.98 cores, the other at 0.01, BENCHMARKS.md). With SO_REUSEPORT each worker
    listens on a socket of its own bound to the same address, and the kernel spreads new
    connections over them. The parent binds the address first (a bind error is one clear
    error) and never listens on it; what it hands uvicorn to pass to each worker is
    :class:`_WorkerSocket`, which arrives in the worker as a fresh socket of that group.
    """
    from uvicorn.supervisors import Multiprocess

    if _REUSE_PORT and config.uds is None and config.fd is None:
        family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
        sock = _fresh_socket(family, (config.host, config.port), kind=_WorkerSocket)
    else:
        sock = config.bind_socket()
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    Multiprocess(config, sockets=[sock]).run()


#: Whether workers get listening sockets of their own: Linux spreads connections over a
#: SO_REUSEPORT group; other systems (macOS hands them all to one socket) share one.
_REUSE_PORT = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def _fresh_socket(
    family: int, address: tuple, *, kind: type[socket.socket] = socket.socket
) -> socket.socket:
    """A new socket (of class ``kind``) of the address's SO_REUSEPORT group, Nagle off, bound,
    not yet listening; closed again when the address cannot be bound."""
    sock = kind(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class _WorkerSocket(socket.socket):
    """The parent's bound socket, which pickles (uvicorn pickles the sockets it passes to each
    worker it spawns) as "bind a fresh socket to my address": each worker listens on its own."""

    def __reduce__(self) -> tuple:
        return _fresh_socket, (self.family, self.getsockname())


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--workers must be a whole number of processes, got {text!r}"
        ) from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"--workers must be in 1..{MAX_WORKERS}, got {value}")
    return value


@contextlib.contextmanager
def _config_file(config: dict) -> Iterator[Path]:
    """The workers' config in a private temporary folder, removed on the way out.

    Written under another name and renamed, so a worker never reads half a file; only the
    owner may read it, since it holds the token.
    """
    folder = Path(tempfile.mkdtemp(prefix="sculpt-serve-"))  # mode 0700
    try:
        path = folder / "config.json"
        partial = folder / "config.json.partial"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump(config, file)
        os.replace(partial, path)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def default_allowed_hosts(host: str) -> list[str]:
    """The ``Host`` names a service bound to ``host`` accepts by default: this machine's own
    names on a loopback address, any (``["*"]``) on another."""
    if not _is_loopback(host):
        return ["*"]
    own = f"[{host}]" if ":" in host else host
    return list(dict.fromkeys(["localhost", "127.0.0.1", "[::1]", own]))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
