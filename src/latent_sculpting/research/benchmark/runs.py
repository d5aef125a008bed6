"""Finished benchmark runs, read back from their folders: their checkpoint records
(:func:`load_records`), one result set merged from several runs (:func:`merge_runs`), and the
same methods compared across two runs, fold by fold (:func:`compare_runs`, ``sculpt benchmark
--compare BEFORE AFTER``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from latent_sculpting.atomic import write_json
from latent_sculpting.research.benchmark.engine import provenance
from latent_sculpting.research.benchmark.markdown import heading
from latent_sculpting.research.benchmark.splits import Fold
from latent_sculpting.research.benchmark.statistics import paired_bootstrap
from latent_sculpting.research.benchmark.summary import COMPARED
from latent_sculpting.research.benchmark.units import checkpoint_path

__all__ = ["compare_markdown", "compare_runs", "load_records", "merge_runs"]


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
        path = checkpoint_path(out, fold, record["split_seed"], record["method"])
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


def compare_runs(
    before: str | Path, after: str | Path, methods: Sequence[str] | None = None
) -> dict:
    """Methods of two runs, fold by fold: did a change (two commits, two settings) move them?

    For each method, the folds both runs' ``benchmark.json`` hold are paired (each fold's split
    seeds averaged, as in the runs' own comparisons); per metric of :data:`~.summary.COMPARED`
    the result gives the mean over those folds in each run and the mean of the paired
    differences, ``after - before``, with its percentile bootstrap interval over folds
    (:func:`~.statistics.paired_bootstrap`, as between the methods of one run): an interval
    that contains 0 is a tie. A fold whose benign rows do not resolve a rate in one of the
    runs is left out of that rate.

    Parameters
    ----------
    before, after : path
        Folders of finished ``sculpt benchmark`` (or compare, sweep) runs.
    methods : sequence of str, optional
        Default: the reference method of the ``after`` run.

    Returns
    -------
    dict
        ``before``, ``after`` (the folders) and ``methods``: method -> ``paired_folds`` and
        ``metrics``, a list of ``{metric, n, before, after, difference, low, high, verdict}``
        (only ``metric`` and ``n`` = 0 where no paired fold resolves the metric).

    Raises
    ------
    ValueError
        If a folder has no readable ``benchmark.json``, a method has no fold in one of the
        runs, or the two runs share no fold of it.
    """
    old, new = _result_set(before), _result_set(after)
    if methods is None:
        methods = [new.get("config", {}).get("reference", "default")]
    compared = {}
    for method in methods:
        b, a = _folds(old, before, method), _folds(new, after, method)
        keys = [k for k in a if k in b]
        if not keys:
            raise ValueError(f"{before} and {after} share no fold of {method!r}")
        rows = []
        for metric in COMPARED:
            pairs = [
                (a[k][metric]["mean"], b[k][metric]["mean"])
                for k in keys
                if a[k][metric]["mean"] is not None and b[k][metric]["mean"] is not None
            ]
            if not pairs:
                rows.append({"metric": metric, "n": 0})
                continue
            after_values, before_values = (list(x) for x in zip(*pairs, strict=True))
            rows.append(
                {
                    "metric": metric,
                    "before": sum(before_values) / len(pairs),
                    "after": sum(after_values) / len(pairs),
                    **paired_bootstrap(after_values, before_values),
                }
            )
        compared[method] = {"paired_folds": len(keys), "metrics": rows}
    return {"before": str(before), "after": str(after), "methods": compared}


def _result_set(run: str | Path) -> dict:
    path = Path(run) / "benchmark.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ValueError(f"{path}: not the result set of a benchmark run ({error})") from None
    if not isinstance(data, dict) or not isinstance(data.get("per_fold"), list):
        raise ValueError(f"{path}: not the result set of a benchmark run (no per_fold list)")
    return data


def _folds(data: dict, run: str | Path, method: str) -> dict[tuple[str, str], dict]:
    folds = {(r["dataset"], r["fold"]): r for r in data["per_fold"] if r["method"] == method}
    if not folds:
        methods = sorted({r["method"] for r in data["per_fold"]})
        raise ValueError(f"{run}: no fold of method {method!r} (methods: {', '.join(methods)})")
    return folds


def compare_markdown(comparison: dict) -> str:
    """:func:`compare_runs`'s result as markdown, one table per method."""
    before, after = comparison["before"], comparison["after"]
    lines = [f"# `{after}` against `{before}`", ""]
    words = {"higher": "after higher", "lower": "after lower"}
    for method, entry in comparison["methods"].items():
        lines += [
            f"## `{method}`: after - before over {entry['paired_folds']} paired folds",
            "",
            "Each fold's split seeds averaged; 95 % bootstrap interval over folds (10,000 "
            "resamples). An interval that contains 0 is a **tie**.",
            "",
            "| metric | folds | before | after | after - before | interval | verdict |",
            "|---|---:|---:|---:|---:|---|---|",
        ]
        for row in entry["metrics"]:
            name = heading(row["metric"])
            if not row["n"]:
                lines.append(f"| {name} | 0 | n/a | n/a | n/a | no fold resolves it | – |")
                continue
            lines.append(
                f"| {name} | {row['n']} | {row['before']:.4f} | {row['after']:.4f} "
                f"| {row['difference']:+.4f} | [{row['low']:+.4f}, {row['high']:+.4f}] "
                f"| {words.get(row['verdict'], row['verdict'])} |"
            )
        lines.append("")
    return "\n".join(lines)
