"""A random forest's attack probability, storable as plain arrays (no pickle).

The ``default`` preset fuses the flow's likelihood with a supervised channel: a random forest on
the same scaled features, trained on benign flows against the *known* attacks. On the zero-shot
protocol such a forest ranks most withheld attacks well, because they resemble known ones in the
directions its axis-aligned splits use, and it misses what resembles nothing known (withheld
Infiltration, a withheld port scan), which the flow catches (docs/presets.md).

scikit-learn fits and predicts. It offers no public way to build a fitted tree from arrays, so
:meth:`AttackForest.from_state` fills ``sklearn.tree._tree.Tree`` through the same
``__setstate__`` that unpickling uses, from arrays stored as tensors; a test checks that a
round trip gives identical probabilities.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree._tree import Tree

__all__ = ["AttackForest"]

#: Per-node fields stored for every tree; sklearn's other node fields (impurity, sample counts)
#: are not needed to predict and are restored as zeros.
_NODE_FIELDS = ("left_child", "right_child", "feature", "threshold", "missing_go_to_left")


class AttackForest:
    """Random forest probability that a flow is an attack, with array-only persistence.

    Parameters
    ----------
    n_estimators : int, default=100
    random_state : int or None, default=None

    Attributes
    ----------
    trees_ : list of sklearn.tree._tree.Tree
        The fitted trees (scikit-learn's own Cython structures, which predict).
    n_features_in_ : int
    oob_proba_ : numpy.ndarray
        Out-of-bag attack probability of each training row: the vote of the trees whose
        bootstrap sample left the row out, an honest score for a row the forest was fitted on
        (NaN where no tree left it out). Set by :meth:`fit` only; not stored.
    """

    def __init__(self, n_estimators: int = 100, *, random_state: int | None = None) -> None:
        if n_estimators < 1:
            raise ValueError(f"n_estimators must be at least 1, got {n_estimators}")
        self.n_estimators = n_estimators
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> AttackForest:
        """Fit on scaled features ``X`` with 0 (benign) / 1 (known attack) targets ``y``."""
        y = np.asarray(y)
        if set(np.unique(y).tolist()) != {0, 1}:
            raise ValueError("the forest needs benign (0) and attack (1) rows")
        forest = RandomForestClassifier(
            self.n_estimators, n_jobs=1, oob_score=True, random_state=self.random_state
        )
        with warnings.catch_warnings():
            # With few trees some rows are in every bootstrap sample; oob_proba_ says so (NaN).
            warnings.filterwarnings("ignore", "Some inputs do not have OOB scores")
            forest.fit(np.asarray(X, dtype=np.float32), y)
        self.trees_ = [tree.tree_ for tree in forest.estimators_]
        self.oob_proba_ = forest.oob_decision_function_[:, 1]
        self.n_features_in_ = int(forest.n_features_in_)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Mean over trees of the attack share in each flow's leaf (``predict_proba[:, 1]``)."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"X must have {self.n_features_in_} columns, got shape {X.shape}")
        total = np.zeros(len(X))
        for tree in self.trees_:
            # As DecisionTreeClassifier.predict_proba: leaf class weights, normalised per row.
            leaf = tree.predict(X).reshape(len(X), -1)
            total += leaf[:, 1] / leaf.sum(axis=1)
        return total / len(self.trees_)

    def get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """Config and flat arrays: every tree's nodes concatenated, with offsets."""
        counts = [tree.node_count for tree in self.trees_]
        nodes = np.concatenate([tree.__getstate__()["nodes"] for tree in self.trees_])
        arrays = {f: np.ascontiguousarray(nodes[f]) for f in _NODE_FIELDS}
        arrays["values"] = np.concatenate([tree.value[:, 0, :] for tree in self.trees_])
        arrays["offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        arrays["max_depth"] = np.asarray([tree.max_depth for tree in self.trees_], np.int64)
        config = {"n_estimators": self.n_estimators, "n_features_in_": self.n_features_in_}
        return config, arrays

    @classmethod
    def from_state(cls, config: dict[str, Any], arrays: dict[str, np.ndarray]) -> AttackForest:
        """Rebuild a fitted forest from :meth:`get_state` output.

        Raises
        ------
        ValueError
            If an array is missing or the arrays disagree in length.
        """
        missing = {*_NODE_FIELDS, "values", "offsets", "max_depth"} - set(arrays)
        if missing:
            raise ValueError(f"forest state lacks {sorted(missing)}")
        offsets = arrays["offsets"]
        if offsets[-1] != len(arrays["values"]) or len(offsets) != len(arrays["max_depth"]) + 1:
            raise ValueError("forest state is inconsistent: node counts do not match")
        model = cls(config["n_estimators"])
        model.n_features_in_ = int(config["n_features_in_"])
        model.trees_ = []
        for i, depth in enumerate(arrays["max_depth"]):
            start, stop = int(offsets[i]), int(offsets[i + 1])
            tree = Tree(model.n_features_in_, np.asarray([2], dtype=np.intp), 1)
            nodes = np.zeros(stop - start, dtype=tree.__getstate__()["nodes"].dtype)
            for field in _NODE_FIELDS:
                nodes[field] = arrays[field][start:stop]
            values = np.ascontiguousarray(arrays["values"][start:stop, None, :], np.float64)
            state = {"max_depth": int(depth), "node_count": stop - start}
            tree.__setstate__({**state, "nodes": nodes, "values": values})
            model.trees_.append(tree)
        return model
