"""The neighbour channel's scoring rate at this checkout against another revision's.

Loads ``NeighbourChannel`` from ``git show REV:src/latent_sculpting/model/channels/registry.py``
beside the working tree's, and times ``score`` of 65,536 rows (random prototypes, rows near
them) for 64 x 30 and 1,024 x 72 prototypes, median of 5 alternated runs. Run it on an idle
machine; the load average is printed.

    python benchmarks/speed/bench_knn_channel.py --against a87446a
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "src"))

from latent_sculpting.model.channels.registry import NeighbourChannel  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="git revision to compare with")
    args = parser.parse_args(argv)
    source = subprocess.run(
        ["git", "show", f"{args.against}:src/latent_sculpting/model/channels/registry.py"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    path = Path(tempfile.mkdtemp()) / "registry_then.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("registry_then", path)
    then = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(then)
    print("load average before:", os.getloadavg())
    rng = np.random.default_rng(0)
    for m, d in ((64, 30), (1024, 72)):
        P = rng.normal(size=(m, d)).astype(np.float32)
        rows = P[rng.integers(m, size=65_536)] + rng.normal(scale=0.3, size=(65_536, d))
        Z = rows.astype(np.float32)
        state = ({"n_prototypes": m}, {"prototypes": P})
        channels = {"then": then.NeighbourChannel.from_state(*state),
                    "now": NeighbourChannel.from_state(*state)}  # fmt: skip
        for channel in channels.values():
            channel.score(Z[:2048])  # compile
        times: dict[str, list[float]] = {name: [] for name in channels}
        for _ in range(5):
            for name, channel in channels.items():
                began = time.perf_counter()
                channel.score(Z)
                times[name].append(time.perf_counter() - began)
        median = {name: float(np.median(t)) for name, t in times.items()}
        then_rate, now_rate = len(Z) / median["then"], len(Z) / median["now"]
        print(
            f"{m} prototypes x {d} features: {args.against} {then_rate:,.0f} rows/s, "
            f"now {now_rate:,.0f} rows/s, time now/then {median['now'] / median['then']:.2f}"
        )
    print("load average after:", os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())
