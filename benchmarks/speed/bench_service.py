"""Load test of ``sculpt serve`` with locust: requests/s, flows/s, p50/p99 latency, failures.

Starts the real service (``sculpt serve``, uvicorn) on 127.0.0.1 once per worker count, drives
``POST /v1/score`` with locust's headless runner (``benchmarks/speed/locustfile_service.py``, fast
HTTP users sending back to back) for a fixed time per cell, at 1, 64 and 1,024 real flows of the
embedded sample per request, as JSON and as CSV bodies, with explanations on and off
(``?explain=false``), answered as JSON records or, with ``--answers csv``, as CSV (``Accept:
text/csv``), and prints a Markdown table. Beside it, measured in the same run on the
same model and flows, the in-process rates it compares with: ``decision_function`` on 1,024-flow
batches (what a served request without explanations does, less parsing and answering), and the
service's own :class:`~latent_sculpting.serve.scoring.Scorer` with explanations (what a request with
them does), once before the first row and again right after each row of the largest requests
(the machine's speed drifts over minutes); and the ratio of the served rates at the largest
requests to the median of those measures, with the range the measures give. The server is
stopped at the end, on errors and on Ctrl-C (its whole process group).

Usage (needs the serve and bench extras)::

    python benchmarks/speed/bench_service.py                       # fast model on a sample slice
    python benchmarks/speed/bench_service.py --model model.sculpt --workers 1 2 --duration 30
    python benchmarks/speed/bench_service.py --duration 3 --users 4   # a quick check that it works
    python benchmarks/speed/bench_service.py --bodies csv --explain off --flows 1024
    python benchmarks/speed/bench_service.py --bodies csv --answers json csv --flows 1024
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from latent_sculpting.research import provenance

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile_service.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: train a fast one on the sample)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    parser.add_argument(
        "--flows", type=int, nargs="+", default=[1, 64, 1024], help="flows per request"
    )
    parser.add_argument(
        "--bodies", nargs="+", choices=("json", "csv"), default=["json", "csv"], help="body types"
    )
    parser.add_argument(
        "--explain", nargs="+", choices=("on", "off"), default=["on", "off"], help="explanations"
    )
    parser.add_argument(
        "--answers",
        nargs="+",
        choices=("json", "csv"),
        default=["json"],
        help="answer types asked for (csv: Accept: text/csv)",
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per cell")
    parser.add_argument("--users", type=int, default=8, help="concurrent locust users")
    args = parser.parse_args()
    if min(args.workers) < 1 or min(args.flows) < 1 or args.users < 1 or args.duration <= 0:
        parser.error("--workers, --flows, --users and --duration must be positive")

    import pandas as pd

    import latent_sculpting
    from latent_sculpting.data import sample_path

    rows = pd.read_parquet(sample_path() / "friday.parquet").sample(8192, random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = Path(args.model) if args.model else train_fast_model(folder / "bench.sculpt")
        in_process = _in_process_rate(model, rows)
        explained = _in_process_rate(model, rows, explain=True)
        bodies = {}
        for kind in args.bodies:
            for size in args.flows:
                bodies[kind, size] = folder / f"bodies-{kind}-{size}.json"
                chunks = [
                    rows.iloc[i * size : (i + 1) * size]
                    for i in range(max(1, min(32, len(rows) // size)))
                ]
                texts = [
                    json.dumps(c.to_dict(orient="records"))
                    if kind == "json"
                    else c.to_csv(index=False)
                    for c in chunks
                ]
                bodies[kind, size].write_text(json.dumps(texts))
        results = []
        for workers in args.workers:
            server = _server(model, workers)
            with server as url:
                for kind in args.bodies:
                    for answer in args.answers:
                        for explain in args.explain:
                            for size in args.flows:
                                prefix = folder / f"w{workers}-{kind}-{answer}-{explain}-f{size}"
                                cell = (bodies[kind, size], kind, answer, explain == "on")
                                stats = _locust(url, *cell, args, prefix, server.process.pid)
                                if size == max(args.flows):
                                    # The machine's speed drifts over a run of minutes: the
                                    # in-process rate is measured again after each such row
                                    # (the server idle), and ratios use the run's median.
                                    time.sleep(2)  # requests still in flight finish
                                    stats["in_process_after"] = _in_process_rate(
                                        model, rows, explain=explain == "on"
                                    )
                                results.append(
                                    (workers, f"{kind} / {answer}", explain, size, stats)
                                )

    commit = provenance.commit()
    print(f"### `sculpt serve` under locust ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; load "
        f"average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; Python "
        f"{platform.python_version()}, latent-sculpting {latent_sculpting.__version__}, commit "
        f"{commit}. Server and locust ({args.users} users, no wait) on the same "
        f"machine (loopback), {args.duration:g} s per row; real flows of the embedded sample "
        "(raw improved-release columns). CPU: the cores each side used over the row (CPU "
        "seconds / duration; locust's include its start-up). Last column, for the largest "
        "requests: the served rate over the median of the run's in-process rates of the same "
        "work (`decision_function` without explanations, the Scorer with them), measured "
        "before the first row and after each row of the largest requests.\n"
    )
    print(
        "| workers | body / answer | explanations | flows/request | requests/s | flows/s | p50 ms "
        "| p99 ms | failures | CPU server / locust | of in-process rate |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    measured = {
        explain: [base]
        + [
            s["in_process_after"]
            for _, _, e, _, s in results
            if e == explain and "in_process_after" in s
        ]
        for explain, base in (("off", in_process), ("on", explained))
    }
    median = {explain: float(np.median(rates)) for explain, rates in measured.items()}
    for workers, kind, explain, size, s in results:
        ratio = f"{s['rps'] * size / median[explain]:.2f}" if "in_process_after" in s else ""
        print(
            f"| {workers} | {kind} | {explain} | {size} | {s['rps']:.0f} | {s['rps'] * size:.0f} "
            f"| {s['p50']:.0f} | {s['p99']:.0f} | {s['failures']} of {s['requests']} "
            f"| {s['server_cpu']:.2f} / {s['locust_cpu']:.2f} | {ratio} |"
        )
    print(
        f"\nIn process, same model and flows, 1,024-flow batches, before the first row: "
        f"{in_process:.0f} flows/s (`decision_function`), {explained:.0f} flows/s (the Scorer "
        "with explanations)."
    )
    largest = max(args.flows)
    for explain, what in (("off", "decision_function"), ("on", "the Scorer")):
        served = [
            (s["rps"] * size, kind, workers)
            for workers, kind, e, size, s in results
            if size == largest and e == explain
        ]
        if served:
            best, kind, workers = max(served)
            rates = measured[explain]
            print(
                f"Best served rate at {largest} flows/request, explanations {explain}: "
                f"{best:.0f} flows/s ({kind} body / answer, {workers} worker(s)), "
                f"{best / median[explain]:.2f} of {what} in process (median of {len(rates)} "
                f"measures over the run, {median[explain]:.0f} flows/s; they ranged "
                f"{min(rates):.0f}-{max(rates):.0f}, so {best / max(rates):.2f}-"
                f"{best / min(rates):.2f})."
            )
    return 0


def train_fast_model(path: Path) -> Path:
    """A ``fast`` model on a slice of the embedded sample, for benchmarks that need one."""
    from latent_sculpting.cli import main as sculpt

    code = sculpt(
        ["train", "--preset", "fast", "--max-per-class", "300", "-o", str(path), "--quiet"]
    )
    if code != 0:
        raise SystemExit(f"training the benchmark model failed ({code})")
    return path


def _in_process_rate(
    model_path: Path, rows, batch: int = 1024, repeats: int = 9, explain: bool = False
) -> float:
    """Flows/s of ``decision_function`` on the encoded flows, or with ``explain`` of the
    service's Scorer (scores, p-values, explanations, drift counts), median of ``repeats``."""
    import pyarrow as pa

    from latent_sculpting import LatentSculpting
    from latent_sculpting.io.encoding import encode
    from latent_sculpting.io.flowspec import model_spec
    from latent_sculpting.serve.scoring import Scorer, drift_monitor

    model = LatentSculpting.load(model_path)
    batches = [
        encode(
            model_spec(model), pa.Table.from_pandas(rows.iloc[i : i + batch], preserve_index=False)
        )
        for i in range(0, len(rows) - batch + 1, batch)
    ]
    if explain:
        scorer = Scorer(model, drift=drift_monitor(model, window=10_000))
        run = lambda b: scorer.score_columns(b)  # noqa: E731
    else:
        run = lambda b: model.decision_function(b.X)  # noqa: E731
    run(batches[0])  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            run(b)
        rates.append(len(batches) * batch / (time.perf_counter() - start))
    return float(np.median(rates))


class _server:
    """``sculpt serve MODEL --workers N`` on a free loopback port, in its own process group so
    that stopping it stops its workers too; yields the base URL."""

    def __init__(self, model: Path, workers: int) -> None:
        self.command = [
            sys.executable,
            "-c",
            "import sys; from latent_sculpting.cli import main; sys.exit(main())",
            "serve",
            str(model),
            "--port",
            str(_free_port()),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ]
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> str:
        self.process = subprocess.Popen(self.command, start_new_session=True)
        url = f"http://127.0.0.1:{self.command[self.command.index('--port') + 1]}"
        try:
            _wait(url, self.process)
        except BaseException:
            self._stop()
            raise
        return url

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        group = os.getpgid(self.process.pid)
        os.killpg(group, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(group, signal.SIGKILL)
            self.process.wait()


def _locust(
    url: str,
    bodies: Path,
    kind: str,
    answer: str,
    explain: bool,
    args: argparse.Namespace,
    prefix: Path,
    server_pid: int,
) -> dict:
    """One headless locust run; the aggregated row of its CSV statistics, and the cores the
    server (all its processes) and locust used over it: with both on one machine, what locust
    takes the server does not get."""
    import httpx

    content_type = "application/json" if kind == "json" else "text/csv"
    accept = "application/json" if answer == "json" else "text/csv"
    path = "/v1/score" if explain else "/v1/score?explain=false"
    first = json.loads(bodies.read_text())[0]
    headers = {"Content-Type": content_type, "Accept": accept}
    for _ in range(3):  # warm-up, not measured: the first requests build caches
        response = httpx.post(f"{url}{path}", content=first, headers=headers, timeout=120)
        response.raise_for_status()
        if not response.headers["content-type"].startswith(accept):
            raise SystemExit(f"asked for {accept}, got {response.headers['content-type']}")
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
    command += ["-u", str(args.users), "-r", str(args.users), "-t", f"{args.duration:g}s"]
    command += ["--host", url, "--csv", str(prefix), "--only-summary", "--loglevel", "ERROR"]
    command += ["--stop-timeout", "30"]
    env = {
        **os.environ,
        "SCULPT_BENCH_BODIES": str(bodies),
        "SCULPT_BENCH_CONTENT_TYPE": content_type,
        "SCULPT_BENCH_ACCEPT": accept,
        "SCULPT_BENCH_PATH": path,
    }
    server_before = _cpu_seconds(server_pid)
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=args.duration + 120
    )
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # locust's, now it has ended
    locust_cpu = (children.ru_utime - children_before.ru_utime) + (
        children.ru_stime - children_before.ru_stime
    )
    server_cpu = _cpu_seconds(server_pid) - server_before
    stats_file = Path(f"{prefix}_stats.csv")
    if not stats_file.exists():
        raise SystemExit(f"locust wrote no statistics (exit {done.returncode}): {done.stderr}")
    with stats_file.open() as file:
        row = next(r for r in csv.DictReader(file) if r["Name"] == "Aggregated")
    return {
        "requests": int(row["Request Count"]),
        "failures": int(row["Failure Count"]),
        "rps": float(row["Requests/s"]),
        "p50": float(row["50%"]),
        "p99": float(row["99%"]),
        "server_cpu": server_cpu / args.duration,
        "locust_cpu": locust_cpu / args.duration,
    }


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and every process under it so far."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = process.cpu_times()
            total += times.user + times.system
    return total


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, server: subprocess.Popen, timeout: float = 180.0) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
