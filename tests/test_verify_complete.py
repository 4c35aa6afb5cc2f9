"""Complete verification (certify.verify): alpha-CROWN and branch and bound against an exact MILP
oracle (scipy's HiGHS), counterexamples replayed, deadlines and the memory cap honoured."""

import time

import pytest
import torch
from milp_oracle import robust
from torch import nn

import certify
from certify.verify import SearchSettings, decide_one


def centred_mlp(seed, sizes):
    """A random ReLU MLP without biases on inputs in [-1, 1]: its decision varies over the input
    space (a random network with biases often predicts one class everywhere)."""
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    net = nn.Sequential(*layers[:-1]).eval()
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.bias.uniform_(-0.05, 0.05)
    return net


def small_cnn(seed):
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(12, 10), nn.ReLU(),
                        nn.Linear(10, 3)).eval()
    return net


def trained_mlp(seed):
    """Trained on a random teacher's labels: a network with a learned, not random, decision."""
    torch.manual_seed(seed)
    teacher = centred_mlp(seed + 100, [10, 16, 3])
    x = torch.rand(512, 10) * 2 - 1
    with torch.no_grad():
        y = teacher(x).argmax(1)
    net = centred_mlp(seed, [10, 20, 20, 3])
    opt = torch.optim.SGD(net.parameters(), lr=0.5)
    for _ in range(60):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


# (network builder, input shape): input splitting (<= 20 inputs) and ReLU splitting (more)
INSTANCES = [
    (lambda: centred_mlp(0, [8, 16, 16, 4]), (8,)),
    (lambda: centred_mlp(1, [24, 16, 16, 3]), (24,)),
    (lambda: trained_mlp(2), (10,)),
    (lambda: small_cnn(3), (1, 6, 6)),
]
# eps as a multiple of CROWN's certified radius for the input: 1.0-ish is decided at the root,
# beyond needs the search (robust inputs CROWN cannot prove) or an attack.
FACTORS = (1.15, 2.5)


def check_counterexample(net, x, label, eps, point):
    assert point.shape == x.shape and point.dtype == torch.float32
    assert float((point.double() - x.double()).abs().max()) <= eps  # inside the ball, exactly
    with torch.no_grad():
        assert int(net(point.unsqueeze(0)).argmax(1)) != label
        logits = net.double()(point.double().unsqueeze(0))[0]
        net.float()
    others = torch.cat([logits[:label], logits[label + 1:]])
    assert float(others.max()) > float(logits[label])


@pytest.mark.parametrize("case", range(len(INSTANCES)))
def test_branch_and_bound_never_contradicts_the_milp(case):
    build, shape = INSTANCES[case]
    net = build()
    torch.manual_seed(10 + case)
    xs = torch.rand(3, *shape) * 2 - 1
    with torch.no_grad():
        labels = net(xs).argmax(1)
    bounded = certify.BoundedModel(net, shape)
    radius = bounded.radius(xs, labels, method="crown", tol=1e-4).clamp(min=1e-3)
    outcomes = []
    for factor in FACTORS:
        eps = radius * factor
        # A domain budget, not the clock, ends a hard search here: the outcome must not depend on the
        # machine's load (the deadline has its own test below).
        decisions = bounded.decide(xs, labels, eps, timeout=600, settings=SearchSettings(max_domains=20_000))
        for i, decision in enumerate(decisions):
            truth = robust(net, xs[i], int(labels[i]), float(eps[i]), time_limit=60)
            outcomes.append((decision.status, truth, decision.domains))
            if decision.status == "verified":
                assert truth != "not robust", (case, factor, i)
            elif decision.status == "falsified":
                assert truth != "robust", (case, factor, i)
                check_counterexample(net, xs[i], int(labels[i]), float(eps[i]), decision.counterexample)
    assert all(status != "unknown" for status, _, _ in outcomes), outcomes
    # not vacuous: the search itself proved inputs that one CROWN pass could not
    assert any(status == "verified" for status, _, _ in outcomes), outcomes


def test_alpha_crown_is_never_looser_than_crown_and_stays_sound():
    net = centred_mlp(5, [12, 32, 32, 5])
    x = torch.rand(16, 12) * 2 - 1
    with torch.no_grad():
        labels = net(x).argmax(1)
    bounded = certify.BoundedModel(net, (12,))
    crown = bounded.margins(x, labels, 0.08, method="crown")
    alpha = bounded.margins(x, labels, 0.08, method="alpha-crown")
    assert (alpha >= crown).all()
    assert (alpha - crown).mean() > 1e-4  # the optimisation does tighten
    assert bool(bounded.verify(x, labels, 0.08, method="alpha-crown").sum() >= bounded.verify(
        x, labels, 0.08, method="crown").sum())
    points = x.unsqueeze(1) + (torch.rand(16, 3000, 12) * 2 - 1) * 0.08
    with torch.no_grad():
        out = net.double()(points.double())
        net.float()
    true = out.gather(2, labels.view(-1, 1, 1).expand(-1, 3000, 1)) - out
    keep = torch.ones(16, 5, dtype=torch.bool)
    keep[torch.arange(16), labels] = False
    true_min = true.amin(1)[keep].reshape(16, 4)
    assert (alpha.double() <= true_min).all()


def test_the_deadline_is_honoured():
    """A hard instance (large eps on a wider net, ReLU splitting) with a 1 s budget answers within
    1 s plus one batch of bounding."""
    net = centred_mlp(7, [30, 64, 64, 64, 4])
    x = torch.rand(30) * 2 - 1
    with torch.no_grad():
        label = int(net(x.unsqueeze(0)).argmax(1))
    started = time.monotonic()
    decision = decide_one(net, certify.BoundedModel(net, (30,)).graph, x, label, 0.04,
                          settings=SearchSettings(timeout=1.0, attack_restarts=1))
    took = time.monotonic() - started
    assert took < 1.0 + 2.0, took
    assert decision.status in ("unknown", "falsified", "verified")


def test_the_memory_cap_switches_to_depth_first_and_still_decides():
    net = centred_mlp(0, [8, 16, 16, 4])
    x = torch.tensor([0.1, -0.3, 0.5, 0.2, -0.7, 0.0, 0.4, -0.1])
    with torch.no_grad():
        label = int(net(x.unsqueeze(0)).argmax(1))
    graph = certify.BoundedModel(net, (8,)).graph
    eps = 0.15
    free = decide_one(net, graph, x, label, eps, settings=SearchSettings(timeout=600, max_domains=20_000))
    capped = decide_one(net, graph, x, label, eps,
                        settings=SearchSettings(timeout=600, max_domains=20_000, max_queue_bytes=1))
    assert free.status == capped.status != "unknown"


def test_review_edge_cases_inputs_tiny_eps_domain_and_settings():
    """From the review: a float64 input float32 cannot hold is refused (the search would decide the
    rounded input's ball); eps below one float32 spacing keeps counterexamples in the ball; an input
    outside the domain is refused; settings are validated; a batch of 1 still searches."""
    net = centred_mlp(0, [8, 16, 16, 4])
    bounded = certify.BoundedModel(net, (8,))
    x = torch.rand(2, 8) * 2 - 1
    with torch.no_grad():
        labels = net(x).argmax(1)
    with pytest.raises(ValueError, match="float32 holds exactly"):
        bounded.decide(x.double() + 2.0**-40, labels, 0.1)
    with pytest.raises(ValueError, match="outside the domain"):
        bounded.decide(x + 5, labels, 0.1, domain=(0, 1))
    with pytest.raises(ValueError, match="attack_steps"):
        SearchSettings(attack_steps=0)
    wrong = (labels + 1) % 4  # misclassified as given: falsified by the input itself, even at eps 1e-9
    for d, xi in zip(bounded.decide(x, wrong, 1e-9), x):
        assert d.status == "falsified" and torch.equal(d.counterexample, xi)
    one = bounded.decide(x[:1], labels[:1], 0.15, timeout=600, settings=SearchSettings(batch=1, max_domains=5_000))
    assert one[0].status != "unknown"


def test_fully_split_domains_are_settled_by_their_linear_program(monkeypatch):
    """Without beta's gradient steps (iterations 0) the search reaches domains with every ReLU
    split; each is settled by the LP's duals in the sound pass (certify.verify.leaf), and the
    answers still agree with the MILP."""
    from certify.verify import bab

    settled = []
    original = bab._Search.settle_leaf

    def spy(self, domain):
        answer = original(self, domain)
        settled.append(answer[0] or answer[1] is not None)
        return answer

    monkeypatch.setattr(bab._Search, "settle_leaf", spy)
    net = centred_mlp(3, [24, 5, 5, 3])
    torch.manual_seed(3)
    xs = torch.rand(3, 24) * 2 - 1
    with torch.no_grad():
        labels = net(xs).argmax(1)
    bounded = certify.BoundedModel(net, (24,))
    eps = bounded.radius(xs, labels, method="crown", tol=1e-4).clamp(min=1e-3) * 1.5
    settings = SearchSettings(iterations=0, root_iterations=1, max_domains=5000)
    for i, decision in enumerate(bounded.decide(xs, labels, eps, timeout=600, settings=settings)):
        truth = robust(net, xs[i], int(labels[i]), float(eps[i]), time_limit=60)
        assert decision.status != "unknown", decision.reason
        assert (decision.status == "verified") == (truth == "robust"), (i, decision.status, truth)
    assert settled and all(settled), settled


def test_an_empty_split_domain_is_proven_by_a_farkas_certificate():
    """Splits z_0 = x - 1/2 >= 0 and z_1 = x + 1/2 <= 0 exclude all of x in [-1, 1]: the LP is
    infeasible, and the phase-one duals scaled up give a sound bound above any threshold."""
    from certify.bounds.reference import InputSet, backward, ibp
    from certify.verify.alpha import split_terms
    from certify.verify.leaf import leaf_multipliers

    net = nn.Sequential(nn.Linear(1, 2), nn.ReLU(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0], [1.0]]))
        net[0].bias.copy_(torch.tensor([-0.5, 0.5]))
        net[2].weight.copy_(torch.tensor([[1.0, -1.0]]))
        net[2].bias.zero_()
    graph = certify.BoundedModel(net, (1,)).graph
    box = (torch.tensor([[-1.0]]), torch.tensor([[1.0]]))
    boxes = ibp(graph, box, True)
    k = graph.nodes[[i for i, n in enumerate(graph.nodes) if type(n.layer).__name__ == "ReLU"][0]].inputs[0]
    lower, upper = boxes[k]
    boxes[k] = (torch.tensor([[0.0, -1.5]]).maximum(lower), torch.tensor([[1.5, 0.0]]).minimum(upper))  # clamped
    boxes = ibp(graph, None, True, start=k + 1, boxes=boxes)
    spec = torch.ones(1, 1, 1)
    splits = ((k, 0, 1), (k, 1, -1))
    choices, points = leaf_multipliers(graph, boxes, box, spec, splits)
    assert len(choices) > 1 and points == [None]  # a Farkas certificate at several scales, no minimiser
    signs = {k: torch.tensor([[1.0, -1.0]])}
    iset = InputSet("linf", torch.zeros(1, 1), torch.ones(1), box)
    best = max(float(backward(graph, len(graph.nodes) - 1, spec, boxes, iset, True,
                              split_terms=split_terms(betas, signs))[0, 0]) for betas in choices)
    assert best > 100.0


def test_a_leaf_without_splits_is_unknown_not_a_crash():
    """Review finding: every ReLU stably active on the ball and two equal logits (margin exactly 0,
    neither provable nor falsifiable); the root is already a fully split domain with no split, and
    its LP has no constraint rows. The answer is "unknown", and the VNN-LIB form of it too."""
    from certify.formats.vnnlib import parse_vnnlib
    from certify.verify.property_check import check_property

    n = 24
    net = nn.Sequential(nn.Linear(n, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    with torch.no_grad():
        net[0].weight.uniform_(-0.1, 0.1)
        net[0].bias.fill_(10.0)
        net[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]))
        net[2].bias.zero_()
    bounded = certify.BoundedModel(net, (n,))
    decision = bounded.decide(torch.zeros(1, n), torch.tensor([0]), 0.1, timeout=60,
                              settings=SearchSettings(max_domains=100))[0]
    assert decision.status == "unknown" and "fully split" in decision.reason
    text = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} -0.1))\n(assert (<= X_{i} 0.1))\n" for i in range(n))
    text += "(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n(assert (>= (- Y_0 Y_1) 0.000000000001))\n"
    assert check_property(net, (n,), parse_vnnlib(text), timeout=60).status in ("unsat", "unknown")


def test_intermediate_alpha_tightens_the_layer_right_after_the_first_relu():
    """Review finding: the slopes of the ReLU just below a layer (the first one its back-substitution
    relaxes) must be optimised too; on a two-hidden-layer MLP that is the only one, so the second
    layer's boxes must come out strictly tighter than CROWN's, and still contain sampled values."""
    from certify.bounds.reference import InputSet, ibp, tighten_intermediate
    from certify.verify.alpha import optimize_intermediate

    net = centred_mlp(4, [10, 32, 32, 3])
    bounded = certify.BoundedModel(net, (10,))
    graph = bounded.graph
    x = torch.rand(1, 10) * 2 - 1
    input_set = InputSet.make(x, torch.tensor([0.3], dtype=torch.float64), "linf")
    crown = tighten_intermediate(graph, ibp(graph, input_set.box, True), input_set, True)
    alpha = optimize_intermediate(graph, input_set, crown, iterations=20)
    second = [i for i, node in enumerate(graph.nodes) if type(node.layer).__name__ == "ReLU"][1]
    k = graph.nodes[second].inputs[0]
    width = {name: float((b[k][1] - b[k][0]).sum()) for name, b in (("crown", crown), ("alpha", alpha))}
    assert width["alpha"] < 0.99 * width["crown"], width
    points = x + (torch.rand(4000, 10) * 2 - 1) * 0.3
    with torch.no_grad():
        values = net[:3](points.double().float())  # the second layer's pre-activations
    assert (values >= alpha[k][0]).all() and (values <= alpha[k][1]).all()
