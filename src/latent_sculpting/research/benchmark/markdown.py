"""``benchmark.md``: the result set (:mod:`.report`) as one markdown page. Comparisons are worded
by their intervals: a difference whose interval contains 0 is written as a tie.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from latent_sculpting.research.benchmark.summary import COMPARED, fpr_of, resolves
from latent_sculpting.research.evaluation import BENIGN_TEST_ROWS_PER_FPR, FPRS, min_rows_at_fpr

__all__ = ["benchmark_markdown", "heading"]


def heading(metric: str) -> str:
    """A metric's name as a table heading: ``"recall@0.01"`` -> ``"recall at 1 % FPR"``."""
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
    fpr = fpr_of(metric)
    empty = stat is None or stat.get("mean") is None
    if fpr is not None and empty and rows and not resolves({"rows": rows}, fpr):
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


def _difference_cell(comparison: dict, words: dict[str, str]) -> str:
    """A paired difference with its interval and its verdict in ``words``."""
    c = comparison
    return (
        f"{_signed(c['difference'])} [{_signed(c['low'])}, {_signed(c['high'])}] "
        f"{words.get(c['verdict'], c['verdict'])}"
    )


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
    lines += _fold_comparison_lines(results, reference)
    lines += _fpr_lines(results, methods)
    lines += _gap_lines(results)
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
        "| method | scope | folds | " + " | ".join(heading(m) for m in COMPARED) + " |",
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
                if c["n"] == 0 and fpr_of(metric) is not None:
                    cells.append("n/a (no fold resolves it)")
                    continue
                n = max(n, c["n"])
                cells.append(_difference_cell(c, words))
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
            f"## Mean rank by {heading(metric)} over {rank['n_blocks']} folds",
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


def _fold_comparison_lines(results: dict, reference: str) -> list[str]:
    """Per fold, the reference minus every other method, with the paired interval on the
    fold's rows."""
    comps = results.get("fold_comparisons") or []
    lines = []
    words = {"tie": "tie", "higher": "higher", "lower": "**lower**"}
    for metric in dict.fromkeys(c["metric"] for c in comps):
        mine = [c for c in comps if c["metric"] == metric]
        others = list(dict.fromkeys(c["method"] for c in mine))
        index = {(c["dataset"], c["fold"], c["method"]): c for c in mine}
        folds = list(dict.fromkeys((c["dataset"], c["fold"]) for c in mine))
        lines += [
            f"## Per fold, `{reference}` minus each method: {heading(metric)}",
            "",
            "Averaged over the split seeds both have, with the 95 % interval of a paired "
            "bootstrap on the fold's own rows (each seed's held-out benign, benign test and "
            "attack rows resampled 1,000 times, the same resamples for both methods, the models "
            "fixed). An interval that contains 0 is a tie; **lower** marks a fold where "
            f"`{reference}` is below the method by more than its rows can explain. A cell is "
            "missing where either side does not resolve the metric or its checkpoint predates "
            "row-paired resamples.",
            "",
            "| dataset | fold | " + " | ".join(others) + " |",
            "|---|---|" + "---|" * len(others),
        ]
        lower = 0
        for dataset, fold in folds:
            cells = []
            for other in others:
                c = index.get((dataset, fold, other))
                if c is None:
                    cells.append("–")
                    continue
                lower += c["verdict"] == "lower"
                cells.append(_difference_cell(c, words))
            lines.append(f"| {dataset} | {fold} | " + " | ".join(cells) + " |")
        lines += ["", f"Folds and methods where `{reference}` is lower: {lower}.", ""]
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


def _gap_lines(results: dict) -> list[str]:
    gaps = results.get("family_gaps")
    if not gaps or not gaps["folds"]:
        return []
    reference, margin = gaps["reference"], gaps["margin"]
    trailing = sum(f["trails"] for f in gaps["folds"])
    lines = [
        f"## Withheld families where `{reference}` trails the best baseline",
        "",
        f"Per test fold, `{reference}`'s {heading(gaps['metric'])} against the best baseline's "
        "on the same fold, each the mean over split seeds. Baselines are the run's methods "
        "among `research.baselines.BASELINES` (with or without an `@transform`), never a "
        "preset or an ablation of one; a fold whose benign rows do not resolve the rate is left "
        f"out. `{reference}` trails by more than {margin:g} on **{trailing} of "
        f"{len(gaps['folds'])} folds**.",
        "",
        f"| dataset | fold | {reference} | best baseline | gap | more than {margin:g} below |",
        "|---|---|---:|---|---:|---|",
    ]
    for f in gaps["folds"]:
        lines.append(
            f"| {f['dataset']} | {f['fold']} | {f['value']:.3f} | {f['best']} "
            f"{f['best_value']:.3f} | {f['gap']:+.3f} | {'**yes**' if f['trails'] else 'no'} |"
        )
    lines += [
        "",
        "Every method counted the same way, each against the best of the *other* baselines:",
        "",
        f"| method | folds more than {margin:g} below the best other baseline |",
        "|---|---:|",
    ]
    counted = sorted(
        gaps["methods"].items(), key=lambda item: (item[1]["trailing"], item[1]["folds"])
    )
    for method, c in counted:
        if c["folds"]:
            lines.append(f"| {method} | {c['trailing']} of {c['folds']} |")
    lines.append("")
    return lines
