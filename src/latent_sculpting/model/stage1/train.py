"""Stage 1: train the sculpting encoder, pick its best epoch, place the two centroids.

The encoder (:mod:`~latent_sculpting.model.stage1.encoders`) is trained on benign flows and known
attacks
with a sculpting loss (:mod:`~latent_sculpting.model.stage1.losses`) so that benign codes form a
dense
hypersphere and attacks lie a margin away [1]_. A share of the rows is held out to pick the best
epoch; the benign and attack centroids of the training codes then give the nearest-centroid rule
of the paper's two-stage score.

References
----------
.. [1] Chhetri, Thapa, Kumar, Chen. "Latent Sculpting for Zero-Shot Generalization: A Manifold
   Learning Approach to Out-of-Distribution Anomaly Detection." arXiv:2512.22179.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import f1_score, roc_auc_score

from latent_sculpting.model.density.fastpath import encode
from latent_sculpting.model.stage1.encoders import build_encoder
from latent_sculpting.model.stage1.losses import build_loss
from latent_sculpting.model.training import train_epochs

__all__ = ["STAGE1_PARAMETERS", "Stage1Fit", "fit_stage1", "sqdist"]

#: The estimator's parameters that :func:`fit_stage1` takes.
STAGE1_PARAMETERS = (
    "encoder",
    "latent_dim",
    "d_model",
    "n_heads",
    "n_layers",
    "d_ffn",
    "dropout",
    "loss",
    "alpha",
    "beta",
    "gamma",
    "margin",
    "input_noise",
    "lr",
    "weight_decay",
    "batch_size",
    "epochs",
    "grad_clip",
    "validation_fraction",
    "selection",
    "undersample_benign",
)


@dataclass
class Stage1Fit:
    """A trained encoder (eval mode), its centroids, and its training history."""

    encoder: torch.nn.Module
    center_benign: torch.Tensor
    center_attack: torch.Tensor
    history: dict[str, Any] = field(default_factory=dict)


def sqdist(codes: torch.Tensor, center: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance of each code to ``center``."""
    return (codes - center).pow(2).sum(dim=1)


def fit_stage1(
    Z: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray | None,
    rng: np.random.Generator,
    *,
    encoder: str,
    latent_dim: int,
    d_model: int,
    n_heads: int,
    n_layers: int,
    d_ffn: int,
    dropout: float,
    loss: str,
    alpha: float,
    beta: float,
    gamma: float,
    margin: float,
    input_noise: float,
    lr: float,
    weight_decay: float,
    batch_size: int,
    epochs: int,
    grad_clip: float,
    validation_fraction: float,
    selection: str,
    undersample_benign: bool,
    device: torch.device,
    fast: bool = True,
    verbose: bool = False,
    events: list[dict[str, Any]] | None = None,
) -> Stage1Fit:
    """Train the encoder on scaled rows ``Z`` with 0/1 targets ``y``.

    The hyperparameters are the estimator's (see :class:`~latent_sculpting.LatentSculpting`);
    ``groups`` (attack class per row) sizes the benign undersample, ``rng`` draws the row
    choices and the seed of the batch order and input noise, ``fast`` encodes the validation
    rows through the fast path (:mod:`~latent_sculpting.model.density.fastpath`), ``events``
    receives the training loop's reports (:func:`~latent_sculpting.model.training.train_epochs`).

    Raises
    ------
    ValueError
        If the rows left for training after the validation split lack one class.
    LossDivergedError
        If the loss keeps exploding (:func:`~latent_sculpting.model.training.train_epochs`).
    """
    rows = _undersample(y, groups, rng) if undersample_benign else np.arange(len(y))
    rows = rng.permutation(rows)
    n_val = max(2, int(round(validation_fraction * len(rows))))
    val, train = _stratified_head(rows, y, n_val, rng)
    if (y[train] == 1).sum() == 0 or (y[train] == 0).sum() == 0:
        raise ValueError("Stage 1 needs benign and attack rows after the validation split")

    net = build_encoder(
        encoder,
        Z.shape[1],
        latent_dim=latent_dim,
        d_model=d_model,
        n_heads=n_heads,
        n_layers=n_layers,
        d_ffn=d_ffn,
        dropout=dropout,
    ).to(device)
    criterion = build_loss(
        loss, latent_dim=latent_dim, alpha=alpha, beta=beta, gamma=gamma, margin=margin
    ).to(device)
    optimizer = torch.optim.AdamW(
        [*net.parameters(), *criterion.parameters()], lr=lr, weight_decay=weight_decay
    )
    # NOTE[DIFF]: the reference code builds CosineAnnealingLR with T_max in steps but steps
    # it once per epoch, so its learning rate barely decays; we step per batch, as intended.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * math.ceil(len(train) / batch_size)
    )
    X_train = torch.as_tensor(Z[train], device=device)
    y_train = torch.as_tensor(y[train], device=device)
    X_val, y_val = torch.as_tensor(Z[val], device=device), y[val]
    generator = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**31)))

    def batch_loss(batch: torch.Tensor) -> torch.Tensor:
        xb = X_train[batch]
        if input_noise > 0:
            noise = torch.randn(xb.shape, generator=generator).to(device)
            xb = xb + input_noise * noise
        return criterion(net(xb), y_train[batch])

    def centroids() -> tuple[torch.Tensor, torch.Tensor]:
        codes = encode(net, X_train, fast=fast)
        return codes[y_train == 0].mean(dim=0), codes[y_train == 1].mean(dim=0)

    best: dict[str, Any] = {"quality": -math.inf, "state": None, "epoch": 0}
    val_f1s: list[float] = []

    def after_epoch(epoch: int, mean_loss: float) -> dict[str, str]:
        center_benign, center_attack = centroids()
        val_codes = encode(net, X_val, fast=fast)
        to_benign = sqdist(val_codes, center_benign)
        nearer_attack = sqdist(val_codes, center_attack) < to_benign
        f1 = float(f1_score(y_val, nearer_attack.cpu().numpy(), zero_division=0))
        val_f1s.append(f1)
        if selection == "centroid_f1":
            quality = f1
        else:  # "distance_auroc": what the Binary Latent Sculpting loss optimises
            quality = roc_auc_score(y_val, to_benign.cpu().numpy())
        if quality > best["quality"]:
            best.update(quality=quality, epoch=epoch + 1, state=copy.deepcopy(net.state_dict()))
        return {"loss": f"{mean_loss:.4f}", "val_f1": f"{f1:.4f}"}

    losses = train_epochs(
        batch_loss,
        optimizer,
        modules=[net],
        n_rows=len(train),
        batch_size=batch_size,
        epochs=epochs,
        generator=generator,
        device=device,
        grad_clip=grad_clip,
        scheduler=schedule,
        # A one-row batch has no centroid to sculpt around (its terms are zero).
        min_batch_rows=2,
        after_epoch=after_epoch,
        desc="stage 1 (encoder)",
        verbose=verbose,
        events=events,
    )
    net.load_state_dict(best["state"])
    net.eval()
    center_benign, center_attack = centroids()
    history = {
        "stage1_loss": losses,
        "stage1_val_f1": val_f1s,
        "best_epoch": best["epoch"],
        "n_stage1_train": int(len(train)),
        "n_stage1_val": int(len(val)),
    }
    return Stage1Fit(net, center_benign, center_attack, history)


def _undersample(y: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
    """Rows for Stage 1: all attacks, benign cut to the size of the largest attack class."""
    attack = np.flatnonzero(y == 1)
    benign = np.flatnonzero(y == 0)
    if groups is None:
        largest = len(attack)
    else:
        _, counts = np.unique(groups[attack], return_counts=True)
        largest = int(counts.max())
    keep = rng.choice(benign, size=min(largest, len(benign)), replace=False)
    return np.sort(np.concatenate([attack, keep]))


def _stratified_head(
    rows: np.ndarray, y: np.ndarray, n_head: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split shuffled ``rows`` into a head of about ``n_head`` rows and the rest, keeping the
    benign/attack ratio in both."""
    head = []
    for label in (0, 1):
        members = rows[y[rows] == label]
        take = max(1, int(round(n_head * len(members) / len(rows))))
        head.append(members[:take])
    head_rows = np.concatenate(head)
    return rng.permutation(head_rows), rows[~np.isin(rows, head_rows)]
