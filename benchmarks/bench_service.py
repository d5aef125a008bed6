"""Bounded load test of ``sculpt serve``: requests/s and p50/p99 latency on loopback.

Starts the real service (``sculpt serve``, uvicorn) on 127.0.0.1 in a subprocess, sends a fixed
number of ``POST /v1/score`` requests of real sample flows from a few concurrent clients, once
per batch size, and prints a Markdown table with the machine and date. Nothing leaves the
machine; the server is stopped at the end.

Usage::

    python benchmarks/bench_service.py                 # trains a fast model on a sample slice
    python benchmarks/bench_service.py --model model.sculpt --requests 2000 --clients 4
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: train a fast one on the sample)")
    parser.add_argument("--requests", type=int, default=2000, help="requests per batch size")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 64],
        help="flows per request (default 1 64)",
    )
    args = parser.parse_args()
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be positive")

    import httpx

    import latent_sculpting
    from latent_sculpting.data import sample_path

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else _train(Path(tmp) / "bench.sculpt")
        rows = pd.read_parquet(sample_path() / "friday.parquet").sample(2048, random_state=0)
        port = _free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from latent_sculpting.cli import main; sys.exit(main())",
                "serve",
                str(model),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait(url, server)
            results = []
            for size in args.batch_sizes:
                payloads = [
                    json.dumps(
                        rows.iloc[(i * size) % len(rows) :][:size].to_dict(orient="records")
                    ).encode()
                    for i in range(16)
                ]
                with httpx.Client(base_url=url, timeout=60) as warm:  # warm-up, not measured
                    for body in payloads:
                        warm.post(
                            "/v1/score", content=body, headers={"Content-Type": "application/json"}
                        )
                results.append((size, _load(url, payloads, args.requests, args.clients)))
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(f"### `sculpt serve` load test ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; "
        f"Python {platform.python_version()}, latent-sculpting {latent_sculpting.__version__}. "
        f"Server and {args.clients} client threads on the same machine (loopback), "
        f"{args.requests} requests per row, real flows of the embedded sample (raw "
        f"improved-release columns).\n"
    )
    print(
        "| flows/request | requests | clients | errors | requests/s | flows/s | p50 ms | p99 ms |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, r in results:
        print(
            f"| {size} | {r['n']} | {args.clients} | {r['errors']} | {r['rps']:.0f} | "
            f"{r['rps'] * size:.0f} | {r['p50']:.1f} | {r['p99']:.1f} |"
        )
    return 0


def _train(path: Path) -> Path:
    from latent_sculpting.cli import main as sculpt

    code = sculpt(
        ["train", "--preset", "fast", "--max-per-class", "300", "-o", str(path), "--quiet"]
    )
    if code != 0:
        raise SystemExit(f"training the benchmark model failed ({code})")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, server: subprocess.Popen, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with code {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not answer /health in time")


def _load(url: str, payloads: list[bytes], n: int, clients: int) -> dict:
    """Send ``n`` requests from ``clients`` threads; latencies in ms, throughput overall."""
    import httpx

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    shares = [n // clients + (1 if i < n % clients else 0) for i in range(clients)]

    def worker(count: int, offset: int) -> None:
        mine, bad = [], 0
        with httpx.Client(base_url=url, timeout=60) as client:
            for i in range(count):
                body = payloads[(offset + i) % len(payloads)]
                start = time.perf_counter()
                response = client.post(
                    "/v1/score", content=body, headers={"Content-Type": "application/json"}
                )
                mine.append((time.perf_counter() - start) * 1000)
                bad += response.status_code != 200
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker, args=(c, i)) for i, c in enumerate(shares)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = np.asarray(latencies)
    return {
        "n": len(lat),
        "errors": errors[0],
        "rps": len(lat) / wall,
        "p50": float(np.percentile(lat, 50)),
        "p99": float(np.percentile(lat, 99)),
    }


if __name__ == "__main__":
    sys.exit(main())
