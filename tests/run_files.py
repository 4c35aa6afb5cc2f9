"""Small model and data files for the run, certificate and CLI tests."""

import torch
from torch import nn

from certify.formats.data_files import save_npz
from certify.formats.onnx_import import export_onnx


def make_files(folder, count: int = 12, features: int = 6, classes: int = 3):
    """An ONNX MLP and an .npz of `count` inputs labelled mostly by the model (one label in
    four is changed, so some inputs are wrong). Returns (model_path, data_path)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, classes)).eval()
    x = torch.rand(count, features)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[::4] = (y[::4] + 1) % classes
    model_path, data_path = folder / "net.onnx", folder / "data.npz"
    export_onnx(net, (features,), model_path)
    save_npz(data_path, x, y)
    return model_path, data_path
