"""uvicorn's HTTP parser and event loop under the service: h11 + asyncio against httptools +
uvloop (what uvicorn takes when the ``serve`` extra installed them), on the same model.

Each configuration serves the model on a free loopback port in its own process; one client
sends single-flow requests back to back on one kept-alive connection, and the median time per
request is taken. Configurations alternate, ``--repeats`` times, so that a slower stretch of
the machine falls on both; the medians of the repeats and their ratio are printed. The client's
own time is in every figure (it is the same for both).

Usage::

    python benchmarks/speed/bench_service_servers.py --model model.sculpt
    python benchmarks/speed/bench_service_servers.py             # trains a fast model on the sample
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from latent_sculpting.research import provenance

HERE = Path(__file__).resolve().parent

CONFIGS = (("h11", "asyncio"), ("httptools", "uvloop"))

#: What each server process runs: the service on one port, with one parser and event loop.
SERVER = """
import sys, uvicorn
from latent_sculpting import LatentSculpting
from latent_sculpting.serve.service import create_app
app = create_app(LatentSculpting.load(sys.argv[1]))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), http=sys.argv[3], loop=sys.argv[4],
            log_level="warning")
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: train a fast one on the sample)")
    parser.add_argument("--requests", type=int, default=500, help="requests per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="alternations")
    args = parser.parse_args()
    if args.requests < 1 or args.repeats < 1:
        parser.error("--requests and --repeats must be positive")

    import pandas as pd
    from bench_service import train_fast_model  # this folder is on the path of a script

    import latent_sculpting
    from latent_sculpting.data import sample_path

    rows = pd.read_parquet(sample_path() / "friday.parquet").sample(64, random_state=0)
    bodies = [json.dumps(rows.iloc[i : i + 1].to_dict(orient="records")) for i in range(64)]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else train_fast_model(Path(tmp) / "bench.sculpt")
        medians: dict[tuple[str, str], list[float]] = {c: [] for c in CONFIGS}
        for _ in range(args.repeats):
            for config in CONFIGS:
                medians[config].append(_measure(model, config, bodies, args.requests))

    commit = provenance.commit()
    print(
        f"### uvicorn's parser and loop under the service "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; Python {platform.python_version()}, "
        f"latent-sculpting {latent_sculpting.__version__}, commit {commit}. One "
        f"client, one kept-alive connection, single-flow JSON requests (`?explain=false`), "
        f"{args.requests} per measurement, {args.repeats} alternations.\n"
    )
    print("| HTTP parser + event loop | ms per request (median of each repeat) | median |")
    print("|---|---|---:|")
    for (http, loop), values in medians.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"| {http} + {loop} | {shown} | {statistics.median(values):.2f} |")
    slow, fast = (statistics.median(medians[c]) for c in CONFIGS)
    print(f"\nhttptools + uvloop take {fast / slow:.2f} of the time of h11 + asyncio.")
    return 0


def _measure(model: Path, config: tuple[str, str], bodies: list[str], n: int) -> float:
    """Median ms per request of one server with ``config``, started and stopped here."""
    import httpx
    from bench_service import _free_port, _wait

    port = _free_port()
    command = [sys.executable, "-c", SERVER, str(model), str(port), *config]
    server = subprocess.Popen(command, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(url, server)
        headers = {"Content-Type": "application/json"}
        times = []
        with httpx.Client(base_url=url, headers=headers) as client:
            for i in range(n + 20):  # the first 20 warm up, not timed
                start = time.perf_counter()
                answer = client.post("/v1/score?explain=false", content=bodies[i % len(bodies)])
                elapsed = time.perf_counter() - start
                answer.raise_for_status()
                if i >= 20:
                    times.append(elapsed)
        return 1e3 * statistics.median(times)
    finally:
        os.killpg(os.getpgid(server.pid), signal.SIGTERM)
        server.wait()


if __name__ == "__main__":
    sys.exit(main())
