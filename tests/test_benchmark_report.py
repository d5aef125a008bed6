"""The benchmark's result set: a figure at a false-positive rate that the fold's benign rows
cannot resolve reads "n/a (N benign)" and stays out of every mean, rank and paired interval;
per-fold bootstrap intervals; the withheld families where the reference trails the best
baseline; two runs compared fold by fold."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latent_sculpting.cli import main
from latent_sculpting.research.benchmark import compare_markdown, compare_runs
from latent_sculpting.research.benchmark import summary as summary_module
from latent_sculpting.research.benchmark.report import summarise, write_results
from latent_sculpting.research.benchmark.statistics import fold_bootstrap
from latent_sculpting.research.evaluation import min_rows_at_fpr, resolvable

KEYS = ("0.05", "0.01", "0.001")


def record(fold, method, seed, *, recall, auroc, benign=1500, calibration=1500, boot=None):
    """One checkpoint record as :func:`~latent_sculpting.research.benchmark.run_unit` writes it (the
    figures at every rate set to ``recall``)."""
    out = {
        "dataset": "toy",
        "fold": fold,
        "kind": "family",
        "outer": None,
        "withheld": [fold],
        "siblings": [],
        "split_seed": seed,
        "prevalence": 0.1,
        "rows": {
            "fit": 5000,
            "calibration": calibration,
            "test_benign": benign,
            "test_attack": 300,
            "known_test": 400,
            "quarantined": 0,
        },
        "duplicates_removed": {},
        "n_features": 4,
        "method": method,
        "auroc": auroc,
        "auprc": auroc,
        "threshold": dict.fromkeys(KEYS, 1.0),
        "recall_at_fpr": dict.fromkeys(KEYS, recall),
        "realised_fpr": {k: float(k) for k in KEYS},
        "f1_balanced": dict.fromkeys(KEYS, recall),
        "f1_prevalence": dict.fromkeys(KEYS, recall),
        "per_class_recall": {},
        "known": {"auroc": 0.99, "recall_at_fpr": dict.fromkeys(KEYS, 0.9)},
        "native": None,
        "fit_seconds": 1.0,
        "reused_fit": False,
        "score_seconds": 0.1,
        "key": "0" * 16,
    }
    if boot is not None:
        out["bootstrap"] = boot
    return out


@pytest.fixture
def planted():
    """Two folds with 1,500 benign test and held-out rows, and one ("Small") with 500: too few
    for 1 % (1,000 needed), enough for 5 %. On Small, "a" recalls everything and "b" nothing,
    so using that cell anyway would move every mean, rank and interval of recall at 1 %."""
    records = []
    for seed in (0, 1):
        records += [
            record("A", "a", seed, recall=0.20, auroc=0.90),
            record("A", "b", seed, recall=0.30, auroc=0.80),
            record("B", "a", seed, recall=0.40, auroc=0.95),
            record("B", "b", seed, recall=0.60, auroc=0.85),
            record("Small", "a", seed, recall=1.00, auroc=0.99, benign=500, calibration=500),
            record("Small", "b", seed, recall=0.00, auroc=0.70, benign=500, calibration=500),
        ]
    return records


def test_the_rule_and_its_boundaries():
    assert min_rows_at_fpr(0.01) == {"test_benign": 1000, "calibration": 99}
    assert min_rows_at_fpr(0.001) == {"test_benign": 10_000, "calibration": 999}
    assert min_rows_at_fpr(0.05) == {"test_benign": 200, "calibration": 19}
    assert resolvable(0.01, 1000, 99) and not resolvable(0.01, 999, 99)
    assert not resolvable(0.01, 1000, 98)
    # The CIC-IDS-2017 folds of the published run: 1,487 benign test rows, 1,48x held out.
    assert resolvable(0.01, 1487, 1487) and not resolvable(0.001, 1487, 1487)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        min_rows_at_fpr(0.0)


def missing(value) -> bool:
    """NaN in a summary, None once written as JSON."""
    return value is None or bool(np.isnan(value))


def check_small_fold_left_out(stats: dict) -> None:
    all_a = next(s for s in stats["summary"] if s["dataset"] == "all" and s["method"] == "a")
    assert all_a["recall@0.01"]["mean"] == pytest.approx(0.30)  # A and B only
    assert all_a["recall@0.01"]["n_folds"] == 2 and all_a["n_folds"] == 3
    assert all_a["recall@0.05"]["mean"] == pytest.approx((0.2 + 0.4 + 1.0) / 3)
    assert all_a["auroc"]["mean"] == pytest.approx((0.90 + 0.95 + 0.99) / 3)
    assert missing(all_a["recall@0.001"]["mean"]) and all_a["recall@0.001"]["n_folds"] == 0
    small = next(p for p in stats["per_fold"] if p["fold"] == "Small" and p["method"] == "a")
    assert small["recall@0.01"]["n"] == 0 and small["recall@0.05"]["n"] == 2
    comp = {
        (c["metric"], c["dataset"]): c
        for c in stats["comparisons"]
        if c["method"] == "b" and c["dataset"] == "all"
    }
    assert comp[("recall@0.01", "all")]["n"] == 2
    assert comp[("recall@0.01", "all")]["difference"] == pytest.approx(-0.15)
    assert comp[("auroc", "all")]["n"] == 3
    assert comp[("recall@0.001", "all")]["n"] == 0
    assert stats["ranks"]["recall@0.01"]["n_blocks"] == 2
    assert stats["ranks"]["auroc"]["n_blocks"] == 3


def test_a_fold_with_too_few_benign_rows_reads_na_and_stays_out_of_the_means(planted, tmp_path):
    results = write_results(
        planted,
        tmp_path,
        config={
            "methods": ["a", "b"],
            "reference": "a",
            "split_seeds": [0, 1],
            "fractions": {"calibration": 0.2},
        },
        provenance={},
        datasets={"toy": {}},
        plots=False,
    )
    check_small_fold_left_out(results)
    text = (tmp_path / "benchmark.md").read_text()
    small = next(line for line in text.splitlines() if line.startswith("| Small (300, 500)"))
    assert small.count("n/a (500 benign)") == 2  # recall at 1 % of both methods
    assert "0.990" in small  # its AUROC is still reported
    summary = next(line for line in text.splitlines() if line.startswith("| **a** |"))
    assert "0.300 ± 0.000 (2/3 folds)" in summary and "n/a (500 benign)" in summary
    assert "n/a (no fold resolves it)" in text

    # The mistake: the cell used anyway. The checks above see it.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(summary_module, "resolvable", lambda *args: True)
        wrong = summarise(planted, ["a", "b"], "a")
    with pytest.raises(AssertionError):
        check_small_fold_left_out(wrong)


def test_per_fold_intervals_average_the_seeds_replicates(tmp_path):
    rng = np.random.default_rng(0)
    reps = {
        s: {
            "auroc": rng.uniform(0.8, 0.9, 1000).tolist(),
            "recall@0.01": rng.uniform(0.1, 0.5, 1000).tolist(),
        }
        for s in (0, 1)
    }
    records = [record("A", "a", s, recall=0.3, auroc=0.85, boot=reps[s]) for s in (0, 1)] + [
        record("A", "b", s, recall=0.3, auroc=0.85) for s in (0, 1)
    ]  # written before intervals
    stats = summarise(records, ["a", "b"], "a")
    per = {p["method"]: p for p in stats["per_fold"]}
    mean = (np.asarray(reps[0]["auroc"]) + np.asarray(reps[1]["auroc"])) / 2
    assert per["a"]["interval"]["auroc"] == pytest.approx(list(np.quantile(mean, [0.025, 0.975])))
    assert per["b"]["interval"]["auroc"] is None
    write_results(
        records,
        tmp_path,
        config={
            "methods": ["a", "b"],
            "reference": "a",
            "split_seeds": [0, 1],
            "fractions": {"calibration": 0.2},
        },
        provenance={},
        datasets={"toy": {}},
        plots=False,
    )
    text = (tmp_path / "benchmark.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| A (300, 1,500)"))
    low, high = per["a"]["interval"]["recall@0.01"]
    assert f"[{low:.3f}, {high:.3f}]" in row
    # Replicates stay in the checkpoints, out of benchmark.json.
    assert "bootstrap" not in (tmp_path / "benchmark.json").read_text()


def paired_fold(*, pair_rows: bool) -> list[dict]:
    """One fold, two split seeds: "b" scores every attack row of "a" 0.1 higher, which lifts
    about 10 of 300 rows over the 1 % threshold. Replicates from ``fold_bootstrap`` with one seed
    for both methods (``pair_rows``), or another seed for "b" (what an unpaired comparison has)."""
    records = []
    for seed in (0, 1):
        rng = np.random.default_rng(seed)
        cal, benign = rng.normal(size=1500), rng.normal(size=1500)
        attacks = rng.uniform(1.0, 4.0, 300)
        for method, shift in (("a", 0.0), ("b", 0.1)):
            boot_seed = seed if pair_rows or method == "a" else seed + 100
            reps = fold_bootstrap(cal, benign, attacks + shift, seed=boot_seed)
            threshold = np.quantile(cal, 0.99)
            rec = record(
                "F",
                method,
                seed,
                recall=float((attacks + shift > threshold).mean()),
                auroc=0.9,
                boot={k: v.tolist() for k, v in reps.items()},
            )
            rec["bootstrap_pairing"] = "rows"
            records.append(rec)
    return records


def test_per_fold_paired_interval_tells_a_small_consistent_difference_from_noise(tmp_path):
    """The reference's recall is below "b"'s on the same rows by about 0.03: a paired bootstrap
    on the fold's rows resolves it (lower), independent resamples of the two cannot (tie)."""
    config = {
        "methods": ["a", "b"],
        "reference": "a",
        "split_seeds": [0, 1],
        "fractions": {"calibration": 0.2},
    }
    paired = paired_fold(pair_rows=True)
    stats = summarise(paired, ["a", "b"], "a")
    by_metric = {c["metric"]: c for c in stats["fold_comparisons"]}
    recall = by_metric["recall@0.01"]
    assert recall["difference"] < 0 and recall["high"] < 0 and recall["verdict"] == "lower"
    assert recall["split_seeds"] == 2
    unpaired = summarise(paired_fold(pair_rows=False), ["a", "b"], "a")
    loose = next(c for c in unpaired["fold_comparisons"] if c["metric"] == "recall@0.01")
    assert loose["verdict"] == "tie" and loose["high"] - loose["low"] > 3 * (
        recall["high"] - recall["low"]
    )
    write_results(paired, tmp_path, config=config, provenance={}, datasets={"toy": {}}, plots=False)
    text = (tmp_path / "benchmark.md").read_text()
    assert "## Per fold, `a` minus each method: recall at 1 % FPR" in text
    assert "**lower**" in text and "Folds and methods where `a` is lower: 1." in text
    # Replicates from before row pairing (sorted scores resampled) pair nothing: no cell.
    for r in paired:
        del r["bootstrap_pairing"]
    assert summarise(paired, ["a", "b"], "a")["fold_comparisons"] == []


@pytest.mark.parametrize("n_benign, n_attack", [(120, 80), (60, 150)])
def test_fold_bootstrap_recomputes_each_resample(n_benign, n_attack):
    """Each replicate equals the metrics recomputed on its resampled rows, whichever side the
    Mann-Whitney count walks (the smaller)."""
    from sklearn.metrics import roc_auc_score

    from latent_sculpting.research.evaluation import threshold_at_fpr

    rng = np.random.default_rng(3)
    # Integer scores: many ties, which the AUROC counts one half.
    cal = rng.integers(0, 40, 150).astype(float)
    benign = rng.integers(0, 40, n_benign).astype(float)
    attacks = rng.integers(10, 60, n_attack).astype(float)
    out = fold_bootstrap(cal, benign, attacks, fprs=(0.05, 0.01), n_resamples=50, seed=7, chunk=50)
    draw = np.random.default_rng(7)
    cal_i = draw.integers(0, len(cal), (50, len(cal)))
    benign_i = draw.integers(0, len(benign), (50, len(benign)))
    attack_i = draw.integers(0, len(attacks), (50, len(attacks)))
    for r in range(50):
        # Rows drawn by position: what makes two methods' replicates paired row by row.
        b, a = benign[benign_i[r]], attacks[attack_i[r]]
        y = np.r_[np.zeros(len(b)), np.ones(len(a))]
        assert out["auroc"][r] == pytest.approx(roc_auc_score(y, np.r_[b, a]), abs=1e-12)
        for f in (0.05, 0.01):
            expected = (a > threshold_at_fpr(cal[cal_i[r]], f)).mean()
            assert out[f"recall@{f:g}"][r] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="attacks scores"):
        fold_bootstrap(cal, benign, [])


def gap_records() -> list[dict]:
    """Recall at 1 % on three folds: `default` trails rf by 0.10 on A (its seeds 0.45 and 0.55),
    leads on B and is 0.03 behind on C; the preset ablation `default-noknn` recalls 0.99
    everywhere and is no baseline; on D `default`'s benign rows do not resolve 1 %."""
    values = {
        "A": {"default": (0.45, 0.55), "rf": (0.60, 0.60), "knn": (0.52, 0.52)},
        "B": {"default": (0.80, 0.80), "rf": (0.78, 0.78), "knn": (0.70, 0.70)},
        "C": {"default": (0.30, 0.30), "rf": (0.33, 0.33), "knn": (0.20, 0.20)},
        "D": {"default": (0.10, 0.10), "rf": (0.90, 0.90), "knn": (0.90, 0.90)},
    }
    out = []
    for fold, methods in values.items():
        for method, recalls in [*methods.items(), ("default-noknn", (0.99, 0.99))]:
            for seed, recall in enumerate(recalls):
                small = fold == "D" and method == "default"
                benign = 500 if small else 1500
                out.append(record(fold, method, seed, recall=recall, auroc=0.9, benign=benign))
    return out


def test_the_report_says_where_the_reference_trails_the_best_baseline(tmp_path):
    methods = ["default", "default-noknn", "rf", "knn"]
    results = write_results(
        gap_records(),
        tmp_path,
        config={
            "methods": methods,
            "reference": "default",
            "split_seeds": [0, 1],
            "fractions": {"calibration": 0.2},
        },
        provenance={},
        datasets={"toy": {}},
        plots=False,
    )
    gaps = results["family_gaps"]
    assert [(f["fold"], f["best"], f["trails"]) for f in gaps["folds"]] == [
        ("A", "rf", True),
        ("B", "rf", False),
        ("C", "rf", False),
    ]  # D: 1 % unresolved for default; the preset ablation is never the best baseline
    assert gaps["folds"][0]["value"] == pytest.approx(0.50)
    assert gaps["folds"][0]["gap"] == pytest.approx(-0.10)
    counts = {m: (c["trailing"], c["folds"]) for m, c in gaps["methods"].items()}
    # Each against the best of the *other* baselines: rf against knn, knn against rf.
    assert counts == {"default": (1, 3), "default-noknn": (0, 4), "rf": (0, 4), "knn": (3, 4)}
    text = (tmp_path / "benchmark.md").read_text()
    assert "## Withheld families where `default` trails the best baseline" in text
    assert "trails by more than 0.05 on **1 of 3 folds**" in text
    assert "| toy | A | 0.500 | rf 0.600 | -0.100 | **yes** |" in text
    assert "| knn | 3 of 4 |" in text
    # A run without a baseline has no such section.
    only_ours = [r for r in gap_records() if r["method"].startswith("default")]
    assert summarise(only_ours, ["default", "default-noknn"], "default")["family_gaps"] is None


def write_run(folder, recall_of_default: float) -> None:
    records = [
        record(fold, method, seed, recall=recall, auroc=auroc)
        for fold, shift in (("A", 0.0), ("B", 0.1), ("C", 0.2))
        for seed in (0, 1)
        for method, recall, auroc in (
            ("default", recall_of_default + shift + 0.01 * seed, 0.9),
            ("rf", 0.5, 0.8),
        )
    ]
    config = {
        "methods": ["default", "rf"],
        "reference": "default",
        "split_seeds": [0, 1],
        "fractions": {"calibration": 0.2},
    }
    write_results(records, folder, config=config, provenance={}, datasets={"toy": {}}, plots=False)


def test_two_runs_compared_fold_by_fold(tmp_path):
    before, after = tmp_path / "before", tmp_path / "after"
    write_run(before, 0.30)
    write_run(after, 0.40)
    comparison = compare_runs(before, after)
    rows = {r["metric"]: r for r in comparison["methods"]["default"]["metrics"]}
    assert comparison["methods"]["default"]["paired_folds"] == 3
    recall = rows["recall@0.01"]
    assert recall["n"] == 3 and recall["verdict"] == "higher"
    assert recall["before"] == pytest.approx(0.405) and recall["after"] == pytest.approx(0.505)
    assert recall["difference"] == pytest.approx(0.10)
    assert rows["auroc"]["verdict"] == "tie" and rows["auroc"]["difference"] == 0
    assert rows["recall@0.001"] == {"metric": "recall@0.001", "n": 0}  # 1,500 benign rows
    text = compare_markdown(comparison)
    assert "| recall at 1 % FPR | 3 | 0.4050 | 0.5050 | +0.1000 |" in text
    assert "after higher" in text and "no fold resolves it" in text
    # The other way round, the verdict turns.
    back = compare_runs(after, before, ["default", "rf"])
    turned = {r["metric"]: r.get("verdict") for r in back["methods"]["default"]["metrics"]}
    assert turned["recall@0.01"] == "lower"
    assert back["methods"]["rf"]["metrics"][0]["verdict"] == "tie"
    with pytest.raises(ValueError, match="no fold of method 'knn'"):
        compare_runs(before, after, ["knn"])
    with pytest.raises(ValueError, match="not the result set of a benchmark run"):
        compare_runs(tmp_path, after)


def test_sculpt_benchmark_compare_prints_and_writes_the_comparison(tmp_path, capsys):
    before, after, out = tmp_path / "before", tmp_path / "after", tmp_path / "out"
    write_run(before, 0.30)
    write_run(after, 0.40)
    assert main(["benchmark", "--compare", str(before), str(after), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "## `default`: after - before over 3 paired folds" in printed
    assert (out / "comparison.md").read_text() == printed
    written = json.loads((out / "comparison.json").read_text())
    assert written["methods"]["default"]["metrics"][3]["verdict"] == "higher"
    assert main(["benchmark", "--compare", str(before), str(tmp_path / "none")]) == 2
