"""The one minibatch training loop behind Stage 1, Stage 2 and the Deep SVDD channel.

Each caller supplies what differs (the loss of a batch of row indices, the optimiser, the
schedule, what to do after an epoch); the loop owns what they share: shuffling, batching,
the optimiser step, gradient clipping, per-epoch mean losses and the progress bar. The order of
random draws is part of the contract: one ``randperm`` of the rows per epoch from ``generator``
(torch's global generator when None), then whatever ``batch_loss`` draws, batch by batch, so a
fixed seed gives the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["train_epochs"]


def train_epochs(
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    modules: Sequence[nn.Module],
    n_rows: int,
    batch_size: int,
    epochs: int,
    generator: torch.Generator | None = None,
    device: torch.device | None = None,
    grad_clip: float | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    min_batch_rows: int = 1,
    skip_nonfinite: bool = False,
    after_epoch: Callable[[int, float], dict[str, str] | None] | None = None,
    desc: str | None = None,
    verbose: bool = False,
) -> list[float]:
    """Train for ``epochs`` passes over ``n_rows`` rows in shuffled minibatches.

    Parameters
    ----------
    batch_loss : callable
        Maps a tensor of row indices (on ``device``) to the scalar loss of those rows.
    optimizer : torch.optim.Optimizer
        Steps once per batch; its parameters are the ones clipped.
    modules : sequence of nn.Module
        Put in train mode at the start of every epoch (``after_epoch`` may switch them to eval).
    n_rows, batch_size, epochs : int
    generator : torch.Generator, optional
        Source of the row order; torch's global generator when None.
    device : torch.device, optional
        Where the row indices go.
    grad_clip : float, optional
        Clip the gradients' total norm to this value.
    scheduler : LRScheduler, optional
        Steps after every optimiser step.
    min_batch_rows : int, default=1
        Smaller batches (only the last of an epoch can be) are skipped.
    skip_nonfinite : bool, default=False
        Skip a batch whose loss is NaN or infinite, without a step.
    after_epoch : callable, optional
        ``after_epoch(epoch, mean_loss)``, after each epoch; may return a progress-bar postfix.
    desc : str, optional
        Progress-bar label.
    verbose : bool, default=False
        Show the progress bar.

    Returns
    -------
    list of float
        Mean loss of the batches stepped on, per epoch (0 for an epoch without one).
    """
    params = [p for group in optimizer.param_groups for p in group["params"]]
    losses: list[float] = []
    bar = tqdm(range(epochs), desc=desc, disable=not verbose, unit="epoch", leave=False)
    for epoch in bar:
        for module in modules:
            module.train()
        total, batches = 0.0, 0
        order = torch.randperm(n_rows, generator=generator)
        if device is not None:
            order = order.to(device)
        for batch in order.split(batch_size):
            if len(batch) < min_batch_rows:
                continue
            loss = batch_loss(batch)
            if skip_nonfinite and not torch.isfinite(loss):
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total, batches = total + loss.item(), batches + 1
        losses.append(total / max(batches, 1))
        postfix = after_epoch(epoch, losses[-1]) if after_epoch is not None else None
        if postfix:
            bar.set_postfix(postfix)
    bar.close()
    return losses
