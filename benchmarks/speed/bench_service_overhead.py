"""Per-request overhead of the HTTP service, in process: this tree's ``service.py`` against the
``service.py`` of a git revision, on the same model and the same real flows.

Both apps are driven through their ASGI interface by httpx (no sockets, no uvicorn), so what is
timed is the service's own work per request: reading and checking the body, the input spec,
the scorer, explanations, the drift update and the JSON answer. Repeats are interleaved and
medians reported, so the ratio holds on a busy machine even when the absolute times do not. The
answers of both versions are compared first (they must be identical).

Usage::

    python benchmarks/speed/bench_service_overhead.py                  # against main
    python benchmarks/speed/bench_service_overhead.py --baseline HEAD~3 --model model.sculpt
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="main", help="git revision to compare with")
    parser.add_argument("--model", help="model file (default: train a fast one on the sample)")
    parser.add_argument("--requests", type=int, default=200, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 64], help="flows per request"
    )
    args = parser.parse_args()
    if args.requests < 1 or args.repeats < 1 or min(args.batch_sizes) < 1:
        parser.error("--requests, --repeats and --batch-sizes must be positive")

    import pandas as pd
    from bench_service import train_fast_model  # this folder is on the path of a script

    from latent_sculpting import LatentSculpting
    from latent_sculpting.serve import service

    # Both apps log drift verdicts as they change; that is not what is measured here.
    logging.getLogger("latent_sculpting").setLevel(logging.ERROR)
    from latent_sculpting.data import sample_path

    with tempfile.TemporaryDirectory() as tmp:
        baseline = _baseline_module(args.baseline, Path(tmp))
        path = Path(args.model) if args.model else train_fast_model(Path(tmp) / "bench.sculpt")
        model = LatentSculpting.load(path)
        apps = {"baseline": baseline.create_app(model), "this tree": service.create_app(model)}
        rows = pd.read_parquet(sample_path() / "friday.parquet").sample(4096, random_state=0)
        results = asyncio.run(_measure(apps, rows, args))

    commit = _git("rev-parse", "--short", "HEAD")
    print(f"### Service overhead in process ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; Python {platform.python_version()}; "
        f"commit {commit} (with any uncommitted changes) against {args.baseline}; "
        f"{args.repeats} interleaved repeats of {args.requests} sequential requests, medians; "
        "real flows of the embedded sample; answers identical.\n"
    )
    print("| flows/request | baseline ms/request | this tree ms/request | speed-up |")
    print("|---:|---:|---:|---:|")
    for size, times in results.items():
        before, after = np.median(times["baseline"]), np.median(times["this tree"])
        print(f"| {size} | {before:.2f} | {after:.2f} | {before / after:.2f}x |")
    return 0


async def _measure(apps: dict, rows, args) -> dict[int, dict[str, list[float]]]:
    import httpx

    clients = {
        name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
        for name, app in apps.items()
    }
    headers = {"Content-Type": "application/json"}
    results: dict[int, dict[str, list[float]]] = {}
    try:
        for size in args.batch_sizes:
            bodies = [
                json.dumps(rows.iloc[i * size : (i + 1) * size].to_dict(orient="records")).encode()
                for i in range(max(1, min(64, len(rows) // size)))
            ]
            answers = {}
            for name, client in clients.items():  # also the warm-up
                replies = [
                    await client.post("/v1/score", content=b, headers=headers) for b in bodies
                ]
                if any(r.status_code != 200 for r in replies):
                    raise SystemExit(f"{name}: a request failed: {replies[0].text[:300]}")
                answers[name] = [r.json() for r in replies]
            if answers["baseline"] != answers["this tree"]:
                raise SystemExit(f"the answers differ at {size} flow(s) per request")
            times: dict[str, list[float]] = {name: [] for name in clients}
            for _ in range(args.repeats):
                for name, client in clients.items():
                    start = time.perf_counter()
                    for i in range(args.requests):
                        await client.post(
                            "/v1/score", content=bodies[i % len(bodies)], headers=headers
                        )
                    times[name].append((time.perf_counter() - start) / args.requests * 1000)
            results[size] = times
    finally:
        for client in clients.values():
            await client.aclose()
    return results


def _baseline_module(revision: str, folder: Path):
    """``service.py`` of ``revision``, imported as a sibling module of the package (its relative
    imports then resolve against this tree's package, which the service API has not changed)."""
    source = _git("show", f"{revision}:src/latent_sculpting/service.py")
    path = folder / "service_baseline.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("latent_sculpting._service_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout.strip()


if __name__ == "__main__":
    sys.exit(main())
