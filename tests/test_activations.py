"""The smooth activations' relaxations and ranges hold in exact arithmetic (mpmath, 40 digits), in
both homes (certify/bounds/activations.py and its C++ twin), on many intervals: tiny, huge, one-sided,
around the inflection points and minima; and the constants they rest on (inflection brackets,
minima, Lipschitz bounds) are what the docstring says."""

import math

import mpmath as mp
import numpy as np
import pytest
import torch

from certify._native import core
from certify.bounds import activations as A
from certify.bounds.native import ACTIVATION_CODES

mp.mp.dps = 40


def exact(name, alpha=1.0):
    """f in mpmath (the real function)."""
    a = mp.mpf(alpha)
    return {
        "sigmoid": lambda x: 1 / (1 + mp.exp(-x)),
        "tanh": mp.tanh,
        "softplus": lambda x: mp.log1p(mp.exp(x)) if x < 0 else x + mp.log1p(mp.exp(-x)),
        "elu": lambda x: x if x > 0 else a * mp.expm1(x),
        "silu": lambda x: x / (1 + mp.exp(-x)),
        "gelu": lambda x: x * mp.ncdf(x),
    }[name]


def exact_derivative(name, alpha=1.0):
    """f' in mpmath, in closed form."""
    a = mp.mpf(alpha)

    def sigmoid(x):
        return 1 / (1 + mp.exp(-x))

    return {
        "sigmoid": lambda x: sigmoid(x) * (1 - sigmoid(x)),
        "tanh": lambda x: 1 / mp.cosh(x) ** 2,
        "softplus": sigmoid,
        "elu": lambda x: mp.mpf(1) if x > 0 else a * mp.exp(x),
        "silu": lambda x: sigmoid(x) * (1 + x * (1 - sigmoid(x))),
        "gelu": lambda x: mp.ncdf(x) + x * mp.npdf(x),
    }[name]


CASES = [("sigmoid", 1.0), ("tanh", 1.0), ("softplus", 1.0), ("elu", 1.0), ("elu", 0.3), ("elu", 2.5),
         ("silu", 1.0), ("gelu", 1.0)]


def intervals(seed: int, count: int):
    """float32 (l, u) pairs: random centres and log-uniform widths, plus the hard ones."""
    rng = np.random.default_rng(seed)
    centres = np.concatenate([rng.normal(0, 3, count), rng.normal(0, 30, count // 4)])
    widths = 10.0 ** rng.uniform(-7, 2.5, len(centres))
    lower, upper = (centres - widths).astype(np.float32), (centres + widths).astype(np.float32)
    special = [0.0, -1.2784645, -0.7517915, 1.4142135, -1.4142135, 2.3993573, -2.3993573, 40.0, -40.0]
    for c in special:
        for w in (0.0, 1e-6, 1e-3, 0.5, 3.0):
            lower = np.append(lower, np.float32(c - w))
            upper = np.append(upper, np.float32(c + w))
    for l, u in [(-1e30, 1e30), (-3e38, -1e38), (1e20, 3e38), (-50, 50), (-1e-30, 1e-30), (-700, -600),
                 (600, 700), (0, 1e-40), (-88, 88)]:
        lower, upper = np.append(lower, np.float32(l)), np.append(upper, np.float32(u))
    return lower, upper


def critical_points(fp, slope, l, u):
    """Points of [l, u] where f'(x) = slope (where f(x) - slope x has its extrema), located from
    sign changes of f' - slope on a grid, then refined by bisection, in mpmath."""
    grid = [l + (u - l) * mp.mpf(k) / 24 for k in range(25)]
    values = [fp(x) - slope for x in grid]
    found = []
    for (x0, v0), (x1, v1) in zip(zip(grid, values), zip(grid[1:], values[1:])):
        if v0 == 0:
            found.append(x0)
        if (v0 < 0) != (v1 < 0):
            a, b = x0, x1
            for _ in range(50):
                m = (a + b) / 2
                if ((fp(m) - slope) < 0) == (v0 < 0):
                    a = m
                else:
                    b = m
            found.append((a + b) / 2)
    return found + grid[::4]


def check_lines(name, alpha, lower, upper, lines, ranges, stride):
    f, fp = exact(name, alpha), exact_derivative(name, alpha)
    a_l, b_l, a_u, b_u = (np.asarray(v, dtype=np.float64) for v in lines)
    lo, hi = (np.asarray(v, dtype=np.float64) for v in ranges)
    checked = 0
    for i in range(0, len(lower), stride):
        l, u = mp.mpf(float(lower[i])), mp.mpf(float(upper[i]))
        if not (abs(l) < 1e7 and abs(u) < 1e7):  # far out f is flat or linear: the ends and the middle
            points = [l, u, (l + u) / 2]
        elif l == u:
            points = [l]
        else:
            points = [l, u] + critical_points(fp, mp.mpf(a_l[i]), l, u) + critical_points(fp, mp.mpf(a_u[i]), l, u)
        for x in points:
            fx = f(x)
            assert mp.mpf(a_l[i]) * x + mp.mpf(b_l[i]) <= fx, (name, alpha, float(l), float(u), float(x), "lower line")
            assert fx <= mp.mpf(a_u[i]) * x + mp.mpf(b_u[i]), (name, alpha, float(l), float(u), float(x), "upper line")
            assert mp.mpf(lo[i]) <= fx <= mp.mpf(hi[i]), (name, alpha, float(l), float(u), float(x), "range")
            checked += 1
    return checked


@pytest.mark.parametrize("name,alpha", CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_python_relaxation_and_range_hold_in_exact_arithmetic(name, alpha):
    lower, upper = intervals(seed=sum(map(ord, name)) + int(alpha * 10), count=50)
    fn = A.smooth(name, alpha)
    lt, ut = torch.from_numpy(lower), torch.from_numpy(upper)
    lines = A.relaxation(fn, lt, ut, sound=True)
    ranges = A.ibp_range(fn, lt, ut, sound=True)
    assert check_lines(name, alpha, lower, upper, [v.numpy() for v in lines], [v.numpy() for v in ranges], 1) > 450


@pytest.mark.parametrize("name,alpha", CASES, ids=[f"{n}-{a}" for n, a in CASES])
def test_cpp_relaxation_and_range_hold_in_exact_arithmetic_and_match_python(name, alpha):
    lower, upper = intervals(seed=7 + sum(map(ord, name)) + int(alpha * 10), count=50)
    a_l, b_l, a_u, b_u, lo, hi = core.activation_lines(ACTIVATION_CODES[name], alpha, 0.0, lower, upper, True)
    assert check_lines(name, alpha, lower, upper, [a_l, b_l, a_u, b_u], [lo, hi], 2) > 200
    # the same algorithm: plain (sound=False) lines agree with the Python home's (libm and Sleef
    # differ in the last bits; a different candidate can win a near-tie, so compare the lines' values)
    fn = A.smooth(name, alpha)
    plain_c = core.activation_lines(ACTIVATION_CODES[name], alpha, 0.0, lower, upper, False)
    plain_p = A.relaxation(fn, torch.from_numpy(lower), torch.from_numpy(upper), sound=False)
    finite = np.isfinite(lower) & np.isfinite(upper) & (np.abs(lower) < 1e6) & (np.abs(upper) < 1e6)
    for a_c, b_c, a_p, b_p in ((plain_c[0], plain_c[1], plain_p[0], plain_p[1]),
                               (plain_c[2], plain_c[3], plain_p[2], plain_p[3])):
        a_p, b_p = a_p.numpy().astype(np.float64), b_p.numpy().astype(np.float64)
        for x in (lower, upper, (lower.astype(np.float64) + upper) / 2):
            line_c, line_p = a_c * x + b_c, a_p * x + b_p
            scale = 1 + np.abs(line_p)
            assert np.all(np.abs(line_c - line_p)[finite] <= 1e-5 * scale[finite])


def test_relaxations_are_tight_where_the_function_is_nearly_linear():
    """Not only valid: on a small interval the two lines are within a second-order gap of f."""
    for name in ("sigmoid", "tanh", "softplus", "silu", "gelu"):
        fn = A.smooth(name)
        centre = torch.linspace(-4, 4, 33)
        lower, upper = centre - 1e-2, centre + 1e-2
        a_l, b_l, a_u, b_u = A.relaxation(fn, lower, upper)
        gap = torch.maximum((a_u - a_l) * lower + (b_u - b_l), (a_u - a_l) * upper + (b_u - b_l))
        assert float(gap.max()) < 1e-4, name


def test_lines_use_the_least_area_candidate_on_a_wide_sigmoid():
    """On [-5, 5] the sigmoid is convex then concave: both lines are tangents or chords, and the gap
    at the midpoint is far below the range's width (1)."""
    fn = A.smooth("sigmoid")
    a_l, b_l, a_u, b_u = A.relaxation(fn, torch.tensor([-5.0]), torch.tensor([5.0]))
    assert float(a_l) > 0 and float(a_u) > 0
    assert float(b_u - b_l) < 0.45


def test_lower_margin_moves_only_the_lower_side():
    fn, shifted = A.smooth("softplus"), A.smooth("softplus", lower_margin=1e-3)
    lower, upper = torch.tensor([-1.0, 19.0, 30.0]), torch.tensor([1.0, 22.0, 31.0])
    plain, moved = A.relaxation(fn, lower, upper), A.relaxation(shifted, lower, upper)
    assert torch.equal(plain[3], moved[3]) and bool((moved[1] <= plain[1] - 9e-4).all())
    assert bool((A.ibp_range(shifted, lower, upper)[0] <= A.ibp_range(fn, lower, upper)[0] - 9e-4).all())


def test_torch_softplus_threshold_stays_inside_the_margin():
    """torch returns x above the threshold: within the margin below the real softplus."""
    x = torch.linspace(19.0, 21.0, 2001, dtype=torch.float64)
    model = torch.nn.functional.softplus(x)  # threshold 20
    real = torch.tensor([float(mp.log1p(mp.exp(mp.mpf(float(v))))) for v in x], dtype=torch.float64)
    margin = math.log1p(math.exp(-20.0))
    assert bool(((real - model) <= margin * (1 + 1e-6) + 1e-12).all()) and bool((model <= real + 1e-12).all())


# ------------------------------------------------------------------ the constants of the table
def test_inflection_brackets_contain_the_inflection_points():
    mp.mp.dps = 40
    silu_root = mp.findroot(lambda x: x * mp.tanh(x / 2) - 2, 2.4)  # silu'' = 0: x tanh(x / 2) = 2
    lo, hi = A.SILU_INFLECTION
    assert lo < silu_root < hi
    lo, hi = A.GELU_INFLECTION
    assert lo < mp.sqrt(2) < hi  # gelu'' = phi(x) (2 - x^2)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softplus", "silu", "gelu", "elu"])
def test_curvature_of_every_piece(name):
    """f'' has the sign each piece claims, at 40 points of each (exact, mpmath)."""
    f = exact(name)
    fn = A.smooth(name)
    for start, end, curvature in fn.pieces:
        if curvature == A.UNKNOWN:
            continue
        lo, hi = max(start, -30.0), min(end, 30.0)
        for k in range(41):
            x = mp.mpf(lo) + (mp.mpf(hi) - mp.mpf(lo)) * k / 40
            if x == 0 and name == "elu":
                continue  # the kink: convex and linear pieces meet
            second = mp.diff(f, x, 2)
            if curvature == A.CONVEX:
                assert second >= -1e-30, (name, float(x))
            elif curvature == A.CONCAVE:
                assert second <= 1e-30, (name, float(x))
            else:
                assert abs(second) <= 1e-30, (name, float(x))


@pytest.mark.parametrize("name", ["silu", "gelu"])
def test_minimum_is_bracketed_and_bounded_below(name):
    f, fp = exact(name), exact_derivative(name)
    x_lo, x_hi, f_min = A.smooth(name).minimum
    root = mp.findroot(fp, (x_lo + x_hi) / 2)
    assert x_lo < root < x_hi and f_min <= f(root)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "softplus", "silu", "gelu"])
def test_lipschitz_constant_bounds_the_derivative(name):
    fp = exact_derivative(name)
    worst = max(abs(fp(mp.mpf(k) / 20)) for k in range(-400, 401))
    assert worst <= A.smooth(name).lipschitz


def test_unknown_activation_and_bad_elu_are_refused():
    with pytest.raises(ValueError, match="no smooth activation"):
        A.smooth("mish")
    with pytest.raises(ValueError, match="alpha"):
        A.smooth("elu", alpha=-1.0)
