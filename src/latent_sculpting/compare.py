"""Every method on the identical zero-shot splits: ``sculpt compare``.

The protocol, common to all methods (see ``docs/baselines.md``):

1. The zero-shot splits of Chhetri et al. (arXiv:2512.22179) with one split seed for all methods
   and model seeds (:func:`latent_sculpting.data.zero_shot_splits`).
2. A share (``holdout``, default 20 %) of the benign training rows is held out from every
   method's fit, drawn with the split seed, so all methods and seeds hold out the same rows.
3. Each method is fitted on the remaining training rows: benign-only methods on their benign
   rows, the others on benign rows and the known attacks.
4. The threshold of every method is the ``percentile`` (default 95) of its scores on the
   held-out benign rows, so every F1 comes from the same rule and the same nominal benign
   false-positive rate. Classifiers are also reported at their native 0.5 probability, and our
   detector at its preset's own threshold ("native" columns).
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from . import __version__
from .baselines import DEFAULT_METHODS, Method, make_method, parse_method
from .data import DEFAULT_WITHHELD, FlowTable, ZeroShotSplits, load_cicids2017, zero_shot_splits
from .evaluation import aggregate, binary_metrics, per_class_recall
from .experiment import PAPER, cap_per_class, sha256, write_json, write_text
from .threads import limit_threads

__all__ = [
    "MethodFactory",
    "calibration_holdout",
    "compare",
    "compare_markdown",
    "limit_threads",
    "load_table",
    "run_config",
]

#: ``factory(name, random_state, shared) -> Method``; :func:`make_method` unless a caller
#: (a test, say) wraps it.
MethodFactory = Callable[[str, int | None, dict], Method]


def calibration_holdout(
    y: np.ndarray, fraction: float, seed: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the fitting rows and of the held-out benign calibration rows.

    Parameters
    ----------
    y : array of {0, 1}
        Targets of the training split.
    fraction : float
        Share of the benign rows held out, in (0, 1).
    seed : int or None

    Returns
    -------
    fit_rows, calibration_rows : ndarray of int64, sorted
    """
    if not 0 < fraction < 1:
        raise ValueError(f"holdout must be in (0, 1), got {fraction}")
    y = np.asarray(y)
    benign = np.random.default_rng(seed).permutation(np.flatnonzero(y == 0))
    n_cal = int(round(fraction * len(benign)))
    if n_cal < 20 or n_cal >= len(benign):
        raise ValueError(
            f"holdout={fraction} of {len(benign)} benign training rows gives {n_cal} calibration "
            "rows; need at least 20 and some left to fit on (use more data or another holdout)"
        )
    calibration = np.sort(benign[:n_cal])
    return np.setdiff1d(np.arange(len(y)), calibration), calibration


def load_table(
    data: str | Path | Sequence[str | Path] | None, max_per_class: int | None
) -> FlowTable:
    """The data of a run: the embedded sample by default, optionally capped per label."""
    table = load_cicids2017(data)
    if max_per_class is not None:
        if max_per_class < 1:
            raise ValueError(f"max_per_class must be at least 1, got {max_per_class}")
        table = cap_per_class(table, max_per_class)
    return table


def run_config(table: FlowTable, **extra: Any) -> dict:
    """Provenance of a run: data files with their sha256, versions, machine and date."""
    return {
        **extra,
        "data_files": [{"path": str(p), "sha256": sha256(p)} for p in table.files],
        "n_rows": len(table),
        "n_features": len(table.feature_names),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def method_info(method: Method) -> dict[str, str]:
    return {
        "library": method.library,
        "trains_on": method.trains_on,
        "feature_transform": method.feature_transform,
    }


def _evaluate(
    method: Method, splits: ZeroShotSplits, calibration: np.ndarray, percentile: float
) -> tuple[dict, np.ndarray]:
    """Metrics of one fitted method at the common threshold and at its native one."""
    start = time.perf_counter()
    cal = method.decision_function(splits.train.X[calibration])
    scores = {
        name: method.decision_function(getattr(splits, name).X)
        for name in ("internal_test", "zero_shot", "zero_shot_attacks")
    }
    score_seconds = time.perf_counter() - start
    n_scored = len(calibration) + sum(len(getattr(splits, n)) for n in scores)
    for name, values in {"calibration": cal, **scores}.items():
        if not np.isfinite(values).all():
            raise ValueError(f"{method.name} gave non-finite scores on the {name} rows")

    def at(threshold: float) -> dict:
        out = {
            "known": binary_metrics(
                splits.internal_test.y,
                scores["internal_test"],
                scores["internal_test"] > threshold,
            ),
            "zero_shot": binary_metrics(
                splits.zero_shot.y, scores["zero_shot"], scores["zero_shot"] > threshold
            ),
        }
        out["zero_shot"]["per_attack_recall"] = per_class_recall(
            splits.zero_shot_attacks.labels, scores["zero_shot_attacks"] > threshold
        )
        return out

    threshold = float(np.percentile(cal, percentile))
    metrics = {**at(threshold), "threshold": threshold}
    native = getattr(method, "native_threshold_", None)
    if native is not None:
        metrics["native"] = {**at(native), "threshold": float(native)}
    metrics["seconds"] = {
        "score": score_seconds,
        "score_per_1k_rows": 1e3 * score_seconds / n_scored,
    }
    return metrics, scores["zero_shot"]


def compare(
    *,
    data: str | Path | Sequence[str | Path] | None = None,
    methods: Sequence[str] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    percentile: float = 95.0,
    holdout: float = 0.2,
    split_seed: int | None = 42,
    withheld: Sequence[str] = DEFAULT_WITHHELD,
    out: str | Path | None = None,
    max_per_class: int | None = None,
    plots: bool = True,
    verbose: bool = True,
    threads: int | None = None,
    factory: MethodFactory = make_method,
    table: FlowTable | None = None,
    jobs: int = 1,
) -> dict:
    """Fit every method on the same zero-shot splits, once per seed, and write the comparison.

    Parameters
    ----------
    data : path or list of paths, optional
        CIC-IDS-2017 files or folder; default the embedded sample.
    methods : sequence of str, optional
        Names for :func:`latent_sculpting.baselines.make_method`; default every baseline, the
        presets ``paper-v1``, ``paper-v2``, ``default`` and the ablations of ``default``.
    seeds : sequence of int
        Model seeds.
    percentile : float, default=95.0
        Threshold: this percentile of each method's scores on the held-out benign rows.
    holdout : float, default=0.2
        Share of benign training rows held out of every fit for the threshold.
    split_seed : int or None, default=42
        Seed of the splits and of the holdout, fixed across seeds; None re-draws both per seed.
    withheld : sequence of str
        Attack classes withheld from training.
    out : path, optional
        Output folder; default ``runs/compare-<UTC time>``.
    max_per_class : int, optional
        Cap rows per label.
    plots : bool, default=True
    verbose : bool, default=True
        A progress bar over method x seed.
    threads : int, optional
        Cap on BLAS/OpenMP/torch threads (see :func:`limit_threads`).
    factory : callable, default=make_method
        Builds each method from its name; tests pass a wrapper that records what methods are
        fitted on, ``benchmarks/preset_search.py`` one that builds variants of a preset.
    table : FlowTable, optional
        Data already loaded (``data`` and ``max_per_class`` are then ignored).
    jobs : int, default=1
        Seeds fitted at once, each in its own process (``out/seeds/seed-K``), then merged with
        :func:`merge_runs`; the results are those of a sequential run. ``threads`` (default:
        the CPUs shared out) applies per process.

    Returns
    -------
    dict
        The content of ``compare.json``.
    """
    started = time.perf_counter()
    if not 0 < percentile < 100:
        raise ValueError(f"percentile must be in (0, 100), got {percentile}")
    names = list(methods) if methods else list(DEFAULT_METHODS)
    if factory is make_method:  # another factory knows its own names
        for name in names:
            parse_method(name)
    if len(set(names)) != len(names):
        raise ValueError(f"methods must be distinct, got {names}")
    if not seeds:
        raise ValueError("seeds must name at least one seed")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(out) if out is not None else Path("runs") / f"compare-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    if table is None:
        table = load_table(data, max_per_class)
    if jobs > 1 and len(seeds) > 1:
        common = {
            "methods": names,
            "percentile": percentile,
            "holdout": holdout,
            "split_seed": split_seed,
            "withheld": withheld,
            "max_per_class": max_per_class,
            "threads": threads or max(1, (os.cpu_count() or 1) // min(jobs, len(seeds))),
            "factory": factory,
            "table": table,
        }
        return _compare_in_processes(common, list(seeds), jobs, out, plots, verbose, started)

    config = {
        "percentile": percentile,
        "holdout": holdout,
        "split_seed": split_seed,
        "max_per_class": max_per_class,
        "threads": threads,
        "seeds": list(seeds),
    }
    per_seed: dict[str, list[dict]] = {name: [] for name in names}
    info: dict[str, dict] = {}
    curves: dict[str, np.ndarray] = {}
    bar = tqdm(total=len(names) * len(seeds), desc="compare", unit="fit", disable=not verbose)
    with limit_threads(threads):
        for seed in seeds:
            seed_of_split = seed if split_seed is None else split_seed
            splits = zero_shot_splits(table, withheld=withheld, seed=seed_of_split)
            fit_rows, calibration = calibration_holdout(splits.train.y, holdout, seed_of_split)
            shared: dict = {}
            for name in names:
                bar.set_description(f"compare seed {seed}: {name}")
                method = factory(name, seed, shared)
                start = time.perf_counter()
                method.fit(
                    splits.train.X[fit_rows],
                    splits.train.y[fit_rows],
                    splits.train.labels[fit_rows],
                )
                fit_seconds = time.perf_counter() - start
                metrics, zero_shot_scores = _evaluate(method, splits, calibration, percentile)
                metrics["seconds"]["fit"] = fit_seconds
                metrics["seed"] = seed
                per_seed[name].append(metrics)
                info[name] = {
                    **method_info(method),
                    "reused_fit": bool(getattr(method, "reused_fit_", False)),
                }
                if name not in curves:
                    curves[name] = zero_shot_scores
                bar.set_postfix(auroc=f"{metrics['zero_shot']['auroc']:.3f}")
                bar.update()
            # Checkpoint after every seed, so that a long run that is stopped keeps the seeds it
            # finished (config["seeds_done"] says which).
            done = seeds[: seeds.index(seed) + 1]
            _write_results(out, table, names, per_seed, info, splits, done, started, config)
    bar.close()
    results = _write_results(out, table, names, per_seed, info, splits, seeds, started, config)
    if plots:
        from .plots import plot_curves

        plot_bars(results, out / "compare_bars.png")
        plot_curves(
            splits.zero_shot.y,
            {n: curves[n] for n in results["order"]},
            out / "compare_zero_shot_curves.png",
            f"zero-shot set (seed {seeds[0]})",
        )
    if verbose:
        tqdm.write(f"comparison in {out}/ (compare.json, compare.md, plots)")
    return results


def _compare_in_processes(
    common: dict, seeds: list[int], jobs: int, out: Path, plots: bool, verbose: bool, started: float
) -> dict:
    """One process per seed (at most ``jobs`` at once), then one merged comparison in ``out``."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    runs = [out / "seeds" / f"seed-{seed}" for seed in seeds]
    # spawn, not fork: a forked child inherits torch's thread pools and OpenMP state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [
            # The first seed's run draws the score curves, as a sequential run does.
            pool.submit(
                compare, **common, seeds=[seed], out=run, plots=plots and i == 0, verbose=False
            )
            for i, (seed, run) in enumerate(zip(seeds, runs, strict=True))
        ]
        bar = tqdm(
            total=len(futures), desc=f"compare ({jobs} jobs)", unit="seed", disable=not verbose
        )
        for future in as_completed(futures):
            future.result()
            bar.update()
        bar.close()
    config = {"jobs": jobs, "seconds": time.perf_counter() - started}
    results = merge_runs(runs, out, plots=plots, config=config)
    curves = runs[0] / "compare_zero_shot_curves.png"
    if plots and curves.is_file():
        os.replace(curves, out / curves.name)
    if verbose:
        tqdm.write(f"comparison in {out}/ (compare.json, compare.md, plots; per seed in seeds/)")
    return results


def _write_results(
    out: Path,
    table: FlowTable,
    names: list[str],
    per_seed: dict[str, list[dict]],
    info: dict[str, dict],
    splits: Any,
    seeds_done: Sequence[int],
    started: float,
    config: dict,
) -> dict:
    """Aggregate the seeds done so far and write compare.json and compare.md."""
    summaries = {}
    for name in names:
        keep = ("known", "zero_shot", "native", "seconds")
        summaries[name] = {
            **info[name],
            **aggregate([{k: m[k] for k in keep if k in m} for m in per_seed[name]]),
            "per_seed": per_seed[name],
        }
    order = sorted(names, key=lambda n: -summaries[n]["zero_shot"]["auroc"]["mean"])
    fit_rows, calibration = calibration_holdout(splits.train.y, config["holdout"], splits.seed)
    results = {
        "methods": summaries,
        "order": order,
        "splits": splits.summary(),
        "paper": PAPER,
        "config": run_config(
            table,
            methods=names,
            **config,
            seeds_done=list(seeds_done),
            withheld=list(splits.withheld),
            calibration_rows=len(calibration),
            fit_rows=len(fit_rows),
            seconds=time.perf_counter() - started,
        ),
    }
    write_json(results, out / "compare.json")
    write_text(compare_markdown(results), out / "compare.md")
    return results


def _fmt(stat: dict | None, digits: int = 3) -> str:
    if stat is None or not np.isfinite(stat["mean"]):
        return "–"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _pct(stat: dict | None) -> str:
    if stat is None or not np.isfinite(stat["mean"]):
        return "–"
    return f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def compare_markdown(results: dict) -> str:
    """The comparison table sorted by zero-shot AUROC, native-rule F1 and per-attack recall."""
    cfg, methods = results["config"], results["methods"]
    p = cfg["percentile"]
    done = cfg.get("seeds_done", cfg["seeds"])
    partial = "" if sorted(done) == sorted(cfg["seeds"]) else f" (of {cfg['seeds']} asked)"
    merged = f" Merged from {len(cfg['merged_from'])} runs." if cfg.get("merged_from") else ""
    if cfg.get("jobs"):
        merged = f" Seeds fitted {cfg['jobs']} at a time, one process each."
    lines = [
        "# `sculpt compare`",
        "",
        f"{len(done)} seed(s) {done}{partial}, split seed {cfg['split_seed']}, "
        f"withheld: {', '.join(cfg['withheld'])}. Data: {cfg['n_rows']:,} rows from "
        f"{len(cfg['data_files'])} file(s). Machine: {cfg['machine']}. Date: {cfg['date']}. "
        f"Total time {cfg['seconds']:.0f} s.{merged}",
        "",
        f"Threshold of every method: P{p:g} of its scores on {cfg['calibration_rows']} benign "
        f"training rows held out of every fit ({100 * cfg['holdout']:g} %); methods fit on the "
        f"other {cfg['fit_rows']:,} training rows (benign-only methods on their benign rows). "
        "Mean ± std over seeds; sorted by zero-shot AUROC.",
        "",
        "| method | trains on | features | known F1 | zero-shot F1 | zero-shot AUROC | AUPRC "
        "| precision | recall | FPR | fit s | score s/1k |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in results["order"]:
        m = methods[name]
        zs = m["zero_shot"]
        fit = m["seconds"]["fit"]["mean"]
        fit_cell = "shared" if m.get("reused_fit") else f"{fit:.1f}"
        lines.append(
            f"| {name} | {m['trains_on']} | {m['feature_transform']} | {_fmt(m['known']['f1'])} "
            f"| {_fmt(zs['f1'])} | {_fmt(zs['auroc'])} | {_fmt(zs['auprc'])} "
            f"| {_fmt(zs['precision'])} | {_fmt(zs['recall'])} | {_fmt(zs['fpr'])} "
            f"| {fit_cell} | {m['seconds']['score_per_1k_rows']['mean']:.3f} |"
        )
    native = [n for n in results["order"] if "native" in methods[n]]
    if native:
        lines += [
            "",
            "## At each method's native rule",
            "",
            "Classifiers at attack probability > 0.5 (what the paper's supervised baseline used); "
            "our presets at their own threshold (the preset's percentile and calibration rule); "
            "Stage 1 alone at margin > 0 (nearer the attack centroid).",
            "",
            "| method | threshold | known F1 | zero-shot F1 | zero-shot recall | zero-shot FPR |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name in native:
            nat = methods[name]["native"]
            lines.append(
                f"| {name} | {nat['threshold']['mean']:.4g} | {_fmt(nat['known']['f1'])} "
                f"| {_fmt(nat['zero_shot']['f1'])} | {_fmt(nat['zero_shot']['recall'])} "
                f"| {_fmt(nat['zero_shot']['fpr'])} |"
            )
    attacks = list(
        dict.fromkeys(
            a for n in results["order"] for a in methods[n]["zero_shot"]["per_attack_recall"]
        )
    )
    counts = results["splits"]["zero_shot_attacks"]
    lines += [
        "",
        f"## Recall (%) per withheld attack class at P{p:g}",
        "",
        "| method | " + " | ".join(f"{a} (n={counts.get(a, 0)})" for a in attacks) + " |",
        "|---|" + "---:|" * len(attacks),
    ]
    for name in results["order"]:
        recall = methods[name]["zero_shot"]["per_attack_recall"]
        lines.append(f"| {name} | " + " | ".join(_pct(recall.get(a)) for a in attacks) + " |")
    lines += [
        "",
        "Paper (full CIC-IDS-2017): zero-shot F1 "
        f"{results['paper']['zero_shot_f1']['mean']:.3f}, supervised MLP "
        f"{results['paper']['supervised_mlp_zero_shot_f1']:.2f}, OCSVM "
        f"{results['paper']['ocsvm_zero_shot_f1']:.2f}.",
        "",
    ]
    return "\n".join(lines)


def plot_bars(results: dict, path: Path) -> Path:
    """Zero-shot F1 and AUROC per method, mean with std error bars, in table order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import save_figure

    order = results["order"]
    fig, axes = plt.subplots(1, 2, figsize=(max(8.0, 0.55 * len(order) + 3), 4.8), sharey=True)
    for ax, metric, title in zip(
        axes, ("f1", "auroc"), ("zero-shot F1", "zero-shot AUROC"), strict=True
    ):
        stats = [results["methods"][n]["zero_shot"][metric] for n in order]
        ax.bar(
            range(len(order)),
            [s["mean"] for s in stats],
            yerr=[s["std"] for s in stats],
            capsize=3,
            color="tab:blue",
            alpha=0.8,
        )
        ax.set_xticks(range(len(order)), order, rotation=60, ha="right", fontsize=8)
        ax.set(
            title=f"{title} (P{results['config']['percentile']:g} of held-out benign)"
            if metric == "f1"
            else title,
            ylim=(0, 1.05),
        )
        ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


#: Configuration that must agree for compare runs to be merged.
_MERGE_KEYS = ("methods", "percentile", "holdout", "split_seed", "withheld", "max_per_class")


def merge_runs(
    runs: Sequence[str | Path], out: str | Path, *, plots: bool = True, config: dict | None = None
) -> dict:
    """Merge compare runs made with different seeds (e.g. in parallel) into one comparison.

    Each run's ``compare.json`` holds every method's per-seed metrics; merging concatenates them
    and aggregates again, as if one call had fitted every seed. The runs must agree on the
    methods, the protocol and the data (same files, same sha256), and no seed may appear twice.

    Parameters
    ----------
    runs : sequence of paths
        Output folders of ``sculpt compare``.
    out : path
        Folder for the merged ``compare.json``, ``compare.md`` and bar plot.
    plots : bool, default=True
        Draw the bar plot.
    config : dict, optional
        Entries that replace the merged ``config``'s (``compare(jobs=...)`` passes its job
        count and wall time, where a merge of separate runs sums their times).

    Raises
    ------
    ValueError
        If fewer than two runs are given, or they differ in configuration, data or seeds.
    FileNotFoundError
        If a folder has no ``compare.json``.
    """
    import json

    if len(runs) < 2:
        raise ValueError(f"merge needs at least two compare runs, got {len(runs)}")
    loaded = []
    for run in runs:
        path = Path(run) / "compare.json"
        if not path.is_file():
            raise FileNotFoundError(f"no compare.json in {run}")
        loaded.append(json.loads(path.read_text()))
    first = loaded[0]["config"]
    for run, results in zip(runs[1:], loaded[1:], strict=True):
        cfg = results["config"]
        for key in _MERGE_KEYS:
            if cfg.get(key) != first.get(key):
                raise ValueError(
                    f"cannot merge {run}: its {key}={cfg.get(key)!r} differs from "
                    f"{runs[0]}'s {first.get(key)!r}"
                )
        if [f["sha256"] for f in cfg["data_files"]] != [f["sha256"] for f in first["data_files"]]:
            raise ValueError(f"cannot merge {run}: it was run on other data files")
    seeds = [s for results in loaded for s in results["config"].get("seeds_done", [])]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"cannot merge: seed(s) appear in more than one run: {seeds}")

    summaries = {}
    for name in first["methods"]:
        per_seed = [m for results in loaded for m in results["methods"][name]["per_seed"]]
        info = {
            k: v
            for k, v in loaded[0]["methods"][name].items()
            if k not in ("known", "zero_shot", "native", "seconds", "per_seed")
        }
        keep = ("known", "zero_shot", "native", "seconds")
        summaries[name] = {
            **info,
            **aggregate([{k: m[k] for k in keep if k in m} for m in per_seed]),
            "per_seed": per_seed,
        }
    order = sorted(summaries, key=lambda n: -summaries[n]["zero_shot"]["auroc"]["mean"])
    results = {
        **loaded[0],
        "methods": summaries,
        "order": order,
        "config": {
            **first,
            "seeds": sorted(seeds),
            "seeds_done": sorted(seeds),
            "merged_from": [str(r) for r in runs],
            "seconds": sum(r["config"]["seconds"] for r in loaded),
            **(config or {}),
        },
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(results, out / "compare.json")
    write_text(compare_markdown(results), out / "compare.md")
    if plots:
        plot_bars(results, out / "compare_bars.png")
    return results
