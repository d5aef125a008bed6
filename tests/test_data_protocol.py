"""Zero-shot protocol: disjoint, seeded, balanced splits without withheld classes in training."""

import numpy as np
import pytest

from latent_sculpting.data import (
    BENIGN,
    DEFAULT_WITHHELD,
    zero_shot_splits,
)


@pytest.fixture(scope="module")
def splits(sample_table):
    return zero_shot_splits(sample_table, seed=42)


def test_splits_are_disjoint_and_cover_what_they_should(sample_table, splits):
    train, internal, zero = splits.train.index, splits.internal_test.index, splits.zero_shot.index
    assert not set(train) & set(internal)
    assert not set(train) & set(zero)
    assert not set(internal) & set(zero)
    assert set(zero[splits.zero_shot.y == 1]) <= set(splits.zero_shot_attacks.index)
    labels = sample_table.labels
    np.testing.assert_array_equal(splits.train.labels, labels[train])
    np.testing.assert_array_equal(splits.train.X, sample_table.X[train])
    assert splits.train.X.dtype == np.float32 and splits.train.y.dtype == np.int8
    np.testing.assert_array_equal(splits.train.y, (labels[train] != BENIGN).astype(np.int8))


def test_no_withheld_class_in_training(sample_table, splits):
    assert splits.withheld == DEFAULT_WITHHELD
    for part in (splits.train, splits.internal_test):
        assert not set(part.labels) & set(DEFAULT_WITHHELD)
    assert set(splits.zero_shot_attacks.labels) == set(DEFAULT_WITHHELD)
    assert len(splits.zero_shot_attacks) == 736 + 3859 + 1740 + 36
    assert set(splits.zero_shot.labels) == set(DEFAULT_WITHHELD) | {BENIGN}


def test_benign_fractions_and_train_keeps_all_seen_rows(sample_table, splits):
    n_benign = 7492
    reserved = int(round(0.2 * n_benign))
    # The zero-shot side has fewer benign rows than withheld attacks, so all reserved benign
    # rows are used and the attacks are subsampled to match.
    assert splits.zero_shot.label_counts()[BENIGN] == reserved
    seen = n_benign - reserved + (56_277 - n_benign - 6371)
    test_total = len(splits.train) + sum(
        v
        for v in zero_shot_splits(sample_table, balance=False).internal_test.label_counts().values()
    )
    assert test_total == seen
    assert splits.train.label_counts()[BENIGN] == pytest.approx(0.8 * (n_benign - reserved), abs=2)


def test_balanced_sets_are_one_to_one_and_stratified(splits):
    for part in (splits.internal_test, splits.zero_shot):
        assert int(part.y.sum()) * 2 == len(part)
    counts = splits.zero_shot.label_counts()
    attacks = {k: v for k, v in counts.items() if k != BENIGN}
    # Proportions of the withheld classes are kept (largest-remainder quotas).
    total = 736 + 3859 + 1740 + 36
    for name, full in (("Bot", 736), ("DoS slowloris", 3859), ("DoS Slowhttptest", 1740)):
        assert attacks[name] == pytest.approx(full / total * sum(attacks.values()), abs=1)


def test_deterministic_and_seed_dependent(sample_table, splits):
    again = zero_shot_splits(sample_table, seed=42)
    for name in ("train", "internal_test", "zero_shot", "zero_shot_attacks"):
        np.testing.assert_array_equal(getattr(splits, name).index, getattr(again, name).index)
    other = zero_shot_splits(sample_table, seed=7)
    assert not np.array_equal(splits.train.index, other.train.index)
    assert splits.summary() == again.summary()


def test_rare_classes_do_not_break_stratification(sample_table):
    # Heartbleed has 11 rows; a 1-row class must stay in train instead of raising.
    rows = np.flatnonzero(sample_table.labels != "Heartbleed")
    rows = np.concatenate([rows, np.flatnonzero(sample_table.labels == "Heartbleed")[:1]])
    table = sample_table.subset(np.sort(rows))
    out = zero_shot_splits(table, seed=0)
    assert out.train.label_counts()["Heartbleed"] == 1
    assert "Heartbleed" not in out.internal_test.label_counts()


def test_withheld_aliases_and_errors(sample_table):
    out = zero_shot_splits(sample_table, withheld=["Botnet", "portscan"])
    assert out.withheld == ("Bot", "PortScan")
    assert "PortScan" not in out.train.label_counts()
    without_bot = sample_table.subset(sample_table.labels != "Bot")
    with pytest.raises(ValueError, match=r"\['Bot'\] not in the data; labels present: .*'BENIGN'"):
        zero_shot_splits(without_bot)
    with pytest.raises(ValueError, match="'Zeus'"):
        zero_shot_splits(sample_table, withheld=["Zeus"])
    with pytest.raises(ValueError, match="'BENIGN' cannot be withheld"):
        zero_shot_splits(sample_table, withheld=["BENIGN"])
    with pytest.raises(ValueError, match="test_fraction must be in"):
        zero_shot_splits(sample_table, test_fraction=1.5)
