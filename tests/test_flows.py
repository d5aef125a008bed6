"""Properties of the Stage-2 MAF as we configure it (zuko underneath)."""

import math

import pytest
import torch

from latent_sculpting.model.density.maf import LatentDensity


@pytest.fixture
def flow() -> LatentDensity:
    torch.manual_seed(0)
    model = LatentDensity(4, transforms=3, hidden_features=16)
    # Perturb every parameter so the transforms are far from the identity they start near.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.double()


def test_inverse_round_trip(flow):
    transform = flow.maf().transform
    x = torch.randn(64, 4, dtype=torch.float64)
    assert torch.allclose(transform.inv(transform(x)), x, atol=1e-8)


def test_log_prob_matches_change_of_variables_with_autograd_jacobian(flow):
    transform = flow.maf().transform
    x = torch.randn(6, 4, dtype=torch.float64)
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: transform(v[None])[0], row)
        z = transform(row[None])[0]
        base = -0.5 * (z @ z) - 2 * math.log(2 * math.pi)
        expected = base + torch.linalg.slogdet(jac).logabsdet
        assert torch.allclose(flow.log_prob(row[None])[0], expected, atol=1e-8)


def test_each_made_transform_is_autoregressive_in_its_order(flow):
    x = torch.randn(4, dtype=torch.float64)
    for lazy in flow.maf.transform.transforms:
        transform = lazy()
        jac = torch.autograd.functional.jacobian(lambda v, t=transform: t(v[None])[0], x)
        order = lazy.order
        # Output i may depend only on inputs that come earlier in the order (and on itself).
        allowed = order[:, None] >= order[None, :]
        assert torch.all(jac[~allowed] == 0)
        assert torch.all(jac.diagonal() != 0)


def test_nll_is_negative_log_prob_and_every_parameter_gets_a_gradient(flow):
    z = torch.randn(32, 4, dtype=torch.float64)
    nll = flow(z)
    assert torch.allclose(nll, -flow.log_prob(z))
    nll.mean().backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.slow
def test_training_lowers_nll_on_a_gaussian():
    torch.manual_seed(1)
    data = torch.randn(512, 3) @ torch.tensor([[2.0, 0, 0], [1.0, 0.5, 0], [0, 0, 0.1]]) + 3
    flow = LatentDensity(3, transforms=2, hidden_features=32)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    before = flow(data).mean().item()
    for _ in range(150):
        opt.zero_grad()
        flow(data).mean().backward()
        opt.step()
    assert flow(data).mean().item() < before - 2.0


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="transforms"):
        LatentDensity(4, transforms=0)
