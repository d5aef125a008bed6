"""Flows/s of the local engine vs the Ray engine on one synthetic file set, in one run.

Uses the issue-7 scale set when given (``--data``, e.g. the files written by
``benchmarks/speed/make_scale_data.py``); otherwise writes a SYNTHETIC set by resampling the
embedded
improved CIC-IDS-2017 sample with replacement (``--rows`` rows over ``--files`` Parquet files).
Both engines score the same files with the same model; the local engine writes one file
(``engines.local.score_files``), the Ray engine one shard per input (``engines.ray.score_with_ray``)
on a local Ray instance bound to 127.0.0.1. Ray's start-up is timed separately: on a running
cluster it is paid once, not per job.

    python benchmarks/speed/bench_ray.py --rows 400000 --files 4 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

# Ray reads these at import: loopback only, no usage statistics.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from latent_sculpting import LatentSculpting  # noqa: E402
from latent_sculpting.data import BENIGN, load_cicids2017, sample_path  # noqa: E402
from latent_sculpting.model.presets import preset  # noqa: E402


def synthetic_files(folder: Path, rows: int, files: int, seed: int) -> list[Path]:
    """Resample the embedded sample (improved schema) into ``files`` Parquet files."""
    sample = pa.concat_tables(
        [pq.read_table(p) for p in sorted(sample_path().glob("*.parquet"))],
        promote_options="permissive",
    )
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(np.array_split(np.arange(rows), files)):
        path = folder / f"synthetic-{i:03d}.parquet"
        pq.write_table(sample.take(rng.integers(0, sample.num_rows, len(n))), path)
        out.append(path)
    return out


def fit_model(path: Path, seed: int) -> Path:
    table = load_cicids2017()
    rng = np.random.default_rng(seed)
    rows = np.concatenate(
        [rng.permutation(np.flatnonzero(table.labels == c))[:500] for c in np.unique(table.labels)]
    )
    model = LatentSculpting(**preset("fast"), random_state=seed)
    model.fit(
        pd.DataFrame(table.X[rows], columns=table.feature_names),
        (table.labels[rows] != BENIGN).astype(int),
    )
    return model.save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="folder of scale files (default: synthetic)")
    parser.add_argument("--model", type=Path, help="model file (default: fit a fast model)")
    parser.add_argument("--rows", type=int, default=400_000, help="synthetic rows")
    parser.add_argument("--files", type=int, default=4, help="synthetic files")
    parser.add_argument("--workers", type=int, default=1, help="Ray scoring actors")
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import ray

    from latent_sculpting.serve.engines.local import score_files
    from latent_sculpting.serve.engines.ray import score_with_ray

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        tmp = Path(tmp)
        model_path = args.model or fit_model(tmp / "model.sculpt", args.seed)
        if args.data is not None:
            inputs = sorted(args.data.glob("*.parquet")) + sorted(args.data.glob("*.csv"))
            data = str(args.data)
        else:
            (tmp / "in").mkdir()
            inputs, data = (
                synthetic_files(tmp / "in", args.rows, args.files, args.seed),
                "synthetic",
            )
        model = LatentSculpting.load(model_path)

        start = time.perf_counter()
        local = score_files(
            model, inputs, tmp / "local.parquet", batch_rows=args.batch_rows, progress=False
        )
        local_s = time.perf_counter() - start

        start = time.perf_counter()
        ray.init(num_cpus=args.workers + 1, include_dashboard=False, log_to_driver=False)
        init_s = time.perf_counter() - start
        try:
            start = time.perf_counter()
            summary = score_with_ray(
                model_path,
                inputs,
                tmp / "ray",
                num_workers=args.workers,
                batch_rows=args.batch_rows,
                progress=False,
            )
            ray_s = time.perf_counter() - start
        finally:
            ray.shutdown()
        if summary["failed"] or summary["rows"] != local["rows"]:
            raise SystemExit(f"Ray run incomplete: {summary}")

    result = {
        "data": data,
        "rows": local["rows"],
        "files": len(inputs),
        "cpus": os.cpu_count(),
        "ray_workers": args.workers,
        "batch_rows": args.batch_rows,
        "local_seconds": round(local_s, 2),
        "local_flows_per_s": round(local["rows"] / local_s),
        "ray_init_seconds": round(init_s, 2),
        "ray_seconds": round(ray_s, 2),
        "ray_flows_per_s": round(summary["rows"] / ray_s),
        "ray_flows_per_s_with_init": round(summary["rows"] / (ray_s + init_s)),
        "ray_over_local": round(local_s / ray_s, 3),
        "ray_version": ray.__version__,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
