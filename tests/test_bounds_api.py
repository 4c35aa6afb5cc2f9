"""BoundedModel: bounds worked out by hand, tightness, radius semantics, tracing and clear errors."""

import pytest
import torch
from bound_models import MODELS, build
from torch import nn

import certify
import certify.bounds
from certify.bounds import UnsupportedModelError


def abs_net():
    """f(x) = relu(x) + relu(-x) = |x| on one input."""
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        net[0].bias.zero_()
        net[2].weight.copy_(torch.tensor([[1.0, 1.0]]))
        net[2].bias.zero_()
    return net.eval()


@pytest.mark.parametrize("sound", [True, False])
def test_abs_network_by_hand(sound):
    """x in [-1, 1]: both ReLUs unstable with l = -1, u = 1.
    IBP: each relu in [0, 1], so f in [0, 2].
    CROWN: upper lines relu(h) <= (h + 1) / 2 sum to (x + 1)/2 + (1 - x)/2 = 1; lower slopes are 0
    (u > -l fails), so f in [0, 1], the exact range."""
    bounded = certify.BoundedModel(abs_net(), (1,))
    x = torch.zeros(1, 1)
    ibp = bounded.bounds(x, 1.0, method="ibp", sound=sound)
    crown = bounded.bounds(x, 1.0, method="crown", sound=sound)
    tol = 1e-5 if sound else 0.0  # sound bounds move outward by a few ulps per layer
    assert ibp.lower.item() == pytest.approx(0.0, abs=tol) and ibp.upper.item() == pytest.approx(2.0, abs=tol)
    assert crown.lower.item() == pytest.approx(0.0, abs=tol) and crown.upper.item() == pytest.approx(1.0, abs=tol)
    if sound:  # outward, by no more than the rounding allowance
        assert ibp.lower.item() <= 0.0 and ibp.upper.item() >= 2.0 and crown.upper.item() >= 1.0
    # x in [0, 2]: both neurons stable (one active, one inactive): f = x exactly, by every method.
    for method in ("ibp", "crown-ibp", "crown"):
        b = bounded.bounds(torch.ones(1, 1), 1.0, method=method, sound=sound)
        assert b.lower.item() == pytest.approx(0.0, abs=tol) and b.upper.item() == pytest.approx(2.0, abs=tol)


def test_margin_is_folded_into_the_last_layer():
    """logits (x + 1, x): the margin logit0 - logit1 = 1 exactly for every x. Subtracting logit
    bounds over x in [-1/2, 1/2] would give 1 - 2 eps = 0; folding the margin gives 1."""
    net = nn.Sequential(nn.Linear(1, 2)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        net[0].bias.copy_(torch.tensor([1.0, 0.0]))
    bounded = certify.BoundedModel(net, (1,))
    for method in ("ibp", "crown-ibp", "crown"):
        m = bounded.margins(torch.zeros(1, 1), torch.tensor([0]), 0.5, method=method)
        assert m.item() == pytest.approx(1.0, abs=1e-6) and m.item() <= 1.0
        assert bounded.verify(torch.zeros(1, 1), torch.tensor([0]), 0.5, method=method).item()


def test_l2_ball_by_hand():
    """f(x) = w.x over the l2 ball of radius eps: exactly w.x0 +- eps |w|_2 by CROWN."""
    net = nn.Sequential(nn.Linear(3, 1, bias=False)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[3.0, 4.0, 0.0]]))
    bounded = certify.BoundedModel(net, (3,))
    b = bounded.bounds(torch.zeros(1, 3), 0.5, norm="l2", method="crown")
    assert b.lower.item() == pytest.approx(-2.5, abs=1e-6) and b.upper.item() == pytest.approx(2.5, abs=1e-6)


def test_crown_is_not_looser_than_ibp_on_average():
    for seed in range(4):
        for name in MODELS:
            model, shape = build(name, seed=seed)
            bounded = certify.BoundedModel(model, shape)
            x = torch.rand(4, *shape)
            labels = torch.arange(4) % bounded.num_outputs
            ibp = bounded.margins(x, labels, 0.05, method="ibp")
            crown = bounded.margins(x, labels, 0.05, method="crown")
            crown_ibp = bounded.margins(x, labels, 0.05, method="crown-ibp")
            assert crown.mean() >= ibp.mean() - 1e-5, name
            assert crown.mean() >= crown_ibp.mean() - 1e-5, name


def test_soundness_costs_little_tightness():
    model, shape = build("cnn")
    bounded = certify.BoundedModel(model, shape)
    x = torch.rand(3, *shape)
    for method in ("ibp", "crown"):
        sound = bounded.bounds(x, 0.02, method=method).width
        plain = bounded.bounds(x, 0.02, method=method, sound=False).width
        assert (sound >= plain).all()
        assert ((sound - plain) / plain).max() < 1e-3


def test_radius_is_certified_and_within_tol():
    model, shape = build("mlp")
    bounded = certify.BoundedModel(model, shape)
    x = torch.rand(5, *shape)
    with torch.no_grad():
        labels = model(x).argmax(1)
    tol = 1e-3
    for method in ("ibp", "crown"):
        r = bounded.radius(x, labels, method=method, tol=tol, max_eps=1.0)
        assert (r > 0).all()
        assert bounded.verify(x, labels, r, method=method).all()
        beyond = bounded.verify(x, labels, r + tol, method=method)
        assert (~beyond | (r >= 1.0)).all()
    wrong = (labels + 1) % bounded.num_outputs  # a label the model does not predict at x
    assert (bounded.radius(x, wrong) == 0).all()


def test_domain_clips_the_box():
    net = nn.Sequential(nn.Linear(2, 1, bias=False)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
    bounded = certify.BoundedModel(net, (2,))
    b = bounded.bounds(torch.tensor([[0.0, 1.0]]), 0.5, method="ibp", domain=(0.0, 1.0))
    # exact range [0.5, 1.5], widened outward by the rounding allowance only
    assert 0.5 - 2e-6 <= b.lower.item() <= 0.5 and 1.5 <= b.upper.item() <= 1.5 + 2e-6


def test_eps_per_input_and_zero_eps():
    model, shape = build("mlp")
    bounded = certify.BoundedModel(model, shape)
    x = torch.rand(3, *shape)
    b = bounded.bounds(x, torch.tensor([0.0, 0.01, 0.1]), method="crown")
    width = b.width.mean(1)
    assert width[0] < 1e-4 and width[0] < width[1] < width[2]
    with torch.no_grad():
        y = model(x[:1])
    assert (b.lower[0] <= y[0]).all() and (y[0] <= b.upper[0]).all()


def test_view_with_size_and_functional_relu_trace():
    graph = certify.bounds.trace(MODELS["residual"][0]().eval(), (2, 6, 6))
    names = [type(n.layer).__name__ for n in graph.nodes]
    assert names.count("Add") == 1 and "Reshape" in names and names.count("ReLU") == 3


@pytest.mark.parametrize(
    "module,match",
    [
        (nn.Sequential(nn.Linear(4, 4), nn.Softmax(dim=1)), "Softmax"),
        (nn.Sequential(nn.Linear(4, 4), nn.LogSigmoid()), "LogSigmoid"),
        (nn.Sequential(nn.Linear(4, 4), nn.GELU(approximate="tanh")), "approximate='tanh'"),
        (nn.Sequential(nn.Unflatten(1, (1, 2, 2)), nn.Upsample(scale_factor=2, mode="bilinear")), "bilinear"),
    ],
)
def test_unsupported_operations_are_named(module, match):
    with pytest.raises(UnsupportedModelError, match=match):
        certify.BoundedModel(module.eval(), (4,))


def test_unsupported_function_is_named_with_its_location():
    class UsesProduct(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            h = self.fc(x)
            return h * torch.tanh(h)

    with pytest.raises(UnsupportedModelError, match="'mul' of two computed values .* at 'mul'"):
        certify.BoundedModel(UsesProduct().eval(), (3,))


def test_bad_arguments():
    model, shape = build("mlp")
    bounded = certify.BoundedModel(model, shape)
    x = torch.rand(2, *shape)
    with pytest.raises(ValueError, match="NaN or infinite"):
        bounded.bounds(torch.full((2, *shape), float("nan")), 0.1)
    with pytest.raises(ValueError, match="eps must be finite and >= 0"):
        bounded.bounds(x, -0.1)
    with pytest.raises(ValueError, match="one value per input"):
        bounded.bounds(x, torch.tensor([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match=r"shape \(6,\)"):
        bounded.bounds(torch.rand(2, 7), 0.1)
    with pytest.raises(ValueError, match="method"):
        bounded.bounds(x, 0.1, method="beta-crown")
    with pytest.raises(ValueError, match="norm"):
        bounded.bounds(x, 0.1, norm="l1")
    with pytest.raises(ValueError, match="domain applies"):
        bounded.bounds(x, 0.1, norm="l2", domain=(0, 1))
    with pytest.raises(ValueError, match="outside the domain"):
        bounded.bounds(x + 5, 0.1, domain=(0, 1))
    with pytest.raises(ValueError, match="labels must lie"):
        bounded.verify(x, torch.tensor([0, 9]), 0.1)
    with pytest.raises(TypeError, match="labels must be integers"):
        bounded.verify(x, torch.tensor([0.0, 1.0]), 0.1)
    with pytest.raises(ValueError, match="training mode"):
        certify.BoundedModel(nn.Linear(3, 2), (3,))
    with pytest.raises(ValueError, match="does not run on inputs of shape"):
        certify.BoundedModel(nn.Linear(3, 2).eval(), (4,))


@pytest.mark.parametrize("engine", ["native", "torch"])
def test_overflow_gives_infinite_bounds_not_nan(engine):
    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        net[0].weight.fill_(1e30)
        net[2].weight.fill_(1e30)
    bounded = certify.BoundedModel(net, (1,), engine=engine)
    for x in (torch.tensor([[3.4e38]]), torch.tensor([[1.0]])):
        for method in ("ibp", "crown-ibp", "crown"):
            b = bounded.bounds(x, 0.5, method=method)
            assert not torch.isnan(b.lower).any() and not torch.isnan(b.upper).any(), method
            assert (b.lower <= b.upper).all()
    with pytest.raises(ValueError, match="at least 2 outputs"):
        bounded.verify(torch.tensor([[1.0]]), torch.tensor([0]), 0.5)


def test_torch_engine_bounds_are_differentiable_in_the_weights():
    """The plain-PyTorch engine is the path for certified training: gradients of a bound reach the
    model's parameters (sound=False, the training setting)."""
    model, shape = build("cnn")
    bounded = certify.BoundedModel(model, shape, engine="torch")
    x = torch.rand(2, *shape)
    for method in ("ibp", "crown-ibp", "crown"):
        model.zero_grad()
        margins = bounded.margins(x, torch.tensor([0, 1]), 0.05, method=method, sound=False, grad=True)
        (-margins.mean()).backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), method
        assert sum(float(g.abs().sum()) for g in grads) > 0, method


def test_bounds_carry_no_autograd_graph_by_default():
    model, shape = build("mlp")
    b = certify.BoundedModel(model, shape, engine="torch").bounds(torch.rand(2, *shape), 0.1)
    assert not b.lower.requires_grad and not b.upper.requires_grad
    with pytest.raises(ValueError, match="grad=True needs engine='torch'"):
        certify.BoundedModel(model, shape).bounds(torch.rand(2, *shape), 0.1, grad=True)
