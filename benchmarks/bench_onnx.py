"""Speed and agreement of the ONNX export (:mod:`latent_sculpting.export`) against native
scoring, as Markdown.

Fits ``LatentSculpting(**preset(PRESET), random_state=0)`` on the training rows of the zero-shot
protocol on the embedded sample (split seed 42), or loads ``--model``; exports it with
:func:`~latent_sculpting.export.to_onnx`, and scores every row of the embedded sample (56,277
flows) with ``decision_function`` and with an onnxruntime session, both on ``--threads``
threads, round robin so that load from elsewhere hits both alike (median of ``--repeats``).
Batches: the whole sample at once, 1,000 rows and single rows (the first 200). Prints the
largest differences (score, p-value) and the rows whose score differs by more than 1e-4 (an
empirical p-value step, or float32 rounding in the tail: docs/export.md), the same for native
scoring of 2,000 random rows one at a time against the whole batch (how much native scoring
varies itself), rows per second of each, their ratio, and the load average, since the machine
may be shared.

Usage::

    python benchmarks/bench_onnx.py                       # default preset (fit ~1-2 min)
    python benchmarks/bench_onnx.py --model model.sculpt  # any fitted model
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
from latent_sculpting.export import to_onnx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="preset to fit (default: default)")
    parser.add_argument("--model", help="a fitted model file (skips the fit)")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (default 5)")
    parser.add_argument("--threads", type=int, default=1, help="threads of both (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    table = load_cicids2017()
    if args.model:
        model = LatentSculpting.load(args.model)
        fitted = f"loaded {args.model}"
    else:
        train = zero_shot_splits(table, seed=42).train
        started = time.perf_counter()
        model = LatentSculpting(**preset(args.preset), random_state=0)
        model.fit(train.X, train.y, groups=train.labels, spec=table.spec)
        fitted = f"preset {args.preset!r}, fitted in {time.perf_counter() - started:.0f} s"
    started = time.perf_counter()
    proto = to_onnx(model)
    export_seconds = time.perf_counter() - started
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(proto.SerializeToString(), options)

    X = np.ascontiguousarray(table.X, dtype=np.float32)
    score, p_value = session.run(["score", "p_value"], {"features": X})
    native = model.decision_function(X)
    difference = np.abs(score - native)
    p_difference = np.abs(p_value - model.p_values(X))
    # What native scoring itself varies by: single rows against the whole batch.
    pick = np.random.default_rng(0).choice(len(X), size=min(2000, len(X)), replace=False)
    single = np.concatenate([model.decision_function(X[i : i + 1]) for i in pick])
    self_difference = np.abs(single - native[pick])

    def onnx_scores(rows: np.ndarray) -> np.ndarray:
        return session.run(["score"], {"features": rows})[0]

    batches = [("whole sample", [X]), ("1,000 rows", np.array_split(X, len(X) // 1000))]
    batches.append(("single rows (200)", [X[i : i + 1] for i in range(200)]))
    print(f"# ONNX export: speed and agreement ({datetime.now(timezone.utc):%Y-%m-%d})\n")
    print(
        f"Model: {fitted}; graph {len(proto.SerializeToString()) / 1024:,.0f} KiB with "
        f"{len(proto.graph.node):,} nodes, written in {export_seconds:.2f} s; the embedded "
        f"sample, {len(X):,} flows.\n"
    )
    print(
        f"Largest score difference {difference.max():.3g}; rows above 1e-4: "
        f"{int((difference > 1e-4).sum())} ({(difference > 1e-4).mean():.3%}); largest p-value "
        f"difference {p_difference.max():.3g}; verdicts that differ: "
        f"{int(((score > model.threshold_) != (native > model.threshold_)).sum())}. Native "
        f"scoring of {len(pick):,} random rows one at a time against the whole batch: largest "
        f"difference {self_difference.max():.3g}, rows above 1e-4: "
        f"{int((self_difference > 1e-4).sum())} ({(self_difference > 1e-4).mean():.3%}).\n"
    )
    print("| batch | native rows/s | onnxruntime rows/s | onnxruntime / native |")
    print("|---|---:|---:|---:|")
    for name, parts in batches:
        rows = sum(len(p) for p in parts)
        times = {"native": [], "onnx": []}
        for _ in range(max(args.repeats, 1)):
            for key, fn in (("native", model.decision_function), ("onnx", onnx_scores)):
                start = time.perf_counter()
                for part in parts:
                    fn(part)
                times[key].append(time.perf_counter() - start)
        native_rate = rows / float(np.median(times["native"]))
        onnx_rate = rows / float(np.median(times["onnx"]))
        print(f"| {name} | {native_rate:,.0f} | {onnx_rate:,.0f} | {onnx_rate / native_rate:.2f} |")
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"\nMachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}, {args.threads} thread(s) each; load average (1, 5, "
        f"15 min) {load}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
