"""The LatentSculpting estimator: behaviour on toy data, parameters, determinism, and that rows
held out for calibration reach no fit."""

from collections import defaultdict

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from small import FUSED_FAST

import latent_sculpting.model.calibration as calibration_module
import latent_sculpting.model.parts as parts_module
from latent_sculpting import LatentSculpting, preset
from latent_sculpting.model.channels.deep_sad import DeepSAD
from latent_sculpting.model.channels.forest import AttackForest
from latent_sculpting.model.channels.registry import ForestChannel
from latent_sculpting.model.density.train import flow_inputs
from latent_sculpting.model.params import PARAMETER_CONSTRAINTS, RUN_PARAMETERS
from latent_sculpting.model.preprocessing import FeaturePreprocessor

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

# Small and quick, but trained enough (about 100 steps a stage) to separate the toy classes.
TINY = {
    **FUSED_FAST,
    # Pinned here rather than inherited, so that tuning the presets cannot move these tests.
    "score": "two_stage",
    "forest_trees": 0,
    "selection": "centroid_f1",
    "feature_transform": "none",
    "epochs": 15,
    "batch_size": 64,
    "lr": 2e-3,
    "flow_epochs": 20,
    "flow_batch_size": 64,
    "flow_lr": 2e-3,
}
FUSED = {**TINY, "score": "fisher", "forest_trees": 10}


def with_score(score):
    return {"two_stage": TINY, "nll": {**TINY, "score": "nll"}, "fisher": FUSED}[score]


def toy(seed=0, n=400, d=6):
    """Two Gaussians, benign at the origin and known attacks 8 away along axis 0; novel attacks
    8 away along axis 1; fresh benign draws. Returns X, y, novel, fresh, fresh known attacks."""
    rng = np.random.default_rng(seed)
    benign = rng.normal(size=(n, d))
    known = rng.normal(size=(n // 2, d)) + 8 * np.eye(d)[0]
    novel = rng.normal(size=(50, d)) + 8 * np.eye(d)[1]
    X = np.vstack([benign, known]).astype(np.float32)
    y = np.r_[np.zeros(n), np.ones(n // 2)].astype(int)
    fresh = rng.normal(size=(200, d))
    outliers = rng.normal(size=(50, d)) + 8 * np.eye(d)[0]
    return X, y, novel.astype(np.float32), fresh.astype(np.float32), outliers.astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    X, y, novel, fresh, _ = toy()
    model = LatentSculpting(**TINY, random_state=0).fit(X, y)
    return model, X, y, novel, fresh


@pytest.mark.parametrize("score", ["two_stage", "fisher"])
def test_outliers_rank_above_every_inlier(score):
    X, y, _, fresh, outliers = toy(0)
    model = LatentSculpting(**with_score(score), random_state=0).fit(X, y)
    assert model.decision_function(outliers).min() > model.decision_function(fresh).max()


@pytest.mark.parametrize("score", ["two_stage", "nll", "fisher"])
def test_every_score_ranks_known_and_novel_attacks_above_benign(score):
    X, y, novel, fresh, outliers = toy(1)
    model = LatentSculpting(**with_score(score), random_state=1).fit(X, y)
    scores = model.decision_function(np.vstack([fresh, novel, outliers]))
    assert np.std(scores) > 0
    truth = np.r_[np.zeros(len(fresh)), np.ones(len(novel) + len(outliers))]
    assert roc_auc_score(truth, scores) > 0.97


def test_fitted_state_thresholds_and_predict(fitted):
    model, X, y, novel, fresh = fitted
    assert model.n_features_in_ == X.shape[1]
    assert sorted(model.thresholds_) == [85.0, 90.0, 95.0, 97.0, 99.0]
    values = [model.thresholds_[p] for p in sorted(model.thresholds_)]
    assert values == sorted(values)
    assert model.threshold_ == model.thresholds_[95.0]
    pred = model.predict(np.vstack([fresh, novel]))
    assert set(np.unique(pred)) <= {0, 1}
    assert pred[len(fresh) :].mean() == 1.0
    assert pred[: len(fresh)].mean() < 0.3
    assert model.channels_ == {} and model.svdd_ is not None
    assert set(model.history_["seconds"]) == {
        "preprocess", "stage1", "side_channels", "stage2", "benign_profile"
    }  # fmt: skip


def test_fused_model_has_every_channel_and_its_details():
    X, y, novel, fresh, _ = toy(4)
    model = LatentSculpting(**FUSED, random_state=0).fit(X, y)
    assert set(model.channels_) == {"forest"}
    assert list(model.fusion_.tails_) == ["nll", "forest"]
    # The flow sees the sculpted code and the Deep SVDD embedding side by side.
    first = model.flow_.maf.transform.transforms[0].hyper[0]
    assert first.in_features == FUSED["latent_dim"] + FUSED["svdd_dim"]
    details = model.score_details(np.vstack([fresh, novel]))
    assert list(details) == [
        "nll",
        "forest_probability",
        "score",
        "distance_benign",
        "distance_attack",
        "stage1_attack",
    ]
    np.testing.assert_array_equal(
        details["score"], model.decision_function(np.vstack([fresh, novel]))
    )
    # Held-out halves: tails on one, threshold on the other; no row is in both.
    n_held_out = round(model.calibration_fraction * (y == 0).sum())
    assert (
        len(model.calibration_scores_) + len(model.fusion_.tails_["nll"].reference_) == n_held_out
    )


def test_constructor_defaults_are_the_default_preset():
    params = LatentSculpting().get_params()
    assert set(params) == set(PARAMETER_CONSTRAINTS)
    assert {k: v for k, v in params.items() if k not in RUN_PARAMETERS} == preset("default")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"score": "fisher", "forest_trees": 0}, "forest_trees >= 1"),
        ({"score": "fisher", "forest_trees": 5, "calibration": "train"}, "calibration='holdout'"),
        ({"score": "nll", "forest_trees": 5}, "forest_trees=5 fits a forest channel"),
        ({"stage1": False}, "score='two_stage' needs stage1=True"),
        ({"target_fpr": 0.01, "calibration": "train"}, "target_fpr=0.01 needs calibration"),
        ({"encoder": "ft_transformer", "d_model": 10, "n_heads": 4}, "multiple of n_heads"),
        ({"device": "gpu:x"}, "not a torch device"),
        ({"encoder": "bias_free"}, "'encoder' parameter"),
        ({"loss": "hinge"}, "'loss' parameter"),
        ({"percentile": 100}, "'percentile' parameter"),
        ({"epochs": 2.5}, "'epochs' parameter"),
        ({"selection": "last"}, "'selection' parameter"),
    ],
)
def test_bad_parameters_fail_before_the_data_is_touched(change, message, monkeypatch):
    def no_preprocessing(*args, **kwargs):
        raise AssertionError("preprocessing ran before the parameters were checked")

    monkeypatch.setattr(FeaturePreprocessor, "fit", no_preprocessing)
    with pytest.raises(ValueError, match=message):
        # X is not even an array: a data check would complain first.
        LatentSculpting(**{**TINY, **change}).fit("not data")


def test_clone_is_unfitted_with_the_same_params(fitted):
    model, *_ = fitted
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "flow_")
    with pytest.raises(Exception, match="not fitted"):
        copy.decision_function(np.zeros((1, 6), dtype=np.float32))


def test_same_seed_same_scores_and_different_seed_differs():
    X, y, novel, *_ = toy(2, n=200)
    a = LatentSculpting(**FUSED, random_state=3).fit(X, y).decision_function(novel)
    b = LatentSculpting(**FUSED, random_state=3).fit(X, y).decision_function(novel)
    c = LatentSculpting(**FUSED, random_state=4).fit(X, y).decision_function(novel)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_benign_only_model_needs_stage1_off():
    X, y, novel, fresh, _ = toy(3, n=300)
    benign = X[y == 0]
    with pytest.raises(ValueError, match="only one class"):
        LatentSculpting(**TINY).fit(benign, np.zeros(len(benign)))
    model = LatentSculpting(**{**TINY, "stage1": False, "score": "nll"}, random_state=0)
    model.fit(benign)
    assert model.encoder_ is None and "stage1_attack" not in model.score_details(novel)
    assert model.decision_function(novel).mean() > model.decision_function(fresh).mean()


def test_bad_input_gets_clear_errors(fitted):
    model, X, y, *_ = fitted
    with pytest.raises(ValueError, match="has 5 features, but the model was fitted on 6"):
        model.decision_function(X[:, :5])
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="row 3, column 2"):
        model.decision_function(bad)
    with pytest.raises(ValueError, match=r"0 \(benign\) and 1 \(attack\) only"):
        LatentSculpting(**TINY).fit(X, y * 2)
    with pytest.raises(ValueError, match="groups has 3 entries"):
        LatentSculpting(**TINY).fit(X, y, groups=["a", "b", "c"])


def test_feature_names_are_checked_and_reordered():
    pd = pytest.importorskip("pandas")
    X, y, novel, *_ = toy(4, n=200)
    cols = [f"f{i}" for i in range(X.shape[1])]
    model = LatentSculpting(**TINY, random_state=0).fit(pd.DataFrame(X, columns=cols), y)
    frame = pd.DataFrame(novel, columns=cols)
    shuffled = frame[cols[::-1]]
    np.testing.assert_array_equal(model.decision_function(frame), model.decision_function(shuffled))
    with pytest.raises(ValueError, match="missing 1 feature column"):
        model.decision_function(frame.drop(columns="f2"))
    # A refit on an array forgets the names.
    assert not hasattr(model.fit(X, y), "feature_names_in_")


def test_transform_gives_the_codes(fitted):
    model, X, *_ = fitted
    codes = model.transform(X[:7])
    assert codes.shape == (7, TINY["latent_dim"]) and codes.dtype == np.float32


def test_conformal_threshold_controls_false_positives_on_fresh_benign():
    X, y, *_ = toy(5, n=1500)
    params = {**TINY, "calibration": "holdout", "calibration_fraction": 0.5, "target_fpr": 0.05}
    model = LatentSculpting(**params, random_state=0).fit(X, y)
    rng = np.random.default_rng(99)
    fresh = rng.normal(size=(4000, X.shape[1])).astype(np.float32)
    fpr = model.predict(fresh).mean()
    # The guarantee is on average over calibration draws; allow sampling slack for n_cal = 750.
    assert fpr <= 0.05 + 0.03
    p = model.p_values(fresh)
    assert ((p > 0) & (p <= 1)).all()
    assert abs((p <= 0.05).mean() - fpr) < 0.02


# ---------------------------------------------------------------------------------- leaks


def overlapping(seed=0, n=500, d=6):
    """Benign and known attacks that overlap, so that a forest's in-sample votes for benign
    training rows (near 0, it memorises them) differ from its out-of-bag ones."""
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(size=(n, d)), rng.normal(size=(n, d)) + 1.2 * np.eye(d)[0]])
    return X.astype(np.float32), np.r_[np.zeros(n), np.ones(n)].astype(int)


@pytest.fixture(scope="module")
def spied():
    """A fused model, fitted while recording what every part was fitted on."""
    log = defaultdict(list)
    with pytest.MonkeyPatch.context() as patch:

        def record(owner, name, key, extract):
            original = getattr(owner, name)

            def wrapper(*args, **kwargs):
                result = original(*args, **kwargs)
                log[key].append(extract(args, kwargs, result))
                return result

            patch.setattr(owner, name, wrapper)

        record(calibration_module, "holdout_split", "holdout", lambda a, k, r: r)
        record(calibration_module, "reference_split", "reference", lambda a, k, r: r)
        record(FeaturePreprocessor, "fit", "preprocessor", lambda a, k, r: np.array(a[1]))
        record(parts_module, "fit_stage1", "stage1", lambda a, k, r: a[0].copy())
        record(DeepSAD, "fit", "svdd", lambda a, k, r: np.array(a[1]))
        record(parts_module, "fit_flow", "flow", lambda a, k, r: a[0].copy())
        record(AttackForest, "fit", "oob", lambda a, k, r: r.oob_proba_.copy())
        record(ForestChannel, "fit", "forest", lambda a, k, r: (a[3].copy(), r.copy()))
        X, y = overlapping()
        model = LatentSculpting(**FUSED, random_state=0).fit(X, y)
    (fit_rows, held_out), (reference, calibration) = log["holdout"][0], log["reference"][0]
    np.testing.assert_array_equal(np.union1d(reference, calibration), held_out)
    return model, X, y, log, fit_rows, reference, calibration


def matched_rows(seen, space, tol=1e-4):
    """Row indices of ``space`` that the rows in ``seen`` are (each row's nearest one)."""
    d = ((seen[:, None, :] - space[None, :, :]) ** 2).sum(axis=2)
    nearest = d.argmin(axis=1)
    assert np.sqrt(d[np.arange(len(seen)), nearest]).max() <= tol, "a fitted row matches no row"
    return nearest


def test_held_out_rows_reach_no_fit(spied):
    model, X, y, log, fit_rows, reference, calibration = spied
    held_out = np.union1d(reference, calibration)
    assert len(held_out) == round(FUSED["calibration_fraction"] * (y == 0).sum())
    assert np.intersect1d(held_out, fit_rows).size == 0 and (y[held_out] == 0).all()

    raw_preprocessor, flow_scaler_input = log["preprocessor"]
    seen = matched_rows(raw_preprocessor, X, tol=0)
    assert sorted(seen) == sorted(fit_rows)
    Z = model.preprocessor_.transform(X)
    assert not np.intersect1d(matched_rows(log["stage1"][0], Z, tol=0), held_out).size
    benign_fit = fit_rows[y[fit_rows] == 0]
    assert sorted(matched_rows(log["svdd"][0], Z, tol=0)) == sorted(benign_fit)

    # The flow's inputs of every row, computed afresh (batches differ: match to 1e-4).
    embedding = model.svdd_.transform(Z)
    unscaled = flow_inputs(model.parts_.encode(Z), embedding, None)
    assert sorted(matched_rows(flow_scaler_input, unscaled)) == sorted(benign_fit)
    scaled = model.flow_scaler_.transform(unscaled)
    assert sorted(matched_rows(log["flow"][0], scaled)) == sorted(benign_fit)


def test_forest_scores_held_out_rows_out_of_bag(spied):
    model, X, y, log, fit_rows, reference, calibration = spied
    (oob,) = log["oob"]
    ((rows, returned),) = log["forest"]
    np.testing.assert_array_equal(rows, np.r_[reference, calibration])
    np.testing.assert_array_equal(returned, oob[rows])
    Z = model.preprocessor_.transform(X)
    in_sample = model.channels_["forest"].score(Z[rows])
    assert np.abs(in_sample - oob[rows]).mean() > 0.05, "toy too easy: votes would not differ"

    # The reference of the forest's tail is the out-of-bag votes of the reference rows ...
    tails = model.fusion_.tails_
    np.testing.assert_array_equal(tails["forest"].reference_, np.sort(oob[reference]))
    # ... and the calibration scores fuse those of the calibration rows.
    scores = model.parts_.channel_scores(Z[calibration], {"forest": oob[calibration]})
    expected = np.sort(model.fusion_.combine(scores))
    np.testing.assert_allclose(model.calibration_scores_, expected, rtol=1e-6)


@pytest.mark.parametrize("name", ["fast", "default"])
def test_a_flow_scores_the_same_alone_or_in_any_batch(name, sample_table):
    """Scores do not depend on the batch a flow arrives in (one request, one file chunk)."""
    from latent_sculpting.io.table import cap_per_class

    table = cap_per_class(sample_table, 150, seed=0)
    params = {**preset(name), "epochs": 2, "flow_epochs": 2}
    model = LatentSculpting(**params, random_state=0).fit(table.X, table.y, groups=table.labels)
    X = table.X[::3][:500]
    together = model.decision_function(X)
    alone = np.concatenate([model.decision_function(X[i : i + 1]) for i in range(len(X))])
    shuffled = np.empty_like(together)
    order = np.random.default_rng(0).permutation(len(X))
    shuffled[order] = model.decision_function(X[order])
    np.testing.assert_allclose(alone, together, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(shuffled, together, rtol=1e-5, atol=1e-6)


def _families(seed=0):
    """Toy data with two known attack families (the stacked rule's folds hold each out)."""
    X, y, novel, fresh, _ = toy(seed)
    groups = np.where(y == 0, "benign", np.where(np.arange(len(y)) % 2, "a", "b")).astype(object)
    return X, y, groups, novel, fresh


def test_a_model_without_a_flow_combines_its_side_channels_alone(tmp_path):
    # flow_transforms=0 (the benchmark's default-noflow): no flow is fitted, read or stored.
    X, y, groups, novel, fresh = _families()
    params = {**preset("fast"), "flow_transforms": 0}
    model = LatentSculpting(**params, random_state=0).fit(X, y, groups=groups)
    assert model.flow_ is None and model.flow_scaler_ is None
    assert list(model.fusion_.tails_) == ["boost", "knn"]
    assert set(model.fusion_.weights_) == {"boost", "knn"}
    details = model.score_details(np.vstack([fresh, novel]))
    assert list(details) == ["boost_logit", "knn_distance", "score"]
    scores = model.decision_function(np.vstack([fresh, novel]))
    np.testing.assert_array_equal(details["score"], scores)
    assert roc_auc_score(np.r_[np.zeros(len(fresh)), np.ones(len(novel))], scores) > 0.95
    loaded = LatentSculpting.load(model.save(tmp_path / "noflow.sculpt"))
    assert loaded.flow_ is None
    np.testing.assert_array_equal(loaded.decision_function(np.vstack([fresh, novel])), scores)
    # Its other parts are those of the model with a flow, fitted from the same draws.
    flowed = LatentSculpting(**preset("fast"), random_state=0).fit(X, y, groups=groups)
    for name in ("boost", "knn"):
        np.testing.assert_array_equal(
            model.channels_[name].score(model.preprocessor_.transform(fresh)),
            flowed.channels_[name].score(flowed.preprocessor_.transform(fresh)),
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"score": "nll", "boost_iter": 0, "knn_prototypes": 0, "stack_folds": 0}, "score='nll'"),
        ({"calibration": "train", "score": "fisher", "stack_folds": 0}, "calibration='train'"),
        ({"svdd_dim": 8}, "svdd_dim=8"),
    ],
)
def test_what_reads_or_feeds_the_flow_is_refused_without_one(change, message):
    with pytest.raises(ValueError, match=message):
        LatentSculpting(**{**preset("fast"), "flow_transforms": 0, **change}).fit("not data")
