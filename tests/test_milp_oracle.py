"""Tests of the MILP oracle (tests/milp_oracle.py) itself: closed forms, sampling, PGD and CROWN.

For every instance: CROWN's sound lower bound <= the MILP minimum <= the margin at every sampled
and attacked point of the box, per class; the minimiser lies in the box and the network (float64,
both the oracle's dense layers and the torch model in double) gives the MILP value there.
"""

import copy
import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import OptimizeResult, linprog
from torch import nn

import certify
import milp_oracle as mo

TOL = 1e-6


def mlp(sizes, seed):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1]).eval()


def tiny_cnn(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(18, 3)).eval()


def box(x, eps, domain):
    x = x.double().numpy()
    lo, hi = x - eps, x + eps
    if domain is not None:
        lo, hi = np.maximum(lo, domain[0]), np.minimum(hi, domain[1])
    return lo, hi


def margins_at(layers, points, label):
    """(N, C) float64: logit[label] - logit[j] at each point (flattened rows)."""
    v = points.reshape(len(points), -1)
    for W, b, relu in layers:
        v = v @ W.T + b
        if relu:
            v = np.maximum(v, 0.0)
    return v[:, [label]] - v


def sampled_min(layers, lo, hi, label, n=3000, seed=0):
    """Per class, the smallest margin at n uniform points and n random vertices of the box."""
    rng = np.random.default_rng(seed)
    shape = (n, *lo.shape)
    uniform = lo + (hi - lo) * rng.random(shape)
    vertices = np.where(rng.random(shape) < 0.5, lo, hi)
    return margins_at(layers, np.concatenate([uniform, vertices]), label).min(axis=0)


def pgd_min(layers, lo, hi, label, j, starts=8, steps=60, seed=0):
    """The smallest margin logit[label] - logit[j] that float64 signed-gradient PGD finds in the box
    (numpy, gradients by hand: a ReLU passes the gradient where its input is > 0)."""
    rng = np.random.default_rng(seed)
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    x = lo + (hi - lo) * rng.random((starts, lo.size))
    x[0] = 0.5 * (lo + hi)
    step = 2.5 * float((hi - lo).max()) / steps
    c = np.zeros(layers[-1][0].shape[0])
    c[label], c[j] = 1.0, -1.0
    for k in range(steps):
        v, masks = x, []
        for W, b, relu in layers:
            v = v @ W.T + b
            masks.append(v > 0 if relu else np.ones(v.shape, dtype=bool))
            v = np.maximum(v, 0.0) if relu else v
        grad = np.broadcast_to(c, v.shape)
        for (W, _, _), mask in zip(reversed(layers), reversed(masks)):
            grad = (grad * mask) @ W
        x = np.clip(x - step * 0.97 ** k * np.sign(grad), lo, hi)
    return float(margins_at(layers, x, label)[:, j].min())


def crown(model, x, label, eps, domain):
    """CROWN's lower bounds as a (C,) array, +inf at the label."""
    bounded = certify.BoundedModel(model, tuple(x.shape))
    lower = bounded.margins(x.unsqueeze(0), torch.tensor([label]), eps, "linf", "crown", domain=domain)[0]
    lower = lower.double().numpy()
    return np.insert(lower, label, np.inf)


def check_instance(model, x, eps, domain=None):
    """All the oracle's checks on one instance; returns robust()'s answer."""
    with torch.no_grad():
        label = int(model(x.unsqueeze(0)).argmax())
    layers = mo.layers_of(model, tuple(x.shape))
    lo, hi = box(x, eps, domain)
    solutions = mo.solve_margin(model, x, label, eps, domain=domain)
    assert [s.target for s in solutions] == [j for j in range(len(solutions) + 1) if j != label]
    milp = np.full(len(solutions) + 1, np.inf)
    for s in solutions:
        milp[s.target] = s.value
    lower = crown(model, x, label, eps, domain)
    sampled = sampled_min(layers, lo, hi, label)
    double = copy.deepcopy(model).double()
    for s in solutions:
        j = s.target
        # sound lower bound <= exact minimum <= any attained margin
        assert lower[j] <= s.value + TOL, (j, lower[j], s.value)
        assert s.dual_bound <= s.value
        assert s.value <= sampled[j] + TOL, (j, s.value, sampled[j])
        assert s.value <= pgd_min(layers, lo, hi, label, j) + TOL
        # the minimiser: in the box, and the network there gives the MILP value
        assert s.x_star.shape == tuple(x.shape)
        assert (lo <= s.x_star).all() and (s.x_star <= hi).all()
        assert abs(s.model_value - s.value) <= TOL
        logits = mo.forward(layers, s.x_star)
        assert abs(logits[label] - logits[j] - s.value) <= TOL
        with torch.no_grad():
            torch_logits = double(torch.from_numpy(s.x_star).unsqueeze(0))[0].numpy()
        np.testing.assert_allclose(torch_logits, logits, rtol=0, atol=1e-12)
        if s.value < -TOL:  # the model misclassifies at the minimiser
            assert int(np.argmax(torch_logits)) != label
    status = mo.robust(model, x, label, eps, domain=domain)
    m = milp.min()
    assert status == ("robust" if m > TOL else "not robust" if m < -TOL else "within tol")
    return status


# ------------------------------------------------------------------------ closed forms
def abs_net():
    """f(x) = [relu(x1) + relu(-x1), 0.5]: margin(label 0) = |x1| - 0.5."""
    model = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0], [-1.0]]))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 0.0]]))
        model[2].bias.copy_(torch.tensor([0.0, 0.5]))
    return model


@pytest.mark.parametrize("centre, eps, domain, minimum, where, status", [
    (0.0, 1.0, None, -0.5, 0.0, "not robust"),  # the minimum inside the box, at the kink
    (0.2, 1.0, (0.1, 1.0), -0.4, 0.1, "not robust"),  # the domain cuts the box to [0.1, 1]
    (1.0, 0.5, None, 0.0, 0.5, "within tol"),  # the minimum is exactly 0
    (2.0, 0.5, None, 1.0, 1.5, "robust"),
    (-2.0, 0.5, None, 1.0, -1.5, "robust"),
])
def test_closed_form(centre, eps, domain, minimum, where, status):
    model, x = abs_net(), torch.tensor([centre])
    margins = mo.min_margins(model, x, 0, eps, domain=domain)
    assert margins.shape == (2,) and margins[0] == np.inf
    assert abs(margins[1] - minimum) <= TOL
    value, x_star, j_star = mo.min_margin(model, x, 0, eps, domain=domain)
    assert j_star == 1 and abs(value - minimum) <= TOL
    assert x_star.shape == (1,) and abs(x_star[0] - where) <= 1e-5
    assert mo.robust(model, x, 0, eps, domain=domain) == status
    loose = "within tol" if abs(minimum) <= 0.6 else status
    assert mo.robust(model, x, 0, eps, domain=domain, tol=0.6) == loose


def test_linear_network_without_binaries():
    """f(x) = [x1 - 2 x2, 0, 3]: min over [-1, 1]^2 of f0 - f1 is -3 at (-1, 1), of f0 - f2 is -6."""
    model = nn.Sequential(nn.Linear(2, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [0.0, 0.0], [0.0, 0.0]]))
        model[0].bias.copy_(torch.tensor([0.0, 0.0, 3.0]))
    margins = mo.min_margins(model, torch.zeros(2), 0, 1.0)
    np.testing.assert_allclose(margins, [np.inf, -3.0, -6.0], atol=TOL)
    value, x_star, j_star = mo.min_margin(model, torch.zeros(2), 0, 1.0)
    assert j_star == 2 and abs(value + 6.0) <= TOL
    np.testing.assert_allclose(x_star, [-1.0, 1.0], atol=1e-9)
    assert mo.solve_margin(model, torch.zeros(2), 0, 1.0)[0].binaries == 0


# ------------------------------------------------------------------------ random networks
@pytest.mark.parametrize("sizes, seed, eps, domain, status", [
    ((4, 8, 8, 3), 0, 0.2, None, "robust"),  # CROWN certifies it too
    ((4, 8, 8, 3), 1, 0.5, None, "robust"),  # CROWN does not: a gap for branch and bound
    ((4, 8, 8, 3), 1, 0.8, None, "not robust"),
    ((5, 16, 16, 4), 0, 0.3, None, "not robust"),
    ((5, 16, 16, 4), 3, 0.3, (0.0, 1.0), "robust"),
])
def test_random_mlp(sizes, seed, eps, domain, status):
    model = mlp(sizes, seed)
    gen = torch.Generator().manual_seed(100 + seed)
    x = torch.rand(sizes[0], generator=gen) if domain else torch.randn(sizes[0], generator=gen)
    assert check_instance(model, x, eps, domain) == status


@pytest.mark.parametrize("eps, domain, status", [(0.1, None, "robust"), (0.2, (0.0, 1.0), "robust"),
                                                 (0.3, (0.0, 1.0), "not robust")])
def test_tiny_cnn(eps, domain, status):
    model = tiny_cnn(2)  # 9 of its 18 hidden neurons active at x; 4 to 12 unstable on these boxes
    x = torch.rand(1, 5, 5, generator=torch.Generator().manual_seed(7))
    assert check_instance(model, x, eps, domain) == status


def enumerated_minimum(layers, lo, hi, label, j):
    """The exact minimum of logit[label] - logit[j] over the box, without big-M: one LP per
    activation pattern of the neurons that interval arithmetic leaves unstable (the network is
    affine on each pattern's region), the smallest over the feasible patterns."""
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    states, box_lo, box_hi = [], lo, hi  # per ReLU layer: 1 on, 0 off, nan unstable
    for W, b, relu in layers:
        mag = 1 + np.abs(W) @ np.maximum(np.abs(box_lo), np.abs(box_hi)) + np.abs(b)
        l = np.maximum(W, 0) @ box_lo + np.minimum(W, 0) @ box_hi + b - 1e-9 * mag
        u = np.maximum(W, 0) @ box_hi + np.minimum(W, 0) @ box_lo + b + 1e-9 * mag
        states.append(np.where(l >= 0, 1.0, np.where(u <= 0, 0.0, np.nan)) if relu else None)
        box_lo, box_hi = (np.maximum(l, 0), np.maximum(u, 0)) if relu else (l, u)
    count = int(sum(np.isnan(s).sum() for s in states if s is not None))
    assert count <= 12, count
    best = np.inf
    for pattern in itertools.product((0.0, 1.0), repeat=count):
        pattern, rows, rhs = iter(pattern), [], []
        A, c = np.eye(lo.size), np.zeros(lo.size)  # the current layer's input is A x + c
        for (W, b, relu), state in zip(layers, states):
            A, c = W @ A, W @ c + b
            if relu:
                on = state.copy()
                for i in np.flatnonzero(np.isnan(state)):
                    on[i] = next(pattern)
                    sign = -1.0 if on[i] else 1.0  # on: z >= 0 (-z <= 0); off: z <= 0
                    rows.append(sign * A[i])
                    rhs.append(-sign * c[i])
                A, c = A * on[:, None], c * on
        res = linprog(A[label] - A[j], A_ub=np.array(rows) if rows else None,
                      b_ub=np.array(rhs) if rows else None, bounds=list(zip(lo, hi)), method="highs")
        assert res.status in (0, 2), res.message  # optimal, or an empty region
        if res.status == 0:
            best = min(best, res.fun + c[label] - c[j])
    return best


@pytest.mark.parametrize("net, seed, eps, domain", [
    ("mlp0", 100, 0.2, None),  # 3 neurons to enumerate
    ("mlp1", 101, 0.3, None),  # 6; robust, and CROWN does not certify it
    ("cnn2", 7, 0.1, None),  # 4
    ("cnn3", 7, 0.07, (0.0, 1.0)),  # 5; not robust
])
def test_matches_enumeration_of_activation_patterns(net, seed, eps, domain):
    model = mlp((4, 8, 8, 3), int(net[3])) if net.startswith("mlp") else tiny_cnn(int(net[3]))
    shape = (4,) if net.startswith("mlp") else (1, 5, 5)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen) if len(shape) == 3 else torch.randn(shape, generator=gen)
    with torch.no_grad():
        label = int(model(x.unsqueeze(0)).argmax())
    layers = mo.layers_of(model, shape)
    lo, hi = box(x, eps, domain)
    for s in mo.solve_margin(model, x, label, eps, domain=domain):
        assert abs(s.value - enumerated_minimum(layers, lo, hi, label, s.target)) <= TOL


def test_minimum_falls_with_eps_and_both_answers_occur():
    """A nested family of boxes: the minimum is non-increasing, robust at small eps, not at large."""
    model = mlp((4, 8, 8, 3), 0)
    x = torch.randn(4, generator=torch.Generator().manual_seed(100))
    with torch.no_grad():
        label = int(model(x.unsqueeze(0)).argmax())
    margins = [mo.min_margins(model, x, label, eps) for eps in (0.0, 0.01, 0.05, 0.2, 0.5)]
    minima = [m.min() for m in margins]
    assert all(b <= a + TOL for a, b in zip(minima, minima[1:]))
    value, x_star, j_star = mo.min_margin(model, x, label, 0.5)
    assert value == minima[-1] and margins[-1][j_star] == value and j_star != label
    assert np.abs(x_star - x.double().numpy()).max() <= 0.5
    with torch.no_grad():
        logits = model(x.unsqueeze(0))[0].double()
    assert abs(minima[0] - float(logits[label] - np.delete(logits.numpy(), label).max())) <= 1e-5
    assert mo.robust(model, x, label, 0.01) == "robust"
    assert mo.robust(model, x, label, 0.5) == "not robust"


def test_tightening_changes_nothing_but_speed():
    model = mlp((5, 16, 16, 4), 0)
    x = torch.randn(5, generator=torch.Generator().manual_seed(100))
    label = int(model(x.unsqueeze(0)).argmax())
    tight = mo.solve_margin(model, x, label, 0.2)
    loose = mo.solve_margin(model, x, label, 0.2, tighten=False)
    np.testing.assert_allclose([s.value for s in tight], [s.value for s in loose], atol=TOL)
    assert tight[0].binaries <= loose[0].binaries


# ------------------------------------------------------------------------ layers and errors
def test_layers_of_matches_torch():
    models = [
        (mlp((5, 16, 16, 4), 0), (5,)),
        (tiny_cnn(0), (1, 5, 5)),
        (nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2), nn.ReLU(),
                       nn.Conv2d(4, 3, 2, dilation=2, bias=False), nn.Flatten(), nn.ReLU(), nn.ReLU(),
                       nn.Sequential(nn.Linear(3, 5), nn.ReLU()), nn.Linear(5, 2)), (2, 6, 6)),
    ]
    for model, shape in models:
        layers = mo.layers_of(model, shape)
        assert all(W.dtype == np.float64 and b.dtype == np.float64 for W, b, _ in layers)
        xs = torch.randn(6, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        with torch.no_grad():
            expected = copy.deepcopy(model).double()(xs).numpy()
        got = np.stack([mo.forward(layers, x.numpy()) for x in xs])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    relu_flags = [r for _, _, r in mo.layers_of(models[2][0], (2, 6, 6))]
    assert relu_flags == [True, True, True, False]


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 2)), "unsupported module Tanh"),
    (nn.Sequential(nn.ReLU(), nn.Linear(2, 2)), "must follow"),
    (nn.Linear(2, 2), "nn.Sequential"),
    (nn.Sequential(nn.Flatten()), "no Linear"),
    (nn.Sequential(nn.Conv2d(1, 1, 1, padding=1, padding_mode="reflect"), nn.Flatten(), nn.Linear(9, 2)),
     "padding_mode"),
])
def test_unsupported_models_are_refused(model, message):
    x = torch.zeros(1, 1, 1) if isinstance(model[0] if isinstance(model, nn.Sequential) else model,
                                           nn.Conv2d) else torch.zeros(2)
    with pytest.raises(ValueError, match=message):
        mo.min_margins(model, x, 0, 0.1)


def test_bad_arguments():
    model = abs_net()
    x = torch.tensor([0.0])
    with pytest.raises(NotImplementedError, match="linf"):
        mo.min_margins(model, x, 0, 0.1, norm="l2")
    with pytest.raises(ValueError, match="empty"):
        mo.min_margins(model, x, 0, 0.1, domain=(0.5, 1.0))
    with pytest.raises(ValueError, match="label"):
        mo.min_margins(model, x, 2, 0.1)
    with pytest.raises(ValueError, match="eps"):
        mo.min_margins(model, x, 0, -0.1)
    with pytest.raises(ValueError, match="inputs"):
        mo.min_margins(model, torch.zeros(3), 0, 0.1)


def test_unproven_optimality_raises():
    with pytest.raises(RuntimeError, match="time or node limit"):
        mo._check_status(OptimizeResult(status=1, x=None, fun=None, message="Time limit reached."), 1.0)
    with pytest.raises(RuntimeError, match="not solved to proven optimality"):
        mo._check_status(OptimizeResult(status=1, x=np.zeros(2), fun=0.0, message="Time limit reached."), 1.0)
    # a real solve cut short: 5-16-16-4 at eps 0.5 needs ~20 binaries and far more than 1 ms
    model = mlp((5, 16, 16, 4), 0)
    x = torch.randn(5, generator=torch.Generator().manual_seed(100))
    with pytest.raises(RuntimeError, match="time or node limit"):
        mo.min_margins(model, x, 0, 0.5, time_limit=1e-3, tighten=False)
