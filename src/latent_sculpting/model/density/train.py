"""Stage 2: fit the flow to the benign flow inputs, and score rows by its NLL.

The flow's input is the Stage-1 code (the scaled features when ``stage1=False``), beside the Deep
SVDD embedding when there is one, standardised when ``flow_standardize`` is set. The flow itself,
a pure module, is :class:`~latent_sculpting.model.density.maf.LatentDensity` [1]_.

References
----------
.. [1] Chhetri, Thapa, Kumar, Chen. arXiv:2512.22179, Stage 2.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch

from latent_sculpting.model.density.fastpath import FastMAF, flow_nll
from latent_sculpting.model.density.maf import LatentDensity
from latent_sculpting.model.fusion import NLL_CAP
from latent_sculpting.model.preprocessing import FeaturePreprocessor
from latent_sculpting.model.training import train_epochs

__all__ = [
    "STAGE2_PARAMETERS",
    "fine_tune_blocked",
    "fit_flow",
    "flow_inputs",
    "negative_log_likelihood",
]

#: The estimator's parameters that :func:`fit_flow` takes.
STAGE2_PARAMETERS = (
    "flow_transforms",
    "flow_hidden",
    "flow_hidden_layers",
    "flow_lr",
    "flow_epochs",
    "flow_batch_size",
    "grad_clip",
)


def flow_inputs(
    codes: np.ndarray, embedding: np.ndarray | None, scaler: FeaturePreprocessor | None
) -> np.ndarray:
    """The flow's input: ``codes`` beside the ``embedding`` (if any), through ``scaler``."""
    if embedding is not None:
        codes = np.hstack([codes, embedding])
    if scaler is not None:
        codes = scaler.transform(codes)
    return codes


def fit_flow(
    inputs: np.ndarray,
    *,
    flow_transforms: int,
    flow_hidden: int,
    flow_hidden_layers: int,
    flow_lr: float,
    flow_epochs: int,
    flow_batch_size: int,
    grad_clip: float,
    device: torch.device,
    verbose: bool = False,
    init: LatentDensity | None = None,
    events: list[dict[str, Any]] | None = None,
) -> tuple[LatentDensity, list[float]]:
    """Fit a MAF to ``inputs`` by maximum likelihood; the flow (eval mode) and its mean NLL per
    epoch.

    Adam on minibatches; the batch order comes from a generator seeded from torch's global one.
    A batch whose NLL is not finite is skipped, as in the reference code. With ``init``, training
    starts from a copy of that flow (``init`` itself is left as it is; the architecture
    parameters are then its own) rather than from a fresh one: fine-tuning. ``events`` receives
    the training loop's reports; a loss that keeps diverging raises
    :class:`~latent_sculpting.errors.LossDivergedError`
    (:func:`~latent_sculpting.model.training.train_epochs`).
    """
    if init is None:
        flow = LatentDensity(
            inputs.shape[1],
            transforms=flow_transforms,
            hidden_features=flow_hidden,
            hidden_layers=flow_hidden_layers,
        ).to(device)
    else:
        flow = copy.deepcopy(init).to(device)
        flow.train()
    optimizer = torch.optim.Adam(flow.parameters(), lr=flow_lr)
    data = torch.as_tensor(inputs, device=device)
    generator = torch.Generator(device="cpu").manual_seed(int(torch.randint(2**31, ())))

    def progress(epoch: int, mean_nll: float) -> dict[str, str]:
        return {"nll": f"{mean_nll:.3f}"}

    losses = train_epochs(
        lambda batch: flow(data[batch]).mean(),
        optimizer,
        modules=[flow],
        n_rows=len(data),
        batch_size=flow_batch_size,
        epochs=flow_epochs,
        generator=generator,
        device=device,
        grad_clip=grad_clip,
        skip_nonfinite=True,
        after_epoch=progress,
        desc="stage 2 (flow)",
        verbose=verbose,
        events=events,
    )
    flow.eval()
    return flow, losses


def fine_tune_blocked(
    flow: LatentDensity, inputs: np.ndarray, *, device: torch.device
) -> float | None:
    """The largest NLL of ``inputs`` when :func:`fit_flow` could not fine-tune ``flow`` on
    them, None when it could.

    It could not when the loss (the mean NLL, in float32 as training computes it) or its
    gradient is not finite: a row so far outside what the flow was trained on that its NLL is
    astronomical (1e22 and more seen on IoT-23 capture 42-1) makes the gradient's norm overflow,
    clipping then zeroes every step, and the flow would stay as it was. ``flow`` itself is left
    as it is (its gradients too).
    """
    trial = copy.deepcopy(flow)
    nll = trial(torch.as_tensor(inputs, device=device))
    loss = nll.mean()
    if torch.isfinite(loss):
        loss.backward()
        if torch.isfinite(torch.nn.utils.clip_grad_norm_(trial.parameters(), math.inf)):
            return None
    return float(nll.detach().max())


def negative_log_likelihood(
    flow: LatentDensity, inputs: np.ndarray, *, device: torch.device, fast_flow: FastMAF | None
) -> np.ndarray:
    """NLL of each row of ``inputs`` (float64), non-finite values set to :data:`NLL_CAP`."""
    nll = flow_nll(flow, torch.as_tensor(inputs, device=device), fast_flow=fast_flow)
    nll = nll.double().cpu().numpy()
    # A code far outside the benign manifold can overflow to +inf; it is maximally anomalous.
    return np.nan_to_num(nll, nan=NLL_CAP, posinf=NLL_CAP)
