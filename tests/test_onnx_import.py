"""ONNX import: every converted model computes what onnxruntime computes, the bound-supported ones
get CROWN bounds that contain sampled outputs, and unusable files fail with a message that says why."""

import copy
import operator
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from bound_models import MODELS, build
from onnx import TensorProto, helper, numpy_helper
from torch import nn
from torch.nn import functional

import certify
from certify import limits
from certify.formats import ModelFileError
from certify.formats.onnx_import import export_onnx, load_onnx

F = TensorProto.FLOAT


# ----------------------------------------------------------------------------- helpers
def weights(rng, *shape, scale=0.5):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def onnx_model(nodes, input_dims, inits=None, opset=17, input_type=F, inputs=None, output_rank=2):
    """A one-output ONNX model from helper nodes: input 'x' of `input_dims` ('N' is symbolic), output 'y'
    of rank `output_rank` (onnx's checker wants a shape there; symbolic sizes will do)."""
    graph = helper.make_graph(
        nodes, "g", inputs or [helper.make_tensor_value_info("x", input_type, input_dims)],
        [helper.make_tensor_value_info("y", F, [f"d{i}" for i in range(output_rank)])],
        initializer=[numpy_helper.from_array(v, k) for k, v in (inits or {}).items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def save(model, path):
    onnx.save(model, str(path))
    return path


def ort_outputs(path, x: torch.Tensor) -> torch.Tensor:
    """onnxruntime's outputs, (batch, -1), one sample at a time: a sample is what the ONNX graph
    describes (a Reshape to [1, N] takes a batch of one), and what load_onnx applies to each row."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1  # a shared 2-core machine
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    meta = session.get_inputs()[0]
    rows = [x[i : i + 1] if len(meta.shape) == x.dim() else x[i] for i in range(len(x))]
    outputs = [session.run(None, {meta.name: r.numpy()})[0] for r in rows]
    return torch.stack([torch.from_numpy(out).reshape(-1) for out in outputs])


# ----------------------------------------------------------------------------- models
def torch_case(builder):
    def write(path):
        model, shape = builder()
        with warnings.catch_warnings():  # torch's note that it leaves a Slice with steps unfolded
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")
            export_onnx(model, shape, path)
        return path

    return write


def padded_avg_pool():  # torch's count_include_pad=True, padding 1: the tracer's AvgPool2d
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.AvgPool2d(3, stride=2, padding=1), nn.Flatten(),
                         nn.Linear(3 * 3 * 3, 4)).eval(), (2, 7, 7)


def smoothing_head():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                          nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 5), nn.ReLU(), nn.Linear(5, 3), nn.Softmax(dim=1))
    return model.eval(), (2, 6, 6)


class NewOps(nn.Module):
    """The operators added for bounds, as torch exports them: Pad (its pads folded from
    ConstantOfShape / Cast / Slice of constants), LeakyRelu, Split, Elu, Softplus, Concat, MaxPool with
    dilation, ConvTranspose, HardSigmoid, Tanh, Sigmoid, Max / Min, Clip (both bounds, only min), Sub,
    Slice with steps, GlobalAveragePool."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.pad = nn.ConstantPad2d((1, 0, 2, 1), 0.25)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, dilation=2)
        self.up = nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        h = functional.leaky_relu(self.pad(self.conv(x)), 0.1)
        a, b = torch.split(h, [1, 3], dim=1)
        h = self.up(self.pool(torch.cat([functional.elu(b), functional.softplus(a)], dim=1)))
        h = (torch.maximum(functional.hardsigmoid(h), torch.tanh(h))
             - torch.minimum(torch.sigmoid(h), functional.relu6(h)))
        h = functional.adaptive_avg_pool2d(torch.clamp(h[:, :, 1:-1:2, :], min=-0.1), 1)
        return self.fc(h.flatten(1))


def new_ops():
    torch.manual_seed(4)
    return NewOps().eval(), (2, 8, 8)


def demo_architecture():
    from certify import models

    torch.manual_seed(3)
    return models.architecture().eval(), (1, 8, 8)


def gemm_alpha_beta(path):
    """Gemm with transB=0, alpha=2, beta=0.5 (exact products), C of shape (1, 5); Gemm without C."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="gemm1", alpha=2.0, beta=0.5),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Gemm", ["r", "w2"], ["y"], name="gemm2", transB=1)]
    inits = {"w1": weights(rng, 6, 5), "b1": weights(rng, 1, 5), "w2": weights(rng, 3, 5)}
    return save(onnx_model(nodes, ["N", 6], inits), path)


def matmul_arithmetic(path):
    """A Constant node and a Transpose of it give the weight; constants added on either side,
    subtracted, multiplied and divided."""
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("Constant", [], ["wt"], name="const_w",
                         value=numpy_helper.from_array(weights(rng, 8, 6))),
        helper.make_node("Transpose", ["wt"], ["w"], name="transpose_w", perm=[1, 0]),
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul1"),
        helper.make_node("Add", ["c1", "h"], ["h1"], name="add_left"),
        helper.make_node("Relu", ["h1"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["h2"], name="matmul2"),
        helper.make_node("Sub", ["h2", "c2"], ["h3"], name="sub"),
        helper.make_node("Mul", ["h3", "c3"], ["h4"], name="mul"),
        helper.make_node("Div", ["h4", "c4"], ["y"], name="div"),
    ]
    inits = {"c1": weights(rng, 8), "w2": weights(rng, 8, 4), "c2": weights(rng, 1, 4),
             "c3": weights(rng, 4), "c4": np.array([0.5, 2.0, 3.0, -1.5], np.float32)}
    return save(onnx_model(nodes, ["N", 6], inits), path)


def conv_geometry(path):
    """Input declared with batch 1; groups, strides, dilations, symmetric pads, auto_pad=VALID."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "k1", "b1"], ["c1"], name="conv1", group=2, strides=[2, 1],
                         dilations=[1, 2], pads=[1, 2, 1, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "k2"], ["c2"], name="conv2", auto_pad="VALID"),
        helper.make_node("Flatten", ["c2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="gemm", transB=1),
    ]
    inits = {"k1": weights(rng, 6, 2, 3, 3), "b1": weights(rng, 6), "k2": weights(rng, 3, 6, 2, 2),
             "w": weights(rng, 4, 3 * 3 * 8), "b": weights(rng, 4)}
    return save(onnx_model(nodes, [1, 4, 7, 9], inits), path)


def batch_norms(path):
    rng = np.random.default_rng(3)

    def stats(c):
        return [weights(rng, c) + 1, weights(rng, c), weights(rng, c), np.abs(weights(rng, c)) + 0.3]

    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "s1", "t1", "m1", "v1"], ["n"], name="bn2d",
                         epsilon=1e-3),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w"], ["g"], name="gemm", transB=1),
        helper.make_node("BatchNormalization", ["g", "s2", "t2", "m2", "v2"], ["y"], name="bn1d"),
    ]
    inits = {"k": weights(rng, 3, 2, 3, 3), "w": weights(rng, 5, 3 * 5 * 5)}
    inits.update(zip(["s1", "t1", "m1", "v1"], stats(3)))
    inits.update(zip(["s2", "t2", "m2", "v2"], stats(5)))
    return save(onnx_model(nodes, ["N", 2, 5, 5], inits), path)


def average_pools(path):
    """ONNX defaults: stride 1 and count_include_pad=0 (no padding here); then padding counted."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("AveragePool", ["x"], ["p1"], name="pool1", kernel_shape=[2, 2]),
        helper.make_node("AveragePool", ["p1"], ["p2"], name="pool2", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], count_include_pad=1),
        helper.make_node("Flatten", ["p2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w"], ["y"], name="gemm", transB=1),
    ]
    return save(onnx_model(nodes, ["N", 2, 7, 7], {"w": weights(rng, 3, 2 * 3 * 3)}), path)


def reshapes(path):
    """Reshape with 0 (copy the batch) and [-1, 8]; Unsqueeze / Squeeze / identity Transpose of values,
    Identity, Dropout."""
    rng = np.random.default_rng(5)
    nodes = [
        helper.make_node("Reshape", ["x", "s1"], ["a"], name="reshape_in"),
        helper.make_node("Conv", ["a", "k"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Unsqueeze", ["r", "ax"], ["u"], name="unsqueeze"),
        helper.make_node("Squeeze", ["u", "ax"], ["q"], name="squeeze"),
        helper.make_node("Transpose", ["q"], ["t"], name="transpose", perm=[0, 1, 2, 3]),
        helper.make_node("Identity", ["t"], ["i"], name="identity"),
        helper.make_node("Dropout", ["i"], ["d"], name="dropout"),
        helper.make_node("Reshape", ["d", "s2"], ["f"], name="reshape_out"),
        helper.make_node("Gemm", ["f", "w"], ["y"], name="gemm", transB=1),
    ]
    inits = {"s1": np.array([0, 3, 4, 4]), "k": weights(rng, 2, 3, 3, 3), "ax": np.array([2]),
             "s2": np.array([-1, 8]), "w": weights(rng, 3, 2 * 2 * 2)}
    return save(onnx_model(nodes, ["N", 48], inits), path)


def residual_add(path):
    rng = np.random.default_rng(6)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="gemm1", transB=1),
        helper.make_node("Relu", ["h"], ["r"], name="relu1"),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["g"], name="gemm2", transB=1),
        helper.make_node("Add", ["r", "g"], ["s"], name="residual"),
        helper.make_node("Relu", ["s"], ["r2"], name="relu2"),
        helper.make_node("MatMul", ["r2", "w3"], ["y"], name="matmul"),
    ]
    inits = {"w1": weights(rng, 7, 6), "b1": weights(rng, 7), "w2": weights(rng, 7, 7), "b2": weights(rng, 7),
             "w3": weights(rng, 7, 3)}
    return save(onnx_model(nodes, ["N", 6], inits), path)


def unbatched_input(path):
    """An input declared without a batch dimension ([6]): one sample; the module still takes batches."""
    rng = np.random.default_rng(7)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="matmul1"),
             helper.make_node("Add", ["h", "b1"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="matmul2")]
    inits = {"w1": weights(rng, 6, 5), "b1": np.abs(weights(rng, 5)), "w2": weights(rng, 5, 3)}
    return save(onnx_model(nodes, [6], inits, output_rank=1), path)


def smoothing_ops(path):
    """AveragePool with uncounted padding and LogSoftmax: smoothing only."""
    rng = np.random.default_rng(8)
    nodes = [
        helper.make_node("AveragePool", ["x"], ["a"], name="avg_pads", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Flatten", ["a"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w"], ["g"], name="gemm", transB=1),
        helper.make_node("LogSoftmax", ["g"], ["y"], name="log_softmax"),
    ]
    return save(onnx_model(nodes, ["N", 2, 6, 6], {"w": weights(rng, 4, 2 * 3 * 3)}), path)


def opset11_axes(path):
    """Opset 11: Squeeze / Unsqueeze axes as attributes, Softmax over the flattened trailing axes."""
    rng = np.random.default_rng(9)
    nodes = [helper.make_node("Unsqueeze", ["x"], ["u"], name="unsqueeze", axes=[1]),
             helper.make_node("Squeeze", ["u"], ["q"], name="squeeze", axes=[1]),
             helper.make_node("Gemm", ["q", "w"], ["g"], name="gemm", transB=1),
             helper.make_node("Softmax", ["g"], ["y"], name="softmax")]
    return save(onnx_model(nodes, ["N", 6], {"w": weights(rng, 4, 6)}, opset=11), path)


INT64_MAX = np.iinfo(np.int64).max


def activations(path):
    """LeakyRelu, Elu, Softplus (also beyond its threshold 20), HardSigmoid, with their defaults and
    with other alpha / beta; Sigmoid and Tanh."""
    rng = np.random.default_rng(20)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], name="gemm1", transB=1),
        helper.make_node("LeakyRelu", ["h1"], ["a1"], name="leaky", alpha=0.2),
        helper.make_node("Elu", ["a1"], ["a2"], name="elu", alpha=0.7),
        helper.make_node("Gemm", ["a2", "w2"], ["h2"], name="gemm2", transB=1),
        helper.make_node("Mul", ["h2", "thirty"], ["h3"], name="widen"),
        helper.make_node("Softplus", ["h3"], ["a3"], name="softplus"),
        helper.make_node("Gemm", ["a3", "w3", "b3"], ["h4"], name="gemm3", transB=1),
        helper.make_node("HardSigmoid", ["h4"], ["a4"], name="hard_sigmoid", alpha=0.3, beta=0.45),
        helper.make_node("Gemm", ["a4", "w4"], ["h5"], name="gemm4", transB=1),
        helper.make_node("LeakyRelu", ["h5"], ["a5"], name="leaky_default"),
        helper.make_node("Elu", ["a5"], ["a6"], name="elu_default"),
        helper.make_node("HardSigmoid", ["a6"], ["a7"], name="hard_sigmoid_default"),
        helper.make_node("Sigmoid", ["a7"], ["a8"], name="sigmoid"),
        helper.make_node("Gemm", ["a8", "w5"], ["h6"], name="gemm5", transB=1),
        helper.make_node("Tanh", ["h6"], ["y"], name="tanh"),
    ]
    inits = {"w1": weights(rng, 8, 6, scale=1.0), "b1": weights(rng, 8), "w2": weights(rng, 8, 8),
             "thirty": np.array(30.0, np.float32), "w3": weights(rng, 8, 8, scale=0.1), "b3": weights(rng, 8),
             "w4": weights(rng, 8, 8, scale=3.0), "w5": weights(rng, 4, 8, scale=2.0)}
    return save(onnx_model(nodes, ["N", 6], inits), path)


def clips(opset):
    """Clip with only min, only max, both and neither: attributes before opset 11, inputs (an empty
    name for a missing min) from it."""

    def write(path):
        rng = np.random.default_rng(21)
        if opset < 11:
            clip = [{"min": -0.5}, {"max": 0.7}, {"min": -0.3, "max": 0.4}, {}]
            clip = [(["h0"], c) for c in clip]
        else:
            clip = [(["h0", "lo"], {}), (["h1", "", "hi"], {}), (["h2", "lo", "hi"], {}), (["h3"], {})]
        nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"], name="matmul0")]
        for i, (inputs, attrs) in enumerate(clip):
            inputs = [f"h{i}"] + inputs[1:]
            nodes += [helper.make_node("Clip", inputs, [f"c{i}"], name=f"clip{i}", **attrs),
                      helper.make_node("MatMul", [f"c{i}", f"w{i + 1}"], [f"h{i + 1}" if i < 3 else "y"],
                                       name=f"matmul{i + 1}")]
        inits = {f"w{i}": weights(rng, 6, 6, scale=0.8) for i in range(5)}
        if opset >= 11:
            inits.update(lo=np.array(-0.4, np.float32), hi=np.array(0.6, np.float32))
        return save(onnx_model(nodes, ["N", 6], inits, opset=opset), path)

    return write


def conv_transposes(path):
    """ConvTranspose with stride 2, pads 1, output_padding 1, group 2, dilation 2 and a bias; then one
    with auto_pad=VALID, unequal strides and kernel sizes, no bias; GlobalAveragePool."""
    rng = np.random.default_rng(22)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["c", "t1", "b1"], ["u1"], name="up1", strides=[2, 2],
                         pads=[1, 1, 1, 1], output_padding=[1, 1], group=2, dilations=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["u1"], ["r"], name="relu"),
        helper.make_node("ConvTranspose", ["r", "t2"], ["u2"], name="up2", strides=[1, 2], auto_pad="VALID"),
        helper.make_node("GlobalAveragePool", ["u2"], ["g"], name="global_pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w"], ["y"], name="gemm", transB=1),
    ]
    inits = {"k": weights(rng, 4, 3, 3, 3), "t1": weights(rng, 4, 3, 3, 3), "b1": weights(rng, 6),
             "t2": weights(rng, 6, 5, 2, 3), "w": weights(rng, 3, 5)}
    return save(onnx_model(nodes, ["N", 3, 5, 5], inits), path)


def pads_pools_slices(path):
    """Pad asymmetric with a nonzero constant; MaxPool with dilations, unequal strides and pads; Slice
    with negative starts, step 2, INT64_MAX ends and a negative axis; a Slice without axes whose
    batch range keeps every row."""
    rng = np.random.default_rng(23)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], name="conv"),
        helper.make_node("Pad", ["c", "pads", "value"], ["p"], name="pad"),
        helper.make_node("MaxPool", ["p"], ["m"], name="maxpool", kernel_shape=[2, 3], strides=[1, 2],
                         dilations=[2, 1], pads=[1, 1, 1, 1]),
        helper.make_node("Slice", ["m", "starts", "ends", "axes", "steps"], ["s1"], name="slice_steps"),
        helper.make_node("Slice", ["s1", "starts2", "ends2"], ["s2"], name="slice_channels"),
        helper.make_node("Flatten", ["s2"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w"], ["y"], name="gemm", transB=1),
    ]
    inits = {"k": weights(rng, 3, 2, 3, 3), "pads": np.array([0, 0, 1, 2, 0, 0, 3, 0]),
             "value": np.array(0.5, np.float32),
             "starts": np.array([-7, 1]), "ends": np.array([INT64_MAX, 100]), "axes": np.array([2, -1]),
             "steps": np.array([2, 1]),
             "starts2": np.array([0, 0]), "ends2": np.array([INT64_MAX, 2]), "w": weights(rng, 3, 2 * 4 * 3)}
    return save(onnx_model(nodes, ["N", 2, 6, 7], inits), path)


def pad_axes_opset18(path):
    """Opset 18: Pad of some axes (an axes input, negative axes too), Split by num_outputs into
    unequal parts (3 and 2), Concat along a negative axis."""
    rng = np.random.default_rng(24)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], name="conv"),
        helper.make_node("Pad", ["c", "pads", "", "axes"], ["p"], name="pad_axes"),
        helper.make_node("Split", ["p"], ["a", "b"], name="split_w", axis=-1, num_outputs=2),
        helper.make_node("Relu", ["a"], ["ra"], name="relu"),
        helper.make_node("Concat", ["b", "ra"], ["cat"], name="concat_w", axis=-1),
        helper.make_node("Flatten", ["cat"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w"], ["y"], name="gemm", transB=1),
    ]
    inits = {"k": weights(rng, 2, 1, 2, 2), "pads": np.array([1, 0, 1, 2]), "axes": np.array([-1, 2]),
             "w": weights(rng, 3, 2 * 4 * 5)}
    return save(onnx_model(nodes, ["N", 1, 3, 4], inits, opset=18), path)


def opset9_pad_slice(path):
    """Opset 9: Pad's pads and value, Slice's starts / ends / axes as attributes."""
    rng = np.random.default_rng(25)
    nodes = [
        helper.make_node("Conv", ["x", "k"], ["c"], name="conv"),
        helper.make_node("Pad", ["c"], ["p"], name="pad", pads=[0, 0, 2, 0, 0, 0, 1, 3], value=-0.25),
        helper.make_node("Slice", ["p"], ["s"], name="slice", starts=[1, -4], ends=[3, 1000], axes=[1, 3]),
        helper.make_node("Flatten", ["s"], ["f"], name="flatten"),
        helper.make_node("MatMul", ["f", "w"], ["y"], name="matmul"),
    ]
    inits = {"k": weights(rng, 4, 2, 2, 2), "w": weights(rng, 2 * 7 * 4, 3)}
    return save(onnx_model(nodes, ["N", 2, 5, 5], inits, opset=9), path)


def split_concat(opset):
    """Split into unequal parts (1, 3, 2 channels: an attribute before opset 13, an input from it),
    Concat back in another order; Max / Min of two computed values and of a value and a constant;
    Sub of two computed values."""

    def write(path):
        rng = np.random.default_rng(26)
        sizes = [1, 3, 2]
        split = (helper.make_node("Split", ["c", "sizes"], ["p0", "p1", "p2"], name="split", axis=1)
                 if opset >= 13 else
                 helper.make_node("Split", ["c"], ["p0", "p1", "p2"], name="split", axis=1, split=sizes))
        nodes = [
            helper.make_node("Conv", ["x", "k"], ["c"], name="conv", pads=[1, 1, 1, 1]),
            split,
            helper.make_node("Relu", ["p1"], ["r1"], name="relu"),
            helper.make_node("Concat", ["p2", "p0", "r1"], ["cat"], name="concat", axis=1),
            helper.make_node("Max", ["cat", "c"], ["mx"], name="max"),
            helper.make_node("Min", ["c", "cat"], ["mn"], name="min"),
            helper.make_node("Sub", ["mx", "mn"], ["d"], name="sub"),
            helper.make_node("Max", ["d", "lo"], ["d1"], name="max_const"),
            helper.make_node("Min", ["hi", "d1"], ["d2"], name="min_const"),
            helper.make_node("Flatten", ["d2"], ["f"], name="flatten"),
            helper.make_node("Gemm", ["f", "w"], ["y"], name="gemm", transB=1),
        ]
        inits = {"k": weights(rng, 6, 2, 3, 3), "lo": np.array([0.2], np.float32),
                 "hi": np.array(1.1, np.float32), "w": weights(rng, 3, 6 * 4 * 4)}
        if opset >= 13:
            inits["sizes"] = np.array(sizes)
        return save(onnx_model(nodes, ["N", 2, 4, 4], inits, opset=opset), path)

    return write


def shape_slice(path):
    """Slice of the input's shape (holding the batch size) into a Reshape's target."""
    rng = np.random.default_rng(27)
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Slice", ["s", "zero", "one"], ["b"], name="batch_size"),
             helper.make_node("Concat", ["b", "minus_one"], ["target"], name="target", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["f"], name="reshape"),
             helper.make_node("Gemm", ["f", "w"], ["y"], name="gemm", transB=1)]
    inits = {"zero": np.array([0]), "one": np.array([1]), "minus_one": np.array([-1]),
             "w": weights(rng, 2, 12)}
    return save(onnx_model(nodes, ["N", 3, 4], inits), path)


@dataclass(frozen=True)
class Case:
    write: Callable  # path -> path of the written ONNX file
    input_shape: tuple
    # True: BoundedModel supports every converted layer (bounds are tested); False: it refuses one
    # (Softmax, LogSoftmax or AvgPool2d leaving padding out); None: bounds not tested here (the
    # operators added for bounds: MaxPool, activations, Clip, Pad, Slice, Split, Concat, ...).
    bounds: bool | None


CASES = {
    **{f"torch-{name}": Case(torch_case(lambda name=name: build(name)), shape, True)
       for name, (_, shape) in MODELS.items()},
    "torch-padded-avg-pool": Case(torch_case(padded_avg_pool), (2, 7, 7), True),
    "torch-demo-architecture": Case(torch_case(demo_architecture), (1, 8, 8), True),
    "torch-smoothing-head": Case(torch_case(smoothing_head), (2, 6, 6), False),
    "gemm-alpha-beta": Case(gemm_alpha_beta, (6,), True),
    "matmul-arithmetic": Case(matmul_arithmetic, (6,), True),
    "conv-geometry": Case(conv_geometry, (4, 7, 9), True),
    "batch-norms": Case(batch_norms, (2, 5, 5), True),
    "average-pools": Case(average_pools, (2, 7, 7), True),
    "reshapes": Case(reshapes, (48,), True),
    "residual-add": Case(residual_add, (6,), True),
    "unbatched-input": Case(unbatched_input, (6,), True),
    "smoothing-ops": Case(smoothing_ops, (2, 6, 6), False),
    "opset11-axes": Case(opset11_axes, (6,), False),
    "torch-new-ops": Case(torch_case(new_ops), (2, 8, 8), True),
    "activations": Case(activations, (6,), True),
    "clip-opset10": Case(clips(10), (6,), True),
    "clip-opset13": Case(clips(13), (6,), True),
    "conv-transposes": Case(conv_transposes, (3, 5, 5), True),
    "pads-pools-slices": Case(pads_pools_slices, (2, 6, 7), True),
    "pad-axes-opset18": Case(pad_axes_opset18, (1, 3, 4), True),
    "opset9-pad-slice": Case(opset9_pad_slice, (2, 5, 5), True),
    "split-concat-opset11": Case(split_concat(11), (2, 4, 4), True),
    "split-concat-opset13": Case(split_concat(13), (2, 4, 4), True),
    "shape-slice": Case(shape_slice, (3, 4), True),
}


# ----------------------------------------------------------------------------- equality and bounds
@pytest.mark.parametrize("name", list(CASES))
def test_module_matches_onnxruntime(name, tmp_path):
    case = CASES[name]
    path = case.write(tmp_path / "model.onnx")
    rng_state = torch.get_rng_state()
    module = load_onnx(path)
    assert torch.equal(torch.get_rng_state(), rng_state)  # no random initialisation happened
    assert isinstance(module, torch.fx.GraphModule) and not module.training
    floats = [t for t in [*module.parameters(), *module.buffers()] if t.is_floating_point()]
    assert floats and all(t.dtype == torch.float32 for t in floats)
    assert module.input_shape == case.input_shape
    for batch in (1, 3):
        x = torch.randn(batch, *case.input_shape)
        with torch.no_grad():
            out = module(x)
        assert out.shape == (batch, *module.output_shape)
        expected = ort_outputs(path, x)
        torch.testing.assert_close(out.reshape(batch, -1), expected, rtol=1e-5,
                                   atol=1e-5 * max(1.0, expected.abs().max().item()))


def sample_ball(x, eps, count):
    """Points of the l_inf ball around x (float64): half uniform, half vertices."""
    u = torch.rand(count, *x.shape, dtype=torch.float64) * 2 - 1
    u[: count // 2] = torch.randint(0, 2, (count // 2, *x.shape)).double() * 2 - 1
    return x.double() + eps * u


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.bounds])
def test_crown_bounds_contain_sampled_outputs(name, tmp_path):
    module = load_onnx(CASES[name].write(tmp_path / "model.onnx"))
    bounded = certify.BoundedModel(module, module.input_shape)
    module64 = copy.deepcopy(module).double()  # a stand-in for exact arithmetic
    x, eps = torch.rand(2, *module.input_shape), 0.05
    b = bounded.bounds(x, eps, method="crown")
    assert torch.isfinite(b.lower).all() and torch.isfinite(b.upper).all()
    for i in range(len(x)):
        with torch.no_grad():
            out = module64(sample_ball(x[i], eps, 300)).reshape(300, -1)
        assert (b.lower[i].double() <= out).all() and (out <= b.upper[i].double()).all()
        assert (out.max(0).values - out.min(0).values > 0).all()  # the points do move the outputs


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if case.bounds is False])
def test_smoothing_only_ops_are_refused_by_the_bound_tracer(name, tmp_path):
    module = load_onnx(CASES[name].write(tmp_path / "model.onnx"))
    with torch.no_grad():
        assert torch.isfinite(module(torch.randn(1000, *module.input_shape))).all()  # a smoothing batch
    with pytest.raises(certify.UnsupportedModelError, match="AvgPool2d|Softmax"):
        certify.BoundedModel(module, module.input_shape)


def calls(module):
    """(kind, what, args after the first, kwargs) of each call in the graph: a module or a function."""
    out = []
    for n in module.graph.nodes:
        if n.op == "call_module":
            out.append(("module", module.get_submodule(n.target), n.args[1:], n.kwargs))
        elif n.op == "call_function":
            out.append(("function", n.target, n.args[1:], n.kwargs))
    return out


def test_new_operators_convert_to_the_torch_forms_bounds_read(tmp_path):
    """The forms the bound tracer reads: modules with the ONNX attributes, and functions with plain
    Python numbers, slices and a dim keyword."""
    f32 = lambda v: float(np.float32(v))
    found = calls(load_onnx(activations(tmp_path / "a.onnx")))
    mods = [c[1] for c in found if c[0] == "module"]
    leaky = [m for m in mods if isinstance(m, nn.LeakyReLU)]
    assert [m.negative_slope for m in leaky] == [f32(0.2), f32(0.01)]
    assert [m.alpha for m in mods if isinstance(m, nn.ELU)] == [f32(0.7), 1.0]
    assert [(m.beta, m.threshold) for m in mods if isinstance(m, nn.Softplus)] == [(1.0, 20.0)]
    by_numbers = [(c[1], c[2]) for c in found if c[0] == "function" and isinstance(c[2][0], float)]
    assert by_numbers == [(operator.mul, (f32(0.3),)), (operator.add, (f32(0.45),)),
                          (operator.mul, (f32(0.2),)), (operator.add, (0.5,))]
    assert [(m.min_val, m.max_val) for m in mods if isinstance(m, nn.Hardtanh)] == [(0.0, 1.0), (0.0, 1.0)]

    found = calls(load_onnx(clips(13)(tmp_path / "c.onnx")))
    assert [(c[1], c[3]) for c in found if c[0] == "function"] == [(torch.clamp, {"min": f32(-0.4)}),
                                                                   (torch.clamp, {"max": f32(0.6)})]
    hardtanh = [(m.min_val, m.max_val) for k, m, *_ in found if isinstance(m, nn.Hardtanh)]
    assert hardtanh == [(f32(-0.4), f32(0.6))]

    module = load_onnx(split_concat(13)(tmp_path / "s.onnx"))
    found = [(what, args, kwargs) for kind, what, args, kwargs in calls(module) if kind == "function"]
    whole = slice(None)
    parts = [((whole, slice(a, b, 1), whole, whole),) for a, b in ((0, 1), (1, 4), (4, 6))]
    assert found[:3] == [(operator.getitem, part, {}) for part in parts]
    cat = next(n for n in module.graph.nodes if n.target is torch.cat)
    assert isinstance(cat.args[0], list) and len(cat.args[0]) == 3 and cat.kwargs == {"dim": 1}
    assert [(what, kwargs) for what, args, kwargs in found[4:]] == [
        (torch.maximum, {}), (torch.minimum, {}), (operator.sub, {}), (torch.clamp, {"min": f32(0.2)}),
        (torch.clamp, {"max": f32(1.1)})]

    found = calls(load_onnx(pads_pools_slices(tmp_path / "p.onnx")))
    pad = next(m for k, m, *_ in found if isinstance(m, nn.ConstantPad2d))
    assert pad.padding == (2, 0, 1, 3) and pad.value == 0.5
    pool = next(m for k, m, *_ in found if isinstance(m, nn.MaxPool2d))
    assert (pool.kernel_size, pool.stride, pool.padding, pool.dilation) == ((2, 3), (1, 2), (1, 1), (2, 1))
    slices = [args[0] for kind, what, args, _ in found if what is operator.getitem]
    assert slices == [(whole, whole, slice(1, 8, 2), slice(1, 4, 1)), (whole, slice(0, 2, 1), whole, whole)]

    found = calls(load_onnx(conv_transposes(tmp_path / "t.onnx")))
    up1, up2 = [m for k, m, *_ in found if isinstance(m, nn.ConvTranspose2d)]
    assert (up1.in_channels, up1.out_channels, up1.stride, up1.padding, up1.output_padding, up1.groups,
            up1.dilation, up1.bias is not None) == (4, 6, (2, 2), (1, 1), (1, 1), 2, (2, 2), True)
    assert (up2.stride, up2.padding, up2.kernel_size, up2.bias) == ((1, 2), (0, 0), (2, 3), None)
    assert [m.output_size for k, m, *_ in found if isinstance(m, nn.AdaptiveAvgPool2d)] == [1]


def test_reshape_to_a_constant_batch_of_one_keeps_the_batch(tmp_path):
    rng = np.random.default_rng(10)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["f"], name="flatten_to_1xN"),
             helper.make_node("Gemm", ["f", "w"], ["y"], name="gemm", transB=1)]
    path = save(onnx_model(nodes, [1, 3, 4, 4], {"shape": np.array([1, 48]), "w": weights(rng, 2, 48)}),
                tmp_path / "m.onnx")
    module = load_onnx(path)
    assert module.input_shape == (3, 4, 4) and module.output_shape == (2,)
    x = torch.randn(7, 3, 4, 4)
    torch.testing.assert_close(module(x), ort_outputs(path, x), rtol=1e-5, atol=1e-5)
    bounds = certify.BoundedModel(module, (3, 4, 4)).bounds(x, 0.0)
    torch.testing.assert_close(bounds.lower, module(x), rtol=1e-5, atol=1e-5)


def test_exported_file_has_a_dynamic_batch_and_replaces_atomically(tmp_path):
    model, shape = build("cnn")
    path = tmp_path / "cnn.onnx"
    path.write_text("an older file")
    export_onnx(model, shape, path)
    assert os.listdir(tmp_path) == ["cnn.onnx"]  # no temporary file left behind
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch
    x = torch.rand(5, *shape)
    torch.testing.assert_close(load_onnx(path)(x), model(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError):
        export_onnx(model, (3, 6, 6), tmp_path / "wrong.onnx")  # the model takes 2 channels
    assert os.listdir(tmp_path) == ["cnn.onnx"]
    with pytest.raises(ValueError, match="float32"):
        export_onnx(copy.deepcopy(model).double(), shape, tmp_path / "f64.onnx")


# ----------------------------------------------------------------------------- unusable files
def valid_bytes(tmp_path) -> bytes:
    return gemm_alpha_beta(tmp_path / "valid.onnx").read_bytes()


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "random", "text", "invalid-graph"])
def test_unreadable_files_raise_model_file_error_naming_the_file(kind, tmp_path):
    path = tmp_path / f"{kind}.onnx"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        data = valid_bytes(tmp_path)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    elif kind == "text":
        path.write_text("layers:\n  - linear 784 10\n  - relu\n")
    elif kind == "invalid-graph":  # a node reads a value nothing defines
        save(onnx_model([helper.make_node("Relu", ["ghost"], ["y"], name="relu")], ["N", 4]), path)
    reason = {"missing": "no such file", "empty": "the file is empty",
              "invalid-graph": "not a valid ONNX model"}.get(kind, "(corrupt, truncated or not an ONNX model|"
                                                                  "not a valid ONNX model)")
    with pytest.raises(ModelFileError, match=reason) as info:
        load_onnx(path)
    message = str(info.value)
    assert str(path) in message and "Traceback" not in message and len(message.splitlines()) == 1


def test_external_data_is_refused(tmp_path):
    path = tmp_path / "external.onnx"
    onnx.save(onnx.load_from_string(valid_bytes(tmp_path)), str(path), save_as_external_data=True,
              location="weights.bin", size_threshold=0)
    assert (tmp_path / "weights.bin").exists()
    with pytest.raises(ModelFileError, match="external data") as info:
        load_onnx(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- unsupported models
def lstm_model(path):
    rng = np.random.default_rng(11)
    node = helper.make_node("LSTM", ["x", "W", "R"], ["y"], name="encoder_lstm", hidden_size=3, layout=1)
    inits = {"W": weights(rng, 1, 12, 4), "R": weights(rng, 1, 12, 3)}
    return save(onnx_model([node], ["N", 5, 4], inits, output_rank=4), path)


def gather_model(path):
    node = helper.make_node("Gather", ["x", "idx"], ["y"], name="pick_features", axis=1)
    return save(onnx_model([node], ["N", 6], {"idx": np.array([0, 2])}), path)


def two_inputs(path):
    inputs = [helper.make_tensor_value_info(n, F, ["N", 4]) for n in ("x", "z")]
    node = helper.make_node("Add", ["x", "z"], ["y"], name="add")
    return save(onnx_model([node], None, inputs=inputs), path)


def float64_input(path):
    return save(onnx_model([helper.make_node("Relu", ["x"], ["y"], name="relu")], ["N", 4],
                           input_type=TensorProto.DOUBLE), path)


def float64_weights(path):
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="gemm64", transB=1)
    return save(onnx_model([node], ["N", 4], {"w": np.ones((2, 4))}), path)


def inexact_alpha(path):
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="gemm_alpha", alpha=0.1, transB=1)
    return save(onnx_model([node], ["N", 4], {"w": weights(np.random.default_rng(12), 2, 4)}), path)


def conv_with(**attrs):
    def write(path):
        node = helper.make_node("Conv", ["x", "k"], ["y"], name="odd_conv", **attrs)
        inits = {"k": weights(np.random.default_rng(13), 2, 1, 2, 2)}
        return save(onnx_model([node], ["N", 1, 5, 5], inits, output_rank=4), path)

    return write


def batch_changing_reshape(path):
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape_pairs")
    return save(onnx_model([node], ["N", 6], {"shape": np.array([-1, 3])}), path)


def mixed_rank_add(path):
    """(N, 1, 8) + (N, 8): ONNX broadcasts within a sample (to (1, 8) each); torch would pair the
    batch axis of the second with axis 1 of the first and mix samples."""
    nodes = [helper.make_node("Reshape", ["x", "flat_shape"], ["flat"], name="flatten_it"),
             helper.make_node("Reshape", ["flat", "row_shape"], ["rows"], name="to_rows"),
             helper.make_node("Add", ["rows", "flat"], ["y"], name="mixed_add")]
    inits = {"flat_shape": np.array([-1, 8]), "row_shape": np.array([-1, 1, 8])}
    return save(onnx_model(nodes, ["N", 2, 4], inits, output_rank=3), path)


def one_node(op, inputs, name, inits=None, outputs=("y",), dims=("N", 1, 4, 4), opset=17, **attrs):
    """A model of one `op` node called `name` on the input x of shape `dims`."""

    def write(path):
        node = helper.make_node(op, list(inputs), list(outputs), name=name, **attrs)
        return save(onnx_model([node], list(dims), inits, opset=opset, output_rank=len(dims)), path)

    return write


PADS = np.array([0, 0, 1, 1, 0, 0, 1, 1])
KERNEL = weights(np.random.default_rng(14), 1, 2, 3, 3)


@pytest.mark.parametrize("write,expected", [
    (mixed_rank_add, r"'mixed_add' \(Add\): arithmetic on two computed values of different rank"),
    (lstm_model, r"'encoder_lstm' uses operator LSTM"),
    (gather_model, r"'pick_features' \(Gather\): Gather of values computed from the input"),
    (two_inputs, r"takes 2 inputs \(x, z\)"),
    (float64_input, r"of type DOUBLE; certify reads float32 models only"),
    (float64_weights, r"'gemm64' \(Gemm\): B has dtype float64"),
    (inexact_alpha, r"'gemm_alpha' \(Gemm\): alpha=0.1 times the weights is not exactly a float32"),
    (conv_with(pads=[0, 0, 1, 1]), r"'odd_conv' \(Conv\): pads \[0, 0, 1, 1\]"),
    (conv_with(auto_pad="SAME_UPPER"), r"'odd_conv' \(Conv\): auto_pad=SAME_UPPER"),
    (batch_changing_reshape, r"'reshape_pairs' \(Reshape\): target shape \[-1, 3\] does not map one sample"),
    (one_node("Pad", ["x", "pads"], "pad_reflect", {"pads": PADS}, mode="reflect"),
     r"'pad_reflect' \(Pad\): mode=reflect; certify converts constant padding only"),
    (one_node("Pad", ["x", "pads"], "pad_channels", {"pads": np.array([0, 1, 0, 0, 0, 0, 0, 0])}),
     r"'pad_channels' \(Pad\): pads .* certify pads the last two axes"),
    (one_node("Pad", ["x", "pads"], "crop", {"pads": np.array([0, 0, -1, 0, 0, 0, 0, 0])}),
     r"'crop' \(Pad\): negative pads"),
    (one_node("Slice", ["x", "s", "e", "a"], "slice_batch", {"s": np.array([1]), "e": np.array([3]),
                                                             "a": np.array([0])}),
     r"'slice_batch' \(Slice\): slices the batch axis"),
    (one_node("Slice", ["x", "s", "e", "a", "k"], "slice_reverse",
              {"s": np.array([-1]), "e": np.array([-100]), "a": np.array([3]), "k": np.array([-1])}),
     r"'slice_reverse' \(Slice\): steps \[-1\]: certify supports positive steps only"),
    (one_node("Slice", ["x", "s", "e", "a"], "slice_empty", {"s": np.array([3]), "e": np.array([1]),
                                                             "a": np.array([2])}),
     r"'slice_empty' \(Slice\): an empty result"),
    (one_node("Concat", ["x", "c"], "concat_mixed", {"c": np.ones((1, 1, 4, 4), np.float32)}, axis=1),
     r"'concat_mixed' \(Concat\): Concat of constants with values computed from the input"),
    (one_node("Concat", ["x", "x"], "concat_batch", axis=0),
     r"'concat_batch' \(Concat\): Concat along the batch"),
    (one_node("Split", ["x"], "split_batch", outputs=("y", "z")),
     r"'split_batch' \(Split\): splits the batch axis"),
    (one_node("ConvTranspose", ["x", "k"], "odd_up", {"k": KERNEL}, pads=[0, 0, 1, 1]),
     r"'odd_up' \(ConvTranspose\): pads \[0, 0, 1, 1\]: certify supports symmetric 2-D padding only"),
    (one_node("ConvTranspose", ["x", "k"], "sized_up", {"k": KERNEL}, output_shape=[6, 6]),
     r"'sized_up' \(ConvTranspose\): output_shape"),
    (one_node("ConvTranspose", ["x", "k"], "same_up", {"k": KERNEL}, auto_pad="SAME_UPPER"),
     r"'same_up' \(ConvTranspose\): auto_pad=SAME_UPPER"),
    (one_node("Clip", ["x", "x"], "clip_by_input"),
     r"'clip_by_input' \(Clip\): min is computed from the input"),
    (one_node("Max", ["x", "x", "x"], "max3"), r"'max3' \(Max\): 3 operands; certify supports two"),
    (one_node("Min", ["x", "c"], "min_row", {"c": np.ones(4, np.float32)}),
     r"'min_row' \(Min\): the constant operand has shape \(4,\); certify needs a single number"),
    (one_node("MaxPool", ["x"], "pool_ceil", kernel_shape=[2, 2], ceil_mode=1),
     r"'pool_ceil' \(MaxPool\): ceil_mode=1"),
    (one_node("MaxPool", ["x"], "pool_pads", kernel_shape=[3, 3], pads=[0, 0, 1, 1]),
     r"'pool_pads' \(MaxPool\): pads \[0, 0, 1, 1\]"),
], ids=["mixed-rank-add", "lstm", "gather", "two-inputs", "float64-input", "float64-weights", "inexact-alpha",
        "asymmetric-pads", "auto-pad-same", "batch-changing-reshape", "pad-reflect", "pad-channels",
        "pad-negative", "slice-batch", "slice-negative-step", "slice-empty", "concat-mixed", "concat-batch",
        "split-batch", "conv-transpose-asymmetric-pads", "conv-transpose-output-shape", "conv-transpose-same",
        "clip-by-input", "max-of-three", "min-of-a-row", "maxpool-ceil-mode", "maxpool-asymmetric-pads"])
def test_unsupported_models_are_refused_naming_the_operation(write, expected, tmp_path):
    path = write(tmp_path / "model.onnx")
    with pytest.raises(certify.UnsupportedModelError, match=expected) as info:
        load_onnx(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("case", ["pad-of-constants", "constant-of-shape", "pad-of-values"])
def test_padding_into_a_huge_value_is_refused_before_it_is_computed(case, tmp_path):
    """Pads (and ConstantOfShape) name sizes of their own: checked before anything is allocated."""
    if case == "pad-of-constants":
        nodes = [helper.make_node("Pad", ["c", "pads"], ["w"], name="grow"),
                 helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")]
        inits = {"c": np.ones((4, 2), np.float32), "pads": np.array([0, 0, 0, 2**40])}
        match = r"'grow' \(Pad\), a value folded from constants"
    elif case == "constant-of-shape":
        nodes = [helper.make_node("ConstantOfShape", ["shape"], ["w"], name="grow"),
                 helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")]
        inits = {"shape": np.array([4, 2**40])}
        match = r"'grow' \(ConstantOfShape\), a value folded from constants"
    else:
        nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"], name="image"),
                 helper.make_node("Pad", ["r", "pads"], ["y"], name="grow")]
        inits = {"shape": np.array([-1, 1, 2, 2]), "pads": np.array([0, 0, 2**20, 2**20, 0, 0, 2**20, 2**20])}
        match = r"'grow' \(Pad\) computes a value of shape"
    path = save(onnx_model(nodes, ["N", 4], inits), tmp_path / "m.onnx")
    with pytest.raises(limits.ResourceLimitError, match=match):
        load_onnx(path)
