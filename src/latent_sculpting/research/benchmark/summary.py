"""The benchmark's statistics over its per-fold records (:func:`~.units.run_unit`): the spread
over split seeds (sample std), the paired bootstrap intervals of the reference method against
every other, the mean ranks with the Friedman test and Nemenyi's critical difference
(:mod:`.statistics`), and the withheld families where the reference trails the best baseline.
Every figure at a false-positive rate reads through :func:`metric_value`, which leaves out a
fold whose benign rows do not resolve the rate.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from latent_sculpting.research.baselines import BASELINES
from latent_sculpting.research.benchmark.statistics import (
    friedman_nemenyi,
    mean_std,
    paired_bootstrap,
    percentile_interval,
    verdict,
)
from latent_sculpting.research.evaluation import FPRS, fpr_key, resolvable

__all__ = [
    "COMPARED",
    "FOLD_COMPARED",
    "GAP_MARGIN",
    "GAP_METRIC",
    "INTERVALS",
    "METRICS",
    "RANKED",
    "family_gaps",
    "fpr_of",
    "is_baseline",
    "metric_value",
    "resolves",
    "summarise",
    "unit_values",
]

#: Metrics summarised, as paths into a record, with their table headings.
METRICS: dict[str, tuple[str, ...]] = {
    "auroc": ("auroc",),
    "auprc": ("auprc",),
    **{f"recall@{fpr_key(f)}": ("recall_at_fpr", fpr_key(f)) for f in FPRS},
    **{f"realised_fpr@{fpr_key(f)}": ("realised_fpr", fpr_key(f)) for f in FPRS},
    **{f"f1_balanced@{fpr_key(f)}": ("f1_balanced", fpr_key(f)) for f in FPRS},
    **{f"f1_prevalence@{fpr_key(f)}": ("f1_prevalence", fpr_key(f)) for f in FPRS},
    "known_auroc": ("known", "auroc"),
    "fit_seconds": ("fit_seconds",),
}
#: Metrics the reference is compared on, and ranked by.
COMPARED = ("auroc", "auprc", "recall@0.05", "recall@0.01", "recall@0.001")
RANKED = ("auroc", "recall@0.01")
#: Metrics with a per-fold bootstrap interval (:func:`.statistics.fold_bootstrap`).
INTERVALS = ("auroc", *(f"recall@{fpr_key(f)}" for f in FPRS))
#: Metrics on which the reference is compared with every method fold by fold.
FOLD_COMPARED = ("recall@0.01", "auroc")

#: The target for a withheld family (docs/research/presets.md): the reference's recall at 1 %
#: FPR no more than :data:`GAP_MARGIN` below the best baseline's on that family.
GAP_METRIC = "recall@0.01"
GAP_MARGIN = 0.05


def _get(record: dict, path: tuple[str, ...]) -> float:
    value = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return float("nan")
        value = value[key]
    return float("nan") if value is None else float(value)


def fpr_of(metric: str) -> float | None:
    """The false-positive rate a metric is measured at (``"recall@0.01" -> 0.01``), if any."""
    fpr = metric.partition("@")[2]
    return float(fpr) if fpr else None


def resolves(record: dict, fpr: float) -> bool:
    """Whether the record's benign rows resolve the false-positive rate ``fpr``."""
    rows = record.get("rows") or {}
    return resolvable(fpr, rows.get("test_benign", 0), rows.get("calibration", 0))


def metric_value(record: dict, metric: str) -> float:
    """The record's metric, NaN where its fold's benign rows do not resolve the metric's
    false-positive rate (:func:`~latent_sculpting.research.evaluation.resolvable`): every mean, rank
    and paired interval reads metrics through here, so none uses such a cell."""
    fpr = fpr_of(metric)
    if fpr is not None and not resolves(record, fpr):
        return float("nan")
    return _get(record, METRICS[metric])


def _finite_mean(values: Sequence[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    return float(arr.mean()) if len(arr) else float("nan")


def _fewest_rows(records: list[dict]) -> dict[str, int]:
    """Fewest benign test and held-out benign rows among ``records``."""
    return {
        role: min((r.get("rows") or {}).get(role, 0) for r in records)
        for role in ("test_benign", "calibration")
    }


def unit_values(records: list[dict], metric: str) -> dict[tuple, dict[str, float]]:
    """(dataset, fold) -> method -> the metric averaged over split seeds (NaN: unresolved)."""
    acc: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        acc[(r["dataset"], r["fold"])][r["method"]].append(metric_value(r, metric))
    return {unit: {m: _finite_mean(v) for m, v in by.items()} for unit, by in acc.items()}


def _fold_interval(records: list[dict], metric: str) -> list[float] | None:
    """95 % percentile interval of the fold's metric averaged over its split seeds, from each
    seed's bootstrap replicates averaged replicate by replicate (each seed's rows resampled
    independently); None when a seed that enters the mean has no replicates (a checkpoint
    written before they were kept) or none resolves the metric."""
    used = [r for r in records if np.isfinite(metric_value(r, metric))]
    replicates = [np.asarray((r.get("bootstrap") or {}).get(metric, []), float) for r in used]
    if not used or any(len(x) == 0 for x in replicates):
        return None
    if len({len(x) for x in replicates}) != 1:
        return None
    low, high = percentile_interval(np.mean(replicates, axis=0))
    return [low, high]


def _paired_fold_interval(mine: list[dict], theirs: list[dict], metric: str) -> dict | None:
    """The fold's ``metric`` of one method minus another's (each averaged over the split seeds
    both have), with the 95 % percentile interval of the replicates' differences: a paired
    bootstrap on the fold's rows, since both methods' replicates of a seed resample the same
    rows (:func:`.statistics.fold_bootstrap`). None unless every such seed resolves the metric
    for both and kept row-paired replicates."""
    by_seed = {r["split_seed"]: r for r in theirs}
    pairs = [(r, by_seed[r["split_seed"]]) for r in mine if r["split_seed"] in by_seed]
    if not pairs:
        return None
    differences, observed = [], []
    for a, b in pairs:
        values = metric_value(a, metric), metric_value(b, metric)
        if not all(np.isfinite(values)) or any(
            r.get("bootstrap_pairing") != "rows" for r in (a, b)
        ):
            return None
        ra = np.asarray((a.get("bootstrap") or {}).get(metric, []), float)
        rb = np.asarray((b.get("bootstrap") or {}).get(metric, []), float)
        if len(ra) == 0 or len(ra) != len(rb):
            return None
        differences.append(ra - rb)
        observed.append(values[0] - values[1])
    low, high = percentile_interval(np.mean(differences, axis=0))
    return {
        "difference": float(np.mean(observed)),
        "low": low,
        "high": high,
        "split_seeds": len(pairs),
        "verdict": verdict(low, high),
    }


def summarise(records: list[dict], methods: Sequence[str], reference: str) -> dict:
    """Per-fold and per-dataset aggregates, comparisons with ``reference`` and ranks."""
    datasets = list(dict.fromkeys(r["dataset"] for r in records))
    per_fold = []
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in records:
        groups[(r["dataset"], r["fold"], r["method"])].append(r)
    for (dataset, fold, method), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["split_seed"])
        per_fold.append(
            {
                "dataset": dataset,
                "fold": fold,
                "method": method,
                "withheld": rs[0]["withheld"],
                "split_seeds": [r["split_seed"] for r in rs],
                "benign_rows": _fewest_rows(rs),
                **{m: mean_std([metric_value(r, m) for r in rs]) for m in METRICS},
                "interval": {m: _fold_interval(rs, m) for m in INTERVALS},
            }
        )

    summary = []
    for dataset in [*datasets, "all"]:
        scope = [r for r in records if dataset == "all" or r["dataset"] == dataset]
        for method in methods:
            mine = [r for r in scope if r["method"] == method]
            if not mine:
                continue
            entry = {"dataset": dataset, "method": method, "n_folds": 0}
            by_seed: dict[int, list[dict]] = defaultdict(list)
            for r in mine:
                by_seed[r["split_seed"]].append(r)
            entry["n_folds"] = len({(r["dataset"], r["fold"]) for r in mine})
            entry["benign_rows"] = _fewest_rows(mine)
            for metric in METRICS:
                # Folds averaged within each seed, then the spread over seeds; a fold whose
                # benign rows do not resolve the metric is in neither.
                per_seed = [
                    _finite_mean([metric_value(r, metric) for r in rs]) for rs in by_seed.values()
                ]
                entry[metric] = mean_std(per_seed)
                entry[metric]["n_folds"] = len(
                    {
                        (r["dataset"], r["fold"])
                        for r in mine
                        if np.isfinite(metric_value(r, metric))
                    }
                )
            summary.append(entry)

    # Per fold, the reference against every other method on its own rows.
    fold_comparisons = []
    for (dataset, fold, method), rs in groups.items():
        if method == reference or (dataset, fold, reference) not in groups:
            continue
        for metric in FOLD_COMPARED:
            paired = _paired_fold_interval(groups[(dataset, fold, reference)], rs, metric)
            if paired is not None:
                fold_comparisons.append(
                    {"dataset": dataset, "fold": fold, "method": method, "metric": metric} | paired
                )

    comparisons = []
    for metric in COMPARED:
        units = unit_values(records, metric)
        for other in methods:
            if other == reference:
                continue
            for dataset in [*datasets, "all"]:
                pairs = [
                    (v[reference], v[other])
                    for (d, _), v in units.items()
                    if (dataset == "all" or d == dataset) and reference in v and other in v
                ]
                if not pairs:
                    continue
                a, b = zip(*pairs, strict=True)
                comparisons.append(
                    {
                        "metric": metric,
                        "dataset": dataset,
                        "reference": reference,
                        "method": other,
                        **paired_bootstrap(a, b),
                    }
                )

    ranks = {}
    for metric in RANKED:
        units = unit_values(records, metric)
        blocks = [u for u, v in units.items() if all(m in v for m in methods)]
        table = np.array([[units[u][m] for m in methods] for u in blocks]).reshape(-1, len(methods))
        ranks[metric] = friedman_nemenyi(table, methods)
    return {
        "per_fold": per_fold,
        "summary": summary,
        "comparisons": comparisons,
        "fold_comparisons": fold_comparisons,
        "ranks": ranks,
        "family_gaps": family_gaps(records, methods, reference),
    }


def is_baseline(method: str) -> bool:
    """Whether ``method`` is one of :data:`~latent_sculpting.research.baselines.BASELINES` (with
    or without an ``@transform``): never one of our presets or an ablation of one."""
    return method.partition("@")[0] in BASELINES


def family_gaps(
    records: list[dict],
    methods: Sequence[str],
    reference: str,
    *,
    metric: str = GAP_METRIC,
    margin: float = GAP_MARGIN,
) -> dict | None:
    """Where ``reference`` trails the best baseline, fold by fold (each fold withholds a family).

    Each method's ``metric`` is averaged over the fold's split seeds first; a fold whose benign
    rows do not resolve it leaves the method out there. ``folds`` lists, per fold, the
    reference's value, the best *other* baseline and its value, the gap and whether it is more
    than ``margin`` below; ``methods`` counts, for every method, the folds where it trails the
    best of the other baselines by more than ``margin``. None when the run has no baseline.
    """
    baselines = [m for m in methods if is_baseline(m)]
    if not baselines:
        return None
    units = unit_values(records, metric)

    def best_other(values: dict[str, float], method: str) -> tuple[str, float] | None:
        others = {
            m: values[m] for m in baselines if m != method and np.isfinite(values.get(m, np.nan))
        }
        if not others:
            return None
        best = max(others, key=others.__getitem__)
        return best, others[best]

    folds = []
    counts = {m: {"trailing": 0, "folds": 0} for m in methods}
    for (dataset, fold), values in units.items():
        for method in methods:
            found = best_other(values, method)
            value = values.get(method, np.nan)
            if found is None or not np.isfinite(value):
                continue
            gap = value - found[1]
            counts[method]["folds"] += 1
            counts[method]["trailing"] += int(gap < -margin)
            if method == reference:
                folds.append(
                    {
                        "dataset": dataset,
                        "fold": fold,
                        "value": value,
                        "best": found[0],
                        "best_value": found[1],
                        "gap": gap,
                        "trails": bool(gap < -margin),
                    }
                )
    return {
        "metric": metric,
        "margin": margin,
        "reference": reference,
        "folds": folds,
        "methods": counts,
    }
