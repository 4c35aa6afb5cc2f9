"""The operators of the networks people train (issue 15), end to end: the zoo traced from torch and
from its ONNX export computes the model exactly and is bounded soundly by every method; ReLU-like
networks (max-pooling, clamps) are decided by branch and bound in agreement with an exact MILP; what
is not supported is refused by name; README's table is the engines' table."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from bound_models import ZOO, build
from milp_oracle import graph_min_margins
from test_bounds_soundness import sample_set
from torch import nn

import certify
from certify.bounds import UnsupportedModelError, reference
from certify.bounds.graph import ALL_METHODS, OPERATORS, operator_list, operator_table
from certify.verify import SearchSettings

ROOT = Path(__file__).resolve().parent.parent


def graph_output(graph, x):
    """The traced graph evaluated at x (a point box through IBP, plain arithmetic)."""
    return reference.ibp(graph, (x, x), sound=False)[-1][0]


@pytest.mark.parametrize("name", list(ZOO))
def test_traced_zoo_computes_the_model(name):
    model, shape = build(name, seed=2)
    graph = certify.bounds.trace(model, shape)
    x = torch.rand(5, *shape) * 2 - 1
    with torch.no_grad():
        expected = model(x)
    assert torch.allclose(graph_output(graph, x), expected, atol=1e-5, rtol=1e-5)


# The zoo members whose ONNX export the importer converts (SiLU / GELU export as products and Erf,
# nearest upsampling as Resize, reflect padding as Pad(mode=reflect): not converted), and an MLP
# with the smooth activations ONNX has as operators.
def smooth_onnx_mlp():
    return nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8), nn.Softplus(),
                         nn.Linear(8, 8), nn.ELU(0.5), nn.Linear(8, 8), nn.LeakyReLU(0.05), nn.Linear(8, 3))


class SliceConcat(nn.Module):
    """Slice, Pad, Concat, Split, Max / Min and Sub of computed values, as ONNX writes them."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.head = nn.Linear(4 * 4 * 3 + 2 * 4 * 3, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        a, b = torch.split(h, [2, 2], dim=1)
        y = torch.cat([torch.maximum(a, b), torch.minimum(a, b) - a], 1)[:, :, 1:5, :3]
        z = F.pad(x, (1, 0, 0, 1), value=0.25)[:, :, 2:6, 1:4]
        return self.head(torch.cat([y.flatten(1), z.flatten(1)], 1))


ONNX_CASES = {
    "lenet_tanh": lambda: build("lenet_tanh", seed=2),
    "vgg_maxpool": lambda: build("vgg_maxpool", seed=2),
    "resnet_gap": lambda: build("resnet_gap", seed=2),
    "mobilenet_relu6": lambda: build("mobilenet_relu6", seed=2),
    "smooth_onnx_mlp": lambda: (torch.manual_seed(4) and None or smooth_onnx_mlp().eval(), (6,)),
    "slice_concat": lambda: (torch.manual_seed(5) and None or SliceConcat().eval(), (2, 6, 4)),
}


@pytest.mark.filterwarnings("ignore:Constant folding")  # torch's exporter, on the slices
@pytest.mark.parametrize("name", list(ONNX_CASES))
def test_onnx_exports_of_the_zoo_bound_like_the_torch_models(name, tmp_path):
    pytest.importorskip("onnx")
    from certify.formats.onnx_import import export_onnx, load_onnx

    model, shape = ONNX_CASES[name]()
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, shape, path)
    loaded = load_onnx(path)
    x = torch.rand(3, *shape)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5, rtol=1e-5)
    from_torch = certify.BoundedModel(model, shape)
    from_onnx = certify.BoundedModel(loaded, shape)
    assert torch.allclose(graph_output(from_onnx.graph, x), model(x).detach(), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        points = torch.stack([model(sample_set(x[i], 0.05, "linf", None, 300, vertices=True).float())
                              for i in range(len(x))])
    for method in ("ibp", "crown-ibp", "crown"):
        a = from_onnx.bounds(x, 0.05, method=method)
        b = from_torch.bounds(x, 0.05, method=method)
        assert (a.lower.unsqueeze(1) <= points).all() and (points <= a.upper.unsqueeze(1)).all(), method
        # the same network, traced from two forms: the same bounds up to the relaxations' rounding
        scale = 1e-4 * (1 + b.width)
        assert ((a.lower - b.lower).abs() <= scale).all() and ((a.upper - b.upper).abs() <= scale).all(), method


# ------------------------------------------------------------------ branch and bound on ReLU-like nets
def pool_cnn():
    """Max-pooling (branchable: each max is a ReLU) on a map small enough for the exact MILP."""
    torch.manual_seed(11)
    return nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(2 * 2 * 2, 3)).eval(), (1, 4, 4)


def clamp_mlp():
    """ReLU6, HardTanh, LeakyReLU and a max, on 24 inputs (above the input-splitting threshold: the
    search splits the ReLUs these become)."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(24, 8), nn.Linear(8, 8), nn.Linear(8, 3)

        def forward(self, x):
            h = F.relu6(self.a(x) * 3)
            h = torch.maximum(F.hardtanh(self.b(h), -1.0, 1.0), F.leaky_relu(self.b(h), 0.1))
            return self.c(h)

    torch.manual_seed(12)
    return Net().eval(), (24,)


# eps as a multiple of CROWN's certified radius: a little beyond it, where the search decides
# (some inputs need splits) and, on the pooling network, some inputs fall to attacks.
@pytest.mark.parametrize("make,factor", [(pool_cnn, 1.05), (clamp_mlp, 1.2)], ids=["maxpool", "clamps"])
def test_branch_and_bound_on_relu_like_networks_agrees_with_the_milp(make, factor):
    net, shape = make()
    torch.manual_seed(20)
    xs = torch.rand(4, *shape) * 2 - 1
    with torch.no_grad():
        labels = net(xs).argmax(1)
    bounded = certify.BoundedModel(net, shape)
    eps = bounded.radius(xs, labels, method="crown", tol=1e-4).clamp(min=1e-3) * factor
    decisions = bounded.decide(xs, labels, eps, timeout=120, settings=SearchSettings(max_domains=4000))
    for i, decision in enumerate(decisions):
        truth = float(graph_min_margins(bounded.graph, xs[i], int(labels[i]), float(eps[i]), time_limit=60).min())
        if decision.status == "verified":
            assert truth > -1e-6, (i, truth)
        elif decision.status == "falsified":
            assert truth < 1e-6, (i, truth)
            point = decision.counterexample
            assert float((point.double() - xs[i].double()).abs().max()) <= float(eps[i])
            with torch.no_grad():
                assert int(net(point.unsqueeze(0)).argmax(1)) != int(labels[i])
    statuses = [d.status for d in decisions]
    assert "unknown" not in statuses, statuses
    # not vacuous: the search split domains to prove inputs CROWN alone could not
    assert any(d.status == "verified" and d.domains > 2 for d in decisions), [(d.status, d.domains) for d in decisions]


def test_graph_milp_matches_the_chain_oracle():
    """The graph-level MILP agrees with the chain oracle on a network both take."""
    from milp_oracle import min_margins

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(12, 10), nn.ReLU(),
                        nn.Linear(10, 3)).eval()
    x = torch.rand(1, 6, 6)
    label = int(net(x.unsqueeze(0)).argmax())
    graph = certify.bounds.trace(net, (1, 6, 6))
    a, b = graph_min_margins(graph, x, label, 0.05), min_margins(net, x, label, 0.05)
    others = [j for j in range(3) if j != label]
    assert abs(a[others] - b[others]).max() < 1e-6


# ------------------------------------------------------------------ what is refused
class BatchMix(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how, self.fc = how, nn.Linear(4, 4)

    def forward(self, x):
        h = self.fc(x)
        if self.how == "index":
            return h[0:1].expand_as(h)
        if self.how == "cat":
            return torch.cat([h, h.flip(0)], 1)
        return h.roll(1, 0)


@pytest.mark.parametrize("module,match", [
    (BatchMix("index"), "mixes values of different inputs|keep the batch"),
    (BatchMix("cat"), "mixes values of different inputs|keep the batch"),
    (BatchMix("roll"), "mixes values of different inputs|keep the batch"),
    (nn.Sequential(nn.Linear(4, 4), nn.ELU(alpha=-0.5)), "ELU with alpha"),
    (nn.Sequential(nn.Linear(4, 4), nn.Unflatten(1, (1, 2, 2)), nn.MaxPool2d(2, ceil_mode=True)), "ceil_mode"),
    (nn.Sequential(nn.Linear(4, 4), nn.Hardswish()), "Hardswish"),
])
def test_unsupported_forms_are_refused_by_name(module, match):
    with pytest.raises(UnsupportedModelError, match=match):
        certify.BoundedModel(module.eval(), (4,))


def test_a_reduction_over_a_dimension_is_refused():
    class Reduce(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.max(self.fc(x), 1, keepdim=True).values

    with pytest.raises(UnsupportedModelError, match="max"):
        certify.BoundedModel(Reduce().eval(), (4,))


# ------------------------------------------------------------------ the table
def test_readme_and_docstring_show_the_engines_table():
    readme = (ROOT / "README.md").read_text()
    rows = [line for line in readme.splitlines() if line.startswith("| ")]
    names = {row.split("|")[1].strip(): row for row in rows}
    for name, _, _, _, methods in OPERATORS:
        assert name in names, name
        cells = [c.strip() for c in names[name].split("|")[1:-1]]
        support = cells[4:4 + len(ALL_METHODS)]
        assert [cell != "-" for cell in support] == [m in methods for m in ALL_METHODS], name
    assert operator_list() in certify.BoundedModel.__doc__
    assert operator_table().splitlines()[0] in readme


def test_every_operator_row_names_forms_the_tracer_accepts():
    """The table's PyTorch forms are real: each named module class exists in torch.nn."""
    for _, forms, _, _, _ in OPERATORS:
        for module in re.findall(r"nn\.([A-Z]\w+)", forms):
            assert hasattr(nn, module), module


# ------------------------------------------------------------------ regressions from review
class InplaceFunctional(nn.Module):
    def forward(self, x):
        y = x * 1.0
        return F.leaky_relu(y, 0.1, True) + y  # torch: 2 leaky(y), since y is overwritten


class InplaceThroughView(nn.Module):
    def __init__(self):
        super().__init__()
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x):
        y = x * 1.0
        z = self.act(y.view(y.shape[0], -1))  # overwrites y through the view
        return z - y.flatten(1)


class BatchSized(nn.Module):
    def __init__(self, how):
        super().__init__()
        self.how = how

    def forward(self, x):
        y = x * 1.0
        if self.how == "roll":
            return torch.roll(y, y.shape[0], 1)
        if self.how == "narrow":
            return torch.narrow(y, 1, y.size(0), 2)
        if self.how == "view":
            return y.view(-1)
        if self.how == "unsqueeze":
            return y.unsqueeze(0)
        if self.how == "truncate":
            return y[:2]
        return torch.max(y, 1)[0]


@pytest.mark.parametrize("module,match", [
    (InplaceFunctional(), "in-place"),
    (InplaceThroughView(), "in-place"),
    (BatchSized("roll"), "batch size"),
    (BatchSized("narrow"), "batch size"),
    (BatchSized("view"), "batch"),
    (BatchSized("unsqueeze"), "batch"),
    (BatchSized("truncate"), "batch"),
    (BatchSized("reduce"), "reduction"),
], ids=["inplace-functional", "inplace-view", "roll-by-batch", "narrow-by-batch", "view-all", "unsqueeze-0",
        "truncate-batch", "max-over-dim"])
def test_forms_that_would_mistrace_are_refused(module, match):
    with pytest.raises(UnsupportedModelError, match=match):
        certify.BoundedModel(module.eval(), (6,))


@pytest.mark.parametrize("engine", ["native", "torch"])
def test_overflowing_bounds_stay_infinite_and_nothing_is_verified(engine):
    """float32 overflow makes a bound infinite, never the largest float (a finite, wrong bound)."""
    net = nn.Sequential(nn.Linear(1, 1), nn.ReLU(), nn.Linear(1, 2)).eval()
    with torch.no_grad():
        net[0].weight.fill_(3e38)
        net[0].bias.fill_(2.9e38)
        net[2].weight.copy_(torch.tensor([[0.0], [0.3]]))
        net[2].bias.copy_(torch.tensor([1.5e38, 0.0]))
    bounded = certify.BoundedModel(net, (1,), engine=engine)
    x = torch.tensor([[0.0]])
    for method in ("ibp", "crown"):
        assert not bool(bounded.verify(x, torch.tensor([0]), 1.0, method=method)[0]), method
        assert float(bounded.bounds(x, 1.0, method=method).upper.max()) == float("inf"), method


def test_clamp_by_a_broadcast_tensor_traces_exactly_or_is_refused():
    class ByChannel(nn.Module):
        def __init__(self, widen: bool):
            super().__init__()
            self.conv, self.widen = nn.Conv2d(3, 3, 3, padding=1), widen
            self.register_buffer("ceiling", torch.tensor([0.1, 0.3, 0.5]).view(1, 3, 1, 1))

        def forward(self, x):
            h = self.conv(x)
            return torch.clamp(h[:, :1] if self.widen else h, max=self.ceiling).flatten(1)

    torch.manual_seed(0)
    model, x = ByChannel(False).eval(), torch.rand(2, 3, 4, 4)
    for engine in ("native", "torch"):
        b = certify.BoundedModel(model, (3, 4, 4), engine=engine).bounds(x, 0.0)
        with torch.no_grad():
            y = model(x)
        assert (b.lower <= y + 1e-5).all() and (y <= b.upper + 1e-5).all(), engine
    with pytest.raises(UnsupportedModelError, match="broadcast"):
        certify.BoundedModel(ByChannel(True).eval(), (3, 4, 4))


def test_max_pool_with_an_empty_stride_means_the_kernel():
    class Pool(nn.Module):
        def forward(self, x):
            return F.max_pool2d(x, 2, []).flatten(1)

    x = torch.rand(2, 1, 4, 4)
    graph = certify.bounds.trace(Pool().eval(), (1, 4, 4))
    assert torch.allclose(graph_output(graph, x), Pool()(x))


def test_alpha_crown_optimises_smooth_activation_slopes_soundly():
    """Both lines' slopes per neuron and row are free (their intercepts follow soundly): never
    looser than CROWN, tighter on a tanh network, and every sampled margin stays above."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 5)).eval()
    x = torch.rand(4, 10)
    with torch.no_grad():
        labels = net(x).argmax(1)
    bounded = certify.BoundedModel(net, (10,))
    crown = bounded.margins(x, labels, 0.3, method="crown")
    alpha = bounded.margins(x, labels, 0.3, method="alpha-crown")
    assert (alpha >= crown).all() and float((alpha - crown).mean()) > 1e-3
    for i in range(len(x)):
        points = sample_set(x[i], 0.3, "linf", None, 2000, vertices=True)
        with torch.no_grad():
            out = net.double()(points)
            net.float()
        true = out[:, labels[i]].unsqueeze(1) - out
        true = torch.cat([true[:, :labels[i]], true[:, labels[i] + 1:]], dim=1)
        assert (true >= alpha[i].double()).all()
