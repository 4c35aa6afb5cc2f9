"""The C++ engine against its plain-PyTorch twin, over a sweep of layer shapes and batch sizes."""

import pytest
import torch
from bound_models import MODELS, ZOO, build
from torch import nn

import certify
from certify.bounds.native import NativeEngine


def agree(a, b, rel=1e-5):
    scale = b.abs().clamp(min=1e-2)
    return bool((((a - b).abs() / scale) <= rel).all())


def conv_net(c_in, c_out, k, stride, padding, dilation, groups, size):
    torch.manual_seed(c_in * 100 + c_out * 10 + k)
    conv = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, dilation=dilation, groups=groups)
    with torch.no_grad():
        out = conv(torch.zeros(1, c_in, size, size))
    return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(out.numel(), 3)).eval(), (c_in, size, size)


CONVS = [
    (1, 2, 3, 1, 0, 1, 1, 5),
    (2, 4, 3, 2, 1, 1, 1, 7),
    (4, 4, 3, 1, 2, 2, 2, 6),
    (3, 6, 2, 2, 0, 1, 3, 8),
    (2, 3, 5, 1, 2, 1, 1, 6),
    (4, 8, 1, 1, 0, 1, 4, 4),
    (1, 2, 5, 1, 2, 1, 1, 1),  # padding beyond the whole output row: 'same' 5x5 on a 1x1 map
    (1, 1, 3, 1, 3, 3, 1, 1),  # dilated kernel taps that all fall in the padding
]


@pytest.mark.parametrize("spec", CONVS, ids=lambda s: "c{}-{}k{}s{}p{}d{}g{}n{}".format(*s))
@pytest.mark.parametrize("sound", [False, True])
def test_conv_sweep_native_matches_twin(spec, sound):
    model, shape = conv_net(*spec)
    native = certify.BoundedModel(model, shape, engine="native")
    twin = certify.BoundedModel(model, shape, engine="torch")
    x = torch.rand(3, *shape)
    for method in ("ibp", "crown-ibp", "crown"):
        a = native.bounds(x, 0.05, method=method, sound=sound)
        b = twin.bounds(x, 0.05, method=method, sound=sound)
        assert agree(a.lower, b.lower) and agree(a.upper, b.upper), method


@pytest.mark.parametrize("width,depth,batch", [(1, 1, 1), (7, 2, 3), (33, 3, 2), (64, 2, 9)])
@pytest.mark.parametrize("sound", [False, True])
def test_mlp_sweep_native_matches_twin(width, depth, batch, sound):
    torch.manual_seed(width + depth)
    layers, d = [], 5
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    model = nn.Sequential(*layers, nn.Linear(d, 4)).eval()
    native = certify.BoundedModel(model, (5,), engine="native")
    twin = certify.BoundedModel(model, (5,), engine="torch")
    x = torch.randn(batch, 5)
    labels = torch.arange(batch) % 4
    for method in ("ibp", "crown-ibp", "crown"):
        for norm in ("linf", "l2"):
            a = native.margins(x, labels, 0.1, norm=norm, method=method, sound=sound)
            b = twin.margins(x, labels, 0.1, norm=norm, method=method, sound=sound)
            assert agree(a, b), (method, norm)


@pytest.mark.parametrize("name", list(MODELS) + list(ZOO))
def test_model_zoo_native_matches_twin(name):
    model, shape = build(name, seed=3)
    native = certify.BoundedModel(model, shape, engine="native")
    twin = certify.BoundedModel(model, shape, engine="torch")
    x = torch.rand(4 if name in MODELS else 2, *shape)
    for method in ("ibp", "crown-ibp", "crown"):
        for norm, domain in (("linf", None), ("linf", (0.0, 1.0)), ("l2", None)):
            for sound in (False, True):
                a = native.bounds(x, 0.1, norm=norm, method=method, domain=domain, sound=sound)
                b = twin.bounds(x, 0.1, norm=norm, method=method, domain=domain, sound=sound)
                assert agree(a.lower, b.lower) and agree(a.upper, b.upper), (method, norm, domain, sound)


def test_many_rows_are_processed_in_chunks():
    """More unstable neurons than one chunk of rows: results must not depend on the chunking."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(10, 700), nn.ReLU(), nn.Linear(700, 700), nn.ReLU(), nn.Linear(700, 3)).eval()
    x = torch.randn(3, 10)
    a = certify.BoundedModel(model, (10,), engine="native").bounds(x, 0.5, method="crown", sound=False)
    b = certify.BoundedModel(model, (10,), engine="torch").bounds(x, 0.5, method="crown", sound=False)
    assert agree(a.lower, b.lower, 1e-4) and agree(a.upper, b.upper, 1e-4)


def test_engine_argument_is_checked():
    with pytest.raises(ValueError, match="engine"):
        certify.BoundedModel(nn.Linear(2, 2).eval(), (2,), engine="gpu")


# ------------------------------------------------------------------ windowed ("patches") rows
# The C++ engine back-substitutes the rows of convolutional neurons as windows of their receptive
# fields where its cost rule says so (rows_form "auto"); "dense" and "windowed" force one form.
ROW_FORMS = ["dense", "windowed", "auto"]


def native_rows(model, shape, form):
    bounded = certify.BoundedModel(model, shape, engine="native")
    bounded._engine.rows_form = form
    return bounded


@pytest.mark.parametrize("form", ROW_FORMS)
@pytest.mark.parametrize("spec", CONVS, ids=lambda s: "c{}-{}k{}s{}p{}d{}g{}n{}".format(*s))
def test_conv_sweep_row_forms_match_twin(spec, form):
    model, shape = conv_net(*spec)
    native = native_rows(model, shape, form)
    twin = certify.BoundedModel(model, shape, engine="torch")
    x = torch.rand(3, *shape)
    for method in ("crown-ibp", "crown"):
        for sound in (False, True):
            a = native.bounds(x, 0.05, method=method, sound=sound)
            b = twin.bounds(x, 0.05, method=method, sound=sound)
            assert agree(a.lower, b.lower) and agree(a.upper, b.upper), (method, sound)


@pytest.mark.parametrize("form", ["dense", "windowed"])
@pytest.mark.parametrize("name", ["cnn", "batchnorm_pool", "residual"])
def test_zoo_row_forms_match_twin(name, form):
    """Strided, dilated and grouped convolutions, batch norm and average pooling between them, and
    a residual block whose two paths meet with rows of different windows."""
    model, shape = build(name, seed=4)
    native = native_rows(model, shape, form)
    twin = certify.BoundedModel(model, shape, engine="torch")
    x = torch.rand(3, *shape)
    for norm, domain in (("linf", None), ("linf", (0.0, 1.0)), ("l2", None)):
        for sound in (False, True):
            a = native.bounds(x, 0.1, norm=norm, method="crown", domain=domain, sound=sound)
            b = twin.bounds(x, 0.1, norm=norm, method="crown", domain=domain, sound=sound)
            assert agree(a.lower, b.lower) and agree(a.upper, b.upper), (norm, domain, sound)


def test_windowed_rows_on_large_maps_and_many_chunks():
    """Maps large enough that the cost rule picks windows, and more unstable neurons than one chunk
    of windowed rows: the same bounds as dense rows and as the twin."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(2, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 8, 4, stride=2, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 10 * 10, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    shape = (2, 20, 20)
    x = torch.rand(2, *shape)
    twin = certify.BoundedModel(model, shape, engine="torch").bounds(x, 0.3, method="crown")
    dense = native_rows(model, shape, "dense").bounds(x, 0.3, method="crown")
    auto = native_rows(model, shape, "auto").bounds(x, 0.3, method="crown")
    graph = certify.BoundedModel(model, shape).graph  # 12 * 20 * 20 = 4800 neurons per input in layer 1
    assert graph.nodes[1].size * len(x) > 4096
    for b in (dense, auto):
        assert agree(b.lower, twin.lower, 1e-4) and agree(b.upper, twin.upper, 1e-4)
    assert agree(auto.lower, dense.lower) and agree(auto.upper, dense.upper)


def test_rows_form_is_checked():
    with pytest.raises(ValueError, match="rows_form"):
        NativeEngine(certify.BoundedModel(nn.Sequential(nn.Linear(2, 2)).eval(), (2,)).graph, rows_form="patch")


# ------------------------------------------------------------------ batched subproblems
def random_splits(graph, boxes, seed):
    """Random ReLU split decisions on the unstable neurons of `boxes` (about one in six, each
    domain its own): {ReLU input node: (count, *shape) of -1/0/+1}."""
    from certify.bounds.graph import ReLU

    generator = torch.Generator().manual_seed(seed)
    signs = {}
    for node in graph.nodes:
        if isinstance(node.layer, ReLU):
            k = node.inputs[0]
            lower, upper = boxes[k]
            pick = torch.randint(0, 12, lower.shape, generator=generator)
            unstable = (lower < 0) & (upper > 0)
            signs[k] = torch.where(unstable & (pick == 0), 1, torch.where(unstable & (pick == 1), -1, 0)).float()
    return signs


def twin_tighten(graph, input_set, signs, boxes=None, keep_through=-1):
    from certify.bounds import reference

    if boxes is None:
        boxes = reference.ibp(graph, input_set.box, True)
    return reference.tighten_intermediate(graph, list(boxes), input_set, True, reference.split_clamp(signs),
                                          keep_through)


@pytest.mark.parametrize("name", ["mlp", "cnn", "residual", "batchnorm_pool"])
def test_batched_subproblems_match_the_twin(name):
    """Many domains (each its own split set) in one call: the same node boxes as the twin's CROWN
    with the splits clamped in, fresh and starting from given (parent) boxes after keep_through."""
    from certify.bounds.reference import InputSet

    model, shape = build(name, seed=7)
    engine = NativeEngine(certify.BoundedModel(model, shape).graph)
    graph = engine.graph
    x = torch.rand(1, *shape).expand(6, *shape)
    input_set = InputSet.make(x, torch.full((6,), 0.1, dtype=torch.float64), "linf", (0.0, 1.0))
    signs = random_splits(graph, engine.tighten(input_set), seed=1)
    native = engine.tighten(input_set, signs=signs)
    twin = twin_tighten(graph, input_set, signs)
    empty = torch.zeros(6, dtype=torch.bool)
    for lo, hi in twin:
        empty |= (lo > hi).flatten(1).any(1)
    assert not bool(empty.all())
    for (a_lo, a_hi), (b_lo, b_hi) in zip(native, twin):
        keep = ~empty  # a contradictory split set may leave any (vacuous) boxes
        assert agree(a_lo[keep], b_lo[keep], 1e-4) and agree(a_hi[keep], b_hi[keep], 1e-4)
    for k, s in signs.items():  # the constraints are in the boxes
        assert bool((native[k][0][s > 0] >= 0).all()) and bool((native[k][1][s < 0] <= 0).all())
    # a child: its parent's boxes, one more split at the last ReLU input, re-derived after it only
    last = max(signs)
    child = {k: s.clone() for k, s in signs.items()}
    child[last].view(6, -1)[:, 0] = 1.0
    from_parent = engine.tighten(input_set, boxes=native, signs=child, keep_through=last)
    twin_child = twin_tighten(graph, input_set, child, boxes=[(lo.clone(), hi.clone()) for lo, hi in twin],
                              keep_through=last)
    for (a_lo, a_hi), (b_lo, b_hi) in zip(from_parent, twin_child):
        assert agree(a_lo[~empty], b_lo[~empty], 1e-4) and agree(a_hi[~empty], b_hi[~empty], 1e-4)
    for (p_lo, p_hi), (c_lo, c_hi) in zip(native, from_parent):  # never looser than the parent's
        assert bool((c_lo >= p_lo).all()) and bool((c_hi <= p_hi).all())
    # every box kept (a leaf, or retighten=False): the clamps still carry forward by IBP, as the twin's do
    kept = engine.tighten(input_set, boxes=native, signs=child, keep_through=len(graph.nodes))
    twin_kept = twin_tighten(graph, input_set, child, boxes=[(lo.clone(), hi.clone()) for lo, hi in twin],
                             keep_through=len(graph.nodes))
    for (a_lo, a_hi), (b_lo, b_hi) in zip(kept, twin_kept):
        assert agree(a_lo[~empty], b_lo[~empty], 1e-4) and agree(a_hi[~empty], b_hi[~empty], 1e-4)


def test_batched_subproblems_past_the_deadline_keep_ibp_boxes():
    from certify.bounds.reference import InputSet, ibp

    model, shape = build("cnn", seed=2)
    engine = NativeEngine(certify.BoundedModel(model, shape).graph)
    x = torch.rand(3, *shape)
    input_set = InputSet.make(x, torch.full((3,), 0.2, dtype=torch.float64), "linf")
    late = engine.tighten(input_set, seconds=0.0)  # no CROWN row: IBP's boxes
    crown = engine.tighten(input_set)
    boxes = ibp(engine.graph, input_set.box, True)
    for (lo, hi), (i_lo, i_hi), (c_lo, c_hi) in zip(late, boxes, crown):
        assert agree(lo, i_lo) and agree(hi, i_hi)
        assert bool((c_lo >= lo).all()) and bool((c_hi <= hi).all())
    assert any(bool((c_lo > lo).any()) for (lo, _), (c_lo, _) in zip(late, crown))  # CROWN did tighten
    with pytest.raises(ValueError, match="node box"):
        engine.tighten(input_set, boxes=[(lo[:1], hi[:1]) for lo, hi in crown])
    with pytest.raises(ValueError, match="splits"):
        engine.tighten(input_set, signs={1: torch.zeros(2, 3)})
    relu_input = 1  # the first convolution's output, the first ReLU's input
    with pytest.raises(ValueError, match="-1, 0 or \\+1"):  # -200 would wrap to +56 as int8: an active split
        engine.tighten(input_set, signs={relu_input: torch.full((3, *engine.graph.nodes[relu_input].shape), -200.0)})
    nan_boxes = [(lo.clone(), hi.clone()) for lo, hi in crown]
    nan_boxes[1][0].view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        engine.tighten(input_set, boxes=nan_boxes)
    with pytest.raises(ValueError, match="keep_through"):
        engine.tighten(input_set, seconds=float("nan"))
    assert len(engine.tighten(input_set, boxes=crown, keep_through=2**40)) == len(crown)  # past the last: keep all


def test_large_products_split_over_threads_match_twin():
    """Products big enough that the engine splits one GEMM over the threads by columns (a wide
    convolution and a wide Linear layer at batch 1; test_many_rows_are_processed_in_chunks has
    the split by rows)."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(16, 64, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64 * 16 * 16, 300),
                          nn.ReLU(), nn.Linear(300, 10)).eval()
    shape = (16, 16, 16)
    native = certify.BoundedModel(model, shape)
    twin = certify.BoundedModel(model, shape, engine="torch")
    for batch in (1, 3):
        x = torch.rand(batch, *shape)
        for method in ("ibp", "crown-ibp"):
            a = native.bounds(x, 0.01, method=method)
            b = twin.bounds(x, 0.01, method=method)
            assert agree(a.lower, b.lower, 1e-4) and agree(a.upper, b.upper, 1e-4), (batch, method)
