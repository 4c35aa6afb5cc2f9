"""Float32 inference as deployed (certify.bounds.float32, BoundedModel(..., inference="float32")):
the per-neuron rounding-error bound dominates what float32 forward passes actually do, in torch's
order and in adversarial summation orders; wherever float32 inference verifies, no float32 point
of the ball flips the prediction; float32 inference is never more permissive than exact; and the
command line issues and checks such certificates."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.fx
import torch.nn.functional as F
from bound_models import MODELS, build
from run_files import run_cli
from click.testing import CliRunner
from torch import nn

import certify
from certify.attack import pgd
from certify.bounds import float32
from certify.bounds.graph import ElementwiseAffine, Graph
from certify.bounds.reference import InputSet
from certify.cli import bounds_method, main
from certify.runs import run


# ----------------------------------------------------------------------------- networks
def tied(slope: float = 1e-5, dim: int = 2):
    """logits (1000, 1000 + slope x0): float32 rounds them equal for small slope (ulp of 1000 is 6.1e-5),
    so torch's argmax returns 0 where the exact network prefers 1 (x0 > 0)."""
    net = nn.Sequential(nn.Linear(dim, 2)).eval()
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[1, 0] = slope
        net[0].bias.fill_(1000.0)
    return net


class Cancelling(nn.Module):
    """Normalisation by Python floats, then batch norm whose shift cancels (bias ~ mean * scale with a
    large running mean, inputs near 0): float32 computes beta = bias - mean * alpha with an error
    relative to those terms, not to the small shift or the small values. Then average pooling, a
    residual addition and a head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(2)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.bn1d = nn.BatchNorm1d(36)
        self.head = nn.Linear(36, 4)
        with torch.no_grad():
            self.bn.running_mean.uniform_(80.0, 120.0)
            self.bn.running_var.uniform_(0.5, 3.0)
            self.bn.weight.uniform_(0.5, 1.5)
            scale = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
            self.bn.bias.copy_(self.bn.running_mean * scale + torch.empty(4).uniform_(-0.1, 0.1))
            self.bn1d.running_mean.uniform_(-1, 1)
            self.bn1d.running_var.uniform_(0.3, 2.0)

    def forward(self, x):
        x = (x - 0.4) / 0.3
        h = torch.relu(self.bn(self.conv(x)))
        h = self.pool(h)
        h = h + torch.relu(self.conv2(h))
        h = torch.flatten(h, 1)
        return self.head(torch.relu(self.bn1d(h)))


NETS = dict(MODELS, cancelling=(Cancelling, (2, 6, 6)))


def network(name, seed=0):
    if name == "cancelling":
        torch.manual_seed(seed)
        return Cancelling().eval(), (2, 6, 6)
    return build(name, seed)


# ------------------------------------------------------------- float32 forward passes
def _sum(terms: torch.Tensor, order: str, generator) -> torch.Tensor:
    """Sum of float32 terms over the last axis, each addition rounded to float32, in `order`."""
    n = terms.shape[-1]
    if order == "pairwise":
        while terms.shape[-1] > 1:
            if terms.shape[-1] % 2:
                terms = torch.cat([terms, torch.zeros_like(terms[..., :1])], -1)
            terms = terms[..., 0::2] + terms[..., 1::2]
        return terms[..., 0]
    if order == "reversed":
        index = list(range(n - 1, -1, -1))
    elif order == "random":
        index = torch.randperm(n, generator=generator).tolist()
    elif order == "largest-first":  # one order per output: by decreasing magnitude (the same for all rows)
        index = terms.abs().flatten(0, -2).mean(0).argsort(descending=True).tolist()
    else:
        raise ValueError(order)
    acc = torch.zeros_like(terms[..., 0])
    for i in index:
        acc = acc + terms[..., i]
    return acc


def _dot(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, order: str, generator) -> torch.Tensor:
    """x (..., n) float32, w (m, n): (..., m) as float32 sums of products in the given order; the bias
    first (as a term) for 'reversed', last otherwise. 'fma': sequential, each product and addition
    rounded once (the product is exact in float64)."""
    if order == "fma":
        acc = b.expand(*x.shape[:-1], -1).double().float()
        for i in range(x.shape[-1]):
            acc = (acc.double() + x[..., i:i + 1].double() * w[:, i].double()).float()
        return acc
    products = x.unsqueeze(-2) * w  # (..., m, n), each product rounded to float32
    if order == "reversed":  # the bias is the last term, so it is added first
        return _sum(torch.cat([products, b.expand(*products.shape[:-1]).unsqueeze(-1)], -1), order, generator)
    return _sum(products, order, generator) + b


class Recorder(torch.fx.Interpreter):
    """Runs a traced model, keeping every node's value; `order` (not None) replaces Linear and Conv2d by
    float32 sums of products in that order, and batch norm by its unfused form."""

    def __init__(self, gm, order=None, seed=0):
        super().__init__(gm)
        self.values = {}
        self.order = order
        self.generator = torch.Generator().manual_seed(seed)

    def run_node(self, n):
        value = super().run_node(n)
        if isinstance(value, torch.Tensor):
            self.values[n.name] = value.detach()
        return value

    def call_module(self, target, args, kwargs):
        module = self.module.get_submodule(target)
        x = args[0]
        if self.order is None or x.dtype != torch.float32:
            return super().call_module(target, args, kwargs)
        if isinstance(module, nn.Linear):
            b = module.bias if module.bias is not None else torch.zeros(module.out_features)
            return _dot(x, module.weight.detach(), b.detach(), self.order, self.generator)
        if isinstance(module, nn.Conv2d):
            return self._conv(module, x)
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            view = (1, -1) + (1,) * (x.dim() - 2)
            std = torch.sqrt(module.running_var + module.eps).view(view)
            return (x - module.running_mean.view(view)) / std * module.weight.view(view) + module.bias.view(view)
        return super().call_module(target, args, kwargs)

    def _conv(self, conv, x):
        batch, _, height, width = x.shape
        kh, kw = conv.kernel_size
        cols = F.unfold(x, (kh, kw), dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
        g, out = conv.groups, conv.out_channels
        cols = cols.view(batch, g, -1, cols.shape[-1]).transpose(-1, -2)  # (B, g, L, n)
        w = conv.weight.detach().reshape(g, out // g, -1)
        b = conv.bias.detach().reshape(g, out // g) if conv.bias is not None else torch.zeros(g, out // g)
        result = torch.stack([_dot(cols[:, j], w[j], b[j], self.order, self.generator) for j in range(g)], 1)
        oh = (height + 2 * conv.padding[0] - conv.dilation[0] * (kh - 1) - 1) // conv.stride[0] + 1
        ow = (width + 2 * conv.padding[1] - conv.dilation[1] * (kw - 1) - 1) // conv.stride[1] + 1
        return result.transpose(-1, -2).reshape(batch, out, oh, ow).contiguous()


def node_values(model, x, order=None, seed=0):
    """{fx node name: value} of a float32 forward pass (torch's kernels, or `order`)."""
    rec = Recorder(torch.fx.symbolic_trace(model), order, seed)
    with torch.no_grad():
        rec.run(x)
    return rec.values


def points_in_ball(x, eps, count, generator, domain=None):
    """float32 points with |x' - x| <= eps (as reals) and inside the domain: random coordinates, and
    vertices (each coordinate at an end), rounded inward to float32."""
    x64 = x.double()
    lo, hi = x64 - eps, x64 + eps
    if domain is not None:
        lo, hi = lo.clamp(min=domain[0]), hi.clamp(max=domain[1])
    lo32 = torch.nextafter(lo.float(), torch.tensor(float("inf")))
    hi32 = torch.nextafter(hi.float(), torch.tensor(-float("inf")))
    lo32, hi32 = torch.maximum(lo32, torch.minimum(x, lo32)), torch.minimum(hi32, torch.maximum(x, hi32))
    shape = (count,) + tuple(x.shape)
    u = torch.rand(shape, generator=generator)
    random = lo32 + (hi32 - lo32) * u
    vertices = torch.where(torch.rand(shape, generator=generator) < 0.5, lo32, hi32)
    pts = torch.cat([random, vertices]).float()
    inside = ((pts.double() - x64).abs() <= eps).flatten(1).all(1)
    assert bool(inside.all())
    return pts


# ------------------------------------------------------------------------- (1) ties
def test_tied_logits_exact_verifies_float32_does_not():
    net = tied()
    x = torch.tensor([[0.5, 0.5]])
    with torch.no_grad():
        assert net(x).argmax(1).item() == 0  # float32 rounds the logits equal: argmax picks index 0
        assert copy.deepcopy(net).double()(x.double()).argmax(1).item() == 1  # the exact network prefers 1
    for engine in ("native", "torch"):
        bounded = certify.BoundedModel(net, (2,), engine=engine)
        for method in ("ibp", "crown", "crown-ibp"):
            assert bool(bounded.verify(x, [1], 0.1, method=method))
            assert not bool(bounded.verify(x, [1], 0.1, method=method, inference="float32"))
            margin32 = bounded.margins(x, [1], 0.1, method=method, inference="float32")
            # the float32 margin at the input is 0 (a tie), so its lower bound must not be positive
            assert float(margin32) <= 0
        assert float(bounded.radius(x, [1], max_eps=0.1, inference="float32")) == 0.0
        assert float(bounded.radius(x, [1], max_eps=0.1)) == 0.1
        b32 = bounded.bounds(x, 0.1, inference="float32")
        b = bounded.bounds(x, 0.1)
        assert bool((b32.lower <= b.lower).all() and (b32.upper >= b.upper).all())


def test_float32_verifies_once_the_margin_beats_the_rounding():
    """The same family with a clear margin: float32 inference verifies it (the bound is not vacuous)."""
    net = tied(slope=1.0)
    x = torch.tensor([[0.5, 0.5]])
    bounded = certify.BoundedModel(net, (2,))
    assert bool(bounded.verify(x, [1], 0.1, inference="float32"))
    e = float32.output_error(bounded.graph, InputSet.make(x, torch.tensor([0.1], dtype=torch.float64), "linf"))
    assert 6e-5 < float(e.max()) < 1e-3  # gamma_3 * 1000.6: a few float32 ulps of 1000


def test_inference_argument_checks():
    bounded = certify.BoundedModel(tied(), (2,), engine="torch")
    x = torch.tensor([[0.5, 0.5]])
    with pytest.raises(ValueError, match="inference must be"):
        bounded.verify(x, [1], 0.1, inference="float16")
    with pytest.raises(ValueError, match="sound"):
        bounded.margins(x, [1], 0.1, sound=False, inference="float32")
    with pytest.raises(ValueError, match="gradients"):
        bounded.margins(x, [1], 0.1, grad=True, inference="float32")


# ------------------------------------------------------------ (2) the error bound holds
ORDERS = [None, "reversed", "random", "pairwise", "largest-first", "fma"]


def _check_errors(model, shape, eps, domain, orders, count=24, seed=0):
    """Worst observed |float32 - float64| / e over the graph's nodes, sampled points and orders."""
    generator = torch.Generator().manual_seed(seed)
    bounded = certify.BoundedModel(model, shape)
    x = torch.rand((3,) + tuple(shape), generator=generator)
    input_set = InputSet.make(x, torch.full((3,), eps, dtype=torch.float64), "linf", domain)
    errors = float32.error_bounds(bounded.graph, input_set)
    model64 = copy.deepcopy(model).double()
    worst = 0.0
    for i in range(len(x)):
        pts = points_in_ball(x[i], eps, count, generator, domain)
        exact = node_values(model64, pts.double())
        for order in orders:
            got = node_values(model, pts, order, seed)
            for k, node in enumerate(bounded.graph.nodes):
                if node.where not in got or k == 0:
                    continue
                diff = (got[node.where].double() - exact[node.where]).abs().reshape(len(pts), -1)
                e = errors[k][i].reshape(1, -1)
                # float64 is within ~1e-16 relative of the exact value; e is at least ~1e-7 relative
                slack = 1e-13 * exact[node.where].abs().reshape(len(pts), -1)
                assert bool((diff <= e + slack).all()), (
                    f"{node.where} ({type(node.layer).__name__}), order {order}: error {float(diff.max()):.3g} "
                    f"above its bound {float(e.flatten()[diff.amax(0).argmax()]):.3g}")
                positive = e.expand_as(diff) > 0
                if bool(positive.any()):
                    worst = max(worst, float((diff / e.clamp_min(1e-300))[positive].max()))
    return worst


@pytest.mark.parametrize("name", sorted(NETS))
def test_error_bound_dominates_float32_in_torch_and_adversarial_orders(name):
    model, shape = network(name, seed=3)
    worst = _check_errors(model, shape, eps=0.05, domain=None, orders=ORDERS)
    print(f"{name}: worst observed error / bound = {worst:.3g}")
    # The bound is rigorous yet not vacuous: some node comes within a factor 200 of it.
    assert 0.005 < worst <= 1.0


def test_error_bound_with_domain_and_l2():
    model, shape = network("batchnorm_pool", seed=5)
    assert _check_errors(model, shape, eps=0.2, domain=(0.0, 1.0), orders=[None, "random"]) <= 1.0
    bounded = certify.BoundedModel(model, shape)
    x = torch.rand(2, *shape)
    e_l2 = float32.output_error(bounded.graph, InputSet.make(x, torch.full((2,), 0.3, dtype=torch.float64), "l2"))
    e_inf = float32.output_error(bounded.graph, InputSet.make(x, torch.full((2,), 0.3, dtype=torch.float64), "linf"))
    assert bool(torch.isfinite(e_l2).all()) and bool((e_l2 > 0).all())
    assert bool((e_l2 >= e_inf).all())  # the l2 ball's enclosing cube contains the l_inf ball of the same radius


def test_a_bound_too_small_is_caught():
    """The sampling check has teeth: a bound 100 times smaller than the rigorous one fails it."""
    model, shape = network("cancelling", seed=3)
    original = float32._propagate

    def shrunk(graph, boxes):
        return [e / 100 for e in original(graph, boxes)]

    float32._propagate = shrunk
    try:
        with pytest.raises(AssertionError, match="above its bound"):
            _check_errors(model, shape, eps=0.05, domain=None, orders=[None, "largest-first"])
    finally:
        float32._propagate = original


def test_batch_norm_needs_its_shift_terms():
    """Batch norm's float32 shift bias - mean * alpha errs relative to |bias| + |mean * alpha|: a bound
    using only the (cancelling) shift |t| fails on the cancelling network; the graph's t_terms hold."""
    model, shape = network("cancelling", seed=3)
    original = float32._propagate

    def without_terms(graph, boxes):
        nodes = [dataclasses.replace(n, layer=dataclasses.replace(n.layer, t_terms=None))
                 if isinstance(n.layer, ElementwiseAffine) else n for n in graph.nodes]
        return original(Graph(nodes), boxes)

    float32._propagate = without_terms
    try:
        with pytest.raises(AssertionError, match="above its bound"):
            _check_errors(model, shape, eps=0.05, domain=None, orders=[None, "reversed"])
    finally:
        float32._propagate = original


def test_overflow_gives_no_bound():
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)).eval()
    with torch.no_grad():
        net[0].weight.fill_(1e30)
        net[2].weight.fill_(1e30)
    bounded = certify.BoundedModel(net, (2,))
    x = torch.ones(1, 2)
    e = float32.output_error(bounded.graph, InputSet.make(x, torch.tensor([0.1], dtype=torch.float64), "linf"))
    assert bool(torch.isinf(e).all())
    assert not bool(bounded.verify(x, [0], 0.1, inference="float32"))


# ------------------------------------------------- (3) float32-verified means no flips
def test_near_ties_float32_verified_never_flip():
    """Near the threshold where rounding decides: for each slope and centre, if float32 inference
    verifies the ball, every sampled float32 point (corners included) and PGD keep the label in
    float32, in torch's order and in adversarial orders; some do verify, some do not."""
    generator = torch.Generator().manual_seed(1)
    verified_count = refused = 0
    for slope in np.geomspace(1e-4, 3e-2, 10):
        net = tied(float(slope), dim=3)
        bounded = certify.BoundedModel(net, (3,))
        x = torch.tensor([[0.3, 0.2, 0.9], [0.6, 0.5, 0.1], [0.9, 0.7, 0.4]])
        labels = torch.ones(3, dtype=torch.long)
        eps = 0.25
        ok = bounded.verify(x, labels, eps, inference="float32", domain=(0.0, 1.0))
        exact = bounded.verify(x, labels, eps, domain=(0.0, 1.0))
        assert bool((exact | ~ok).all())
        verified_count += int(ok.sum())
        refused += int((exact & ~ok).sum())
        broken = pgd(net, x, labels, eps, domain=(0.0, 1.0), steps=20, restarts=2)
        assert not bool((broken & ok).any())
        for i in ok.nonzero().flatten().tolist():
            pts = points_in_ball(x[i], eps, 64, generator, (0.0, 1.0))
            for order in [None, "reversed", "fma"]:
                logits = node_values(net, pts, order)["output"]
                assert bool((logits.argmax(1) == 1).all()), (slope, i, order)
    assert verified_count > 0 and refused > 0


@pytest.mark.parametrize("name", ["mlp", "batchnorm_pool", "residual", "cancelling"])
def test_float32_verified_inputs_survive_pgd_and_samples(name):
    model, shape = network(name, seed=2)
    generator = torch.Generator().manual_seed(2)
    x = torch.rand((8,) + tuple(shape), generator=generator)
    with torch.no_grad():
        labels = model(x).argmax(1)
    bounded = certify.BoundedModel(model, shape)
    eps = 0.002
    ok = bounded.verify(x, labels, eps, inference="float32")
    assert int(ok.sum()) >= 2
    assert not bool((pgd(model, x, labels, eps, steps=20, restarts=2) & ok).any())
    for i in ok.nonzero().flatten().tolist():
        pts = points_in_ball(x[i], eps, 32, generator)
        with torch.no_grad():
            assert bool((model(pts).argmax(1) == labels[i]).all())


# ------------------------------------------------------ (4) never more permissive
@pytest.mark.parametrize("name", sorted(NETS))
@pytest.mark.parametrize("method", ["ibp", "crown-ibp", "crown"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_float32_never_more_permissive_than_exact(name, method, norm):
    model, shape = network(name, seed=4)
    x = torch.rand((6,) + tuple(shape))
    with torch.no_grad():
        labels = model(x).argmax(1)
    bounded = certify.BoundedModel(model, shape)
    for eps in (0.0, 0.001, 0.01):
        exact = bounded.margins(x, labels, eps, norm, method)
        f32 = bounded.margins(x, labels, eps, norm, method, inference="float32")
        assert bool((f32 <= exact).all())
        assert bool((f32 < exact).any())  # the rounding allowance is never zero on these networks
        assert bool((~bounded.verify(x, labels, eps, norm, method, inference="float32")
                     | bounded.verify(x, labels, eps, norm, method)).all())
        b, b32 = bounded.bounds(x, eps, norm, method), bounded.bounds(x, eps, norm, method, inference="float32")
        assert bool((b32.lower <= b.lower).all() and (b32.upper >= b.upper).all())


# ------------------------------------------------------------------------ (5) CLI
def test_cli_float32_inference_certificate_checks(tmp_path):
    from certify.formats.data_files import save_npz
    from certify.formats.onnx_import import export_onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.rand(10, 4)
    with torch.no_grad():
        y = net(x).argmax(1)
    export_onnx(net, (4,), tmp_path / "net.onnx")
    save_npz(tmp_path / "data.npz", x, y)
    out = tmp_path / "run"
    done = run_cli("bounds", "--model", "net.onnx", "--data", "data.npz", "--eps", "0.01", "--domain", "0", "1",
                   "--inference", "float32", "--attack-steps", "10", "--out", out, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    cert = json.loads((out / "certificate.json").read_text())
    assert cert["method"]["inference"] == "float32"
    assert "the model run in float32 returns the label" in cert["guarantee"]
    assert "any order" in cert["guarantee"] and "Winograd" in cert["guarantee"]
    assert cert["summary"]["verified_accuracy"] > 0
    assert all(r["correct"] for r in cert["results"] if r["verified"])
    checked = run_cli("verify-certificate", out / "certificate.json", "--audit", "3", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    helped = CliRunner().invoke(main, ["bounds", "--help"])
    assert "--inference [exact|float32]" in helped.output
    # The same run in exact inference (the default) verifies at least as many inputs.
    inputs = run.prepare(tmp_path / "net.onnx", tmp_path / "data.npz")
    method = bounds_method("crown", "linf", 0.01, None, None, (0.0, 1.0), None)
    assert method["inference"] == "exact"
    cert_exact = run.execute(tmp_path / "exact", inputs, method, quiet=True)
    assert cert_exact["summary"]["verified_accuracy"] >= cert["summary"]["verified_accuracy"]
    assert "the exact network" in cert_exact["guarantee"]
