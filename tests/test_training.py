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
        min_batch_rows=2, skip_nonfinite=True, events=(events := []),
    )  # fmt: skip
    assert sizes == [3, 3, 3]  # the 1-row batch never reached the loss
    assert losses == [0.0]
    assert events == [{"stage": "training", "epoch": 1, "event": "skipped_nonfinite", "batches": 3}]
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


def plain_loop(batch_loss, optimizer, *, n_rows, batch_size, epochs, generator, params):
    """The loop as it was before the watch, to hold the watched one to it."""
    for _ in range(epochs):
        for batch in torch.randperm(n_rows, generator=generator).split(batch_size):
            loss = batch_loss(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()


def same_parameters(a, b):
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def quadratic(lr, momentum=0.9, seed=3):
    x, target, model = linear_problem(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    return x, target, model, optimizer


def test_a_fit_without_divergence_is_the_plain_loop_exactly():
    # The watch snapshots and checks every epoch; none of that may draw a number or move a bit.
    x, target, model, optimizer = quadratic(0.05)
    generator = torch.Generator().manual_seed(11)
    events = []
    train_epochs(
        lambda b: (model(x[b]).squeeze(-1) - target[b]).pow(2).mean(), optimizer,
        modules=[model], n_rows=10, batch_size=3, epochs=5, generator=generator, grad_clip=1.0,
        events=events,
    )  # fmt: skip
    x2, target2, plain, optimizer2 = quadratic(0.05)
    replay = torch.Generator().manual_seed(11)
    plain_loop(
        lambda b: (plain(x2[b]).squeeze(-1) - target2[b]).pow(2).mean(), optimizer2, n_rows=10,
        batch_size=3, epochs=5, generator=replay, params=list(plain.parameters()),
    )  # fmt: skip
    assert events == []
    assert same_parameters(model, plain)
    assert torch.equal(generator.get_state(), replay.get_state())


def test_a_diverging_epoch_is_reported_and_trained_again_with_a_smaller_step(caplog):
    # Gradient descent on a quadratic diverges when the step is too large: a real divergence,
    # not a planted number (one row a step: ten steps an epoch, the loss grows 1e5-fold in the
    # second). The restart from the epoch's start with a tenth of the step converges.
    x, target, model, optimizer = quadratic(lr=1.5, momentum=0.0)
    events = []
    with caplog.at_level("WARNING", logger="latent_sculpting.model.training"):
        losses = train_epochs(
            lambda b: (model(x[b]).squeeze(-1) - target[b]).pow(2).mean(), optimizer,
            modules=[model], n_rows=10, batch_size=1, epochs=30,
            generator=torch.Generator().manual_seed(0), desc="stage 9 (test)", events=events,
        )  # fmt: skip
    assert [(e["stage"], e["epoch"], e["event"]) for e in events] == [
        ("stage 9 (test)", 2, "restarted")
    ]
    assert events[0]["lr"] == pytest.approx(0.15)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.15)  # the cut step stays
    assert "stage 9 (test), epoch 2: the median batch loss" in caplog.text
    assert "restart 1 of at most 3" in caplog.text
    assert len(losses) == 30 and all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.1 and losses[0] > 1e3


def test_an_epoch_that_keeps_diverging_fails_naming_the_stage_and_the_epoch():
    from latent_sculpting.errors import LossDivergedError
    from latent_sculpting.model.training import MAX_RESTARTS

    x, target, model = linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    calls = []

    def batch_loss(batch):  # every batch from the third epoch on is 1e9 times larger
        calls.append(1)
        loss = (model(x[batch]).squeeze(-1) - target[batch]).pow(2).mean()
        return loss * 1e12 if len(calls) > 2 * 4 else loss

    events = []
    message = r"^stage 9 \(test\), epoch 3 of 5: .*3 restarts"
    with pytest.raises(LossDivergedError, match=message) as e:
        train_epochs(
            batch_loss, optimizer, modules=[model], n_rows=10, batch_size=3, epochs=5,
            desc="stage 9 (test)", events=events,
        )  # fmt: skip
    assert (e.value.stage, e.value.epoch) == ("stage 9 (test)", 3)
    assert [v["epoch"] for v in events] == [3] * MAX_RESTARTS


@pytest.mark.parametrize("call", [1, 2])
def test_a_non_finite_loss_or_non_finite_parameters_restart_the_epoch(call):
    # Poisoned once, the first time round: call 1 by a NaN loss (its step makes the parameters
    # and so the epoch's mean loss NaN); call 2, the epoch's last batch, by a finite loss whose
    # gradient is infinite (sqrt at 0), so that only the parameters show it.
    x, target, model = linear_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    calls = []

    def batch_loss(batch):
        calls.append(1)
        loss = (model(x[batch]).squeeze(-1) - target[batch]).pow(2).mean()
        if len(calls) == call == 1:
            return loss * math.nan
        if len(calls) == call == 2:
            return loss + torch.sqrt(model.bias - model.bias.detach()).sum()
        return loss

    events = []
    losses = train_epochs(
        batch_loss, optimizer, modules=[model], n_rows=10, batch_size=5, epochs=2, events=events
    )
    problem = "the mean loss is nan" if call == 1 else "the parameters are no longer finite"
    assert [(v["epoch"], v["event"], v["problem"]) for v in events] == [(1, "restarted", problem)]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(v) for v in losses)


def test_the_restart_puts_back_parameters_optimiser_schedule_and_generator():
    # Epoch 2 diverges once (a planted factor on its first attempt); the result must be a plain
    # epoch 1 at the full step, then a plain epoch 2 from the same state at a tenth of it.
    def build():
        x, target, model, optimizer = quadratic(0.05)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 / (1 + step))
        return x, target, model, optimizer, scheduler

    x, target, model, optimizer, scheduler = build()
    calls = []

    def batch_loss(batch):
        calls.append(1)
        loss = (model(x[batch]).squeeze(-1) - target[batch]).pow(2).mean()
        return loss * 1e12 if 4 < len(calls) <= 8 else loss  # epoch 2's first attempt

    generator = torch.Generator().manual_seed(2)
    train_epochs(
        batch_loss, optimizer, modules=[model], n_rows=10, batch_size=3, epochs=2,
        generator=generator, grad_clip=1.0, scheduler=scheduler,
    )  # fmt: skip
    x2, target2, plain, optimizer2, scheduler2 = build()
    replay = torch.Generator().manual_seed(2)
    for epoch in range(2):
        if epoch == 1:
            scheduler2.base_lrs = [lr * 0.1 for lr in scheduler2.base_lrs]
            optimizer2.param_groups[0]["lr"] *= 0.1
        for batch in torch.randperm(10, generator=replay).split(3):
            loss = (plain(x2[batch]).squeeze(-1) - target2[batch]).pow(2).mean()
            optimizer2.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(plain.parameters()), 1.0)
            optimizer2.step()
            scheduler2.step()
    for a, b in zip(model.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(generator.get_state(), replay.get_state())


def test_a_few_dominating_batches_are_reported_once_and_training_goes_on(caplog):
    # One row far outside the rest: its batch's loss dwarfs the others every epoch. No smaller
    # step changes that, so nothing restarts; the first epoch is logged, the others counted.
    x, target, model, optimizer = quadratic(0.05)
    target = target.clone()
    target[4] = 1e9
    generator = torch.Generator().manual_seed(1)
    events = []
    with caplog.at_level("WARNING", logger="latent_sculpting.model.training"):
        train_epochs(
            lambda b: (model(x[b]).squeeze(-1) - target[b]).pow(2).mean(), optimizer,
            modules=[model], n_rows=10, batch_size=2, epochs=4, generator=generator,
            grad_clip=1.0, desc="stage 9 (test)", events=events,
        )  # fmt: skip
    assert [(v["epoch"], v["event"]) for v in events] == [(e, "dominated") for e in (1, 2, 3, 4)]
    assert events[0]["largest"] > 1e17 and abs(events[0]["median"]) < 1e3
    lines = caplog.text.strip().splitlines()
    assert len(lines) == 2
    assert "stage 9 (test), epoch 1: a few batches dominate the mean loss" in lines[0]
    assert "in 4 epochs in all (epochs 1-4)" in lines[1]
    x2, _, plain, optimizer2 = quadratic(0.05)
    plain_loop(
        lambda b: (plain(x2[b]).squeeze(-1) - target[b]).pow(2).mean(), optimizer2, n_rows=10,
        batch_size=2, epochs=4, generator=torch.Generator().manual_seed(1),
        params=list(plain.parameters()),
    )  # fmt: skip
    assert same_parameters(model, plain)


def small_flows(n=400, seed=0):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(rng.lognormal(size=(n, 4)), columns=[f"f{j}" for j in range(4)])
    frame["label"] = np.where(np.arange(n) % 5 == 0, "bad", "normal")
    frame.loc[frame["label"] == "bad", "f0"] *= 50
    return frame


def test_every_training_loop_of_a_fit_reports_into_its_history(monkeypatch, tmp_path):
    from small import FUSED_FAST

    from latent_sculpting import LatentSculpting
    from latent_sculpting.model import training

    frame = small_flows()
    X, y = frame[[f"f{j}" for j in range(4)]], (frame["label"] == "bad").to_numpy().astype(int)
    model = LatentSculpting(**FUSED_FAST, random_state=0, device="cpu").fit(X, y)
    assert "training_events" not in model.history_  # an ordinary fit's history is as it was
    # Every epoch of every loop "dominated by a few batches": each loop's reports reach the
    # history, and the model file keeps them.
    monkeypatch.setattr(training, "_far", lambda value, reference: True)
    monkeypatch.setattr(training, "_divergence", lambda *args: None)
    model = LatentSculpting(**FUSED_FAST, random_state=0, device="cpu").fit(X, y)
    events = model.history_["training_events"]
    assert {(e["stage"], e["event"]) for e in events} == {
        ("stage 1 (encoder)", "dominated"),
        ("Deep SVDD", "dominated"),
        ("stage 2 (flow)", "dominated"),
    }
    loaded = LatentSculpting.load(model.save(tmp_path / "m.sculpt"))
    assert loaded.history_["training_events"] == events
    # adapt refits the Deep SVDD embedding and the flow: their reports go to its record.
    loaded.adapt(X[y == 0], random_state=0)
    record = loaded.training_info_["adaptations"][-1]
    assert {e["stage"] for e in record["training_events"]} == {"Deep SVDD", "stage 2 (flow)"}


def test_sculpt_train_prints_the_reports_and_fails_cleanly_on_divergence(
    monkeypatch, tmp_path, capsys
):
    from latent_sculpting.cli import main
    from latent_sculpting.model import training

    src = tmp_path / "flows.csv"
    small_flows().to_csv(src, index=False)
    args = ["train", "--data", str(src), "--label-column", "label", "--benign-label", "normal"]
    args += ["--preset", "fused", "--set", "epochs=2", "--set", "flow_epochs=2", "--quiet"]
    monkeypatch.setattr(training, "_divergence", lambda *args: "planted")
    assert main([*args, "-o", str(tmp_path / "m.sculpt")]) == 2
    err = capsys.readouterr().err
    assert "sculpt train: warning: stage 1 (encoder), epoch 1: planted; training the epoch " in err
    assert "(restart 3 of at most 3)" in err
    assert "sculpt train: error: stage 1 (encoder), epoch 1 of 2: planted, still after 3 " in err
    assert "Traceback" not in err and not (tmp_path / "m.sculpt").exists()
