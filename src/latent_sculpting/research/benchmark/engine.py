"""Runs of the zero-day benchmark: every method on every fold and split seed, checkpointed.

:func:`benchmark` checks its arguments, loads the datasets, lists the units of work (one fold of
one dataset for one split seed: :func:`~.units.run_unit`), runs them (in parallel with
``jobs``, one process each), records the run's provenance and writes the result set
(:mod:`.report`). A rerun into the same output folder resumes from the units' checkpoints.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latent_sculpting import __version__
from latent_sculpting.research.baselines import make_method, parse_method
from latent_sculpting.research.benchmark.ablations import MAIN_DATASETS
from latent_sculpting.research.benchmark.context import check_context
from latent_sculpting.research.benchmark.datasets import DATASETS, Dataset, load_dataset
from latent_sculpting.research.benchmark.methods import BENCHMARK_METHODS, QUICK
from latent_sculpting.research.benchmark.splits import (
    BENIGN_TEST_FRACTION,
    CALIBRATION_FRACTION,
    KNOWN_TEST_FRACTION,
    PROTOCOLS,
    Fold,
    test_folds,
    validation_folds,
)
from latent_sculpting.research.benchmark.units import (
    MethodFactory,
    checkpoint_key,
    checkpoint_path,
    read_checkpoint,
    run_unit,
)
from latent_sculpting.research.evaluation import FPRS
from latent_sculpting.threads import available_cpus, limit_threads

__all__ = ["BENCHMARK_METHODS", "QUICK", "benchmark", "provenance"]

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
    ours = factory is make_method
    if ours:  # another factory knows its own names
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
    if ours:  # built here only to read their context; another factory's fold checks its own
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
            key = checkpoint_key(dataset, fold, seed, method, overrides)
            done += read_checkpoint(checkpoint_path(out, fold, seed, method), key) is not None
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
