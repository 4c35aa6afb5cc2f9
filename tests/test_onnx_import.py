"""ONNX import: every converted model computes what onnxruntime computes, the bound-supported ones
get CROWN bounds that contain sampled outputs, and unusable files fail with a message that says why."""

import copy
import os
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

import certify
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
        export_onnx(model, shape, path)
        return path

    return write


def padded_avg_pool():  # torch's count_include_pad=True, padding 1: the tracer's AvgPool2d
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.AvgPool2d(3, stride=2, padding=1), nn.Flatten(),
                         nn.Linear(3 * 3 * 3, 4)).eval(), (2, 7, 7)


def smoothing_head():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(2), nn.Tanh(), nn.Flatten(),
                          nn.Linear(4 * 3 * 3, 5), nn.Sigmoid(), nn.Linear(5, 3), nn.Softmax(dim=1))
    return model.eval(), (2, 6, 6)


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
    """MaxPool, Sigmoid, Tanh, LogSoftmax and AveragePool with uncounted padding: smoothing only."""
    rng = np.random.default_rng(8)
    nodes = [
        helper.make_node("AveragePool", ["x"], ["a"], name="avg_pads", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("MaxPool", ["a"], ["m"], name="maxpool", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["m"], ["s"], name="sigmoid"),
        helper.make_node("Flatten", ["s"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "w"], ["g"], name="gemm", transB=1),
        helper.make_node("Tanh", ["g"], ["t"], name="tanh"),
        helper.make_node("LogSoftmax", ["t"], ["y"], name="log_softmax"),
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


@dataclass(frozen=True)
class Case:
    write: Callable  # path -> path of the written ONNX file
    input_shape: tuple
    bounds: bool  # whether BoundedModel supports every converted layer


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
    for batch in (1, 7):
        x = torch.randn(batch, *case.input_shape)
        with torch.no_grad():
            out = module(x)
        assert out.shape == (batch, *module.output_shape)
        torch.testing.assert_close(out.reshape(batch, -1), ort_outputs(path, x), rtol=1e-5, atol=1e-5)


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


@pytest.mark.parametrize("name", [name for name, case in CASES.items() if not case.bounds])
def test_smoothing_only_ops_are_refused_by_the_bound_tracer(name, tmp_path):
    module = load_onnx(CASES[name].write(tmp_path / "model.onnx"))
    with torch.no_grad():
        assert torch.isfinite(module(torch.randn(1000, *module.input_shape))).all()  # a smoothing batch
    with pytest.raises(certify.UnsupportedModelError, match="MaxPool2d|AvgPool2d|Softmax"):
        certify.BoundedModel(module, module.input_shape)


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
], ids=["mixed-rank-add", "lstm", "gather", "two-inputs", "float64-input", "float64-weights", "inexact-alpha",
        "asymmetric-pads", "auto-pad-same", "batch-changing-reshape"])
def test_unsupported_models_are_refused_naming_the_operation(write, expected, tmp_path):
    path = write(tmp_path / "model.onnx")
    with pytest.raises(certify.UnsupportedModelError, match=expected) as info:
        load_onnx(path)
    assert str(path) in str(info.value)
