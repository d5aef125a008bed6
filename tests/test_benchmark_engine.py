"""``sculpt benchmark``'s engine: what each method is fitted and thresholded on, checkpoints,
resumption, merging, parallel jobs, files, and the command line (with its views)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from latent_sculpting.cli import main
from latent_sculpting.io.encoding import encode
from latent_sculpting.research.baselines import make_method
from latent_sculpting.research.benchmark import (
    LeakError,
    benchmark,
    load_dataset,
    load_records,
    merge_runs,
    run_unit,
    split_fold,
)
from latent_sculpting.research.benchmark import test_folds as make_folds
from latent_sculpting.research.benchmark import units as unit_module
from latent_sculpting.research.benchmark.splits import drop_duplicates
from latent_sculpting.research.evaluation import threshold_at_fpr

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

FOLD_KEYS = {
    "dataset", "withheld", "split_seed", "method", "auroc", "auprc", "recall_at_fpr",
    "realised_fpr", "f1_balanced", "f1_prevalence", "fit_seconds",
}  # fmt: skip


class LinearScore:
    """A deterministic score (a fixed projection of the features) that records its calls."""

    name, trains_on, feature_transform, library = "linear", "benign", "none", "test"
    native_threshold_ = None

    def __init__(self, log: list) -> None:
        self.log = log

    def fit(self, X, y, labels):
        self.w_ = np.random.default_rng(0).normal(size=X.shape[1])
        self.log.append(("fit", X.copy(), set(labels)))
        return self

    def decision_function(self, X):
        self.log.append(("score", X.copy(), None))
        return np.log1p(np.abs(X.astype(np.float64))) @ self.w_


@pytest.fixture(scope="module")
def cic():
    return load_dataset("cicids2017", max_per_class=150)


def expected(dataset, fold, seed):
    rows = split_fold(dataset, fold, seed)
    spec = dataset.adapter.fit_spec(dataset.records.take(pa.array(rows.fit)))
    used = rows.used()
    X = encode(spec, dataset.records.take(pa.array(used))).X
    rows = drop_duplicates(rows, dataset, used, X)
    return rows, lambda index: X[np.searchsorted(used, index)]


def test_methods_fit_on_the_fitting_rows_and_threshold_on_held_out_benign(cic, tmp_path):
    folds = {f.name: f for f in make_folds(cic)[0]}
    fold = folds["Infiltration"]
    log: list = []
    (record,) = run_unit(
        cic, fold, 3, ["linear"], out=tmp_path, factory=lambda *a: LinearScore(log)
    )
    rows, features = expected(cic, fold, 3)
    (_, fit_X, fit_labels), *scored = log
    np.testing.assert_array_equal(fit_X, features(rows.fit))
    assert not fit_labels & {"Infiltration", "Infiltration - Portscan"}
    assert [len(x) for _, x, _ in scored] == [
        len(rows.calibration), len(rows.test_benign), len(rows.test_attack), len(rows.known_test)
    ]  # fmt: skip
    w = np.random.default_rng(0).normal(size=fit_X.shape[1])

    def score(index):
        return np.log1p(np.abs(features(index).astype(np.float64))) @ w

    def thresholds_from_held_out(record) -> bool:
        return all(
            record["threshold"][k] == pytest.approx(threshold_at_fpr(score(rows.calibration), f))
            for k, f in (("0.05", 0.05), ("0.01", 0.01), ("0.001", 0.001))
        )

    assert thresholds_from_held_out(record)
    recall = (score(rows.test_attack) > record["threshold"]["0.05"]).mean()
    assert record["recall_at_fpr"]["0.05"] == pytest.approx(recall)
    realised = (score(rows.test_benign) > record["threshold"]["0.01"]).mean()
    assert record["realised_fpr"]["0.01"] == pytest.approx(realised)
    assert FOLD_KEYS <= set(record)
    assert record["rows"] == {k: len(getattr(rows, k)) for k in record["rows"]}

    # The mistake of the old compare: thresholds from the benign *test* rows. The check above
    # sees it.
    real = unit_module.fold_metrics
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            unit_module,
            "fold_metrics",
            lambda calibration, benign, attacks, **kw: real(benign, benign, attacks, **kw),
        )
        (wrong,) = run_unit(
            cic, fold, 3, ["linear"], out=tmp_path / "wrong", factory=lambda *a: LinearScore([])
        )
    assert not thresholds_from_held_out(wrong)


def test_the_engine_refuses_a_leaking_fold(cic, tmp_path, monkeypatch):
    fold = make_folds(cic, ["paper"])[0][0]
    real = unit_module.split_fold

    def leaky(dataset, fold, seed):
        rows = real(dataset, fold, seed)
        rows.fit = np.sort(np.r_[rows.fit, rows.test_attack[:5]])
        rows.test_attack = rows.test_attack[5:]
        return rows

    monkeypatch.setattr(unit_module, "split_fold", leaky)
    with pytest.raises(LeakError, match="withheld or sibling"):
        run_unit(cic, fold, 0, ["ecod"], out=tmp_path)


def test_the_engine_refuses_test_rows_that_copy_training_rows(cic, tmp_path, monkeypatch):
    benign = np.flatnonzero(cic.classes == cic.benign)
    order = np.sort(np.r_[np.arange(len(cic)), benign])
    doubled = type(cic)(**{**cic.__dict__, "records": cic.records.take(pa.array(order)),
                           "classes": cic.classes[order]})  # fmt: skip
    fold = make_folds(doubled, ["families"], families=["Bot"])[0][0]
    (record,) = run_unit(doubled, fold, 0, ["ecod"], out=tmp_path / "ok")
    assert record["duplicates_removed"]["test_benign"] > 0
    # Mistake: deduplication skipped.
    monkeypatch.setattr(unit_module, "drop_duplicates", lambda rows, *args: rows)
    with pytest.raises(LeakError, match="copy fitting rows"):
        run_unit(doubled, fold, 0, ["ecod"], out=tmp_path / "bad")


def test_checkpoints_resume_and_refuse_other_settings(cic, tmp_path):
    kwargs = {"datasets": [cic], "families": ["Bot", "DDoS"], "protocols": ["families"]}
    first = benchmark(**kwargs, methods=["ecod", "knn"], split_seeds=[0], out=tmp_path,
                      verbose=False, plots=False)  # fmt: skip
    files = sorted((tmp_path / "folds").rglob("*.json"))
    assert len(files) == 4  # 2 folds x 1 seed x 2 methods

    def no_fit(name, seed, shared):
        raise AssertionError(f"{name} was fitted again")

    again = benchmark(**kwargs, methods=["ecod", "knn"], split_seeds=[0], out=tmp_path,
                      verbose=False, plots=False, factory=no_fit)  # fmt: skip
    assert again["folds"] == first["folds"]
    files[0].unlink()
    fitted = []

    def counting(name, seed, shared):
        fitted.append(name)
        return make_method(name, seed, shared)

    benchmark(**kwargs, methods=["ecod", "knn"], split_seeds=[0], out=tmp_path, verbose=False,
              plots=False, factory=counting)  # fmt: skip
    assert len(fitted) == 1
    record = json.loads(files[1].read_text())
    files[1].write_text(json.dumps({**record, "key": "0" * 16}))
    with pytest.raises(ValueError, match="other data or settings"):
        benchmark(**kwargs, methods=["ecod", "knn"], split_seeds=[0], out=tmp_path,
                  verbose=False, plots=False)  # fmt: skip


def test_parallel_jobs_and_merged_runs_give_the_sequential_results(cic, tmp_path):
    kwargs = {
        "datasets": [cic], "families": ["Bot", "DDoS"], "protocols": ["families"],
        "methods": ["ecod"], "verbose": False, "plots": False,
    }  # fmt: skip
    both = benchmark(**kwargs, split_seeds=[0, 1], out=tmp_path / "both")
    parallel = benchmark(**kwargs, split_seeds=[0, 1], out=tmp_path / "par", jobs=2, threads=1)
    benchmark(**kwargs, split_seeds=[0], out=tmp_path / "s0")
    benchmark(**kwargs, split_seeds=[1], out=tmp_path / "s1")
    merged = merge_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged", plots=False)

    def key(r):
        return (r["fold"], r["split_seed"])

    for other in (parallel, merged):
        pairs = zip(sorted(both["folds"], key=key), sorted(other["folds"], key=key), strict=True)
        for a, b in pairs:
            assert a["auroc"] == pytest.approx(b["auroc"], abs=1e-12)
            assert a["threshold"] == pytest.approx(b["threshold"])
    assert merged["config"]["split_seeds"] == [0, 1]
    assert len(load_records(tmp_path / "merged")) == 4


def test_summary_is_the_sample_std_over_split_seeds(cic, tmp_path):
    results = benchmark(datasets=[cic], families=["Bot", "DDoS"], protocols=["families"],
                        methods=["ecod", "rf", "knn"], split_seeds=[0, 1], out=tmp_path,
                        verbose=False, plots=True, reference="rf")  # fmt: skip
    entry = next(
        s for s in results["summary"] if s["dataset"] == "cicids2017" and s["method"] == "rf"
    )
    per_seed = [
        np.mean(
            [r["auroc"] for r in results["folds"] if r["method"] == "rf" and r["split_seed"] == s]
        )
        for s in (0, 1)
    ]
    assert entry["auroc"]["mean"] == pytest.approx(np.mean(per_seed))
    assert entry["auroc"]["std"] == pytest.approx(np.std(per_seed, ddof=1))
    comp = [c for c in results["comparisons"] if c["metric"] == "auroc" and c["dataset"] == "all"]
    assert {c["method"] for c in comp} == {"ecod", "knn"} and all(c["n"] == 2 for c in comp)
    assert set(results["ranks"]["auroc"]["mean_rank"]) == {"ecod", "rf", "knn"}
    text = (tmp_path / "benchmark.md").read_text()
    for c in comp:
        word = {"tie": "tie", "higher": "rf higher", "lower": "rf lower"}[c["verdict"]]
        assert word in text
    for name in ("benchmark_recall_heatmap.png", "benchmark_cd_auroc.png"):
        assert (tmp_path / name).stat().st_size > 0
    prov = results["provenance"]
    assert prov["machine"] and prov["date"] and prov["command"] and prov["seconds"] > 0
    assert len(prov["load_average_start"]) == 3 and "git_commit" in prov


def test_cli_benchmark_end_to_end_on_every_dataset(shared_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SCULPT_SHARED", str(shared_data.parent))
    args = ["benchmark", "--max-per-class", "60", "--methods", "ecod", "knn", "--split-seeds",
            "0", "1", "--quiet", "--no-plots", "--out", str(tmp_path)]  # fmt: skip
    assert main(args) == 0
    assert "recall at 1 % FPR" in capsys.readouterr().out
    data = json.loads((tmp_path / "benchmark.json").read_text())
    assert data["config"]["datasets"] == ["cicids2017", "unsw-nb15", "iot-23"]
    assert {r["dataset"] for r in data["folds"]} == {"cicids2017", "unsw-nb15", "iot-23"}
    for record in data["folds"]:
        assert FOLD_KEYS <= set(record)
        assert (
            set(record["recall_at_fpr"]) == set(record["realised_fpr"]) == {"0.05", "0.01", "0.001"}
        )
        assert isinstance(record["withheld"], list)
    assert (tmp_path / "benchmark.md").read_text().startswith("# `sculpt benchmark`")


def test_cli_compare_and_sweep_are_views_of_the_engine(tmp_path, capsys):
    common = ["--max-per-class", "100", "--split-seeds", "0", "--quiet", "--no-plots"]
    assert (
        main(["compare", "--methods", "ecod", "knn@none", *common, "--out", str(tmp_path / "c")])
        == 0
    )
    # 100 rows per class leave 20 benign test rows: no recall at 1 % to print.
    assert "recall at 1 % FPR n/a (20 benign)" in capsys.readouterr().out
    data = json.loads((tmp_path / "c" / "benchmark.json").read_text())
    assert {r["fold"] for r in data["folds"]} == {"paper"}
    assert {r["method"] for r in data["folds"]} == {"ecod", "knn@none"}
    assert data["folds"][0]["siblings"] == ["Infiltration - Portscan"]
    assert main(["sweep", "--methods", "ecod", "--families", "Bot", "DDoS", *common,
                 "--out", str(tmp_path / "s")]) == 0  # fmt: skip
    data = json.loads((tmp_path / "s" / "benchmark.json").read_text())
    assert {r["fold"] for r in data["folds"]} == {"Bot", "DDoS"}
    assert main(["compare", "--methods", "nope", "--out", str(tmp_path / "x")]) == 2
    assert main(["sweep", "--families", "Ghost", "--out", str(tmp_path / "g")]) == 2
    assert main(["benchmark", "--data", "nonsense", "--out", str(tmp_path / "y")]) == 2


def test_an_interrupted_run_resumes_without_refitting_and_gives_the_same_results(
    cic, tmp_path, capsys
):
    kwargs = {"datasets": [cic], "families": ["Bot", "DDoS"], "protocols": ["families"],
              "methods": ["ecod", "knn"], "split_seeds": [0, 1], "verbose": False,
              "plots": False}  # fmt: skip
    fitted: list = []

    def interrupted(name, seed, shared):
        if len(fitted) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the fourth fit
        fitted.append((name, seed))
        return make_method(name, seed, shared)

    with pytest.raises(KeyboardInterrupt):
        benchmark(**kwargs, out=tmp_path / "run", factory=interrupted)
    assert len(list((tmp_path / "run" / "folds").rglob("*.json"))) == 3
    assert f"--out {tmp_path / 'run'} to resume" in capsys.readouterr().err

    refitted: list = []

    def counting(name, seed, shared):
        refitted.append((name, seed))
        return make_method(name, seed, shared)

    resumed = benchmark(**kwargs, out=tmp_path / "run", factory=counting)
    assert len(refitted) == 8 - 3
    assert f"resuming: 3 of 8 fold fits already done in {tmp_path / 'run'}" in (
        capsys.readouterr().err
    )
    assert resumed["provenance"]["resumed_fits"] == 3
    fresh = benchmark(**kwargs, out=tmp_path / "fresh")
    assert fresh["provenance"]["resumed_fits"] == 0

    def results(run):
        timing = {"fit_seconds", "score_seconds"}
        return [{k: v for k, v in r.items() if k not in timing} for r in run["folds"]]

    assert results(resumed) == results(fresh)

    def per_fold(run):
        return [{k: v for k, v in p.items() if k != "fit_seconds"} for p in run["per_fold"]]

    assert per_fold(resumed) == per_fold(fresh) and per_fold(resumed) != []
    assert load_records(tmp_path / "run") != [] and all(
        a["bootstrap"] == b["bootstrap"]
        for a, b in zip(load_records(tmp_path / "run"), load_records(tmp_path / "fresh"),
                        strict=True)
    )  # fmt: skip
    assert "Resumed: 3 of 8 fold fits" in (tmp_path / "run" / "benchmark.md").read_text()

    def no_fit(name, seed, shared):
        raise AssertionError(f"{name} was fitted again")

    benchmark(**kwargs, out=tmp_path / "run", factory=no_fit)
    assert "8 of 8 fold fits already done" in capsys.readouterr().err
