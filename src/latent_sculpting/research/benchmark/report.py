"""The benchmark's result set: ``benchmark.json``, ``benchmark.md`` and the figures.

From the per-fold records of :func:`~.engine.run_unit` it computes the spread over split seeds
(sample std), the paired bootstrap intervals of the reference method against every other, and
the mean ranks with the Friedman test and Nemenyi's critical difference
(:mod:`.statistics`). The markdown's wording follows the intervals: a difference whose interval
contains 0 is written as a tie.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from latent_sculpting.atomic import write_json, write_text
from latent_sculpting.research.benchmark.statistics import (
    friedman_nemenyi,
    mean_std,
    paired_bootstrap,
    percentile_interval,
)
from latent_sculpting.research.evaluation import (
    BENIGN_TEST_ROWS_PER_FPR,
    FPRS,
    fpr_key,
    min_rows_at_fpr,
    resolvable,
)

__all__ = ["METRICS", "benchmark_markdown", "json_safe", "summarise", "write_results"]

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


def _get(record: dict, path: tuple[str, ...]) -> float:
    value = record
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return float("nan")
        value = value[key]
    return float("nan") if value is None else float(value)


def _fpr_of(metric: str) -> float | None:
    """The false-positive rate a metric is measured at (``"recall@0.01" -> 0.01``), if any."""
    fpr = metric.partition("@")[2]
    return float(fpr) if fpr else None


def _resolves(record: dict, fpr: float) -> bool:
    rows = record.get("rows") or {}
    return resolvable(fpr, rows.get("test_benign", 0), rows.get("calibration", 0))


def _value(record: dict, metric: str) -> float:
    """The record's metric, NaN where its fold's benign rows do not resolve the metric's
    false-positive rate (:func:`~latent_sculpting.research.evaluation.resolvable`): every mean, rank
    and paired interval reads metrics through here, so none uses such a cell."""
    fpr = _fpr_of(metric)
    if fpr is not None and not _resolves(record, fpr):
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


def _unit_values(records: list[dict], metric: str) -> dict[tuple, dict[str, float]]:
    """(dataset, fold) -> method -> the metric averaged over split seeds (NaN: unresolved)."""
    acc: dict[tuple, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        acc[(r["dataset"], r["fold"])][r["method"]].append(_value(r, metric))
    return {unit: {m: _finite_mean(v) for m, v in by.items()} for unit, by in acc.items()}


def _fold_interval(records: list[dict], metric: str) -> list[float] | None:
    """95 % percentile interval of the fold's metric averaged over its split seeds, from each
    seed's bootstrap replicates averaged replicate by replicate (each seed's rows resampled
    independently); None when a seed that enters the mean has no replicates (a checkpoint
    written before they were kept) or none resolves the metric."""
    used = [r for r in records if np.isfinite(_value(r, metric))]
    replicates = [np.asarray((r.get("bootstrap") or {}).get(metric, []), float) for r in used]
    if not used or any(len(x) == 0 for x in replicates):
        return None
    if len({len(x) for x in replicates}) != 1:
        return None
    low, high = percentile_interval(np.mean(replicates, axis=0))
    return [low, high]


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
                **{m: mean_std([_value(r, m) for r in rs]) for m in METRICS},
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
                    _finite_mean([_value(r, metric) for r in rs]) for rs in by_seed.values()
                ]
                entry[metric] = mean_std(per_seed)
                entry[metric]["n_folds"] = len(
                    {(r["dataset"], r["fold"]) for r in mine if np.isfinite(_value(r, metric))}
                )
            summary.append(entry)

    comparisons = []
    for metric in COMPARED:
        units = _unit_values(records, metric)
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
        units = _unit_values(records, metric)
        blocks = [u for u, v in units.items() if all(m in v for m in methods)]
        table = np.array([[units[u][m] for m in methods] for u in blocks]).reshape(-1, len(methods))
        ranks[metric] = friedman_nemenyi(table, methods)
    return {"per_fold": per_fold, "summary": summary, "comparisons": comparisons, "ranks": ranks}


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
                    title=f"{_heading(metric)}: mean rank over {rank['n_blocks']} folds",
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


def _heading(metric: str) -> str:
    name, _, fpr = metric.partition("@")
    labels = {
        "auroc": "AUROC",
        "auprc": "AUPRC",
        "recall": "recall",
        "realised_fpr": "realised FPR",
        "f1_balanced": "F1 balanced",
        "f1_prevalence": "F1 at prevalence",
        "known_auroc": "known-attack AUROC",
        "fit_seconds": "fit s",
    }
    return labels.get(name, name) + (f" at {100 * float(fpr):g} % FPR" if fpr else "")


def _cell(stat: dict | None, digits: int = 3) -> str:
    if not stat or stat.get("mean") is None:
        return "–"
    if stat.get("std") is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _na(rows: dict, fpr: float) -> str:
    """The cell of a fold whose benign rows do not resolve ``fpr``: "n/a (N benign)"."""
    need = min_rows_at_fpr(fpr)
    if rows.get("test_benign", 0) < need["test_benign"]:
        return f"n/a ({rows.get('test_benign', 0):,} benign)"
    return f"n/a ({rows.get('calibration', 0):,} held-out benign)"


def _rate_cell(
    stat: dict | None, metric: str, rows: dict | None, n_folds: int | None = None, digits: int = 3
) -> str:
    """A cell of a metric that may be measured at a false-positive rate: "n/a (N benign)" where
    no fold of the cell resolves it, and "(k/n folds)" where only some do."""
    fpr = _fpr_of(metric)
    empty = stat is None or stat.get("mean") is None
    if fpr is not None and empty and rows and not _resolves({"rows": rows}, fpr):
        return _na(rows, fpr)
    text = _cell(stat, digits)
    k = None if stat is None else stat.get("n_folds")
    if fpr is not None and n_folds and k is not None and 0 < k < n_folds:
        text += f" ({k}/{n_folds} folds)"
    return text


def _interval(bounds: Sequence[float | None] | None, digits: int = 3) -> str:
    if not bounds or bounds[0] is None or bounds[1] is None:
        return ""
    return f" [{bounds[0]:.{digits}f}, {bounds[1]:.{digits}f}]"


def _signed(x: float | None, digits: int = 3) -> str:
    return "–" if x is None else f"{x:+.{digits}f}"


def benchmark_markdown(results: dict) -> str:
    """The result set as one markdown page; comparisons worded by their intervals."""
    cfg, prov = results["config"], results["provenance"]
    reference = cfg["reference"]
    methods = cfg["methods"]
    seeds = cfg["split_seeds"]
    lines = [
        f"# `{cfg.get('title', 'sculpt benchmark')}`",
        "",
        f"Command: `{prov.get('command', '')}`. Date {prov.get('date')}; machine "
        f"{prov.get('machine')}; commit {prov.get('git_commit')}; torch "
        f"{prov.get('torch_version')}. Load average at start "
        f"{_load(prov.get('load_average_start'))}, at end {_load(prov.get('load_average_end'))}; "
        f"total time {prov.get('seconds') or 0:.0f} s ({cfg.get('jobs', 1)} job(s))."
        + (
            f" Resumed: {prov['resumed_fits']:,} of {len(results['folds']):,} fold fits were "
            "read from the checkpoints of an earlier run into the same folder (their fit times "
            "are that run's; the total time is this run's)."
            if prov.get("resumed_fits")
            else ""
        ),
        "",
        f"Split seeds {seeds}: each re-draws every split and seeds every model. "
        + ("Validation folds inside each test fold. " if cfg.get("validation") else "")
        + (
            f"Rows capped at {cfg['max_per_class']:,} per class. "
            if cfg.get("max_per_class")
            else ""
        )
        + "Thresholds are set on benign rows held out of every fit "
        f"({100 * cfg['fractions']['calibration']:g} % of the benign rows); test rows that copy "
        "a training row are removed. Protocol: docs/research/protocol.md.",
        "",
        "Mean ± sample std (ddof=1) over split seeds of the mean over folds. Recall is of the "
        "withheld family, at the threshold that flags the given share of held-out benign rows; "
        "F1 comes from that recall and the realised false-positive rate on the benign test "
        "rows, on a balanced set and at the dataset's natural prevalence of the family.",
        "",
        _resolution_note(),
        "",
    ]
    for dataset in [*results["datasets"], "all"]:
        rows = [s for s in results["summary"] if s["dataset"] == dataset]
        if not rows:
            continue
        title = "All datasets (mean over every fold)" if dataset == "all" else dataset
        n_folds = max(r["n_folds"] for r in rows)
        lines += [
            f"## {title}: {n_folds} fold(s)",
            "",
            "| method | AUROC | AUPRC | recall at 5 % | at 1 % | at 0.1 % | F1 balanced (1 %) "
            "| F1 at prevalence (1 %) | fit s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sorted(rows, key=lambda r: -(r["auroc"]["mean"] or 0)):
            name = f"**{r['method']}**" if r["method"] == reference else r["method"]
            n, benign = r["n_folds"], r.get("benign_rows")
            rates = " | ".join(
                _rate_cell(r[m], m, benign, n, d)
                for m, d in (
                    ("recall@0.05", 3),
                    ("recall@0.01", 3),
                    ("recall@0.001", 3),
                    ("f1_balanced@0.01", 3),
                    ("f1_prevalence@0.01", 4),
                )
            )
            lines.append(
                f"| {name} | {_cell(r['auroc'])} | {_cell(r['auprc'])} | {rates} "
                f"| {_cell(r['fit_seconds'], 1)} |"
            )
        lines.append("")

    lines += _native_lines(results, methods)
    lines += _comparison_lines(results, reference)
    lines += _rank_lines(results)
    lines += _fold_lines(results, methods)
    lines += _fpr_lines(results, methods)
    lines += _dataset_lines(results)
    return "\n".join(lines) + "\n"


def _resolution_note() -> str:
    needs = ", ".join(
        f"{100 * f:g} %: {n['test_benign']:,} benign test and {n['calibration']:,} held-out "
        "benign rows"
        for f in FPRS
        for n in [min_rows_at_fpr(f)]
    )
    return (
        "A figure at a false-positive rate α is reported only for folds with at least "
        f"{BENIGN_TEST_ROWS_PER_FPR}/α benign test rows and 1/α − 1 held-out benign rows "
        f"({needs}); elsewhere it reads n/a with the fold's benign count, and no mean, rank "
        "or paired interval uses it. A mean over only some folds says how many."
    )


def _load(values: Sequence[float] | None) -> str:
    return "–" if not values else " / ".join(f"{v:.2f}" for v in values)


def _native_lines(results: dict, methods: Sequence[str]) -> list[str]:
    """Recall and realised FPR at each method's own rule, mean over folds and seeds."""
    native = [r for r in results["folds"] if r.get("native")]
    if not native:
        return []
    lines = [
        "## At each method's native rule",
        "",
        "Classifiers at attack probability > 0.5; our presets at their own threshold; Stage 1 "
        "alone at margin > 0. Mean over folds and split seeds.",
        "",
        "| dataset | method | recall | realised FPR |",
        "|---|---|---:|---:|",
    ]
    for dataset in results["datasets"]:
        for method in methods:
            mine = [
                r["native"] for r in native if r["dataset"] == dataset and r["method"] == method
            ]
            if mine:
                recall = np.mean([n["recall"] for n in mine])
                fpr = np.mean([n["realised_fpr"] for n in mine])
                lines.append(f"| {dataset} | {method} | {recall:.3f} | {fpr:.4f} |")
    lines.append("")
    return lines


def _comparison_lines(results: dict, reference: str) -> list[str]:
    comps = results["comparisons"]
    if not comps:
        return []
    lines = [
        f"## `{reference}` against every other method",
        "",
        f"Difference `{reference}` minus the method, averaged over folds (each fold's split seeds "
        "averaged first), with a paired bootstrap 95 % interval over folds (10,000 resamples). "
        "An interval that contains 0 is a **tie**: the data do not tell the two apart.",
        "",
        "| method | scope | folds | " + " | ".join(_heading(m) for m in COMPARED) + " |",
        "|---|---|---:|" + "---|" * len(COMPARED),
    ]
    index = {(c["method"], c["dataset"], c["metric"]): c for c in comps}
    others = list(dict.fromkeys(c["method"] for c in comps))
    scopes = list(dict.fromkeys(c["dataset"] for c in comps))
    words = {"tie": "tie", "higher": f"{reference} higher", "lower": f"{reference} lower"}
    for other in others:
        for scope in scopes:
            cells, n = [], 0
            for metric in COMPARED:
                c = index.get((other, scope, metric))
                if c is None:
                    cells.append("–")
                    continue
                if c["n"] == 0 and _fpr_of(metric) is not None:
                    cells.append("n/a (no fold resolves it)")
                    continue
                n = max(n, c["n"])
                cells.append(
                    f"{_signed(c['difference'])} [{_signed(c['low'])}, {_signed(c['high'])}] "
                    f"{words.get(c['verdict'], c['verdict'])}"
                )
            lines.append(f"| {other} | {scope} | {n} | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def _rank_lines(results: dict) -> list[str]:
    lines = []
    for metric, rank in results["ranks"].items():
        if not rank["n_blocks"]:
            continue
        order = sorted(rank["mean_rank"].items(), key=lambda kv: kv[1])
        cd = rank["critical_difference"]
        lines += [
            f"## Mean rank by {_heading(metric)} over {rank['n_blocks']} folds",
            "",
            "| method | mean rank |",
            "|---|---:|",
            *(f"| {m} | {r:.2f} |" for m, r in order),
            "",
        ]
        if cd is None:
            lines += ["Too few methods or folds for the Friedman test.", ""]
            continue
        p = rank["friedman_p"]
        best, best_rank = order[0]
        tied = [m for m, r in order[1:] if r - best_rank < cd]
        lines.append(
            f"Friedman test: chi² = {rank['friedman_statistic']:.2f}, p = {p:.3g}. Nemenyi "
            f"critical difference at α = {rank['alpha']}: {cd:.2f} ranks (Demšar 2006). "
            + (
                f"No method is significantly apart from {best} "
                f"(the best mean rank): {', '.join(tied)}."
                if tied
                else f"{best} (the best mean rank) is significantly apart from every other."
            )
            if p is not None and p < rank["alpha"]
            else f"Friedman test: chi² = {rank['friedman_statistic']:.2f}, p = {p:.3g}: the "
            "ranks do not differ significantly, so no method stands apart."
        )
        lines.append("")
    return lines


def _fold_lines(results: dict, methods: Sequence[str]) -> list[str]:
    lines = []
    per = {(p["dataset"], p["fold"], p["method"]): p for p in results["per_fold"]}
    folds = list(dict.fromkeys((r["dataset"], r["fold"]) for r in results["folds"]))
    first = {}
    for r in results["folds"]:
        first.setdefault((r["dataset"], r["fold"]), r)
    for dataset in dict.fromkeys(d for d, _ in folds):
        mine = [f for f in folds if f[0] == dataset]
        lines += [
            f"## {dataset}: per fold, recall at 1 % FPR / AUROC",
            "",
            "Mean ± std over split seeds, and in brackets the 95 % bootstrap interval of that "
            "mean with the fitted models fixed: each seed's held-out benign, benign test and "
            "attack rows resampled (1,000 times). The interval is what other rows of the same "
            "traffic would give; the std, what another split and fit gave.",
            "",
            "| fold (test attacks, test benign) | " + " | ".join(methods) + " |",
            "|---|" + "---:|" * len(methods),
        ]
        for key in mine:
            r = first[key]
            n, benign = r["rows"]["test_attack"], r["rows"]["test_benign"]
            cells = []
            for m in methods:
                p = per.get((*key, m))
                if p is None:
                    cells.append("–")
                    continue
                interval = p.get("interval") or {}
                recall = _rate_cell(p["recall@0.01"], "recall@0.01", p.get("benign_rows"))
                if not recall.startswith("n/a"):
                    recall += _interval(interval.get("recall@0.01"))
                auroc = _cell(p["auroc"]) + _interval(interval.get("auroc"))
                cells.append(f"{recall} / {auroc}")
            lines.append(f"| {key[1]} ({n:,}, {benign:,}) | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _fpr_lines(results: dict, methods: Sequence[str]) -> list[str]:
    lines = [
        "## Realised benign false-positive rate on the test rows",
        "",
        "Mean over folds and seeds of the share of benign test rows above each threshold, on "
        "the folds whose benign rows resolve the rate (see above).",
        "",
        "| dataset | method | held-out benign rows | benign test rows | at 5 % | at 1 % "
        "| at 0.1 % |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in results["summary"]:
        if s["dataset"] == "all":
            continue
        mine = [
            r["rows"]
            for r in results["folds"]
            if r["dataset"] == s["dataset"] and r["method"] == s["method"]
        ]
        cal = [r["calibration"] for r in mine]
        test = [r["test_benign"] for r in mine]
        benign, n = s.get("benign_rows"), s["n_folds"]
        lines.append(
            f"| {s['dataset']} | {s['method']} | {min(cal):,}–{max(cal):,} "
            f"| {min(test):,}–{max(test):,} "
            + " | ".join(
                _rate_cell(s[f"realised_fpr@{k}"], f"realised_fpr@{k}", benign, n, 4)
                for k in ("0.05", "0.01", "0.001")
            )
            + " |"
        )
    lines.append("")
    return lines


def _dataset_lines(results: dict) -> list[str]:
    lines = ["## Data, folds and duplicates", ""]
    for name, d in results["datasets"].items():
        lines += [
            f"### {name} ({d.get('title', name)})",
            "",
            f"{d.get('rows', 0):,} rows from {len(d.get('files', []))} file(s)"
            + (f", capped at {d['max_per_class']:,} per class" if d.get("max_per_class") else "")
            + ". Families: "
            + "; ".join(f"{f}: {', '.join(c)}" for f, c in d.get("families", {}).items())
            + ".",
        ]
        if d.get("campaigns"):
            lines.append(
                "Campaigns (kept out of training together): "
                + "; ".join(", ".join(c) for c in d["campaigns"])
                + "."
            )
        for reason, n in d.get("left_out", {}).items():
            lines.append(f"Left out on reading: {n:,} {reason}.")
        for fold, why in d.get("skipped_folds", {}).items():
            lines.append(f"No fold {fold!r}: {why}.")
        lines += [
            "",
            "| fold | siblings kept out | fit rows | test benign | test attacks "
            "| duplicates removed (calibration / benign test / attacks, of which equal to benign "
            "/ known test) |",
            "|---|---|---:|---:|---:|---|",
        ]
        seen = set()
        for r in results["folds"]:
            if r["dataset"] != name or (r["fold"], r["split_seed"]) in seen:
                continue
            if r["split_seed"] != results["config"]["split_seeds"][0]:
                continue
            seen.add((r["fold"], r["split_seed"]))
            dup = r["duplicates_removed"]
            rows = r["rows"]
            lines.append(
                f"| {r['fold']} | {', '.join(r['siblings']) or '–'} | {rows['fit']:,} "
                f"| {rows['test_benign']:,} | {rows['test_attack']:,} "
                f"| {dup.get('calibration', 0):,} / {dup.get('test_benign', 0):,} / "
                f"{dup.get('test_attack', 0):,}, of which {dup.get('test_attack_as_benign', 0):,} "
                f"/ {dup.get('known_test', 0):,} |"
            )
        lines += ["", f"(Rows of split seed {results['config']['split_seeds'][0]}.)", ""]
    return lines
