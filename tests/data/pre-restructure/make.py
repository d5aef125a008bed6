"""Write the model file and scores that ``tests/test_model_files.py`` checks against today's code.

Written once by commit 39b825e, the last commit before the package was split into subpackages,
so that a file saved by the old layout is tested with the new one::

    sculpt train --preset fast --max-per-class 2000 --seed 0 --threads 1 \
        -o tests/data/pre-restructure/fast.sculpt
    python tests/data/pre-restructure/make.py

The scores are of every 10th flow of the embedded CIC-IDS-2017 sample.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from latent_sculpting import LatentSculpting
from latent_sculpting.data import read_flows, sample_path

HERE = Path(__file__).parent


def rows_scored(model: LatentSculpting) -> np.ndarray:
    """Every 10th flow of the embedded sample, as the model's features."""
    table = read_flows(sample_path(), spec=model.spec_)
    return table.X[::10]


def main() -> None:
    model = LatentSculpting.load(HERE / "fast.sculpt")
    X = rows_scored(model)
    np.savez_compressed(
        HERE / "fast-scores.npz", scores=model.decision_function(X), p_values=model.p_values(X)
    )


if __name__ == "__main__":
    main()
