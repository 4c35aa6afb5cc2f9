"""From a PyTorch model to certify's layer graph: a small IR that the bound engines run.

A Graph is a list of Nodes in topological order; node 0 is the input. Each node holds one
layer value (below), the indices of its inputs and its output shape (no batch dimension).
Tracing uses torch.fx; every operation must map to one of these layers, or tracing fails with
an error naming the operation and where it occurs in the model.

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
    "Graph", "Node", "Input", "Linear", "Conv2d", "ReLU", "Reshape", "ElementwiseAffine", "Add",
    "trace", "UnsupportedModelError",
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


Layer = Input | Linear | Conv2d | ReLU | Reshape | ElementwiseAffine | Add


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
            "Supported: Linear, Conv2d, ReLU, Flatten/view/reshape, BatchNorm1d/2d (eval), AvgPool2d, "
            "Identity, Dropout (eval), residual additions, and input normalisation by constants."
        )

    def _add(self, layer, inputs, node) -> None:
        self.index[node] = self.graph.add(layer, inputs, self._shape(node), node.name)

    def _alias(self, node, source: int) -> None:
        self.index[node] = source

    # --------------------------------------------------------------- modules
    def _inplace_check(self, node, inplace: bool) -> None:
        """An in-place op overwrites its input: sound only when nothing else reads that input."""
        source = node.args[0]
        if inplace and isinstance(source, torch.fx.Node) and len(source.users) > 1:
            self._unsupported(node, f"in-place '{node.target}' on a value that is also used elsewhere "
                                    f"('{source.name}' is read after being overwritten; use inplace=False)")

    def _module(self, node, module) -> None:
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
        elif isinstance(module, torch.nn.ReLU):
            self._add(ReLU(), (src,), node)
        elif isinstance(module, torch.nn.Flatten):
            self._add(Reshape(), (src,), node)
        elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            self._batch_norm(node, module, src)
        elif isinstance(module, torch.nn.AvgPool2d):
            self._avg_pool(node, module, src)
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
        kh, kw = _pair(pool.kernel_size)
        stride = _pair(pool.stride if pool.stride is not None else pool.kernel_size)
        channels = self.graph.nodes[src].shape[0]
        # A depthwise convolution with weights exactly 1, then the exact factor 1 / (kh kw).
        ones = torch.ones((channels, 1, kh, kw))
        shape = self._shape(node)
        conv = self.graph.add(Conv2d(ones, torch.zeros(channels), stride, _pair(pool.padding), (1, 1), channels),
                              (src,), shape, node.name + ".sum")
        factor = np.full((1,), 1.0 / (kh * kw))  # within half an ulp of the real 1 / (kh kw)
        self.index[node] = self.graph.add(exact_affine(factor, np.zeros(1)), (conv,), shape, node.name)

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
        elif target in (torch.flatten,) or name in ("flatten", "view", "reshape", "contiguous"):
            self._reshape(node)
        elif target in (operator.add, torch.add) or name in ("add", "__add__"):
            self._binary(node, "add")
        elif target in (operator.sub, torch.sub) or name in ("sub", "__sub__"):
            self._binary(node, "sub")
        elif target in (operator.truediv, torch.div) or name in ("div", "__truediv__"):
            self._binary(node, "div")
        elif target in (operator.mul, torch.mul) or name in ("mul", "__mul__"):
            self._binary(node, "mul")
        elif target is torch.nn.functional.dropout or name == "dropout":
            self._alias(node, self._first_graph_arg(node))
        else:
            self._unsupported(node, f"function '{name}'")

    def _first_graph_arg(self, node) -> int:
        kind, value = self._value(node.args[0], node)
        if kind != "graph":
            self._unsupported(node, f"'{node.target}' applied to a constant")
        return value

    def _reshape(self, node) -> None:
        src = self._first_graph_arg(node)
        if self._shape(node) == self.graph.nodes[src].shape:
            self._alias(node, src)  # .contiguous(), or a reshape to the same shape
        else:
            self._add(Reshape(), (src,), node)

    def _binary(self, node, op: str) -> None:
        if len(node.args) != 2 or node.kwargs:
            self._unsupported(node, f"'{op}' with arguments {node.args} {node.kwargs}")
        (ka, a), (kb, b) = self._value(node.args[0], node), self._value(node.args[1], node)
        shape = self._shape(node)
        if ka == "graph" and kb == "graph":
            if op != "add":
                self._unsupported(node, f"'{op}' of two computed values (only residual addition is supported)")
            if self.graph.nodes[a].shape != shape or self.graph.nodes[b].shape != shape:
                self._unsupported(node, "residual addition of values with different shapes")
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
