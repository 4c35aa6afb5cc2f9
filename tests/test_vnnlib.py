"""VNN-LIB: the parser against hand-written files (exact numbers, or/and structure, errors naming the
line), the checker on networks whose answer is worked out by hand, and soundness on random networks
(an "unsat" survives dense sampling and PGD; a "sat" comes with a counterexample that holds)."""

import copy
import gzip
import math
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

import certify
from certify.formats.vnnlib import (
    Case,
    Constraint,
    Property,
    Verdict,
    check_property,
    format_result,
    parse_vnnlib,
    read_vnnlib,
)
from certify.verify import property_check

HEADER = "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n(declare-const Y_1 Real)\n"
BOX = "(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert (>= X_1 0))\n(assert (<= X_1 2))\n"


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py says why


# ============================================================================ networks
def set_params(layer: nn.Linear, weight, bias) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer.bias.copy_(torch.tensor(bias, dtype=torch.float32))


def bump_net(inputs: int = 1) -> nn.Module:
    """f(x) = relu(x_0) - 2 relu(x_0 - 1/2): 0 for x_0 <= 0, x_0 on [0, 1/2], 1 - x_0 on [1/2, 1].

    On x_0 in [-1, 1] the minimum is 0 (at x_0 <= 0 and x_0 = 1). CROWN's lower bound is loose:
    relu(x_0) has l = -1, u = 1, so its lower line has slope 0 (u > -l fails); relu(x_0 - 1/2)
    has l = -3/2, u = 1/2 and the upper line (z + 3/2) / 4, entering with weight -2. Together
    f >= 0 - (x_0 + 1) / 2 >= -1 at x_0 = 1: "f <= -1/4" is true but not proven on [-1, 1].
    Split at x_0 = 0: on [-1, 0] both neurons are off, f = 0; on [0, 1] relu(x_0) = x_0 and the
    upper line of relu(x_0 - 1/2) over [-1/2, 1/2] is x_0 / 2, so f >= x_0 - x_0 = 0. Proven.
    """
    net = nn.Sequential(nn.Linear(inputs, 2), nn.ReLU(), nn.Linear(2, 1))
    first = [[1.0] + [0.0] * (inputs - 1), [1.0] + [0.0] * (inputs - 1)]
    set_params(net[0], first, [0.0, -0.5])
    set_params(net[2], [[1.0, -2.0]], [0.0])
    return net.eval()


def relu_sum_net() -> nn.Module:
    """h = relu(x) on two inputs; y_0 = h_0 + h_1 + 1, y_1 = h_0 + h_1 / 2."""
    net = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    set_params(net[0], [[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    set_params(net[2], [[1.0, 1.0], [1.0, 0.5]], [1.0, 0.0])
    return net.eval()


def constant_net(value: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(1, 1))
    set_params(net[0], [[0.0]], [value])
    return net.eval()


def one_input(bounds: str, output: str) -> str:
    return f"(declare-const X_0 Real)\n(declare-const Y_0 Real)\n{bounds}\n(assert {output})\n"


# ============================================================================ parser
def test_parse_box_comments_and_output_constraint():
    text = (
        "; a property\n"
        + HEADER
        + "(assert (>= X_0 -1)) ; inline comment\n(assert (<= X_0 1))\n"
        + "(assert (>= X_1 0))\n(assert (<= X_1 2))\n(assert (<= Y_0 Y_1))\n"
    )
    prop = parse_vnnlib(text)
    assert (prop.num_inputs, prop.num_outputs) == (2, 2)
    (case,) = prop.cases
    np.testing.assert_array_equal(case.lower, [-1.0, 0.0])
    np.testing.assert_array_equal(case.upper, [1.0, 2.0])
    assert case.lower.dtype == np.float64
    # Y_0 - Y_1 <= 0
    assert case.constraints == (Constraint((Fraction(1), Fraction(-1)), Fraction(0)),)
    np.testing.assert_array_equal(case.coeffs, [[1.0, -1.0]])
    np.testing.assert_array_equal(case.bounds, [0.0])


def test_numbers_are_exact_fractions_of_their_decimal_text():
    text = (
        "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const X_2 Real)\n(declare-const Y_0 Real)\n"
        "(assert (>= X_0 0.1))\n(assert (<= X_0 1.5e-1))\n"
        "(assert (>= X_1 (- 0.5)))\n(assert (<= X_1 -2.5E-1))\n"
        "(assert (>= X_2 -3))\n(assert (<= X_2 .5))\n"
        "(assert (<= Y_0 1e2))\n"
    )
    (case,) = parse_vnnlib(text).cases
    assert case.exact_lower == (Fraction(1, 10), Fraction(-1, 2), Fraction(-3))
    assert case.exact_upper == (Fraction(3, 20), Fraction(-1, 4), Fraction(1, 2))
    assert case.constraints[0].bound == Fraction(100)
    # 0.1 and 0.15 are not floats: the float64 box is the tightest one enclosing the exact box.
    assert Fraction(case.lower[0]) < Fraction(1, 10) < Fraction(math.nextafter(case.lower[0], 1))
    assert Fraction(math.nextafter(case.upper[0], 0)) < Fraction(3, 20) < Fraction(case.upper[0])
    assert case.lower[0] != 0.1  # the nearest float, 0.1000000000000000055, lies above 1/10
    np.testing.assert_array_equal(case.lower[1:], [-0.5, -3.0])


def test_linear_terms():
    text = HEADER.replace("(declare-const Y_1 Real)\n", "(declare-const Y_1 Real)\n(declare-const Y_2 Real)\n") + BOX + (
        "(assert (<= (+ Y_0 (* -1 Y_1)) 0.5))\n"  # Y_0 - Y_1 <= 1/2
        "(assert (>= (* 2 Y_0) 1))\n"  # -2 Y_0 <= -1
        "(assert (<= (- Y_0 Y_1 Y_2) (- 3)))\n"  # Y_0 - Y_1 - Y_2 <= -3
        "(assert (<= (* Y_2 (/ 1 3) 6) (+ Y_0 1)))\n"  # -Y_0 + 2 Y_2 <= 1
        "(assert (<= (+ Y_0 Y_0) (+ Y_0 Y_1 0.25)))\n"  # Y_0 - Y_1 <= 1/4 (terms collected)
    )
    (case,) = parse_vnnlib(text).cases
    f = Fraction
    assert [(k.coeffs, k.bound) for k in case.constraints] == [
        ((f(1), f(-1), f(0)), f(1, 2)),
        ((f(-2), f(0), f(0)), f(-1)),
        ((f(1), f(-1), f(-1)), f(-3)),
        ((f(-1), f(0), f(2)), f(1)),
        ((f(1), f(-1), f(0)), f(1, 4)),
    ]


def test_input_bounds_intersect_and_scale():
    text = (
        HEADER
        + BOX
        + "(assert (<= X_0 0.5))\n(assert (>= (* 4 X_0) -1))\n(assert (<= (* -1 X_1) -1))\n"  # X_0 in [-1/4, 1/2]
        + "(assert (= X_1 1.5))\n(assert (<= 0 1))\n"  # X_1 = 3/2; a true constant comparison drops out
    )
    (case,) = parse_vnnlib(text).cases
    assert case.exact_lower == (Fraction(-1, 4), Fraction(3, 2))
    assert case.exact_upper == (Fraction(1, 2), Fraction(3, 2))
    assert case.constraints == ()


def test_output_disjunction_gives_one_case_per_conjunction():
    text = (
        HEADER.replace("(declare-const Y_1 Real)\n", "(declare-const Y_1 Real)\n(declare-const Y_2 Real)\n")
        + BOX
        + "(assert (or (and (<= Y_0 Y_1) (<= Y_0 Y_2))\n            (and (>= Y_1 0.25))\n"
        + "            (and (<= 2 1) (<= Y_2 0))))\n"  # a false constant removes the third disjunct
    )
    prop = parse_vnnlib(text)
    assert len(prop.cases) == 2 and len(prop.boxes) == 1
    first, second = prop.cases
    f = Fraction
    assert first.constraints == (Constraint((f(1), f(-1), f(0)), f(0)), Constraint((f(1), f(0), f(-1)), f(0)))
    assert second.constraints == (Constraint((f(0), f(-1), f(0)), f(-1, 4)),)


def test_input_disjunction_and_mixed_disjuncts():
    boxes = (
        "(assert (or (and (>= X_0 -1) (<= X_0 0) (>= X_1 0) (<= X_1 1))\n"
        "            (and (>= X_0 0.5) (<= X_0 1) (>= X_1 -1) (<= X_1 0))))\n"
    )
    prop = parse_vnnlib(HEADER + boxes + "(assert (or (<= Y_0 0) (>= Y_1 1)))\n")
    # every box with every output disjunct: (box 1 or box 2) and (c1 or c2) = 4 cases
    assert len(prop.cases) == 4 and len(prop.boxes) == 2
    np.testing.assert_array_equal(prop.boxes[1][0], [0.5, -1.0])
    assert [case.exact_lower[0] for case in prop.cases] == [-1, -1, Fraction(1, 2), Fraction(1, 2)]
    assert [case.constraints[0].bound for case in prop.cases] == [0, -1, 0, -1]

    mixed = (
        "(assert (or (and (>= X_0 -1) (<= X_0 0) (>= X_1 0) (<= X_1 1) (<= Y_0 Y_1))\n"
        "            (and (>= X_0 0) (<= X_0 1) (>= X_1 0) (<= X_1 1) (>= Y_0 3))))\n"
    )
    prop = parse_vnnlib(HEADER + mixed)
    assert len(prop.cases) == 2
    assert prop.cases[0].exact_upper[0] == 0 and prop.cases[0].constraints[0].coeffs == (1, -1)
    assert prop.cases[1].exact_lower[0] == 0 and prop.cases[1].constraints[0] == Constraint((-1, 0), -3)


def test_sizes_from_arguments_and_dense_coefficients():
    text = one_input("(assert (>= X_0 0))\n(assert (<= X_0 1))", "(<= Y_0 0)")
    prop = parse_vnnlib(text, num_inputs=1, num_outputs=3)
    assert prop.num_outputs == 3 and prop.cases[0].constraints[0].coeffs == (1, 0, 0)


def test_read_vnnlib_plain_and_gzip(tmp_path):
    text = one_input("(assert (>= X_0 0))\n(assert (<= X_0 1))", "(<= Y_0 0.1)")
    (tmp_path / "p.vnnlib").write_text(text)
    (tmp_path / "p.vnnlib.gz").write_bytes(gzip.compress(text.encode()))
    for name in ("p.vnnlib", "p.vnnlib.gz"):
        assert read_vnnlib(tmp_path / name).cases[0].constraints[0].bound == Fraction(1, 10)
    (tmp_path / "bad.vnnlib").write_text(text + "(assert (<= Y_0 1)\n")
    with pytest.raises(ValueError, match=r"bad\.vnnlib: line 6: unbalanced"):
        read_vnnlib(tmp_path / "bad.vnnlib")


def _declared_box(extra: str) -> str:
    return HEADER + BOX + extra


MALFORMED = [
    # (text, kwargs, line, a fragment of the message)
    (HEADER + BOX + "(assert (<= Y_0 Y_1)\n", {}, 9, "'(' is never closed: (assert (<= Y_0 Y_1)"),
    (HEADER + BOX + "(assert (<= Y_0 Y_1)))\n", {}, 9, "')' without a matching '('"),
    (HEADER + BOX + "(assert (foo Y_0 1))\n", {}, 9, "unknown operator 'foo': (foo Y_0 1)"),
    (HEADER + BOX + "(assert (<= (sin Y_0) 1))\n", {}, 9, "unknown operator 'sin'"),
    (HEADER + BOX + "\n(assert (<= Y_3 1))\n", {}, 10, "undeclared variable Y_3"),
    (HEADER + BOX + "(assert (<= Z 1))\n", {}, 9, "unknown symbol 'Z'"),
    (HEADER + BOX, {"num_inputs": 1}, 2, "X_1 is out of range: the network has 1 inputs"),
    (HEADER + BOX, {"num_outputs": 1}, 4, "Y_1 is out of range: the network has 1 outputs"),
    (HEADER + BOX.replace("(assert (>= X_1 0))\n", ""), {}, 2, "X_1 has no lower bound"),
    (HEADER + BOX.replace("(assert (<= X_0 1))\n", ""), {}, 1, "X_0 has no upper bound"),
    (HEADER + BOX + "(assert (<= X_0 -1.5))\n", {}, 9, "empty input box: X_0 >= -1 and X_0 <= -1.5"),
    (HEADER + BOX + "(assert (<= (* X_0 X_1) 1))\n", {}, 9, "non-linear term"),
    (HEADER + BOX + "(assert (<= (* Y_0 Y_1) 1))\n", {}, 9, "non-linear term: a product of variables"),
    (HEADER + BOX + "(assert (<= (/ 1 Y_1) 1))\n", {}, 9, "non-linear term: division by a variable"),
    (HEADER + BOX + "(assert (<= X_0 Y_0))\n", {}, 9, "mixes input and output variables"),
    (HEADER + BOX + "(assert (<= (+ X_0 X_1) 1))\n", {}, 9, "not an input box"),
    (HEADER + BOX + "(assert (< Y_0 1))\n", {}, 9, "unsupported operator '<'"),
    (HEADER + BOX + "(check-sat)\n(maximize Y_0)\n", {}, 10, "unknown command 'maximize'"),
    (HEADER + "(declare-const X_2 Int)\n", {}, 5, "must have sort Real"),
    (HEADER + "(declare-const X_0 Real)\n", {}, 5, "declared twice (first on line 1)"),
    (HEADER + "(declare-const W_0 Real)\n", {}, 5, "unknown variable name 'W_0'"),
    ("(declare-const Y_0 Real)\n(assert (<= Y_0 1))\n", {}, 3, "declares no input variable"),
    (one_input("(assert (>= X_0 0))\n(assert (<= X_0 1))", "(<= Y_0 (/ 1 0))"), {}, 5, "division by zero"),
]


@pytest.mark.parametrize(("text", "kwargs", "line", "fragment"), MALFORMED)
def test_malformed_files_name_the_line_and_the_text(text, kwargs, line, fragment):
    with pytest.raises(ValueError) as info:
        parse_vnnlib(text, **kwargs)
    message = str(info.value)
    assert message.startswith(f"line {line}: "), message
    assert fragment in message, message


def test_missing_bound_in_one_input_disjunct_names_that_case():
    boxes = (
        "(assert (or (and (>= X_0 -1) (<= X_0 0) (>= X_1 0) (<= X_1 1))\n"
        "            (and (>= X_0 0.5) (>= X_1 -1) (<= X_1 0))))\n"
    )
    with pytest.raises(ValueError, match=r"line 1: input variable X_0 has no upper bound \(in the case whose "
                                         r"first constraint is on line 6\)"):
        parse_vnnlib(HEADER + boxes)


# ============================================================================ checker
def box_property(lower, upper, constraints) -> Property:
    """A one-case property from float bounds and (coeffs, bound) pairs."""
    cons = tuple(Constraint(tuple(Fraction(c) for c in a), Fraction(b)) for a, b in constraints)
    num_outputs = len(constraints[0][0]) if constraints else 1
    return Property((Case(np.array(lower, float), np.array(upper, float), cons),), len(lower), num_outputs)


def test_crown_proves_without_splitting():
    """On [-1, 1] x [0, 2]: y_0 - y_1 = 1 + h_1 / 2 >= 1, so "Y_0 <= Y_1" is unsafe nowhere. CROWN
    with the spec row (1, -1) folded in sees the coefficient 1/2 >= 0 on h_1 >= 0: bound 1."""
    prop = parse_vnnlib(HEADER + BOX + "(assert (<= Y_0 Y_1))\n")
    verdict = check_property(relu_sum_net(), (2,), prop)
    assert verdict.status == "unsat" and verdict.counterexample is None
    assert verdict.splits == 0 and verdict.seconds > 0
    assert format_result(verdict) == "unsat\n"


def test_attack_finds_a_counterexample_that_the_model_confirms():
    """y_0 = relu(x_0) + relu(x_1) + 1 >= 3.9 needs x_0 + x_1 >= 2.9 with x_0 <= 1, x_1 <= 2:
    only a corner region of the box, away from the centre where PGD starts."""
    net = relu_sum_net()
    prop = parse_vnnlib(HEADER + BOX + "(assert (>= Y_0 3.9))\n")
    verdict = check_property(net, (2,), prop)
    assert verdict.status == "sat"
    x, y = verdict.counterexample
    assert x.dtype == np.float32 and x.shape == (2,) and y.shape == (2,)
    assert -1 <= x[0] <= 1 and 0 <= x[1] <= 2 and x.sum() >= 2.9 - 1e-6
    with torch.no_grad():
        again = net(torch.from_numpy(x).unsqueeze(0)).numpy().reshape(-1)
    np.testing.assert_array_equal(again, y)
    assert Fraction(float(y[0])) >= Fraction(39, 10)
    assert prop.cases[0].violated_by(x, y)


def test_input_splitting_proves_what_crown_alone_cannot():
    """bump_net (worked out in its docstring): "f(x) <= -1/4" on [-1, 1] is unsafe nowhere."""
    net = bump_net()
    prop = parse_vnnlib(one_input("(assert (>= X_0 -1))\n(assert (<= X_0 1))", "(<= Y_0 -0.25)"))
    whole = certify.BoundedModel(net, (1,)).spec_bounds(torch.tensor([[-1.0]]), torch.tensor([[1.0]]),
                                                         torch.tensor([[1.0]]), "crown")
    assert whole.item() == pytest.approx(-1.0, abs=1e-5)  # CROWN alone: f >= -1, not > -1/4
    verdict = check_property(net, (1,), prop)
    assert verdict.status == "unsat" and verdict.splits >= 1
    # The split is needed: without it the answer stays open.
    assert check_property(net, (1,), prop, max_splits=0).status == "unknown"
    assert check_property(net, (1,), prop, max_depth=0).status == "unknown"


def test_coefficients_that_are_not_float32_use_the_exact_residual():
    """0.1 Y_0 <= -0.025 is f <= -1/4 again; 1/10 has no float32 form, so its rounding error is
    bounded through per-output bounds in Fractions."""
    prop = parse_vnnlib(one_input("(assert (>= X_0 -1))\n(assert (<= X_0 1))", "(<= (* 0.1 Y_0) -0.025)"))
    assert prop.cases[0].constraints[0].coeffs == (Fraction(1, 10),)
    assert check_property(bump_net(), (1,), prop).status == "unsat"
    # and the other direction: 0.1 f >= 0.025 holds at x = 0.25 .. 0.75, so sat
    prop = parse_vnnlib(one_input("(assert (>= X_0 -1))\n(assert (<= X_0 1))", "(>= (* 0.1 Y_0) 0.025)"))
    verdict = check_property(bump_net(), (1,), prop)
    assert verdict.status == "sat" and 0.25 <= verdict.counterexample[0][0] <= 0.75


def test_proof_compares_bounds_with_the_exact_bound():
    """A lower bound L on Y_0 settles "Y_0 <= b" iff L > b exactly. b = 1/10: float64(0.1) is
    0.1000000000000000055 > 1/10, so L = 0.1 settles it and the float just below does not.
    b = 1/2 is a float: L = 0.5 does not settle it, the next float does."""
    tenth = property_check._Prepared.make(Case([0.0], [1.0], (Constraint((1,), Fraction(1, 10)),)), 1)
    assert tenth.infeasible(np.array([[0.1], [math.nextafter(0.1, 0)]])).tolist() == [True, False]
    half = property_check._Prepared.make(Case([0.0], [1.0], (Constraint((1,), Fraction(1, 2)),)), 1)
    assert half.infeasible(np.array([[0.5], [math.nextafter(0.5, 1)]])).tolist() == [False, True]


def test_residual_of_a_coefficient_is_bounded_by_interval_arithmetic():
    """0.1 Y_0 <= 0 is scaled by 16 (max |coefficient| into [1, 2)) to 1.6 Y_0 <= 0 and split as
    hi = float32(1.6) = 1.60000002384185791015625 plus the exact residual r = 8/5 - hi < 0.
    With L <= hi Y_0 and Y_0 in [-1e6, 1e6]: r Y_0 >= r 1e6 (r < 0 takes the upper end), so the
    case is settled iff L + r 1e6 > 0, i.e. L > 0.0238..."""
    prepared = property_check._Prepared.make(Case([0.0], [1.0], (Constraint((Fraction(1, 10),), 0),)), 1)
    hi = Fraction(float(np.float32(1.6)))
    r = Fraction(8, 5) - hi
    assert r < 0 and prepared.residual == [(r,)]
    assert prepared.spec.tolist() == [[float(hi)], [1.0], [-1.0]]  # the row, then Y_0 and -Y_0
    edge = float(-r * 10**6)
    lower = np.array([[edge * 0.99, -1e6, -1e6], [edge * 1.01, -1e6, -1e6], [edge * 1.01, -1e6, -math.inf]])
    assert prepared.infeasible(lower).tolist() == [False, True, False]


def test_counterexamples_are_checked_exactly_not_in_float64():
    """f = v = float32(0.1) = 0.100000001490116119384765625 for every x. "Y_0 >= d" with d a hair
    above v rounds to the float64 v, so a float64 check would accept x; exactly, it fails."""
    v = float(np.float32(0.1))
    exact = str(Decimal(v))
    above = exact + "0000000000000000001"
    assert float(above) == v and Fraction(above) > Fraction(v)
    bounds = "(assert (>= X_0 -1))\n(assert (<= X_0 1))"
    net = constant_net(v)
    assert check_property(net, (1,), parse_vnnlib(one_input(bounds, f"(>= Y_0 {exact})"))).status == "sat"
    verdict = check_property(net, (1,), parse_vnnlib(one_input(bounds, f"(>= Y_0 {above})")), max_splits=8)
    assert verdict.status in ("unsat", "unknown")
    # 1/10 < v: "Y_0 <= 0.1" holds nowhere; "Y_0 <= v" (v written out exactly) holds everywhere.
    verdict = check_property(net, (1,), parse_vnnlib(one_input(bounds, "(<= Y_0 0.1)")), max_splits=8)
    assert verdict.status in ("unsat", "unknown")
    assert check_property(net, (1,), parse_vnnlib(one_input(bounds, f"(<= Y_0 {exact})"))).status == "sat"


def test_input_disjunction_counterexample_lies_in_the_box_that_has_one():
    """bump_net on [-1, -0.5] or [0.2, 0.6]: f >= 0.3 only in the second box (f = x there)."""
    boxes = "(assert (or (and (>= X_0 -1) (<= X_0 -0.5)) (and (>= X_0 0.2) (<= X_0 0.6))))"
    verdict = check_property(bump_net(), (1,), parse_vnnlib(one_input(boxes, "(>= Y_0 0.3)")))
    assert verdict.status == "sat" and 0.3 <= verdict.counterexample[0][0] <= 0.6
    # f >= 0.7 nowhere: the first box has f = 0, the second f <= 0.5
    assert check_property(bump_net(), (1,), parse_vnnlib(one_input(boxes, "(>= Y_0 0.7)"))).status == "unsat"


def test_two_dimensional_box_with_tiny_budgets():
    """bump_net on two inputs (the second unused), box [-1, 1]^2: needs a split of x_0."""
    text = (
        "(declare-const X_0 Real)\n(declare-const X_1 Real)\n(declare-const Y_0 Real)\n"
        "(assert (>= X_0 -1))\n(assert (<= X_0 1))\n(assert (>= X_1 -1))\n(assert (<= X_1 1))\n"
        "(assert (<= Y_0 -0.25))\n"
    )
    net, prop = bump_net(inputs=2), parse_vnnlib(text)
    timed_out = check_property(net, (2,), prop, timeout=1e-9)
    assert timed_out.status == "timeout" and timed_out.counterexample is None
    assert format_result(timed_out) == "timeout\n"
    unknown = check_property(net, (2,), prop, max_splits=0)
    assert unknown.status == "unknown" and format_result(unknown) == "unknown\n"
    assert check_property(net, (2,), prop, timeout=60.0).status == "unsat"
    # "f <= -1e-30" is unsafe nowhere, but where f = 0 exactly (x_0 <= 0) sound bounds keep a
    # rounding allowance below 0: never proven, so branch and bound runs until the clock stops it.
    never = parse_vnnlib(text.replace("-0.25", "-1e-30"))
    verdict = check_property(net, (2,), never, timeout=0.3, max_splits=10**9, max_depth=10**9)
    assert verdict.status == "timeout" and verdict.splits > 0 and 0.3 <= verdict.seconds < 10


def test_multidimensional_input_is_flattened_row_major():
    """f(x) = 1 x[0,0,0] + 2 x[0,0,1] + 3 x[0,1,0] + 4 x[0,1,1] on [0, 1]^4: f >= 9.5 needs
    x[0,1,1] = X_3 (weight 4) near 1: 6 + 4 X_3 >= 9.5 at best, so X_3 >= 0.875."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1))
    set_params(net[1], [[1.0, 2.0, 3.0, 4.0]], [0.0])
    net.eval()
    bounds = "".join(f"(declare-const X_{i} Real)\n(assert (>= X_{i} 0))\n(assert (<= X_{i} 1))\n" for i in range(4))
    prop = parse_vnnlib(bounds + "(declare-const Y_0 Real)\n(assert (>= Y_0 9.5))\n")
    verdict = check_property(net, (1, 2, 2), prop)
    assert verdict.status == "sat"
    x, y = verdict.counterexample
    assert x.shape == (1, 2, 2) and x[0, 1, 1] >= 0.875
    lines = format_result(verdict).splitlines()
    assert lines[0] == "sat" and len(lines) == 1 + 4 + 1
    assert lines[1].startswith("((X_0 ") and lines[-1].startswith("(Y_0 ") and lines[-1].endswith("))")
    values = [float(line.strip("()").split()[1]) for line in lines[1:]]
    assert values[:4] == x.reshape(-1).tolist() and values[4] == float(y[0])  # repr round-trips exactly


def test_format_result_by_hand():
    x, y = np.array([0.1, -2.0], dtype=np.float32), np.array([0.5], dtype=np.float32)
    text = format_result(Verdict("sat", (x, y), 0.0))
    assert text == "sat\n((X_0 0.10000000149011612)\n(X_1 -2.0)\n(Y_0 0.5))\n"
    with pytest.raises(ValueError, match="status"):
        format_result(Verdict("maybe", None, 0.0))


def test_argument_errors():
    prop = parse_vnnlib(HEADER + BOX + "(assert (<= Y_0 Y_1))\n")
    with pytest.raises(ValueError, match="input_shape"):
        check_property(relu_sum_net(), (3,), prop)
    with pytest.raises(ValueError, match="num_outputs=1"):
        check_property(bump_net(2), (2,), prop)
    with pytest.raises(ValueError, match="method"):
        check_property(relu_sum_net(), (2,), prop, method="exact")
    with pytest.raises(ValueError, match="timeout"):
        check_property(relu_sum_net(), (2,), prop, timeout=0.0)


def test_no_cases_is_unsat_and_no_constraints_is_sat():
    bounds = "(assert (>= X_0 -1))\n(assert (<= X_0 1))"
    empty = parse_vnnlib(one_input(bounds, "(<= 1 0)"))  # the unsafe region is empty
    assert empty.cases == () and check_property(bump_net(), (1,), empty).status == "unsat"
    everything = parse_vnnlib(one_input(bounds, "(<= 0 1)"))  # every input is unsafe
    verdict = check_property(bump_net(), (1,), everything)
    assert verdict.status == "sat" and -1 <= verdict.counterexample[0][0] <= 1


# ============================================================================ soundness
def sample_box(lower, upper, count, generator):
    u = torch.rand(count, len(lower), generator=generator, dtype=torch.float64)
    u[: count // 4] = torch.randint(0, 2, (count // 4, len(lower)), generator=generator).double()  # vertices
    return lower + u * (upper - lower)


def worst_points(net64, lower, upper, coeffs, bounds, generator):
    """Points of the box (samples, vertices, PGD) with the smallest max_i (a_i @ f(x) - b_i): the
    case is violated at x iff that is <= 0. Evaluated in float64, a stand-in for exact arithmetic."""
    points = sample_box(lower, upper, 20000, generator)

    def slack(x):
        return (net64(x) @ coeffs.T - bounds).amax(dim=1)

    starts = points[slack(points).argsort()[:32]].clone()
    step = (upper - lower) / 20
    for _ in range(40):
        starts.requires_grad_(True)
        (grad,) = torch.autograd.grad(slack(starts).sum(), starts)
        starts = torch.minimum(torch.maximum(starts.detach() - step * grad.sign(), lower), upper)
        step = step * 0.9
    with torch.no_grad():
        return min(slack(points).min().item(), slack(starts).min().item())


def test_random_networks_unsat_survives_search_and_sat_holds():
    generator = torch.Generator().manual_seed(1)
    outcomes = {"unsat": 0, "sat": 0, "unknown": 0}
    for trial in range(20):
        torch.manual_seed(100 + trial)
        net = nn.Sequential(nn.Linear(3, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 3)).eval()
        net64 = copy.deepcopy(net).double()
        centre = torch.rand(3, generator=generator, dtype=torch.float64) * 2 - 1
        radius = 0.05 + 0.45 * torch.rand(3, generator=generator, dtype=torch.float64)
        lower, upper = centre - radius, centre + radius
        # one or two constraints with coefficients in {-1, 0, 1} (and 0.1-steps in odd trials),
        # bounds placed around the sampled range so that both answers occur
        rows = 1 + trial % 2
        coeffs = torch.randint(-1, 2, (rows, 3), generator=generator).double()
        coeffs[:, trial % 3] = 1.0
        if trial % 2:
            coeffs = coeffs * 0.1
        with torch.no_grad():
            values = net64(sample_box(lower, upper, 2000, generator)) @ coeffs.T
        q = torch.rand(rows, generator=generator, dtype=torch.float64) * 0.16 - 0.06
        bounds = values.min(0).values + q * (values.max(0).values - values.min(0).values)
        bounds = torch.tensor([round(b, 3) for b in bounds.tolist()], dtype=torch.float64)  # decimal text
        constraints = [([str(round(c, 1)) for c in a], str(b)) for a, b in zip(coeffs.tolist(), bounds.tolist())]
        prop = box_property(lower.numpy(), upper.numpy(), constraints)
        exact_coeffs = torch.tensor([[float(Fraction(c)) for c in a] for a, _ in constraints], dtype=torch.float64)
        # As shipped (attack first), and with the first attack cut to the box centre, so that the
        # bounds must answer instances the attack would have settled.
        full = check_property(net, (3,), prop, max_splits=400, seed=trial)
        bounds_first = check_property(net, (3,), prop, max_splits=400, seed=trial, attack_restarts=1, attack_steps=0)
        outcomes[full.status] += 1
        for verdict in (full, bounds_first):
            if verdict.status == "unsat":
                assert worst_points(net64, lower, upper, exact_coeffs, bounds, generator) > 0, trial
            elif verdict.status == "sat":
                x, y = verdict.counterexample
                with torch.no_grad():
                    np.testing.assert_array_equal(net(torch.from_numpy(x).unsqueeze(0)).numpy().reshape(-1), y)
                assert prop.cases[0].violated_by(x, y)
                assert ((lower.numpy() <= x) & (x <= upper.numpy())).all()
    assert outcomes["unsat"] >= 4 and outcomes["sat"] >= 4, outcomes
