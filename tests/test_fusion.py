"""The score rules of ``score``, Fisher's combination, and the forest of the ``default`` preset."""

import numpy as np
import pytest
from sklearn.ensemble import RandomForestClassifier

from latent_sculpting.model.channels.forest import AttackForest
from latent_sculpting.model.fusion import (
    FUSIONS,
    NLL_CAP,
    STAGE1_OFFSET,
    FisherFusion,
    NLLFusion,
    StackedFusion,
    TwoStageFusion,
    criterion,
    fisher,
)


def test_fisher_adds_neg_log_p_values():
    a, b = np.array([0.1, 2.0]), np.array([3.0, 0.5])
    np.testing.assert_array_equal(fisher([a, b]), [3.1, 2.5])


def test_nll_rule_clips_and_two_stage_rule_ranks_stage1_attacks_first():
    scores = {
        "nll": np.array([3.0, np.inf, 50.0, 1e13]),
        "distance_benign": np.array([1.0, 1.0, 9.0, 2.0], dtype=np.float32),
        "distance_attack": np.array([4.0, 4.0, 1.0, 5.0], dtype=np.float32),
    }
    np.testing.assert_array_equal(NLLFusion().combine(scores), [3.0, NLL_CAP, 50.0, NLL_CAP])
    two_stage = TwoStageFusion().combine(scores)
    np.testing.assert_array_equal(two_stage, [3.0, NLL_CAP, STAGE1_OFFSET + 8.0, NLL_CAP])
    assert two_stage[2] > two_stage[[0, 1, 3]].max()  # the Stage-1 attack outranks all


def test_fisher_rule_fits_a_tail_per_channel_and_round_trips():
    rng = np.random.default_rng(0)
    reference = {"nll": rng.normal(size=200), "forest": rng.uniform(0, 0.2, size=200)}
    reference["distance_benign"] = rng.normal(size=200)  # not a channel of the rule
    fusion = FisherFusion().fit(reference, {"forest": 0.1})
    assert list(fusion.tails_) == ["nll", "forest"] and fusion.tails_["forest"].min_scale == 0.1
    new = {"nll": np.array([0.0, 5.0]), "forest": np.array([0.0, 0.9])}
    expected = fusion.tails_["nll"].neg_log_p(new["nll"]) + fusion.tails_["forest"].neg_log_p(
        new["forest"]
    )
    np.testing.assert_allclose(fusion.combine(new), expected)
    assert fusion.combine(new)[1] > fusion.combine(new)[0]
    config, arrays = fusion.get_state()
    restored = FisherFusion.from_state(config, arrays)
    np.testing.assert_array_equal(restored.combine(new), fusion.combine(new))
    # Side channels alone (a model without a flow) are a rule; no channel at all is not. Which
    # tails a model must have is the model file's check (persistence).
    alone = FisherFusion.from_state({"tails": {"forest": config["tails"]["forest"]}}, arrays)
    np.testing.assert_array_equal(
        alone.combine({"forest": new["forest"]}), fusion.tails_["forest"].neg_log_p(new["forest"])
    )
    with pytest.raises(ValueError, match="no tails"):
        FisherFusion.from_state({"tails": {}}, {})


def test_every_rule_declares_what_it_needs():
    assert set(FUSIONS) == {"two_stage", "nll", "fisher", "stacked"}
    assert FUSIONS["stacked"].needs_folds and not FUSIONS["fisher"].needs_folds
    assert FUSIONS["two_stage"].needs_stage1 and not FUSIONS["fisher"].needs_stage1
    assert FUSIONS["fisher"].needs_reference and FUSIONS["fisher"].uses_side_channels
    assert not (FUSIONS["nll"].needs_reference or FUSIONS["nll"].uses_side_channels)


def _toy(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(1500, 8)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] ** 2 > 1.5).astype(int)
    return X, y, rng.normal(size=(400, 8))


def test_forest_matches_scikit_learn_and_round_trips_exactly():
    X, y, X_new = _toy()
    forest = AttackForest(25, random_state=0).fit(X, y)
    sklearn_forest = RandomForestClassifier(25, n_jobs=1, random_state=0).fit(X, y)
    expected = sklearn_forest.predict_proba(X_new.astype(np.float32))[:, 1]
    np.testing.assert_allclose(forest.predict_proba(X_new), expected, atol=1e-12)
    config, arrays = forest.get_state()
    assert all(isinstance(v, np.ndarray) for v in arrays.values())  # nothing to unpickle
    restored = AttackForest.from_state(config, arrays)
    np.testing.assert_array_equal(restored.predict_proba(X_new), forest.predict_proba(X_new))


def test_forest_refuses_bad_input_and_damaged_state():
    X, y, _ = _toy(1)
    with pytest.raises(ValueError, match="benign \\(0\\) and attack \\(1\\)"):
        AttackForest(5).fit(X, np.zeros(len(X)))
    forest = AttackForest(5, random_state=0).fit(X, y)
    with pytest.raises(ValueError, match="8 columns"):
        forest.predict_proba(np.zeros((3, 7)))
    config, arrays = forest.get_state()
    with pytest.raises(ValueError, match="lacks"):
        AttackForest.from_state(config, {k: v for k, v in arrays.items() if k != "threshold"})
    arrays["offsets"] = arrays["offsets"][:-1]
    with pytest.raises(ValueError, match="inconsistent"):
        AttackForest.from_state(config, arrays)


def _fold(rng, signal: str, n=300):
    """Reference (benign) and attack scores of two channels; only ``signal`` sees the attack."""
    benign = {"nll": rng.normal(size=n), "knn": rng.normal(size=n)}
    attack = {"nll": rng.normal(size=80), "knn": rng.normal(size=80)}
    attack[signal] = attack[signal] + 6
    return {"reference": benign, "attack": attack}


def test_stacked_weights_keep_the_channel_that_sees_held_out_families():
    rng = np.random.default_rng(0)
    reference = {"nll": rng.normal(size=300), "knn": rng.normal(size=300)}
    folds = [_fold(rng, "knn") for _ in range(3)]
    rule = StackedFusion().fit(reference, {"knn": 0.0}, folds)
    # The flow's NLL only adds benign noise to the sum: it is dropped or halved.
    assert rule.weights_["knn"] == 1.0 and rule.weights_["nll"] < 1.0
    assert len(rule.fold_scores_) == 3 and min(rule.fold_scores_) > 0.9
    mixed = [_fold(rng, "knn"), _fold(rng, "nll")]
    both = StackedFusion().fit(reference, {"knn": 0.0}, mixed)
    assert both.weights_ == {"nll": 1.0, "knn": 1.0}  # each catches a family: keep both
    plain = StackedFusion().fit(reference, {"knn": 0.0}, [])
    assert plain.weights_ == {"nll": 1.0, "knn": 1.0}  # no fold: Fisher's sum


def test_criterion_is_the_mean_of_auroc_and_recall_at_each_rate():
    benign = np.arange(1000.0)  # quantiles 0.99 -> 989.01, 0.999 -> 998.001
    attack = np.array([2000.0, 999.0, 995.0, 500.0])
    auroc = (1 + 0.9995 + 0.9955 + 0.5005) / 4  # P(benign < a) + P(benign = a) / 2, each a
    assert criterion(benign, attack, (0.01,)) == pytest.approx((auroc + 3 / 4) / 2)
    assert criterion(benign, attack, (0.01, 0.001)) == pytest.approx((auroc + 3 / 4 + 2 / 4) / 3)


def _two_kinds_fold(rng, n=3000, m=200):
    """40 % of the attacks far out in the NLL only (seen even at 0.1 %), the rest a little out
    in the knn distance only (seen at 1 %)."""
    k = int(0.4 * m)
    attack = {
        "nll": np.r_[rng.normal(6, 1, size=k), rng.normal(size=m - k)],
        "knn": np.r_[rng.normal(size=k), rng.normal(2.5, 1, size=m - k)],
    }
    return {"reference": {"nll": rng.normal(size=n), "knn": rng.normal(size=n)}, "attack": attack}


def test_the_weights_are_chosen_on_every_rate_of_the_criterion():
    rng = np.random.default_rng(0)
    reference = {"nll": rng.normal(size=3000), "knn": rng.normal(size=3000)}
    folds = [_two_kinds_fold(rng) for _ in range(3)]
    # At 1 % alone, halving the NLL lets the knn-only attacks through; at 0.1 % the NLL-only
    # attacks are what is caught, and its full weight wins.
    at_one = StackedFusion().fit(reference, {"knn": 0.0}, folds)
    assert at_one.fprs == (0.01,) and at_one.weights_ == {"nll": 0.5, "knn": 1.0}
    both = StackedFusion(fprs=(0.01, 0.001)).fit(reference, {"knn": 0.0}, folds)
    assert both.weights_ == {"nll": 1.0, "knn": 1.0}
    for bad in ((), (0.0,), (0.01, 1.5)):
        with pytest.raises(ValueError, match="fprs must be false-positive rates"):
            StackedFusion(fprs=bad)


def test_fit_tails_keeps_the_named_tails_and_weights_and_refits_the_rest():
    rng = np.random.default_rng(2)
    reference = {"nll": rng.normal(size=300), "knn": rng.normal(size=300)}
    rule = StackedFusion().fit(reference, {"knn": 0.0}, [_fold(rng, "knn"), _fold(rng, "knn")])
    weights, knn_tail, nll_tail = dict(rule.weights_), rule.tails_["knn"], rule.tails_["nll"]
    shifted = {"nll": rng.normal(5.0, size=50)}  # no knn scores: its tail is kept
    rule.fit_tails(shifted, {"knn": 0.0}, keep=["knn"])
    assert rule.tails_["knn"] is knn_tail and rule.weights_ == weights
    assert rule.tails_["nll"] is not nll_tail
    assert rule.tails_["nll"].neg_log_p(np.array([5.0]))[0] < nll_tail.neg_log_p(np.array([5.0]))[0]
    with pytest.raises(ValueError, match="no fitted tail to keep for \\['forest'\\]"):
        rule.fit_tails(shifted, {"knn": 0.0}, keep=["forest"])


def test_stacked_rule_combines_with_its_weights_and_round_trips():
    rng = np.random.default_rng(1)
    reference = {"nll": rng.normal(size=300), "knn": rng.normal(size=300)}
    rule = StackedFusion().fit(reference, {"knn": 0.0}, [_fold(rng, "knn"), _fold(rng, "knn")])
    scores = {"nll": rng.normal(size=20), "knn": rng.normal(size=20)}
    expected = sum(rule.weights_[k] * rule.tails_[k].neg_log_p(scores[k]) for k in ("nll", "knn"))
    np.testing.assert_allclose(rule.combine(scores), expected)
    config, arrays = rule.get_state()
    again = StackedFusion.from_state(config, arrays)
    np.testing.assert_array_equal(again.combine(scores), rule.combine(scores))
    for weights, message in (
        ({"nll": 0.0, "knn": 0.0}, "all zero"),
        ({"nll": 0.7, "knn": 1.0}, "weight of 'nll'"),
        ({"knn": 1.0}, "do not match"),
    ):
        with pytest.raises(ValueError, match=message):
            StackedFusion.from_state({**config, "weights": weights}, arrays)
