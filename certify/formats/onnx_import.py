"""ONNX files in and out: load_onnx turns an ONNX model into a float32 torch.fx.GraphModule built from
standard torch modules, which smoothing runs and certify.BoundedModel traces; export_onnx writes one.

The conversion walks the ONNX graph in order and applies one rule per operator type (the table
_RULES at the end). Each rule sees the node's inputs as either
  * a numpy array: a constant (initializer, Constant node, or a value folded from constants), or
  * a _Computed: a value computed from the model input, i.e. a node of the fx graph being built.
A node whose inputs are all constants is evaluated once with onnx's reference evaluator (exact
ONNX semantics), so Transpose / Squeeze / Unsqueeze / arithmetic on constants need no rule of
their own. The batch size is the one number not known while converting: Shape of a computed value
gives an object array holding None in its place, which Gather / Unsqueeze / Concat carry along so
that the `x.view(x.size(0), -1)` pattern of torch exports becomes a Reshape keeping the batch.

Hostile files: nodes the output does not depend on are skipped, never evaluated. Sizes are checked
against certify.limits before anything is allocated: every tensor in the file (its declared shape),
each folded value (worked out from its inputs' shapes) and each value computed from the input (per
input, from the shapes). Tensors with external data and sparse tensors are refused before onnx's
checker runs, since the checker looks up external files relative to the current folder.

Batch dimension: a leading input dimension that is symbolic or 1 is the batch; the module takes
(B, *input_shape) for any B. An input declared without one (e.g. [784]) is taken as one sample
(input_shape = (784,)) and the module still takes a batch (B, 784): each row is run through the
ONNX graph on its own. Operators whose ONNX definition has a batch axis (Gemm, Conv, ConvTranspose,
pooling, batch norm, Flatten, Shape) are refused for such inputs.

Bound propagation supports the modules and functions made for Gemm, MatMul, Conv, ConvTranspose,
Relu, LeakyRelu, Elu, Softplus, Sigmoid, Tanh, Clip, HardSigmoid, MaxPool, GlobalAveragePool, Flatten,
Reshape / Squeeze / Unsqueeze (of computed values: reshapes keeping the batch), BatchNormalization,
AveragePool (no padding, or padding counted in the average), Pad (constant), Slice, Split, Concat,
Max / Min, Add / Sub / Mul / Div by constants, Add and Sub of two computed values, Identity and
Dropout. Softmax, LogSoftmax, AveragePool with padding left out of the average, and Mul / Div of two
computed values convert for smoothing; BoundedModel then refuses them, naming the module.
"""

from __future__ import annotations

import math
import operator
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.fx
from torch import nn

from certify import limits
from certify._files import _mode_for
from certify.bounds import UnsupportedModelError
from certify.formats import ModelFileError

__all__ = ["export_onnx", "load_onnx"]

OPSET = 17
_MAX_RANK = 32  # dimensions of a value computed from the input, batch included (real models use <= 6)


# ----------------------------------------------------------------------------- public API
def load_onnx(path) -> torch.fx.GraphModule:
    """Reads the ONNX model at `path` into an equivalent float32 torch.fx.GraphModule in eval mode.

    The module takes (B, *module.input_shape) and returns (B, *module.output_shape).
    Raises ModelFileError for a file that is missing, corrupt, not ONNX, fails onnx's checker or
    refers to external data; UnsupportedModelError for an operator or input certify cannot convert
    (naming the operator and the node), and for float64 models (bounds are for float32 weights);
    certify.limits.ResourceLimitError for a file, tensor or value larger than certify's limits.
    """
    try:
        import onnx  # noqa: F401 - an optional dependency, needed only here
    except ImportError as exc:
        raise ImportError("reading ONNX models needs the onnx package: pip install onnx") from exc
    path = os.fspath(path)
    return _Converter(_read(path), path).convert()


def export_onnx(model: nn.Module, input_shape, path) -> None:
    """Writes `model` (float32) to `path` as ONNX (opset 17) taking (batch, *input_shape), batch dynamic.

    Uses torch's TorchScript-based exporter (dynamo=False): it needs no extra packages and emits
    the plain Gemm / Conv / Relu / Flatten graphs load_onnx reads back. The file appears complete
    or not at all (written beside `path`, then renamed over it).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if any(p.is_floating_point() and p.dtype != torch.float32 for p in model.parameters()):
        raise ValueError("export_onnx needs a float32 model (load_onnx refuses others); "
                         "convert with model.float()")
    input_shape = tuple(int(d) for d in input_shape)
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # The legacy exporter announces its own deprecation; it is the one that needs no onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, (torch.zeros((1, *input_shape)),), tmp, input_names=["input"],
                              output_names=["output"], opset_version=OPSET, dynamo=False,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        os.chmod(tmp, _mode_for(Path(path)))  # mkstemp's 0600 -> what open() would give (or the old file's)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ----------------------------------------------------------------------------- reading
def _read(path: str):
    """The checked ModelProto at `path`; every way the file can be unusable becomes a ModelFileError."""
    import onnx
    from onnx import SparseTensorProto, TensorProto

    if not os.path.isfile(path):
        why = "it is not a file" if os.path.exists(path) else "no such file"
        raise ModelFileError(f"cannot read ONNX model '{path}': {why}")
    if os.path.getsize(path) == 0:
        raise ModelFileError(f"cannot read ONNX model '{path}': the file is empty")
    limits.check("file_bytes", os.path.getsize(path), f"ONNX model '{path}'")
    try:
        # External data is refused below: loading it would read other files named inside this one.
        model = onnx.load(path, load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf and onnx raise many types
        raise ModelFileError(f"cannot read ONNX model '{path}': the file is corrupt, truncated or not an "
                             f"ONNX model ({_first_line(exc)})") from None
    # Every tensor anywhere in the file (initializers, sparse ones, node attributes, subgraphs,
    # functions) is looked at before onnx's checker, which would look up external files.
    messages = list(_messages(model))
    tensors = [m for m in messages if isinstance(m, TensorProto)]
    if any(t.data_location == TensorProto.EXTERNAL or len(t.external_data) for t in tensors):
        raise ModelFileError(f"ONNX model '{path}' keeps its weights in external data files, which certify "
                             "does not read; save it as a single file (onnx.save(model, path, "
                             "save_as_external_data=False))")
    if any(isinstance(m, SparseTensorProto) for m in messages):
        raise ModelFileError(f"ONNX model '{path}' holds sparse tensors (a sparse_initializer or a Constant's "
                             "sparse_value), which certify does not read; store them as dense tensors")
    for t in tensors:
        if any(d < 0 for d in t.dims):
            raise ModelFileError(f"ONNX model '{path}': tensor '{t.name}' declares the negative shape {list(t.dims)}")
        limits.check("tensor_elements", math.prod(t.dims), f"ONNX model '{path}': tensor '{t.name}' of shape "
                     f"{list(t.dims)}")
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # noqa: BLE001 - ValidationError, or a C++ error for odd files
        raise ModelFileError(f"'{path}' is not a valid ONNX model: {_first_line(exc)}") from None
    return model


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:300] if text else type(exc).__name__)


def _messages(message):
    """Every protobuf message inside `message`, itself included."""
    from google.protobuf.message import Message

    stack = [message]
    while stack:
        current = stack.pop()
        yield current
        for field, value in current.ListFields():
            if field.type == field.TYPE_MESSAGE:  # not the numbers of a tensor: they can be many
                stack.extend([value] if isinstance(value, Message) else value)


# ----------------------------------------------------------------------------- conversion
@dataclass(frozen=True, eq=False)
class _Computed:
    """A value computed from the model input: its fx node, and its value on a batch of 2 zero
    inputs (which gives shapes while converting; 2 so the batch is never mistaken for a 1)."""

    node: torch.fx.Node
    example: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:  # without the batch dimension
        return tuple(self.example.shape[1:])


def _refuse(node, why: str):
    raise UnsupportedModelError(f"ONNX node '{_label(node)}' ({node.op_type}): {why}")


def _label(node) -> str:
    return node.name or node.output[0]  # names are optional in ONNX; output names are not


class _Converter:
    def __init__(self, model, path: str):
        from onnx import numpy_helper

        self.model = model
        self.path = path
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.root = nn.Module()
        self.graph = torch.fx.Graph()
        self.taken: set[str] = set()
        self.buffers: dict[int, str] = {}  # id of a constant array -> its buffer's name
        self.values: dict = {}
        for t in model.graph.initializer:  # their sizes were checked in _read
            try:
                self.values[t.name] = numpy_helper.to_array(t)
            except (ValueError, TypeError) as exc:  # data that does not fit the declared shape or type
                raise ModelFileError(f"'{path}': initializer '{t.name}' is damaged: {_first_line(exc)}") from None

    # --------------------------------------------------------------- building blocks
    def _name(self, raw: str, fallback: str) -> str:
        """A unique attribute name for the root module, readable in the tracer's messages."""
        base = re.sub(r"\W+", "_", raw).strip("_") or fallback
        base = base if base[0].isalpha() else f"{fallback}_{base}"
        name, k = base, 1
        while name in self.taken:
            name, k = f"{base}_{k}", k + 1
        self.taken.add(name)
        return name

    def computed(self, node, value, what: str = "its input") -> _Computed:
        if not isinstance(value, _Computed):
            _refuse(node, f"{what} must be computed from the model input, not a constant")
        return value

    def weights(self, node, value, what: str) -> torch.Tensor:
        """A float32 constant as a tensor. Other float types are refused, not rounded: bounds for
        rounded weights would be bounds for a different network."""
        if not isinstance(value, np.ndarray) or value.dtype == object:
            _refuse(node, f"{what} must be a constant (an initializer or Constant node)")
        if value.dtype != np.float32:
            _refuse(node, f"{what} has dtype {value.dtype}; certify reads float32 models only "
                          "(bounds are for float32 weights): convert the model to float32 before export")
        return torch.from_numpy(np.array(value, copy=True))

    def _arg(self, node, value):
        """The fx argument for a rule's argument: a graph node, a buffer read (get_attr), a list of
        them (torch.cat's), or as is (Python numbers, slices)."""
        if isinstance(value, list):
            pairs = [self._arg(node, v) for v in value]
            return [p[0] for p in pairs], [p[1] for p in pairs]
        if isinstance(value, _Computed):
            return value.node, value.example
        if isinstance(value, np.ndarray):
            tensor = self.weights(node, value, "a constant operand")
            if id(value) not in self.buffers:
                self.buffers[id(value)] = name = self._name("const_" + node.name, "const")
                self.root.register_buffer(name, tensor)
            return self.graph.get_attr(self.buffers[id(value)]), tensor
        return value, value

    def call(self, node, fn, *args, **kwargs) -> _Computed:
        """Appends fn(*args, **kwargs) to the graph: fn a module (registered under the ONNX node's
        name), a function, or a method name (a string). kwargs hold plain Python values only."""
        fx_args, examples = zip(*(self._arg(node, a) for a in args))
        where = f"'{self.path}': ONNX node '{_label(node)}' ({node.op_type}) computes a value of shape"
        # from the shapes alone: checked before anything is computed
        shape = _result_shape(fn, examples, kwargs)
        limits.check("tensor_elements", math.prod(shape[1:]), f"{where} {shape[1:]} for each input")
        with torch.no_grad():
            if isinstance(fn, nn.Module):
                example = fn.eval()(*examples, **kwargs)
            elif isinstance(fn, str):
                example = getattr(examples[0], fn)(*examples[1:], **kwargs)
            else:
                example = fn(*examples, **kwargs)
        limits.check("tensor_elements", example[0].numel(), f"{where} {tuple(example.shape[1:])} for each input")
        if isinstance(fn, nn.Module):
            name = self._name(node.name, node.op_type.lower())
            self.root.add_module(name, fn)
            out = self.graph.call_module(name, tuple(fx_args), kwargs)
        elif isinstance(fn, str):
            out = self.graph.call_method(fn, tuple(fx_args), kwargs)
        else:
            out = self.graph.call_function(fn, tuple(fx_args), kwargs)
        return _Computed(out, example)

    def reshape(self, node, x: _Computed, shape) -> _Computed:
        """x viewed as (B, *shape): an alias when nothing changes."""
        shape = tuple(int(d) for d in shape)
        if len(shape) >= _MAX_RANK:
            _refuse(node, f"a value of {len(shape)} dimensions; certify supports at most {_MAX_RANK - 1} "
                          "besides the batch")
        return x if shape == x.shape else self.call(node, "reshape", x, -1, *shape)

    def axis(self, node, axis: int, rank: int) -> int:
        """The torch axis of ONNX axis `axis` of a rank-`rank` ONNX value (one more without a batch)."""
        if not -rank <= axis < rank:
            _refuse(node, f"axis {axis} is out of range for a value of rank {rank}")
        return axis % rank + (0 if self.batched else 1)

    def onnx_rank(self, x: _Computed) -> int:
        return x.example.dim() - (0 if self.batched else 1)

    # --------------------------------------------------------------- the walk
    def convert(self) -> torch.fx.GraphModule:
        g = self.model.graph
        x = self._input(g)
        self.values[x.name] = _Computed(self.graph.placeholder("x"), torch.zeros((2, *self.input_shape)))
        nodes = _live(g)  # a node the output does not depend on is never evaluated
        consumed = {name for n in nodes for name in n.input} | {o.name for o in g.output}
        for node in nodes:
            rule = _RULES.get(node.op_type) if node.domain in ("", "ai.onnx") else None
            if rule is None:
                op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
                raise UnsupportedModelError(
                    f"{self.path}: ONNX node '{_label(node)}' uses operator {op}, which certify does not "
                    f"convert. Supported: {', '.join(sorted(_RULES))}")
            inputs = [self.values[name] if name else None for name in node.input]
            attrs = {a.name: _attribute(a) for a in node.attribute}
            try:
                if all(v is None or (isinstance(v, np.ndarray) and v.dtype != object) for v in inputs):
                    outputs = self._fold(node, inputs, attrs)  # constants only: evaluated once, here
                else:  # a rule gives the node's first output, or a list of all its outputs (Split)
                    result = rule(self, node, inputs, attrs)
                    outputs = result if isinstance(result, list) else [result]
                    if any(name in consumed for name in node.output[len(outputs):]):
                        _refuse(node, "only its first output can be used (not a mask, indices or statistics)")
            except UnsupportedModelError as exc:
                raise UnsupportedModelError(f"{self.path}: {exc}") from None
            except limits.ResourceLimitError:
                raise
            except (RuntimeError, ValueError, TypeError, IndexError, ArithmeticError) as exc:
                # inconsistent shapes or types, or sizes beyond numpy's integers
                shapes = [v.shape for v in inputs if isinstance(v, (_Computed, np.ndarray))]
                raise ModelFileError(f"'{self.path}': ONNX node '{_label(node)}' ({node.op_type}) fails on "
                                     f"inputs of shapes {shapes}: {_first_line(exc)}") from None
            self.values.update(zip(node.output, outputs))
        return self._module(g)

    def _input(self, g):
        from onnx import TensorProto

        inits = {t.name for t in g.initializer}
        inputs = [i for i in g.input if i.name not in inits]
        if len(inputs) != 1:
            raise UnsupportedModelError(f"{self.path}: the model takes {len(inputs)} inputs "
                                        f"({', '.join(i.name for i in inputs)}); certify supports one input")
        tensor = inputs[0].type.tensor_type
        dtype = TensorProto.DataType.Name(tensor.elem_type)
        if not inputs[0].type.HasField("tensor_type") or tensor.elem_type != TensorProto.FLOAT:
            raise UnsupportedModelError(f"{self.path}: the input '{inputs[0].name}' is of type {dtype}; "
                                        "certify reads float32 models only (bounds are for float32 weights)")
        if not tensor.HasField("shape"):
            raise UnsupportedModelError(f"{self.path}: the input '{inputs[0].name}' has no declared shape")
        # A size that is symbolic, missing or 0 (some exporters' "unknown") is None.
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                for d in tensor.shape.dim]
        self.batched = len(dims) >= 2 and dims[0] in (None, 1)
        sample = dims[1:] if self.batched else dims
        if not sample or None in sample:
            raise UnsupportedModelError(f"{self.path}: the input '{inputs[0].name}' has shape {dims}; "
                                        "certify needs fixed sizes apart from a leading batch dimension")
        if len(sample) >= _MAX_RANK:
            raise UnsupportedModelError(f"{self.path}: the input '{inputs[0].name}' has {len(dims)} dimensions; "
                                        f"certify supports at most {_MAX_RANK - 1} besides the batch")
        limits.check("tensor_elements", math.prod(sample), f"'{self.path}': the input '{inputs[0].name}' of "
                     f"shape {dims}")
        self.input_shape = tuple(sample)
        return inputs[0]

    def _fold(self, node, inputs, attrs) -> list:
        """The node's outputs, evaluated on its constant inputs once the size of the largest has been
        worked out from the input shapes and checked (before anything is computed)."""
        from onnx.reference import ReferenceEvaluator

        where = f"'{self.path}': ONNX node '{_label(node)}' ({node.op_type}), a value folded from constants"
        limits.check("tensor_elements", _folded_elements(node, inputs, attrs), where)
        names = [name for name, v in zip(node.input, inputs) if v is not None]
        with np.errstate(all="ignore"):  # x / 0 is inf in ONNX too
            evaluator = ReferenceEvaluator(node, opsets={"": self.opset})
            outputs = [np.asarray(v) for v in evaluator.run(None, {n: self.values[n] for n in names})]
        for value in outputs:
            limits.check("tensor_elements", value.size, where)
        return outputs

    def _module(self, g) -> torch.fx.GraphModule:
        if len(g.output) != 1:
            raise UnsupportedModelError(f"{self.path}: the model has {len(g.output)} outputs; "
                                        "certify supports one")
        result = self.values[g.output[0].name]
        if not isinstance(result, _Computed):
            raise UnsupportedModelError(f"{self.path}: the model's output does not depend on its input")
        self.graph.output(result.node)
        module = torch.fx.GraphModule(self.root, self.graph, class_name="OnnxModel").eval()
        module.graph.eliminate_dead_code()  # the tracer wants the output to be the last value computed
        module.delete_all_unused_submodules()
        module.recompile()
        module.input_shape = self.input_shape
        module.output_shape = result.shape
        return module


def _result_shape(fn, examples, kwargs=None) -> tuple[int, ...]:
    """The shape of fn(*examples, **kwargs), batch first, from the examples' shapes alone: exact for
    the operations that can give more elements than their inputs (broadcasting arithmetic, nn.Linear,
    convolutions, pooling, padding, concatenation); for the others (activations, batch norm, reshapes,
    slices) the input's shape, which has at least as many elements. A shape that does not fit is left
    for fn to refuse."""
    if fn is torch.cat:
        shapes = [tuple(e.shape) for e in examples[0]]
        dim = (kwargs or {}).get("dim", 0)
        if len({len(s) for s in shapes}) != 1 or not -len(shapes[0]) <= dim < len(shapes[0]):
            return shapes[0]
        dim %= len(shapes[0])
        return (*shapes[0][:dim], sum(s[dim] for s in shapes), *shapes[0][dim + 1:])
    shapes = [tuple(e.shape) for e in examples if isinstance(e, torch.Tensor)]
    x = shapes[0]
    pair = lambda v: tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    if fn in (operator.add, operator.sub, operator.mul, operator.truediv, torch.maximum, torch.minimum):
        try:
            return tuple(np.broadcast_shapes(*shapes))
        except ValueError:
            return x
    if isinstance(fn, nn.Linear):
        return (*x[:-1], fn.out_features)
    if len(x) != 4:
        return x
    if isinstance(fn, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        kernel, stride, padding = pair(fn.kernel_size), pair(fn.stride), pair(fn.padding)
        dilation = pair(getattr(fn, "dilation", 1))
        size = [max((n + 2 * p - d * (k - 1) - 1) // s + 1, 0) if s > 0 else n  # stride 0: fn refuses it
                for n, k, s, p, d in zip(x[2:], kernel, stride, padding, dilation)]
        return (x[0], fn.out_channels if isinstance(fn, nn.Conv2d) else x[1], *size)
    if isinstance(fn, nn.ConvTranspose2d):
        size = [max((n - 1) * s - 2 * p + d * (k - 1) + o + 1, 0)
                for n, k, s, p, d, o in zip(x[2:], fn.kernel_size, fn.stride, fn.padding, fn.dilation,
                                            fn.output_padding)]
        return (x[0], fn.out_channels, *size)
    if isinstance(fn, nn.ConstantPad2d):
        left, right, top, bottom = fn.padding
        return (x[0], x[1], x[2] + top + bottom, x[3] + left + right)
    return x


def _live(g) -> list:
    """The nodes the graph's outputs depend on, in graph order (onnx's checker requires the graph
    sorted, so a node's inputs come from nodes before it)."""
    needed = {o.name for o in g.output}
    live = []
    for node in reversed(g.node):
        if any(name in needed for name in node.output):
            live.append(node)
            needed.update(name for name in node.input if name)
    return live[::-1]


def _folded_elements(node, inputs, attrs) -> int:
    """The number of elements of the largest output of `node` evaluated on the constants `inputs`,
    from their shapes alone (Python integers: no overflow). Inputs whose shapes do not fit the
    operator raise ValueError, as evaluating them would."""
    op = node.op_type
    shapes = [None if v is None else tuple(v.shape) for v in inputs]
    if op in ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "GlobalAveragePool"):
        _refuse(node, "a convolution or pooling of constants; certify folds only shape and arithmetic "
                      "operations on constants")
    if op in ("Add", "Sub", "Mul", "Div"):
        return math.prod(np.broadcast_shapes(*shapes[:2]))
    if op in ("Max", "Min"):  # variadic
        return math.prod(np.broadcast_shapes(*[s for s in shapes if s is not None]))
    if op == "Pad":
        if not shapes or shapes[0] is None:
            raise ValueError("Pad without data")
        amounts = _pad_amounts(node, inputs, attrs, len(shapes[0]))
        return math.prod(max(n + begin + end, 0) for n, (begin, end) in zip(shapes[0], amounts))
    if op == "Gemm":
        a, b = shapes[:2]
        if len(a) != 2 or len(b) != 2:
            raise ValueError(f"Gemm needs 2-D factors, got {a} and {b}")
        return a[1 if attrs.get("transA", 0) else 0] * b[0 if attrs.get("transB", 0) else 1]
    if op == "MatMul":
        a, b = shapes[:2]
        if not a or not b:
            raise ValueError("MatMul of a scalar")
        a, b = ((1, *a) if len(a) == 1 else a), ((*b, 1) if len(b) == 1 else b)
        if a[-1] != b[-2]:
            raise ValueError(f"MatMul of shapes {shapes[0]} and {shapes[1]}")
        return math.prod(np.broadcast_shapes(a[:-2], b[:-2])) * a[-2] * b[-1]
    if op == "Gather":
        data, indices = shapes[:2]
        if not data:
            raise ValueError("Gather from a scalar")
        axis = attrs.get("axis", 0) % len(data)
        return math.prod(data[:axis]) * math.prod(indices) * math.prod(data[axis + 1:])
    if op == "Concat":
        return sum(math.prod(s) for s in shapes if s is not None)
    if op in ("Reshape", "Squeeze", "Unsqueeze") and len(shapes) > 1 and shapes[1] is not None \
            and math.prod(shapes[1]) > 64:  # numpy's most dimensions
        raise ValueError(f"a shape or axes of {math.prod(shapes[1])} entries")
    if op == "ConstantOfShape":  # as many elements as its input's entries say
        dims = [int(d) for d in inputs[0].reshape(-1)] if inputs and inputs[0] is not None else []
        if len(dims) > 64 or min(dims, default=0) < 0:  # numpy's most dimensions
            raise ValueError(f"ConstantOfShape of the shape {dims[:8]}")
        return math.prod(dims)
    if op == "Constant":  # its tensor's size was checked in _read; a list attribute is as long as the file
        value = attrs.get("value")
        return math.prod(value.dims) if value is not None and hasattr(value, "dims") else 0
    # The rest (unary arithmetic, activations, Clip, batch norm, Reshape, Flatten, Squeeze, Unsqueeze,
    # Transpose, Identity, Dropout, Shape, Slice, Split) give no more elements than their largest input.
    return max((math.prod(s) for s in shapes if s is not None), default=0)


def _attribute(attr):
    from onnx import helper

    value = helper.get_attribute_value(attr)
    return value.decode() if isinstance(value, bytes) else value


# ----------------------------------------------------------------------------- rules
# Each rule: (converter, node, inputs, attributes) -> the node's first output, or a list of all
# its outputs (Split).
def _gemm(cv, node, inputs, attrs):
    """Y = alpha A B' + beta C -> nn.Linear with weight alpha B' and bias beta C. alpha and beta are
    folded only when the products are exactly float32 (a float32 times a float32 is exact in
    float64, so comparing after rounding decides it); otherwise the weights would change."""
    x, b, c = (inputs + [None])[:3]
    x = cv.computed(node, x)
    if attrs.get("transA", 0):
        _refuse(node, "transA=1 (the batch would be the inner dimension)")
    if len(x.shape) != 1:
        _refuse(node, f"its input has shape {x.shape} per sample; Gemm needs (batch, features)")
    weight = cv.weights(node, b, "B")
    if weight.dim() != 2:
        _refuse(node, f"B of shape {tuple(weight.shape)}; Gemm needs a 2-D B")
    weight = weight if attrs.get("transB", 0) else weight.T  # nn.Linear stores (out, in)
    # skip_init: no random initialisation (which would draw from, and so move, torch's global RNG)
    linear = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=c is not None)
    linear.weight.data = _scaled(node, weight, attrs.get("alpha", 1.0), "alpha")
    if c is not None:
        bias = cv.weights(node, c, "C")
        if bias.dim() == 2 and bias.shape[0] != 1:
            _refuse(node, f"C of shape {tuple(bias.shape)} depends on the batch row")
        bias = torch.broadcast_to(bias.reshape(-1), (weight.shape[0],)).contiguous()
        linear.bias.data = _scaled(node, bias, attrs.get("beta", 1.0), "beta")
    return cv.call(node, linear, x)


def _scaled(node, tensor: torch.Tensor, factor: float, name: str) -> torch.Tensor:
    if factor == 1.0:
        return tensor.contiguous()
    exact = tensor.double() * factor
    if not torch.equal(exact.float().double(), exact):
        _refuse(node, f"{name}={factor:g} times the weights is not exactly a float32 number; folding it "
                      "would change the network (export with alpha=beta=1)")
    return exact.float()


def _matmul(cv, node, inputs, attrs):
    """x @ W with a constant 2-D W -> nn.Linear without bias (it multiplies the last axis, as MatMul)."""
    x = cv.computed(node, inputs[0], "the left factor")
    weight = cv.weights(node, inputs[1], "the right factor")
    if weight.dim() != 2:
        _refuse(node, f"the constant factor has shape {tuple(weight.shape)}; certify supports 2-D weights")
    linear = nn.utils.skip_init(nn.Linear, weight.shape[0], weight.shape[1], bias=False)
    linear.weight.data = weight.T.contiguous()
    return cv.call(node, linear, x)


def _conv(cv, node, inputs, attrs):
    x, w, b = (inputs + [None])[:3]
    x = cv.computed(node, x)
    weight = cv.weights(node, w, "the kernel")
    if weight.dim() != 4 or len(x.shape) != 3:
        _refuse(node, f"a kernel of shape {tuple(weight.shape)}; certify supports 2-D convolutions only")
    kernel = tuple(attrs.get("kernel_shape", weight.shape[2:]))
    if kernel != tuple(weight.shape[2:]):
        _refuse(node, f"kernel_shape {kernel} differs from the kernel's shape {tuple(weight.shape[2:])}")
    padding = _padding(node, attrs)
    groups = attrs.get("group", 1)
    conv = nn.utils.skip_init(nn.Conv2d, weight.shape[1] * groups, weight.shape[0], kernel,
                              stride=tuple(attrs.get("strides", (1, 1))), padding=padding, groups=groups,
                              dilation=tuple(attrs.get("dilations", (1, 1))), bias=b is not None)
    conv.weight.data = weight
    if b is not None:
        conv.bias.data = cv.weights(node, b, "the bias")
    return cv.call(node, conv, x)


def _padding(node, attrs) -> tuple[int, int]:
    """ONNX pads [top, left, bottom, right] as torch's symmetric (rows, cols) padding."""
    auto_pad = attrs.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        _refuse(node, f"auto_pad={auto_pad} (padding that depends on the input size; "
                      "export with explicit pads)")
    pads = tuple(attrs.get("pads", (0, 0, 0, 0))) if auto_pad == "NOTSET" else (0, 0, 0, 0)
    if len(pads) != 4 or pads[:2] != pads[2:]:
        _refuse(node, f"pads {list(pads)}: certify supports symmetric 2-D padding only")
    return pads[:2]


def _pool_geometry(node, x, attrs):
    """(kernel, stride, padding) of a 2-D pooling; ONNX's stride defaults to 1, torch's to the kernel."""
    if len(x.shape) != 3:
        _refuse(node, f"input of shape {x.shape} per sample; certify supports 2-D pooling of (C, H, W) only")
    if attrs.get("ceil_mode", 0):
        _refuse(node, "ceil_mode=1 (torch and ONNX place the last window differently)")
    kernel = tuple(attrs["kernel_shape"])
    padding = _padding(node, attrs)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        _refuse(node, f"padding {padding} larger than half the kernel {kernel}")
    return kernel, tuple(attrs.get("strides", (1, 1))), padding


def _average_pool(cv, node, inputs, attrs):
    """Without padding count_include_pad changes nothing: AvgPool2d(count_include_pad=True) is the
    form the tracer bounds. With padding, ONNX's default (pads not counted) keeps that meaning in
    torch; the tracer then refuses it."""
    x = cv.computed(node, inputs[0])
    if any(d != 1 for d in attrs.get("dilations", (1, 1))):
        _refuse(node, "dilations other than 1")
    kernel, stride, padding = _pool_geometry(node, x, attrs)
    include = bool(attrs.get("count_include_pad", 0)) or padding == (0, 0)
    return cv.call(node, nn.AvgPool2d(kernel, stride, padding, count_include_pad=include), x)


def _max_pool(cv, node, inputs, attrs):
    x = cv.computed(node, inputs[0])
    kernel, stride, padding = _pool_geometry(node, x, attrs)
    pool = nn.MaxPool2d(kernel, stride, padding, dilation=tuple(attrs.get("dilations", (1, 1))))
    return cv.call(node, pool, x)


def _batch_norm(cv, node, inputs, attrs):
    """Inference batch norm: (x - mean) / sqrt(var + eps) * scale + B over axis 1, as torch's eval mode."""
    x = cv.computed(node, inputs[0])
    if attrs.get("training_mode", 0):
        _refuse(node, "training_mode=1 (batch statistics)")
    kinds = {1: nn.BatchNorm1d, 2: nn.BatchNorm1d, 3: nn.BatchNorm2d}
    if len(x.shape) not in kinds:
        _refuse(node, f"input of shape {x.shape} per sample; certify supports (C,), (C, L) and (C, H, W)")
    names = ("scale", "B", "input_mean", "input_var")
    scale, bias, mean, var = (cv.weights(node, v, what) for v, what in zip(inputs[1:5], names))
    bn = kinds[len(x.shape)](x.shape[0], eps=attrs.get("epsilon", 1e-5))
    bn.weight.data, bn.bias.data, bn.running_mean.data, bn.running_var.data = scale, bias, mean, var
    return cv.call(node, bn, x)


def _flatten(cv, node, inputs, attrs):
    x = cv.computed(node, inputs[0])
    rank = cv.onnx_rank(x)
    if cv.axis(node, attrs.get("axis", 1), rank) != 1:
        _refuse(node, f"axis={attrs.get('axis', 1)}: only Flatten(axis=1), which keeps the batch, converts")
    return cv.call(node, nn.Flatten(), x)


def _reshape(cv, node, inputs, attrs):
    """A constant target shape whose first entry is the batch (1, -1, 0 or the batch size itself from a
    Shape) becomes x.reshape(-1, *rest): the same per-sample reshape for every batch size."""
    x = cv.computed(node, inputs[0], "the reshaped value")
    if not isinstance(inputs[1], np.ndarray):
        _refuse(node, "the target shape must be a constant (not computed from values)")
    if inputs[1].size > _MAX_RANK:
        _refuse(node, f"a target shape of {inputs[1].size} dimensions; certify supports at most {_MAX_RANK}")
    target = [None if d is None else int(d) for d in inputs[1].reshape(-1)]
    rest = target[1:] if cv.batched else target
    allowzero = attrs.get("allowzero", 0)
    if cv.batched and target[0] not in ((None, -1, 1) if allowzero else (None, -1, 0, 1)):
        _refuse(node, f"target shape {target} does not keep the batch as the first dimension")
    if None in rest:
        _refuse(node, f"target shape with the batch size in a non-leading position ({target})")
    if not allowzero:  # 0 copies the input's size at that position
        rest = [x.shape[i] if d == 0 and i < len(x.shape) else d for i, d in enumerate(rest)]
    size, known = math.prod(x.shape), math.prod(d for d in rest if d != -1)  # Python integers: no overflow
    if rest.count(-1) == 1 and known > 0 and size % known == 0:
        rest = [size // known if d == -1 else d for d in rest]
    if math.prod(rest) != size or min(rest, default=1) <= 0:
        _refuse(node, f"target shape {target} does not map one sample of shape {x.shape} to one sample")
    return cv.reshape(node, x, rest)


def _binary(fn):
    """Add / Sub / Mul / Div with numpy broadcasting, which torch shares. A constant operand must not
    reach the batch axis (that would tie the model to one batch size)."""

    def rule(cv, node, inputs, attrs):
        a, b = inputs
        computed = [v for v in (a, b) if isinstance(v, _Computed)]
        if not computed:
            _refuse(node, "arithmetic on the batch size")
        rank = cv.onnx_rank(computed[0])
        if len(computed) == 2 and cv.onnx_rank(computed[1]) != rank:
            # ONNX broadcasts within one sample; torch would align the lower-rank value's batch axis
            # with an inner axis of the other, mixing samples.
            _refuse(node, f"arithmetic on two computed values of different rank ({rank} and "
                          f"{cv.onnx_rank(computed[1])})")
        for c in (a, b):
            if not isinstance(c, np.ndarray):
                continue
            if c.ndim > rank or (cv.batched and c.ndim == rank and c.shape[0] != 1):
                _refuse(node, f"a constant of shape {c.shape} broadcasts over the batch dimension")
        return cv.call(node, fn, a, b)

    return rule


def _module(make):
    def rule(cv, node, inputs, attrs):
        return cv.call(node, make(), cv.computed(node, inputs[0]))

    return rule


def _softmax(cls):
    """Opset >= 13: along `axis` (default -1). Before 13: over the flattened axes >= `axis` (default 1),
    the same only when `axis` is the last one."""

    def rule(cv, node, inputs, attrs):
        x = cv.computed(node, inputs[0])
        rank = cv.onnx_rank(x)
        dim = cv.axis(node, attrs.get("axis", -1 if cv.opset >= 13 else 1), rank)
        if dim == 0 or (cv.opset < 13 and dim != x.example.dim() - 1):
            _refuse(node, f"axis={attrs.get('axis')} (only the last axis; from opset 13, "
                          "any axis but the batch)")
        return cv.call(node, cls(dim=dim), x)

    return rule


def _alias(cv, node, inputs, attrs):
    """Identity, and Dropout in inference (its optional training_mode input must be a constant false)."""
    training = inputs[2] if len(inputs) > 2 else None
    if training is not None and (not isinstance(training, np.ndarray) or training.any()):
        _refuse(node, "training_mode is not a constant false")
    return cv.computed(node, inputs[0])


def _axes(node, inputs, attrs):
    axes = attrs.get("axes", inputs[1] if len(inputs) > 1 else None)
    if axes is not None and not isinstance(axes, (list, np.ndarray)):
        _refuse(node, "axes must be a constant")
    if axes is not None and np.size(axes) > _MAX_RANK:
        _refuse(node, f"{np.size(axes)} axes; certify supports values of at most {_MAX_RANK} dimensions")
    return None if axes is None else [int(a) for a in np.reshape(axes, -1)]


def _squeeze(cv, node, inputs, attrs):
    axes = _axes(node, inputs, attrs)
    if isinstance(inputs[0], np.ndarray):  # a shape holding the batch size
        return np.squeeze(inputs[0], axis=None if axes is None else tuple(axes))
    x = cv.computed(node, inputs[0])
    if axes is None:
        _refuse(node, "Squeeze without axes would drop the batch dimension for a batch of 1")
    dims = {cv.axis(node, a, cv.onnx_rank(x)) for a in axes}
    if 0 in dims or any(x.example.shape[d] != 1 for d in dims):
        _refuse(node, f"axes {axes} include the batch or a dimension larger than 1")
    return cv.reshape(node, x, [n for d, n in enumerate(x.example.shape) if d not in dims and d > 0])


def _unsqueeze(cv, node, inputs, attrs):
    axes = _axes(node, inputs, attrs)
    if axes is None:
        _refuse(node, "Unsqueeze needs axes")
    if isinstance(inputs[0], np.ndarray):
        return np.expand_dims(inputs[0], tuple(axes))
    x = cv.computed(node, inputs[0])
    shape = list(x.example.shape)
    for d in sorted(cv.axis(node, a, cv.onnx_rank(x) + len(axes)) for a in axes):
        if d == 0:
            _refuse(node, f"axes {axes} insert a dimension before the batch")
        shape.insert(d, 1)
    return cv.reshape(node, x, shape[1:])


def _transpose(cv, node, inputs, attrs):
    """Of a computed value only the identity permutation (a no-op); constants are folded."""
    x = cv.computed(node, inputs[0])
    rank = cv.onnx_rank(x)
    if list(attrs.get("perm", range(rank - 1, -1, -1))) != list(range(rank)):
        _refuse(node, f"perm={attrs.get('perm')} permutes computed values")
    return x


def _shape(cv, node, inputs, attrs):
    """The input's shape as a constant, with None for the batch size (known only when run)."""
    x = cv.computed(node, inputs[0])
    if not cv.batched:
        _refuse(node, "Shape on a model whose input has no batch dimension")
    dims = np.array([None, *x.shape], dtype=object)
    return dims[attrs.get("start", 0):attrs.get("end", len(dims))]


def _gather(cv, node, inputs, attrs):
    """Only on a shape (see _shape): Gather of computed values is an indexing the bounds lack."""
    data = inputs[0]
    if not isinstance(data, np.ndarray) or not isinstance(inputs[1], np.ndarray):
        _refuse(node, "Gather of values computed from the input")
    limits.check("tensor_elements", _folded_elements(node, inputs, attrs), f"'{cv.path}': ONNX node "
                 f"'{_label(node)}' (Gather), a value gathered from constants")
    # asarray: np.take gives a bare element (None for the batch size) for a scalar index
    return np.asarray(np.take(data, inputs[1].astype(np.int64), axis=attrs.get("axis", 0)), dtype=data.dtype)


def _concat(cv, node, inputs, attrs):
    """Of constants (shapes holding the batch size): folded here. Of values computed from the input:
    torch.cat(values, dim=d) along an axis other than the batch."""
    if all(isinstance(v, np.ndarray) for v in inputs):
        limits.check("tensor_elements", _folded_elements(node, inputs, attrs), f"'{cv.path}': ONNX node "
                     f"'{_label(node)}' (Concat), a value concatenated from constants")
        return np.concatenate([v.astype(object) for v in inputs], axis=attrs["axis"])
    if not all(isinstance(v, _Computed) for v in inputs):
        _refuse(node, "Concat of constants with values computed from the input (the constant would be "
                      "repeated along the batch); certify concatenates computed values only")
    rank = cv.onnx_rank(inputs[0])
    if any(cv.onnx_rank(v) != rank for v in inputs):
        _refuse(node, f"Concat of values of different rank ({[cv.onnx_rank(v) for v in inputs]})")
    dim = cv.axis(node, attrs["axis"], rank)
    if dim == 0:
        _refuse(node, "Concat along the batch axis")
    if len(inputs) == 1:
        return inputs[0]
    return cv.call(node, torch.cat, list(inputs), dim=dim)


def _float_attr(attrs, name: str, default: float) -> float:
    """A float attribute (float32 in ONNX) as the Python float of its float32 value."""
    return float(np.float32(attrs.get(name, default)))


def _scalar(cv, node, value, what: str) -> float:
    """A constant single float32 number as a Python float."""
    if isinstance(value, _Computed):
        _refuse(node, f"{what} is computed from the input; certify needs a constant")
    tensor = cv.weights(node, value, what)
    if tensor.numel() != 1:
        _refuse(node, f"{what} has shape {tuple(tensor.shape)}; certify needs a single number")
    number = float(tensor.reshape(-1)[0])
    if math.isnan(number):
        _refuse(node, f"{what} is NaN")
    return number


def _leaky_relu(cv, node, inputs, attrs):
    return cv.call(node, nn.LeakyReLU(_float_attr(attrs, "alpha", 0.01)), cv.computed(node, inputs[0]))


def _elu(cv, node, inputs, attrs):
    return cv.call(node, nn.ELU(_float_attr(attrs, "alpha", 1.0)), cv.computed(node, inputs[0]))


def _softplus(cv, node, inputs, attrs):
    """ln(exp(x) + 1). torch's default threshold (x itself above 20) is kept: the exact formula
    overflows to inf in float32 for large x, and above 20 the two agree in float32."""
    return cv.call(node, nn.Softplus(), cv.computed(node, inputs[0]))


def _clip(cv, node, inputs, attrs):
    """min / max as constant inputs (opset >= 11, either may be missing) or attributes (before).
    Both -> nn.Hardtanh(min, max); one -> torch.clamp(x, min=...) or (x, max=...); none -> x.
    A bound at or beyond float32's largest magnitude (opset 6's defaults) is no bound."""
    x = cv.computed(node, inputs[0])
    if cv.opset >= 11:
        lo, hi = ((_scalar(cv, node, inputs[i], what) if len(inputs) > i and inputs[i] is not None else None)
                  for i, what in ((1, "min"), (2, "max")))
    else:
        lo, hi = (None if attrs.get(k) is None else float(np.float32(attrs[k])) for k in ("min", "max"))
        if any(v is not None and math.isnan(v) for v in (lo, hi)):
            _refuse(node, f"min={lo}, max={hi}: a NaN bound")
    biggest = float(np.finfo(np.float32).max)
    lo = None if lo is not None and lo <= -biggest else lo
    hi = None if hi is not None and hi >= biggest else hi
    if lo is not None and hi is not None:
        if lo >= hi:
            _refuse(node, f"min={lo:g} is not below max={hi:g} (a constant output)")
        return cv.call(node, nn.Hardtanh(lo, hi), x)
    if lo is not None:
        return cv.call(node, torch.clamp, x, min=lo)
    if hi is not None:
        return cv.call(node, torch.clamp, x, max=hi)
    return x


def _hard_sigmoid(cv, node, inputs, attrs):
    """max(0, min(1, alpha x + beta)) -> x * alpha, + beta, nn.Hardtanh(0, 1), alpha and beta the
    float32 numbers of the attributes."""
    x = cv.computed(node, inputs[0])
    scaled = cv.call(node, operator.mul, x, _float_attr(attrs, "alpha", 0.2))
    shifted = cv.call(node, operator.add, scaled, _float_attr(attrs, "beta", 0.5))
    return cv.call(node, nn.Hardtanh(0.0, 1.0), shifted)


def _global_average_pool(cv, node, inputs, attrs):
    x = cv.computed(node, inputs[0])
    if len(x.shape) != 3:
        _refuse(node, f"input of shape {x.shape} per sample; certify supports 2-D pooling of (C, H, W) only")
    return cv.call(node, nn.AdaptiveAvgPool2d(1), x)


def _reduce_mean(cv, node, inputs, attrs):
    """The mean over the two spatial axes of (N, C, H, W) (global average pooling as torch exports
    x.mean((2, 3))): axes an attribute before opset 18, an input from it."""
    x = cv.computed(node, inputs[0])
    axes = _axes(node, inputs, attrs)
    if len(x.shape) != 3 or axes is None or sorted(cv.axis(node, a, 4) for a in axes) != [2, 3]:
        _refuse(node, f"a mean over axes {axes} of a value of shape {x.shape} per sample (certify takes "
                      "the mean over the two spatial axes of (N, C, H, W) only)")
    if attrs.get("noop_with_empty_axes", 0):
        _refuse(node, "noop_with_empty_axes=1")
    return cv.call(node, torch.mean, x, (2, 3), bool(attrs.get("keepdims", 1)))


def _pair_attr(node, attrs, name: str, default) -> tuple[int, int]:
    value = tuple(int(v) for v in attrs.get(name, default))
    if len(value) != 2:
        _refuse(node, f"{name}={list(value)}; certify supports 2-D convolutions only")
    return value


def _conv_transpose(cv, node, inputs, attrs):
    """-> nn.ConvTranspose2d; the kernel is (C_in, C_out / group, kh, kw) in both. The output size
    must come from pads and output_padding (an output_shape attribute is refused)."""
    x, w, b = (inputs + [None])[:3]
    x = cv.computed(node, x)
    weight = cv.weights(node, w, "the kernel")
    if weight.dim() != 4 or len(x.shape) != 3:
        _refuse(node, f"a kernel of shape {tuple(weight.shape)}; certify supports 2-D transposed "
                      "convolutions only")
    if "output_shape" in attrs:
        _refuse(node, "output_shape (padding worked out from the output size); export with explicit pads "
                      "and output_padding")
    kernel = tuple(attrs.get("kernel_shape", weight.shape[2:]))
    if kernel != tuple(weight.shape[2:]):
        _refuse(node, f"kernel_shape {kernel} differs from the kernel's shape {tuple(weight.shape[2:])}")
    padding = _padding(node, attrs)
    stride = _pair_attr(node, attrs, "strides", (1, 1))
    dilation = _pair_attr(node, attrs, "dilations", (1, 1))
    output_padding = _pair_attr(node, attrs, "output_padding", (0, 0))
    if min(stride + dilation) < 1 or min(padding + output_padding) < 0:
        _refuse(node, f"strides {list(stride)}, dilations {list(dilation)}, pads {list(padding)} or "
                      f"output_padding {list(output_padding)} out of range")
    if any(o >= s and o >= d for o, s, d in zip(output_padding, stride, dilation)):
        _refuse(node, f"output_padding {list(output_padding)} not smaller than the strides {list(stride)} "
                      f"or the dilations {list(dilation)}")
    groups = attrs.get("group", 1)
    conv = nn.utils.skip_init(nn.ConvTranspose2d, weight.shape[0], weight.shape[1] * groups, kernel,
                              stride=stride, padding=padding, output_padding=output_padding, groups=groups,
                              dilation=dilation, bias=b is not None)
    conv.weight.data = weight
    if b is not None:
        conv.bias.data = cv.weights(node, b, "the bias")
    return cv.call(node, conv, x)


def _int_list(node, value, what: str, most: int) -> list[int] | None:
    """A constant list of integers (an input or an attribute); None when absent."""
    if value is None:
        return None
    if isinstance(value, _Computed) or (isinstance(value, np.ndarray) and value.dtype.kind not in "iu"):
        _refuse(node, f"{what} must be a constant of integers")
    if np.size(value) > most:
        _refuse(node, f"{what} of {np.size(value)} entries, more than the {most} that can apply here")
    return [int(v) for v in np.reshape(value, -1)]


def _onnx_axes(node, axes: list[int], rank: int) -> list[int]:
    """ONNX axes in [0, rank), each once."""
    if any(not -rank <= a < rank for a in axes):
        _refuse(node, f"axes {axes} out of range for a value of rank {rank}")
    axes = [a % rank for a in axes]
    if len(set(axes)) != len(axes):
        _refuse(node, f"axes {axes} name an axis twice")
    return axes


def _pad_amounts(node, inputs, attrs, rank: int) -> list[tuple[int, int]]:
    """(begin, end) for each ONNX axis: pads (an input from opset 11, an attribute before) are
    [x1_begin, x2_begin, ..., x1_end, x2_end, ...] over `axes` (an input from opset 18; all axes)."""
    pads = inputs[1] if len(inputs) > 1 and inputs[1] is not None else None
    pads = attrs.get("pads", attrs.get("paddings")) if pads is None else pads
    pads = _int_list(node, pads, "pads", 2 * _MAX_RANK)
    if pads is None:
        _refuse(node, "no pads")
    axes = _int_list(node, inputs[3] if len(inputs) > 3 else None, "axes", _MAX_RANK)
    axes = list(range(rank)) if axes is None else _onnx_axes(node, axes, rank)
    if len(pads) != 2 * len(axes):
        _refuse(node, f"{len(pads)} pads for {len(axes)} axes")
    amounts = [(0, 0)] * rank
    for i, a in enumerate(axes):
        amounts[a] = (pads[i], pads[i + len(axes)])
    return amounts


def _pad(cv, node, inputs, attrs):
    """Constant padding of the two last axes of (N, C, H, W) values -> nn.ConstantPad2d((left, right,
    top, bottom), value)."""
    x = cv.computed(node, inputs[0])
    mode = attrs.get("mode", "constant")
    if mode != "constant":
        _refuse(node, f"mode={mode}; certify converts constant padding only")
    rank = cv.onnx_rank(x)
    amounts = {cv.axis(node, a, rank): p for a, p in enumerate(_pad_amounts(node, inputs, attrs, rank))}
    if cv.opset >= 11:
        given = inputs[2] if len(inputs) > 2 else None
        value = 0.0 if given is None else _scalar(cv, node, given, "constant_value")
    else:
        value = float(np.float32(attrs.get("value", 0.0)))
    if not math.isfinite(value):
        _refuse(node, f"constant_value {value}; certify pads with finite numbers only")
    if min(min(p) for p in amounts.values()) < 0:
        _refuse(node, f"negative pads {[amounts[d] for d in sorted(amounts)]} (cropping)")
    if all(p == (0, 0) for p in amounts.values()):
        return x
    if x.example.dim() != 4 or amounts.get(0, (0, 0)) != (0, 0) or amounts[1] != (0, 0):
        where = [amounts[d] for d in sorted(amounts)]
        _refuse(node, f"pads (begin, end) {where} of a value of shape {x.shape} per sample; "
                      "certify pads the last two axes of (C, H, W) values only")
    (top, bottom), (left, right) = amounts[2], amounts[3]
    return cv.call(node, nn.ConstantPad2d((left, right, top, bottom), value), x)


_INT64_MAX = 2**63 - 1


def _slice_ranges(cv, node, inputs, attrs, rank: int) -> dict[int, tuple[int, int, int]]:
    """{ONNX axis: (start, end, step)} as written: inputs from opset 10, attributes before."""
    if cv.opset >= 10:
        starts, ends, axes, steps = ((inputs[i] if len(inputs) > i else None) for i in range(1, 5))
    else:
        starts, ends, axes, steps = attrs.get("starts"), attrs.get("ends"), attrs.get("axes"), None
    named = ((starts, "starts"), (ends, "ends"), (axes, "axes"), (steps, "steps"))
    starts, ends, axes, steps = (_int_list(node, v, what, _MAX_RANK) for v, what in named)
    if starts is None or ends is None:
        _refuse(node, "starts and ends are needed")
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    if not len(starts) == len(ends) == len(axes) == len(steps):
        _refuse(node, f"starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    if any(s <= 0 for s in steps):
        _refuse(node, f"steps {steps}: certify supports positive steps only (a negative step reverses "
                      "the axis; 0 is invalid)")
    return dict(zip(_onnx_axes(node, axes, rank), zip(starts, ends, steps)))


def _clamped(start: int, end: int, step: int, size: int) -> slice:
    """ONNX's clamping for a positive step: negative positions count from the end, then both are
    clamped to [0, size]. Python's slice then selects the same entries."""
    start, end = (min(max(v + size if v < 0 else v, 0), size) for v in (start, end))
    return slice(start, end, step)


def _slice(cv, node, inputs, attrs):
    """Of a shape (holding the batch size): sliced here. Of a computed value: operator.getitem(x, idx),
    idx a tuple of one slice per axis (slice(None) for the batch and every axis kept whole)."""
    x = inputs[0]
    if isinstance(x, np.ndarray):
        ranges = _slice_ranges(cv, node, inputs, attrs, x.ndim)
        index = [slice(None)] * x.ndim
        for a, (start, end, step) in ranges.items():
            index[a] = _clamped(start, end, step, x.shape[a])
        return x[tuple(index)]
    x = cv.computed(node, x, "the sliced value")
    rank = cv.onnx_rank(x)
    index = [slice(None)] * x.example.dim()
    for a, (start, end, step) in _slice_ranges(cv, node, inputs, attrs, rank).items():
        d = cv.axis(node, a, rank)
        if d == 0:
            if (start, step) != (0, 1) or end < _INT64_MAX:
                _refuse(node, f"slices the batch axis (starts {start}, ends {end}, steps {step})")
            continue
        size = x.example.shape[d]
        part = _clamped(start, end, step, size)
        if len(range(size)[part]) == 0:
            _refuse(node, f"an empty result (axis {a} of size {size} sliced from {start} to {end})")
        index[d] = slice(None) if (part.start, part.stop, part.step) == (0, size, 1) else part
    if all(i == slice(None) for i in index):
        return x
    return cv.call(node, operator.getitem, x, tuple(index))


def _split(cv, node, inputs, attrs):
    """Along an axis other than the batch -> one operator.getitem(x, idx) per output. The sizes are
    the split input (opset >= 13) or attribute (before); or, without them, num_outputs parts (opset 18;
    the last one smaller when the axis does not divide) or as many equal parts as outputs."""
    x = cv.computed(node, inputs[0])
    rank = cv.onnx_rank(x)
    dim = cv.axis(node, attrs.get("axis", 0), rank)
    if dim == 0:
        _refuse(node, "splits the batch axis")
    size, count = x.example.shape[dim], len(node.output)
    given = inputs[1] if len(inputs) > 1 and inputs[1] is not None else attrs.get("split")
    if given is not None:
        sizes = _int_list(node, given, "split sizes", count)
    elif "num_outputs" in attrs:
        if attrs["num_outputs"] != count:
            _refuse(node, f"num_outputs={attrs['num_outputs']} for {count} outputs")
        chunk = -(-size // count)
        sizes = [chunk] * (count - 1) + [size - chunk * (count - 1)]
    elif size % count:
        _refuse(node, f"an axis of size {size} into {count} equal parts")
    else:
        sizes = [size // count] * count
    if len(sizes) != count or sum(sizes) != size or min(sizes) <= 0:
        _refuse(node, f"parts of sizes {sizes} for {count} outputs from an axis of size {size}; certify "
                      "needs positive sizes that add up to the axis")
    if count == 1:
        return [x]
    outputs, offset = [], 0
    for n in sizes:
        index = [slice(None)] * x.example.dim()
        index[dim] = slice(offset, offset + n, 1)
        outputs.append(cv.call(node, operator.getitem, x, tuple(index)))
        offset += n
    return outputs


def _extremum(fn, bound: str):
    """Max / Min of two computed values of one shape -> torch.maximum / torch.minimum; of a computed
    value and a constant number -> torch.clamp(x, min=c) / torch.clamp(x, max=c)."""

    def rule(cv, node, inputs, attrs):
        if len(inputs) == 1:
            return cv.computed(node, inputs[0])
        if len(inputs) != 2:
            _refuse(node, f"{len(inputs)} operands; certify supports two")
        a, b = inputs
        if isinstance(a, _Computed) and isinstance(b, _Computed):
            if a.example.shape != b.example.shape:
                _refuse(node, f"operands of different shapes ({a.shape} and {b.shape})")
            return cv.call(node, fn, a, b)
        x, c = (a, b) if isinstance(a, _Computed) else (b, a)
        x = cv.computed(node, x)
        if isinstance(c, np.ndarray) and c.ndim > cv.onnx_rank(x):
            _refuse(node, f"a constant of shape {c.shape} broadcasts over the batch dimension")
        return cv.call(node, torch.clamp, x, **{bound: _scalar(cv, node, c, "the constant operand")})

    return rule


def _folded(cv, node, inputs, attrs):
    """Constant never gets here (it has no inputs, so it is always folded); ConstantOfShape does for
    a shape holding the batch size."""
    _refuse(node, "is evaluated only on constants (not on values or shapes computed from the input)")


def _cast(cv, node, inputs, attrs):
    """Of constants: folded. Of a shape holding the batch size, to an integer type: that shape. Of a
    computed value, to float32: the value itself."""
    from onnx import TensorProto

    x, to = inputs[0], attrs.get("to")
    if isinstance(x, np.ndarray) and to in (TensorProto.INT64, TensorProto.INT32):
        return x
    if isinstance(x, _Computed) and to == TensorProto.FLOAT:
        return x
    _refuse(node, f"a cast to {TensorProto.DataType.Name(to) if to in TensorProto.DataType.values() else to} "
                  "of a value computed from the input")


def _needs_batch(rule):
    """For operators whose ONNX definition has a batch axis: refused when the input declares none."""

    def checked(cv, node, inputs, attrs):
        if not cv.batched:
            _refuse(node, "the model input has no batch dimension, which this operator needs")
        return rule(cv, node, inputs, attrs)

    return checked


_RULES = {
    # bounds and smoothing
    "Gemm": _needs_batch(_gemm),
    "MatMul": _matmul,
    "Conv": _needs_batch(_conv),
    "ConvTranspose": _needs_batch(_conv_transpose),
    "Relu": _module(nn.ReLU),
    "LeakyRelu": _leaky_relu,
    "Elu": _elu,
    "Softplus": _softplus,
    "Sigmoid": _module(nn.Sigmoid),
    "Tanh": _module(nn.Tanh),
    "Clip": _clip,
    "HardSigmoid": _hard_sigmoid,
    "MaxPool": _needs_batch(_max_pool),
    "GlobalAveragePool": _needs_batch(_global_average_pool),
    "ReduceMean": _needs_batch(_reduce_mean),
    "Flatten": _needs_batch(_flatten),
    "Reshape": _reshape,
    "BatchNormalization": _needs_batch(_batch_norm),
    "AveragePool": _needs_batch(_average_pool),
    "Pad": _pad,
    "Slice": _slice,
    "Split": _split,
    "Concat": _concat,
    "Max": _extremum(torch.maximum, "min"),
    "Min": _extremum(torch.minimum, "max"),
    "Add": _binary(operator.add),
    "Sub": _binary(operator.sub),
    "Mul": _binary(operator.mul),
    "Div": _binary(operator.truediv),
    "Identity": _alias,
    "Dropout": _alias,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Transpose": _transpose,
    # constants and shapes (Constant has no inputs, so it is always folded; Concat and Slice of shapes
    # are folded by their rules above; ConstantOfShape and Cast as torch exports F.pad's pads)
    "Constant": _folded,
    "ConstantOfShape": _folded,
    "Cast": _cast,
    "Shape": _shape,
    "Gather": _gather,
    # smoothing only: BoundedModel refuses these
    "Softmax": _softmax(nn.Softmax),
    "LogSoftmax": _softmax(nn.LogSoftmax),
}
