"""Small model and data files, and the helpers shared by the run, certificate, CLI and Ray tests."""

import sqlite3
import subprocess
import sys

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


def run_cli(*args, cwd, timeout=300):
    """Runs `certify ARGS` in a subprocess from `cwd`: not the repository root, whose source tree
    would shadow the installed package."""
    return subprocess.run([sys.executable, "-m", "certify.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


def stored_rows(store) -> int:
    """Rows committed so far in a run store (0 before it has its table), read by another process."""
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(store) as db:
            return db.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def small_chunks(monkeypatch, size):
    """Runs cut into chunks of `size` inputs (more chunks, commits and interruption points)."""
    from certify.runs import run

    original = run.make_job

    def make(inputs, method):
        job = original(inputs, method)
        job.chunk = size
        return job
    monkeypatch.setattr(run, "make_job", make)


def without_times(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
