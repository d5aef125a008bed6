"""Write the format-2 model files that ``tests/test_persistence.py`` loads with today's code.

They were written by commit 5e8fa46 (the last to write format 2), so that reading old files is
tested against files the old code really wrote::

    git archive 5e8fa46 src | tar -x -C /tmp/old
    PYTHONPATH=/tmp/old/src python tests/legacy/make_format2.py

Each model is fitted on the toy data of :func:`toy` and its scores and p-values of the rows to
score are saved beside it in ``format2-scores.npz``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from latent_sculpting import LatentSculpting, preset

HERE = Path(__file__).parent
SMALL_FLOW = {"flow_transforms": 2, "flow_hidden": 16, "flow_epochs": 2, "flow_batch_size": 64}
#: name -> estimator arguments; each a kind of model that format 2 could hold.
MODELS = {
    # The default's parts: Deep SVDD embedding, standardised flow input, forest, Fisher's tails.
    "fused": {**preset("fast"), "d_model": 16, "latent_dim": 4, "batch_size": 64, **SMALL_FLOW},
    # What `sculpt train` fitted on benign-only data: Stage 2 alone, forest_trees ignored.
    "benign-only": {**preset("fast"), "stage1": False, "score": "nll", **SMALL_FLOW},
    # The paper's later version: FT-Transformer, two-stage rule, thresholds on training NLL.
    "paper-v2": {
        **preset("paper-v2"),
        "d_model": 8,
        "n_heads": 2,
        "n_layers": 1,
        "d_ffn": 16,
        "latent_dim": 4,
        "epochs": 1,
        "batch_size": 64,
        **SMALL_FLOW,
    },
}


def toy(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Benign rows, known attacks 6 away along axis 0, and rows to score (some of each)."""
    rng = np.random.default_rng(seed)
    benign = rng.normal(size=(300, 12))
    attack = rng.normal(size=(100, 12)) + 6 * np.eye(12)[0]
    X = np.vstack([benign, attack]).astype(np.float32)
    y = np.r_[np.zeros(300), np.ones(100)].astype(np.int64)
    score = rng.normal(scale=2.0, size=(60, 12)).astype(np.float32)
    return X, y, score


def main() -> None:
    X, y, X_score = toy()
    torch.set_num_threads(1)
    arrays = {"X": X_score}
    for name, params in MODELS.items():
        model = LatentSculpting(**params, random_state=0, device="cpu")
        if params["stage1"]:
            model.fit(X, y)
        else:
            model.fit(X[y == 0])
        model.save(HERE / f"format2-{name}.sculpt")
        arrays[f"{name}/scores"] = model.decision_function(X_score)
        arrays[f"{name}/p_values"] = model.p_values(X_score)
    np.savez_compressed(HERE / "format2-scores.npz", **arrays)


if __name__ == "__main__":
    main()
