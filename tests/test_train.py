"""certify.train: schedules, noise augmentation, differentiable robust losses, the fit loop."""

import pytest
import torch
from torch import nn

import certify
from certify import train


def test_schedules_by_hand():
    # warm-up of 10 steps, ramp of 20
    assert train.eps_schedule(0, 0.1, 10, 20) == 0.0
    assert train.eps_schedule(9, 0.1, 10, 20) == 0.0
    assert train.eps_schedule(20, 0.1, 10, 20) == pytest.approx(0.05)
    assert train.eps_schedule(30, 0.1, 10, 20) == pytest.approx(0.1)
    assert train.eps_schedule(500, 0.1, 10, 20) == pytest.approx(0.1)
    assert train.kappa_schedule(5, 10, 20) == 1.0
    assert train.kappa_schedule(20, 10, 20) == pytest.approx(0.75)
    assert train.kappa_schedule(40, 10, 20, kappa_end=0.0) == 0.0
    assert train.beta_schedule(0, 10, 20) == 1.0 and train.beta_schedule(30, 10, 20) == 0.0


def test_noise_augment_draws_the_noise_family():
    x = torch.full((20000,), 0.5)
    g = torch.Generator().manual_seed(0)
    z = train.noise_augment(x, certify.Gaussian(0.25), g) - 0.5
    assert abs(z.mean().item()) < 0.01 and z.std().item() == pytest.approx(0.25, rel=0.03)
    u = train.noise_augment(x, certify.Uniform(0.2), torch.Generator().manual_seed(0)) - 0.5
    assert u.abs().max().item() <= 0.2
    again = train.noise_augment(x, certify.Gaussian(0.25), torch.Generator().manual_seed(0)) - 0.5
    assert torch.equal(z, again)
    with pytest.raises(TypeError, match="noise must be"):
        train.noise_augment(x, 0.25)


def small_problem():
    torch.manual_seed(0)
    x = torch.rand(64, 6)
    y = (x[:, 0] > x[:, 1]).long() + 2 * (x[:, 2] > 0.5).long()
    model = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 4))
    return model, x, y


@pytest.mark.parametrize("loss_fn", [train.ibp_loss, train.crown_ibp_loss])
def test_robust_losses_have_gradients_and_training_reduces_them(loss_fn):
    model, x, y = small_problem()
    loss = loss_fn(model, x, y, 0.05)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = loss.item()
    for _ in range(40):
        optimizer.zero_grad()
        loss = loss_fn(model, x, y, 0.05)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.7 * first


def test_ibp_training_beats_natural_training_on_its_certificate():
    model, x, y = small_problem()
    natural, _, _ = small_problem()
    train.fit(natural, x, y, method="natural", epochs=30, lr=1e-2, batch_size=16)
    train.fit(model, x, y, method="ibp", eps=0.1, epochs=40, lr=1e-2, batch_size=32, warmup_epochs=2)
    v_natural = certify.BoundedModel(natural, (6,)).verify(x, y, 0.1, method="ibp").float().mean()
    v_ibp = certify.BoundedModel(model, (6,)).verify(x, y, 0.1, method="ibp").float().mean()
    assert v_ibp > v_natural + 0.25  # measured: 0.09 natural, 0.45 IBP-trained


def test_fit_is_deterministic_given_a_seed():
    weights = []
    for _ in range(2):
        model, x, y = small_problem()
        train.fit(model, x, y, method="noise", noise=certify.Gaussian(0.1), epochs=3, seed=7)
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_fit_arguments_are_checked():
    model, x, y = small_problem()
    with pytest.raises(ValueError, match="method"):
        train.fit(model, x, y, method="pgd")
    with pytest.raises(ValueError, match="needs noise"):
        train.fit(model, x, y, method="noise")
    with pytest.raises(ValueError, match="same length"):
        train.fit(model, x, y[:3])


@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
def test_gradcheck_through_the_bound_twin_in_float64(method):
    """Analytic gradients of the plain margin bounds match finite differences (float64, tiny net),
    with respect to the weights and to the input centre."""
    from certify.bounds import reference
    from certify.bounds.graph import trace

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 3)).double().eval()
    graph = trace(net, (3,), differentiable=True)
    x = torch.tensor([[0.3, -0.2, 0.5], [0.1, 0.4, -0.3]], dtype=torch.float64, requires_grad=True)
    spec = reference.margin_spec(torch.tensor([0, 2]), 3).double()

    def margins(x, *params):
        eps = torch.full((2,), 0.2, dtype=torch.float64)
        input_set = reference.InputSet("linf", x, eps, (x - 0.2, x + 0.2))
        return reference.compute_bounds(graph, input_set, method, sound=False, spec=spec)

    params = [p for p in net.parameters()]
    assert torch.autograd.gradcheck(margins, (x, *params), eps=1e-6, atol=1e-5)
