"""The benchmark's result set: a figure at a false-positive rate that the fold's benign rows
cannot resolve reads "n/a (N benign)" and stays out of every mean, rank and paired interval;
per-fold bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from latent_sculpting.research.benchmark import report as report_module
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
        patch.setattr(report_module, "resolvable", lambda *args: True)
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
    sorted_benign, sorted_attacks = np.sort(benign), np.sort(attacks)
    for r in range(50):
        b, a = sorted_benign[benign_i[r]], sorted_attacks[attack_i[r]]
        y = np.r_[np.zeros(len(b)), np.ones(len(a))]
        assert out["auroc"][r] == pytest.approx(roc_auc_score(y, np.r_[b, a]), abs=1e-12)
        for f in (0.05, 0.01):
            expected = (a > threshold_at_fpr(cal[cal_i[r]], f)).mean()
            assert out[f"recall@{f:g}"][r] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="attacks scores"):
        fold_bootstrap(cal, benign, [])
