"""Gradient-boosted trees' log-odds that a flow is an attack, held as validated arrays.

A supervised channel like the random forest (:mod:`.forest`): scikit-learn's
``HistGradientBoostingClassifier``, binary, trained on the scaled features of benign flows
against the *known* attacks. The design search on validation folds
(``benchmarks/design/channel_search.py``, ``docs/research/presets.md``) found it the stronger of
the two at low false-positive rates.

scikit-learn fits. The fitted trees are read once, at fit time, into the node arrays of
:mod:`latent_sculpting.model.channels.trees` with its ``"sum"`` aggregation (the baseline plus one
leaf value
per tree, in order), and everything after that, scoring, saving and loading, uses only those
arrays: loading a model file never touches scikit-learn. scikit-learn offers no public access to
a fitted booster's trees, so :func:`_sklearn_arrays` reads two private attributes,
``_predictors`` (each iteration's tree, a structured ``nodes`` array) and
``_baseline_prediction``; only here, only at fit time, with scikit-learn pinned in
``constraints.txt``. The tests check that the arrays give what ``decision_function`` gives, bit
for bit, so a change of those internals fails them instead of moving scores.

Splits are numerical only: the features are numbers once encoded, and the booster is fitted
with ``categorical_features=None``; a categorical (bitset) node would be refused. The input
layer replaces non-finite values, so scaled flows hold no NaN; one would still be routed where
scikit-learn routes it (``missing_go_to_left``), by the same kernel as the forest's.

The score is the raw log-odds (``decision_function``), not the probability: higher is more
attack-like either way, and the log-odds keeps resolving flows in the tail, where a
probability rounds to 1.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from latent_sculpting.errors import ModelFileError
from latent_sculpting.model.channels.trees import (
    MAX_FEATURES,
    MAX_TREES,
    TreeEnsemble,
    check_config,
    check_training_data,
)

__all__ = ["EARLY_STOPPING", "LEARNING_RATE", "MAX_LEAF_NODES", "AttackBooster", "classifier"]

#: Shrinkage of every tree's values (scikit-learn's default): small steps, each tree correcting
#: a tenth of what the ones before it left.
LEARNING_RATE = 0.1
#: Leaves per tree (scikit-learn's default). Trees are grown best-first, so this, not a depth,
#: bounds each tree; with ``min_samples_leaf=20`` (the default) a leaf holds at least 20 rows.
MAX_LEAF_NODES = 31
#: scikit-learn's ``"auto"``: above 10,000 training rows, 10 % of them (stratified, drawn with
#: the booster's seed) are held out and boosting stops once 10 iterations in a row have not
#: improved their loss; smaller fits run every iteration. So ``max_iter`` is a cap, and the
#: trees kept are ``n_iter_``.
EARLY_STOPPING = "auto"
#: The config of :meth:`AttackBooster.get_state`, each key with its cap.
_CONFIG_KEYS = {"max_iter": MAX_TREES, "n_iter_": MAX_TREES, "n_features_in_": MAX_FEATURES}


class AttackBooster:
    """Gradient-boosted log-odds that a flow is an attack, kept as plain validated arrays.

    Parameters
    ----------
    max_iter : int, default=100
        Boosting iterations (one tree each), between 1 and :data:`~.trees.MAX_TREES`; early
        stopping (:data:`EARLY_STOPPING`) may keep fewer.
    random_state : int or None, default=None
        Seed of the early-stopping split (and of the binning's subsample above 200,000 rows).

    Attributes
    ----------
    n_features_in_ : int
    n_iter_ : int
        Trees kept.
    arrays_ : dict of str to numpy.ndarray
        The fitted trees as validated node arrays, those of :meth:`get_state` (read-only).
    trees_ : TreeEnsemble
        Their evaluator (:mod:`latent_sculpting.model.channels.trees`).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3))
    >>> booster = AttackBooster(20, random_state=0).fit(X, (X[:, 0] > 0).astype(int))
    >>> bool(booster.decision_function(np.array([[2.0, 0, 0]]))[0] > 0)
    True
    >>> copy = AttackBooster.from_state(*booster.get_state())
    >>> bool(np.array_equal(copy.decision_function(X), booster.decision_function(X)))
    True
    """

    def __init__(self, max_iter: int = 100, *, random_state: int | None = None) -> None:
        if not 1 <= max_iter <= MAX_TREES:
            raise ValueError(f"max_iter must be between 1 and {MAX_TREES}, got {max_iter}")
        self.max_iter = max_iter
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> AttackBooster:
        """Fit on scaled features ``X`` with 0 (benign) / 1 (known attack) targets ``y``."""
        X, y = check_training_data(X, y, "booster")
        model = classifier(self.max_iter, self.random_state).fit(X, y)
        config = {"max_iter": self.max_iter, "n_iter_": model.n_iter_, "n_features_in_": X.shape[1]}
        self._load(config, _sklearn_arrays(model))
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Log-odds that each flow is an attack (scikit-learn's ``decision_function``)."""
        if not hasattr(self, "trees_"):
            raise ValueError("the booster is not fitted; call fit or from_state first")
        return self.trees_.predict(X)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Config and flat arrays: every tree's nodes concatenated, with offsets."""
        config = {
            "max_iter": self.max_iter,
            "n_iter_": self.n_iter_,
            "n_features_in_": self.n_features_in_,
        }
        return config, self.trees_.get_arrays()

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> AttackBooster:
        """Rebuild a fitted booster from :meth:`get_state` output, validating every array.

        Checked before anything is allocated from the arrays' contents: the config's keys, its
        size budget and ``n_iter_ <= max_iter``, then every array and every tree as
        :class:`~latent_sculpting.model.channels.trees.TreeEnsemble` checks them (for the ``"sum"``
        aggregation: finite leaf values and baseline, whose largest possible total is finite).

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
        max_iter, n_iter, n_features = check_config(config, _CONFIG_KEYS, "boost")
        if n_iter > max_iter:
            raise ModelFileError(f"boost config: n_iter_ {n_iter} above max_iter {max_iter}")
        self.trees_ = TreeEnsemble(
            arrays,
            n_trees=n_iter,
            n_features=n_features,
            aggregation="sum",
            dtype=np.float64,
            name="boost",
        )
        self.max_iter = max_iter
        self.n_iter_ = n_iter
        self.n_features_in_ = n_features
        self.arrays_ = self.trees_.arrays_


def classifier(max_iter: int, random_state: int | None) -> HistGradientBoostingClassifier:
    """The unfitted scikit-learn booster that :meth:`AttackBooster.fit` fits."""
    return HistGradientBoostingClassifier(
        learning_rate=LEARNING_RATE,
        max_iter=max_iter,
        max_leaf_nodes=MAX_LEAF_NODES,
        categorical_features=None,
        early_stopping=EARLY_STOPPING,
        random_state=random_state,
    )


def _sklearn_arrays(model: HistGradientBoostingClassifier) -> dict[str, np.ndarray]:
    """The node arrays of a fitted binary booster.

    Reads scikit-learn's private ``_predictors`` and ``_baseline_prediction`` (there is no
    public access to the trees); called once, at fit time, never on a loaded model.
    """
    if model.n_trees_per_iteration_ != 1:
        raise ValueError(f"expected a binary booster, got {model.n_trees_per_iteration_} trees")
    trees = [predictors[0].nodes for predictors in model._predictors]
    for index, nodes in enumerate(trees):
        categorical = np.flatnonzero(nodes["is_categorical"] & ~nodes["is_leaf"].astype(bool))
        if categorical.size:
            raise ValueError(
                f"boost tree {index} node {categorical[0]} splits on categories (feature "
                f"{nodes['feature_idx'][categorical[0]]}); only numerical splits can be stored"
            )
    nodes = np.concatenate(trees)
    leaf = nodes["is_leaf"].astype(bool)
    baseline = np.asarray(model._baseline_prediction, dtype=np.float64)
    if baseline.size != 1:
        raise ValueError(f"expected one baseline log-odds, got shape {baseline.shape}")
    return {
        "left_child": np.where(leaf, -1, nodes["left"].astype(np.int64)),
        "right_child": np.where(leaf, -1, nodes["right"].astype(np.int64)),
        "feature": nodes["feature_idx"].astype(np.int64),
        "threshold": nodes["num_threshold"].astype(np.float64),
        "missing_go_to_left": nodes["missing_go_to_left"].astype(np.uint8),
        "values": nodes["value"].astype(np.float64),
        "offsets": np.cumsum([0] + [len(tree) for tree in trees]),
        "max_depth": np.asarray([int(tree["depth"].max()) for tree in trees]),
        "baseline": baseline.reshape(1),
    }
