"""Speed and agreement of the ONNX export (:mod:`latent_sculpting.serve.export`) against native
scoring, as Markdown.

Fits ``LatentSculpting(**preset(PRESET), random_state=0)`` on the training rows of the zero-shot
protocol on the embedded sample (split seed 42; ``--cap N`` keeps at most N of them per class,
for a quick run), or loads ``--model``; exports it with
:func:`~latent_sculpting.serve.export.to_onnx`
and scores every row of the embedded sample (56,277 flows) with ``decision_function`` and with
an onnxruntime session. Prints the largest differences (score, each channel, p-value), the rows
whose score differs by more than 1e-4 and the verdicts that differ; then flows per second of
each at batches of 1 row (the first ``--single`` rows one at a time), 1,000 rows and 65,536 rows
(the sample repeated), on one and on two threads (``--threads``), native and onnxruntime round
robin so that load from elsewhere hits both alike (median of ``--repeats``), and the load
average before and after, since the machine may be shared: figures measured under load are
not to be published, only their ratios compared.

Usage::

    python benchmarks/speed/bench_onnx.py                          # the default preset (minutes)
    python benchmarks/speed/bench_onnx.py --cap 2000 --repeats 3   # a quick run
    python benchmarks/speed/bench_onnx.py --model model.sculpt     # any fitted model
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import datetime, timezone

import numpy as np
import onnxruntime as ort
import torch

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.data import load_cicids2017, zero_shot_splits
from latent_sculpting.io.table import cap_per_class
from latent_sculpting.serve.export import to_onnx
from latent_sculpting.threads import SCORING_THREADS_ENV, limit_threads

#: Rows per call of the timed batches.
BATCHES = (1, 1_000, 65_536)


def load_average() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def fitted_model(args: argparse.Namespace, table) -> tuple[LatentSculpting, str]:
    if args.model:
        return LatentSculpting.load(args.model), f"loaded {args.model}"
    train = table.subset(zero_shot_splits(table, seed=42).train.index)
    if args.cap:
        train = cap_per_class(train, args.cap, seed=0)
    y = (train.labels != "BENIGN").astype(int)
    started = time.perf_counter()
    model = LatentSculpting(**preset(args.preset), random_state=0)
    with limit_threads(max(args.threads)):
        model.fit(train.X, y, groups=train.labels, spec=table.spec)
    what = f"preset {args.preset!r} on {len(train.X):,} training rows"
    return model, f"{what}, fitted in {time.perf_counter() - started:.0f} s"


def agreement(model: LatentSculpting, session: ort.InferenceSession, X: np.ndarray) -> None:
    names = [o.name for o in session.get_outputs()]
    out = dict(zip(names, session.run(None, {"features": X}), strict=True))
    details = model.score_details(X)
    difference = np.abs(out["score"] - details["score"])
    verdicts = int(((details["score"] > model.threshold_) != out["is_attack"]).sum())
    p_difference = np.abs(out["p_value"] - model.p_values(X))
    print(
        f"Largest score difference {difference.max():.3g}; rows above 1e-4: "
        f"{int((difference > 1e-4).sum())} of {len(X):,}; verdicts that differ: {verdicts}; "
        f"p-values that differ: {int((p_difference > 1e-12).sum())} (a p-value steps at each "
        f"calibration score), largest {p_difference.max():.3g}.\n"
    )
    print("| channel | largest difference | rows identical |")
    print("|---|---:|---:|")
    for name in names:
        if name in details and name != "score":
            gap = np.abs(out[name] - details[name])
            print(f"| {name} | {gap.max():.3g} | {np.mean(gap == 0):.1%} |")
    print()


def rates(
    model: LatentSculpting, proto, X: np.ndarray, threads: int, repeats: int, single: int
) -> list[tuple[int, float, float]]:
    """(batch, native flows/s, onnxruntime flows/s) on ``threads`` threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options)
    os.environ[SCORING_THREADS_ENV] = str(threads)
    rows = {
        1: [X[i : i + 1] for i in range(single)],
        1_000: np.array_split(X[:20_000], 20),
        65_536: [np.resize(X, (65_536, X.shape[1]))],
    }
    out = []
    with limit_threads(threads):
        for batch in BATCHES:
            parts = rows[batch]
            n = sum(len(p) for p in parts)
            times = {"native": [], "onnx": []}
            for _ in range(max(repeats, 1)):
                for key, fn in (
                    ("native", model.decision_function),
                    ("onnx", lambda part: session.run(["score"], {"features": part})),
                ):
                    start = time.perf_counter()
                    for part in parts:
                        fn(part)
                    times[key].append(time.perf_counter() - start)
            out.append((batch, n / np.median(times["native"]), n / np.median(times["onnx"])))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="preset to fit (default: default)")
    parser.add_argument("--model", help="a fitted model file (skips the fit)")
    parser.add_argument("--cap", type=int, help="fit on at most this many rows per class")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (default 5)")
    parser.add_argument("--single", type=int, default=200, help="rows scored one at a time")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)"
    )
    args = parser.parse_args()

    table = load_cicids2017()
    print(f"# ONNX export: speed and agreement ({datetime.now(timezone.utc):%Y-%m-%d})\n")
    print(f"Load average (1, 5, 15 min) at the start: {load_average()}.\n")
    model, fitted = fitted_model(args, table)
    started = time.perf_counter()
    proto = to_onnx(model, channel_outputs=True)
    export_seconds = time.perf_counter() - started
    X = np.ascontiguousarray(table.X, dtype=np.float32)
    print(
        f"Model: {fitted}; graph {len(proto.SerializeToString()) / 1024:,.0f} KiB with "
        f"{len(proto.graph.node):,} nodes, written in {export_seconds:.2f} s; scored: the "
        f"embedded sample, {len(X):,} flows, onnxruntime on one thread.\n"
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    agreement(model, ort.InferenceSession(proto.SerializeToString(), options), X)

    print(
        "| threads | batch (rows) | native flows/s | onnxruntime flows/s | onnxruntime / native |"
    )
    print("|---:|---:|---:|---:|---:|")
    for threads in args.threads:
        for batch, native, onnx_rate in rates(model, proto, X, threads, args.repeats, args.single):
            print(
                f"| {threads} | {batch:,} | {native:,.0f} | {onnx_rate:,.0f} | "
                f"{onnx_rate / native:.2f} |"
            )
    print(
        f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}; load average (1, 5, 15 min) at the end {load_average()}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
