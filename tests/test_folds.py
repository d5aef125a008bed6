"""Pseudo-zero-day folds: each known family held out, supervised channels refitted without it."""

import numpy as np
import pytest

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.channels import ForestChannel
from latent_sculpting.folds import MIN_FAMILY_ROWS

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


def test_stacked_model_saves_loads_and_scores_alike(tmp_path):
    X, y, groups = data()
    model = LatentSculpting(**STACKED, random_state=0).fit(X, y, groups=groups)
    again = LatentSculpting.load(model.save(tmp_path / "m.sculpt"))
    np.testing.assert_array_equal(again.decision_function(X), model.decision_function(X))
    assert again.fusion_.weights_ == model.fusion_.weights_


def _fit_sample(table, n_jobs):
    # Two supervised channels, so that each worker refits both kinds; the forest draws its
    # bootstrap from its seed (the booster uses its seed only above 10,000 rows).
    params = {**preset("fast"), "boost_iter": 20, "forest_trees": 10, "n_jobs": n_jobs}
    return LatentSculpting(**params, random_state=0).fit(table.X, table.y, groups=table.labels)


def test_folds_fitted_on_two_workers_are_the_sequential_fit_bit_for_bit(sample_table):
    from latent_sculpting.experiment import cap_per_class

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
