"""`check_property` (certify vnnlib) on networks with more inputs than input splitting handles:
the open cases go to the ReLU branch and bound of certify.verify.bab, and its answers are checked
against the exact MILP oracle (robustness properties written as VNN-LIB text), against sampling and
PGD (conjunctions of constraints whose coefficients float32 cannot hold), and by replaying every
counterexample."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from milp_oracle import min_subject_to, robust
from test_verify_complete import centred_mlp

import certify
from certify.formats.vnnlib import parse_vnnlib
from certify.verify import property_check
from certify.verify.property_check import check_property

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py says why

INPUTS = 24


def declarations(inputs: int, outputs: int) -> str:
    return "".join(f"(declare-const X_{i} Real)\n" for i in range(inputs)) + \
        "".join(f"(declare-const Y_{j} Real)\n" for j in range(outputs))


def box_text(lower: np.ndarray, upper: np.ndarray) -> str:
    """Exact decimal text of float64 endpoints (repr round-trips), so the box is the one asked for."""
    return "".join(f"(assert (>= X_{i} {lo!r}))\n(assert (<= X_{i} {hi!r}))\n"
                   for i, (lo, hi) in enumerate(zip(lower.tolist(), upper.tolist())))


def robustness_text(x: torch.Tensor, eps: float, label: int, classes: int) -> str:
    """VNN-COMP's local robustness property: unsafe when some other output reaches the label's."""
    x64 = x.double().numpy()
    others = " ".join(f"(and (>= Y_{j} Y_{label}))" for j in range(classes) if j != label)
    return declarations(len(x64), classes) + box_text(x64 - eps, x64 + eps) + f"(assert (or {others}))\n"


def robustness_instances():
    """A centred MLP on 24 inputs, 4 inputs, their labels and CROWN-certified radii."""
    net = centred_mlp(1, [INPUTS, 16, 16, 3])
    torch.manual_seed(11)
    xs = torch.rand(4, INPUTS) * 2 - 1
    with torch.no_grad():
        labels = net(xs).argmax(1)
    radius = certify.BoundedModel(net, (INPUTS,)).radius(xs, labels, method="crown", tol=1e-4).clamp(min=1e-3)
    return net, xs, labels, radius


def test_robustness_properties_agree_with_the_milp():
    net, xs, labels, radius = robustness_instances()
    statuses, searched = [], 0
    for factor in (1.15, 2.5):
        for i in range(len(xs)):
            eps = float(radius[i]) * factor
            prop = parse_vnnlib(robustness_text(xs[i], eps, int(labels[i]), 3))
            verdict = check_property(net, (INPUTS,), prop, timeout=120)
            truth = robust(net, xs[i], int(labels[i]), eps, time_limit=60)
            statuses.append((verdict.status, truth))
            searched += verdict.splits > 0
            if verdict.status == "unsat":
                assert truth != "not robust", (factor, i)
            elif verdict.status == "sat":
                assert truth != "robust", (factor, i)
                x, y = verdict.counterexample
                assert prop.cases[0].contains(x) or any(c.contains(x) for c in prop.cases)
                with torch.no_grad():
                    np.testing.assert_array_equal(net(torch.from_numpy(x).unsqueeze(0)).numpy().reshape(-1), y)
                assert any(c.violated_by(x, y) for c in prop.cases)
    assert all(status in ("unsat", "sat") for status, _ in statuses), statuses
    # not vacuous: the ReLU search ran, and proved properties one CROWN pass could not
    assert searched >= 2 and sum(status == "unsat" for status, _ in statuses) >= 2, statuses


def test_the_relu_search_is_what_decides_them(monkeypatch):
    """The same kind of property, the search switched off: the checker's input splitting alone
    leaves it open within the same split budget (so the test above measures the ReLU search)."""
    net, xs, labels, radius = robustness_instances()
    texts = [robustness_text(xs[i], float(radius[i]) * 1.15, int(labels[i]), 3) for i in range(len(xs))]
    with_search = [check_property(net, (INPUTS,), parse_vnnlib(t), timeout=60, max_splits=300).status for t in texts]
    monkeypatch.setattr(property_check, "_INPUT_SPLIT_DIMS", 10**9)
    without = [check_property(net, (INPUTS,), parse_vnnlib(t), timeout=60, max_splits=300).status for t in texts]
    assert sum(s == "unsat" for s in with_search) > sum(s == "unsat" for s in without), (with_search, without)


def test_conjunctions_with_inexact_coefficients_agree_with_the_milp():
    """Cases of two constraints with coefficients like 0.1 (float32 holds none of them: the e_j
    residual rows of _Prepared enter the search's spec, and a target is proven when either row is):
    each answer checked against the exact MILP minimum of row 0 subject to row 1, and every
    counterexample replayed."""
    generator = torch.Generator().manual_seed(5)
    outcomes = []
    coeffs = np.array([[0.1, -0.3, 0.0], [0.0, 0.7, -0.1]])
    exact = np.array([[float(Fraction(repr(c))) for c in row] for row in coeffs.tolist()])  # what the text says
    for trial in range(6):
        net = centred_mlp(20 + trial, [INPUTS, 12, 12, 3])
        centre = torch.rand(INPUTS, generator=generator, dtype=torch.float64).numpy() * 2 - 1
        lower, upper = centre - 0.15, centre + 0.15
        least = [min_subject_to(net, lower, upper, row, []) for row in exact]
        most = [-min_subject_to(net, lower, upper, -row, []) for row in exact]
        # (row 0, row 1) bounds as fractions of each row's exact range: row 1 just below its minimum
        # (unsat, tight), both rows low together (either answer), both loose (sat)
        first, second = ((0.5, -0.02), (0.3, 0.05), (0.8, 0.3))[trial % 3]
        bounds = [round(least[0] + first * (most[0] - least[0]), 4), round(least[1] + second * (most[1] - least[1]), 4)]
        terms = [" ".join(f"(* {c!r} Y_{j})" for j, c in enumerate(row) if c) for row in coeffs.tolist()]
        constraint = " ".join(f"(<= (+ {t}) {b!r})" for t, b in zip(terms, bounds))
        text = declarations(INPUTS, 3) + box_text(lower, upper) + f"(assert (and {constraint}))\n"
        prop = parse_vnnlib(text)
        verdict = check_property(net, (INPUTS,), prop, timeout=60, max_splits=3000, seed=trial)
        best = min_subject_to(net, lower, upper, exact[0], [(exact[1], float(Fraction(repr(bounds[1]))))])
        truth = "unsat" if best > bounds[0] + 1e-7 else "sat" if best < bounds[0] - 1e-7 else "tie"
        outcomes.append((verdict.status, truth, verdict.splits))
        if verdict.status == "unsat":
            assert truth != "sat", (trial, outcomes)
        elif verdict.status == "sat":
            assert truth != "unsat", (trial, outcomes)
            x, y = verdict.counterexample
            assert prop.cases[0].contains(x) and prop.cases[0].violated_by(x, y)
    # A case that only both rows together exclude from a fully split domain stays open: the search
    # proves one row at a time (README, complete verification); most are decided.
    assert sum(status in ("sat", "unsat") for status, _, _ in outcomes) >= 5, outcomes
    assert {"sat", "unsat"} <= {status for status, _, _ in outcomes}, outcomes
