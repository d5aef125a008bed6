"""Training time of ``sculpt train`` by ``--threads``, alone and beside a busy process, as Markdown.

Runs ``sculpt train`` (``--preset``, default ``default``, on the embedded sample or a
``--max-per-class`` slice of it) with each ``--threads`` setting (default ``1`` and ``auto``),
each alone and beside a competing CPU-bound process (``python -c "while True: pass"``, started
here and killed at the end, also on error or Ctrl-C); the settings and conditions interleaved
over ``--repeats`` rounds. Prints the median wall time of each, and for each setting the ratio
of its time beside the competitor to its time alone: how much one busy core costs it. The
load average before and after, the machine and the date are printed with the table, since the
machine may be shared.

Usage::

    python benchmarks/speed/bench_threads.py                          # the whole sample (minutes)
    python benchmarks/speed/bench_threads.py --max-per-class 100 --repeats 1   # a quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from latent_sculpting.threads import available_cpus

BUSY_LOOP = "while True: pass"
SCULPT = "import sys; from latent_sculpting.cli import main; sys.exit(main(sys.argv[1:]))"


def train_seconds(threads: str, args: argparse.Namespace, folder: Path) -> float:
    """Wall time of one ``sculpt train`` in a fresh process."""
    command = [sys.executable, "-c", SCULPT, "train", "--quiet"]
    command += ["--preset", args.preset, "--threads", threads, "-o", str(folder / "m.sculpt")]
    if args.max_per_class is not None:
        command += ["--max-per-class", str(args.max_per_class)]
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--max-per-class", type=int, help="a stratified slice of the sample")
    parser.add_argument("--threads", nargs="+", default=["1", "auto"], metavar="N|auto")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    load_before = os.getloadavg()
    times: dict[tuple[str, bool], list[float]] = {}
    competitor = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.repeats):
                for busy in (False, True):
                    if busy:
                        competitor = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
                    for threads in args.threads:
                        seconds = train_seconds(threads, args, Path(tmp))
                        times.setdefault((threads, busy), []).append(seconds)
                    if competitor is not None:
                        competitor.kill()
                        competitor.wait()
                        competitor = None
    finally:
        if competitor is not None:
            competitor.kill()
            competitor.wait()
    load_after = os.getloadavg()

    size = (
        "the embedded sample"
        if args.max_per_class is None
        else (f"at most {args.max_per_class} rows a class of the embedded sample")
    )
    print(
        f"`sculpt train --preset {args.preset}` on {size}, median of {args.repeats} "
        f"(interleaved); {platform.machine()}, {available_cpus()} CPUs available, "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; load average before "
        f"{' '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{' '.join(f'{x:.2f}' for x in load_after)}\n"
    )
    print("| --threads | alone (s) | beside a busy process (s) | ratio busy/alone |")
    print("|---|---:|---:|---:|")
    for threads in args.threads:
        alone = statistics.median(times[threads, False])
        busy = statistics.median(times[threads, True])
        print(f"| {threads} | {alone:.1f} | {busy:.1f} | {busy / alone:.2f} |")


if __name__ == "__main__":
    main()
