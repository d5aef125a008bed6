"""The benchmark's result set: ``benchmark.json``, ``benchmark.md`` and the figures.

:func:`write_results` summarises the per-fold records (:func:`~.summary.summarise`: the spread
over split seeds, the paired bootstrap intervals, the ranks, the family gaps), writes them as
JSON and as markdown (:mod:`.markdown`) and draws the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from latent_sculpting.atomic import write_json, write_text
from latent_sculpting.research.benchmark.markdown import benchmark_markdown, heading
from latent_sculpting.research.benchmark.summary import METRICS, RANKED, summarise

__all__ = ["METRICS", "benchmark_markdown", "json_safe", "summarise", "write_results"]


def write_results(
    records: list[dict],
    out: Path,
    *,
    config: dict,
    provenance: dict,
    datasets: dict,
    plots: bool = True,
) -> dict:
    """Summarise, then write ``benchmark.json``, ``benchmark.md`` and (``plots``) the figures."""
    methods = [m for m in config["methods"] if any(r["method"] == m for r in records)]
    stats = summarise(records, methods, config["reference"])
    # The bootstrap replicates stay in the checkpoints; the result set keeps their intervals.
    folds = [{k: v for k, v in r.items() if k != "bootstrap"} for r in records]
    results = {
        "config": config,
        "provenance": provenance,
        "datasets": datasets,
        "folds": folds,
        **stats,
    }
    results = json_safe(results)
    write_json(results, out / "benchmark.json")
    write_text(benchmark_markdown(results), out / "benchmark.md")
    if plots:
        from latent_sculpting.research.plots import plot_critical_difference, plot_recall_heatmap

        plot_recall_heatmap(results, out / "benchmark_recall_heatmap.png", fpr="0.01")
        for metric in RANKED:
            rank = results["ranks"][metric]
            if rank["critical_difference"] is not None:
                plot_critical_difference(
                    rank["mean_rank"],
                    rank["critical_difference"],
                    out / f"benchmark_cd_{metric.replace('@', '_at_')}.png",
                    title=f"{heading(metric)}: mean rank over {rank['n_blocks']} folds",
                )
    return results


def json_safe(value: Any) -> Any:
    """NaN and infinities as None, NumPy scalars as Python ones: standard JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
