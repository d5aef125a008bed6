"""Finished benchmark runs, read back from their folders: their checkpoint records
(:func:`load_records`), and one result set merged from several runs (:func:`merge_runs`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from latent_sculpting.atomic import write_json
from latent_sculpting.research.benchmark.engine import provenance
from latent_sculpting.research.benchmark.splits import Fold
from latent_sculpting.research.benchmark.units import checkpoint_path

__all__ = ["load_records", "merge_runs"]


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
