"""Bounds contain every output over the input set: sampled points, box vertices and PGD attacks,
with the network evaluated in float64 (a stand-in for exact arithmetic well below float32's error)."""

import copy
import zlib
from fractions import Fraction

import pytest
import torch
from bound_models import MODELS, ZOO, build

import certify

METHODS = ["ibp", "crown-ibp", "crown", "alpha-crown"]
SETS = [("linf", None, 0.15), ("linf", (0.0, 1.0), 0.3), ("l2", None, 0.4)]


def sample_set(x, eps, norm, domain, count, vertices):
    """Points of the set: uniform in the box / ball, plus random vertices of the l_inf box."""
    shape = x.shape
    if norm == "linf":
        u = torch.rand(count, *shape, dtype=torch.float64) * 2 - 1
        if vertices:
            u[: count // 2] = torch.randint(0, 2, (count // 2, *shape)).double() * 2 - 1
        points = x.double() + eps * u
        if domain is not None:
            points = points.clamp(*domain)
    else:
        d = torch.randn(count, *shape, dtype=torch.float64)
        d = d / d.flatten(1).norm(dim=1).view(-1, *[1] * len(shape))
        r = torch.rand(count, dtype=torch.float64).view(-1, *[1] * len(shape))
        points = x.double() + eps * torch.where(r < 0.3, torch.ones_like(r), r ** (1 / x.numel())) * d
    return points


def project(points, x, eps, norm, domain):
    if norm == "linf":
        points = torch.maximum(torch.minimum(points, x + eps), x - eps)
        return points.clamp(*domain) if domain is not None else points
    d = points - x
    n = d.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, *[1] * (x.dim()))
    return x + d * torch.clamp(eps / n, max=1.0)


def pgd_extremes(model64, x, eps, norm, domain, steps=25):
    """For each output k, points pushing f_k down and up (signed gradient steps, projected)."""
    outputs = model64(x.double().unsqueeze(0)).shape[1]
    found = []
    for k in range(outputs):
        for sign in (1.0, -1.0):
            p = sample_set(x, eps, norm, domain, 8, vertices=False).requires_grad_(True)
            for _ in range(steps):
                value = (sign * model64(p)[:, k]).sum()
                (grad,) = torch.autograd.grad(value, p)
                if norm == "linf":
                    step = grad.sign() * eps / 8
                else:
                    step = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-30).view(-1, *[1] * x.dim()) * eps / 8
                p = project((p + step).detach(), x.double(), eps, norm, domain).requires_grad_(True)
            found.append(p.detach())
    return torch.cat(found)


# Every model, method and engine for the first round's models. The zoo (issue 15's operators) runs
# every method on the native engine, and CROWN on the twin for the l2 set: the twin agrees with the
# native engine to 1e-5 on every method (test_bounds_engines) and its plain bounds meet the same
# witnesses (below); alpha-CROWN (slow on max-pooling's many ReLU layers) runs on the zoo for the
# clipped l_inf set.
SET_IDS = ["linf", "linf-domain", "l2"]


def _zoo_case(method, engine, set_id):
    if engine == "torch":
        return method == "crown" and set_id == "l2"
    return method != "alpha-crown" or set_id == "linf-domain"


CASES = [(name, method, engine, *sets) for name in [*MODELS, *ZOO] for method in METHODS
         for engine in ("native", "torch") for sets in zip(SET_IDS, SETS)
         if name in MODELS or _zoo_case(method, engine, sets[0])]


@pytest.mark.parametrize("name,method,engine,set_id,norm,domain,eps",
                         [(c[0], c[1], c[2], c[3], *c[4]) for c in CASES],
                         ids=[f"{c[3]}-{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_points_and_attacks_stay_inside_sound_bounds(name, method, engine, set_id, norm, domain, eps):
    model, shape = build(name)
    model64 = build(name)[0].double()
    bounded = certify.BoundedModel(model, shape, engine=engine)
    x = torch.rand(2 if name in MODELS else 1, *shape)  # the zoo: one input (its witnesses are most of the time)
    b = bounded.bounds(x, eps, norm=norm, method=method, domain=domain)
    assert torch.isfinite(b.lower).all() and torch.isfinite(b.upper).all()
    assert (b.lower <= b.upper).all()
    with torch.no_grad():
        centre_out = model64(x.double())
    assert (b.lower.double() <= centre_out).all() and (centre_out <= b.upper.double()).all()
    for i in range(len(x)):
        out = witness_outputs(name, model64, x[i], eps, norm, domain)
        assert (out >= b.lower[i].double()).all(), (out.min(0).values - b.lower[i]).min()
        assert (out <= b.upper[i].double()).all(), (b.upper[i] - out.max(0).values).min()


@pytest.mark.parametrize("name", list(ZOO))
@pytest.mark.parametrize("norm,domain,eps", SETS, ids=["linf", "linf-domain", "l2"])
def test_plain_bounds_of_the_zoo_contain_every_witness(name, norm, domain, eps):
    """sound=False (plain float32) bounds too: the relaxations themselves are valid, not only their
    rounding allowances. The same x as above, so the witnesses are shared."""
    model, shape = build(name)
    model64 = build(name)[0].double()
    x = torch.rand(2 if name in MODELS else 1, *shape)  # the zoo: one input (its witnesses are most of the time)
    for engine in ("native", "torch"):
        bounded = certify.BoundedModel(model, shape, engine=engine)
        for method in ("ibp", "crown"):
            b = bounded.bounds(x, eps, norm=norm, method=method, domain=domain, sound=False)
            for i in range(len(x)):
                out = witness_outputs(name, model64, x[i], eps, norm, domain)
                slack = 1e-5 * (1 + out.abs())  # plain float32 rounding, which sound=True covers
                assert (out >= b.lower[i].double() - slack).all() and (out <= b.upper[i].double() + slack).all(), \
                    (engine, method)


_WITNESSES: dict = {}


def witness_outputs(name, model64, x, eps, norm, domain):
    """float64 outputs at sampled points, box vertices and PGD extremes of the set around x. They
    depend on the model, the set and x, not on the method or engine under test: computed once per
    set and reused by the (method, engine) cases (the PGD is most of this file's time)."""
    key = (name, norm, domain, eps, x.numpy().tobytes())
    if key not in _WITNESSES:
        state = torch.get_rng_state()
        torch.manual_seed(zlib.crc32(repr(key[:4]).encode() + key[4]))  # per set, whatever ran before
        points = sample_set(x, eps, norm, domain, 400, vertices=True)
        points = torch.cat([points, pgd_extremes(model64, x, eps, norm, domain)])
        torch.set_rng_state(state)
        with torch.no_grad():
            _WITNESSES[key] = model64(points)
    return _WITNESSES[key]


@pytest.mark.parametrize("name", list(MODELS) + ["vgg_maxpool", "mlp_smooth"])
def test_margins_hold_at_sampled_points(name):
    model, shape = build(name, seed=1)
    model64 = build(name, seed=1)[0].double()
    bounded = certify.BoundedModel(model, shape)
    x = torch.rand(3, *shape)
    labels = torch.tensor([0, 1, 2])
    for method in METHODS if name in MODELS else ("crown-ibp", "crown"):
        margins = bounded.margins(x, labels, 0.1, method=method)
        for i in range(len(x)):
            points = sample_set(x[i], 0.1, "linf", None, 300, vertices=True)
            with torch.no_grad():
                out = model64(points)
            true = out[:, labels[i]].unsqueeze(1) - out
            true = torch.cat([true[:, :labels[i]], true[:, labels[i] + 1:]], dim=1)
            assert (true >= margins[i].double()).all()


def exact_linear(weight, bias, x):
    """W x + b in rational arithmetic on the float32 values: (out,) of Fractions."""
    w = [[Fraction(float(v)) for v in row] for row in weight.detach().tolist()]
    xs = [Fraction(float(v)) for v in x.tolist()]
    return [sum(wi * xi for wi, xi in zip(row, xs)) + Fraction(float(b)) for row, b in zip(w, bias.detach().tolist())]


@pytest.mark.parametrize("engine", ["native", "torch"])
def test_rounding_matters_plain_bounds_fail_sound_bounds_hold(engine):
    """Large cancelling weights and a long sum: the float32 result is off by far more than the
    (zero) width of the input set, so plain bounds miss the exact output; sound bounds do not."""
    torch.manual_seed(0)
    n = 256
    layer = torch.nn.Linear(n, 4)
    with torch.no_grad():
        big = torch.randn(4, n // 2) * 1e6
        layer.weight.copy_(torch.cat([big, -big], dim=1) + torch.randn(4, n) * 1e-2)
        layer.bias.copy_(torch.randn(4) * 1e6)
    model = torch.nn.Sequential(layer).eval()
    bounded = certify.BoundedModel(model, (n,), engine=engine)
    x = (1 + torch.rand(3, n) * 1e-3)  # irregular float32 values
    missed_plain = 0
    for method in METHODS:
        plain = bounded.bounds(x, 0.0, method=method, sound=False)
        sound = bounded.bounds(x, 0.0, method=method, sound=True)
        plain, sound = (certify.Bounds(b.lower.detach(), b.upper.detach()) for b in (plain, sound))
        for i in range(len(x)):
            exact = exact_linear(layer.weight, layer.bias, x[i])
            for k, value in enumerate(exact):
                lo, hi = Fraction(float(sound.lower[i, k])), Fraction(float(sound.upper[i, k]))
                assert lo <= value <= hi, (method, i, k)
                plo, phi = Fraction(float(plain.lower[i, k])), Fraction(float(plain.upper[i, k]))
                missed_plain += not (plo <= value <= phi)
    assert missed_plain > 0  # the network does make float32 rounding matter


@pytest.mark.parametrize("engine", ["native", "torch"])
def test_rounding_matters_through_relu_layers(engine):
    """A deeper version: cancelling layers around ReLUs, checked against float64 evaluation."""
    torch.manual_seed(1)
    n = 128
    model = torch.nn.Sequential(torch.nn.Linear(n, n), torch.nn.ReLU(), torch.nn.Linear(n, n), torch.nn.ReLU(),
                                torch.nn.Linear(n, 3)).eval()
    with torch.no_grad():
        for layer in (model[0], model[2]):
            half = torch.randn(n, n // 2) * 3e3
            layer.weight.copy_(torch.cat([half, -half], dim=1) + torch.randn(n, n))
            layer.bias.copy_(torch.randn(n) * 10)
    bounded = certify.BoundedModel(model, (n,), engine=engine)
    x = 1 + torch.rand(2, n) * 1e-3
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(x.double())  # a copy: the torch engine follows the model's parameters
    missed = {True: 0, False: 0}
    for method in METHODS:
        for sound in (True, False):
            b = bounded.bounds(x, 0.0, method=method, sound=sound)
            missed[sound] += int(((exact < b.lower.double()) | (exact > b.upper.double())).sum())
    assert missed[True] == 0
    assert missed[False] > 0


@pytest.mark.parametrize("name", ["cnn", "batchnorm_pool", "residual", "vgg_maxpool", "moves"])
@pytest.mark.parametrize("norm,domain,eps", SETS, ids=["linf", "linf-domain", "l2"])
def test_windowed_rows_bound_every_witness(name, norm, domain, eps):
    """The C++ engine with every convolutional row forced into window form (windows hanging over
    the maps' edges, mixed windows meeting at the residual addition): still sound."""
    model, shape = build(name)
    model64 = build(name)[0].double()
    bounded = certify.BoundedModel(model, shape)
    bounded._engine.rows_form = "windowed"
    x = torch.rand(2 if name in MODELS else 1, *shape)  # as above: the same witnesses
    for method in ("crown-ibp", "crown"):
        b = bounded.bounds(x, eps, norm=norm, method=method, domain=domain)
        for i in range(len(x)):
            out = witness_outputs(name, model64, x[i], eps, norm, domain)
            assert (out >= b.lower[i].double()).all() and (out <= b.upper[i].double()).all(), method


@pytest.mark.parametrize("form", ["dense", "windowed"])
def test_rounding_matters_through_convolutions(form):
    """Cancelling convolution kernels around ReLUs on a zero-width set: the plain float32 bounds
    miss the float64 outputs, the sound ones (dense or windowed rows) contain them."""
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                                torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 3)).eval()
    with torch.no_grad():
        for conv in (model[0], model[2]):
            half = torch.randn(8, 4, 3, 3) * 3e3
            conv.weight.copy_(torch.cat([half, -half], dim=1) + torch.randn(8, 8, 3, 3))
            conv.bias.copy_(torch.randn(8) * 10)
    bounded = certify.BoundedModel(model, (8, 8, 8))
    bounded._engine.rows_form = form
    x = 1 + torch.rand(2, 8, 8, 8) * 1e-3
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(x.double())
    missed = {True: 0, False: 0}
    for method in ("crown-ibp", "crown"):
        for sound in (True, False):
            b = bounded.bounds(x, 0.0, method=method, sound=sound)
            missed[sound] += int(((exact < b.lower.double()) | (exact > b.upper.double())).sum())
    assert missed[True] == 0
    assert missed[False] > 0
