"""How long ``sculpt adapt`` takes: the flow fine-tuned (the default) and fitted afresh.

Adapts a fitted model to benign flows of the embedded sample (real flows labelled benign, of
every day; N of them drawn with a seed, read with the model's input spec as ``sculpt adapt``
reads files; for a timing it does not matter that the model saw some of the days) with one
thread, as the command runs, and times ``model.adapt`` alone (the model is loaded again before
each repeat, not timed). Prints a Markdown table: flows given, how the flow was refit, the
epochs it ran, median and fastest seconds over the repeats, with the machine, the load
average and the commit.

Usage::

    python benchmarks/speed/bench_adapt.py --model model.sculpt
    python benchmarks/speed/bench_adapt.py --model model.sculpt --rows 1000 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from latent_sculpting.research import provenance


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model file written by sculpt train")
    parser.add_argument("--rows", type=int, nargs="+", default=[1000, 5000], help="flows given")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if min(args.rows) < 1 or args.repeats < 1:
        parser.error("--rows and --repeats must be positive")

    import pandas as pd

    import latent_sculpting
    from latent_sculpting import LatentSculpting
    from latent_sculpting.data import sample_path
    from latent_sculpting.io.flowspec import model_spec
    from latent_sculpting.threads import limit_threads
    from latent_sculpting.train import read_benign_flows

    days = pd.concat([pd.read_parquet(p) for p in sorted(sample_path().glob("*.parquet"))])
    benign = days[days["Label"] == "BENIGN"]
    if max(args.rows) > len(benign):
        parser.error(f"--rows at most {len(benign):,} (the sample's benign flows)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            path = Path(tmp) / f"benign-{n}.parquet"
            benign.sample(n, random_state=0).to_parquet(path)
            spec = model_spec(LatentSculpting.load(args.model))
            frame = read_benign_flows([path], spec, benign_rows_only=False)[0].frame()
            for fresh in (False, True):
                seconds, epochs = [], None
                for _ in range(args.repeats):
                    model = LatentSculpting.load(args.model)
                    with limit_threads(1):
                        start = time.perf_counter()
                        model.adapt(frame, fresh_flow=fresh, random_state=0)
                        seconds.append(time.perf_counter() - start)
                    epochs = model.training_info_["adaptations"][-1].get("flow_epochs")
                results.append((n, "afresh" if fresh else "fine-tuned", epochs, seconds))

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"### `sculpt adapt` time ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, one thread; load average at the "
        f"end {load}; Python {platform.python_version()}, latent-sculpting "
        f"{latent_sculpting.__version__}, commit {provenance.commit()}. Model "
        f"`{Path(args.model).name}`; benign flows of the embedded sample; "
        f"{args.repeats} repeats.\n"
    )
    print("| flows given | flow | epochs | median s | fastest s |")
    print("|---:|---|---:|---:|---:|")
    for n, how, epochs, seconds in results:
        print(
            f"| {n:,} | {how} | {epochs if epochs is not None else '-'} | "
            f"{statistics.median(seconds):.2f} | {min(seconds):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
