"""The one minibatch training loop behind Stage 1, Stage 2 and the Deep SVDD channel.

Each caller supplies what differs (the loss of a batch of row indices, the optimiser, the
schedule, what to do after an epoch); the loop owns what they share: shuffling, batching,
the optimiser step, gradient clipping, per-epoch mean losses, the progress bar, and watching
the losses. The order of random draws is part of the contract: one ``randperm`` of the rows per
epoch from ``generator`` (torch's global generator when None), then whatever ``batch_loss``
draws, batch by batch, so a fixed seed gives the same model.

The watch tells two things apart, each reported (the ``latent_sculpting.model.training``
logger, which ``sculpt`` prints as ``sculpt COMMAND: warning: ...``, and the ``events`` list)
with its epoch:

- **Divergence**: the epoch's mean loss or the parameters are no longer finite, or the epoch's
  median batch loss lies more than :data:`EXPLOSION_FACTOR` times max(|reference|, 1) from the
  reference (the running median of the earlier epochs' median batch losses; for the first
  epoch, the loss of its first batch, before any step). Training itself has gone wrong: the
  epoch is trained again from the state it started from (parameters, buffers, optimiser,
  schedule, random generator) with every learning rate times :data:`RESTART_LR_FACTOR`, and
  after :data:`MAX_RESTARTS` restarts of one epoch the loop raises
  :class:`~latent_sculpting.errors.LossDivergedError`.
- **A few batches dominate the mean**: the epoch's mean loss lies more than
  :data:`EXPLOSION_FACTOR` times max(|median|, 1) from its median batch loss while the median is
  sound. A few training rows lie so far outside the rest that the model gives them almost no
  likelihood; benign-only fits on real captures do this every epoch (IoT-23 capture 8-1: median
  batch NLL falling from 19.5 to -43 over 20 epochs while one batch's rose to 5e24, see the
  commit that added the watch). A smaller step cannot change the data, so training goes on; the
  first such epoch is logged, the rest are counted in one line at the end and listed in
  ``events``. Batches skipped for a non-finite loss (``skip_nonfinite``) are reported alike.

Neither check draws a random number or touches the arithmetic of a step: a fit in which nothing
diverged is what it was without the watch.
"""

from __future__ import annotations

import copy
import logging
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from latent_sculpting.errors import LossDivergedError

__all__ = ["EXPLOSION_FACTOR", "MAX_RESTARTS", "RESTART_LR_FACTOR", "train_epochs"]

logger = logging.getLogger(__name__)

#: A loss further than this many times max(|reference|, 1) from its reference has exploded.
#: Measured (both ratios, every epoch): every preset's fit on tests/reference_scores.py's slice
#: stays below 0.7; in benign-only fits of the ``default`` preset on six real captures (IoT-23
#: 5-1, 8-1, 34-1, 42-1, CTU-SME-11, UNSW-NB15) the median batch loss moves at most 40 times its
#: reference, while the epoch's mean reaches 7e21 times its median: a factor of 1e6 leaves
#: 2.5e4 of room above the largest ordinary move of the median.
EXPLOSION_FACTOR = 1e6
#: Restarts of one epoch before the loop gives up.
MAX_RESTARTS = 3
#: Each restart multiplies every learning rate by this (and it stays so for later epochs).
RESTART_LR_FACTOR = 0.1


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
    events: list[dict[str, Any]] | None = None,
) -> list[float]:
    """Train for ``epochs`` passes over ``n_rows`` rows in shuffled minibatches.

    Parameters
    ----------
    batch_loss : callable
        Maps a tensor of row indices (on ``device``) to the scalar loss of those rows.
    optimizer : torch.optim.Optimizer
        Steps once per batch; its parameters are the ones clipped.
    modules : sequence of nn.Module
        Put in train mode at the start of every epoch (``after_epoch`` may switch them to eval);
        their buffers are restored with the parameters when an epoch is trained again.
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
        Skip a batch whose loss is NaN or infinite, without a step (reported).
    after_epoch : callable, optional
        ``after_epoch(epoch, mean_loss)``, after each epoch that did not diverge; may return a
        progress-bar postfix.
    desc : str, optional
        Progress-bar label, and the stage named in reports and errors.
    verbose : bool, default=False
        Show the progress bar.
    events : list, optional
        Receives one dict per report, with ``stage``, ``epoch`` (1-based) and ``event``:
        ``"restarted"`` (with ``problem`` and ``lr``, the learning rate after the cut),
        ``"dominated"`` (with ``mean``, ``median`` and ``largest`` batch loss) or
        ``"skipped_nonfinite"`` (with ``batches``).

    Returns
    -------
    list of float
        Mean loss of the batches stepped on, per epoch (0 for an epoch without one).

    Raises
    ------
    LossDivergedError
        If an epoch still diverges after :data:`MAX_RESTARTS` restarts.
    """
    stage = desc or "training"
    events = [] if events is None else events
    reports = _Reports(stage, events)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    losses: list[float] = []
    medians: list[float] = []  # of each kept epoch's batch losses
    bar = tqdm(total=epochs, desc=desc, disable=not verbose, unit="epoch", leave=False)
    epoch, restarts = 0, 0
    while epoch < epochs:
        start = _Snapshot(params, modules, optimizer, scheduler, generator)
        for module in modules:
            module.train()
        total, batches, skipped, batch_losses = 0.0, 0, 0, []
        order = torch.randperm(n_rows, generator=generator)
        if device is not None:
            order = order.to(device)
        for batch in order.split(batch_size):
            if len(batch) < min_batch_rows:
                continue
            loss = batch_loss(batch)
            if skip_nonfinite and not torch.isfinite(loss):
                skipped += 1
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(params, grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            value = loss.item()
            total, batches = total + value, batches + 1
            batch_losses.append(value)
        mean = total / max(batches, 1)
        median = statistics.median(batch_losses) if batch_losses else None
        reference = statistics.median(medians) if medians else _first(batch_losses)
        problem = _divergence(mean, median, reference, params)
        if problem is not None:
            if restarts == MAX_RESTARTS:
                bar.close()
                reports.close()
                raise LossDivergedError(
                    f"{stage}, epoch {epoch + 1} of {epochs}: {problem}, still after "
                    f"{MAX_RESTARTS} restarts with the learning rate cut to "
                    f"{_learning_rate(optimizer):.3g}; the training rows may hold extreme "
                    "values (see the column report), or set a lower learning rate",
                    stage=stage,
                    epoch=epoch + 1,
                )
            start.restore(params, modules, optimizer, scheduler, generator, RESTART_LR_FACTOR)
            restarts += 1
            lr = _learning_rate(optimizer)
            reports.restarted(epoch + 1, problem, lr, restarts)
            continue
        restarts = 0
        if skipped:
            reports.skipped(epoch + 1, skipped, skipped + batches)
        if median is not None and _far(mean, median):
            reports.dominated(epoch + 1, mean, median, max(batch_losses))
        if median is not None:
            medians.append(median)
        losses.append(mean)
        postfix = after_epoch(epoch, mean) if after_epoch is not None else None
        if postfix:
            bar.set_postfix(postfix)
        bar.update(1)
        epoch += 1
    bar.close()
    reports.close()
    return losses


def _first(values: list[float]) -> float | None:
    return values[0] if values else None


def _far(value: float, reference: float) -> bool:
    """Whether ``value`` lies more than :data:`EXPLOSION_FACTOR` x max(|reference|, 1) from it."""
    return abs(value - reference) > EXPLOSION_FACTOR * max(abs(reference), 1.0)


def _divergence(
    mean: float, median: float | None, reference: float | None, params: Sequence[torch.Tensor]
) -> str | None:
    """How an epoch with this ``mean`` and ``median`` batch loss diverged; None if it did not.

    The median, not the mean: one batch of rows far outside the rest can raise the mean by any
    amount without anything wrong in the training (see the module's docstring).
    """
    if not math.isfinite(mean):
        return f"the mean loss is {mean}"
    if not all(bool(torch.isfinite(p).all()) for p in params):
        return "the parameters are no longer finite"
    if median is not None and reference is not None and _far(median, reference):
        return (
            f"the median batch loss {median:.4g} exploded (more than {EXPLOSION_FACTOR:.0e} "
            f"times its reference {reference:.4g} away from it)"
        )
    return None


def _learning_rate(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


class _Reports:
    """The watch's reports of one loop: every one into ``events``; to the log, each restart,
    and the first epoch of each other kind with a count of the rest at the end."""

    def __init__(self, stage: str, events: list[dict[str, Any]]) -> None:
        self.stage, self.events = stage, events
        self.repeats: dict[str, list[int]] = {}

    def restarted(self, epoch: int, problem: str, lr: float, restart: int) -> None:
        self.events.append(
            {"stage": self.stage, "epoch": epoch, "event": "restarted", "problem": problem,
             "lr": lr}
        )  # fmt: skip
        logger.warning(
            "%s, epoch %d: %s; training the epoch again from its start with the learning rate "
            "cut to %.3g (restart %d of at most %d)",
            self.stage, epoch, problem, lr, restart, MAX_RESTARTS,
        )  # fmt: skip

    def dominated(self, epoch: int, mean: float, median: float, largest: float) -> None:
        self.events.append(
            {"stage": self.stage, "epoch": epoch, "event": "dominated", "mean": mean,
             "median": median, "largest": largest}
        )  # fmt: skip
        if self._first("dominated", epoch):
            logger.warning(
                "%s, epoch %d: a few batches dominate the mean loss %.4g (largest batch loss "
                "%.4g, median %.4g): some training rows lie far outside the rest and the model "
                "gives them almost no likelihood; the training goes on (a smaller step cannot "
                "change the rows)",
                self.stage, epoch, mean, largest, median,
            )  # fmt: skip

    def skipped(self, epoch: int, skipped: int, batches: int) -> None:
        self.events.append(
            {"stage": self.stage, "epoch": epoch, "event": "skipped_nonfinite",
             "batches": skipped}
        )  # fmt: skip
        if self._first("skipped_nonfinite", epoch):
            logger.warning(
                "%s, epoch %d: %d of %d batches had a non-finite loss and were skipped "
                "without a step",
                self.stage, epoch, skipped, batches,
            )  # fmt: skip

    def _first(self, kind: str, epoch: int) -> bool:
        self.repeats.setdefault(kind, []).append(epoch)
        return len(self.repeats[kind]) == 1

    def close(self) -> None:
        """Count the epochs of each kind not logged one by one."""
        what = {
            "dominated": "a few batches dominated the mean loss",
            "skipped_nonfinite": "batches with a non-finite loss were skipped",
        }
        for kind, epochs in self.repeats.items():
            if len(epochs) > 1:
                logger.warning(
                    "%s: %s in %d epochs in all (epochs %s)",
                    self.stage, what[kind], len(epochs), _ranges(epochs),
                )  # fmt: skip
        self.repeats.clear()


def _ranges(numbers: list[int]) -> str:
    """``1-3, 5`` for [1, 2, 3, 5]."""
    parts, start = [], numbers[0]
    for prev, cur in zip(numbers, [*numbers[1:], None], strict=True):
        if cur != prev + 1:
            parts.append(f"{start}-{prev}" if prev > start else f"{start}")
            start = cur
    return ", ".join(parts)


class _Snapshot:
    """The training state at the start of an epoch, to train it again from."""

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        modules: Sequence[nn.Module],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        generator: torch.Generator | None,
    ) -> None:
        self.params = [p.detach().clone() for p in params]
        self.buffers = [[b.detach().clone() for b in m.buffers()] for m in modules]
        self.optimizer = copy.deepcopy(optimizer.state_dict())
        self.scheduler = None if scheduler is None else copy.deepcopy(scheduler.state_dict())
        self.rng = generator.get_state() if generator is not None else torch.get_rng_state()

    @torch.no_grad()
    def restore(
        self,
        params: Sequence[torch.Tensor],
        modules: Sequence[nn.Module],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None,
        generator: torch.Generator | None,
        lr_factor: float,
    ) -> None:
        """Put the state back, with every learning rate times ``lr_factor``."""
        for param, saved in zip(params, self.params, strict=True):
            param.copy_(saved)
        for module, saved_buffers in zip(modules, self.buffers, strict=True):
            for buffer, saved in zip(module.buffers(), saved_buffers, strict=True):
                buffer.copy_(saved)
        optimizer.load_state_dict(copy.deepcopy(self.optimizer))
        if scheduler is not None:
            scheduler.load_state_dict(copy.deepcopy(self.scheduler))
            scheduler.base_lrs = [lr * lr_factor for lr in scheduler.base_lrs]
        for group in optimizer.param_groups:
            group["lr"] *= lr_factor
            if "initial_lr" in group:
                group["initial_lr"] *= lr_factor
        if generator is not None:
            generator.set_state(self.rng)
        else:
            torch.set_rng_state(self.rng)
