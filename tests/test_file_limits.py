"""Hostile data and model files: small files that would make the loaders allocate gigabytes, labels
that wrap to negative values, references to other files. Each is refused with a clear error, before
anything large is allocated."""

import io
import os
import stat
import struct
import time
import tracemalloc
import zipfile

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import certify
from certify import limits
from certify.formats import DataFileError, ModelFileError
from certify.formats.data_files import load_data
from certify.formats.model_files import load_model
from certify.formats.onnx_import import export_onnx, load_onnx

F = TensorProto.FLOAT


# ----------------------------------------------------------------------------- helpers
def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def npy_header(shape, descr="<f4", version=(1, 0)) -> bytes:
    """An .npy header declaring `shape` of `descr`, with no data after it."""
    text = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode("latin1")
    fixed = 6 + 2 + (2 if version == (1, 0) else 4)
    text += b" " * (63 - (fixed + len(text)) % 64) + b"\n"
    length = struct.pack("<H" if version == (1, 0) else "<I", len(text))
    return b"\x93NUMPY" + bytes(version) + length + text


def write_npz(path, members: dict, compress=zipfile.ZIP_DEFLATED):
    """An .npz written by hand: members maps a name ("x.npy") to its bytes."""
    with zipfile.ZipFile(path, "w", compression=compress) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def good_arrays(n=3):
    return {"x.npy": npy_bytes(np.zeros((n, 2), np.float32)), "y.npy": npy_bytes(np.arange(n) % 2)}


def peak_bytes(fn):
    """The peak of traced allocations (numpy's array data included) while fn() runs, and its outcome."""
    tracemalloc.start()
    try:
        try:
            outcome = fn()
        except Exception as exc:  # noqa: BLE001 - the caller checks it
            outcome = exc
        return tracemalloc.get_traced_memory()[1], outcome
    finally:
        tracemalloc.stop()


# ----------------------------------------------------------------------------- labels
INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


@pytest.mark.parametrize("dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("container", ["npz", "npy"])
def test_integer_labels_of_every_width_load_as_int64(dtype, container, tmp_path):
    x, y = np.zeros((3, 2), np.float32), np.array([0, 2, 1], dtype)
    if container == "npz":
        np.savez(tmp_path / "d.npz", x=x, y=y)
        data = load_data(tmp_path / "d.npz")
    else:
        np.save(tmp_path / "x.npy", x)
        np.save(tmp_path / "y.npy", y)
        data = load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert data.y.dtype == torch.int64 and data.y.tolist() == [0, 2, 1]


BAD_LABELS = {
    "uint64-max": (np.array([0, 2**64 - 1, 1], np.uint64), "beyond int64"),
    "uint64-2**63": (np.array([0, 2**63, 1], np.uint64), "beyond int64"),
    "big-endian-uint64": (np.array([0, 2**64 - 1, 1], ">u8"), "beyond int64"),
    "int8-negative": (np.array([0, -1, 1], np.int8), ">= 0"),
    "int64-min": (np.array([0, -(2**63), 1], np.int64), ">= 0"),
    "bool": (np.array([True, False, True]), "must be integers"),
    "float-whole": (np.array([0.0, 1.0, 2.0]), "must be integers"),
    "float-nan": (np.array([0.0, np.nan, 2.0]), "must be integers"),
    "float-inf": (np.array([0.0, -np.inf, 2.0], np.float16), "must be integers"),
    "float-fraction": (np.array([0.0, 0.5, 2.0], np.float32), "must be integers"),
    "complex": (np.array([0, 1, 2], np.complex64), "must be integers"),
    "object": (np.array([0, 1, None], dtype=object), "Python objects"),
    "strings": (np.array(["0", "1", "2"]), "numeric arrays only"),
}


@pytest.mark.parametrize("name", list(BAD_LABELS))
@pytest.mark.parametrize("container", ["npz", "npy"])
def test_labels_that_are_not_class_indices_are_refused(name, container, tmp_path):
    """uint64 2**64 - 1 passed the old ">= 0" check and became -1 after the cast to int64, the
    prediction of an abstention: abstentions then counted as correct."""
    y, match = BAD_LABELS[name]
    x = np.zeros((3, 2), np.float32)
    if container == "npz":
        write_npz(tmp_path / "d.npz", {"x.npy": npy_bytes(x), "y.npy": npy_bytes(y)})
        load = lambda: load_data(tmp_path / "d.npz")  # noqa: E731
    else:
        np.save(tmp_path / "x.npy", x)
        (tmp_path / "y.npy").write_bytes(npy_bytes(y))
        load = lambda: load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy")  # noqa: E731
    with pytest.raises(DataFileError, match=match) as info:
        load()
    assert "d.npz" in str(info.value) or "y.npy" in str(info.value) or "x.npy" in str(info.value)


def test_the_reader_keeps_byte_order_layout_and_values(tmp_path):
    """certify reads .npy data itself now: big-endian, Fortran-order and float16 arrays come back
    exactly as numpy's own reader gives them, compressed or not."""
    rng = np.random.default_rng(0)
    # float64 values that float32 holds exactly (others are refused: test_reproducible_rows.py)
    x = np.asfortranarray(rng.standard_normal((5, 3, 2)).astype(np.float32).astype(">f8"))
    y = np.array([3, 0, 2, 1, 4], ">i4")
    np.savez_compressed(tmp_path / "c.npz", x=x, y=y)
    np.savez(tmp_path / "s.npz", x=x.astype(np.float16), y=y)
    for name, expected in (("c.npz", x), ("s.npz", x.astype(np.float16))):
        data = load_data(tmp_path / name)
        np.testing.assert_array_equal(data.x.numpy(), expected.astype(np.float32))
        assert data.y.tolist() == [3, 0, 2, 1, 4]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.testing.assert_array_equal(load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy").x.numpy(),
                                  x.astype(np.float32))


# ----------------------------------------------------------------------------- sizes
def test_an_npz_declaring_a_huge_array_is_refused_before_allocating(tmp_path):
    """A few hundred bytes whose .npy header declares 2**40 floats (4 TiB)."""
    path = write_npz(tmp_path / "bomb.npz", {"x.npy": npy_header((2**40, 1)), "y.npy": npy_bytes(np.zeros(1, int))})
    peak, outcome = peak_bytes(lambda: load_data(path))
    assert isinstance(outcome, limits.ResourceLimitError), outcome
    message = str(outcome)
    assert str(path) in message and "'x.npy'" in message and "CERTIFY_LIMIT_DECOMPRESSED_BYTES" in message
    assert peak < 1 << 20


def test_a_compressed_npz_over_the_limit_is_refused_without_decompressing(tmp_path, monkeypatch):
    """The zip bomb of the issue, scaled down: 16 MB of zeros compress to ~16 KB; with the limit at
    1 MB the archive is refused without the 16 MB being allocated, and loads once the limit is raised."""
    x = np.zeros((4096, 1024), np.float32)
    path = write_npz(tmp_path / "zeros.npz", {"x.npy": npy_bytes(x), "y.npy": npy_bytes(np.zeros(4096, np.int64))})
    del x
    assert path.stat().st_size < 200_000
    monkeypatch.setenv("CERTIFY_LIMIT_DECOMPRESSED_BYTES", "1e6")
    peak, outcome = peak_bytes(lambda: load_data(path))
    assert isinstance(outcome, limits.ResourceLimitError), outcome
    assert "CERTIFY_LIMIT_DECOMPRESSED_BYTES" in str(outcome) and str(path) in str(outcome)
    assert peak < 4 << 20
    monkeypatch.setenv("CERTIFY_LIMIT_DECOMPRESSED_BYTES", "2e7")
    assert load_data(path).x.shape == (4096, 1024)


def test_an_npy_over_the_limit_is_refused_before_allocating(tmp_path, monkeypatch):
    np.save(tmp_path / "x.npy", np.zeros((1000, 100), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(1000, np.int64))
    monkeypatch.setenv("CERTIFY_LIMIT_DECOMPRESSED_BYTES", "100000")
    with pytest.raises(limits.ResourceLimitError, match="CERTIFY_LIMIT_DECOMPRESSED_BYTES") as info:
        load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert str(tmp_path / "x.npy") in str(info.value)


def test_a_truncated_npy_is_refused_before_allocating_what_its_header_declares(tmp_path):
    (tmp_path / "x.npy").write_bytes(npy_header((1 << 26, 1)) + bytes(64))  # declares 256 MiB
    np.save(tmp_path / "y.npy", np.zeros(1 << 26, np.int8))  # 64 MiB: more than the peak allowed below
    peak, outcome = peak_bytes(lambda: load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy"))
    assert isinstance(outcome, DataFileError) and "truncated" in str(outcome), outcome
    assert peak < 8 << 20


def test_the_declared_size_of_a_zip_member_is_checked(tmp_path, monkeypatch):
    """A member whose array is small but which declares (and holds) more bytes than the limit."""
    padded = npy_bytes(np.zeros((2, 2), np.float32)) + bytes(5000)
    path = write_npz(tmp_path / "d.npz", {"x.npy": padded, "y.npy": npy_bytes(np.zeros(2, np.int64))})
    assert load_data(path).x.shape == (2, 2)
    monkeypatch.setenv("CERTIFY_LIMIT_DECOMPRESSED_BYTES", "2000")
    with pytest.raises(limits.ResourceLimitError, match="declared uncompressed size") as info:
        load_data(path)
    assert str(path) in str(info.value) and "'x.npy'" in str(info.value)


def test_the_number_of_archive_members_is_limited(tmp_path, monkeypatch):
    members = good_arrays() | {f"extra{i}.npy": npy_bytes(np.zeros(1)) for i in range(30)}
    path = write_npz(tmp_path / "many.npz", members, compress=zipfile.ZIP_STORED)
    assert len(load_data(path)) == 3
    monkeypatch.setenv("CERTIFY_LIMIT_ARCHIVE_MEMBERS", "10")
    with pytest.raises(limits.ResourceLimitError, match="32 members.*CERTIFY_LIMIT_ARCHIVE_MEMBERS") as info:
        load_data(path)
    assert str(path) in str(info.value)


def test_data_file_size_is_limited(tmp_path, monkeypatch):
    path = write_npz(tmp_path / "d.npz", good_arrays())
    monkeypatch.setenv("CERTIFY_LIMIT_FILE_BYTES", "100")
    with pytest.raises(limits.ResourceLimitError, match="CERTIFY_LIMIT_FILE_BYTES") as info:
        load_data(path)
    assert str(path) in str(info.value)
    np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float32))
    (tmp_path / "y.npy").write_bytes(npy_bytes(np.zeros(3, np.int64)))
    with pytest.raises(limits.ResourceLimitError, match="CERTIFY_LIMIT_FILE_BYTES"):
        load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy")


# ----------------------------------------------------------------------------- damaged files
DAMAGED = {
    # what the file holds, its name, the message
    "text-as-npz": (b"x,y\n0.1,1\n", "d.npz", r"not an \.npz \(zip\) archive"),
    "pickle-as-npz": (b"\x80\x04K\x01.", "d.npz", r"not an \.npz \(zip\) archive"),
    "npy-as-npz": (npy_bytes(np.zeros((3, 2), np.float32)), "d.npz", r"not an \.npz.*name it \.npy"),
    "text-as-npy": (b"0.1 0.2\n", "x.npy", r"not a valid \.npy array"),
    "pickle-as-npy": (b"\x80\x04K\x01.", "x.npy", r"not a valid \.npy array"),
    "negative-shape": (npy_header((-3, 2)), "x.npy", "invalid shape"),
    "header-length-4GB": (b"\x93NUMPY\x02\x00" + struct.pack("<I", 0xFFFFFFF0) + bytes(100), "x.npy",
                          "damaged .npy header"),
    "header-not-a-dict": (b"\x93NUMPY\x01\x00" + struct.pack("<H", 5) + b"[1,2]", "x.npy", "damaged .npy header"),
    "version-3": (npy_header((3, 2))[:6] + b"\x03\x00" + npy_header((3, 2))[8:], "x.npy", "version 3.0"),
    "structured": (npy_bytes(np.zeros(3, [("a", "<f4")])), "x.npy", "numeric arrays only"),
    "empty-dimension": (npy_bytes(np.zeros((3, 0), np.float32)), "x.npy", "no empty dimension"),
    "float64-beyond-float32": (npy_bytes(np.full((3, 2), 1e300)), "x.npy", "beyond float32's range"),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_data_files_say_what_is_wrong(name, tmp_path):
    content, filename, match = DAMAGED[name]
    path = tmp_path / filename
    path.write_bytes(content)
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    with pytest.raises(DataFileError, match=match) as info:
        load_data(path, labels=tmp_path / "y.npy" if filename.endswith(".npy") else None)
    assert str(path) in str(info.value) and "pickle" not in str(info.value)


@pytest.mark.parametrize("damage", ["truncated", "bad-crc", "member-not-npy", "labels-is-npz"])
def test_damaged_archives(damage, tmp_path):
    path = write_npz(tmp_path / "d.npz", good_arrays(), compress=zipfile.ZIP_STORED)
    data = path.read_bytes()
    labels = None
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
        match = "damaged .npz"
    elif damage == "bad-crc":  # flip a data byte of y.npy's values: its CRC no longer matches
        at = data.rindex(npy_bytes(np.arange(3) % 2)) + len(npy_bytes(np.arange(3) % 2)) - 8
        path.write_bytes(data[:at] + b"\x07" + data[at + 1:])
        match = "damaged .npz"
    elif damage == "member-not-npy":
        write_npz(path, {"x.npy": b"hello", "y.npy": npy_bytes(np.zeros(3, np.int64))})
        match = r"'x.npy' is not a valid \.npy array"
    else:
        np.save(tmp_path / "x.npy", np.zeros((3, 2), np.float32))
        labels, path = path, tmp_path / "x.npy"
        match = "not a plain .npy array"
    with pytest.raises(DataFileError, match=match):
        load_data(path, labels=labels)


# ----------------------------------------------------------------------------- ONNX models
def onnx_file(path, nodes, inits=None, input_dims=("N", 4), output_rank=2, **graph):
    """A one-input ('x'), one-output ('y') ONNX model; inits maps names to arrays or TensorProtos."""
    tensors = [v if isinstance(v, TensorProto) else numpy_helper.from_array(v, k) for k, v in (inits or {}).items()]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, list(input_dims))],
                          [helper.make_tensor_value_info("y", F, [f"d{i}" for i in range(output_rank)])],
                          initializer=tensors, **graph)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def relu_output():
    return helper.make_node("Relu", ["x"], ["y"], name="relu")


def broadcast_pair(n):
    return {"row": np.ones((1, n), np.float32), "col": np.ones((n, 1), np.float32)}


def test_an_unused_fold_bomb_is_never_evaluated(tmp_path):
    """The issue's file, larger: an Add nothing uses of a (1, 2**17) and a (2**17, 1) constant, which
    would fold into 2**34 floats (64 GiB). It is dead code: certify does not evaluate it."""
    path = onnx_file(tmp_path / "dead.onnx", [relu_output(), helper.make_node("Add", ["row", "col"], ["huge"],
                                                                               name="bomb")], broadcast_pair(2**17))
    start = time.perf_counter()
    peak, outcome = peak_bytes(lambda: load_onnx(path))
    assert isinstance(outcome, torch.nn.Module), outcome
    assert time.perf_counter() - start < 20 and peak < 16 << 20
    x = torch.randn(3, 4)
    torch.testing.assert_close(outcome(x), torch.relu(x))


def weights_from(op, n):
    """Nodes computing a constant 'w' of shape (n, n) from small constants with operator `op`."""
    if op == "Add":
        return [helper.make_node("Add", ["row", "col"], ["w"], name="fold")], broadcast_pair(n)
    if op == "MatMul":
        return [helper.make_node("MatMul", ["col", "row"], ["w"], name="fold")], broadcast_pair(n)
    if op == "Gemm":
        return [helper.make_node("Gemm", ["col", "row"], ["w"], name="fold")], broadcast_pair(n)
    if op == "Gather":
        inits = {"row": np.ones((1, n), np.float32), "idx": np.zeros(n, np.int64)}
        return [helper.make_node("Gather", ["row", "idx"], ["w"], name="fold", axis=0)], inits
    if op == "Concat":
        return [helper.make_node("Concat", ["row"] * n, ["w"], name="fold", axis=0)], {"row": np.ones((1, n), np.float32)}
    raise AssertionError(op)


@pytest.mark.parametrize("op", ["Add", "MatMul", "Gemm", "Gather", "Concat"])
def test_a_folded_constant_over_the_limit_is_refused_before_it_is_computed(op, tmp_path, monkeypatch):
    """A (2048, 2048) weight (4M elements) folded from constants of 2048 elements, used by a MatMul:
    refused with the limit at 1M elements before the 4M are allocated; loads with the default."""
    nodes, inits = weights_from(op, 2048)
    path = onnx_file(tmp_path / "fold.onnx", nodes + [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                     inits, input_dims=("N", 2048))
    monkeypatch.setenv("CERTIFY_LIMIT_TENSOR_ELEMENTS", "1e6")
    peak, outcome = peak_bytes(lambda: load_onnx(path))
    assert isinstance(outcome, limits.ResourceLimitError), outcome
    message = str(outcome)
    assert str(path) in message and "'fold'" in message and "4,194,304 elements" in message
    assert "CERTIFY_LIMIT_TENSOR_ELEMENTS" in message
    assert peak < 4 << 20  # the folded weight alone would take 16 MiB
    monkeypatch.delenv("CERTIFY_LIMIT_TENSOR_ELEMENTS")
    assert load_onnx(path).output_shape == (2048,)


def test_a_huge_live_fold_is_refused_quickly(tmp_path):
    nodes, inits = weights_from("Add", 2**17)  # 2**34 elements
    path = onnx_file(tmp_path / "fold.onnx", nodes + [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                     inits, input_dims=("N", 2**17))
    start = time.perf_counter()
    with pytest.raises(limits.ResourceLimitError, match=r"'fold' \(Add\).*17,179,869,184 elements"):
        load_onnx(path)
    assert time.perf_counter() - start < 20


def huge_tensor(name, dims, data=b"\0\0\0\0"):
    """A TensorProto that declares `dims` but holds only a few bytes."""
    tensor = TensorProto(name=name, data_type=F, dims=dims, raw_data=data)
    return tensor


@pytest.mark.parametrize("where", ["initializer", "constant"])
def test_a_tensor_declaring_a_huge_shape_is_refused_before_it_is_read(where, tmp_path):
    tensor = huge_tensor("w", [2**20, 2**20])
    if where == "initializer":
        path = onnx_file(tmp_path / "m.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], {"w": tensor})
    else:
        nodes = [helper.make_node("Constant", [], ["w"], name="const", value=tensor),
                 helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
        path = onnx_file(tmp_path / "m.onnx", nodes)
    with pytest.raises(limits.ResourceLimitError, match=r"tensor 'w' of shape \[1048576, 1048576\].*"
                                                        r"CERTIFY_LIMIT_TENSOR_ELEMENTS") as info:
        load_onnx(path)
    assert str(path) in str(info.value)


def test_a_tensor_whose_data_does_not_fit_its_shape_is_a_model_file_error(tmp_path):
    path = onnx_file(tmp_path / "m.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
                     {"w": huge_tensor("w", [4, 3], data=bytes(60))})
    with pytest.raises(ModelFileError, match="'w'") as info:
        load_onnx(path)
    assert str(path) in str(info.value)


def test_a_computed_value_over_the_limit_is_refused_without_computing_it(tmp_path, monkeypatch):
    """(N, 2048, 1) + a (1, 2048) constant broadcasts to (2048, 2048) per input: 4M elements."""
    path = onnx_file(tmp_path / "m.onnx", [helper.make_node("Add", ["x", "row"], ["y"], name="widen")],
                     {"row": np.ones((1, 2048), np.float32)}, input_dims=("N", 2048, 1), output_rank=3)
    monkeypatch.setenv("CERTIFY_LIMIT_TENSOR_ELEMENTS", "1e6")
    with pytest.raises(limits.ResourceLimitError, match=r"'widen' \(Add\) computes a value of shape \(2048, 2048\)"):
        load_onnx(path)
    monkeypatch.delenv("CERTIFY_LIMIT_TENSOR_ELEMENTS")
    assert load_onnx(path).output_shape == (2048, 2048)


@pytest.mark.parametrize("case", ["broadcast", "conv-pads", "input-shape"])
def test_huge_computed_values_are_refused_quickly(case, tmp_path):
    """A value computed from the input of 2**40 elements and more: refused from its shape, nothing
    allocated (converting used to run the model on two zero inputs, allocating every value)."""
    if case == "broadcast":
        path = onnx_file(tmp_path / "m.onnx", [helper.make_node("Add", ["x", "row"], ["y"], name="widen")],
                         {"row": np.ones((1, 2**20), np.float32)}, input_dims=("N", 2**20, 1), output_rank=3)
        match = r"'widen' \(Add\) computes a value of shape \(1048576, 1048576\)"
    elif case == "conv-pads":
        node = helper.make_node("Conv", ["x", "k"], ["y"], name="padded", pads=[10**6] * 4)
        path = onnx_file(tmp_path / "m.onnx", [node], {"k": np.ones((1, 1, 1, 1), np.float32)},
                         input_dims=("N", 1, 2, 2), output_rank=4)
        match = r"'padded' \(Conv\) computes a value of shape \(1, 2000002, 2000002\)"
    else:
        path = onnx_file(tmp_path / "m.onnx", [relu_output()], input_dims=("N", 10**6, 10**6))
        match = r"the input 'x' of shape \[None, 1000000, 1000000\]"
    start = time.perf_counter()
    with pytest.raises(limits.ResourceLimitError, match=match) as info:
        load_onnx(path)
    assert str(path) in str(info.value) and "CERTIFY_LIMIT_TENSOR_ELEMENTS" in str(info.value)
    assert time.perf_counter() - start < 20


def test_a_shape_concatenated_from_many_constants_is_limited(tmp_path, monkeypatch):
    """Concat of the input's shape (which holds the unknown batch size) with a constant named many
    times: an object array of 2M entries, refused before it is built."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Concat", ["s"] + ["c"] * 1000, ["target"], name="cat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")]
    path = onnx_file(tmp_path / "m.onnx", nodes, {"c": np.ones(2048, np.int64)})
    monkeypatch.setenv("CERTIFY_LIMIT_TENSOR_ELEMENTS", "1e6")
    with pytest.raises(limits.ResourceLimitError, match=r"'cat' \(Concat\).*2,048,002 elements"):
        load_onnx(path)


@pytest.mark.parametrize("case", ["input", "reshape", "unsqueeze"])
def test_values_of_very_many_dimensions_are_refused(case, tmp_path):
    if case == "input":
        path = onnx_file(tmp_path / "m.onnx", [relu_output()], input_dims=["N"] + [1] * 100)
    elif case == "reshape":
        path = onnx_file(tmp_path / "m.onnx", [helper.make_node("Reshape", ["x", "shape"], ["y"], name="deep")],
                         {"shape": np.array([-1] + [1] * 99 + [4])})
    else:
        path = onnx_file(tmp_path / "m.onnx", [helper.make_node("Unsqueeze", ["x", "axes"], ["y"], name="deep")],
                         {"axes": np.arange(2, 102)})
    with pytest.raises(certify.UnsupportedModelError, match="dimensions") as info:
        load_onnx(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- external and sparse tensors
def sparse_tensor(external: bool):
    values = numpy_helper.from_array(np.ones(2, np.float32), "w")
    if external:
        values.ClearField("raw_data")
        values.data_location = TensorProto.EXTERNAL
        entry = values.external_data.add()
        entry.key, entry.value = "location", "weights.bin"
        entry = values.external_data.add()
        entry.key, entry.value = "length", "8"
    return helper.make_sparse_tensor(values, numpy_helper.from_array(np.array([0, 3], np.int64), "w_idx"), [4])


def sparse_model(path, where: str, external: bool):
    add = helper.make_node("Add", ["x", "w"], ["y"], name="add")
    if where == "initializer":
        return onnx_file(path, [add], sparse_initializer=[sparse_tensor(external)])
    return onnx_file(path, [helper.make_node("Constant", [], ["w"], name="const",
                                             sparse_value=sparse_tensor(external)), add])


@pytest.mark.parametrize("kind", ["file", "folder"])
@pytest.mark.parametrize("where", ["initializer", "constant"])
def test_external_data_of_a_sparse_tensor_is_refused_without_looking_for_it(where, kind, tmp_path, monkeypatch):
    """The file a sparse tensor names is looked up relative to the current folder (onnx's checker
    stats it; a Constant's sparse_value was then read from it): refused before either."""
    path = sparse_model(tmp_path / "m.onnx", where, external=True)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    if kind == "file":
        np.ones(2, np.float32).tofile(work / "weights.bin")
    else:
        (work / "weights.bin").mkdir()
    opened = []  # the Python-level opens of the named file (onnx's checker only stats it, from C++)
    real_open, real_os_open = open, os.open

    def spy(opener):
        def wrapped(name, *args, **kwargs):
            if "weights.bin" in str(name):
                opened.append(name)
            return opener(name, *args, **kwargs)

        return wrapped

    monkeypatch.setattr(os, "open", spy(real_os_open))
    monkeypatch.setattr("builtins.open", spy(real_open))
    with pytest.raises(ModelFileError, match="external data") as info:
        load_onnx(path)
    assert str(path) in str(info.value)
    assert opened == []


@pytest.mark.parametrize("where", ["initializer", "constant"])
def test_sparse_tensors_are_refused_clearly(where, tmp_path):
    path = sparse_model(tmp_path / "m.onnx", where, external=False)
    with pytest.raises(ModelFileError, match="sparse tensors") as info:
        load_onnx(path)
    assert str(path) in str(info.value)


# ----------------------------------------------------------------------------- model files
def test_export_onnx_gives_a_new_file_the_usual_permissions(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 2)).eval()
    old = os.umask(0o022)
    try:
        export_onnx(model, (4,), tmp_path / "new.onnx")
        assert stat.S_IMODE((tmp_path / "new.onnx").stat().st_mode) == 0o644
        existing = tmp_path / "old.onnx"
        existing.write_bytes(b"")
        existing.chmod(0o640)
        export_onnx(model, (4,), existing)
        assert stat.S_IMODE(existing.stat().st_mode) == 0o640
        os.umask(0o077)
        export_onnx(model, (4,), tmp_path / "private.onnx")
        assert stat.S_IMODE((tmp_path / "private.onnx").stat().st_mode) == 0o600
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.onnx", "old.onnx", "private.onnx"]


def test_model_file_size_is_limited(tmp_path, monkeypatch):
    path = onnx_file(tmp_path / "m.onnx", [relu_output()])
    torch.save({"w": torch.zeros(3)}, tmp_path / "w.pt")
    monkeypatch.setenv("CERTIFY_LIMIT_FILE_BYTES", "50")
    for model in (path, tmp_path / "w.pt"):
        with pytest.raises(limits.ResourceLimitError, match="CERTIFY_LIMIT_FILE_BYTES") as info:
            load_model(model)
        assert str(model) in str(info.value)


def test_the_members_of_a_model_archive_are_limited(tmp_path, monkeypatch):
    torch.save({f"w{i}": torch.zeros(1) for i in range(40)}, tmp_path / "w.pt")
    monkeypatch.setenv("CERTIFY_LIMIT_ARCHIVE_MEMBERS", "20")
    with pytest.raises(limits.ResourceLimitError, match="CERTIFY_LIMIT_ARCHIVE_MEMBERS") as info:
        load_model(tmp_path / "w.pt")
    assert str(tmp_path / "w.pt") in str(info.value)


def test_a_compressed_member_of_a_state_dict_archive_is_limited(tmp_path, monkeypatch):
    """torch.save stores members uncompressed; torch.load also inflates compressed ones, allocating
    their declared size: 4 MiB of zeros in a ~4 KB member here."""
    torch.save({"w": torch.zeros(4)}, tmp_path / "sd.pt")
    with zipfile.ZipFile(tmp_path / "sd.pt") as archive:
        members = [(info.filename, archive.read(info.filename)) for info in archive.infolist()]
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w") as archive:
        for name, data in members:
            big = name.endswith("data/0")
            archive.writestr(name, bytes(4 << 20) if big else data,
                             compress_type=zipfile.ZIP_DEFLATED if big else zipfile.ZIP_STORED)
    assert (tmp_path / "bomb.pt").stat().st_size < 64_000
    monkeypatch.setenv("CERTIFY_LIMIT_DECOMPRESSED_BYTES", "1e6")
    with pytest.raises(limits.ResourceLimitError, match=r"compressed member '.*data/0'.*4,194,304 bytes") as info:
        load_model(tmp_path / "bomb.pt")
    assert str(tmp_path / "bomb.pt") in str(info.value)


def test_gemm_with_a_weight_that_is_not_a_matrix_is_refused(tmp_path):
    path = onnx_file(tmp_path / "m.onnx", [helper.make_node("Gemm", ["x", "b"], ["y"], name="gemm1d")],
                     {"b": np.ones(4, np.float32)})
    with pytest.raises(certify.UnsupportedModelError, match=r"'gemm1d' \(Gemm\): B of shape \(4,\)"):
        load_onnx(path)


def test_an_axis_beyond_numpy_integers_is_a_model_file_error(tmp_path):
    """Unsqueeze of a shape (which holds the batch size) at axis 2**40: numpy raised OverflowError."""
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Unsqueeze", ["s", "axes"], ["s2"], name="far"),
             helper.make_node("Reshape", ["x", "s2"], ["y"], name="reshape")]
    path = onnx_file(tmp_path / "m.onnx", nodes, {"axes": np.array([2**40])})
    with pytest.raises(ModelFileError, match=r"'far' \(Unsqueeze\)") as info:
        load_onnx(path)
    assert str(path) in str(info.value)
