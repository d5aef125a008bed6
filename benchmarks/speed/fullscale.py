"""Full-scale training, measured end to end: ``sculpt train`` on 2.8 M SYNTHETIC rows.

Runs the real command a user runs, ``sculpt train --data DIR --preset PRESET --threads T -o
MODEL``, in a child process on the SYNTHETIC full-size CIC-IDS-2017 of
``benchmarks/speed/make_scale_data.py`` (the real rows of the embedded sample resampled to the
original
release's 2,830,743 rows and schema; written first if the folder is empty). Prints a Markdown
table: wall time (reading and encoding the CSVs included), the seconds of each stage of the fit
as the model file records them, the rows each part trained on, and the child's peak resident
memory; with the machine, load average before and after, date and commit.

The rows are resampled copies, so the model's quality on them means nothing; this measures cost
only. Quality is measured on real data by ``sculpt reproduce`` and ``sculpt benchmark``.

Usage::

    python benchmarks/speed/fullscale.py                       # about 20-30 min on 2 idle cores
    python benchmarks/speed/fullscale.py --rows 283074 --out /tmp/scale-10pct   # a tenth
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from latent_sculpting.research import provenance

FULL_ROWS = 2_830_743
HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--threads", default="auto", help="sculpt train --threads (default auto)")
    parser.add_argument("--rows", type=int, default=FULL_ROWS, help="rows of the synthetic set")
    parser.add_argument(
        "--out", type=Path, default=Path("/tmp/cicids2017-synthetic"), help="synthetic data folder"
    )
    args = parser.parse_args()
    if not list(args.out.glob("SYNTHETIC-*.csv")):
        subprocess.run(
            [sys.executable, str(HERE / "make_scale_data.py"), "--rows", str(args.rows),
             "--out", str(args.out)],
            check=True,
        )  # fmt: skip
    from latent_sculpting import LatentSculpting, __version__

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        model_path = Path(folder) / "model.sculpt"
        command = [
            sys.executable, "-c", "import sys; from latent_sculpting.cli import main; "
            "sys.exit(main())", "train", "--data", str(args.out), "--preset", args.preset,
            "--threads", args.threads, "--quiet", "-o", str(model_path),
        ]  # fmt: skip
        start = time.perf_counter()
        subprocess.run(command, check=True)
        wall = time.perf_counter() - start
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
        model = LatentSculpting.load(model_path)
    load_after = os.getloadavg()
    history = model.history_
    commit = provenance.commit()
    print(
        f"`python benchmarks/speed/fullscale.py {' '.join(sys.argv[1:])}`: "
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}, latent-sculpting "
        f"{__version__}, {platform.machine()}, {os.cpu_count()} CPUs, python "
        f"{platform.python_version()}; load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f} (1 min)\n"
    )
    print("| part | seconds |\n|---|---:|")
    for stage, seconds in history["seconds"].items():
        print(f"| fit: {stage} | {seconds:,.1f} |")
    fit = sum(history["seconds"].values())
    print(f"| reading, encoding and writing (the rest) | {wall - fit:,.1f} |")
    print(f"| **`sculpt train`, wall** | **{wall:,.1f}** ({wall / 60:.1f} min) |\n")
    print(
        f"Peak resident memory of `sculpt train`: {peak_gib:.2f} GiB. Preset {args.preset!r}, "
        f"--threads {args.threads} (n_jobs {model.n_jobs}); benign rows the densities trained on: "
        f"{history.get('n_benign_density', 'all'):,} (max_benign_rows {model.max_benign_rows}); "
        f"{model.n_features_in_} features; fusion weights {history.get('fusion_weights')}."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
