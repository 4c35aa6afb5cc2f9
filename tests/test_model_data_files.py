"""Model and data files: every format loads to the same function; nothing unpickles code."""

import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from certify.formats import DataFileError, ModelFileError
from certify.formats.data_files import load_data, save_npz
from certify.formats.model_files import load_model


def save_torchscript(net, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.script is deprecated, still supported
        torch.jit.save(torch.jit.script(net), path)


def small_net():
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()


def test_every_format_gives_the_same_function(tmp_path):
    net = small_net()
    x = torch.randn(5, 6)
    save_torchscript(net, tmp_path / "net.ts")
    torch.export.save(torch.export.export(net, (torch.zeros(2, 6),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},)), tmp_path / "net.pt2")
    torch.save(net.state_dict(), tmp_path / "net.pt")
    factory = "tests_factory:build"
    (tmp_path / "tests_factory.py").write_text(
        "from torch import nn\n"
        "def build():\n    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        loaded = {
            "torchscript": load_model(tmp_path / "net.ts", trust_code=True),
            "torch.export": load_model(tmp_path / "net.pt2", trust_code=True),
            "state_dict": load_model(tmp_path / "net.pt", arch=factory),
        }
    finally:
        sys.path.remove(str(tmp_path))
    with torch.no_grad():
        expected = net(x)
        for kind, model in loaded.items():
            assert model.format == kind
            assert len(model.sha256) == 64
            assert not model.module.training
            torch.testing.assert_close(model.module(x), expected)


def test_state_dict_without_arch_says_what_to_pass(tmp_path):
    torch.save(small_net().state_dict(), tmp_path / "net.pt")
    with pytest.raises(ModelFileError, match="--arch"):
        load_model(tmp_path / "net.pt")
    with pytest.raises(ModelFileError, match="does not fit the architecture"):
        load_model(tmp_path / "net.pt", arch="certify.models:architecture")


class _Payload:
    """Unpickling this runs os.system: the attack weights_only refuses."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_a_pickle_with_code_is_refused_and_not_run(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    if writer == "torch.save":
        torch.save({"weight": _Payload(marker)}, path)
    else:
        path.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ModelFileError, match="would run code") as info:
        load_model(path, arch="certify.models:architecture")
    assert "posix.system" in str(info.value) or "os.system" in str(info.value) or writer == "pickle"
    assert not marker.exists()


def test_a_whole_module_pickle_is_refused(tmp_path):
    torch.save(small_net(), tmp_path / "full.pt")
    with pytest.raises(ModelFileError, match="imports torch.nn.modules"):
        load_model(tmp_path / "full.pt")


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b"hello, not a model", "not a format certify reads"),
    (b"PK\x03\x04 broken zip", "damaged zip"),
])
def test_unreadable_model_files(tmp_path, content, match):
    path = tmp_path / "model.bin"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=match):
        load_model(path)


def test_truncated_torchscript_archive(tmp_path):
    save_torchscript(small_net(), tmp_path / "net.ts")
    data = (tmp_path / "net.ts").read_bytes()
    (tmp_path / "cut.ts").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError):
        load_model(tmp_path / "cut.ts", trust_code=True)


def test_formats_that_run_code_need_trust(tmp_path):
    """TorchScript and torch.export archives run code from the file while loading: refused unless
    the user says they trust the file, whatever its name."""
    save_torchscript(small_net(), tmp_path / "innocent.pt")
    net = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.5))  # exported in training mode
    torch.export.save(torch.export.export(net, (torch.zeros(2, 6),)), tmp_path / "net.pt2")
    for name in ("innocent.pt", "net.pt2"):
        with pytest.raises(ModelFileError, match="--trust-model-code"):
            load_model(tmp_path / name)
    with pytest.raises(ModelFileError, match="training mode"):
        load_model(tmp_path / "net.pt2", trust_code=True)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nope.onnx")


# ---------------------------------------------------------------------------- data
def test_npz_roundtrip_and_hash(tmp_path):
    x, y = torch.rand(7, 1, 4, 4), torch.randint(0, 3, (7,))
    save_npz(tmp_path / "d.npz", x, y)
    data = load_data(tmp_path / "d.npz")
    torch.testing.assert_close(data.x, x)
    assert data.y.tolist() == y.tolist()
    assert data.input_shape == (1, 4, 4) and len(data) == 7
    assert load_data(tmp_path / "d.npz").sha256 == data.sha256
    save_npz(tmp_path / "e.npz", x + 1e-3, y)
    assert load_data(tmp_path / "e.npz").sha256 != data.sha256


def test_npy_with_labels_and_other_key_names(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 5), np.float64))
    np.save(tmp_path / "y.npy", np.array([0, 1, 2]))
    data = load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy")
    assert data.x.dtype == torch.float32 and data.y.tolist() == [0, 1, 2]
    np.savez(tmp_path / "d.npz", inputs=np.zeros((2, 3), np.float32), labels=np.array([1, 0]))
    assert load_data(tmp_path / "d.npz").y.tolist() == [1, 0]


@pytest.mark.parametrize("arrays,match", [
    ({"x": np.zeros((3, 2), np.float32)}, "no labels array"),
    ({"y": np.zeros(3, np.int64)}, "no inputs array"),
    ({"x": np.zeros((3, 2), np.float32), "y": np.zeros(2, np.int64)}, "3 inputs but 2 labels"),
    ({"x": np.zeros((3, 2), np.int64), "y": np.zeros(3, np.int64)}, "must be floating point"),
    ({"x": np.zeros((3, 2), np.float32), "y": np.zeros(3, np.float32)}, "must be integers"),
    ({"x": np.full((3, 2), np.nan, np.float32), "y": np.zeros(3, np.int64)}, "NaN"),
    ({"x": np.zeros((3, 2), np.float32), "y": -np.ones(3, np.int64)}, ">= 0"),
])
def test_bad_data_files(tmp_path, arrays, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataFileError, match=match):
        load_data(tmp_path / "d.npz")


def test_labels_file_is_part_of_the_data_hash(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 5), np.float32))
    np.save(tmp_path / "y.npy", np.array([0, 1, 2]))
    before = load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy").sha256
    np.save(tmp_path / "y.npy", np.array([0, 1, 1]))
    assert load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy").sha256 != before
    np.savez(tmp_path / "archive.npz", x=np.zeros((3, 5), np.float32))
    (tmp_path / "archive.npz").rename(tmp_path / "renamed.npy")
    with pytest.raises(DataFileError, match="not a plain .npy"):
        load_data(tmp_path / "renamed.npy", labels=tmp_path / "y.npy")


def test_object_arrays_are_not_unpickled(tmp_path):
    np.save(tmp_path / "x.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    np.save(tmp_path / "y.npy", np.array([0, 1]))
    with pytest.raises(DataFileError, match="Python objects"):
        load_data(tmp_path / "x.npy", labels=tmp_path / "y.npy")


def test_bundled_digits():
    data = load_data("digits")
    assert data.input_shape == (1, 8, 8) and len(data) == 297
    assert float(data.x.min()) >= 0 and float(data.x.max()) <= 1


def test_arch_from_the_current_folder_and_its_failures(tmp_path, monkeypatch):
    torch.save(small_net().state_dict(), tmp_path / "net.pt")
    (tmp_path / "user_arch.py").write_text(
        "from torch import nn\n"
        "def build():\n    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))\n"
        "def needs(width):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    assert load_model("net.pt", arch="user_arch:build").format == "state_dict"
    with pytest.raises(ModelFileError, match=r"user_arch:needs\(\) failed .*no arguments"):
        load_model("net.pt", arch="user_arch:needs")
    torch.save(nn.Linear(3, 3).state_dict(), tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="Missing key"):
        load_model("other.pt", arch="user_arch:build")
