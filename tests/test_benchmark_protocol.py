"""Folds of the benchmark: roles disjoint, withheld families and their siblings never fitted on,
evaluation rows never copies of fitting rows. Each guard is also shown to catch the mistake."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest

from latent_sculpting.io.encoding import encode
from latent_sculpting.research.benchmark import (
    Fold,
    LeakError,
    check_fold,
    load_dataset,
    split_fold,
    validation_folds,
)
from latent_sculpting.research.benchmark import test_folds as make_folds
from latent_sculpting.research.benchmark.splits import drop_duplicates, duplicates_of

ROLES = ("fit", "calibration", "test_benign", "test_attack", "known_test", "quarantined")


@pytest.fixture(scope="module")
def cic():
    return load_dataset("cicids2017", max_per_class=200)


def leaks(rows, dataset, must_not_fit) -> list[str]:
    """Independent of the engine's own guard: what a fold's rows do wrong."""
    found = []
    for i, a in enumerate(ROLES):
        for b in ROLES[i + 1 :]:
            if np.intersect1d(getattr(rows, a), getattr(rows, b)).size:
                found.append(f"{a} and {b} overlap")
    fitted = set(dataset.classes[rows.fit])
    found += [f"fits on {c}" for c in sorted(fitted & set(must_not_fit))]
    for role in ("calibration", "test_benign"):
        if set(dataset.classes[getattr(rows, role)]) - {dataset.benign}:
            found.append(f"{role} holds attacks")
    return found


def test_test_folds_of_the_cic_sample(cic):
    folds, skipped = make_folds(cic)
    assert [f.name for f in folds] == [
        "DoS", "DDoS", "PortScan", "Brute Force", "Web Attack", "Bot", "Infiltration", "paper",
    ]  # fmt: skip
    by = {f.name: f for f in folds}
    # The infiltration campaign: its port scan is kept out of training whenever Infiltration is
    # withheld (the paper's fold included), and tested with the port scans.
    assert by["Infiltration"].siblings == ("Infiltration - Portscan",)
    assert by["paper"].siblings == ("Infiltration - Portscan",)
    assert by["PortScan"].withheld == ("PortScan", "Infiltration - Portscan")
    assert by["PortScan"].siblings == ("Infiltration",)
    assert skipped == {}
    with pytest.raises(ValueError, match="unknown protocol"):
        make_folds(cic, ["nope"])
    with pytest.raises(ValueError, match="no family"):
        make_folds(cic, ["families"], families=["Ghost"])


@pytest.mark.parametrize("seed", [0, 1])
def test_no_fold_leaks(cic, seed):
    folds, _ = make_folds(cic)
    for fold in folds:
        rows = split_fold(cic, fold, seed)
        assert leaks(rows, cic, fold.excluded) == []
        check_fold(rows, cic, fold)
        assert set(cic.classes[rows.test_attack]) == set(fold.withheld)
        assert set(cic.classes[rows.quarantined]) == set(fold.siblings)
        assert "Heartbleed" in set(cic.classes[rows.fit])  # no family: always a known class


def test_the_leak_checks_catch_each_mistake(cic):
    folds, _ = make_folds(cic)
    fold = {f.name: f for f in folds}["Infiltration"]
    # Mistake 1: the campaign sibling forgotten, so the infiltrated host's port scan is fitted.
    careless = Fold(cic.name, "Infiltration", "family", ("Infiltration",), ("Infiltration",))
    rows = split_fold(cic, careless, 0)
    assert leaks(rows, cic, fold.excluded) == ["fits on Infiltration - Portscan"]
    with pytest.raises(LeakError, match="Infiltration - Portscan"):
        check_fold(rows, cic, fold)
    good = split_fold(cic, fold, 0)
    # Mistake 2: thresholds from the benign test rows (calibration = test rows).
    same = replace(good, calibration=good.test_benign)
    assert "calibration and test_benign overlap" in leaks(same, cic, fold.excluded)
    with pytest.raises(LeakError, match="both calibration and test_benign"):
        check_fold(same, cic, fold)
    # Mistake 3: a calibration row that was also fitted on.
    fitted = replace(good, fit=np.sort(np.r_[good.fit, good.calibration[:1]]))
    with pytest.raises(LeakError, match="both fit and calibration"):
        check_fold(fitted, cic, fold)
    # Mistake 4: a withheld row among the fitting rows.
    withheld = replace(
        good, fit=np.sort(np.r_[good.fit, good.test_attack[:1]]), test_attack=good.test_attack[1:]
    )
    assert "fits on Infiltration" in leaks(withheld, cic, fold.excluded)
    with pytest.raises(LeakError, match="withheld or sibling"):
        check_fold(withheld, cic, fold)


def test_every_split_is_redrawn_by_the_seed(cic):
    fold = make_folds(cic, ["paper"])[0][0]
    a, b = split_fold(cic, fold, 0), split_fold(cic, fold, 0)
    c = split_fold(cic, fold, 1)
    for role in ROLES:
        np.testing.assert_array_equal(getattr(a, role), getattr(b, role))
    for role in ("fit", "calibration", "test_benign", "known_test"):
        assert not np.array_equal(getattr(a, role), getattr(c, role)), role
    benign = int((cic.classes == cic.benign).sum())
    assert len(a.calibration) == len(a.test_benign) == round(0.2 * benign)


def _encoded(dataset, rows):
    spec = dataset.adapter.fit_spec(dataset.records.take(pa.array(rows.fit)))
    used = rows.used()
    return used, encode(spec, dataset.records.take(pa.array(used))).X


def test_duplicates_of_fitting_rows_are_removed_and_counted(cic):
    # Every benign row twice: copies land on both sides of the split.
    benign = np.flatnonzero(cic.classes == cic.benign)
    order = np.sort(np.r_[np.arange(len(cic)), benign])
    doubled = replace(cic, records=cic.records.take(pa.array(order)), classes=cic.classes[order])
    fold = make_folds(doubled, ["families"], families=["Bot"])[0][0]
    rows = split_fold(doubled, fold, 0)
    used, X = _encoded(doubled, rows)
    # Mistake: no deduplication. The guard sees the copies.
    with pytest.raises(LeakError, match="copy fitting rows"):
        check_fold(rows, doubled, fold, used, X)
    clean = drop_duplicates(rows, doubled, used, X)
    check_fold(clean, doubled, fold, used, X)
    assert clean.duplicates["calibration"] > 0 and clean.duplicates["test_benign"] > 0
    n = len(rows.calibration) - len(clean.calibration)
    assert n == clean.duplicates["calibration"]
    fit_X = X[np.searchsorted(used, clean.fit)]
    for role in ("calibration", "test_benign", "test_attack", "known_test"):
        assert not duplicates_of(fit_X, X[np.searchsorted(used, getattr(clean, role))]).any()


def test_a_withheld_attack_equal_to_a_benign_row_is_counted(cic):
    fold = make_folds(cic, ["families"], families=["Bot"])[0][0]
    rows = split_fold(cic, fold, 0)
    used, X = _encoded(cic, rows)
    X = X.copy()
    benign_fit = rows.fit[cic.classes[rows.fit] == cic.benign][0]
    X[np.searchsorted(used, rows.test_attack[:3])] = X[np.searchsorted(used, benign_fit)]
    clean = drop_duplicates(rows, cic, used, X)
    assert clean.duplicates["test_attack"] >= 3 and clean.duplicates["test_attack_as_benign"] >= 3
    assert len(clean.test_attack) == len(rows.test_attack) - clean.duplicates["test_attack"]


def test_validation_folds_stay_inside_the_test_folds_fitting_rows(cic):
    outer = make_folds(cic, ["paper"])[0][0]
    inner = validation_folds(cic, outer)
    assert [f.name for f in inner] == [
        "paper > DoS", "paper > DDoS", "paper > PortScan", "paper > Brute Force",
        "paper > Web Attack",
    ]  # fmt: skip
    dos = inner[0]
    assert dos.withheld == ("DoS Hulk", "DoS GoldenEye")  # the paper withholds the slow DoS
    outer_rows = split_fold(cic, outer, 0)
    for fold in inner:
        rows = split_fold(cic, fold, 0)
        check_fold(rows, cic, fold)
        assert set(rows.used()) <= set(outer_rows.fit)
        assert leaks(rows, cic, (*fold.withheld, *outer.excluded)) == []
    with pytest.raises(ValueError, match="not in another validation fold"):
        validation_folds(cic, dos)


def test_iot23_shared_classes_never_reach_training(shared_data):
    iot = load_dataset("iot-23", shared_data / "iot23_zeek", max_per_class=300)
    folds = {f.name: f for f in make_folds(iot)[0]}
    for name in ("C&C", "FileDownload"):
        rows = split_fold(iot, folds[name], 0)
        assert "C&C-FileDownload" not in set(iot.classes[rows.fit])
        assert "C&C-FileDownload" in set(iot.classes[rows.test_attack])
        check_fold(rows, iot, folds[name])
