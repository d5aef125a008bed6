"""Checks of the data given to fit and to scoring: clear errors, nothing repaired silently."""

import numpy as np
import pandas as pd
import pytest

from latent_sculpting.model.validation import check_features, check_fit_data


def test_fit_data_is_converted_and_a_frames_names_kept():
    frame = pd.DataFrame({"a": [1, 2, 3], "b": [0.5, 0.5, 1.5]})
    X, y, groups, names = check_fit_data(frame, [0, 1, 0], ["BENIGN", "x", "BENIGN"], stage1=True)
    assert X.dtype == np.float32 and X.shape == (3, 2)
    assert y.dtype == np.int64 and groups.tolist() == ["BENIGN", "x", "BENIGN"]
    assert names.tolist() == ["a", "b"]
    X, y, groups, names = check_fit_data(np.ones((4, 2)), None, None, stage1=False)
    assert y.tolist() == [0, 0, 0, 0] and groups is None and names is None


@pytest.mark.parametrize(
    ("X", "y", "groups", "stage1", "message"),
    [
        (np.ones((0, 2)), None, None, False, "no rows"),
        (np.ones(3), None, None, False, "2-D"),
        ([["a", "b"]], None, None, False, "numeric"),
        (np.array([[1.0, np.inf]]), None, None, False, "row 0, column 1"),
        (np.ones((3, 2)), [0, 1], None, True, "1-D with 3 entries"),
        (np.ones((3, 2)), [0, 1, 2], None, True, r"0 \(benign\) and 1 \(attack\) only"),
        (np.ones((3, 2)), [1, 1, 1], None, True, "no benign rows"),
        (np.ones((3, 2)), [0, 0, 0], None, True, "only one class"),
        (np.ones((3, 2)), [0, 1, 0], ["a"], True, "groups has 1 entries"),
    ],
)
def test_bad_fit_data_is_refused_with_what_is_wrong(X, y, groups, stage1, message):
    with pytest.raises(ValueError, match=message):
        check_fit_data(X, y, groups, stage1=stage1)


def test_features_to_score_are_matched_by_name_and_checked():
    names = np.asarray(["a", "b"], dtype=object)
    frame = pd.DataFrame({"b": [2.0], "extra": [9.0], "a": [1.0]})
    np.testing.assert_array_equal(
        check_features(frame, n_features=2, feature_names=names), [[1, 2]]
    )
    with pytest.raises(ValueError, match=r"missing 1 feature column\(s\).*\['b'\]"):
        check_features(frame.drop(columns="b"), n_features=2, feature_names=names)
    with pytest.raises(ValueError, match="has 3 features, but the model was fitted on 2"):
        check_features(np.full((1, 3), np.nan), n_features=2, feature_names=None)
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_features(np.array([[1.0, np.nan]]), n_features=2, feature_names=None)
