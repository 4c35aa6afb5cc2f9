"""Smooth activations for the bound engines: interval enclosures and linear relaxations that hold
in exact arithmetic (the plain-PyTorch home; csrc/bounds/activations.cpp is its C++ twin, the
same algorithm step for step).

The table ACTIVATIONS holds, per function f: f and f' in float64, f's curvature on pieces of the
real line (convex, concave, linear, or unknown on a tiny bracket around an inflection point that no
double holds exactly), a bound on |f'|, and its shape for intervals (increasing, or decreasing then
increasing around a known minimum). Piecewise-linear activations (LeakyReLU, HardTanh, ReLU6,
clamp, hard sigmoid, max) are not here: graph.py writes them with ReLUs, exactly and branchably.

Relaxation (Zhang et al. 2018, CROWN; auto_LiRPA's rules choose among the same lines). For one
neuron with input in [l, u], any slope a gives two valid lines a x + b_l <= f(x) <= a x + b_u with
    b_l = min over [l, u] of g(x),  b_u = max over [l, u] of g(x),   g(x) = f(x) - a x,
so the slope is a free heuristic (optimise unsoundly) and the intercepts carry the soundness:
  - on a piece where f (so g) is convex, max g is at the piece's ends, and min g >= the tangent
    bound g(x0) + g'(x0) (x - x0) at its worst end, for any x0 in the piece (x0 is placed near
    g' = 0 by bisection, so the bound is nearly tight); concave pieces the other way round;
  - on a linear piece both extremes are at the ends; on an unknown bracket [p, q] (width 1e-4),
    g(mid) -+ (L + |a|) (q - p) / 2 with L >= |f'| (the mean value theorem).
The slope of each line is the candidate among the chord, f'(l), f'(m) and f'(u) (m the midpoint)
whose line is tightest at m, i.e. encloses the least area with f: the chord on convex/concave
sides and tangents elsewhere, as in CROWN.

Floating point: f and f' are evaluated in float64 (libm / Sleef: within a few ulps; the
formulas below avoid cancellation: sigmoid'(x) = s(x) s(-x), tanh' = 1 / cosh^2, Phi(x) =
erfc(-x / sqrt 2) / 2). Every float64 quantity is taken to be within REL = 2^-36 (over 10^4
ulps, far beyond libm's error and the few roundings of each formula) of the real one, relative to
the size of the terms it was computed from, plus ABS = 2^-1000 for underflow. Each intercept is
moved out by 8 REL times a bound on every term that enters it (|f| at the points used, |a x|, and
(|f'| + |a|)(u - l)), then rounded outward to float32; the slope is used as rounded. IBP encloses
f's range from the end values (and the known minimum), moved out the same way.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from certify.bounds.rounding import to_f32_down, to_f32_up

__all__ = ["NAMES", "Smooth", "smooth", "ibp_range", "relaxation"]

REL = 2.0**-36
ABS = 2.0**-1000
BISECTION_STEPS = 50  # for x0: only tightness depends on it
X0_RANGE = 64.0  # x0 is searched within [-64, 64]: beyond, every f' here is at its asymptote

CONVEX, CONCAVE, LINEAR, UNKNOWN = 1, -1, 0, 2
INF = math.inf


def _sigmoid(x):
    return torch.sigmoid(x)


def _d_sigmoid(x):
    return torch.sigmoid(x) * torch.sigmoid(-x)


def _softplus(x):  # max(x, 0) + log(1 + e^-|x|): no overflow, no cancellation
    return x.clamp(min=0) + torch.log1p(torch.exp(-x.abs()))


def _d_tanh(x):
    return 1 / torch.cosh(x) ** 2


def _elu(alpha):
    return lambda x: torch.where(x > 0, x, alpha * torch.expm1(x.clamp(max=0)))


def _d_elu(alpha):
    return lambda x: torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x.clamp(max=0)))


def _silu(x):
    return x * torch.sigmoid(x)


def _d_silu(x):  # s(x) (1 + x (1 - s(x))), with 1 - s(x) = s(-x)
    return torch.sigmoid(x) * (1 + x * torch.sigmoid(-x))


def _phi_cdf(x):
    return 0.5 * torch.special.erfc(-x * math.sqrt(0.5))


def _gelu(x):
    return x * _phi_cdf(x)


def _d_gelu(x):
    return _phi_cdf(x) + x * torch.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))


# Inflection points that no double holds: brackets checked with mpmath in tests/test_activations.py.
SILU_INFLECTION = (2.39935, 2.39936)  # x tanh(x / 2) = 2 at 2.3993572805...
GELU_INFLECTION = (1.41421, 1.41422)  # sqrt(2)


def _symmetric_pieces(outer: int, inner: int, bracket):
    lo, hi = bracket
    return ((-INF, -hi, outer), (-hi, -lo, UNKNOWN), (-lo, lo, inner), (lo, hi, UNKNOWN), (hi, INF, outer))


@dataclass(frozen=True)
class Smooth:
    """One activation: see the module docstring."""

    name: str
    f: object  # float64 tensor -> float64 tensor
    df: object
    pieces: tuple  # (start, end, curvature) covering the real line in order
    lipschitz: float  # >= |f'| everywhere, and >= the size of the terms in f' (its error scale)
    limits: tuple  # f(-inf), f(+inf)
    # None: f increasing. Else (x_lo, x_hi, f_min): f decreases up to its minimiser, which lies in
    # [x_lo, x_hi], then increases; f_min <= the minimum (checked with mpmath in the tests).
    minimum: tuple | None = None
    # The model's function may lie this far below f (never above): torch's softplus returns x
    # where x > threshold, and x <= softplus(x) <= x + log(1 + e^-threshold) there.
    lower_margin: float = 0.0


def smooth(name: str, alpha: float = 1.0, lower_margin: float = 0.0) -> Smooth:
    """The table entry for activation `name` (alpha: ELU's parameter; lower_margin: see Smooth)."""
    if lower_margin:
        return dataclasses.replace(smooth(name, alpha), lower_margin=float(lower_margin))
    if name == "elu":
        if not (alpha > 0 and math.isfinite(alpha)):
            raise ValueError(f"ELU needs alpha > 0 (convex for x < 0), got {alpha}")
        return Smooth("elu", _elu(alpha), _d_elu(alpha), ((-INF, 0.0, CONVEX), (0.0, INF, LINEAR)),
                      max(1.0, alpha), (-alpha, INF))
    if name not in ACTIVATIONS:
        raise ValueError(f"no smooth activation {name!r}; known: {', '.join(NAMES)}")
    return ACTIVATIONS[name]


ACTIVATIONS = {
    "sigmoid": Smooth("sigmoid", _sigmoid, _d_sigmoid, ((-INF, 0.0, CONVEX), (0.0, INF, CONCAVE)), 0.25, (0.0, 1.0)),
    "tanh": Smooth("tanh", torch.tanh, _d_tanh, ((-INF, 0.0, CONVEX), (0.0, INF, CONCAVE)), 1.0, (-1.0, 1.0)),
    "softplus": Smooth("softplus", _softplus, _sigmoid, ((-INF, INF, CONVEX),), 1.0, (0.0, INF)),
    "silu": Smooth("silu", _silu, _d_silu, _symmetric_pieces(CONCAVE, CONVEX, SILU_INFLECTION), 1.3, (0.0, INF),
                   (-1.2784646, -1.2784645, -0.27846455)),
    "gelu": Smooth("gelu", _gelu, _d_gelu, _symmetric_pieces(CONCAVE, CONVEX, GELU_INFLECTION), 1.3, (0.0, INF),
                   (-0.75179153, -0.75179152, -0.16997121)),
}
NAMES = (*ACTIVATIONS, "elu")  # every smooth activation; ELU is parametrised: see smooth()


def _value(fn: Smooth, x: torch.Tensor) -> torch.Tensor:
    """f(x) in float64, with the limits at -+inf."""
    v = fn.f(x.clamp(-1e300, 1e300))
    v = torch.where(x == -INF, torch.full_like(x, fn.limits[0]), v)
    return torch.where(x == INF, torch.full_like(x, fn.limits[1]), v)


def ibp_range(fn: Smooth, lower: torch.Tensor, upper: torch.Tensor, sound: bool = True):
    """float32 bounds of f over [lower, upper] elementwise (inputs float32, any sign or infinite)."""
    l64, u64 = lower.double(), upper.double()
    fl, fu = _value(fn, l64), _value(fn, u64)
    lo, hi = fl, fu
    if fn.minimum is not None:
        x_lo, x_hi, f_min = fn.minimum
        hi = torch.maximum(fl, fu)
        lo = torch.where(u64 <= x_lo, fu, torch.where(l64 >= x_hi, fl, torch.full_like(fl, f_min)))
    if not sound:
        return (lo - fn.lower_margin).float(), hi.float()
    # the widening is relative to f's value as computed, before the margin (which can cancel it)
    lo = lo - (REL * lo.abs() + ABS) - fn.lower_margin
    hi = hi + (REL * hi.abs() + ABS)
    return to_f32_down(lo), to_f32_up(hi)


def _solve_derivative(fn: Smooth, a, p, q, increasing: bool, steps: int = BISECTION_STEPS):
    """x0 in [p, q] with f'(x0) close to a, f' monotone on [p, q] (a heuristic: any x0 is valid)."""
    lo, hi = p.clamp(-X0_RANGE, X0_RANGE), q.clamp(-X0_RANGE, X0_RANGE)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        below = fn.df(mid) < a
        go_right = below if increasing else ~below
        lo, hi = torch.where(go_right, mid, lo), torch.where(go_right, hi, mid)
    return torch.minimum(torch.maximum(0.5 * (lo + hi), p), q)


def intercepts(fn: Smooth, l64, u64, a64, sound: bool = True, steps: int = BISECTION_STEPS):
    """(b_lower, b_upper) float64, before outward rounding: min and max of f(x) - a x over [l, u]
    (l < u finite), the margin of the module docstring included when sound. steps: bisection
    steps for the tangent points (tightness only; alpha-CROWN's plain passes take fewer)."""
    big = torch.full_like(l64, INF)
    lo, hi = big, -big
    f_size = torch.zeros_like(l64)

    def g(x):
        fx = fn.f(x)
        nonlocal f_size
        f_size = torch.maximum(f_size, fx.abs())
        return fx - a64 * x

    for start, end, curvature in fn.pieces:
        p, q = l64.clamp(min=start), u64.clamp(max=end)
        present = p <= q
        if not bool(present.any()):
            continue
        p, q = torch.where(present, p, l64), torch.where(present, q, l64)  # absent pieces: any finite point
        if curvature == UNKNOWN:
            centre = 0.5 * (p + q)
            gc, spread = g(centre), (fn.lipschitz + a64.abs()) * (q - p) * 0.5
            piece_lo, piece_hi = gc - spread, gc + spread
        else:
            gp, gq = g(p), g(q)
            piece_lo, piece_hi = torch.minimum(gp, gq), torch.maximum(gp, gq)
            if curvature != LINEAR:
                x0 = _solve_derivative(fn, a64, p, q, curvature == CONVEX, steps)
                g0, d = g(x0), fn.df(x0) - a64
                if curvature == CONVEX:  # g above its tangent at x0
                    piece_lo = g0 + torch.minimum(d * (p - x0), d * (q - x0))
                else:  # g below its tangent at x0
                    piece_hi = g0 + torch.maximum(d * (p - x0), d * (q - x0))
        lo = torch.where(present, torch.minimum(lo, piece_lo), lo)
        hi = torch.where(present, torch.maximum(hi, piece_hi), hi)
    lo = lo - fn.lower_margin
    if sound:
        size = f_size + a64.abs() * torch.maximum(l64.abs(), u64.abs()) + (fn.lipschitz + a64.abs()) * (u64 - l64)
        margin = 8 * REL * size + ABS
        lo, hi = lo - margin, hi + margin
    return lo, hi


def relaxation(fn: Smooth, lower: torch.Tensor, upper: torch.Tensor, sound: bool = True):
    """Lines a_l x + b_l <= f(x) <= a_u x + b_u on [lower, upper] elementwise, float32 each:
    (a_l, b_l, a_u, b_u). A point or an infinite interval gets slope 0 and f's range."""
    with torch.no_grad():
        l64, u64 = lower.double(), upper.double()
        flat = (l64 >= u64) | ~torch.isfinite(l64) | ~torch.isfinite(u64)
        range_lo, range_hi = ibp_range(fn, lower, upper, sound)
        # the finite, proper intervals (others get placeholder [0, 1], then the range)
        l_ok, u_ok = torch.where(flat, torch.zeros_like(l64), l64), torch.where(flat, torch.ones_like(u64), u64)
        mid = 0.5 * (l_ok + u_ok)
        chord = (fn.f(u_ok) - fn.f(l_ok)) / (u_ok - l_ok)
        candidates = [chord, fn.df(l_ok), fn.df(mid), fn.df(u_ok)]
        best_lo = best_hi = None
        for cand in candidates:
            a32 = cand.float()  # the slope as it will be used
            a64 = a32.double()
            b_lo, b_hi = intercepts(fn, l_ok, u_ok, a64, sound)
            at_mid_lo, at_mid_hi = a64 * mid + b_lo, a64 * mid + b_hi
            if best_lo is None:
                best_lo, best_hi = (at_mid_lo, a32, b_lo), (at_mid_hi, a32, b_hi)
                continue
            better = at_mid_lo > best_lo[0]
            best_lo = tuple(torch.where(better, new, old) for new, old in zip((at_mid_lo, a32, b_lo), best_lo))
            better = at_mid_hi < best_hi[0]
            best_hi = tuple(torch.where(better, new, old) for new, old in zip((at_mid_hi, a32, b_hi), best_hi))
        _, a_l, b_l = best_lo
        _, a_u, b_u = best_hi
        b_l = to_f32_down(b_l) if sound else b_l.float()
        b_u = to_f32_up(b_u) if sound else b_u.float()
        zero = torch.zeros_like(a_l)
        return (torch.where(flat, zero, a_l), torch.where(flat, range_lo, b_l),
                torch.where(flat, zero, a_u), torch.where(flat, range_hi, b_u))
