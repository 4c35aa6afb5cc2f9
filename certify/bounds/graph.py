"""From a PyTorch model to certify's layer graph: a small IR that the bound engines run.

A Graph is a list of Nodes in topological order; node 0 is the input. Each node holds one
layer value (below), the indices of its inputs and its output shape (no batch dimension).
Tracing uses torch.fx; every operation must map to these layers, or tracing fails with an error
naming the operation and where it occurs in the model. OPERATORS (at the end) is the table of
what maps, and how: most operators are written with the layers below rather than given their own
(max-pooling, max / min and the piecewise-linear activations with ReLUs, so that they stay exact
and branchable; slicing, padding, concatenation and the like with Gather, found by running the
operation on codes that name every input value; a transposed convolution as a Gather and a
convolution). Smooth activations are the one new kind of nonlinearity (Activation).

Real-number semantics: the graph computes exactly what the model computes in real arithmetic on
its float32 parameters. Where that needs a real number that float32 cannot hold (1/std in an
input normalisation, gamma/sqrt(var + eps) in batch norm, 1/k^2 in average pooling), the layer
carries an interval enclosing it (computed in float64, rounded outward to float32), and the
engines account for the interval's width.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.fx
from torch.fx.passes.shape_prop import ShapeProp

from certify import _checks

__all__ = [
    "Graph", "Node", "Input", "Linear", "Conv2d", "ReLU", "Reshape", "ElementwiseAffine", "Add", "Gather",
    "Activation", "OPERATORS", "trace", "UnsupportedModelError",
]


class UnsupportedModelError(ValueError):
    """The model uses an operation the bound engines do not support."""


# ----------------------------------------------------------------------------- layers
@dataclass(frozen=True, eq=False)
class Input:
    pass


@dataclass(frozen=True, eq=False)
class Linear:
    weight: torch.Tensor  # (out, in) float32
    bias: torch.Tensor  # (out,) float32 (zeros when the module has none)


@dataclass(frozen=True, eq=False)
class Conv2d:
    weight: torch.Tensor  # (C_out, C_in / groups, kh, kw) float32
    bias: torch.Tensor  # (C_out,)
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


@dataclass(frozen=True, eq=False)
class ReLU:
    pass


@dataclass(frozen=True, eq=False)
class Reshape:
    """Flatten / view / reshape: the same numbers, another shape (a no-op on flat bounds)."""


@dataclass(frozen=True, eq=False)
class ElementwiseAffine:
    """y = s * x + t, with the real s and t known only to lie in [s_lo, s_hi] and [t_lo, t_hi].

    s_*, t_*: float32, broadcastable to the node's shape. Batch norm in eval mode, input
    normalisation by constants, and the 1/k^2 of average pooling become this layer.
    """

    s_lo: torch.Tensor
    s_hi: torch.Tensor
    t_lo: torch.Tensor
    t_hi: torch.Tensor
    # For float32 inference (certify.bounds.float32): an upper bound on the magnitude of the terms
    # that a float32 evaluation combines into the shift, where they can cancel (batch norm:
    # |beta| + |mean * scale|); None means max(|t_lo|, |t_hi|). The exact bounds do not use it.
    t_terms: torch.Tensor | None = None


@dataclass(frozen=True, eq=False)
class Add:
    """Residual addition of two graph values of the same shape."""


@dataclass(frozen=True, eq=False)
class Gather:
    """y[j] = x[index[j]] on the flat values of one input, 0 where index[j] < 0.

    Every operation that only moves values becomes this: slicing, padding, concatenation (one
    Gather per part, added), transposes, nearest upsampling, max-pooling's windows, the zeros that
    a transposed convolution inserts. index: (size,) int64; multiplicity: the most outputs that
    read one input value (coefficients flowing back to that value are summed, and rounded, there).
    """

    index: torch.Tensor
    multiplicity: int


@dataclass(frozen=True, eq=False)
class Activation:
    """A smooth activation of certify.bounds.activations, elementwise (its relaxations live there)."""

    name: str
    alpha: float = 1.0  # ELU's
    lower_margin: float = 0.0  # see activations.Smooth

    @property
    def fn(self):
        from certify.bounds.activations import smooth

        return smooth(self.name, self.alpha, self.lower_margin)


Layer = Input | Linear | Conv2d | ReLU | Reshape | ElementwiseAffine | Add | Gather | Activation


@dataclass(frozen=True, eq=False)
class Node:
    layer: Layer
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    where: str  # the fx node / module path, for messages

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(eq=False)
class Graph:
    nodes: list[Node] = field(default_factory=list)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[0].shape

    @property
    def output(self) -> Node:
        return self.nodes[-1]

    def add(self, layer: Layer, inputs: tuple[int, ...], shape, where: str) -> int:
        self.nodes.append(Node(layer, tuple(inputs), tuple(int(d) for d in shape), where))
        return len(self.nodes) - 1

    def to(self, device) -> "Graph":
        """A copy with every layer's tensors on `device` (the same values: copies are exact)."""
        def move(layer):
            changes = {f.name: getattr(layer, f.name).to(device) for f in dataclasses.fields(layer)
                       if isinstance(getattr(layer, f.name), torch.Tensor)}
            return dataclasses.replace(layer, **changes) if changes else layer
        return Graph([dataclasses.replace(node, layer=move(node.layer)) for node in self.nodes])


# ------------------------------------------------------------------- exact constants
def interval_f32(value64, exact: bool = False, magnitude=None) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 interval [lo, hi] enclosing real numbers given as float64 values.

    exact=True: the values are the reals themselves (e.g. a float32 constant, negated); where
    float32 holds them the interval is a point. Otherwise the float64 values are within
    4 eps64 * max(|value|, magnitude) of the reals, where `magnitude` bounds the size of the terms
    the value was computed from (a difference that cancels keeps the error of its terms, not of
    its result): widened by that, rounded to float32 and moved out by one float32 ulp each way.
    """
    value64 = np.asarray(value64, dtype=np.float64)
    as32 = value64.astype(np.float32)
    if exact and np.array_equal(as32.astype(np.float64), value64):
        point = torch.from_numpy(np.ascontiguousarray(as32))
        return point, point.clone()
    size = np.abs(value64) if magnitude is None else np.maximum(np.abs(value64), np.asarray(magnitude))
    slack = size * 4 * np.finfo(np.float64).eps
    lo = np.nextafter((value64 - slack).astype(np.float32), np.float32(-np.inf))
    hi = np.nextafter((value64 + slack).astype(np.float32), np.float32(np.inf))
    return torch.from_numpy(np.ascontiguousarray(lo)), torch.from_numpy(np.ascontiguousarray(hi))


def exact_affine(scale64, shift64, exact: bool = False, shift_magnitude=None) -> ElementwiseAffine:
    """y = s x + t for real s, t given in float64 (see interval_f32 for `exact` and the magnitude)."""
    s_lo, s_hi = interval_f32(scale64, exact)
    t_lo, t_hi = interval_f32(shift64, exact, shift_magnitude)
    return ElementwiseAffine(s_lo, s_hi, t_lo, t_hi)


def _f64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def _f32(t: torch.Tensor) -> torch.Tensor:
    if t.is_floating_point() and t.dtype != torch.float32 and isinstance(t, torch.nn.Parameter):
        # Rounding a float64 weight to float32 would bound a different network.
        raise ValueError(f"the bound engines need a float32 model; got parameters of dtype {t.dtype} "
                         "(convert with model.float())")
    return t.detach().to(torch.float32).cpu().contiguous()


def _live(t: torch.Tensor) -> torch.Tensor:
    if t.dtype not in (torch.float32, torch.float64) or t.device.type != "cpu":
        raise ValueError("differentiable tracing needs float32 or float64 parameters on the CPU")
    return t


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


# ------------------------------------------------------------------------ tracing
def trace(model: torch.nn.Module, input_shape, differentiable: bool = False) -> Graph:
    """Traces `model` (eval mode) on inputs of `input_shape` (no batch dim) into a Graph.

    differentiable=False snapshots the weights (float32 copies); True keeps the model's own
    Linear/Conv2d parameters, so bounds from the torch engine carry gradients to them (the path for
    certified training; batch-norm and normalisation constants are still snapshots)."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    input_shape = tuple(int(d) for d in input_shape)
    _checks.eval_mode(model, "batch norm and dropout must use their inference behaviour")
    try:
        gm = torch.fx.symbolic_trace(model)
    except Exception as exc:  # noqa: BLE001 - fx raises many types
        raise UnsupportedModelError(f"certify could not trace the model with torch.fx: {exc}") from exc
    param = next((p for p in model.parameters() if p.is_floating_point()), None)
    example = torch.zeros((1, *input_shape), dtype=param.dtype if param is not None else torch.float32)
    try:
        ShapeProp(gm).propagate(example)
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"the model does not run on inputs of shape {input_shape}: {exc}") from exc
    return _Builder(gm, differentiable).build()


class _Builder:
    def __init__(self, gm: torch.fx.GraphModule, differentiable: bool = False):
        self.gm = gm
        self.param = _live if differentiable else _f32
        self.graph = Graph()
        self.index: dict[torch.fx.Node, int] = {}
        self.constants: dict[torch.fx.Node, torch.Tensor] = {}

    def build(self) -> Graph:
        output_seen = False
        for node in self.gm.graph.nodes:
            if node.op == "placeholder":
                if self.graph.nodes:
                    raise UnsupportedModelError(f"the model takes more than one input ('{node.name}')")
                self.index[node] = self.graph.add(Input(), (), self._shape(node), node.name)
            elif node.op == "get_attr":
                self.constants[node] = _get_attr(self.gm, node.target)
            elif node.op == "call_module":
                self._module(node, self.gm.get_submodule(node.target))
            elif node.op in ("call_function", "call_method"):
                self._function(node)
            elif node.op == "output":
                result = node.args[0]
                if not isinstance(result, torch.fx.Node) or result not in self.index:
                    raise UnsupportedModelError("the model must return a single tensor computed from its input")
                if self.index[result] != len(self.graph.nodes) - 1:
                    raise UnsupportedModelError("the model's output must be its last computed value")
                output_seen = True
        if not output_seen or len(self.graph.nodes) < 2:
            raise UnsupportedModelError("the model computes nothing from its input")
        return self.graph

    # --------------------------------------------------------------- helpers
    def _shape(self, node) -> tuple[int, ...]:
        meta = node.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise UnsupportedModelError(f"'{node.name}' does not produce a single tensor")
        return tuple(meta.shape[1:])

    def _value(self, arg, node):
        if isinstance(arg, torch.fx.Node):
            if arg in self.index:
                return ("graph", self.index[arg])
            if arg in self.constants:
                return ("const", self.constants[arg])
        if isinstance(arg, (int, float)):
            return ("const", torch.tensor(float(arg), dtype=torch.float64))
        if isinstance(arg, torch.Tensor):
            return ("const", arg)
        raise UnsupportedModelError(f"unsupported argument {arg!r} of '{node.name}'")

    def _unsupported(self, node, what: str):
        raise UnsupportedModelError(
            f"unsupported operation {what} at '{node.name}' (in the model's code: {node.format_node()}). "
            f"Supported: {', '.join(name for name, *_ in OPERATORS)} (see BoundedModel's docstring)."
        )

    def _add(self, layer, inputs, node) -> None:
        self.index[node] = self.graph.add(layer, inputs, self._shape(node), node.name)

    def _alias(self, node, source: int) -> None:
        self.index[node] = source

    # --------------------------------------------------------------- modules
    def _inplace_check(self, node, inplace: bool) -> None:
        """An in-place op overwrites its input: sound only when nothing else reads that memory. So
        its input must have this op as its only reader and must not be a view or alias of another
        value (a reshape, slice, Identity or eval Dropout shares its source's memory, which other
        readers may see overwritten)."""
        source = node.args[0]
        if not inplace or not isinstance(source, torch.fx.Node):
            return
        if len(source.users) > 1:
            self._unsupported(node, f"in-place '{node.target}' on a value that is also used elsewhere "
                                    f"('{source.name}' is read after being overwritten; use inplace=False)")
        if self._may_alias(source):
            self._unsupported(node, f"in-place '{node.target}' on '{source.name}', which may share memory with "
                                    "another value (a view, slice or alias); use inplace=False")

    def _may_alias(self, node) -> bool:
        if node.op == "call_module":
            return isinstance(self.gm.get_submodule(node.target), _ALIAS_MODULES)
        if node.op in ("call_function", "call_method"):
            name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
            return node.target is operator.getitem or name in _VIEW_NAMES
        return False

    def _module(self, node, module) -> None:
        if isinstance(module, _MOVE_MODULES):
            self._move(node)
            return
        src = self._graph_input(node)
        self._inplace_check(node, bool(getattr(module, "inplace", False)))
        if isinstance(module, (torch.nn.Identity, torch.nn.Dropout)):
            self._alias(node, src)
        elif isinstance(module, torch.nn.Linear):
            if len(self.graph.nodes[src].shape) != 1:
                self._unsupported(node, f"Linear applied to values of shape {self.graph.nodes[src].shape} "
                                        "(flatten them first)")
            bias = module.bias if module.bias is not None else torch.zeros(module.out_features)
            self._add(Linear(self.param(module.weight), self.param(bias)), (src,), node)
        elif isinstance(module, torch.nn.Conv2d):
            if module.padding_mode != "zeros" or isinstance(module.padding, str):
                if isinstance(module.padding, str) and module.padding_mode == "zeros":
                    padding = _same_padding(module) if module.padding == "same" else (0, 0)
                else:
                    self._unsupported(node, f"Conv2d with padding_mode='{module.padding_mode}'")
            else:
                padding = _pair(module.padding)
            bias = module.bias if module.bias is not None else torch.zeros(module.out_channels)
            self._add(Conv2d(self.param(module.weight), self.param(bias), _pair(module.stride), padding,
                             _pair(module.dilation), int(module.groups)), (src,), node)
        elif isinstance(module, torch.nn.ConvTranspose2d):
            self._conv_transpose(node, module, src)
        elif isinstance(module, torch.nn.ReLU):
            self._add(ReLU(), (src,), node)
        elif isinstance(module, torch.nn.Flatten):
            self._add(Reshape(), (src,), node)
        elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            self._batch_norm(node, module, src)
        elif isinstance(module, torch.nn.AvgPool2d):
            self._avg_pool(node, module, src)
        elif isinstance(module, torch.nn.AdaptiveAvgPool2d):
            self._adaptive_avg_pool(node, src, module.output_size)
        elif isinstance(module, torch.nn.MaxPool2d):
            self._max_pool(node, src, module.kernel_size, module.stride, module.padding, module.dilation,
                           module.ceil_mode, module.return_indices)
        elif isinstance(module, tuple(_SMOOTH_MODULES)):
            self._smooth(node, src, _SMOOTH_MODULES[type(module)], module)
        elif isinstance(module, torch.nn.LeakyReLU):
            self.index[node] = self._leaky(src, float(module.negative_slope), node.name)
        elif isinstance(module, torch.nn.Hardtanh):  # ReLU6 too
            self.index[node] = self._clamp(src, float(module.min_val), float(module.max_val), node.name)
        elif isinstance(module, torch.nn.Hardsigmoid):
            self.index[node] = self._hard_sigmoid(src, node.name)
        else:
            self._unsupported(node, f"module {type(module).__name__} ('{node.target}')")

    def _graph_input(self, node) -> int:
        if len(node.args) != 1 or node.kwargs:
            self._unsupported(node, f"call of '{node.target}' with {len(node.args)} arguments")
        kind, value = self._value(node.args[0], node)
        if kind != "graph":
            self._unsupported(node, f"'{node.target}' applied to a constant")
        return value

    def _batch_norm(self, node, bn, src) -> None:
        if not bn.track_running_stats or bn.running_mean is None:
            self._unsupported(node, "BatchNorm without running statistics")
        shape = self._shape(node)
        # y = (x - mean) / sqrt(var + eps) * gamma + beta = s x + t; s, t in float64 are within a
        # few ulps of the reals (sqrt and division are correctly rounded).
        var = _f64(bn.running_var) + bn.eps
        gamma = _f64(bn.weight) if bn.weight is not None else np.ones_like(var)
        beta = _f64(bn.bias) if bn.bias is not None else np.zeros_like(var)
        scale = gamma / np.sqrt(var)  # var + eps, sqrt, division: within 2 eps64 relative
        shift = beta - _f64(bn.running_mean) * scale
        # The shift's error is relative to its terms (|beta| + |mean scale|, doubled for the error
        # carried in scale), not to the difference, which can cancel.
        terms = np.abs(beta) + np.abs(_f64(bn.running_mean) * scale)
        magnitude = 2 * terms
        view = (-1,) + (1,) * (len(shape) - 1)
        affine = exact_affine(scale.reshape(view), shift.reshape(view), shift_magnitude=magnitude.reshape(view))
        # The terms' size, rounded up past its few float64 ulps of error (float32 inference's bound).
        terms32 = np.nextafter((terms * (1 + 2**-40)).astype(np.float32), np.float32(np.inf)).reshape(view)
        affine = dataclasses.replace(affine, t_terms=torch.from_numpy(np.ascontiguousarray(terms32)))
        self._add(affine, (src,), node)

    def _avg_pool(self, node, pool, src) -> None:
        if pool.ceil_mode or pool.divisor_override is not None or not pool.count_include_pad:
            self._unsupported(node, "AvgPool2d with ceil_mode, divisor_override or count_include_pad=False")
        kernel = _pair(pool.kernel_size)
        self._average(node, src, kernel, _pair(pool.stride if pool.stride is not None else kernel), _pair(pool.padding))

    def _average(self, node, src, kernel, stride, padding, shape=None) -> int:
        """Average pooling as a depthwise convolution with weights exactly 1, then the exact factor
        1 / (kh kw)."""
        kh, kw = kernel
        channels = self.graph.nodes[src].shape[0]
        ones = torch.ones((channels, 1, kh, kw))
        shape = self._shape(node) if shape is None else shape
        conv = self.graph.add(Conv2d(ones, torch.zeros(channels), stride, padding, (1, 1), channels),
                              (src,), shape, node.name + ".sum")
        factor = np.full((1,), 1.0 / (kh * kw))  # within half an ulp of the real 1 / (kh kw)
        self.index[node] = self.graph.add(exact_affine(factor, np.zeros(1)), (conv,), shape, node.name)
        return self.index[node]

    def _map_shape(self, node, src, what: str) -> tuple[int, int, int]:
        shape = self.graph.nodes[src].shape
        if len(shape) != 3:
            self._unsupported(node, f"{what} of values of shape {shape} (certify pools (C, H, W) maps)")
        return shape

    def _adaptive_avg_pool(self, node, src, output_size) -> None:
        channels, height, width = self._map_shape(node, src, "adaptive average pooling")
        oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
        oh, ow = oh or height, ow or width
        if height % oh == 0 and width % ow == 0:  # equal windows: average pooling
            kernel = (height // oh, width // ow)
            self._average(node, src, kernel, kernel, (0, 0))
            return
        # Windows of different sizes (torch: rows floor(i H / oh) to ceil((i + 1) H / oh)): a sum
        # with weights exactly 1 on the flat values, then each window's exact factor.
        if channels * oh * ow * channels * height * width > 16_000_000:
            self._unsupported(node, "adaptive average pooling with unequal windows on a map this large")
        weight = torch.zeros(channels, oh, ow, channels, height, width)
        count = np.zeros((channels, oh, ow))
        for i in range(oh):
            r0, r1 = (i * height) // oh, -(-((i + 1) * height) // oh)
            for j in range(ow):
                c0, c1 = (j * width) // ow, -(-((j + 1) * width) // ow)
                for c in range(channels):
                    weight[c, i, j, c, r0:r1, c0:c1] = 1
                count[:, i, j] = (r1 - r0) * (c1 - c0)
        n_out = channels * oh * ow
        flat = self.graph.add(Reshape(), (src,), (channels * height * width,), node.name + ".flat")
        total = self.graph.add(Linear(weight.reshape(n_out, -1), torch.zeros(n_out)), (flat,), (n_out,),
                               node.name + ".sum")
        mean = self.graph.add(exact_affine(1.0 / count.reshape(-1), np.zeros(1)), (total,), (n_out,), node.name + ".mean")
        self._add(Reshape(), (mean,), node)

    def _spatial_mean(self, node, args) -> None:
        """x.mean((2, 3)) / x.mean((-2, -1)) of a (C, H, W) map: global average pooling."""
        src = self._first_graph_arg(node)
        _, height, width = self._map_shape(node, src, "a mean")
        dims = args.get("dim")
        dims = (dims,) if isinstance(dims, int) else tuple(dims or ())
        if sorted(d % 4 for d in dims) != [2, 3] or args.get("dtype") is not None:
            self._unsupported(node, f"a mean over dimensions {dims} (only over the two spatial ones of (B, C, H, W))")
        channels = self.graph.nodes[src].shape[0]
        pooled = self._average(node, src, (height, width), (height, width), (0, 0), shape=(channels, 1, 1))
        if self._shape(node) != (channels, 1, 1):
            self._add(Reshape(), (pooled,), node)

    def _max_pool(self, node, src, kernel, stride, padding, dilation, ceil_mode, return_indices) -> None:
        """max over each window, as a tree of max(a, b) = a + relu(b - a) over one Gather per window
        position (exact, and branchable: each max is a ReLU). Padding means -inf: a window's padded
        positions read one of its own values instead (max(a, a) = a)."""
        if ceil_mode or return_indices:
            self._unsupported(node, "max pooling with ceil_mode=True or return_indices=True")
        channels, height, width = self._map_shape(node, src, "max pooling")
        kernel = _pair(kernel)
        stride = kernel if stride is None or (not isinstance(stride, int) and len(stride) == 0) else _pair(stride)
        codes = torch.arange(1, channels * height * width + 1, dtype=torch.float64).reshape(1, channels, height, width)
        cols = torch.nn.functional.unfold(codes, kernel, dilation=_pair(dilation), padding=_pair(padding),
                                          stride=stride)
        index = cols.reshape(channels, kernel[0] * kernel[1], -1).long() - 1  # (C, offsets, windows); -1: padding
        first = index.max(1).values  # any value of the window (codes are >= 0 where not padding)
        if bool((first < 0).any()):
            self._unsupported(node, "max pooling with a window that lies entirely in the padding")
        index = torch.where(index < 0, first.unsqueeze(1), index)
        shape = self._shape(node)
        maps = []
        for k in range(index.shape[1]):
            flat = index[:, k, :].reshape(-1)
            if not any(torch.equal(flat, m) for m in maps):
                maps.append(flat)
        values = [self._gather(src, m, shape, f"{node.name}.window{k}") for k, m in enumerate(maps)]
        while len(values) > 1:  # a balanced tree: depth log2(kernel area)
            paired = [self._max(values[i], values[i + 1], f"{node.name}.max") for i in range(0, len(values) - 1, 2)]
            values = paired + values[len(paired) * 2:]
        self.index[node] = values[0]

    def _conv_transpose(self, node, module, src) -> None:
        """ConvTranspose2d as a convolution: the input spread out with stride - 1 zeros between values
        and (dilation (k - 1) - padding) zeros around (a Gather), then a stride-1 convolution with the
        kernel flipped and its channel axes swapped: the same sum of products for every output."""
        if module.padding_mode != "zeros":
            self._unsupported(node, f"ConvTranspose2d with padding_mode='{module.padding_mode}'")
        channels, height, width = self._map_shape(node, src, "a transposed convolution")
        out_c, out_h, out_w = self._shape(node)
        (kh, kw), (sh, sw), (ph, pw) = _pair(module.kernel_size), _pair(module.stride), _pair(module.padding)
        (dh, dw), groups = _pair(module.dilation), int(module.groups)
        top, left = dh * (kh - 1) - ph, dw * (kw - 1) - pw
        zh, zw = out_h + dh * (kh - 1), out_w + dw * (kw - 1)
        index = torch.full((channels, zh, zw), -1, dtype=torch.long)
        rows, cols = top + sh * torch.arange(height), left + sw * torch.arange(width)
        source = torch.arange(channels * height * width).reshape(channels, height, width)
        keep_r, keep_c = (rows >= 0) & (rows < zh), (cols >= 0) & (cols < zw)
        index[:, rows[keep_r].unsqueeze(1), cols[keep_c].unsqueeze(0)] = source[:, keep_r][:, :, keep_c]
        spread = self._gather(src, index.reshape(-1), (channels, zh, zw), node.name + ".spread")
        w = self.param(module.weight)  # (C_in, C_out / g, kh, kw)
        in_g, out_g = channels // groups, out_c // groups
        w = w.reshape(groups, in_g, out_g, kh, kw).transpose(1, 2).reshape(out_c, in_g, kh, kw).flip(-2, -1)
        bias = module.bias if module.bias is not None else torch.zeros(out_c)
        self._add(Conv2d(w.contiguous(), self.param(bias), (1, 1), (0, 0), (dh, dw), groups), (spread,), node)

    # ------------------------------------------------------- activations
    def _smooth(self, node, src, name: str, module) -> None:
        """A smooth activation; softplus's beta becomes exact scalings around it."""
        args = _bind(node, _SIGNATURES.get(name, ())) if module is None else vars(module)
        self._inplace_check(node, bool(args.get("inplace", False)))
        if name == "gelu" and args.get("approximate", "none") != "none":
            self._unsupported(node, f"GELU with approximate='{args.get('approximate')}' (only the exact erf form)")
        if name == "elu":
            alpha = float(np.float32(args.get("alpha", 1.0)))
            if not alpha > 0:
                self._unsupported(node, f"ELU with alpha={alpha} (certify needs alpha > 0)")
            self._add(Activation("elu", alpha=alpha), (src,), node)
            return
        if name != "softplus":
            self._add(Activation(name), (src,), node)
            return
        beta, threshold = float(np.float32(args.get("beta", 1.0))), float(np.float32(args.get("threshold", 20.0)))
        if not (beta > 0 and math.isfinite(beta) and threshold > 0):
            self._unsupported(node, f"Softplus with beta={beta}, threshold={threshold} (needs beta > 0, threshold > 0)")
        # torch: x where beta x > threshold, else log(1 + exp(beta x)) / beta; below the real
        # softplus by at most log(1 + e^-threshold) / beta (in beta x units before the 1 / beta)
        margin = math.log1p(math.exp(-threshold)) * (1 + 2**-40) + 2**-1000
        shape = self._shape(node)
        inner = src if beta == 1 else self._scale(src, beta, node.name + ".beta")
        out = self.graph.add(Activation("softplus", lower_margin=margin), (inner,), shape, node.name)
        if beta != 1:
            out = self.graph.add(exact_affine(np.full(1, 1.0 / beta), np.zeros(1)), (out,), shape, node.name + ".unbeta")
        self.index[node] = out

    def _leaky(self, src, slope: float, where: str) -> int:
        """leaky(x) = s x + (1 - s) relu(x), with s the float32 slope torch multiplies by."""
        s = float(np.float32(slope))
        shape = self.graph.nodes[src].shape
        relu = self.graph.add(ReLU(), (src,), shape, where + ".relu")
        if s == 0:
            return relu
        kept = self.graph.add(exact_affine(np.full(1, 1.0 - s), np.zeros(1)), (relu,), shape, where + ".kept")
        linear = self._scale(src, s, where + ".linear")
        return self.graph.add(Add(), (linear, kept), shape, where)

    def _clamp(self, src, lo, hi, where: str) -> int:
        """min(max(x, lo), hi) with ReLUs: lo + relu(x - lo), then hi - relu(hi - that); lo and hi
        float32 constants (scalars or arrays broadcasting to x), as torch compares with them."""
        shape = self.graph.nodes[src].shape

        def constant(c):
            if c is None:
                return None
            c = np.asarray(c, dtype=np.float32).astype(np.float64)
            c = c.reshape(c.shape[1:]) if c.ndim == len(shape) + 1 and c.shape[0] == 1 else c  # a batch of 1
            try:
                if np.broadcast_shapes(c.shape, shape) != shape:
                    raise ValueError
            except ValueError:
                raise UnsupportedModelError(f"a clamp at '{where}' by a constant of shape {c.shape} that does not "
                                            f"broadcast to the values' shape {shape}") from None
            if np.isnan(c).any():
                raise UnsupportedModelError(f"a clamp at '{where}' by NaN")
            return c

        lo, hi = constant(lo), constant(hi)
        if lo is not None and hi is not None and bool(np.any(lo > hi)):
            raise UnsupportedModelError(f"a clamp at '{where}' with min > max")

        def affine(x, scale, shift, suffix):
            return self.graph.add(exact_affine(np.full(1, scale), shift, exact=True), (x,), shape, where + suffix)

        x = src
        if lo is not None:  # max(x, lo) = lo + relu(x - lo)
            x = self.graph.add(ReLU(), (affine(x, 1.0, -lo, ".below"),), shape, where + ".relu_min")
            if hi is None:
                return affine(x, 1.0, lo, "")
            return affine(self.graph.add(ReLU(), (affine(x, -1.0, hi - lo, ".above"),), shape, where + ".relu_max"),
                          -1.0, hi, "")
        x = self.graph.add(ReLU(), (affine(x, -1.0, hi, ".above"),), shape, where + ".relu_max")
        return affine(x, -1.0, hi, "")

    def _hard_sigmoid(self, src, where: str) -> int:
        """torch's hardsigmoid: (x + 3) / 6 clamped to [0, 1]."""
        shape = self.graph.nodes[src].shape
        scaled = self.graph.add(exact_affine(np.full(1, 1 / 6), np.full(1, 0.5)), (src,), shape, where + ".affine")
        return self._clamp(scaled, 0.0, 1.0, where)

    def _scale(self, src, factor: float, where: str) -> int:
        return self.graph.add(exact_affine(np.full(1, factor), np.zeros(1), exact=True), (src,),
                              self.graph.nodes[src].shape, where)

    def _max(self, a, b, where: str) -> int:
        """max(a, b) = a + relu(b - a)."""
        shape = self.graph.nodes[a].shape
        diff = self.graph.add(Add(), (b, self._scale(a, -1.0, where + ".neg")), shape, where + ".diff")
        return self.graph.add(Add(), (a, self.graph.add(ReLU(), (diff,), shape, where + ".relu")), shape, where)

    def _min(self, a, b, where: str) -> int:
        """min(a, b) = a - relu(a - b)."""
        shape = self.graph.nodes[a].shape
        diff = self.graph.add(Add(), (a, self._scale(b, -1.0, where + ".neg")), shape, where + ".diff")
        relu = self.graph.add(ReLU(), (diff,), shape, where + ".relu")
        return self.graph.add(Add(), (a, self._scale(relu, -1.0, where + ".negrelu")), shape, where)

    def _constant_or_none(self, node, value):
        if value is None:
            return None
        kind, v = self._value(value, node)
        if kind != "const":
            self._unsupported(node, "a clamp whose bound is computed from the input")
        return _f64(v) if isinstance(v, torch.Tensor) else float(v)

    # ------------------------------------------------------- moves
    def _gather(self, src, index: torch.Tensor, shape, where: str) -> int:
        counts = torch.bincount(index[index >= 0], minlength=1)
        return self.graph.add(Gather(index.contiguous(), int(counts.max()) if len(counts) else 0), (src,), shape, where)

    def _sources(self, node, seen=None) -> set[int]:
        """The graph values that `node` reads, through tuples and shape queries."""
        seen = set() if seen is None else seen
        found: set[int] = set()
        for arg in node.all_input_nodes:
            if arg in seen:
                continue
            seen.add(arg)
            if arg in self.index:
                found.add(self.index[arg])
            elif arg not in self.constants:
                found |= self._sources(arg, seen)
        return found

    def _evaluate(self, node, lookup, memo):
        """node's value with every graph value k replaced by lookup(k) (a tensor with a batch)."""
        if node in memo:
            return memo[node]
        if node in self.index:
            value = lookup(self.index[node])
        elif node in self.constants:
            value = self.constants[node]
        else:
            args = torch.fx.node.map_arg(node.args, lambda n: self._evaluate(n, lookup, memo))
            kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: self._evaluate(n, lookup, memo))
            if node.op == "call_function":
                value = node.target(*args, **kwargs)
            elif node.op == "call_method":
                value = getattr(args[0], node.target)(*args[1:], **kwargs)
            elif node.op == "call_module":
                value = self.gm.get_submodule(node.target)(*args, **kwargs)
            else:
                self._unsupported(node, f"'{node.op}' inside a slicing or concatenation")
        memo[node] = value
        return value

    def _move(self, node) -> None:
        """An operation that only moves values: run on codes that name every input value (and on
        zeros), it shows where each output value comes from, or which constant it is. The result
        is one Gather per graph value read, added, plus the constants as a shift."""
        meta = node.meta.get("tensor_meta")
        if not hasattr(meta, "shape"):
            return  # not a tensor (a tuple's part of a shape, say): evaluated where it is used
        target = node.target if node.op == "call_module" else None
        if target is not None:
            module = self.gm.get_submodule(target)
            if isinstance(module, torch.nn.Upsample) and module.mode != "nearest":
                self._unsupported(node, f"Upsample with mode='{module.mode}' (only 'nearest' moves values)")
        elif getattr(node.target, "__name__", node.target) in ("interpolate", "upsample"):
            mode = _bind(node, ("size", "scale_factor", "mode")).get("mode", "nearest")
            if mode != "nearest":
                self._unsupported(node, f"interpolation with mode='{mode}' (only 'nearest' moves values)")
        shape = self._shape(node)
        sources = sorted(self._sources(node))
        if not sources:
            self._unsupported(node, "an operation on constants only")
        # Two batch sizes: an operation whose arguments depend on the batch size (x.shape[0]) moves
        # values differently for each, and is refused.
        gathers, constant = self._moves_on_codes(node, sources, shape, 2)
        again, constant_again = self._moves_on_codes(node, sources, shape, 3)
        if gathers.keys() != again.keys() or not all(torch.equal(gathers[k], again[k]) for k in gathers) \
                or not torch.equal(constant, constant_again):
            self._unsupported(node, "an operation that depends on the batch size (e.g. x.shape[0] as an argument)")
        parts = []
        for k, index in gathers.items():
            if torch.equal(index, torch.arange(self.graph.nodes[k].size)):  # the same values, the same order
                parts.append(k if self.graph.nodes[k].shape == shape else
                             self.graph.add(Reshape(), (k,), shape, node.name + ".reshape"))
            else:
                parts.append(self._gather(k, index, shape, f"{node.name}.from{k}"))
        out = parts[0]
        for part in parts[1:]:
            out = self.graph.add(Add(), (out, part), shape, node.name + ".join")
        if bool((constant != 0).any()):
            shift = exact_affine(np.ones(1), _f64(constant).reshape(shape), exact=True)
            out = self.graph.add(shift, (out,), shape, node.name + ".fill")
        self.index[node] = out

    def _moves_on_codes(self, node, sources, shape, batch: int):
        """({graph value k: index (size,) into k, -1 elsewhere}, constant values (size,)) of the move
        `node`, from running it on a batch of `batch` inputs whose values are codes naming each one
        (float32 integers) and on zeros; every input of the batch must move the same way."""
        sizes = {k: self.graph.nodes[k].size for k in sources}
        bases, total = {}, 0
        for k in sources:
            bases[k], total = total, total + batch * sizes[k]
        if total >= 2**24:  # codes are float32 integers
            self._unsupported(node, f"slicing or concatenation of {total // batch} values (at most {2**24 // 3})")
        codes = {k: (bases[k] + torch.arange(1, batch * sizes[k] + 1, dtype=torch.float32))
                 .reshape(batch, *self.graph.nodes[k].shape) for k in sources}
        try:
            coded = self._evaluate(node, codes.__getitem__, {})
            zeros = self._evaluate(node, lambda k: torch.zeros_like(codes[k]), {})
        except UnsupportedModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the model's own operation
            self._unsupported(node, f"an operation that fails on a batch of {batch} ({exc})")
        if not isinstance(coded, torch.Tensor) or tuple(coded.shape) != (batch, *shape) or coded.dtype != torch.float32:
            self._unsupported(node, "an operation whose result does not keep the batch as its first dimension")
        coded, zeros = coded.reshape(batch, -1), zeros.reshape(batch, -1)
        moved = coded != zeros
        constant = torch.where(moved[0], torch.zeros_like(zeros[0]), zeros[0])
        batch_ok = all(torch.equal(moved[0], moved[b]) and torch.equal(zeros[0][~moved[0]], zeros[b][~moved[b]])
                       for b in range(1, batch))
        gathers = {}
        for k in sources:
            first = coded[0] - bases[k] - 1
            mine = moved[0] & (first >= 0) & (first < batch * sizes[k])
            batch_ok = batch_ok and bool((first[mine] < sizes[k]).all()) and all(
                torch.equal(first[mine], (coded[b] - bases[k] - 1 - b * sizes[k])[mine]) for b in range(1, batch))
            if bool(mine.any()):
                gathers[k] = torch.where(mine, first, torch.full_like(first, -1)).long()
        if not batch_ok:
            self._unsupported(node, "an operation that mixes values of different inputs of a batch")
        return gathers, constant

    # --------------------------------------------------------------- functions
    def _function(self, node) -> None:
        target = node.target
        name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        if name == "size" or (target is getattr and node.args[1:] == ("shape",)):
            return  # a shape query (as in x.view(x.size(0), -1)): not a value the bounds follow
        if target in (torch.relu, torch.nn.functional.relu) or name == "relu":
            self._inplace_check(node, bool(node.kwargs.get("inplace", False)) or
                                (len(node.args) > 1 and bool(node.args[1])))
            self._add(ReLU(), (self._first_graph_arg(node),), node)
        elif target in (torch.flatten,) or name in ("flatten", "view", "reshape", "contiguous", "squeeze",
                                                    "unsqueeze", "view_as", "reshape_as"):
            self._reshape(node)
        elif target in (operator.add, torch.add) or name in ("add", "__add__"):
            self._binary(node, "add")
        elif target in (operator.sub, torch.sub) or name in ("sub", "__sub__"):
            self._binary(node, "sub")
        elif target in (operator.truediv, torch.div) or name in ("div", "__truediv__"):
            self._binary(node, "div")
        elif target in (operator.mul, torch.mul) or name in ("mul", "__mul__"):
            self._binary(node, "mul")
        elif target is operator.neg or name == "neg":
            self.index[node] = self._scale(self._first_graph_arg(node), -1.0, node.name)
        elif target is torch.nn.functional.dropout or name == "dropout":
            self._alias(node, self._first_graph_arg(node))
        elif target in _MOVE_FUNCTIONS or name in _MOVE_METHODS:
            self._move(node)
        elif target in _TUPLE_FUNCTIONS or name in _TUPLE_METHODS:
            return  # a tuple of parts (split, chunk): each part's getitem is a move that runs it
        elif name in _SMOOTH_FUNCTIONS:
            self._smooth(node, self._first_graph_arg(node), name, None)
        else:
            self._piecewise_function(node, name)

    def _piecewise_function(self, node, name: str) -> None:
        """The piecewise-linear activations, pooling and max / min, written with ReLUs and Gathers."""
        args = _bind(node, _SIGNATURES.get(name, ()))
        self._inplace_check(node, bool(args.get("inplace", False)))
        if name in ("leaky_relu",):
            self.index[node] = self._leaky(self._first_graph_arg(node), float(args.get("negative_slope", 0.01)),
                                           node.name)
        elif name in ("hardtanh", "relu6"):
            lo, hi = (0.0, 6.0) if name == "relu6" else (float(args.get("min_val", -1.0)), float(args.get("max_val", 1.0)))
            self.index[node] = self._clamp(self._first_graph_arg(node), lo, hi, node.name)
        elif name == "hardsigmoid":
            self.index[node] = self._hard_sigmoid(self._first_graph_arg(node), node.name)
        elif name in ("clamp", "clip", "clamp_min", "clamp_max"):  # _SIGNATURES names their bounds
            self.index[node] = self._clamp(self._first_graph_arg(node), self._constant_or_none(node, args.get("min")),
                                           self._constant_or_none(node, args.get("max")), node.name)
        elif name in ("max", "min") and (len(node.args) != 2 or node.kwargs or isinstance(node.args[1], (int, float))):
            self._unsupported(node, f"'{name}' as a reduction over a dimension (only the elementwise max / min of "
                                    "two values is supported)")
        elif name in ("maximum", "minimum", "max", "min", "fmax", "fmin") and len(node.args) == 2 and not node.kwargs:
            (ka, a), (kb, b) = self._value(node.args[0], node), self._value(node.args[1], node)
            if ka != "graph" and kb != "graph":
                self._unsupported(node, f"'{name}' of two constants")
            if ka != "graph":
                (ka, a), (kb, b) = (kb, b), (ka, a)
            larger = name in ("maximum", "max", "fmax")
            if kb == "graph":
                if self.graph.nodes[a].shape != self._shape(node) or self.graph.nodes[b].shape != self._shape(node):
                    self._unsupported(node, f"'{name}' of values of different shapes")
                self.index[node] = (self._max if larger else self._min)(a, b, node.name)
            else:
                c = _f64(b)
                self.index[node] = self._clamp(a, c if larger else None, None if larger else c, node.name)
        elif name == "max_pool2d":
            self._max_pool(node, self._first_graph_arg(node), args["kernel_size"], args.get("stride"),
                           args.get("padding", 0), args.get("dilation", 1), args.get("ceil_mode", False),
                           args.get("return_indices", False))
        elif name == "adaptive_avg_pool2d":
            self._adaptive_avg_pool(node, self._first_graph_arg(node), args["output_size"])
        elif name == "mean":
            self._spatial_mean(node, args)
        else:
            self._unsupported(node, f"function '{name}'")

    def _first_graph_arg(self, node) -> int:
        kind, value = self._value(node.args[0], node)
        if kind != "graph":
            self._unsupported(node, f"'{node.target}' applied to a constant")
        return value

    def _reshape(self, node) -> None:
        """view / reshape / flatten / squeeze ...: checked like any move (a reshape that mixes the
        batch, as x.view(-1) does, is refused there); the same order becomes Reshape or an alias."""
        self._move(node)

    def _binary(self, node, op: str) -> None:
        if len(node.args) != 2 or node.kwargs:
            self._unsupported(node, f"'{op}' with arguments {node.args} {node.kwargs}")
        (ka, a), (kb, b) = self._value(node.args[0], node), self._value(node.args[1], node)
        shape = self._shape(node)
        if ka == "graph" and kb == "graph":
            if op not in ("add", "sub"):
                self._unsupported(node, f"'{op}' of two computed values (only their sums and differences are supported)")
            if self.graph.nodes[a].shape != shape or self.graph.nodes[b].shape != shape:
                self._unsupported(node, f"'{op}' of two computed values of different shapes")
            if op == "sub":
                b = self._scale(b, -1.0, node.name + ".neg")
            self._add(Add(), (a, b), node)
            return
        if ka != "graph" and kb != "graph":
            self._unsupported(node, f"'{op}' of two constants")
        if ka != "graph":  # constant on the left: only c + x and c * x are affine in x
            if op not in ("add", "mul"):
                self._unsupported(node, f"constant {op} value")
            (ka, a), (kb, b) = (kb, b), (ka, a)
        if self.graph.nodes[a].shape != shape:
            self._unsupported(node, f"'{op}' with a constant that broadcasts the value to a new shape")
        c = _f64(b)
        c = c.reshape(c.shape[1:]) if c.ndim == len(shape) + 1 and c.shape[0] == 1 else c
        if op == "add":
            affine = exact_affine(np.ones(1), c, exact=True)
        elif op == "sub":
            affine = exact_affine(np.ones(1), -c, exact=True)
        elif op == "mul":
            affine = exact_affine(c, np.zeros(1), exact=True)
        else:
            if np.any(c == 0):
                raise ValueError(f"division by zero in the model at '{node.name}'")
            affine = exact_affine(1.0 / c, np.zeros(1))
        try:
            torch.broadcast_shapes(affine.s_lo.shape, affine.t_lo.shape, shape)
        except RuntimeError:
            self._unsupported(node, f"'{op}' with a constant of shape {tuple(c.shape)} for values of shape {shape}")
        self._add(affine, (a,), node)


def _get_attr(gm, target: str) -> torch.Tensor:
    value = gm
    for part in target.split("."):
        value = getattr(value, part)
    if not isinstance(value, torch.Tensor):
        raise UnsupportedModelError(f"attribute '{target}' is not a tensor")
    return value


def _same_padding(conv) -> tuple[int, int]:
    pads = []
    for k, d in zip(_pair(conv.kernel_size), _pair(conv.dilation)):
        total = d * (k - 1)
        if total % 2:
            raise UnsupportedModelError("Conv2d padding='same' with asymmetric padding")
        pads.append(total // 2)
    return tuple(pads)


def _bind(node, names) -> dict:
    """A call's arguments after its input, by name: positional ones named by `names`, then kwargs."""
    bound = dict(zip(names, node.args[1:]))
    bound.update(node.kwargs)
    return bound


# Positional parameters after the input, for the functions whose arguments the tracer reads.
_SIGNATURES = {
    "leaky_relu": ("negative_slope", "inplace"),
    "hardtanh": ("min_val", "max_val", "inplace"),
    "relu6": ("inplace",),
    "hardsigmoid": ("inplace",),
    "clamp": ("min", "max"), "clip": ("min", "max"), "clamp_min": ("min",), "clamp_max": ("max",),
    "max_pool2d": ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices"),
    "adaptive_avg_pool2d": ("output_size",),
    "mean": ("dim", "keepdim"),
    "elu": ("alpha", "inplace"),
    "softplus": ("beta", "threshold"),
    "gelu": ("approximate",),
}

_nn, _F = torch.nn, torch.nn.functional
_SMOOTH_MODULES = {_nn.Sigmoid: "sigmoid", _nn.Tanh: "tanh", _nn.Softplus: "softplus", _nn.ELU: "elu",
                   _nn.SiLU: "silu", _nn.GELU: "gelu"}
_SMOOTH_FUNCTIONS = set(_SMOOTH_MODULES.values())  # torch.sigmoid, F.silu, x.tanh(), ...: the same names
_MOVE_MODULES = (_nn.ZeroPad1d, _nn.ZeroPad2d, _nn.ConstantPad1d, _nn.ConstantPad2d, _nn.ReflectionPad1d,
                 _nn.ReflectionPad2d, _nn.ReplicationPad1d, _nn.ReplicationPad2d, _nn.PixelShuffle,
                 _nn.PixelUnshuffle, _nn.Unflatten, _nn.ChannelShuffle, _nn.Upsample)
_MOVE_FUNCTIONS = {operator.getitem, torch.cat, torch.concat, torch.concatenate, torch.stack, _F.pad, torch.permute,
                   torch.transpose, torch.swapaxes, torch.flip, torch.roll, torch.narrow, torch.select, torch.t,
                   torch.index_select, torch.movedim, _F.pixel_shuffle, _F.pixel_unshuffle, torch.tile,
                   _F.interpolate}
_MOVE_METHODS = {"permute", "transpose", "flip", "roll", "narrow", "select", "t", "repeat", "expand", "expand_as",
                 "index_select", "movedim", "swapaxes", "tile"}
_TUPLE_FUNCTIONS = {torch.split, torch.chunk, torch.unbind, torch.tensor_split}
# What may return a view or the same tensor (an in-place op on it would write into another value).
_VIEW_NAMES = {"view", "reshape", "flatten", "contiguous", "squeeze", "unsqueeze", "view_as", "reshape_as",
               "transpose", "permute", "narrow", "select", "expand", "expand_as", "t", "movedim", "swapaxes",
               "unflatten", "split", "chunk", "unbind", "tensor_split", "dropout", "detach",
               "diagonal", "as_strided", "unfold"}
_ALIAS_MODULES = (_nn.Identity, _nn.Dropout, _nn.Flatten, _nn.Unflatten)
_TUPLE_METHODS = {"split", "chunk", "unbind", "tensor_split"}


# The one table of what the bound engines support: how each operator becomes layers, and with
# which methods it is bounded. README.md's operator table and BoundedModel's docstring come from it
# (tests/test_operator_coverage.py checks that they match).
ALL_METHODS = ("IBP", "CROWN", "CROWN-IBP", "alpha-CROWN", "BaB")
SMOOTH_METHODS = ("IBP", "CROWN", "CROWN-IBP", "alpha-CROWN")  # BaB splits ReLUs only: smooth ones stay relaxed
OPERATORS = (
    # (operator, torch forms, ONNX operators, how the engines see it, methods)
    ("Linear", "nn.Linear", "Gemm, MatMul", "Linear", ALL_METHODS),
    ("Conv2d", "nn.Conv2d (stride, padding, dilation, groups)", "Conv", "Conv2d", ALL_METHODS),
    ("ReLU", "nn.ReLU, F.relu, torch.relu", "Relu", "ReLU (exact, split by BaB)", ALL_METHODS),
    ("BatchNorm (eval)", "nn.BatchNorm1d/2d", "BatchNormalization", "ElementwiseAffine (exact interval)", ALL_METHODS),
    ("AvgPool2d", "nn.AvgPool2d (count_include_pad)", "AveragePool", "Conv2d of ones, exact 1/k^2", ALL_METHODS),
    ("AdaptiveAvgPool2d / global mean", "nn.AdaptiveAvgPool2d, x.mean((2, 3))", "GlobalAveragePool",
     "Conv2d of ones (Linear for unequal windows), exact 1/n", ALL_METHODS),
    ("MaxPool2d", "nn.MaxPool2d, F.max_pool2d (padding = -inf, dilation)", "MaxPool",
     "Gather per window position, max(a, b) = a + relu(b - a)", ALL_METHODS),
    ("max / min of two values", "torch.maximum, torch.minimum, torch.max(a, b)", "Max, Min",
     "a + relu(b - a), a - relu(a - b)", ALL_METHODS),
    ("LeakyReLU", "nn.LeakyReLU, F.leaky_relu", "LeakyRelu", "s x + (1 - s) relu(x)", ALL_METHODS),
    ("HardTanh / ReLU6 / clamp", "nn.Hardtanh, nn.ReLU6, torch.clamp (constant bounds)", "Clip",
     "lo + relu(x - lo), hi - relu(hi - x)", ALL_METHODS),
    ("Hardsigmoid", "nn.Hardsigmoid", "HardSigmoid (as Mul, Add, Clip)", "affine, then the clamp's ReLUs",
     ALL_METHODS),
    ("Sigmoid", "nn.Sigmoid, torch.sigmoid", "Sigmoid", "Activation: tangent / chord lines", SMOOTH_METHODS),
    ("Tanh", "nn.Tanh, torch.tanh", "Tanh", "Activation: tangent / chord lines", SMOOTH_METHODS),
    ("Softplus", "nn.Softplus (beta, threshold)", "Softplus", "Activation (convex)", SMOOTH_METHODS),
    ("ELU", "nn.ELU (alpha > 0)", "Elu", "Activation (convex, then linear)", SMOOTH_METHODS),
    ("SiLU", "nn.SiLU, F.silu", "(Mul of Sigmoid: not converted)", "Activation", SMOOTH_METHODS),
    ("GELU", "nn.GELU (erf form)", "(Erf: not converted)", "Activation", SMOOTH_METHODS),
    ("ConvTranspose2d", "nn.ConvTranspose2d", "ConvTranspose", "Gather (spread with zeros), then Conv2d",
     ALL_METHODS),
    ("Pad", "F.pad, nn.ZeroPad2d / ConstantPad / ReflectionPad / ReplicationPad", "Pad (constant)",
     "Gather, constants as a shift", ALL_METHODS),
    ("Slice / Split / Concat / permute", "x[...], torch.split / chunk, torch.cat / stack, permute, flip, "
     "nearest Upsample", "Slice, Split, Concat", "Gather per part, added", ALL_METHODS),
    ("Flatten / reshape", "nn.Flatten, view, reshape, squeeze", "Flatten, Reshape, Squeeze, Unsqueeze",
     "Reshape", ALL_METHODS),
    ("Add / Sub of two values", "x + y, x - y", "Add, Sub", "Add (and an exact -1)", ALL_METHODS),
    ("Arithmetic with constants", "x + c, x - c, x * c, x / c", "Add, Sub, Mul, Div",
     "ElementwiseAffine (exact interval)", ALL_METHODS),
    ("Identity / Dropout (eval)", "nn.Identity, nn.Dropout", "Identity, Dropout", "nothing", ALL_METHODS),
)


def operator_list() -> str:
    """One line per supported operator (BoundedModel's docstring)."""
    return "\n".join(f"      - {name}: {forms}" for name, forms, *_ in OPERATORS)


def operator_table(ratios: dict | None = None) -> str:
    """The README's table: per operator, its forms and the methods that bound it. ratios: operator
    -> {method column: mean width ratio} (benchmarks/bench_operators.py), shown in place of "yes"."""
    head = "| operator | PyTorch | ONNX | becomes | " + " | ".join(ALL_METHODS) + " |"
    rule = "|" + "---|" * (4 + len(ALL_METHODS))
    rows = []
    for name, forms, onnx, how, methods in OPERATORS:
        cells = []
        for m in ALL_METHODS:
            ratio = (ratios or {}).get(name, {}).get(m)
            cells.append("-" if m not in methods else f"{ratio:.2f}" if ratio is not None else "yes")
        rows.append(f"| {name} | {forms} | {onnx} | {how} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])
