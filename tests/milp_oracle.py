"""An exact oracle for small ReLU networks: the minimum margin over an l_inf box, by MILP.

For tests and benchmarks of complete verification (branch and bound): "does this network keep its
decision on every point of this input set?" answered independently of certify's bound engines.

Encoding (Tjeng, Xiao and Tedrake, "Evaluating robustness of neural networks with mixed integer
programming", ICLR 2019): for a = max(z, 0) with pre-activation bounds l <= z <= u,
  l >= 0 (stably active):   a = z                      (no binary)
  u <= 0 (stably inactive): a = 0                      (no binary)
  otherwise:                a >= z, a >= 0, a <= u d, a <= z - l (1 - d), d in {0, 1}.
With l <= z <= u true on the whole input set, this is an exact description of the ReLU graph there,
so the MILP minimum is the network's exact minimum. l, u come from interval arithmetic in float64
(past the first ReLU layer also from LP relaxations, see _Problem), widened by
1e-7 * (1 + the magnitude sum |W| |input| + |b|), far above float64's rounding error: they are only
big-M constants, and a wider box keeps the MILP exact (it only weakens the LP relaxation, and can
turn a stable neuron into a needless binary).

The network is the real-valued function of its parameters (float32 weights converted exactly to
float64); the input set is {x' : x - eps <= x' <= x + eps, and domain[0] <= x' <= domain[1] if
given}, its bounds computed in float64 (x - eps rounded to nearest: exact when eps and x are on a
common binary grid, otherwise off by at most half a float64 ulp).

Solver: scipy.optimize.milp (HiGHS), one MILP per class j != label (min of logit[label] - logit[j]),
with mip_rel_gap = 0. HiGHS keeps its other defaults, which scipy does not expose: an absolute gap
of 1e-6 (mip_abs_gap) and feasibility/integrality tolerances of about 1e-6 / 1e-7. So a reported
minimum is exact up to about 1e-6 (times the weights' scale): instances whose minimum is within a
small tol of 0 must be reported apart (`robust` says "within tol" for them). Each solution carries
two checks: `model_value`, the float64 network's margin at the returned minimiser (an attained value:
the true minimum is <= it, up to float64 rounding of the evaluation), and `dual_bound`, HiGHS's proven
lower bound (the true minimum is >= it, up to the solver's tolerances).

API: layers_of(model, input_shape) -> [(W, b, relu_after)]; forward(layers, x) -> logits;
solve_margin(...) -> [MarginSolution] (one per class j != label); min_margins(...) -> (C,) array,
+inf at the label; min_margin(...) -> (value, x_star, j_star); robust(...) -> "robust" |
"not robust" | "within tol". All take (model, x, label, eps, *, norm="linf", domain=None,
time_limit=60, tighten=True) with x one input without batch dimension.

Limits: only l_inf boxes (an l2 ball needs a quadratic constraint, i.e. an MIQP; not supported);
only nn.Sequential of Flatten / Linear / ReLU / Conv2d (zero padding); big-M bounds by interval
arithmetic on the first layer and LP relaxations past it (tighten=True), so the cost grows
exponentially with the unstable neurons: ~25 binaries take well under a second per class, a
10-32-32-5 MLP at eps 0.5 (~50 binaries) about a minute. Meant for networks of a few dozen neurons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import coo_array
from torch import nn

__all__ = ["MarginSolution", "forward", "layers_of", "min_margin", "min_margins", "robust", "solve_margin"]

WIDEN = 1e-7  # relative widening of the interval bounds (big-M constants)
LP_WIDEN = 1e-5  # relative widening of the LP-tightened bounds, against the LP solver's tolerances


# ---------------------------------------------------------------------------- the network
def layers_of(model, input_shape=None):
    """[(W, b, relu_after)] with W (out, in) and b (out,) float64 numpy: the network as dense layers
    on the flattened input, f(x) = L_k(... L_1(x.ravel())), L_i(v) = W v + b, then ReLU if relu_after.

    model: an nn.Sequential (nested ones are flattened) of nn.Flatten, nn.Linear, nn.ReLU and
    nn.Conv2d (zero padding; converted to its dense matrix by applying it to the identity basis, in
    float64: each entry is one weight, exact). input_shape (one input's shape, no batch dimension) is
    needed for Conv2d; without it the input is taken as a flat vector. Anything else raises
    ValueError. A ReLU right after another ReLU is idempotent and dropped."""
    if not isinstance(model, nn.Sequential):
        raise ValueError(f"layers_of needs an nn.Sequential, got {type(model).__name__}")
    shape = None if input_shape is None else tuple(int(d) for d in input_shape)
    layers: list[list] = []
    for index, module in enumerate(_modules(model)):
        if isinstance(module, nn.Flatten):
            if module.start_dim != 1 or module.end_dim != -1:
                raise ValueError(f"layer {index}: only nn.Flatten() with the default dims is supported")
            if shape is not None:
                shape = (int(np.prod(shape)),)
        elif isinstance(module, nn.ReLU):
            if not layers:
                raise ValueError(f"layer {index}: a ReLU must follow a Linear or Conv2d layer")
            layers[-1][2] = True
        elif isinstance(module, nn.Linear):
            if shape is not None and len(shape) != 1:
                raise ValueError(f"layer {index}: Linear on a non-flat input of shape {shape} "
                                 "(add nn.Flatten())")
            if shape is not None and shape[0] != module.in_features:
                raise ValueError(f"layer {index}: Linear expects {module.in_features} inputs, "
                                 f"gets {shape[0]}")
            W = _float64(module.weight)
            b = _float64(module.bias) if module.bias is not None else np.zeros(module.out_features)
            layers.append([W, b, False])
            shape = (module.out_features,)
        elif isinstance(module, nn.Conv2d):
            if shape is None or len(shape) != 3:
                raise ValueError(f"layer {index}: Conv2d needs input_shape (C, H, W) for its input, "
                                 f"got {shape}")
            if module.padding_mode != "zeros":
                raise ValueError(f"layer {index}: only Conv2d with padding_mode='zeros' is supported")
            n = int(np.prod(shape))
            basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
            weight = torch.from_numpy(_float64(module.weight))
            with torch.no_grad():
                out = torch.nn.functional.conv2d(basis, weight, None, module.stride, module.padding,
                                                 module.dilation, module.groups)
            out_shape = tuple(out.shape[1:])
            W = out.reshape(n, -1).T.numpy().copy()  # (out, in)
            bias = _float64(module.bias) if module.bias is not None else np.zeros(module.out_channels)
            b = np.repeat(bias, out_shape[1] * out_shape[2])
            layers.append([W, b, False])
            shape = out_shape
        else:
            raise ValueError(f"layer {index}: unsupported module {type(module).__name__} "
                             "(the MILP oracle takes Flatten, Linear, ReLU and Conv2d only)")
    if not layers:
        raise ValueError("the model has no Linear or Conv2d layer")
    return [(W, b, bool(r)) for W, b, r in layers]


def _modules(model):
    for module in model.children():
        if isinstance(module, nn.Sequential):
            yield from _modules(module)
        else:
            yield module


def _float64(t) -> np.ndarray:
    t = t.detach()
    if not t.is_floating_point():
        raise ValueError(f"parameters must be floating point, got {t.dtype}")
    return t.cpu().to(torch.float64).numpy().copy()  # float32 -> float64 is exact


def forward(layers, x) -> np.ndarray:
    """The network in float64 at one input x (any shape, flattened): the logits, (num_classes,)."""
    v = np.asarray(x, dtype=np.float64).reshape(-1)
    for W, b, relu in layers:
        v = W @ v + b
        if relu:
            v = np.maximum(v, 0.0)
    return v


# ---------------------------------------------------------------------------- the MILP
@dataclass
class MarginSolution:
    """The minimum of logit[label] - logit[target] over the input set.

    value: HiGHS's optimal objective (the oracle's answer, exact up to ~1e-6: see the module doc).
    dual_bound: HiGHS's proven lower bound on the minimum (<= value, within its 1e-6 absolute gap).
    x_star: the minimiser, float64, in the input's shape, clipped into the box.
    model_value: the float64 network's margin at x_star (an attained margin; agrees with value to
    about 1e-6)."""
    label: int
    target: int
    value: float
    dual_bound: float
    x_star: np.ndarray
    model_value: float
    binaries: int


class _Problem:
    """The big-M encoding of the network over a box, shared by the per-class objectives.

    tighten=True: after interval arithmetic, the bounds of each unstable neuron past the first ReLU
    layer are tightened by two LPs over the relaxation of the layers before it (binaries relaxed to
    [0, 1]: a superset of the network's graph, so its minimum is <= the true one), widened by
    LP_WIDEN * (1 + the interval magnitude) against the LP solver's tolerances. Fewer unstable
    neurons and smaller big-M constants: the MILP stays exact, and solves much faster."""

    def __init__(self, layers, lo: np.ndarray, hi: np.ndarray, tighten: bool = True):
        self.n_in = lo.size
        self.lbs, self.ubs, self.integ = [lo.copy()], [hi.copy()], [np.zeros(lo.size)]
        self.rows, self.cols, self.vals, self.row_lo, self.row_hi = [], [], [], [], []
        self.nvar, self.nrow = lo.size, 0
        self.binaries = 0
        in_idx = np.arange(lo.size)
        in_lo, in_hi = lo, hi
        relu_seen = False
        for W, b, relu in layers:
            if W.shape[1] != in_idx.size:
                raise ValueError(f"a layer expects {W.shape[1]} inputs, gets {in_idx.size}")
            Wp, Wn = np.maximum(W, 0.0), np.minimum(W, 0.0)
            l = Wp @ in_lo + Wn @ in_hi + b
            u = Wp @ in_hi + Wn @ in_lo + b
            mag = 1.0 + np.abs(W) @ np.maximum(np.abs(in_lo), np.abs(in_hi)) + np.abs(b)
            l, u = l - WIDEN * mag, u + WIDEN * mag
            if tighten and relu and relu_seen:
                l, u = self._tighten(W, b, in_idx, l, u, mag)
            relu_seen |= relu
            m = W.shape[0]
            out_idx = np.arange(self.nvar, self.nvar + m)
            self.nvar += m
            out_lo, out_hi = (np.maximum(l, 0.0), np.maximum(u, 0.0)) if relu else (l, u)
            self.lbs.append(out_lo.copy())
            self.ubs.append(out_hi.copy())
            self.integ.append(np.zeros(m))
            for i in range(m):
                z = [(c, -w) for c, w in zip(in_idx.tolist(), W[i].tolist())]  # -W_i . input
                a = int(out_idx[i])
                if not relu or l[i] >= 0.0:  # a = z
                    self._row([(a, 1.0)] + z, b[i], b[i])
                elif u[i] <= 0.0:  # a = 0 (its bounds are [0, 0])
                    continue
                else:
                    d = self.nvar
                    self.nvar += 1
                    self.binaries += 1
                    self.lbs.append(np.zeros(1))
                    self.ubs.append(np.ones(1))
                    self.integ.append(np.ones(1))
                    self._row([(a, 1.0)] + z, b[i], np.inf)  # a >= z
                    self._row([(a, 1.0), (d, -u[i])], -np.inf, 0.0)  # a <= u d
                    self._row([(a, 1.0), (d, -l[i])] + z, -np.inf, b[i] - l[i])  # a <= z - l (1 - d)
            in_idx, in_lo, in_hi = out_idx, out_lo, out_hi
        self.out_idx = in_idx
        self.bounds = Bounds(np.concatenate(self.lbs), np.concatenate(self.ubs))
        self.integrality = np.concatenate(self.integ)
        self.constraints = self._constraints()

    def _row(self, entries, lower, upper):
        for c, v in entries:
            if v != 0.0:
                self.rows.append(self.nrow)
                self.cols.append(c)
                self.vals.append(v)
        self.row_lo.append(lower)
        self.row_hi.append(upper)
        self.nrow += 1

    def _constraints(self):
        if not self.nrow:
            return []
        A = coo_array((self.vals, (self.rows, self.cols)), shape=(self.nrow, self.nvar)).tocsr()
        return [LinearConstraint(A, np.array(self.row_lo), np.array(self.row_hi))]

    def _tighten(self, W, b, in_idx, l, u, mag):
        """LP bounds on the unstable neurons of W . input + b over the relaxation so far."""
        bounds = Bounds(np.concatenate(self.lbs), np.concatenate(self.ubs))
        constraints = self._constraints()
        l, u = l.copy(), u.copy()
        for i in np.flatnonzero((l < 0.0) & (u > 0.0)):
            for sign in (1.0, -1.0):
                c = np.zeros(self.nvar)
                c[in_idx] = sign * W[i]
                res = milp(c, bounds=bounds, constraints=constraints,
                           options={"disp": False, "presolve": True, "time_limit": 10.0})
                if res.status != 0 or res.fun is None:
                    continue  # keep the interval bound (sound)
                value = sign * float(res.fun) + b[i]
                if sign > 0:
                    l[i] = max(l[i], value - LP_WIDEN * mag[i])
                else:
                    u[i] = min(u[i], value + LP_WIDEN * mag[i])
        return l, u

    def minimise(self, coefficients: np.ndarray, time_limit: float):
        """min coefficients . output over the encoding: (objective, dual bound, input part of x)."""
        c = np.zeros(self.nvar)
        c[self.out_idx] = coefficients
        res = milp(c, integrality=self.integrality, bounds=self.bounds, constraints=self.constraints,
                   options={"time_limit": float(time_limit), "mip_rel_gap": 0.0, "disp": False,
                            "presolve": True})
        _check_status(res, time_limit)
        dual = getattr(res, "mip_dual_bound", None)
        dual = float(res.fun) if dual is None or not np.isfinite(dual) else min(float(dual), float(res.fun))
        return float(res.fun), dual, np.asarray(res.x[:self.n_in], dtype=np.float64)


def _check_status(res, time_limit) -> None:
    """Raise unless HiGHS proved optimality (status 0) and returned a point."""
    if res.status != 0 or res.x is None or res.fun is None:
        reason = {1: f"time or node limit reached (time_limit={time_limit} s)", 2: "infeasible",
                  3: "unbounded", 4: "other"}.get(res.status, f"status {res.status}")
        raise RuntimeError(f"the MILP was not solved to proven optimality: {reason}: {res.message}")


def _input_box(x, eps, norm, domain):
    if norm != "linf":
        raise NotImplementedError(f"norm={norm!r}: the MILP oracle supports 'linf' only "
                                  "(an l2 ball needs a quadratic constraint, i.e. an MIQP)")
    eps = float(eps)
    if not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be finite and >= 0, got {eps}")
    x = torch.as_tensor(x).detach().cpu().to(torch.float64).numpy()
    if not np.isfinite(x).all():
        raise ValueError("x must be finite")
    lo, hi = x - eps, x + eps
    if domain is not None:
        dlo, dhi = float(domain[0]), float(domain[1])
        if not dlo <= dhi:
            raise ValueError(f"domain must be (lo, hi) with lo <= hi, got {domain}")
        lo, hi = np.maximum(lo, dlo), np.minimum(hi, dhi)
        if (lo > hi).any():
            raise ValueError("the input set is empty: the ball does not meet the domain")
    return x.shape, lo.reshape(-1), hi.reshape(-1)


def _setup(model, x, label, eps, norm, domain):
    shape, lo, hi = _input_box(x, eps, norm, domain)
    layers = layers_of(model, shape)
    if layers[0][0].shape[1] != lo.size:
        raise ValueError(f"the model takes {layers[0][0].shape[1]} inputs, x has {lo.size}")
    classes = layers[-1][0].shape[0]
    label = int(label)
    if classes < 2 or not 0 <= label < classes:
        raise ValueError(f"label must lie in [0, {classes}) with at least 2 classes")
    return shape, lo, hi, layers, classes, label


def _solve(problem, layers, shape, lo, hi, label, target, classes, time_limit) -> MarginSolution:
    coefficients = np.zeros(classes)
    coefficients[label], coefficients[target] = 1.0, -1.0
    value, dual, xs = problem.minimise(coefficients, time_limit)
    xs = np.clip(xs, lo, hi)
    logits = forward(layers, xs)
    return MarginSolution(label=label, target=target, value=value, dual_bound=dual, x_star=xs.reshape(shape),
                          model_value=float(logits[label] - logits[target]), binaries=problem.binaries)


# ---------------------------------------------------------------------------- API
def solve_margin(model, x, label, eps, *, norm="linf", domain=None, time_limit=60,
                 tighten=True) -> list[MarginSolution]:
    """One MarginSolution per class j != label (in class order): the exact minimum of
    f(x')[label] - f(x')[j] over the input set, with its minimiser and checks. tighten: LP
    tightening of the big-M bounds (see _Problem; the answer is the same either way, only faster)."""
    shape, lo, hi, layers, classes, label = _setup(model, x, label, eps, norm, domain)
    problem = _Problem(layers, lo, hi, tighten)
    return [_solve(problem, layers, shape, lo, hi, label, j, classes, time_limit)
            for j in range(classes) if j != label]


def min_margins(model, x, label, eps, *, norm="linf", domain=None, time_limit=60, tighten=True) -> np.ndarray:
    """(num_classes,) float64: entry j is the exact minimum of f(x')[label] - f(x')[j] over the input
    set {x' : |x' - x|_inf <= eps, domain[0] <= x' <= domain[1] if given}; +inf at the label.
    x: one input (a tensor or array without batch dimension). One MILP per class; time_limit (s)
    applies to each, and RuntimeError is raised if HiGHS does not prove optimality within it."""
    out = np.full(_classes(model, x), np.inf)
    for s in solve_margin(model, x, label, eps, norm=norm, domain=domain, time_limit=time_limit,
                          tighten=tighten):
        out[s.target] = s.value
    return out


def min_subject_to(model, lower, upper, objective, constraints, *, time_limit=60) -> float:
    """The exact minimum of objective . f(x) over the box lower <= x <= upper (flat float64 arrays)
    subject to a . f(x) <= b for each (a, b) in constraints; +inf when no x in the box meets them.
    (A VNN-LIB case is met somewhere in its box iff its constraints minus one are feasible with the
    last one's minimum <= its bound.)"""
    lower, upper = np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)
    problem = _Problem(layers_of(model, (lower.size,)), lower, upper)
    for a, b in constraints:
        problem._row([(int(j), float(c)) for j, c in zip(problem.out_idx, a) if c], -np.inf, float(b))
    problem.constraints = problem._constraints()
    c = np.zeros(problem.nvar)
    c[problem.out_idx] = objective
    res = milp(c, integrality=problem.integrality, bounds=problem.bounds, constraints=problem.constraints,
               options={"time_limit": float(time_limit), "mip_rel_gap": 0.0, "disp": False, "presolve": True})
    if res.status == 2:  # infeasible
        return np.inf
    _check_status(res, time_limit)
    dual = getattr(res, "mip_dual_bound", None)
    return float(res.fun) if dual is None or not np.isfinite(dual) else min(float(dual), float(res.fun))


def _classes(model, x) -> int:
    return layers_of(model, tuple(torch.as_tensor(x).shape))[-1][0].shape[0]


def min_margin(model, x, label, eps, *, norm="linf", domain=None, time_limit=60, tighten=True):
    """(value, x_star, j_star): the smallest of min_margins, its minimiser (float64 array in x's
    shape, inside the input set) and its class (the lowest class index on ties)."""
    best = min(solve_margin(model, x, label, eps, norm=norm, domain=domain, time_limit=time_limit,
                            tighten=tighten),
               key=lambda s: (s.value, s.target))
    return best.value, best.x_star, best.target


def robust(model, x, label, eps, *, norm="linf", domain=None, time_limit=60, tighten=True,
           tol=1e-6) -> str:
    """"robust" when the minimum margin over the input set is > tol (every class's HiGHS dual bound
    exceeds tol), "not robust" when it is < -tol (attested by the float64 network at a minimiser
    inside the set), "within tol" otherwise: |min margin| <= tol up to the solver's tolerances, an
    instance a comparison with a verifier must report apart. Stops at the first class attacked."""
    shape, lo, hi, layers, classes, label = _setup(model, x, label, eps, norm, domain)
    problem = _Problem(layers, lo, hi, tighten)
    lower = np.inf
    for j in range(classes):
        if j == label:
            continue
        s = _solve(problem, layers, shape, lo, hi, label, j, classes, time_limit)
        if s.model_value < -tol:
            return "not robust"
        lower = min(lower, s.dual_bound)
    return "robust" if lower > tol else "within tol"


# ---------------------------------------------------------------------------- certify graphs
def graph_min_margins(graph, x, label, eps, *, domain=None, time_limit=60) -> np.ndarray:
    """min over the l_inf set of logit[label] - logit[j] for every class j (+inf at the label), by
    MILP over a traced certify.bounds.graph.Graph: the DAGs that max-pooling, clamps and the other
    operators written with ReLUs and Gathers become (layers_of takes chains of dense layers only).

    Each node's values are variables: Linear / Conv2d (as its dense matrix, applied to the identity
    basis in float64: exact), Reshape (the same variables), ElementwiseAffine (the midpoint of its
    interval: the real constant is within one float32 ulp of it, so the oracle is exact up to ~1e-7
    relative there, like HiGHS's own tolerances), Add, Gather (copies and zeros) and ReLU (big-M, from
    float64 interval bounds widened by WIDEN). Smooth activations are refused. The graph's semantics
    against the model are checked on their own (tests: a point box evaluates to the model's output)."""
    from certify.bounds.graph import Add, Conv2d, ElementwiseAffine, Gather, Input, Linear, ReLU, Reshape

    _, lo, hi = _input_box(x, eps, "linf", domain)
    rows, cols, vals, row_lo, row_hi = [], [], [], [], []
    var_lo, var_hi, integ = [lo], [hi], [np.zeros(lo.size)]
    index = [np.arange(lo.size)]
    box = [(lo, hi)]
    nvar = lo.size

    def new(n, low, high, integer=False):
        nonlocal nvar
        idx = np.arange(nvar, nvar + n)
        nvar += n
        var_lo.append(np.broadcast_to(low, n).astype(float))
        var_hi.append(np.broadcast_to(high, n).astype(float))
        integ.append(np.full(n, 1.0 if integer else 0.0))
        return idx

    def row(entries, lower, upper):
        r = len(row_lo)
        for c, v in entries:
            if v != 0.0:
                rows.append(r)
                cols.append(int(c))
                vals.append(float(v))
        row_lo.append(lower)
        row_hi.append(upper)

    def affine_node(src, W, b):
        l_in, h_in = box[src]
        Wp, Wn = np.maximum(W, 0), np.minimum(W, 0)
        mag = 1.0 + np.abs(W) @ np.maximum(np.abs(l_in), np.abs(h_in)) + np.abs(b)
        l = Wp @ l_in + Wn @ h_in + b - WIDEN * mag
        h = Wp @ h_in + Wn @ l_in + b + WIDEN * mag
        out = new(W.shape[0], l, h)
        for i in range(W.shape[0]):
            nz = np.flatnonzero(W[i])
            row([(out[i], 1.0)] + [(index[src][j], -W[i, j]) for j in nz], b[i], b[i])
        return out, (l, h)

    for k, node in enumerate(graph.nodes):
        layer = node.layer
        if isinstance(layer, Input):
            continue
        src = node.inputs[0]
        if isinstance(layer, Linear):
            out, bx = affine_node(src, _float64(layer.weight), _float64(layer.bias))
        elif isinstance(layer, Conv2d):
            shape = graph.nodes[src].shape
            n = int(np.prod(shape))
            basis = torch.eye(n, dtype=torch.float64).reshape(n, *shape)
            with torch.no_grad():
                images = torch.nn.functional.conv2d(basis, layer.weight.double(), None, layer.stride, layer.padding,
                                                    layer.dilation, layer.groups)
            W = images.reshape(n, -1).T.numpy().copy()
            b = np.repeat(_float64(layer.bias), int(np.prod(node.shape[1:])))
            out, bx = affine_node(src, W, b)
        elif isinstance(layer, ElementwiseAffine):
            size = node.size
            s = np.broadcast_to(((_float64(layer.s_lo) + _float64(layer.s_hi)) / 2), node.shape).reshape(-1)
            t = np.broadcast_to(((_float64(layer.t_lo) + _float64(layer.t_hi)) / 2), node.shape).reshape(-1)
            out, bx = affine_node(src, np.diag(s), t) if size <= 4096 else (None, None)
            if out is None:
                raise ValueError("graph_min_margins: an affine layer of more than 4096 values")
        elif isinstance(layer, Add):
            a, b2 = node.inputs
            l, h = box[a][0] + box[b2][0], box[a][1] + box[b2][1]
            mag = 1.0 + np.maximum(np.abs(l), np.abs(h))
            l, h = l - WIDEN * mag, h + WIDEN * mag
            out = new(node.size, l, h)
            for i in range(node.size):
                row([(out[i], 1.0), (index[a][i], -1.0), (index[b2][i], -1.0)], 0.0, 0.0)
            bx = (l, h)
        elif isinstance(layer, Reshape):
            out, bx = index[src], box[src]
        elif isinstance(layer, Gather):
            g = layer.index.numpy()
            l = np.where(g >= 0, box[src][0][np.maximum(g, 0)], 0.0)
            h = np.where(g >= 0, box[src][1][np.maximum(g, 0)], 0.0)
            out = new(node.size, l, h)
            for i, j in enumerate(g.tolist()):
                row([(out[i], 1.0)] + ([(index[src][j], -1.0)] if j >= 0 else []), 0.0, 0.0)
            bx = (l, h)
        elif isinstance(layer, ReLU):
            l, h = box[src]
            out = new(node.size, np.maximum(l, 0), np.maximum(h, 0))
            for i in range(node.size):
                z, a = index[src][i], out[i]
                if l[i] >= 0:
                    row([(a, 1.0), (z, -1.0)], 0.0, 0.0)
                elif h[i] <= 0:
                    continue  # a's bounds are [0, 0]
                else:
                    d = new(1, 0.0, 1.0, integer=True)[0]
                    row([(a, 1.0), (z, -1.0)], 0.0, np.inf)  # a >= z
                    row([(a, 1.0), (d, -h[i])], -np.inf, 0.0)  # a <= u d
                    row([(a, 1.0), (z, -1.0), (d, -l[i])], -np.inf, -l[i])  # a <= z - l (1 - d)
            bx = (np.maximum(l, 0), np.maximum(h, 0))
        else:
            raise ValueError(f"graph_min_margins: no MILP encoding for {type(layer).__name__}")
        index.append(out)
        box.append(bx)
    bounds = Bounds(np.concatenate(var_lo), np.concatenate(var_hi))
    A = coo_array((vals, (rows, cols)), shape=(len(row_lo), nvar)).tocsr()
    constraints = [LinearConstraint(A, np.array(row_lo), np.array(row_hi))]
    integrality = np.concatenate(integ)
    logits = index[-1]
    margins = np.full(len(logits), np.inf)
    for j in range(len(logits)):
        if j == int(label):
            continue
        c = np.zeros(nvar)
        c[logits[int(label)]], c[logits[j]] = 1.0, -1.0
        res = milp(c, integrality=integrality, bounds=bounds, constraints=constraints,
                   options={"time_limit": float(time_limit), "mip_rel_gap": 0.0, "disp": False})
        _check_status(res, time_limit)
        margins[j] = float(res.fun)
    return margins
