"""The HTTP scoring service's speed, one mode per question, each printing a Markdown table.

- ``load``: ``sculpt serve`` under locust: requests/s, flows/s, p50/p99 latency, failures. Starts
  the real service (``sculpt serve``, uvicorn) on 127.0.0.1 once per worker count, drives
  ``POST /v1/score`` with locust's headless runner (``benchmarks/speed/locustfile_service.py``,
  fast HTTP users sending back to back) for a fixed time per cell, at 1, 64 and 1,024 real flows
  of the embedded sample per request, as JSON and as CSV bodies, with explanations on and off
  (``?explain=false``), answered as JSON records or, with ``--answers csv``, as CSV (``Accept:
  text/csv``). Beside it, measured in the same run on the same model and flows, the in-process
  rates it compares with: ``decision_function`` on 1,024-flow batches (what a served request
  without explanations does, less parsing and answering), and the service's own
  :class:`~latent_sculpting.serve.scoring.Scorer` with explanations (what a request with them
  does), once before the first row and again right after each row of the largest requests (the
  machine's speed drifts over minutes); and the ratio of the served rates at the largest
  requests to the median of those measures, with the range the measures give. The server is
  stopped at the end, on errors and on Ctrl-C (its whole process group).
- ``steps``: where a request's time goes, step by step, in process (no HTTP): parsing the body
  into records (``RecordParser.parse``: limits, JSON or CSV), encoding them with the model's
  input spec, scoring (the Scorer: scores, p-values, explanations when on, the drift count),
  building the answer and rendering it. Each is timed on real flows, request after request;
  medians, one row per body type, answer type, explanations setting and request size.
- ``overhead``: the service's own time per request (reading and checking the body, the input
  spec, the scorer, explanations, the drift update, the JSON answer), this working tree against
  a git revision, on the same model and flows. Each tree's app runs in a process of its own
  (the revision's ``src`` from ``git archive``), driven through its ASGI interface by httpx (no
  sockets, no uvicorn); repeats alternate between the two and medians are reported, so the ratio
  holds on a busy machine even when the absolute times do not. The answers of both are compared
  first (they must be identical). The model file must load in both trees.
- ``servers``: uvicorn's HTTP parser and event loop under the service: h11 + asyncio against
  httptools + uvloop (what uvicorn takes when the ``serve`` extra installed them). Each serves
  the model on a free loopback port in its own process; one client sends single-flow requests
  back to back on one kept-alive connection, and the median time per request is taken.
  Configurations alternate, ``--repeats`` times; the medians of the repeats and their ratio are
  printed. The client's own time is in every figure (it is the same for both).

Every mode takes ``--model`` (default: a ``fast`` model trained here on a slice of the embedded
sample) and real flows of the embedded sample (raw improved-release columns).

Usage (needs the serve extra; ``load`` also the bench extra, locust)::

    python benchmarks/speed/bench_service.py load                     # fast model, sample slice
    python benchmarks/speed/bench_service.py load --model model.sculpt --workers 1 2 --duration 30
    python benchmarks/speed/bench_service.py load --duration 3 --users 4  # a quick check
    python benchmarks/speed/bench_service.py load --bodies csv --explain off --flows 1024
    python benchmarks/speed/bench_service.py load --bodies csv --answers json csv --flows 1024
    python benchmarks/speed/bench_service.py steps --model model.sculpt --flows 1 1024
    python benchmarks/speed/bench_service.py steps --bodies json json-checked  # the quick parse
    python benchmarks/speed/bench_service.py steps --bodies csv --answers json csv
    python benchmarks/speed/bench_service.py overhead --baseline main --model model.sculpt
    python benchmarks/speed/bench_service.py servers --model model.sculpt
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import itertools
import json
import logging
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from latent_sculpting.research import provenance

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LOCUSTFILE = HERE / "locustfile_service.py"
STEPS = ("parse", "encode", "score", "answer", "render")
CONFIGS = (("h11", "asyncio"), ("httptools", "uvloop"))

#: What each server process of ``servers`` runs: the service on one port, with one parser and
#: event loop.
SERVER = """
import sys, uvicorn
from latent_sculpting import LatentSculpting
from latent_sculpting.serve.service import create_app
app = create_app(LatentSculpting.load(sys.argv[1]))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), http=sys.argv[3], loop=sys.argv[4],
            log_level="warning")
"""

#: What each tree's process of ``overhead`` runs: its app behind httpx's ASGI transport, asked
#: on stdin for the digest of its answers to one size's bodies, or the mean ms per request over
#: N requests; each answer is one line starting with RESULT.
OVERHEAD_WORKER = """
import asyncio, hashlib, json, logging, sys, time
import httpx
from latent_sculpting import LatentSculpting
try:
    from latent_sculpting.serve.service import create_app
except ImportError:  # a revision from before the serve package
    from latent_sculpting.service import create_app
logging.getLogger("latent_sculpting").setLevel(logging.ERROR)
app = create_app(LatentSculpting.load(sys.argv[1]))
with open(sys.argv[2]) as file:
    bodies = {int(k): [b.encode() for b in v] for k, v in json.load(file).items()}
headers = {"Content-Type": "application/json"}

async def serve():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        for line in sys.stdin:
            command, size, n = line.split()
            sent = bodies[int(size)]
            if command == "answers":
                replies = [await client.post("/v1/score", content=b, headers=headers) for b in sent]
                bad = [r for r in replies if r.status_code != 200]
                if bad:
                    result = "failed " + bad[0].text[:300].replace(chr(10), " ")
                else:
                    text = json.dumps([r.json() for r in replies], sort_keys=True)
                    result = hashlib.sha256(text.encode()).hexdigest()
            else:
                start = time.perf_counter()
                for i in range(int(n)):
                    await client.post("/v1/score", content=sent[i % len(sent)], headers=headers)
                result = str((time.perf_counter() - start) / int(n) * 1000)
            print("RESULT", result, flush=True)

asyncio.run(serve())
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes = parser.add_subparsers(dest="mode", required=True)
    load = modes.add_parser("load", help="sculpt serve under locust")
    load.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    load.add_argument(
        "--flows", type=int, nargs="+", default=[1, 64, 1024], help="flows per request"
    )
    load.add_argument(
        "--bodies", nargs="+", choices=("json", "csv"), default=["json", "csv"], help="body types"
    )
    load.add_argument(
        "--explain", nargs="+", choices=("on", "off"), default=["on", "off"], help="explanations"
    )
    load.add_argument(
        "--answers",
        nargs="+",
        choices=("json", "csv"),
        default=["json"],
        help="answer types asked for (csv: Accept: text/csv)",
    )
    load.add_argument("--duration", type=float, default=30.0, help="seconds per cell")
    load.add_argument("--users", type=int, default=8, help="concurrent locust users")
    steps = modes.add_parser("steps", help="a request's steps in process")
    steps.add_argument("--flows", type=int, nargs="+", default=[1, 1024], help="per request")
    steps.add_argument(
        "--bodies",
        nargs="+",
        choices=("json", "json-checked", "csv"),
        default=["json", "csv"],
        help="json-checked: JSON read by the checked parse alone (the quick orjson parse off)",
    )
    steps.add_argument("--explain", nargs="+", choices=("on", "off"), default=["on", "off"])
    steps.add_argument(
        "--answers",
        nargs="+",
        choices=("json", "csv"),
        default=["json"],
        help="answer types (csv: what Accept: text/csv gets)",
    )
    steps.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch, BLAS and Arrow threads, as a `sculpt serve` worker's --threads (default 1)",
    )
    steps.add_argument("--flows-timed", type=int, default=8192, help="flows timed per row")
    overhead = modes.add_parser("overhead", help="this tree's service against a git revision's")
    overhead.add_argument("--baseline", default="main", help="git revision to compare with")
    overhead.add_argument("--requests", type=int, default=200, help="requests per repeat")
    overhead.add_argument("--repeats", type=int, default=5, help="alternated repeats")
    overhead.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 64], help="flows per request"
    )
    servers = modes.add_parser("servers", help="h11 + asyncio against httptools + uvloop")
    servers.add_argument("--requests", type=int, default=500, help="requests per measurement")
    servers.add_argument("--repeats", type=int, default=3, help="alternations")
    for mode in (load, steps, overhead, servers):
        mode.add_argument("--model", help="model file (default: train a fast one on the sample)")
    args = parser.parse_args()
    positive = {
        "load": ("workers", "flows", "users", "duration"),
        "steps": ("flows", "flows_timed", "threads"),
        "overhead": ("requests", "repeats", "batch_sizes"),
        "servers": ("requests", "repeats"),
    }[args.mode]
    values = [getattr(args, name) for name in positive]
    if min(min(v) if isinstance(v, list) else v for v in values) <= 0:
        parser.error(
            " and ".join(f"--{n.replace('_', '-')}" for n in positive) + " must be positive"
        )
    logging.getLogger("latent_sculpting").setLevel(logging.ERROR)  # drift verdicts as they change
    run = {"load": run_load, "steps": run_steps, "overhead": run_overhead, "servers": run_servers}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = Path(args.model) if args.model else train_fast_model(folder / "bench.sculpt")
        return run[args.mode](args, model, folder)


def train_fast_model(path: Path) -> Path:
    """A ``fast`` model on a slice of the embedded sample, for benchmarks that need one."""
    from latent_sculpting.cli import main as sculpt

    code = sculpt(
        ["train", "--preset", "fast", "--max-per-class", "300", "-o", str(path), "--quiet"]
    )
    if code != 0:
        raise SystemExit(f"training the benchmark model failed ({code})")
    return path


def sample_rows(n: int):
    """``n`` random flows of the embedded sample's Friday (seed 0), raw columns."""
    import pandas as pd

    from latent_sculpting.data import sample_path

    return pd.read_parquet(sample_path() / "friday.parquet").sample(n, random_state=0)


def machine() -> str:
    """The machine, its load now, and the versions measured: the first sentence of a table."""
    import latent_sculpting

    return (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; load "
        f"average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}; Python "
        f"{platform.python_version()}, latent-sculpting {latent_sculpting.__version__}, commit "
        f"{provenance.commit()}."
    )


# ---------------------------------------------------------------------------------------------
# load


def run_load(args: argparse.Namespace, model: Path, folder: Path) -> int:
    rows = sample_rows(8192)
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
                json.dumps(c.to_dict(orient="records")) if kind == "json" else c.to_csv(index=False)
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
                            results.append((workers, f"{kind} / {answer}", explain, size, stats))

    print(f"### `sculpt serve` under locust ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n")
    print(
        f"{machine()} Server and locust ({args.users} users, no wait) on the same "
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


# ---------------------------------------------------------------------------------------------
# steps


def run_steps(args: argparse.Namespace, model_path: Path, folder: Path) -> int:
    from latent_sculpting import LatentSculpting
    from latent_sculpting.io.flowspec import model_spec
    from latent_sculpting.serve import answers, records
    from latent_sculpting.serve.request import LIMITS
    from latent_sculpting.serve.scoring import Scorer, drift_monitor
    from latent_sculpting.threads import set_process_threads

    set_process_threads(args.threads)  # as each worker of the service does
    rows = sample_rows(8192)
    model = LatentSculpting.load(model_path)
    quick = records.RecordParser(model_spec(model), LIMITS)
    checked = records.RecordParser(model_spec(model), LIMITS)
    checked._quick_json = lambda body: records._ABSENT  # as the service parsed JSON before
    scorer = Scorer(model, drift=drift_monitor(model, window=10_000))
    results = []
    build = {"json": answers.json_records, "csv": lambda scored: scored.table()}
    render = {"json": answers.JsonAnswer, "csv": answers.CsvAnswer}
    for kind, answer_kind in itertools.product(args.bodies, args.answers):
        parser_ = checked if kind == "json-checked" else quick
        content_type = "text/csv" if kind == "csv" else "application/json"
        for explain in args.explain:
            for size in args.flows:
                chunks = [rows.iloc[i : i + size] for i in range(0, len(rows) - size + 1, size)]
                bodies = [
                    c.to_csv(index=False).encode()
                    if kind == "csv"
                    else json.dumps(c.to_dict(orient="records")).encode()
                    for c in chunks[:32]
                ]
                times: dict[str, list[float]] = {step: [] for step in STEPS}
                requests = max(20, args.flows_timed // size)
                for i in range(requests + 5):  # the first 5 warm up, not timed
                    clock = [time.perf_counter()]
                    parsed = parser_.parse(bodies[i % len(bodies)], content_type)
                    clock.append(time.perf_counter())
                    batch = parser_.encode(parsed)
                    clock.append(time.perf_counter())
                    scored = scorer.score_columns(batch, explain=explain == "on")
                    clock.append(time.perf_counter())
                    answer = build[answer_kind](scored)
                    clock.append(time.perf_counter())
                    render[answer_kind](content=answer)
                    clock.append(time.perf_counter())
                    if i >= 5:
                        for step, a, b in zip(STEPS, clock, clock[1:], strict=False):
                            times[step].append(b - a)
                results.append((f"{kind} / {answer_kind}", explain, size, requests, times))

    print(
        f"### A service request's steps in process "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
        f"{machine()} Real flows of the embedded sample (Friday's), median ms per request, "
        f"{args.threads} thread(s).\n"
    )
    header = "| body / answer | explanations | flows/request | requests | "
    print(header + " | ".join(STEPS) + " | sum |")
    print("|---|---|---:|---:|" + "---:|" * (len(STEPS) + 1))
    for kind, explain, size, requests, times in results:
        medians = [1e3 * statistics.median(times[step]) for step in STEPS]
        cells = " | ".join(f"{m:.2f}" for m in medians)
        print(f"| {kind} | {explain} | {size:,} | {requests} | {cells} | {sum(medians):.2f} |")
    return 0


# ---------------------------------------------------------------------------------------------
# overhead


def run_overhead(args: argparse.Namespace, model: Path, folder: Path) -> int:
    rows = sample_rows(4096)
    bodies = {
        size: [
            json.dumps(rows.iloc[i * size : (i + 1) * size].to_dict(orient="records"))
            for i in range(max(1, min(64, len(rows) // size)))
        ]
        for size in args.batch_sizes
    }
    (folder / "bodies.json").write_text(json.dumps(bodies))
    trees = {"baseline": _checkout(args.baseline, folder / "baseline"), "this tree": REPO / "src"}
    results: dict[int, dict[str, list[float]]] = {}
    with contextlib.ExitStack() as stack:
        workers = {
            name: stack.enter_context(_TreeWorker(src, model, folder / "bodies.json"))
            for name, src in trees.items()
        }
        for size in args.batch_sizes:
            answers = {name: worker.ask("answers", size) for name, worker in workers.items()}
            for name, answer in answers.items():  # also the warm-up
                if answer.startswith("failed"):
                    raise SystemExit(f"{name}: a request {answer}")
            if answers["baseline"] != answers["this tree"]:
                raise SystemExit(f"the answers differ at {size} flow(s) per request")
            times: dict[str, list[float]] = {name: [] for name in workers}
            for _ in range(args.repeats):
                for name, worker in workers.items():
                    times[name].append(float(worker.ask("time", size, args.requests)))
            results[size] = times

    print(f"### Service overhead in process ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n")
    print(
        f"{machine()} This tree (with any uncommitted changes) against {args.baseline}, each in "
        f"a process of its own; {args.repeats} alternated repeats of {args.requests} sequential "
        "requests, medians; real flows of the embedded sample; answers identical.\n"
    )
    print("| flows/request | baseline ms/request | this tree ms/request | speed-up |")
    print("|---:|---:|---:|---:|")
    for size, times in results.items():
        before, after = np.median(times["baseline"]), np.median(times["this tree"])
        print(f"| {size} | {before:.2f} | {after:.2f} | {before / after:.2f}x |")
    return 0


def _checkout(revision: str, folder: Path) -> Path:
    """The ``src`` folder of ``revision``, extracted under ``folder`` (``git archive``)."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", revision, "src"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return folder / "src"


class _TreeWorker:
    """A process serving one tree's app (:data:`OVERHEAD_WORKER`), asked line by line."""

    def __init__(self, src: Path, model: Path, bodies: Path) -> None:
        self.command = [sys.executable, "-c", OVERHEAD_WORKER, str(model), str(bodies)]
        self.env = {**os.environ, "PYTHONPATH": str(src)}
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> _TreeWorker:
        self.process = subprocess.Popen(
            self.command, env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        return self

    def ask(self, command: str, size: int, n: int = 0) -> str:
        assert self.process is not None and self.process.stdin and self.process.stdout
        self.process.stdin.write(f"{command} {size} {n}\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith("RESULT "):
                return line.removeprefix("RESULT ").strip()
        raise SystemExit(f"the worker of {self.env['PYTHONPATH']} exited (see its errors above)")

    def __exit__(self, *exc: object) -> None:
        if self.process is None:
            return
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# ---------------------------------------------------------------------------------------------
# servers


def run_servers(args: argparse.Namespace, model: Path, folder: Path) -> int:
    rows = sample_rows(64)
    bodies = [json.dumps(rows.iloc[i : i + 1].to_dict(orient="records")) for i in range(64)]
    medians: dict[tuple[str, str], list[float]] = {c: [] for c in CONFIGS}
    for _ in range(args.repeats):
        for config in CONFIGS:
            medians[config].append(_served_ms(model, config, bodies, args.requests))

    print(
        f"### uvicorn's parser and loop under the service "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
        f"{machine()} One client, one kept-alive connection, single-flow JSON requests "
        "(`?explain=false`), "
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


def _served_ms(model: Path, config: tuple[str, str], bodies: list[str], n: int) -> float:
    """Median ms per request of one server with ``config``, started and stopped here."""
    import httpx

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
