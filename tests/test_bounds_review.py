"""Regressions for ways the bounds were once unsound (each found by an adversarial review)."""

from fractions import Fraction

import mpmath
import numpy as np
import pytest
import torch
from torch import nn

import certify
from certify.bounds import UnsupportedModelError

ENGINES = ["native", "torch"]


def test_inplace_relu_whose_input_is_reused_is_refused():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.relu, self.out = nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)

        def forward(self, x):
            y = self.fc(x)
            z = self.relu(y)  # overwrites y: z + y is really 2 relu(y)
            return self.out(z + y)

    with pytest.raises(UnsupportedModelError, match="in-place"):
        certify.BoundedModel(Residual().eval(), (4,))

    class Functional(Residual):
        def forward(self, x):
            y = self.fc(x)
            return self.out(torch.nn.functional.relu(y, inplace=True) + y)

    with pytest.raises(UnsupportedModelError, match="in-place"):
        certify.BoundedModel(Functional().eval(), (4,))
    # In place on a value nothing else reads is fine.
    plain = nn.Sequential(nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Linear(4, 2)).eval()
    certify.BoundedModel(plain, (4,))


@pytest.mark.parametrize("engine", ENGINES)
def test_batch_norm_shift_that_cancels_keeps_its_error(engine):
    bn = nn.BatchNorm1d(2, eps=1e-5)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.9206880331039429, 1.0]))
        bn.bias.copy_(torch.tensor([0.8879472017288208, 0.0]))
        bn.running_mean.copy_(torch.tensor([1.5820770263671875, 0.0]))
        bn.running_var.copy_(torch.tensor([2.6909420490264893, 1.0]))
    net = nn.Sequential(bn).eval()
    mpmath.mp.dps = 60
    f = [float(v.detach()) for v in (bn.weight[0], bn.bias[0], bn.running_mean[0], bn.running_var[0])]
    exact = (0 - mpmath.mpf(f[2])) / mpmath.sqrt(mpmath.mpf(f[3]) + mpmath.mpf(1e-5)) * mpmath.mpf(f[0]) + mpmath.mpf(f[1])
    assert exact < 0  # logit 0 is below logit 1 = 0: label 1 is right
    bounded = certify.BoundedModel(net, (2,), engine=engine)
    b = bounded.bounds(torch.zeros(1, 2), 0.0, method="ibp")
    assert mpmath.mpf(float(b.lower[0, 0])) <= exact <= mpmath.mpf(float(b.upper[0, 0]))
    for method in ("ibp", "crown"):
        assert not bounded.verify(torch.zeros(1, 2), torch.tensor([0]), 0.0, method=method).item()


@pytest.mark.parametrize("engine", ENGINES)
def test_eps_is_never_rounded_down(engine):
    bounded = certify.BoundedModel(nn.Sequential(nn.Flatten()).eval(), (2,), engine=engine)
    eps = 0.99999996  # float32 rounds it down to 0.99999994
    b = bounded.bounds(torch.tensor([[1.0, 0.0]]), eps, method="ibp")
    assert Fraction(float(b.lower[0, 0])) <= Fraction(1.0) - Fraction(eps)
    # l2: the exact worst margin of (x0 - x1) over the ball is below 0 here.
    a = np.float32(0.9899495)
    d = np.float32(float(a) - 0.7 * 2**0.5 + 8e-9)
    assert not bounded.verify(torch.tensor([[a, d]]), torch.tensor([0]), 0.7, norm="l2").item()


@pytest.mark.parametrize("engine", ENGINES)
def test_domain_endpoints_are_rounded_outward(engine):
    bounded = certify.BoundedModel(nn.Sequential(nn.ReLU()).eval(), (1,), engine=engine)
    b = bounded.bounds(torch.tensor([[0.1]]), 0.05, method="ibp", domain=(0.1, 1.0))
    assert Fraction(float(b.lower[0, 0])) <= Fraction(0.1)


@pytest.mark.parametrize("engine", ENGINES)
def test_float64_inputs_are_enclosed_exactly(engine):
    bounded = certify.BoundedModel(nn.Sequential(nn.Flatten()).eval(), (1,), engine=engine)
    x = torch.tensor([[0.1]], dtype=torch.float64)  # not a float32 number
    for norm in ("linf", "l2"):
        b = bounded.bounds(x, 1e-9, norm=norm, method="crown")
        assert Fraction(float(b.lower[0, 0])) <= Fraction(0.1) - Fraction(1e-9)
        assert Fraction(float(b.upper[0, 0])) >= Fraction(0.1) + Fraction(1e-9)


def test_training_submodules_and_float64_models_are_refused():
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).eval()
    net[1].train()
    before = net[1].running_mean.clone()
    with pytest.raises(ValueError, match="training mode"):
        certify.BoundedModel(net, (2,))
    assert torch.equal(net[1].running_mean, before)  # and tracing did not touch the statistics
    with pytest.raises(ValueError, match="float32 model"):
        certify.BoundedModel(nn.Linear(2, 2).double().eval(), (2,))
