"""FeaturePreprocessor: variance filter, train-only fit, scaling, state round-trip, errors."""

import json

import numpy as np
import pytest
from sklearn.base import clone

from latent_sculpting.model.preprocessing import FeaturePreprocessor


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    X = rng.lognormal(size=(400, 5)) * np.array([1.0, 100.0, 1.0, 1e6, 1.0])
    X[:, 2] = 7.0  # constant column
    X[:, 4] -= 2.0  # negative values, as in CIC-IDS-2017
    return X.astype(np.float32)


@pytest.mark.parametrize("feature_transform", ["none", "log1p", "quantile"])
@pytest.mark.parametrize("scaler", ["standard", "none"])
def test_zero_variance_dropped_and_state_round_trip(data, feature_transform, scaler):
    pre = FeaturePreprocessor(feature_transform=feature_transform, scaler=scaler).fit(data)
    assert pre.n_features_in_ == 5
    assert pre.support_.tolist() == [True, True, False, True, True]
    Z = pre.transform(data)
    assert Z.dtype == np.float32 and Z.shape == (400, 4)
    assert np.isfinite(Z).all()
    if scaler == "standard":
        np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(Z.std(axis=0), 1, atol=1e-4)

    config, arrays = pre.get_state()
    config = json.loads(json.dumps(config))  # must be JSON-able
    assert all(isinstance(v, np.ndarray) for v in arrays.values())
    restored = FeaturePreprocessor.from_state(config, arrays)
    np.testing.assert_array_equal(restored.transform(data), Z)
    assert restored.get_params() == pre.get_params()


def test_fitted_on_training_rows_only(data):
    train, test = data[:200], data[200:] * 3
    pre = FeaturePreprocessor().fit(train)
    np.testing.assert_allclose(pre.center_, train[:, pre.support_].astype(np.float64).mean(0))
    assert abs(pre.transform(test).mean()) > 0.1  # test statistics did not leak into the fit


def test_signed_log1p():
    X = np.array([[-9.0, 0.0], [9.0, 1.0]])
    pre = FeaturePreprocessor(feature_transform="log1p", scaler="none").fit(X)
    np.testing.assert_allclose(pre.transform(X), [[-np.log(10), 0], [np.log(10), np.log(2)]], 1e-6)


def test_variance_threshold():
    rng = np.random.default_rng(1)
    X = np.c_[rng.normal(size=200), 0.01 * rng.normal(size=200)]
    assert FeaturePreprocessor().fit(X).support_.tolist() == [True, True]
    pre = FeaturePreprocessor(variance_threshold=1e-3).fit(X)
    assert pre.support_.tolist() == [True, False]
    assert pre.transform(X).shape == (200, 1)
    with pytest.raises(ValueError, match="variance_threshold=1e\\+30"):
        FeaturePreprocessor(variance_threshold=1e30).fit(X)


def test_errors(data):
    pre = FeaturePreprocessor().fit(data)
    with pytest.raises(ValueError, match="X has 3 columns.*fitted with 5"):
        pre.transform(data[:, :3])
    bad = data.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="row 3, column 1"):
        pre.transform(bad)
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        FeaturePreprocessor().fit(bad)
    with pytest.raises(ValueError, match="'boxcox'"):
        FeaturePreprocessor(feature_transform="boxcox").fit(data)
    with pytest.raises(ValueError, match="'robust'"):
        FeaturePreprocessor(scaler="robust").fit(data)


def test_sklearn_compatible(data):
    pre = FeaturePreprocessor(feature_transform="quantile", scaler="none")
    assert clone(pre).get_params() == pre.get_params()
    Z = pre.fit_transform(data)
    assert Z.shape == (400, 4)
    names = pre.get_feature_names_out([f"f{i}" for i in range(5)])
    assert names.tolist() == ["f0", "f1", "f3", "f4"]


def test_transform_in_row_blocks_is_the_transform_of_the_whole_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(0)
    X = np.exp(rng.normal(0, 6, size=(1000, 5))) * rng.choice([-1, 0, 1], size=(1000, 5))
    X[:, 4] = 3.0  # a constant column, dropped
    pre = FeaturePreprocessor(feature_transform="log1p", scaler="standard").fit(X)
    whole = pre.transform(X)
    monkeypatch.setattr(FeaturePreprocessor, "_BLOCK", 7)
    np.testing.assert_array_equal(pre.transform(X), whole)
    # The in-place signed log1p is the plain expression's value.
    plain = np.sign(X) * np.log1p(np.abs(X))
    Z = (plain[:, pre.support_] - pre.center_) / pre.scale_
    np.testing.assert_array_equal(whole, Z.astype(np.float32))
