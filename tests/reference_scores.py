"""Scores of every preset on a fixed slice of the embedded sample, saved from a known commit.

``tests/test_reference_scores.py`` refits each preset with the same seed and compares with the
saved file, so that a refactor that should not move scores is checked to not move them. A change
that moves scores on purpose regenerates the file in the same commit and says why::

    python tests/reference_scores.py   # rewrites tests/data/reference_scores.npz
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from latent_sculpting import LatentSculpting, preset
from latent_sculpting.data import load_cicids2017, zero_shot_splits

PATH = Path(__file__).parent / "data" / "reference_scores.npz"
PRESET_NAMES = ("paper-v1", "paper-v2", "fused", "default", "fast")
N_TRAIN, N_SCORE = 2500, 600
# The paper presets train for 10 + 10 epochs; 2 + 2 keep their every code path at a tenth of
# the time, which is what a refactor needs checked.
SHORTER = {"paper-v1": {"epochs": 2, "flow_epochs": 2}, "paper-v2": {"epochs": 2, "flow_epochs": 2}}


@functools.cache
def reference_slice() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Training rows (features, 0/1 target, class names) and rows to score, fixed by seeds."""
    splits = zero_shot_splits(load_cicids2017(), seed=42)
    rng = np.random.default_rng(7)
    train = np.sort(rng.choice(len(splits.train), N_TRAIN, replace=False))
    score = np.sort(rng.choice(len(splits.zero_shot), N_SCORE, replace=False))
    return (
        splits.train.X[train],
        splits.train.y[train],
        splits.train.labels[train],
        splits.zero_shot.X[score],
    )


@functools.cache
def fitted_preset(name: str) -> LatentSculpting:
    """``name`` fitted with seed 0 on the slice (one thread, CPU); fitted once per session."""
    X, y, groups, _ = reference_slice()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        params = {**preset(name), **SHORTER.get(name, {})}
        model = LatentSculpting(**params, random_state=0, device="cpu")
        return model.fit(X, y, groups=groups)
    finally:
        torch.set_num_threads(threads)


def preset_scores(name: str, model: LatentSculpting | None = None) -> dict[str, np.ndarray]:
    """Scores, p-values and threshold of ``name`` fitted on the slice (or of ``model``)."""
    model = fitted_preset(name) if model is None else model
    X_score = reference_slice()[3]
    return {
        "scores": model.decision_function(X_score),
        "p_values": model.p_values(X_score),
        "threshold": np.asarray([model.threshold_]),
    }


if __name__ == "__main__":
    arrays = {}
    for name in PRESET_NAMES:
        for key, value in preset_scores(name).items():
            arrays[f"{name}/{key}"] = value
        print(name, "done")
    PATH.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(PATH, **arrays)
    print("wrote", PATH)
