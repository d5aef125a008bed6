"""Pseudo-zero-day folds: each known family held out, supervised channels refitted without it."""

import numpy as np
import pytest

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.model.channels.registry import ForestChannel
from latent_sculpting.model.folds import MIN_FAMILY_ROWS

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

STACKED = {
    **preset("fast"),
    "stage1": False,
    "svdd_dim": 0,
    "score": "stacked",
    "stack_folds": 8,
    "forest_trees": 10,
    "boost_iter": 0,
    "knn_prototypes": 32,
}


def data(seed=0, families=("a", "b", "c")):
    """Benign rows near the origin, one cluster of attacks per family along its own axis."""
    rng = np.random.default_rng(seed)
    X = [rng.normal(size=(600, 6))]
    groups = [np.array(["benign"] * 600, dtype=object)]
    for j, family in enumerate(families):
        X.append(rng.normal(size=(60, 6)) + 6 * np.eye(6)[j])
        groups.append(np.array([family] * 60, dtype=object))
    X = np.vstack(X).astype(np.float32)
    groups = np.concatenate(groups)
    return X, (groups != "benign").astype(int), groups


def test_every_family_is_held_out_from_the_supervised_channel_only(monkeypatch):
    fitted = []
    original = ForestChannel.fit

    def spy(self, Z, y, held_out):
        fitted.append(int(y.sum()))
        return original(self, Z, y, held_out)

    monkeypatch.setattr(ForestChannel, "fit", spy)
    X, y, groups = data()
    model = LatentSculpting(**STACKED, random_state=0).fit(X, y, groups=groups)
    # The main fit sees every fitting attack; each of the three folds all but one family's.
    main, *folds = fitted
    assert len(folds) == 3
    assert all(main - n == pytest.approx(main / 3, abs=3) for n in folds)
    assert set(model.fusion_.weights_) == {"nll", "forest", "knn"}
    assert len(model.fusion_.fold_scores_) == 3
    assert model.history_["fusion_weights"] == model.fusion_.weights_


def test_stack_neighbours_leaves_each_folds_nearest_family_out_of_its_refits(monkeypatch):
    # Families a and b are siblings (the same direction, b a little further); c lies apart.
    # With one neighbour left out, each fold's refit trains on one family only, and the fold
    # that holds out a (or b) keeps c, never the sibling.
    left = []
    original = ForestChannel.fit

    def spy(self, Z, y, held_out):
        attacks = Z[y == 1]
        left.append((int(y.sum()), attacks.mean(axis=0)[:3].tolist()))
        return original(self, Z, y, held_out)

    monkeypatch.setattr(ForestChannel, "fit", spy)
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(600, 6))]
    groups = [np.array(["benign"] * 600, dtype=object)]
    for family, centre in (
        ("a", 6 * np.eye(6)[0]),
        ("b", 8 * np.eye(6)[0]),
        ("c", 6 * np.eye(6)[2]),
    ):
        X.append(rng.normal(size=(60, 6)) + centre)
        groups.append(np.array([family] * 60, dtype=object))
    X, groups = np.vstack(X).astype(np.float32), np.concatenate(groups)
    y = (groups != "benign").astype(int)
    model = LatentSculpting(**{**STACKED, "stack_neighbours": 1}, random_state=0).fit(
        X, y, groups=groups
    )
    (main, _), *folds = left
    assert len(folds) == 3 and len(model.fusion_.fold_scores_) == 3
    # Each refit keeps one family's fitting rows of three (about a third of the main fit's).
    assert all(n == pytest.approx(main / 3, abs=3) for n, _ in folds)
    # Folds a and b keep c (along the third axis); fold c keeps a sibling (the first).
    along_third = [mean[2] > mean[0] for _, mean in folds]
    assert sorted(along_third) == [False, True, True]
    # With two families, leaving the neighbour out would leave no attack to train on: one
    # family always stays.
    two = groups != "c"
    left.clear()
    LatentSculpting(**{**STACKED, "stack_neighbours": 1}, random_state=0).fit(
        X[two], y[two], groups=groups[two]
    )
    (main, _), *folds = left
    assert len(folds) == 2 and all(n == pytest.approx(main / 2, abs=3) for n, _ in folds)
    # Without neighbours each refit keeps two families.
    left.clear()
    LatentSculpting(**STACKED, random_state=0).fit(X, y, groups=groups)
    (main, _), *folds = left
    assert all(n == pytest.approx(2 * main / 3, abs=3) for n, _ in folds)


def test_no_folds_without_two_families_or_groups():
    X, y, groups = data(families=("a",))
    model = LatentSculpting(**STACKED, random_state=0).fit(X, y, groups=groups)
    assert model.fusion_.fold_scores_ == []  # one family: nothing to hold out against
    assert model.fusion_.weights_ == {"nll": 1.0, "forest": 1.0, "knn": 1.0}
    X, y, groups = data()
    model = LatentSculpting(**STACKED, random_state=0).fit(X, y)
    assert model.fusion_.fold_scores_ == []
    small = groups.copy()
    small[np.flatnonzero(groups == "c")[MIN_FAMILY_ROWS - 1 :]] = "benign"
    y_small = (small != "benign").astype(int)
    capped = LatentSculpting(**{**STACKED, "stack_folds": 1}, random_state=0)
    capped.fit(X, y_small, groups=small)
    assert len(capped.fusion_.fold_scores_) == 1  # the largest family only


def test_stacked_needs_no_stage1_and_stack_folds_needs_stacked():
    X, y, groups = data()
    with pytest.raises(ValueError, match="set stage1=False"):
        LatentSculpting(**{**STACKED, "stage1": True}).fit(X, y, groups=groups)
    with pytest.raises(ValueError, match="stack_folds=8 holds out families"):
        LatentSculpting(**{**STACKED, "score": "fisher"}).fit(X, y, groups=groups)
    with pytest.raises(ValueError, match="stack_neighbours=1 leaves families out"):
        LatentSculpting(**{**STACKED, "stack_folds": 0, "stack_neighbours": 1}).fit(X, y)


def test_stacked_model_saves_loads_and_scores_alike(tmp_path):
    X, y, groups = data()
    model = LatentSculpting(**STACKED, random_state=0).fit(X, y, groups=groups)
    again = LatentSculpting.load(model.save(tmp_path / "m.sculpt"))
    np.testing.assert_array_equal(again.decision_function(X), model.decision_function(X))
    assert again.fusion_.weights_ == model.fusion_.weights_


def _rewritten_fusion(source, target, edit):
    """A copy of the model file ``source`` whose score rule's config ``edit`` changed."""
    from hostile_models import tamper

    return tamper(source, target, lambda params, fitted, tensors: edit(fitted["fusion"]))


def test_a_file_with_the_single_rate_criterion_loads_and_bad_rates_are_refused(tmp_path):
    X, y, groups = data()
    model = LatentSculpting(**STACKED, random_state=0).fit(X, y, groups=groups)
    saved = model.save(tmp_path / "m.sculpt")

    def single_rate(config):  # what files written before "fprs" hold
        del config["fprs"]
        config["fpr"] = 0.01

    old = LatentSculpting.load(_rewritten_fusion(saved, tmp_path / "old.sculpt", single_rate))
    assert old.fusion_.fprs == (0.01,) and old.fusion_.weights_ == model.fusion_.weights_
    np.testing.assert_array_equal(old.decision_function(X), model.decision_function(X))
    for value, message in (
        ([], "its fprs \\[\\] are not a short list"),
        ([0.01, 1.5], "its fpr 1.5 is not in \\(0, 1\\)"),
        (["x"], "its fpr must be a number"),
        (0.01, "its fprs 0.01 are not a short list"),
    ):
        bad = _rewritten_fusion(saved, tmp_path / "bad.sculpt", lambda c, v=value: c.update(fprs=v))
        with pytest.raises(ValueError, match=message):
            LatentSculpting.load(bad)


def _fit_sample(table, n_jobs):
    # Two supervised channels, so that each worker refits both kinds; the forest draws its
    # bootstrap from its seed (the booster uses its seed only above 10,000 rows).
    params = {**preset("fast"), "boost_iter": 20, "forest_trees": 10, "n_jobs": n_jobs}
    return LatentSculpting(**params, random_state=0).fit(table.X, table.y, groups=table.labels)


def test_folds_fitted_on_two_workers_are_the_sequential_fit_bit_for_bit(sample_table):
    from latent_sculpting.io.table import cap_per_class

    table = cap_per_class(sample_table, 150, seed=0)
    one, two = _fit_sample(table, 1), _fit_sample(table, 2)
    assert len(one.fusion_.fold_scores_) == 3
    assert two.fusion_.weights_ == one.fusion_.weights_
    assert two.fusion_.fold_scores_ == one.fusion_.fold_scores_
    np.testing.assert_array_equal(two.decision_function(table.X), one.decision_function(table.X))


def test_fit_restores_the_thread_settings(monkeypatch):
    import torch
    from threadpoolctl import threadpool_info

    def counts():
        return torch.get_num_threads(), {p["filepath"]: p["num_threads"] for p in threadpool_info()}

    saved = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        before = counts()
        X, y, groups = data()
        LatentSculpting(**STACKED, n_jobs=2, random_state=0).fit(X, y, groups=groups)
        after = counts()
        # Libraries first loaded by the fit are left out: they had no setting to restore.
        assert (after[0], {k: after[1][k] for k in before[1]}) == before
    finally:
        torch.set_num_threads(saved)


def test_fold_refits_never_train_on_the_calibration_rows(monkeypatch):
    """The weights are part of the score: chosen with the threshold's rows, the threshold
    would no longer be conformal."""
    import latent_sculpting.model.calibration as calibration

    splits, seen = {}, []
    holdout, reference = calibration.holdout_split, calibration.reference_split

    def spy_holdout(*args, **kwargs):
        splits["fit"], splits["held"] = holdout(*args, **kwargs)
        return splits["fit"], splits["held"]

    def spy_reference(*args, **kwargs):
        splits["reference"], splits["calibration"] = reference(*args, **kwargs)
        return splits["reference"], splits["calibration"]

    original = ForestChannel.fit

    def spy_fit(self, Z, y, held_out):
        seen.append(np.delete(Z, held_out, axis=0).copy())
        return original(self, Z, y, held_out)

    monkeypatch.setattr(calibration, "holdout_split", spy_holdout)
    monkeypatch.setattr(calibration, "reference_split", spy_reference)
    monkeypatch.setattr(ForestChannel, "fit", spy_fit)
    X, y, groups = data()
    model = LatentSculpting(**STACKED, random_state=0).fit(X, y, groups=groups)
    Z = model.preprocessor_.transform(X)
    row_of = {Z[i].tobytes(): i for i in range(len(Z))}
    assert len(row_of) == len(Z) and len(seen) == 4  # the main fit and three folds
    for trained in seen:
        rows = {row_of[z.tobytes()] for z in trained}
        assert rows <= set(splits["fit"].tolist())
        assert not rows & set(splits["calibration"].tolist())


def test_max_benign_rows_samples_the_densities_and_fold_refits_only(monkeypatch):
    from latent_sculpting.model.channels.registry import NeighbourChannel

    X, y, groups = data()
    fits = {"forest": [], "knn": []}
    for cls, key in ((ForestChannel, "forest"), (NeighbourChannel, "knn")):
        original = cls.fit

        def spy(self, Z, y_, held_out, original=original, key=key):
            keep = np.ones(len(y_), dtype=bool)
            keep[held_out] = False
            fits[key].append(int(np.count_nonzero(keep & (y_ == 0))))
            return original(self, Z, y_, held_out)

        monkeypatch.setattr(cls, "fit", spy)
    sampled = LatentSculpting(**{**STACKED, "max_benign_rows": 200}, random_state=0)
    sampled.fit(X, y, groups=groups)
    n_fit_benign = fits["forest"][0]  # the main supervised fit: every benign fitting row
    assert n_fit_benign > 200
    assert fits["knn"] == [200]  # the benign prototypes: the sample
    assert fits["forest"][1:] == [200, 200, 200]  # each fold refit: the sample
    assert sampled.history_["n_benign_density"] == 200
    # At or above the number of benign fitting rows, the budget changes nothing, bit for bit.
    unbounded = LatentSculpting(**{**STACKED, "max_benign_rows": None}, random_state=0)
    bounded = LatentSculpting(**{**STACKED, "max_benign_rows": n_fit_benign}, random_state=0)
    a = unbounded.fit(X, y, groups=groups).decision_function(X)
    b = bounded.fit(X, y, groups=groups).decision_function(X)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, sampled.decision_function(X))
