"""A random forest's attack probability, held as validated arrays and evaluated without sklearn.

The ``default`` preset fuses the flow's likelihood with a supervised channel: a random forest on
the same scaled features, trained on benign flows against the *known* attacks. On the zero-shot
protocol such a forest ranks most withheld attacks well, because they resemble known ones in the
directions its axis-aligned splits use, and it misses what resembles nothing known (withheld
Infiltration, a withheld port scan), which the flow catches (docs/research/presets.md).

scikit-learn fits. The fitted trees are then copied, through the public ``tree_`` attributes,
into the flat node arrays of :mod:`latent_sculpting.model.channels.trees` (the arrays a model file
stores),
which validates them and predicts from them with its own kernel: no private scikit-learn
structure is ever filled from a file. A damaged array raises
:class:`~latent_sculpting.errors.ModelFileError` naming the tree, node and field.

The forest's aggregation is ``"mean_share"``: a float32 feature against a float64 threshold,
a leaf's attack weight over its row sum, the trees summed in order and the sum divided by their
number, which is what ``RandomForestClassifier.predict_proba`` computes, bit for bit. Tests
compare the two.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from latent_sculpting.model.channels.trees import (
    MAX_DEPTH,
    MAX_FEATURES,
    MAX_NODES_PER_TREE,
    MAX_TREES,
    TreeEnsemble,
    check_config,
    check_training_data,
)

# With few trees some rows are in every bootstrap sample; oob_proba_ says so (NaN), so
# scikit-learn's warning tells the user nothing. A filter for the process, not only a
# catch_warnings block: fold refits run in threads (n_jobs), and one thread leaving its block
# restores the filters while another's fit is still inside (the warning leaked that way).
_NO_OOB = "Some inputs do not have OOB scores"
warnings.filterwarnings("ignore", _NO_OOB, UserWarning)

__all__ = ["MAX_DEPTH", "MAX_FEATURES", "MAX_NODES_PER_TREE", "MAX_TREES", "AttackForest"]

#: The config of :meth:`AttackForest.get_state`, each key with its cap.
_CONFIG_KEYS = {"n_estimators": MAX_TREES, "n_features_in_": MAX_FEATURES}


class AttackForest:
    """Random forest probability that a flow is an attack, kept as plain validated arrays.

    Parameters
    ----------
    n_estimators : int, default=100
        Trees, between 1 and :data:`MAX_TREES`.
    random_state : int or None, default=None

    Attributes
    ----------
    n_features_in_ : int
    arrays_ : dict of str to numpy.ndarray
        The fitted trees as validated node arrays, those of :meth:`get_state` (read-only).
    trees_ : TreeEnsemble
        The evaluator of those arrays (:mod:`latent_sculpting.model.channels.trees`).
    oob_proba_ : numpy.ndarray
        Out-of-bag attack probability of each training row: the vote of the trees whose
        bootstrap sample left the row out, an honest score for a row the forest was fitted on
        (NaN where no tree left it out). Set by :meth:`fit` only; not stored.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3))
    >>> forest = AttackForest(10, random_state=0).fit(X, (X[:, 0] > 0).astype(int))
    >>> forest.predict_proba(np.array([[2.0, 0.0, 0.0], [-2.0, 0.0, 0.0]])).tolist()
    [1.0, 0.0]
    >>> copy = AttackForest.from_state(*forest.get_state())
    >>> bool(np.array_equal(copy.predict_proba(X), forest.predict_proba(X)))
    True
    """

    def __init__(self, n_estimators: int = 100, *, random_state: int | None = None) -> None:
        if not 1 <= n_estimators <= MAX_TREES:
            raise ValueError(f"n_estimators must be between 1 and {MAX_TREES}, got {n_estimators}")
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> AttackForest:
        """Fit on scaled features ``X`` with 0 (benign) / 1 (known attack) targets ``y``."""
        X, y = check_training_data(X, y, "forest")
        X = X.astype(np.float32, copy=False)
        forest = RandomForestClassifier(
            self.n_estimators, n_jobs=1, oob_score=True, random_state=self.random_state
        )
        with warnings.catch_warnings():
            # Again here: a caller (pytest, for one) may have reset the filters since import.
            warnings.filterwarnings("ignore", _NO_OOB, UserWarning)
            forest.fit(X, y)
        config = {"n_estimators": self.n_estimators, "n_features_in_": X.shape[1]}
        self._load(config, _sklearn_arrays(forest))
        self.oob_proba_ = forest.oob_decision_function_[:, 1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Mean over trees of the attack share in each flow's leaf (``predict_proba[:, 1]``)."""
        if not hasattr(self, "arrays_"):
            raise ValueError("the forest is not fitted; call fit or from_state first")
        return self.trees_.predict(X)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Config and flat arrays: every tree's nodes concatenated, with offsets."""
        config = {"n_estimators": self.n_estimators, "n_features_in_": self.n_features_in_}
        return config, self.trees_.get_arrays()

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> AttackForest:
        """Rebuild a fitted forest from :meth:`get_state` output, validating every array.

        Checked before anything is allocated from the arrays' contents: the config's keys and
        its size budget (:data:`MAX_TREES`, :data:`MAX_FEATURES`), then every array and every
        tree as :class:`~latent_sculpting.model.channels.trees.TreeEnsemble` checks them (for the
        ``"mean_share"`` aggregation: leaves hold finite, non-negative weights with a positive
        sum).

        Raises
        ------
        ModelFileError
            A :class:`ValueError` naming the tree, node, field and value at fault.
        """
        model = cls.__new__(cls)
        model._load(config, arrays)
        model.random_state = None
        return model

    def _load(self, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Validate ``config`` and ``arrays`` and set the fitted state from them."""
        n_trees, n_features = check_config(config, _CONFIG_KEYS, "forest")
        self.trees_ = TreeEnsemble(
            arrays,
            n_trees=n_trees,
            n_features=n_features,
            aggregation="mean_share",
            dtype=np.float32,
            name="forest",
        )
        self.n_estimators = n_trees
        self.n_features_in_ = n_features
        self.arrays_ = self.trees_.arrays_


def _sklearn_arrays(forest: RandomForestClassifier) -> dict[str, np.ndarray]:
    """The node arrays of a fitted two-class forest, read through public ``tree_`` attributes."""
    trees = [estimator.tree_ for estimator in forest.estimators_]
    return {
        "left_child": np.concatenate([tree.children_left for tree in trees]),
        "right_child": np.concatenate([tree.children_right for tree in trees]),
        "feature": np.concatenate([tree.feature for tree in trees]),
        "threshold": np.concatenate([tree.threshold for tree in trees]),
        "missing_go_to_left": np.concatenate([tree.missing_go_to_left for tree in trees]),
        "values": np.concatenate([tree.value[:, 0, :] for tree in trees]),
        "offsets": np.cumsum([0] + [tree.node_count for tree in trees]),
        "max_depth": np.asarray([tree.max_depth for tree in trees]),
    }
