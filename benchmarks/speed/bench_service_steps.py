"""Where a service request's time goes, step by step, in process (no HTTP).

The steps of ``POST /v1/score`` as the service runs them: parsing the body into records
(``RecordParser.parse``: limits, JSON or CSV), encoding them with the model's input spec,
scoring (the service's Scorer: scores, p-values, explanations when on, the drift count),
building the answer's records and rendering them as JSON. Each is timed on real flows of the
embedded sample, request after request, and the medians are printed as a Markdown table, one
row per body type, explanations setting and request size.

Usage::

    python benchmarks/speed/bench_service_steps.py --model model.sculpt
    python benchmarks/speed/bench_service_steps.py --flows 1 1024 --bodies json csv --explain off
    python benchmarks/speed/bench_service_steps.py --bodies json json-checked  # quick parse
    python benchmarks/speed/bench_service_steps.py --bodies csv --answers json csv  # CSV answers
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from latent_sculpting.research import provenance

HERE = Path(__file__).resolve().parent
STEPS = ("parse", "encode", "score", "answer", "render")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model file (default: train a fast one on the sample)")
    parser.add_argument("--flows", type=int, nargs="+", default=[1, 1024], help="per request")
    parser.add_argument(
        "--bodies",
        nargs="+",
        choices=("json", "json-checked", "csv"),
        default=["json", "csv"],
        help="json-checked: JSON read by the checked parse alone (the quick orjson parse off)",
    )
    parser.add_argument("--explain", nargs="+", choices=("on", "off"), default=["on", "off"])
    parser.add_argument(
        "--answers",
        nargs="+",
        choices=("json", "csv"),
        default=["json"],
        help="answer types (csv: what Accept: text/csv gets)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch, BLAS and Arrow threads, as a `sculpt serve` worker's --threads (default 1)",
    )
    parser.add_argument("--flows-timed", type=int, default=8192, help="flows timed per row")
    args = parser.parse_args()
    if min(args.flows) < 1 or args.flows_timed < 1 or args.threads < 1:
        parser.error("--flows, --flows-timed and --threads must be positive")

    import pandas as pd
    from bench_service import train_fast_model  # this folder is on the path of a script

    import latent_sculpting
    from latent_sculpting import LatentSculpting
    from latent_sculpting.data import sample_path
    from latent_sculpting.io.flowspec import model_spec
    from latent_sculpting.serve import answers, records
    from latent_sculpting.serve.request import LIMITS
    from latent_sculpting.serve.scoring import Scorer, drift_monitor
    from latent_sculpting.threads import set_process_threads

    set_process_threads(args.threads)  # as each worker of the service does

    logging.getLogger("latent_sculpting").setLevel(logging.ERROR)  # drift verdicts
    rows = pd.read_parquet(sample_path() / "friday.parquet").sample(8192, random_state=0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else train_fast_model(Path(tmp) / "bench.sculpt")
        model = LatentSculpting.load(path)
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

    commit = provenance.commit()
    print(
        f"### A service request's steps in process "
        f"({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; load average at the end "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; Python {platform.python_version()}, "
        f"latent-sculpting {latent_sculpting.__version__}, commit {commit}. Real "
        "flows of the embedded sample (Friday's), median ms per request.\n"
    )
    header = "| body / answer | explanations | flows/request | requests | "
    print(header + " | ".join(STEPS) + " | sum |")
    print("|---|---|---:|---:|" + "---:|" * (len(STEPS) + 1))
    for kind, explain, size, requests, times in results:
        medians = [1e3 * statistics.median(times[step]) for step in STEPS]
        cells = " | ".join(f"{m:.2f}" for m in medians)
        print(f"| {kind} | {explain} | {size:,} | {requests} | {cells} | {sum(medians):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
