"""The LatentSculpting estimator: behaviour on toy data, persistence, determinism, bad input."""

import json

import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from sklearn.base import clone
from sklearn.metrics import roc_auc_score

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.estimator import conformal_p_values, conformal_threshold

# Small and quick, but trained enough (about 100 steps a stage) to separate the toy classes.
TINY = {
    **preset("fast"),
    # Pinned here rather than inherited, so that tuning the presets cannot move these tests.
    "score": "combined",
    "selection": "centroid_f1",
    "feature_transform": "none",
    "epochs": 15,
    "batch_size": 64,
    "lr": 2e-3,
    "flow_epochs": 20,
    "flow_batch_size": 64,
    "flow_lr": 2e-3,
}


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


@pytest.mark.parametrize("score", ["two_stage", "combined", "fisher"])
def test_outliers_rank_above_every_inlier(score):
    X, y, _, fresh, outliers = toy(0)
    model = LatentSculpting(**{**TINY, "score": score}, random_state=0).fit(X, y)
    assert model.decision_function(outliers).min() > model.decision_function(fresh).max()


@pytest.mark.parametrize("score", ["two_stage", "nll", "combined", "fisher"])
def test_every_score_ranks_known_and_novel_attacks_above_benign(score):
    X, y, novel, fresh, outliers = toy(1)
    model = LatentSculpting(**{**TINY, "score": score}, random_state=1).fit(X, y)
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
    assert model.threshold_ == model.thresholds_[95.0] or model.target_fpr is not None
    pred = model.predict(np.vstack([fresh, novel]))
    assert set(np.unique(pred)) <= {0, 1}
    assert pred[len(fresh) :].mean() == 1.0
    assert pred[: len(fresh)].mean() < 0.3


def test_save_load_gives_identical_scores(fitted, tmp_path):
    model, X, *_ = fitted
    path = model.save(tmp_path / "model.sculpt")
    loaded = LatentSculpting.load(path)
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    assert loaded.get_params() == model.get_params()
    assert not list(tmp_path.glob("*.tmp"))


def test_fused_model_saves_and_loads_every_channel(tmp_path):
    X, y, novel, fresh, _ = toy(4)
    model = LatentSculpting(**{**TINY, "score": "fisher"}, random_state=0).fit(X, y)
    assert set(model.tails_) == {"nll", "forest"}
    # The flow sees the sculpted code and the Deep SVDD embedding side by side.
    first = model.flow_.maf.transform.transforms[0].hyper[0]
    assert first.in_features == TINY["latent_dim"] + TINY["svdd_dim"]
    details = model.score_details(np.vstack([fresh, novel]))
    assert {"nll", "forest_probability", "score", "stage1_attack"} <= set(details)
    loaded = LatentSculpting.load(model.save(tmp_path / "fused.sculpt"))
    rows = np.vstack([X, novel, fresh])
    np.testing.assert_array_equal(loaded.decision_function(rows), model.decision_function(rows))
    np.testing.assert_array_equal(loaded.p_values(rows), model.p_values(rows))
    # Held-out halves: tails on one, threshold on the other; no row is in both.
    n_held_out = round(model.calibration_fraction * (y == 0).sum())
    assert len(model.calibration_scores_) + len(model.tails_["nll"].reference_) == n_held_out


def test_fused_score_needs_a_forest_and_held_out_calibration():
    X, y, *_ = toy(5, n=100)
    with pytest.raises(ValueError, match="forest_trees >= 1"):
        LatentSculpting(**{**TINY, "score": "fisher", "forest_trees": 0}).fit(X, y)
    with pytest.raises(ValueError, match="calibration='holdout'"):
        LatentSculpting(**{**TINY, "score": "fisher", "calibration": "train"}).fit(X, y)


def test_model_file_refuses_other_versions_and_truncation(fitted, tmp_path):
    model, *_ = fitted
    path = model.save(tmp_path / "model.sculpt")
    truncated = tmp_path / "truncated.sculpt"
    truncated.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated or corrupt"):
        LatentSculpting.load(truncated)

    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        metadata = dict(handle.metadata())
    metadata["format_version"] = "999"
    other = tmp_path / "other.sculpt"
    save_file(load_file(str(path)), str(other), metadata=metadata)
    with pytest.raises(ValueError, match="format version 999"):
        LatentSculpting.load(other)
    with pytest.raises(FileNotFoundError):
        LatentSculpting.load(tmp_path / "missing.sculpt")
    json.loads(metadata["params"])  # the configuration is plain JSON


def test_clone_is_unfitted_with_the_same_params(fitted):
    model, *_ = fitted
    copy = clone(model)
    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "flow_")
    with pytest.raises(Exception, match="not fitted"):
        copy.decision_function(np.zeros((1, 6), dtype=np.float32))


def test_same_seed_same_scores_and_different_seed_differs():
    X, y, novel, *_ = toy(2, n=200)
    a = LatentSculpting(**TINY, random_state=3).fit(X, y).decision_function(novel)
    b = LatentSculpting(**TINY, random_state=3).fit(X, y).decision_function(novel)
    c = LatentSculpting(**TINY, random_state=4).fit(X, y).decision_function(novel)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_benign_only_model_needs_stage1_off():
    X, y, novel, fresh, _ = toy(3, n=300)
    benign = X[y == 0]
    with pytest.raises(ValueError, match="only one class"):
        LatentSculpting(**TINY).fit(benign, np.zeros(len(benign)))
    model = LatentSculpting(**{**TINY, "stage1": False, "score": "nll"}, random_state=0)
    model.fit(benign)
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
    with pytest.raises(ValueError, match="percentile"):
        LatentSculpting(**{**TINY, "percentile": 100}).fit(X, y)


def test_feature_names_are_checked_and_reordered(fitted):
    pd = pytest.importorskip("pandas")
    X, y, novel, *_ = toy(4, n=200)
    cols = [f"f{i}" for i in range(X.shape[1])]
    model = LatentSculpting(**TINY, random_state=0).fit(pd.DataFrame(X, columns=cols), y)
    frame = pd.DataFrame(novel, columns=cols)
    shuffled = frame[cols[::-1]]
    np.testing.assert_array_equal(model.decision_function(frame), model.decision_function(shuffled))
    with pytest.raises(ValueError, match="missing 1 feature column"):
        model.decision_function(frame.drop(columns="f2"))


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


def test_conformal_helpers_known_answers():
    cal = np.arange(1, 100, dtype=float)  # 99 scores
    assert conformal_threshold(cal, 0.1) == 90.0  # ceil(100 * 0.9) = 90th smallest
    np.testing.assert_allclose(
        conformal_p_values(cal, np.array([0.0, 99.0, 100.0])), [1.0, 2 / 100, 1 / 100]
    )
    with pytest.warns(UserWarning, match="cannot guarantee"):
        assert conformal_threshold(cal[:5], 0.01) == np.inf
