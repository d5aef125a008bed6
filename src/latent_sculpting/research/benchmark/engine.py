"""Runs of the zero-day benchmark: every method on every fold and split seed, checkpointed.

A unit of work is a fold for a split seed: rows drawn by :func:`~.protocol.split_fold`, a
spec fitted on its training records encodes every row it uses (a method with
context features gets the dataset's context columns after them, :mod:`.context`), evaluation
rows that copy a training row are removed, the fold is checked for leaks, and each method is
fitted, thresholded on held-out benign rows and measured on test rows (:func:`run_unit`). Each
finished method writes one checkpoint, atomically, which a rerun into the same folder reads.
:func:`benchmark` runs the units (in parallel with ``jobs``) and writes the result set
(:mod:`.report`). Running, checkpointing (keys say what a result was computed from), parallel
workers and merging runs are one concern, a result set that a rerun can trust: hence its length.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latent_sculpting import __version__
from latent_sculpting.atomic import write_json
from latent_sculpting.io.encoding import encode
from latent_sculpting.research.baselines import Method, make_method, parse_method
from latent_sculpting.research.benchmark.context import MAIN_DATASETS, check_context, with_context
from latent_sculpting.research.benchmark.datasets import DATASETS, Dataset, load_dataset
from latent_sculpting.research.benchmark.report import json_safe
from latent_sculpting.research.benchmark.splits import (
    BENIGN_TEST_FRACTION,
    CALIBRATION_FRACTION,
    KNOWN_TEST_FRACTION,
    PROTOCOLS,
    Fold,
    check_fold,
    drop_duplicates,
    split_fold,
    test_folds,
    validation_folds,
)
from latent_sculpting.research.benchmark.statistics import fold_bootstrap
from latent_sculpting.research.evaluation import FPRS, fold_metrics
from latent_sculpting.threads import available_cpus, limit_threads

__all__ = [
    "BENCHMARK_METHODS",
    "QUICK",
    "MethodFactory",
    "benchmark",
    "load_records",
    "merge_runs",
    "provenance",
    "run_unit",
]

#: ``factory(name, random_state, shared) -> Method``: :func:`make_method` unless a caller (a
#: test, ``benchmarks/design/preset_search.py``) builds its own.
MethodFactory = Callable[[str, int | None, dict], Method]

#: Methods of a full run: our default, its flow channel alone, and every baseline.
BENCHMARK_METHODS: tuple[str, ...] = (
    "default",
    "default-noboost",
    "default-noknn",
    "default-noflow",
    "default-fisher",
    "default-sculpt",
    "fused",
    "rf",
    "hgb",
    "mlp",
    "knn",
    "iforest",
    "ocsvm",
    "ecod",
    "autoencoder",
    "deep-svdd",
    "deep-sad",
)

#: ``--quick``: every dataset, two split seeds, three methods, rows capped per class.
QUICK: dict[str, Any] = {
    "split_seeds": (0, 1),
    "methods": ("default", "rf", "knn"),
    "max_per_class": 1000,
}

#: Bumped when a change makes old checkpoints mean something else.
CHECKPOINT_VERSION = 2


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", text).strip("_") or "_"


def _checkpoint(out: Path, fold: Fold, seed: int, method: str) -> Path:
    return (
        out / "folds" / fold.dataset / _slug(fold.name) / f"seed-{seed}" / f"{_slug(method)}.json"
    )


def _key(
    dataset: Dataset, fold: Fold, seed: int, method: str, overrides: Mapping | None = None
) -> str:
    """What a checkpoint was computed from: a rerun reuses it only when all of it agrees."""
    content = {
        "overrides": dict(overrides or {}),
        "version": CHECKPOINT_VERSION,
        "dataset": dataset.name,
        "sha256": dataset.sha256,
        "max_per_class": dataset.max_per_class,
        "fold": [fold.name, list(fold.withheld), list(fold.excluded)],
        "seed": seed,
        "method": method,
        "fractions": [BENIGN_TEST_FRACTION, CALIBRATION_FRACTION, KNOWN_TEST_FRACTION],
        "fprs": list(FPRS),
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def _read_checkpoint(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("key") != key:
        raise ValueError(
            f"{path} was computed with other data or settings (key {record.get('key')} != "
            f"{key}); write to another --out folder"
        )
    return record


def run_unit(
    dataset: Dataset,
    fold: Fold,
    seed: int,
    methods: Sequence[str],
    *,
    out: Path,
    factory: MethodFactory = make_method,
    overrides: Mapping | None = None,
) -> list[dict]:
    """One fold for one split seed: every method fitted, scored and measured, checkpointed.

    ``overrides`` are the parameters ``factory`` applies to our presets (``--set``): part of
    each checkpoint's key.

    The split seed also seeds the models, so each seed re-draws every split and every fit.

    Returns
    -------
    list of dict
        One record per method (see ``docs/research/protocol.md`` for the keys).

    Raises
    ------
    LeakError
        If the fold's roles overlap, a withheld or sibling class reaches the fitting rows, or an
        evaluation row copies a fitting row.
    """
    keys = {m: _key(dataset, fold, seed, m, overrides) for m in methods}
    done = {m: _read_checkpoint(_checkpoint(out, fold, seed, m), keys[m]) for m in methods}
    if all(r is not None for r in done.values()):
        return [done[m] for m in methods]

    rows = split_fold(dataset, fold, seed)
    where = f"{dataset.name}, fold {fold.name}"
    spec = dataset.adapter.fit_spec(dataset.records.take(rows.fit), source=f"{where}: fit rows")
    used = rows.used()
    X = encode(spec, dataset.records.take(used), source=where).X
    rows = drop_duplicates(rows, dataset, used, X)
    check_fold(rows, dataset, fold, used, X)

    def features(index: np.ndarray) -> np.ndarray:
        return X[np.searchsorted(used, index)]

    classes = dataset.classes
    X_fit, labels_fit = features(rows.fit), classes[rows.fit]
    y_fit = (labels_fit != dataset.benign).astype(np.int64)
    # Methods learn from the family of each known attack, not its class: a rule that holds
    # known families out to learn how to meet unseen ones should hold out whole families, as
    # the protocol does (a class whose sibling stays in training is no unseen attack).
    family_of = {c: f for f, members in dataset.family_map().items() for c in members}
    labels_fit = np.asarray([family_of.get(c, c) for c in labels_fit], dtype=object)
    parts = {
        "calibration": features(rows.calibration),
        "test_benign": features(rows.test_benign),
        "test_attack": features(rows.test_attack),
        "known_test": features(rows.known_test),
    }
    prevalence = dataset.prevalence(fold.withheld)
    common = {
        "dataset": dataset.name,
        "fold": fold.name,
        "kind": fold.kind,
        "outer": None if fold.outer is None else fold.outer.name,
        "withheld": list(fold.withheld),
        "siblings": list(fold.siblings),
        "split_seed": seed,
        "prevalence": prevalence,
        # Rows used, after the duplicates of fitting rows were removed (counted beside).
        "rows": rows.counts(),
        "duplicates_removed": dict(rows.duplicates),
        "n_features": spec.n_features,
    }
    records = []
    shared: dict = {}
    for name in methods:
        if done[name] is not None:
            records.append(done[name])
            continue
        method = factory(name, seed, shared)
        start = time.perf_counter()
        X_method, method_parts = with_context(method, dataset, rows, X_fit, parts)
        method.fit(X_method, y_fit, labels_fit)
        fit_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scores = {part: method.decision_function(Xp) for part, Xp in method_parts.items()}
        score_seconds = time.perf_counter() - start
        for part, values in scores.items():
            if not np.isfinite(values).all():
                raise ValueError(f"{where}: {name} gave non-finite scores on the {part} rows")
        metrics = fold_metrics(
            scores["calibration"],
            scores["test_benign"],
            scores["test_attack"],
            prevalence=prevalence,
            attack_labels=classes[rows.test_attack],
        )
        known = fold_metrics(
            scores["calibration"], scores["test_benign"], scores["known_test"], prevalence=0.5
        )
        native = getattr(method, "native_threshold_", None)
        record = {
            **common,
            "method": name,
            "trains_on": getattr(method, "trains_on", ""),
            "feature_transform": getattr(method, "feature_transform", ""),
            "library": getattr(method, "library", ""),
            **metrics,
            "known": {"auroc": known["auroc"], "recall_at_fpr": known["recall_at_fpr"]},
            "native": None
            if native is None
            else {
                "threshold": float(native),
                "recall": float((scores["test_attack"] > native).mean()),
                "realised_fpr": float((scores["test_benign"] > native).mean()),
            },
            "fit_seconds": fit_seconds,
            "reused_fit": bool(getattr(method, "reused_fit_", False)),
            "score_seconds": score_seconds,
            "key": keys[name],
        }
        if all(len(scores[p]) for p in ("calibration", "test_benign", "test_attack")):
            # One seed per fold and split seed, the same for every method: paired resamples.
            replicates = fold_bootstrap(
                scores["calibration"],
                scores["test_benign"],
                scores["test_attack"],
                seed=[seed, zlib.crc32(dataset.name.encode()), zlib.crc32(fold.name.encode())],
            )
            record["bootstrap"] = {k: np.round(v, 6).tolist() for k, v in replicates.items()}
        record = json_safe(record)
        path = _checkpoint(out, fold, seed, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(record, path)
        records.append(record)
    return records


# Worker state of a parallel run: the datasets and the factory, sent once per process.
_WORKER: dict = {}


def _init_worker(
    datasets: dict[str, Dataset], factory: MethodFactory, threads: int, overrides: Mapping | None
) -> None:
    _WORKER.update(datasets=datasets, factory=factory, threads=threads, overrides=overrides)


def _run_in_worker(dataset: str, fold: Fold, seed: int, methods: list[str], out: Path) -> list:
    with limit_threads(_WORKER["threads"]):
        return run_unit(
            _WORKER["datasets"][dataset],
            fold,
            seed,
            methods,
            out=out,
            factory=_WORKER["factory"],
            overrides=_WORKER["overrides"],
        )


def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + (" (with uncommitted changes)" if dirty else "")


def provenance(command: Sequence[str] | None = None) -> dict:
    """Machine, date, versions, git commit, command line and load average of a run."""
    import sklearn
    import torch

    return {
        "command": " ".join(command if command is not None else sys.argv),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": platform.python_version(),
        "package_version": __version__,
        "torch_version": torch.__version__,
        "sklearn_version": sklearn.__version__,
        "numpy_version": np.__version__,
        "git_commit": _git_commit(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": list(os.getloadavg()),
    }


def _resolve_datasets(
    datasets: Sequence[str | Dataset], data: Mapping[str, Any] | None, max_per_class: int | None
) -> list[Dataset]:
    data = dict(data or {})
    unknown = sorted(set(data) - set(DATASETS))
    if unknown:
        raise ValueError(f"--data names unknown dataset(s) {unknown}; known: {', '.join(DATASETS)}")
    out = []
    for entry in datasets:
        if isinstance(entry, Dataset):
            out.append(entry)
        else:
            out.append(load_dataset(entry, data.get(entry), max_per_class=max_per_class))
    names = [d.name for d in out]
    if len(set(names)) != len(names):
        raise ValueError(f"datasets must be distinct, got {names}")
    return out


def benchmark(
    *,
    datasets: Sequence[str | Dataset] = MAIN_DATASETS,
    data: Mapping[str, Any] | None = None,
    methods: Sequence[str] = BENCHMARK_METHODS,
    split_seeds: Sequence[int] = (0, 1, 2),
    protocols: Sequence[str] = PROTOCOLS,
    validation: bool = False,
    families: Sequence[str] | None = None,
    withheld: Sequence[str] | None = None,
    max_per_class: int | None = None,
    reference: str | None = None,
    out: str | Path | None = None,
    jobs: int = 1,
    threads: int | None = None,
    plots: bool = True,
    verbose: bool = True,
    factory: MethodFactory = make_method,
    overrides: Mapping[str, Any] | None = None,
    command: Sequence[str] | None = None,
    title: str = "sculpt benchmark",
) -> dict:
    """Run the zero-day protocol over datasets, folds, split seeds and methods; write one
    result set.

    Parameters
    ----------
    datasets : sequence of str or Dataset
        Keys of :data:`~.datasets.DATASETS` (default all but the ablations), or datasets loaded.
    data : mapping of str to path, optional
        Dataset name -> files or folder (default: each adapter's own place).
    methods : sequence of str
        Names for :func:`~latent_sculpting.research.baselines.make_method` (or ``factory``).
    split_seeds : sequence of int
        Each seed re-draws every split and seeds every model.
    protocols : sequence of {"families", "paper"}
        Test folds (:func:`~.protocol.test_folds`).
    validation : bool, default False
        Run the validation folds inside each test fold instead of the test folds
        (:func:`~.protocol.validation_folds`): for choosing designs.
    families : sequence of str, optional
        Only these families (of every dataset that has them).
    withheld : sequence of str, optional
        Classes of CIC-IDS-2017's ``"paper"`` fold (default the paper's four).
    max_per_class : int, optional
        Cap rows per class of every dataset loaded here.
    reference : str, optional
        The method every other is compared with; default ``"default"`` if run, else the first.
    out : path, optional
        Output folder; default ``runs/benchmark-<UTC time>``. A folder holding checkpoints of
        an interrupted run resumes it.
    jobs : int, default 1
        Folds run at once, one process each.
    threads : int, optional
        BLAS/OpenMP/torch threads per process (default: the CPUs shared out over ``jobs``).
    plots : bool, default True
    verbose : bool, default True
        A progress bar over folds.
    factory : callable, default make_method
    overrides : mapping, optional
        Estimator parameters applied to each of our presets among ``methods`` (``--set``);
        part of every checkpoint's key and recorded in the configuration.
    command : sequence of str, optional
        The command line to record (default ``sys.argv``).
    title : str
        Heading of ``benchmark.md``.

    Returns
    -------
    dict
        The content of ``benchmark.json``.
    """
    from latent_sculpting.research.benchmark.report import write_results

    started = time.perf_counter()
    info = provenance(command)
    methods = list(methods)
    if not methods:
        raise ValueError("methods must name at least one method")
    if len(set(methods)) != len(methods):
        raise ValueError(f"methods must be distinct, got {methods}")
    if factory is make_method:  # another factory knows its own names
        for name in methods:
            parse_method(name)
    overrides = dict(overrides or {})
    if overrides:
        factory = partial(factory, overrides=overrides)
        for name in methods:
            factory(name, 0, None)  # a parameter that does not fit fails before any data
    split_seeds = list(split_seeds)
    if not split_seeds or len(set(split_seeds)) != len(split_seeds):
        raise ValueError(f"split_seeds must name distinct seeds, got {split_seeds}")
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    reference = reference or ("default" if "default" in methods else methods[0])
    if reference not in methods:
        raise ValueError(f"reference {reference!r} is not among the methods {methods}")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(out) if out is not None else Path("runs") / f"benchmark-{stamp}"
    out.mkdir(parents=True, exist_ok=True)

    loaded = _resolve_datasets(datasets, data, max_per_class)
    check_context(loaded, methods, factory)
    if families is not None:
        known = {f for d in loaded for f in d.family_map()}
        unknown = [f for f in families if f not in known]
        if unknown:
            raise ValueError(
                f"no dataset run has the family {unknown}; families: {', '.join(sorted(known))}"
            )
    units: list[tuple[Dataset, Fold, int]] = []
    skipped: dict[str, dict[str, str]] = {}
    for dataset in loaded:
        wanted = None
        if families is not None:
            wanted = [f for f in families if f in dataset.family_map()]
        folds, skipped[dataset.name] = test_folds(
            dataset, protocols, families=wanted, withheld=withheld
        )
        if validation:
            folds = [inner for outer in folds for inner in validation_folds(dataset, outer)]
        units += [(dataset, fold, seed) for fold in folds for seed in split_seeds]
    if not units:
        raise ValueError(f"no fold to run; skipped: {skipped}")

    done = _finished_fits(units, methods, out, overrides)
    info["resumed_fits"] = done
    if done:
        total = len(units) * len(methods)
        print(
            f"resuming: {done} of {total} fold fits already done in {out}"
            + (" (nothing left to fit)" if done == total else ""),
            file=sys.stderr,
        )
    records: list[dict] = []
    bar = tqdm(total=len(units), desc=title, unit="fold", disable=not verbose)
    try:
        if jobs == 1 or len(units) == 1:
            with limit_threads(threads):
                for dataset, fold, seed in units:
                    bar.set_description(f"{dataset.name}: {fold.name} (seed {seed})")
                    records += run_unit(
                        dataset, fold, seed, methods, out=out, factory=factory, overrides=overrides
                    )
                    bar.update()
        else:
            records = _run_parallel(units, methods, out, factory, jobs, threads, bar, overrides)
    except KeyboardInterrupt:
        bar.close()
        # The default folder is named by the start time: without this, a user would not know
        # which folder to resume from.
        print(
            f"interrupted: the finished fold fits are checkpointed in {out}; run the same "
            f"command with --out {out} to resume",
            file=sys.stderr,
        )
        raise
    bar.close()

    info["load_average_end"] = list(os.getloadavg())
    info["seconds"] = time.perf_counter() - started
    config = {
        "title": title,
        "datasets": [d.name for d in loaded],
        "methods": methods,
        "overrides": overrides,
        "reference": reference,
        "split_seeds": split_seeds,
        "protocols": list(protocols),
        "validation": validation,
        "families": None if families is None else list(families),
        "max_per_class": max_per_class,
        "jobs": jobs,
        "threads": threads,
        "fractions": {
            "benign_test": BENIGN_TEST_FRACTION,
            "calibration": CALIBRATION_FRACTION,
            "known_test": KNOWN_TEST_FRACTION,
        },
        "fprs": list(FPRS),
    }
    results = write_results(
        records,
        out,
        config=config,
        provenance=info,
        datasets={d.name: {**d.summary(), "skipped_folds": skipped[d.name]} for d in loaded},
        plots=plots,
    )
    if verbose:
        tqdm.write(f"benchmark in {out}/ (benchmark.json, benchmark.md, plots)")
    return results


def _finished_fits(
    units: Sequence[tuple[Dataset, Fold, int]],
    methods: Sequence[str],
    out: Path,
    overrides: Mapping | None,
) -> int:
    """How many (unit, method) results an earlier run into ``out`` left as checkpoints; a
    checkpoint computed from other data or settings is refused here, before any fit."""
    done = 0
    for dataset, fold, seed in units:
        for method in methods:
            key = _key(dataset, fold, seed, method, overrides)
            done += _read_checkpoint(_checkpoint(out, fold, seed, method), key) is not None
    return done


def _run_parallel(
    units: list[tuple[Dataset, Fold, int]],
    methods: list[str],
    out: Path,
    factory: MethodFactory,
    jobs: int,
    threads: int | None,
    bar: Any,
    overrides: Mapping | None = None,
) -> list[dict]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    datasets = {d.name: d for d, _, _ in units}
    threads = threads or max(1, available_cpus() // jobs)
    # spawn, not fork: a forked child inherits torch's thread pools and OpenMP state.
    context = multiprocessing.get_context("spawn")
    results: dict[int, list[dict]] = {}
    with ProcessPoolExecutor(
        max_workers=jobs,
        mp_context=context,
        initializer=_init_worker,
        initargs=(datasets, factory, threads, overrides),
    ) as pool:
        futures = {
            pool.submit(_run_in_worker, d.name, fold, seed, methods, out): i
            for i, (d, fold, seed) in enumerate(units)
        }
        for future in as_completed(futures):
            results[futures[future]] = future.result()
            bar.update()
    # In unit order, as a sequential run gives them.
    return [r for i in range(len(units)) for r in results[i]]


def load_records(run: str | Path) -> list[dict]:
    """Every checkpoint record under ``run/folds``, in a stable order."""
    folder = Path(run) / "folds"
    if not folder.is_dir():
        raise FileNotFoundError(f"no benchmark checkpoints in {run} (no folds/ folder)")
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("*.json"))]


def merge_runs(runs: Sequence[str | Path], out: str | Path, *, plots: bool = True) -> dict:
    """One result set from the checkpoints of several runs (e.g. one split seed per machine).

    Records of the same dataset, fold, split seed and method must agree on their key (the same
    data and settings); the first is kept.

    Raises
    ------
    ValueError
        If fewer than two runs are given, or two runs computed the same record differently.
    FileNotFoundError
        If a run has no checkpoints.
    """
    from latent_sculpting.research.benchmark.report import write_results

    if len(runs) < 2:
        raise ValueError(f"merge needs at least two benchmark runs, got {len(runs)}")
    out = Path(out)
    seen: dict[tuple, dict] = {}
    configs = []
    for run in runs:
        summary = Path(run) / "benchmark.json"
        if summary.is_file():
            configs.append(json.loads(summary.read_text()))
        for record in load_records(run):
            ident = (record["dataset"], record["fold"], record["split_seed"], record["method"])
            if ident in seen and seen[ident]["key"] != record["key"]:
                raise ValueError(f"cannot merge {run}: {ident} was computed with other settings")
            seen.setdefault(ident, record)
    records = list(seen.values())
    for record in records:
        fold = Fold(record["dataset"], record["fold"], record["kind"], (), ())
        path = _checkpoint(out, fold, record["split_seed"], record["method"])
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(record, path)
    first = configs[0] if configs else {"config": {}, "datasets": {}}
    methods = list(dict.fromkeys(r["method"] for r in records))
    config = {
        **first.get("config", {}),
        "methods": methods,
        "split_seeds": sorted({r["split_seed"] for r in records}),
        "merged_from": [str(r) for r in runs],
    }
    if config.get("reference") not in methods:
        config["reference"] = "default" if "default" in methods else methods[0]
    datasets = {}
    for c in configs:
        datasets.update(c.get("datasets", {}))
    info = provenance()
    info["seconds"] = sum(c.get("provenance", {}).get("seconds", 0.0) for c in configs)
    return write_results(
        records, out, config=config, provenance=info, datasets=datasets, plots=plots
    )
