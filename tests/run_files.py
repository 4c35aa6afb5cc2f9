"""Small model and data files, and the helpers shared by the run, certificate, CLI and Ray tests."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

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


def kill_mid_run(args, cwd, out, at_least: int = 1) -> int:
    """Starts `certify ARGS --out OUT` from `cwd` and kills it with SIGKILL once `at_least` rows are
    committed (or after 120 s); returns how many rows it had committed."""
    process = subprocess.Popen([sys.executable, "-m", "certify.cli", *map(str, args), "--out", str(out)], cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = cwd / out / "run.sqlite"
    deadline = time.time() + 120
    while time.time() < deadline and stored_rows(store) < at_least and process.poll() is None:
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return stored_rows(store)


def store_rows(store) -> list[dict]:
    """A run store's rows in input order, timing fields dropped (they differ between runs)."""
    with sqlite3.connect(store) as db:
        return without_times([json.loads(r) for (r,) in db.execute("SELECT row FROM results ORDER BY idx")])


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
