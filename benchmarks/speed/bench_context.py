"""Speed and memory of the context stage on SYNTHETIC time-sorted flow streams, and its cost
beside `sculpt score`.

Each scenario runs in a fresh process (so its peak memory is its own) on one thread: a
SYNTHETIC stream of ``--flows`` flows over one hour, start times sorted, as a Zeek conn.log
table (IPv4 addresses as text, as a reader gives them), featurised by
:class:`latent_sculpting.io.context.ContextStage` in ``--batch``-row tables (``sculpt score``'s
default batch):

* ``1M sources``: every flow from its own source host (the worst case for memory: every flow
  adds a source, a host pair, a service and a source port to the tables; the default budget
  of 1,000,000 entities per table is not reached);
* ``100 sources``: 100 source hosts, to 10,000 destination hosts, ports mostly common ones.

Printed per scenario: flows/s (wall clock and CPU time of the process), the peak resident
memory of the process (``ru_maxrss``) and before the stream was built, the bytes the state
holds, and the entities tracked.

With ``--score-model MODEL`` (a model trained on Zeek conn.logs, e.g. `sculpt train --data
../shared/data/iot23_zeek --format zeek -o m.sculpt`), it also writes a SYNTHETIC 1 M-flow
conn.log (Parquet: the ``1M sources`` stream's times and hosts on IoT-23 records resampled)
and times, one after the other: `sculpt score MODEL FILE --threads 1` (the whole command:
reading, scoring, explanations, drift, writing) and the context stage on the same file
(reading excluded: scoring pays for it already). Context may cost at most half of the scoring
time, so that scoring with it keeps at least 2/3 of today's rate.

A third stream, ``capture 34 looped``, is scored too: IoT-23's capture 34 (the models'
training capture) repeated to ``--flows`` rows with its times shifted, so that both models
meet traffic they learned and flag about the same share (on the two SYNTHETIC streams the
context model flags nearly every flow, which makes explanations, written per flagged flow,
the larger part of its time). ``--streams`` picks the streams, ``--no-stage`` skips the stage
alone.

With ``--context-model MODEL`` as well (the same training data and preset with ``--context
on``), both whole commands are timed on the same file, one after the other, with and without
explanations: the ratio of the two rates is the cost of context inside `sculpt score` (the
wider model's extra columns included).

The machine, load average before and after, date and commit are printed with the figures; on
a shared machine figures are comparable only within one run.

Usage::

    python benchmarks/speed/bench_context.py [--flows 1000000] [--batch 65536]
        [--score-model M [--context-model MC]]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from latent_sculpting.research.provenance import commit  # noqa: E402

SCENARIOS = ("1M sources", "100 sources")
#: A third stream for `sculpt score` only: real records looped (:func:`looped_capture`).
LOOPED = "capture 34 looped"
CAPTURE = Path("../shared/data/iot23_zeek/CTU-Malware-Capture-34-1-labeled.csv")
ONE_THREAD = {
    "NUMBA_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def machine() -> str:
    cpu = platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def synthetic_stream(n: int, scenario: str, seed: int = 0):
    """A SYNTHETIC Zeek-shaped table of ``n`` flows over one hour, sorted by start time."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    ts = 1.55e9 + np.sort(rng.uniform(0.0, 3600.0, n))
    if scenario == "1M sources":
        ids = rng.permutation(n)
    else:
        ids = rng.integers(0, 100, n)
    dst = rng.integers(0, 10_000, n)
    common = np.array([80, 443, 53, 22, 23, 123, 8080, 25, 3389, 445])
    ports = np.where(rng.random(n) < 0.8, common[rng.integers(0, 10, n)], rng.integers(1, 65536, n))
    proto = np.where(ports == 53, "udp", "tcp")

    def ipv4(prefix: int, values):
        return pa.array(
            [f"{prefix}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}" for v in values.tolist()]
        )

    return pa.table(
        {
            "ts": ts,
            "id.orig_h": ipv4(10, ids),
            "id.orig_p": rng.integers(1024, 65536, n),
            "id.resp_h": ipv4(172, dst),
            "id.resp_p": ports,
            "proto": pa.array(proto),
            "conn_state": pa.array(np.where(rng.random(n) < 0.1, "S0", "SF")),
            "orig_ip_bytes": rng.lognormal(6, 2, n).astype(np.int64),
            "resp_ip_bytes": rng.lognormal(7, 2.5, n).astype(np.int64),
            "orig_pkts": rng.integers(1, 50, n),
            "resp_pkts": rng.integers(0, 50, n),
        }
    )


def scenario(name: str, flows: int, batch: int) -> dict:
    """One scenario, in this process: featurise the stream batch by batch."""
    import numpy as np

    from latent_sculpting.io.context import ContextStage
    from latent_sculpting.io.formats import get_format

    zeek = get_format("zeek")
    warm = synthetic_stream(100, name, seed=1)
    ContextStage().fit_transform(warm, zeek)  # numba's compiled code is loaded here
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    table = synthetic_stream(flows, name)
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stage = ContextStage()
    wall, cpu = time.perf_counter(), time.process_time()
    checksum = 0.0
    for start in range(0, flows, batch):
        part = table.slice(start, batch)
        out = stage.fit_transform(part, zeek) if start == 0 else stage.transform(part, zeek)
        checksum += float(np.asarray(out.column(0)).sum())
        del out
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "scenario": name,
        "flows": flows,
        "batch": batch,
        "wall_s": wall,
        "cpu_s": cpu,
        "flows_per_s_wall": flows / wall,
        "flows_per_s_cpu": flows / cpu,
        "rss_before_mib": before / 1024,
        "rss_with_stream_mib": built / 1024,
        "rss_peak_mib": peak / 1024,
        "state_mib": stage.state_.nbytes() / 2**20,
        "entities": stage.state_.entities(),
        "checksum": checksum,
    }


def looped_capture(flows: int):
    """IoT-23's capture 34 (the models' training capture, 23,145 flows over 24 h) repeated
    until ``flows`` rows, each repeat's start times shifted past the one before, addresses
    kept: SYNTHETIC as a stream, real flow by flow. Both models meet the traffic they learned,
    so they flag about the same share and the ratio measures context, not what the two models
    make of traffic unlike it."""
    import numpy as np
    import pyarrow as pa

    from latent_sculpting.io.table import read_records

    real, _, _, _ = read_records(CAPTURE, format="zeek")
    ts = real.column("ts").to_numpy()
    order = np.argsort(ts, kind="stable")
    real, ts = real.take(pa.array(order)), ts[order]
    span = float(ts[-1] - ts[0]) + 1.0
    field = real.schema.field("ts")
    index = real.column_names.index("ts")
    parts = [
        real.set_column(index, field, pa.array(ts + i * span).cast(field.type))
        for i in range(-(-flows // real.num_rows))
    ]
    return pa.concat_tables(parts).slice(0, flows)


def write_scoring_file(path: Path, flows: int, scenario_name: str) -> None:
    """A stream's times and hosts on real IoT-23 records (resampled), so that everything else
    the model reads is as real as it can be; for :data:`LOOPED`, :func:`looped_capture`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from latent_sculpting.io.table import read_records

    if scenario_name == LOOPED:
        pq.write_table(looped_capture(flows), path)
        return
    real, _, _, _ = read_records(Path("../shared/data/iot23_zeek"), format="zeek")
    stream = synthetic_stream(flows, scenario_name)
    rows = np.random.default_rng(2).integers(0, real.num_rows, flows)
    sampled = real.take(pa.array(rows))
    for name in ("ts", "id.orig_h", "id.resp_h"):
        index = sampled.column_names.index(name)
        column = stream.column(name).cast(sampled.schema.field(name).type)
        sampled = sampled.set_column(index, name, column)
    pq.write_table(sampled, path)


def context_on_file(path: Path, batch: int) -> dict:
    from latent_sculpting.io.context import ContextStage
    from latent_sculpting.io.formats import get_format
    from latent_sculpting.io.table import read_records

    zeek = get_format("zeek")
    ContextStage().fit_transform(synthetic_stream(100, "1M sources", seed=1), zeek)
    table, _, _, _ = read_records(path, format="zeek")
    stage = ContextStage()
    wall = time.perf_counter()
    for start in range(0, table.num_rows, batch):
        part = table.slice(start, batch)
        stage.fit_transform(part, zeek) if start == 0 else stage.transform(part, zeek)
    return {"wall_s": time.perf_counter() - wall, "flows": table.num_rows}


def child(args: argparse.Namespace) -> None:
    if args.child == "context-on-file":
        result = context_on_file(Path(args.file), args.batch)
    elif args.child == "write-file":
        write_scoring_file(Path(args.file), args.flows, args.stream)
        result = {}
    else:
        result = scenario(args.child, args.flows, args.batch)
    print(json.dumps(result))


def in_child(*extra: str, args: argparse.Namespace) -> dict:
    env = {**os.environ, **ONE_THREAD}
    command = [sys.executable, __file__, "--flows", str(args.flows), "--batch", str(args.batch)]
    done = subprocess.run([*command, *extra], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.exit(f"child {extra} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_scoring(stream: str, args: argparse.Namespace) -> None:
    """`sculpt score` with and without context on one SYNTHETIC stream's file."""
    import numpy as np
    import pyarrow.parquet as pq

    models = {"without context": args.score_model}
    if args.context_model:
        models["with context"] = args.context_model
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "SYNTHETIC-1M-conn.parquet"
        in_child("--child", "write-file", "--file", str(data), "--stream", stream, args=args)
        out = Path(folder) / "scored.parquet"
        sculpt = Path(sys.executable).with_name("sculpt")
        seconds, flagged = {}, {}
        for explain in ([], ["--no-explain"]):
            for label, model in models.items():
                command = [str(sculpt), "score", model, str(data), "-o", str(out)]
                command += ["--threads", "1", "--quiet", "--batch-rows", str(args.batch)]
                wall = time.perf_counter()
                subprocess.run(
                    command + explain,
                    env={**os.environ, **ONE_THREAD},
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                seconds[label, " ".join(["sculpt score", *explain])] = time.perf_counter() - wall
                # Explanations are written for flagged flows only: their share sets the cost.
                flagged[label] = float(np.mean(pq.read_table(out, columns=["is_attack"])[0]))
        ctx = in_child("--child", "context-on-file", "--file", str(data), args=args)
    n = ctx["flows"]
    what = (
        "IoT-23 capture 34's records looped (times shifted)"
        if stream == LOOPED
        else f"hosts and times of the {stream} stream"
    )
    print(f"\n{n:,} SYNTHETIC conn.log flows, {what}, one thread:")
    print(f"- the context stage alone on the table (reading excluded): {ctx['wall_s']:.1f} s")
    for (label, name), score_s in seconds.items():
        print(
            f"- `{name}`, model {label} ({Path(models[label]).name}, flags "
            f"{100 * flagged[label]:.1f} %): {score_s:.1f} s, {n / score_s:,.0f} flows/s"
        )
    for name in sorted({name for _, name in seconds}):
        if ("with context", name) in seconds:
            ratio = seconds["without context", name] / seconds["with context", name]
            print(f"- `{name}`: with context {ratio:.2f} of the rate without (target >= 0.67)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=65_536)
    parser.add_argument("--score-model", help="a model trained on Zeek conn.logs")
    parser.add_argument(
        "--context-model", help="the same model trained with --context on (needs --score-model)"
    )
    parser.add_argument(
        "--streams",
        nargs="+",
        choices=[*SCENARIOS, LOOPED],
        default=[*SCENARIOS, LOOPED],
        help="the streams `sculpt score` is timed on (with --score-model)",
    )
    parser.add_argument(
        "--stage",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the context stage alone on the SYNTHETIC streams",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--stream", default="1M sources", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# Context stage on SYNTHETIC streams ({started}, commit {commit()})")
    print(f"machine: {machine()}; load average before: {load_average()}")
    print(f"{args.flows:,} flows per stream, {args.batch:,}-row tables, one thread\n")
    if args.stage:
        print(
            "| stream | flows/s (wall) | flows/s (CPU) | peak RSS MiB | RSS before MiB "
            "| state MiB |"
        )
        print("|---|---:|---:|---:|---:|---:|")
    for name in SCENARIOS if args.stage else ():
        r = in_child("--child", name, args=args)
        print(
            f"| {name} | {r['flows_per_s_wall']:,.0f} | {r['flows_per_s_cpu']:,.0f} | "
            f"{r['rss_peak_mib']:,.0f} | {r['rss_with_stream_mib']:,.0f} | "
            f"{r['state_mib']:,.0f} |"
        )
        print(f"<!-- {name}: entities {r['entities']} -->")
    if args.score_model:
        for stream in args.streams:
            time_scoring(stream, args)
    print(f"\nload average after: {load_average()}")


if __name__ == "__main__":
    main()
