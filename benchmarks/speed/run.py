"""Benchmarks of latent-sculpting: scoring, training and loading speed, as markdown.

Every speed comparison (fast path vs the plain PyTorch reference path, scoring vs the matmul
rate) is measured within one run, with the candidates interleaved repeat by repeat, and reported
as the median of the repeats; the machine may be shared, so compare ratios, not absolute rates.

Usage::

    python benchmarks/speed/run.py [--quick] [--sections scoring,flops,training,loading]
                             [--scale-data /tmp/cicids2017-synthetic] [--out results.md]

``loading`` needs the SYNTHETIC files of ``benchmarks/speed/make_scale_data.py``. Models for the
scoring benchmark are fitted for one epoch per stage on a capped slice of the embedded sample:
speed does not depend on how well they are trained.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.data import load_cicids2017
from latent_sculpting.io.table import cap_per_class

PRESETS = ("paper-v1", "paper-v2", "default", "fast")
BATCHES = (1, 64, 4096)
# Stage sizes of the full-scale protocol (issue 7): Stage-1 rows and benign Stage-2 codes.
FULL_STAGE1_ROWS = 620_000
FULL_STAGE2_ROWS = 1_450_000


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}), "
        f"Python {platform.python_version()}"
    )


def median(values) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def fitted_models(quick: bool) -> tuple[dict[str, LatentSculpting], np.ndarray]:
    table = load_cicids2017()
    small = cap_per_class(table, 150 if quick else 400)
    y = (small.labels != "BENIGN").astype(int)
    models = {}
    for name in PRESETS:
        params = {**preset(name), "epochs": 1, "flow_epochs": 1}
        model = LatentSculpting(**params, random_state=0)
        models[name] = model.fit(small.X, y, groups=small.labels)
    rng = np.random.default_rng(0)
    return models, table.X[rng.permutation(len(table))]


def time_scoring(
    model: LatentSculpting, X: np.ndarray, batch: int, reference: bool, budget: float = 3.0
) -> list:
    """Seconds of each decision_function call over consecutive batches of ``X``; stops after
    ``budget`` seconds (at least 5 calls)."""
    model.parts_.reference_path = reference
    try:
        times = []
        for start in range(0, len(X) - batch + 1, batch):
            part = X[start : start + batch]
            t = time.perf_counter()
            model.decision_function(part)
            times.append(time.perf_counter() - t)
            if len(times) >= 5 and sum(times) > budget:
                break
        return times
    finally:
        model.parts_.reference_path = False


def bench_scoring(models, X, repeats: int, quick: bool) -> dict:
    calls = {1: 100 if quick else 300, 64: 20 if quick else 60, 4096: 1}
    out = {}
    for name, model in models.items():
        for path in ("reference", "fast"):  # warm-up, and a check that the paths agree
            time_scoring(model, X[:4096], 4096, path == "reference")
        fast = model.decision_function(X[:4096])
        model.parts_.reference_path = True
        ref = model.decision_function(X[:4096])
        model.parts_.reference_path = False
        rel = np.max(np.abs(fast - ref) / np.maximum(np.abs(ref), 1.0))
        result = {"max_rel_diff": float(rel)}
        for batch in BATCHES:
            rows = X[: batch * calls[batch]]
            rates = {"reference": [], "fast": []}
            latencies = {"reference": [], "fast": []}
            for _ in range(repeats):
                for path in ("reference", "fast"):
                    times = time_scoring(model, rows, batch, path == "reference")
                    rates[path].append(batch * len(times) / sum(times))
                    latencies[path] += times
            result[batch] = {path: median(rates[path]) for path in rates}
            if batch == 1:
                result["latency_ms"] = {
                    path: (1e3 * np.percentile(v, 50), 1e3 * np.percentile(v, 99))
                    for path, v in latencies.items()
                }
        out[name] = result
        print(f"  scoring {name}: {json.dumps(result, default=str)}", file=sys.stderr)
    return out


def model_flops(model: LatentSculpting) -> dict:
    """FLOPs per flow of the encoder and the flow, counted by FlopCounterMode.

    The encoder is counted in training mode under ``no_grad``: eval mode sends the Transformer
    through fused kernels that the counter does not see, training mode runs the same matmuls
    unfused. Convolutions and attention matmuls are counted; elementwise ops are not.
    """
    from torch.utils.flop_counter import FlopCounterMode

    n = 64
    x = torch.randn(n, model.preprocessor_.support_.sum().item())
    out = {}
    with torch.no_grad():
        if model.encoder_ is not None:
            model.encoder_.train()
            with FlopCounterMode(display=False) as counter:
                codes = model.encoder_(x)
            model.encoder_.eval()
            out["encoder"] = counter.get_total_flops() / n
        else:
            codes = x
        with FlopCounterMode(display=False) as counter:
            model.flow_(codes)
        out["flow"] = counter.get_total_flops() / n
    out["total"] = sum(out.values())
    return out


def matmul_rate(shapes, repeats: int) -> dict:
    """fp32 torch.mm GFLOP/s at each (m, k, n) and thread count; median of ``repeats`` runs."""
    rates = {}
    saved = torch.get_num_threads()
    for (m, k, n), threads in [(s, t) for s in shapes for t in sorted({1, saved})]:
        torch.set_num_threads(threads)
        a, b = torch.randn(m, k), torch.randn(k, n)
        torch.mm(a, b)
        reps = max(1, int(2e9 / (2 * m * k * n)))
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            times.append((time.perf_counter() - t) / reps)
        rates[(m, k, n, threads)] = 2 * m * k * n / median(times) / 1e9
    torch.set_num_threads(saved)
    return rates


def bench_flops(model: LatentSculpting, X: np.ndarray, repeats: int) -> dict:
    """paper-v1 at batch 4096: eager vs fast path vs the machine's matmul rate, one run."""
    flops = model_flops(model)
    seq = model.encoder_.position.shape[1]
    d, ffn = model.d_model, model.d_ffn
    hidden = model.flow_hidden
    # Shapes of the model's big matmuls at a 512-row chunk: QKV / FFN in and out / MAF layers.
    shapes = [
        (512 * seq, d, 3 * d),
        (512 * seq, d, ffn),
        (512 * seq, ffn, d),
        (1024, model.latent_dim, hidden),
        (1024, hidden, 2 * model.latent_dim),
    ]
    batch = X[:4096]
    rates = {"reference": [], "reference, 1 thread": [], "fast": [], "fast+bf16": []}
    mm = {}
    saved = torch.get_num_threads()
    for _ in range(repeats):
        # interleave the matmul measurement with the model runs so load changes hit both
        for key, value in matmul_rate(shapes, 1).items():
            mm.setdefault(key, []).append(value)
        for path in rates:
            model.parts_.reference_path = path.startswith("reference")
            torch.set_num_threads(1 if path == "reference, 1 thread" else saved)
            t = time.perf_counter()
            if path == "fast+bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    model.decision_function(batch)
            else:
                model.decision_function(batch)
            rates[path].append(len(batch) / (time.perf_counter() - t))
        torch.set_num_threads(saved)
        model.parts_.reference_path = False
    mm = {key: median(v) for key, v in mm.items()}
    limit = max(mm.values())
    flows = {path: median(v) for path, v in rates.items()}
    return {
        "flops_per_flow": flops,
        "matmul_gflops": {f"{m}x{k}x{n} ({t} thr)": v for (m, k, n, t), v in mm.items()},
        "limit_gflops": limit,
        "flows_per_s": flows,
        "share_of_limit": {p: f * flops["total"] / 1e9 / limit for p, f in flows.items()},
        "fast_over_eager": flows["fast"] / flows["reference"],
    }


def bench_training(quick: bool) -> dict:
    """Samples/s per stage for one-epoch fits of each preset on a capped embedded sample."""
    table = cap_per_class(load_cicids2017(), 300 if quick else 1500)
    y = (table.labels != "BENIGN").astype(int)
    out = {}
    for name in PRESETS:
        params = {**preset(name), "epochs": 1, "flow_epochs": 1}
        model = LatentSculpting(**params, random_state=0).fit(table.X, y, groups=table.labels)
        h = model.history_
        n1 = h.get("n_stage1_train", 0)
        n_benign = int((y == 0).sum() * (1 - (params["calibration"] == "holdout") * 0.2))
        out[name] = {
            "stage1_rows": n1,
            "stage1_s": h["seconds"]["stage1"],
            "stage1_per_s": n1 / h["seconds"]["stage1"] if n1 else None,
            "stage2_rows": n_benign,
            "stage2_s": h["seconds"]["stage2"],
            "stage2_per_s": n_benign / h["seconds"]["stage2"],
            "epochs": preset(name)["epochs"],
            "flow_epochs": preset(name)["flow_epochs"],
        }
        print(f"  training {name}: {out[name]}", file=sys.stderr)
    return out


def bench_reproduce(presets: list[str]) -> dict:
    """Wall time of ``sculpt reproduce --seeds 0`` on the embedded sample, per preset."""
    out = {}
    for name in presets:
        folder = Path("/tmp") / f"bench-reproduce-{name}"
        command = [
            "sculpt",
            "reproduce",
            "--preset",
            name,
            "--seeds",
            "0",
            "--no-plots",
            "--quiet",
            "--out",
            str(folder),
        ]
        t = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        seconds = time.perf_counter() - t
        results = json.loads((folder / "results.json").read_text())
        stages = results["per_seed"][0]["seconds"]
        out[name] = {
            "wall_s": seconds,
            "stages_s": stages,
            "zero_shot_auroc": results["zero_shot"]["auroc"]["mean"],
        }
        print(f"  reproduce {name}: {out[name]}", file=sys.stderr)
    return out


_LOAD_CHILD = """
import cProfile, json, pstats, resource, sys, time
from latent_sculpting.data import load_cicids2017
profile = cProfile.Profile() if sys.argv[2] == "1" else None
t = time.perf_counter()
if profile: profile.enable()
table = load_cicids2017(sys.argv[1])
if profile: profile.disable()
seconds = time.perf_counter() - t
top = []
if profile:
    stats = pstats.Stats(profile).sort_stats("tottime")
    for (file, line, fn), (cc, nc, tt, ct, _) in list(stats.stats.items()):
        top.append((tt, ct, f"{file.split('/')[-1]}:{fn}"))
    top = sorted(top, reverse=True)[:8]
print(json.dumps({"rows": len(table), "seconds": seconds, "dtype": str(table.X.dtype),
                  "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "top": top}))
"""


def bench_loading(path: str, profile: bool) -> dict:
    """Wall time and peak RSS of load_cicids2017 on the SYNTHETIC scale files, in a subprocess."""
    files = sorted(Path(path).glob("SYNTHETIC-*.csv"))
    if not files:
        raise SystemExit(
            f"no SYNTHETIC-*.csv under {path}; run benchmarks/speed/make_scale_data.py"
        )
    t = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_CHILD, path, "1" if profile else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - t
    result["bytes"] = sum(f.stat().st_size for f in files)
    result["peak_rss_gib"] = result["maxrss_kib"] / 2**20
    return result


def markdown(results: dict) -> str:
    lines = [
        f"Machine: {results['machine']}. Date: {results['date']}. Command: `{results['command']}`.",
        "",
    ]
    if "scoring" in results:
        lines += [
            "### Scoring throughput (flows/s, end to end from raw features to scores)",
            "",
            "| preset | batch 1 ref | batch 1 fast | batch 64 ref | batch 64 fast | "
            "batch 4096 ref | batch 4096 fast | 4096 speed-up | p50 / p99 latency fast "
            "(ms) | max rel. diff |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in results["scoring"].items():
            lat = r["latency_ms"]["fast"]
            cells = [f"{r[b][p]:,.0f}" for b in BATCHES for p in ("reference", "fast")]
            lines.append(
                f"| {name} | "
                + " | ".join(cells)
                + f" | {r[4096]['fast'] / r[4096]['reference']:.2f}x"
                f" | {lat[0]:.2f} / {lat[1]:.2f} | {r['max_rel_diff']:.1e} |"
            )
        lines.append("")
    if "flops" in results:
        f = results["flops"]
        lines += [
            "### paper-v1 against the machine's fp32 matmul rate (batch 4096, one run)",
            "",
            f"FLOPs per flow (FlopCounterMode): encoder "
            f"{f['flops_per_flow'].get('encoder', 0) / 1e6:.2f} M, flow "
            f"{f['flops_per_flow']['flow'] / 1e6:.2f} M, total "
            f"{f['flops_per_flow']['total'] / 1e6:.2f} M.",
            "",
            "fp32 torch.mm GFLOP/s at the model's shapes: "
            + ", ".join(f"{k}: {v:.0f}" for k, v in f["matmul_gflops"].items())
            + f"; limit taken as the best, {f['limit_gflops']:.0f} GFLOP/s.",
            "",
            "| path | flows/s | share of matmul limit |",
            "|---|---|---|",
        ]
        for path, v in f["flows_per_s"].items():
            lines.append(f"| {path} | {v:,.0f} | {f['share_of_limit'][path]:.0%} |")
        lines += ["", f"Fast path / eager: {f['fast_over_eager']:.2f}x.", ""]
    if "training" in results:
        lines += [
            "### Training throughput (samples/s, one epoch per stage)",
            "",
            "| preset | Stage 1 rows | Stage 1 samples/s | Stage 2 rows | Stage 2 samples/s |",
            "|---|---|---|---|---|",
        ]
        for name, r in results["training"].items():
            s1 = f"{r['stage1_per_s']:,.0f}" if r["stage1_per_s"] else "-"
            lines.append(
                f"| {name} | {r['stage1_rows']:,} | {s1} | {r['stage2_rows']:,} | "
                f"{r['stage2_per_s']:,.0f} |"
            )
        d = results["training"]["default"]
        s1 = FULL_STAGE1_ROWS * d["epochs"] / d["stage1_per_s"]
        s2 = FULL_STAGE2_ROWS * d["flow_epochs"] / d["stage2_per_s"]
        lines += [
            "",
            f"Full-scale default preset, extrapolated from these rates: Stage 1 "
            f"{FULL_STAGE1_ROWS:,} rows x {d['epochs']} epochs = {s1 / 60:.1f} min, "
            f"Stage 2 {FULL_STAGE2_ROWS:,} codes x {d['flow_epochs']} epochs = "
            f"{s2 / 60:.1f} min, total {(s1 + s2) / 60:.1f} min.",
            "",
        ]
    if "reproduce" in results:
        lines += [
            "### `sculpt reproduce --seeds 0` on the embedded sample (one seed)",
            "",
            "| preset | wall time (s) | seconds per stage | zero-shot AUROC |",
            "|---|---|---|---|",
        ]
        for name, r in results["reproduce"].items():
            stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stages_s"].items())
            lines.append(f"| {name} | {r['wall_s']:.0f} | {stages} | {r['zero_shot_auroc']:.3f} |")
        lines.append("")
    if "loading" in results:
        r = results["loading"]
        lines += [
            "### Loading the SYNTHETIC 2.8 M-row original-schema scale test",
            "",
            f"{r['rows']:,} rows, {r['bytes'] / 2**30:.2f} GiB of CSV in 8 files: "
            f"load_cicids2017 {r['seconds']:.1f} s (process {r['process_s']:.1f} s), "
            f"peak RSS {r['peak_rss_gib']:.2f} GiB, features {r['dtype']}.",
            "",
        ]
        if r["top"]:
            lines += ["Profile (self seconds, cumulative seconds, function):", ""]
            lines += [f"- {tt:.1f} s / {ct:.1f} s `{fn}`" for tt, ct, fn in r["top"]] + [""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and calls")
    parser.add_argument(
        "--sections",
        default="scoring,flops,training",
        help="comma-separated: scoring, flops, training, loading",
    )
    parser.add_argument(
        "--reproduce-presets",
        default="fast,default",
        help="presets timed by the 'reproduce' section",
    )
    parser.add_argument("--scale-data", default="/tmp/cicids2017-synthetic")
    parser.add_argument("--profile-loading", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--out", help="also write the markdown here (and JSON beside it)")
    args = parser.parse_args()
    sections = set(args.sections.split(","))
    repeats = args.repeats or (3 if args.quick else 7)
    results = {
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/speed/run.py " + " ".join(sys.argv[1:]),
        "load_average": os.getloadavg(),
    }
    if sections & {"scoring", "flops"}:
        models, X = fitted_models(args.quick)
        if "flops" in sections:
            results["flops"] = bench_flops(models["paper-v1"], X, repeats)
        if "scoring" in sections:
            results["scoring"] = bench_scoring(models, X, repeats, args.quick)
    if "training" in sections:
        results["training"] = bench_training(args.quick)
    if "reproduce" in sections:
        results["reproduce"] = bench_reproduce(args.reproduce_presets.split(","))
    if "loading" in sections:
        results["loading"] = bench_loading(args.scale_data, args.profile_loading)
    results["load_average_after"] = os.getloadavg()
    text = markdown(results)
    text += (
        f"\nLoad average (1, 5, 15 min) before / after: "
        f"{', '.join(f'{v:.1f}' for v in results['load_average'])} / "
        f"{', '.join(f'{v:.1f}' for v in results['load_average_after'])}.\n"
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text)
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"(runner peak RSS {peak:.2f} GiB)", file=sys.stderr)


if __name__ == "__main__":
    main()
