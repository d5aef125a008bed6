"""Sculpting losses: known answers, and that minimising them separates two toy classes."""

import pytest
import torch

from latent_sculpting.model.stage1.losses import (
    LOSSES,
    BinaryLatentSculptingLoss,
    CrossEntropyLoss,
    DualCentroidCompactnessLoss,
    build_loss,
)


def test_dual_centroid_known_answer():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [1.0, 3.0]])
    y = torch.tensor([0, 0, 1, 1])
    # c_b = (1, 0), spread 1 each; c_a = (1, 2), spread 1 each; |c_b - c_a|^2 = 4 < margin 5.
    loss = DualCentroidCompactnessLoss(alpha=0.1, beta=0.1, gamma=1.0, margin=5.0)(z, y)
    assert loss.item() == pytest.approx(0.1 * 1 + 0.1 * 1 + 1.0 * (5 - 4))


def test_binary_sculpting_known_answer():
    z = torch.tensor([[0.0, 0.0], [2.0, 0.0], [1.0, 1.0], [4.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1])
    # centre (1, 0); benign distances 1, 1; attack distances 1 and 9 against margin 5.
    loss = BinaryLatentSculptingLoss(margin=5.0, attack_weight=2.0)(z, y)
    assert loss.item() == pytest.approx(1.0 + 2.0 * (4 + 0) / 2)


@pytest.mark.parametrize("kind", LOSSES)
def test_single_class_batches_are_finite(kind):
    loss_fn = build_loss(kind, latent_dim=2, alpha=0.1, beta=0.1, gamma=1.0, margin=5.0)
    z = torch.randn(4, 2, requires_grad=True)
    for y in (torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)):
        loss = loss_fn(z, y)
        assert torch.isfinite(loss)
        loss.backward()


@pytest.mark.slow
@pytest.mark.parametrize(
    "loss_fn", [DualCentroidCompactnessLoss(), BinaryLatentSculptingLoss(), CrossEntropyLoss(2)]
)
def test_loss_falls_and_separates_two_toy_classes(loss_fn):
    torch.manual_seed(0)
    x = torch.cat([torch.randn(64, 5), torch.randn(64, 5) + 1.5])
    y = torch.cat([torch.zeros(64), torch.ones(64)]).long()
    net = torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam([*net.parameters(), *loss_fn.parameters()], lr=1e-2)
    first = loss_fn(net(x), y).item()
    for _ in range(200):
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()
    assert loss.item() < first
    with torch.no_grad():
        z = net(x)
    c_b, c_a = z[y == 0].mean(0), z[y == 1].mean(0)
    nearer_attack = (z - c_a).pow(2).sum(1) < (z - c_b).pow(2).sum(1)
    accuracy = (nearer_attack.long() == y).float().mean().item()
    assert accuracy > 0.85


def test_unknown_loss_names_the_choices():
    with pytest.raises(ValueError, match="unknown loss 'huber'.*dual_centroid"):
        build_loss("huber", latent_dim=2, alpha=0.1, beta=0.1, gamma=1.0, margin=5.0)
