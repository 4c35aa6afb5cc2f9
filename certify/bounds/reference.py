"""Plain-PyTorch, differentiable twin of the bound engine: IBP, CROWN and CROWN-IBP over a Graph.

sound=True makes every bound hold in exact arithmetic for the real-number network (graph.py),
not only in the float32 run that computed it:
  - affine forward (IBP, centre-radius form; Gowal et al. 2018): y = fl(W c + b) +- R with
      R >= fl(|W| r) / (1 - gamma_n)                       (the radius product, all terms >= 0)
         + gamma_{n+1} (|W_i|_1 |c|_inf + |b_i|)           (error of the centre's dot product)
    inflated for R's own rounding, and the results moved out by one ulp. gamma_n = n u / (1 - n u),
    u = 2^-24 (Higham, Accuracy and Stability, Sec. 3.1; holds for any summation order and FMA).
  - CROWN back-substitution (Zhang et al. 2018): each coefficient product fl(Lambda W) differs from
    the exact one by at most gamma_n |Lambda| |W| elementwise; against inputs bounded by m in
    magnitude this moves the bound by at most gamma_n |Lambda| (|W| m), a matrix-vector product,
    which is added to a running slack. Constants and the final concretisation run in float64
    with their own (tiny) error terms. The ReLU upper line keeps its rounded slope b and takes the
    intercept max(-b l, u - b u) rounded up, so the line is above ReLU at l and u, hence on [l, u].
  - Exactly-known real coefficients (batch norm, normalisation, 1/k^2) are intervals; their
    width times the input magnitude joins the slack.
sound=False gives the same algorithms in plain float arithmetic, for comparison and training.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from certify.bounds import activations
from certify.bounds.rounding import down, to_f32_down, to_f32_up, up  # noqa: F401 - down, up: re-exported
from certify.bounds.graph import (Activation, Add, Conv2d, ElementwiseAffine, Gather, Graph, Input, Linear, ReLU,
                                   Reshape)

__all__ = ["InputSet", "ibp", "backward", "compute_bounds", "margin_spec", "split_clamp", "TorchEngine", "UNIT_ROUNDOFF"]

UNIT_ROUNDOFF = 2.0**-24  # float32
U64 = 2.0**-53
UNDERFLOW = 2.0**-140  # per-term allowance for subnormal products (Higham's eta is 2^-149)
# fl(|W| m) / (1 - gamma_n) bounds |W| m from above in exact arithmetic; computed in float64 and
# multiplied by this, the quotient stays above it despite its own two roundings (2^-53 each).
ROUND_UP = 1 + 2.0**-50
CHUNK_COEFFICIENTS = 4_000_000  # coefficients per back-substitution chunk (bounds the memory)


def gamma(n: int) -> float:
    return n * UNIT_ROUNDOFF / (1 - n * UNIT_ROUNDOFF)


def gamma64(n: int) -> float:
    return n * U64 / (1 - n * U64)


def abs_max(box) -> torch.Tensor:
    lower, upper = box
    return torch.maximum(lower.abs(), upper.abs())


@dataclass
class InputSet:
    """The inputs to bound: an l_inf ball (optionally clipped to a domain box) or an l2 ball.

    centre: (B, *shape) float32; eps: (B,) float32. `box` is an enclosing box (exact for l_inf,
    the cube around the ball for l2), rounded outward.
    """

    norm: str
    centre: torch.Tensor
    eps: torch.Tensor
    box: tuple[torch.Tensor, torch.Tensor]

    @staticmethod
    def make(centre: torch.Tensor, eps: torch.Tensor, norm: str, domain=None, sound: bool = True) -> "InputSet":
        """The set around `centre` (float32 or float64) of radius `eps` (float64 or float32), as the
        engines' float32 data, rounded so that it contains the set asked for: the box from float64
        x -+ eps rounded outward, the domain's endpoints rounded outward, and for l2 the float32
        centre with the radius grown by its distance to the given centre, rounded up."""
        x64, e64 = centre.double(), eps.double()
        e = e64.view(-1, *([1] * (centre.dim() - 1)))
        centre32 = centre.float()
        if not sound:
            lower, upper = (x64 - e).float(), (x64 + e).float()
            eps32 = e64.float()
        else:
            lower, upper = to_f32_down(x64 - e), to_f32_up(x64 + e)
            shift = (x64 - centre32.double()).flatten(1).norm(dim=1)
            eps32 = to_f32_up(e64 + shift * (1 + 1e-12)) if norm == "l2" else to_f32_up(e64)
        if domain is not None and norm == "linf":
            lo, hi = torch.tensor(float(domain[0]), dtype=torch.float64), torch.tensor(float(domain[1]), dtype=torch.float64)
            if sound:
                lo, hi = to_f32_down(lo), to_f32_up(hi)
            lower = lower.clamp(min=float(lo))
            upper = upper.clamp(max=float(hi))
        return InputSet(norm, centre32, eps32, (lower, upper))

    @staticmethod
    def of_box(lower: torch.Tensor, upper: torch.Tensor) -> "InputSet":
        """The l_inf set that is the float32 box [lower, upper] (B, *shape), as given (round it
        outward first). The engines concretise l_inf sets over the box; its midpoint and the radius
        around it, rounded up, only describe it."""
        centre = (0.5 * lower.double() + 0.5 * upper.double()).float()
        eps = to_f32_up(torch.maximum(upper.double() - centre.double(), centre.double() - lower.double())
                        .flatten(1).amax(1))
        return InputSet("linf", centre, eps, (lower, upper))


# ============================================================================ IBP
def _centre_radius(lower, upper, sound):
    c = 0.5 * lower + 0.5 * upper  # any centre works (the radius is measured from it); cannot overflow
    r = torch.maximum(upper - c, c - lower)
    if sound:  # the sum, halving and subtractions are each within u relative
        r = up(r * (1 + 4 * UNIT_ROUNDOFF))
    return c, r


def _affine_forward(box, linear_op, abs_op, row_l1, bias, n: int, sound: bool):
    """IBP through y = W x + b given W x as linear_op and |W| x as abs_op (Linear or Conv2d)."""
    c, r = _centre_radius(*box, sound)
    yc = linear_op(c) + bias
    yr = abs_op(r)
    if not sound:
        return yc - yr, yc + yr
    c_max = c.flatten(1).abs().amax(1).view(-1, *([1] * (yc.dim() - 1)))
    err_centre = gamma(n + 1) * (row_l1 * c_max + bias.abs())
    radius = yr / (1 - gamma(n)) + err_centre
    radius = up(radius * (1 + 4 * UNIT_ROUNDOFF) + n * UNDERFLOW)
    return down(yc - radius), up(yc + radius)


def _conv(layer: Conv2d, x, weight):
    if x.is_cuda or GEMM_CONVOLUTIONS[0]:
        return _conv_gemm(layer, x, weight)
    return F.conv2d(x, weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)


# On a GPU every convolution is an explicit im2col + GEMM: cuDNN may pick FFT or Winograd
# algorithms, whose rounding is not a sum of products and not covered by the gamma_n terms; a GEMM
# is (in any summation order, with or without FMA: Higham 2002, Thm. 3.1 / 3.5), once TF32 is off
# (gpu_arithmetic). GEMM_CONVOLUTIONS[0] = True forces this path on the CPU, for the tests.
GEMM_CONVOLUTIONS = [False]


def _conv_gemm(layer: Conv2d, x, weight):
    batch, channels, height, width = x.shape
    groups, out_channels = layer.groups, weight.shape[0]
    kh, kw = weight.shape[-2:]
    cols = F.unfold(x, (kh, kw), dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
    cols = cols.view(batch, groups, -1, cols.shape[-1])  # (B, g, C/g kh kw, L): unfold orders by channel
    w = weight.reshape(groups, out_channels // groups, -1)  # (g, O/g, C/g kh kw)
    out = torch.matmul(w.unsqueeze(0), cols)  # (B, g, O/g, L)
    oh = (height + 2 * layer.padding[0] - layer.dilation[0] * (kh - 1) - 1) // layer.stride[0] + 1
    ow = (width + 2 * layer.padding[1] - layer.dilation[1] * (kw - 1) - 1) // layer.stride[1] + 1
    return out.reshape(batch, out_channels, oh, ow)


def _conv_transpose_gemm(layer: Conv2d, lam: torch.Tensor, src_shape) -> torch.Tensor:
    """The adjoint as a GEMM with the transposed weights, then col2im (F.fold, which adds the
    overlapping columns: part of the same sum of products)."""
    batch, out_channels = lam.shape[:2]
    groups = layer.groups
    kh, kw = layer.weight.shape[-2:]
    w = layer.weight.reshape(groups, out_channels // groups, -1).transpose(1, 2)  # (g, C/g kh kw, O/g)
    lam_cols = lam.reshape(batch, groups, out_channels // groups, -1)  # (B, g, O/g, L)
    cols = torch.matmul(w.unsqueeze(0), lam_cols).reshape(batch, -1, lam_cols.shape[-1])
    return F.fold(cols, tuple(src_shape[1:]), (kh, kw), dilation=layer.dilation, padding=layer.padding,
                  stride=layer.stride)


def _affine_coefficients(layer: ElementwiseAffine, sound: bool):
    s_mid, t_mid = (layer.s_lo + layer.s_hi) / 2, (layer.t_lo + layer.t_hi) / 2
    s_rad = torch.maximum(layer.s_hi - s_mid, s_mid - layer.s_lo)
    t_rad = torch.maximum(layer.t_hi - t_mid, t_mid - layer.t_lo)
    if sound:
        s_rad, t_rad = up(s_rad), up(t_rad)
    return s_mid, s_rad, t_mid, t_rad


def ibp_step(graph: Graph, index: int, boxes: list, sound: bool):
    node = graph.nodes[index]
    layer = node.layer
    batch = boxes[node.inputs[0]][0].shape[0] if node.inputs else None
    if isinstance(layer, Linear):
        box = tuple(b.reshape(batch, -1) for b in boxes[node.inputs[0]])
        w = layer.weight
        return _affine_forward(box, lambda x: x @ w.T, lambda x: x @ w.abs().T, w.abs().sum(1), layer.bias,
                               w.shape[1], sound)
    if isinstance(layer, Conv2d):
        w = layer.weight
        n = w.shape[1] * w.shape[2] * w.shape[3]
        row_l1 = w.abs().sum((1, 2, 3)).view(-1, 1, 1)
        return _affine_forward(boxes[node.inputs[0]], lambda x: _conv(layer, x, w),
                               lambda x: _conv(layer, x, w.abs()), row_l1, layer.bias.view(-1, 1, 1), n, sound)
    if isinstance(layer, ReLU):
        lower, upper = boxes[node.inputs[0]]
        return lower.clamp(min=0), upper.clamp(min=0)
    if isinstance(layer, Reshape):
        lower, upper = boxes[node.inputs[0]]
        return lower.reshape(batch, *node.shape), upper.reshape(batch, *node.shape)
    if isinstance(layer, ElementwiseAffine):
        lower, upper = boxes[node.inputs[0]]
        if not sound:
            s_mid, _, t_mid, _ = _affine_coefficients(layer, False)
            a, b = s_mid * lower + t_mid, s_mid * upper + t_mid
            return torch.minimum(a, b), torch.maximum(a, b)
        # Interval arithmetic in float64, where products of float32 numbers are exact.
        l64, u64 = lower.double(), upper.double()
        products = [s.double() * v for s in (layer.s_lo, layer.s_hi) for v in (l64, u64)]
        lo = torch.stack(torch.broadcast_tensors(*products)).amin(0) + layer.t_lo.double()
        hi = torch.stack(torch.broadcast_tensors(*products)).amax(0) + layer.t_hi.double()
        return to_f32_down(lo), to_f32_up(hi)
    if isinstance(layer, Gather):  # a copy of values, and exact zeros
        lower, upper = (gather(b.reshape(batch, -1), layer.index).reshape(batch, *node.shape)
                        for b in boxes[node.inputs[0]])
        return lower, upper
    if isinstance(layer, Activation):
        return activations.ibp_range(layer.fn, *boxes[node.inputs[0]], sound)
    if isinstance(layer, Add):
        (la, ua), (lb, ub) = boxes[node.inputs[0]], boxes[node.inputs[1]]
        if not sound:
            return la + lb, ua + ub
        return to_f32_down(la.double() + lb.double()), to_f32_up(ua.double() + ub.double())
    raise TypeError(f"no IBP rule for {type(layer).__name__}")


def _no_nan(t: torch.Tensor, value: float) -> torch.Tensor:
    """NaN (inf - inf, 0 * inf: an overflow) replaced by the infinite bound `value`; +-inf kept."""
    return torch.where(torch.isnan(t), torch.full_like(t, value), t)


def gather(flat: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """flat[..., index] with zeros where index < 0 (a Gather layer's values, boxes or errors)."""
    taken = flat[..., index.clamp(min=0)]
    return torch.where(index >= 0, taken, torch.zeros_like(taken))


def ibp(graph: Graph, input_box, sound: bool = True, start: int = 1, boxes=None) -> list:
    """Boxes (lower, upper) of every node's value, (B, *shape) each. With `boxes` given, recomputes
    nodes from `start` on and keeps the tighter of old and new (both are valid)."""
    if boxes is None:
        boxes = [input_box] + [None] * (len(graph.nodes) - 1)
    for i in range(start, len(graph.nodes)):
        new = ibp_step(graph, i, boxes, sound)
        # Overflow (inf - inf) can make a bound NaN: the sound answer there is the infinite bound.
        # (nan_to_num would also turn +-inf into +-FLT_MAX: a finite, wrong bound; keep them)
        new = (_no_nan(new[0], -float("inf")), _no_nan(new[1], float("inf")))
        if boxes[i] is not None:
            new = (torch.maximum(new[0], boxes[i][0]), torch.minimum(new[1], boxes[i][1]))
        boxes[i] = new
    return boxes


# ========================================================================= CROWN
def relu_relaxation(lower, upper, sound: bool, lower_slope=None):
    """Linear bounds alpha y <= relu(y) <= beta y + gamma on [lower, upper], elementwise.

    Stable neurons are exact (1 or 0). Unstable ones: the chord beta = u / (u - l) on top and,
    below, the adaptive slope alpha = 1 if u > -l else 0 (auto_LiRPA's default), or `lower_slope`.
    """
    active, inactive = lower >= 0, upper <= 0
    unstable = ~(active | inactive)
    span = torch.where(unstable, upper - lower, torch.ones_like(upper))
    beta = torch.where(unstable, upper / span, active.to(upper.dtype))
    if lower_slope is None:
        lower_slope = (upper > -lower).to(upper.dtype)
    alpha = torch.where(unstable, lower_slope, active.to(upper.dtype))
    if sound:
        b64, l64, u64 = beta.double(), lower.double(), upper.double()
        intercept = torch.maximum(-b64 * l64, u64 - b64 * u64) * (1 + 2**-50)
        intercept = torch.where(unstable, to_f32_up(intercept), torch.zeros_like(upper))
    else:
        intercept = torch.where(unstable, -beta * lower, torch.zeros_like(upper))
    return alpha, beta, intercept


class _Backward:
    """State of one back-substitution: coefficients per node, the constant and the slack (float64)."""

    def __init__(self, graph, boxes, sound, batch, rows, slopes=None, record=None):
        self.graph, self.boxes, self.sound = graph, boxes, sound
        self.slopes = slopes or {}  # ReLU node -> lower slopes in [0, 1], (B, K, *shape) (alpha-CROWN)
        self.record = record  # when a dict: ReLU node -> the coefficients on its output (branching scores)
        self.lam: dict[int, torch.Tensor] = {}
        device = boxes[0][0].device
        self.const = torch.zeros(batch, rows, dtype=torch.float64, device=device)
        self.slack = torch.zeros(batch, rows, dtype=torch.float64, device=device)

    def magnitude(self, index: int) -> torch.Tensor:
        return abs_max(self.boxes[index])

    def push(self, index: int, lam: torch.Tensor) -> None:
        if index in self.lam:
            total = self.lam[index] + lam
            if self.sound:  # the float32 sum of two coefficient contributions
                m = self.magnitude(index).unsqueeze(1)
                self.slack += UNIT_ROUNDOFF * (total.abs() * m).flatten(2).sum(-1).double()
            self.lam[index] = total
        else:
            self.lam[index] = lam

    def add_const(self, lam64_terms: torch.Tensor, abs_terms: torch.Tensor, n: int) -> None:
        """const += sum of float64 terms; slack += the float64 rounding of that sum."""
        self.const += lam64_terms
        if self.sound:
            self.slack += gamma64(n + 1) * abs_terms

    def step(self, index: int, lam: torch.Tensor) -> None:
        node = self.graph.nodes[index]
        layer = node.layer
        batch, rows = lam.shape[:2]
        sound = self.sound
        if isinstance(layer, Linear):
            flat = lam.reshape(batch, rows, -1)
            w, b = layer.weight, layer.bias
            self.add_const(flat.double() @ b.double(), flat.abs().double() @ b.abs().double(), w.shape[0])
            new = flat @ w
            if sound:
                n_out, n_in = w.shape
                m = self.magnitude(node.inputs[0]).reshape(batch, -1)
                wm = (m @ w.abs().T).double() * (ROUND_UP / (1 - gamma(n_in)))  # |W| m, rounded up enough
                self.slack += gamma(n_out) * (flat.abs().double() @ wm.unsqueeze(-1)).squeeze(-1)
            self.push(node.inputs[0], new)
        elif isinstance(layer, Conv2d):
            w, b = layer.weight, layer.bias
            src_shape = self.graph.nodes[node.inputs[0]].shape
            flat = lam.reshape(batch * rows, *node.shape)
            self.add_const((lam.double().sum((-2, -1)) * b.double()).sum(-1),
                           (lam.abs().double().sum((-2, -1)) * b.abs().double()).sum(-1), lam[0, 0].numel())
            new = _conv_transpose(layer, flat, src_shape).reshape(batch, rows, *src_shape)
            if sound:
                c_out, c_in_g, kh, kw = w.shape
                m = self.magnitude(node.inputs[0])
                wm = _conv(layer, m, w.abs()).double() * (ROUND_UP / (1 - gamma(c_in_g * kh * kw)))
                n = (c_out // layer.groups) * kh * kw
                self.slack += gamma(n) * (lam.abs().double() * wm.unsqueeze(1)).flatten(2).sum(-1)
            self.push(node.inputs[0], new)
        elif isinstance(layer, ReLU):
            lower, upper = self.boxes[node.inputs[0]]
            alpha, beta, intercept = relu_relaxation(lower, upper, sound)
            pos, neg = lam.clamp(min=0), lam.clamp(max=0)
            if self.record is not None:
                self.record[index] = lam
            slope = self.slopes.get(index)
            if slope is None:
                alpha = alpha.unsqueeze(1)
            else:  # alpha-CROWN: any lower slope in [0, 1] gives a valid lower line on unstable neurons
                unstable = ((lower < 0) & (upper > 0)).unsqueeze(1)
                alpha = torch.where(unstable, slope.clamp(0, 1), alpha.unsqueeze(1))
            new = pos * alpha + neg * beta.unsqueeze(1)  # one of pos, neg is 0: the sum is exact
            terms = (neg.double() * intercept.double().unsqueeze(1)).flatten(2)
            self.add_const(terms.sum(-1), terms.abs().sum(-1), terms.shape[-1])
            if sound:  # rounding of neg * beta, and of pos * alpha for fractional slopes (else exact)
                m = self.magnitude(node.inputs[0]).unsqueeze(1)
                products = (neg * beta.unsqueeze(1)).abs() + (0 if slope is None else (pos * alpha).abs())
                self.slack += UNIT_ROUNDOFF * (products * m).flatten(2).sum(-1).double()
            self.push(node.inputs[0], new)
        elif isinstance(layer, Reshape):
            src_shape = self.graph.nodes[node.inputs[0]].shape
            self.push(node.inputs[0], lam.reshape(batch, rows, *src_shape))
        elif isinstance(layer, ElementwiseAffine):
            s_mid, s_rad, t_mid, t_rad = _affine_coefficients(layer, sound)
            new = lam * s_mid
            terms = (lam.double() * t_mid.double()).flatten(2)
            self.add_const(terms.sum(-1), terms.abs().sum(-1), terms.shape[-1])
            if sound:
                m = self.magnitude(node.inputs[0]).unsqueeze(1)
                widths = lam.abs() * ((s_rad + UNIT_ROUNDOFF * s_mid.abs()) * m + t_rad)
                self.slack += widths.flatten(2).sum(-1).double() * (1 + 8 * UNIT_ROUNDOFF)
            self.push(node.inputs[0], new.expand(batch, rows, *self.graph.nodes[node.inputs[0]].shape))
        elif isinstance(layer, Add):
            for j in node.inputs:
                self.push(j, lam)
        elif isinstance(layer, Gather):
            self._gather_step(node, lam)
        elif isinstance(layer, Activation):
            self._activation_step(index, node, lam)
        else:
            raise TypeError(f"no CROWN rule for {type(layer).__name__}")

    def _gather_step(self, node, lam: torch.Tensor) -> None:
        """Coefficients go back to the values they were copied from; where one value was copied to
        several outputs (multiplicity k) its coefficients are summed in float32: gamma_{k-1} of
        their magnitudes, against the value's magnitude."""
        batch, rows = lam.shape[:2]
        src = node.inputs[0]
        index = node.layer.index
        valid = index >= 0
        flat = lam.reshape(batch, rows, -1)[..., valid]
        new = torch.zeros(batch, rows, self.graph.nodes[src].size, dtype=lam.dtype, device=lam.device)
        new.index_add_(2, index[valid], flat)
        if self.sound and node.layer.multiplicity > 1:
            m = self.magnitude(src).reshape(batch, 1, -1)[..., index[valid]]
            self.slack += gamma(node.layer.multiplicity - 1) * (flat.abs() * m).sum(-1).double()
        self.push(src, new.reshape(batch, rows, *self.graph.nodes[src].shape))

    def _activation_step(self, index: int, node, lam: torch.Tensor) -> None:
        """The relaxation lines of certify.bounds.activations: a_l, b_l where the coefficient is
        >= 0 (a lower bound needs f from below), a_u, b_u where it is < 0. alpha-CROWN: slopes
        given for this node, (B, K, 2, *shape) (lower, upper), replace the lines' slopes per row;
        any slope gives valid lines once its intercepts come from activations.intercepts."""
        lower, upper = self.boxes[node.inputs[0]]
        fn = node.layer.fn
        if self.record is not None:
            self.record[index] = lam
        slope = self.slopes.get(index)
        if slope is None:
            a_l, b_l, a_u, b_u = (t.unsqueeze(1) for t in activations.relaxation(fn, lower, upper, self.sound))
        else:
            a_l, b_l, a_u, b_u = _optimised_lines(fn, lower, upper, slope, self.sound)
        positive = lam >= 0
        new = torch.where(positive, lam * a_l, lam * a_u)
        # the intercept of the side in use only: the other may be infinite (softplus above, say)
        terms = torch.where(positive, lam.double() * b_l.double(), lam.double() * b_u.double()).flatten(2)
        self.add_const(terms.sum(-1), terms.abs().sum(-1), terms.shape[-1])
        if self.sound:  # the rounding of each coefficient product
            m = self.magnitude(node.inputs[0]).unsqueeze(1)
            self.slack += UNIT_ROUNDOFF * (new.abs() * m).flatten(2).sum(-1).double()
        self.push(node.inputs[0], new)

    def concretize_box(self, lam: torch.Tensor, box) -> torch.Tensor:
        """min over the box of lam . z (float64, with its error in the slack)."""
        c, r = _centre_radius(*box, self.sound)
        flat = lam.flatten(2).double()
        c64, r64 = c.flatten(1).double().unsqueeze(1), r.flatten(1).double().unsqueeze(1)
        value = (flat * c64).sum(-1) - (flat.abs() * r64).sum(-1)
        if self.sound:
            self.slack += gamma64(flat.shape[-1] + 1) * ((flat.abs() * c64.abs()).sum(-1) + (flat.abs() * r64).sum(-1))
        return value

    def concretize_l2(self, lam: torch.Tensor, centre, eps) -> torch.Tensor:
        flat = lam.flatten(2).double()
        x64 = centre.flatten(1).double().unsqueeze(1)
        norm = flat.norm(dim=-1)
        value = (flat * x64).sum(-1) - eps.double().unsqueeze(1) * norm
        if self.sound:
            n = flat.shape[-1]
            self.slack += gamma64(n + 1) * (flat.abs() * x64.abs()).sum(-1)
            self.slack += gamma64(n + 2) * eps.double().unsqueeze(1) * norm * 2
        return value


def _optimised_lines(fn, lower, upper, slope, sound: bool):
    """Lines with the slopes of alpha-CROWN's parameters, (B, K, *shape) each: slope[:, :, 0] the
    lower line's, slope[:, :, 1] the upper's, as float32; intercepts from activations.intercepts
    (sound: its margins and outward rounding; plain: differentiable in the slopes). Points and
    infinite intervals take slope 0 and f's range, as activations.relaxation gives them."""
    a_l, a_u = slope[:, :, 0], slope[:, :, 1]
    proper = ((lower < upper) & torch.isfinite(lower) & torch.isfinite(upper)).unsqueeze(1)
    l64 = torch.where(proper, lower.unsqueeze(1), torch.zeros_like(lower.unsqueeze(1))).double().expand_as(a_l)
    u64 = torch.where(proper, upper.unsqueeze(1), torch.ones_like(upper.unsqueeze(1))).double().expand_as(a_l)
    steps = activations.BISECTION_STEPS if sound else 12  # the tangent points: tightness only (1/4096 of [p, q])
    b_l = activations.intercepts(fn, l64, u64, a_l.double(), sound, steps)[0]
    b_u = activations.intercepts(fn, l64, u64, a_u.double(), sound, steps)[1]
    b_l, b_u = (to_f32_down(b_l), to_f32_up(b_u)) if sound else (b_l.float(), b_u.float())
    range_lo, range_hi = (t.unsqueeze(1) for t in activations.ibp_range(fn, lower, upper, sound))
    zero = torch.zeros_like(range_lo)
    return (torch.where(proper, a_l, zero), torch.where(proper, b_l, range_lo),
            torch.where(proper, a_u, zero), torch.where(proper, b_u, range_hi))


def _conv_transpose(layer: Conv2d, lam: torch.Tensor, src_shape) -> torch.Tensor:
    """The adjoint of the convolution: coefficients on the output map -> coefficients on the input."""
    if lam.is_cuda or GEMM_CONVOLUTIONS[0]:
        return _conv_transpose_gemm(layer, lam, src_shape)
    out_h, out_w = lam.shape[-2:]
    kh, kw = layer.weight.shape[-2:]
    extra = []
    for size_in, size_out, k, s, p, d in zip(src_shape[1:], (out_h, out_w), (kh, kw), layer.stride,
                                            layer.padding, layer.dilation):
        extra.append(size_in - ((size_out - 1) * s - 2 * p + d * (k - 1) + 1))
    return F.conv_transpose2d(lam, layer.weight, None, layer.stride, layer.padding, tuple(extra), layer.groups,
                              layer.dilation)


def backward(graph: Graph, start: int, spec: torch.Tensor, boxes: list, input_set: InputSet | None,
             sound: bool = True, stop: int = 0, initial_const: torch.Tensor | None = None,
             slopes: dict | None = None, split_terms: dict | None = None,
             record: dict | None = None) -> torch.Tensor:
    """Lower bounds of spec . value(start) over the input set, (B, K) float32.

    spec: (B, K, *shape of node start). Back-substitutes to node `stop`, then concretises: over the
    input set when stop = 0, else over boxes[stop] (used to fold the margin into the last layer
    for IBP). A bound is returned rounded down to float32.

    alpha-CROWN and beta-CROWN (certify.verify): slopes maps a ReLU node to the lower slopes of its
    unstable neurons, (B, K, *shape) in [0, 1] (Xu et al. 2021); split_terms maps a ReLU's input
    node k to -beta * s, (B, K, *shape), added to the coefficients of node k when the substitution
    reaches it: for split constraints s_j z_j >= 0 and beta >= 0, spec . f - sum beta s z <= spec . f
    on the split domain, so the result bounds spec . f there (weak duality; Wang et al. 2021).
    record: a dict that receives each ReLU node's output coefficients.
    """
    batch, rows = spec.shape[:2]
    state = _Backward(graph, boxes, sound, batch, rows, slopes, record)
    state.lam[start] = spec
    if initial_const is not None:
        state.const += initial_const
    value = None
    for index in range(start, stop - 1, -1):
        if split_terms is not None and index in split_terms:
            state.push(index, split_terms[index])
        lam = state.lam.pop(index, None)
        if lam is None:
            continue
        if index == stop:
            if record is not None:
                record[stop] = lam
            if stop == 0 and input_set.norm == "l2":
                value = state.concretize_l2(lam, input_set.centre, input_set.eps)
            else:
                value = state.concretize_box(lam, input_set.box if stop == 0 else boxes[stop])
            break
        if isinstance(graph.nodes[index].layer, Input):
            raise RuntimeError("back-substitution reached the input before its stop node")
        state.step(index, lam)
    if value is None or state.lam:
        raise RuntimeError(f"back-substitution did not reach node {stop} from node {start} alone")
    lower = state.const + value
    if sound:
        lower = to_f32_down(lower - state.slack * (1 + 1e-12))
    else:
        lower = lower.to(spec.dtype)  # plain bounds keep the network's precision (float64 for gradcheck)
    return _no_nan(lower, -float("inf"))  # overflow: no finite bound


# ========================================================================= driver
def identity_spec(batch: int, node_shape, rows=None, dtype=torch.float32, device=None) -> torch.Tensor:
    size = int(torch.tensor(node_shape).prod()) if node_shape else 1
    eye = torch.eye(size, dtype=dtype, device=device)
    if rows is not None:
        eye = eye[rows]
    return torch.cat([eye, -eye]).reshape(1, -1, *node_shape).expand(batch, -1, *node_shape)


def margin_spec(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Rows e_y - e_j for every j != y: (B, num_classes - 1, num_classes)."""
    batch = labels.shape[0]
    eye = torch.eye(num_classes, device=labels.device)
    spec = eye[labels].unsqueeze(1) - eye.unsqueeze(0)  # (B, C, C), row j = e_y - e_j
    keep = torch.ones(batch, num_classes, dtype=torch.bool, device=labels.device)
    keep[torch.arange(batch, device=labels.device), labels] = False
    return spec[keep].reshape(batch, num_classes - 1, num_classes)


def split_clamp(signs: dict):
    """The clamp of tighten_intermediate for ReLU split decisions {node k: (B, *shape) of -1/0/+1}:
    a split active (+1) has lower bound 0, one split inactive (-1) upper bound 0."""
    def clamp(k, box):
        if k not in signs:
            return box
        lower, upper = box
        return (torch.where(signs[k] > 0, lower.clamp(min=0), lower),
                torch.where(signs[k] < 0, upper.clamp(max=0), upper))

    return clamp


def tighten_intermediate(graph: Graph, boxes: list, input_set: InputSet, sound: bool, clamp=None,
                         keep_through: int = -1, lower_bounds=None) -> list:
    """CROWN bounds on every ReLU's and smooth activation's input, in order, each used for the next
    (Zhang et al. 2018).

    clamp(k, (lower, upper)) -> (lower, upper), when given, restricts the bounds of each ReLU input
    node k before and after they are tightened: branch and bound's split decisions (a ReLU split
    active has lower bound 0, one split inactive upper bound 0), which later layers then see.
    keep_through: ReLU input nodes up to this index keep their boxes (only clamped): a branch and
    bound child inherits its parent's boxes, and nothing at or before its new split's node changed.
    lower_bounds(start, spec, boxes, const) -> (B, K) sound lower bounds of spec . value(start) + const
    over the input set: how each layer's rows are bounded (default: CROWN's backward; alpha-CROWN
    passes its optimiser, certify.verify.alpha.optimize_intermediate)."""
    if lower_bounds is None:
        def lower_bounds(start, spec, boxes, const):
            return backward(graph, start, spec, boxes, input_set, sound, initial_const=const)
    for node in graph.nodes:
        if not isinstance(node.layer, (ReLU, Activation)):
            continue
        pre = node.inputs[0]
        if clamp is not None:
            boxes[pre] = clamp(pre, boxes[pre])
        lower, upper = boxes[pre]
        loose = _loose(node.layer)
        unstable = loose(lower, upper).reshape(lower.shape[0], -1).any(0).nonzero().flatten()
        if pre <= keep_through:
            unstable = unstable[:0]
        if len(unstable) == 0:  # every neuron stable: tighter bounds would not change any relaxation
            if clamp is not None:  # but a clamp may have narrowed this box: later layers see it
                boxes = ibp(graph, None, sound, start=pre + 1, boxes=boxes)
            continue
        shape = graph.nodes[pre].shape
        batch = lower.shape[0]
        new_lower, new_upper = lower.reshape(batch, -1).clone(), upper.reshape(batch, -1).clone()
        widest = max(n.size for n in graph.nodes[:pre + 1])
        per_chunk = max(1, CHUNK_COEFFICIENTS // (2 * batch * widest))
        for chunk in unstable.split(per_chunk):  # bounded memory: (B, 2 chunk, widest) coefficients
            spec = identity_spec(batch, shape, chunk, dtype=lower.dtype, device=lower.device)
            start, const = pre, None
            layer = graph.nodes[pre].layer
            if isinstance(layer, Linear):
                # +-e_j back through the affine layer computing node j is exact: rows j of W and
                # b, negated for the upper bounds (gathered, not multiplied): start one layer down.
                start = graph.nodes[pre].inputs[0]
                w, b = layer.weight[chunk], layer.bias[chunk]
                spec = torch.cat([w, -w]).unsqueeze(0).expand(batch, -1, -1).to(lower.dtype)
                const = torch.cat([b, -b]).double().unsqueeze(0).expand(batch, -1)
            elif isinstance(layer, Conv2d):  # the same: kernel j on its receptive field, and +-b_j
                start = graph.nodes[pre].inputs[0]
                const = _one_hot_bias(layer, spec, shape).double()
                spec = _one_hot_through(graph, pre, spec)
            both = lower_bounds(start, spec, boxes, const)
            k = len(chunk)
            # Only neurons unstable for that input take the new bound (stable ones keep theirs, as in
            # the native engine, which computes rows for unstable (input, neuron) pairs alone).
            mask = loose(new_lower[:, chunk], new_upper[:, chunk])
            new_lower[:, chunk] = torch.where(mask, torch.maximum(new_lower[:, chunk], both[:, :k]), new_lower[:, chunk])
            new_upper[:, chunk] = torch.where(mask, torch.minimum(new_upper[:, chunk], -both[:, k:]), new_upper[:, chunk])
        boxes[pre] = (new_lower.reshape(lower.shape), new_upper.reshape(upper.shape))
        if clamp is not None:
            boxes[pre] = clamp(pre, boxes[pre])
        boxes = ibp(graph, None, sound, start=pre + 1, boxes=boxes)
    return boxes


def _loose(layer):
    """Which neurons of a nonlinear layer's input tighter bounds can help: a ReLU's unstable ones
    (stable ones are exact), every non-point interval of a smooth activation."""
    if isinstance(layer, ReLU):
        return lambda lower, upper: (lower < 0) & (upper > 0)
    return lambda lower, upper: lower < upper


def _one_hot_through(graph: Graph, index: int, spec: torch.Tensor) -> torch.Tensor:
    """Coefficients of one-hot spec rows on node `index` pulled back through its Conv2d layer: each
    output is a single product with 1 or -1, so the float result is exact."""
    node = graph.nodes[index]
    batch, rows = spec.shape[:2]
    src_shape = graph.nodes[node.inputs[0]].shape
    flat = spec.reshape(batch * rows, *node.shape)
    return _conv_transpose(node.layer, flat, src_shape).reshape(batch, rows, *src_shape)


def _one_hot_bias(layer, spec: torch.Tensor, shape) -> torch.Tensor:
    batch, rows = spec.shape[:2]
    return (spec.reshape(batch, rows, *shape).sum((-2, -1)) * layer.bias).sum(-1)


def compute_bounds(graph: Graph, input_set: InputSet, method: str, sound: bool = True,
                   spec: torch.Tensor | None = None) -> torch.Tensor:
    """Lower bounds of spec . f(x) over the input set, (B, K); spec None means [I; -I] on the logits.

    method: "ibp" (intervals; with a spec and a final Linear layer, the spec is folded into it),
    "crown-ibp" (IBP intermediate bounds, CROWN at the output) or "crown" (CROWN throughout).
    """
    batch = input_set.centre.shape[0]
    out = graph.output
    if spec is None:
        spec = identity_spec(batch, out.shape, device=input_set.centre.device)
    spec = spec.to(input_set.centre.dtype)
    boxes = ibp(graph, input_set.box, sound)
    if method == "ibp":
        if isinstance(out.layer, Linear):
            return backward(graph, len(graph.nodes) - 1, spec, boxes, input_set, sound, stop=out.inputs[0])
        lower, upper = boxes[-1]
        pos, neg = spec.clamp(min=0), spec.clamp(max=0)
        value = (pos.double() * lower.double().unsqueeze(1) + neg.double() * upper.double().unsqueeze(1)).flatten(2)
        total = value.sum(-1)
        lower = to_f32_down(total - gamma64(value.shape[-1]) * value.abs().sum(-1)) if sound else total.float()
        return _no_nan(lower, -float("inf"))
    if method == "crown":
        boxes = tighten_intermediate(graph, boxes, input_set, sound)
    elif method != "crown-ibp":
        raise ValueError(f"method must be 'ibp', 'crown' or 'crown-ibp', got {method!r}")
    return backward(graph, len(graph.nodes) - 1, spec, boxes, input_set, sound)


class TorchEngine:
    """This module behind the engine interface of certify.bounds.native.NativeEngine.

    grad=False (the default) keeps no autograd graph: CROWN's many row chunks would otherwise each
    hold theirs until the end (gigabytes on a small CNN at batch 64)."""

    def __init__(self, graph: Graph, gpu: bool = False):
        self.graph = graph
        self.arithmetic = gpu_arithmetic if gpu else contextlib.nullcontext

    def compute_bounds(self, input_set: InputSet, method: str, sound: bool = True,
                       spec: torch.Tensor | None = None, grad: bool = False) -> torch.Tensor:
        with torch.set_grad_enabled(grad), self.arithmetic():
            return compute_bounds(self.graph, input_set, method, sound, spec=spec)

    def ibp_output_box(self, input_set: InputSet, sound: bool = True, grad: bool = False):
        with torch.set_grad_enabled(grad), self.arithmetic():
            return ibp(self.graph, input_set.box, sound)[-1]


@contextlib.contextmanager
def gpu_arithmetic():
    """IEEE float32 products on the GPU: TF32 (10-bit mantissas in matmul / cuDNN) is off while
    bounds are computed, so the gamma_n error terms hold; restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
