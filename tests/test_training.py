"""The shared training loop: its random draws, skipped batches, clipping, schedule, losses."""

import math

import pytest
import torch

from latent_sculpting.model.training import train_epochs

#: Fits models, reads shared data or starts servers: `pytest -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow


def linear_problem(seed=0):
    torch.manual_seed(seed)
    x = torch.randn(10, 3)
    target = x @ torch.tensor([1.0, -2.0, 0.5])
    model = torch.nn.Linear(3, 1)
    return x, target, model


def test_row_order_then_batch_draws_from_the_generator():
    x, target, model = linear_problem()
    seen, draws = [], []
    generator = torch.Generator().manual_seed(5)

    def batch_loss(batch):
        seen.append(batch.tolist())
        draws.append(torch.randn(1, generator=generator).item())
        return (model(x[batch]).squeeze(-1) - target[batch]).pow(2).mean()

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    train_epochs(
        batch_loss, optimizer, modules=[model], n_rows=10, batch_size=4, epochs=2,
        generator=generator,
    )  # fmt: skip
    # The same draws, replayed by hand: one permutation per epoch, then one draw per batch.
    replay = torch.Generator().manual_seed(5)
    expected_seen, expected_draws = [], []
    for _ in range(2):
        for batch in torch.randperm(10, generator=replay).split(4):
            expected_seen.append(batch.tolist())
            expected_draws.append(torch.randn(1, generator=replay).item())
    assert seen == expected_seen and draws == expected_draws


def test_small_and_non_finite_batches_are_skipped_without_a_step():
    x, target, model = linear_problem()
    sizes = []
    before = [p.detach().clone() for p in model.parameters()]

    def batch_loss(batch):
        sizes.append(len(batch))
        return torch.tensor(math.nan, requires_grad=True)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = train_epochs(
        batch_loss, optimizer, modules=[model], n_rows=10, batch_size=3, epochs=1,
        min_batch_rows=2, skip_nonfinite=True,
    )  # fmt: skip
    assert sizes == [3, 3, 3]  # the 1-row batch never reached the loss
    assert losses == [0.0]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_clipping_schedule_modes_and_per_epoch_means():
    x, target, model = linear_problem(1)
    model.eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    steps = []
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: steps.append(step) or 1)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    epochs_seen = []

    def after_epoch(epoch, mean_loss):
        epochs_seen.append((epoch, mean_loss))
        assert model.training  # the loop put it in train mode
        return {"loss": f"{mean_loss:.2f}"}

    losses = train_epochs(
        lambda batch: 100.0 * (model(x[batch]).squeeze(-1) - target[batch]).pow(2).mean(),
        optimizer, modules=[model], n_rows=10, batch_size=10, epochs=1, grad_clip=0.01,
        scheduler=scheduler, after_epoch=after_epoch,
    )  # fmt: skip
    after = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert (after - before).norm().item() == pytest.approx(0.01, rel=1e-4)  # clipped step
    assert len(steps) == 2  # LambdaLR calls it once on creation, then once per step
    assert epochs_seen == [(0, losses[0])] and losses[0] > 0
