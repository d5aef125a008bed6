"""Stage 1: the encoder sculpts the toy classes apart, picks an epoch, places the centroids."""

import numpy as np
import pytest
import torch

from latent_sculpting.model.stage1.train import STAGE1_PARAMETERS, _undersample, fit_stage1, sqdist

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow

PARAMS = {
    "encoder": "mlp",
    "latent_dim": 4,
    "d_model": 16,
    "n_heads": 1,
    "n_layers": 1,
    "d_ffn": 16,
    "dropout": 0.0,
    "loss": "binary_sculpting",
    "alpha": 0.1,
    "beta": 0.1,
    "gamma": 1.0,
    "margin": 5.0,
    "input_noise": 0.1,
    "lr": 3e-3,
    "weight_decay": 1e-2,
    "batch_size": 32,
    "epochs": 4,
    "grad_clip": 1.0,
    "validation_fraction": 0.2,
    "selection": "distance_auroc",
    "undersample_benign": True,
}


def toy(seed=0):
    rng = np.random.default_rng(seed)
    X = np.vstack([rng.normal(size=(300, 5)), rng.normal(size=(120, 5)) + 6 * np.eye(5)[0]])
    y = np.r_[np.zeros(300), np.ones(120)].astype(np.int64)
    groups = np.r_[["BENIGN"] * 300, ["a"] * 80, ["b"] * 40]
    return X.astype(np.float32), y, groups


def fit(seed=0, **change):
    X, y, groups = toy()
    params = {**PARAMS, **change}
    torch.manual_seed(seed)  # the encoder's initial weights come from torch's global generator
    return (
        fit_stage1(X, y, groups, np.random.default_rng(seed), **params, device=torch.device("cpu")),
        X,
        y,
    )


def test_parameters_listed_are_the_ones_taken():
    assert set(STAGE1_PARAMETERS) == set(PARAMS)


@pytest.mark.parametrize("selection", ["distance_auroc", "centroid_f1"])
def test_codes_separate_the_classes_around_the_centroids(selection):
    result, X, y = fit(selection=selection)
    assert not result.encoder.training
    assert result.center_benign.shape == result.center_attack.shape == (4,)
    with torch.no_grad():
        codes = result.encoder(torch.as_tensor(X))
    nearer_attack = sqdist(codes, result.center_attack) < sqdist(codes, result.center_benign)
    assert (nearer_attack.numpy() == y).mean() > 0.9
    history = result.history
    assert len(history["stage1_loss"]) == len(history["stage1_val_f1"]) == 4
    assert 1 <= history["best_epoch"] <= 4
    # Benign rows cut to the largest attack class (80), then a fifth held out for validation.
    assert history["n_stage1_train"] + history["n_stage1_val"] == 120 + 80


def test_same_rng_same_encoder():
    a, X, _ = fit(seed=1)
    b, _, _ = fit(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(a.encoder(torch.as_tensor(X)), b.encoder(torch.as_tensor(X)))


def test_needs_both_classes_after_the_validation_split():
    X, y, groups = toy()
    y = np.zeros_like(y)
    y[0] = 1  # one attack: it goes to the validation rows
    with pytest.raises(ValueError, match="benign and attack rows after the validation split"):
        fit_stage1(X, y, None, np.random.default_rng(0), **PARAMS, device=torch.device("cpu"))


def test_undersample_keeps_every_attack_and_the_largest_class_of_benign():
    _, y, groups = toy()
    rows = _undersample(y, groups, np.random.default_rng(0))
    assert (y[rows] == 1).sum() == 120 and (y[rows] == 0).sum() == 80
    assert (y[_undersample(y, None, np.random.default_rng(0))] == 0).sum() == 120
