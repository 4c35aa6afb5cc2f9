"""A row depends on its input alone: the review found genuine certificates failing --audit because
float32 forward passes (and the engine's GEMMs) round differently in batches of other inputs, and
float64 data moved to float32 silently, so a certificate spoke of a ball the file did not hold."""

import numpy as np
import pytest
import torch
from run_files import make_files
from torch import nn

import certify
from certify.cli import bounds_method, smoothing_method
from certify.formats import DataFileError
from certify.formats.data_files import load_data
from certify.formats.onnx_import import export_onnx
from certify.runs import run
from certify.runs.audit import audit_certificate


def near_tie(features=64):
    """Two logits equal up to a relative 2^-22: float32 sums in another order can swap them."""
    torch.manual_seed(3)
    layer = nn.Linear(features, 2, bias=False)
    with torch.no_grad():
        row = torch.randn(features)
        layer.weight.copy_(torch.stack([row, row * (1 + 2.0**-22)]))
    return nn.Sequential(layer).eval()


def test_smoothing_counts_do_not_depend_on_the_other_inputs():
    g = certify.Smoothed(near_tie(), 2, certify.Gaussian(0.25))
    xs = torch.rand(12, 64)
    together = g.certify_batch(xs, n0=1, n=1001, alpha=0.01, batch_size=1000, seed=2)
    for i in range(len(xs)):
        alone = g.certify(xs[i], n0=1, n=1001, alpha=0.01, batch_size=1000, seed=2, input_index=i)
        assert list(alone.counts) == list(together.counts[i]), i


def test_bounds_rows_do_not_depend_on_the_other_inputs(tmp_path):
    model, data = make_files(tmp_path, count=40, features=20, classes=5)
    inputs = run.prepare(model, data)
    method = bounds_method("crown", "linf", None, 0.5, 1e-9, None, None)
    cert = run.execute(tmp_path / "r", inputs, method, quiet=True)
    job = run.make_job(inputs, method)
    for row in cert["results"]:
        assert job.certify([row["index"]])[0]["radius"] == row["radius"]


def test_a_near_tie_smoothing_certificate_passes_its_audit(tmp_path):
    path = tmp_path / "tie.onnx"
    export_onnx(near_tie(), (64,), path)
    x = np.random.default_rng(0).random((30, 64), dtype=np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.zeros(30, np.int64))
    inputs = run.prepare(path, tmp_path / "d.npz")
    cert = run.execute(tmp_path / "r", inputs, smoothing_method("gaussian", 0.25, 1, 1001, 0.01, 1000, 0, "native"),
                       quiet=True)
    checks = audit_certificate(cert, tmp_path / "r" / "certificate.json", 30)
    assert all(ok for _, ok, _ in checks), checks


def test_inputs_float32_cannot_hold_are_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([[-0.5 + 2.0**-27, 0.0]]), y=np.array([1]))
    with pytest.raises(DataFileError, match="float32 cannot represent exactly.*astype"):
        load_data(tmp_path / "d.npz")
    np.savez(tmp_path / "ok.npz", x=np.array([[-0.5, 0.25]]), y=np.array([1]))  # float64, but exact
    assert load_data(tmp_path / "ok.npz").x.dtype == torch.float32


def test_the_radius_search_ends_for_a_tol_below_float64_spacing():
    net = nn.Sequential(nn.Linear(4, 3)).eval()
    bounded = certify.BoundedModel(net, (4,))
    x = torch.rand(2, 4)
    labels = net(x).argmax(1)
    r = bounded.radius(x, labels, method="ibp", tol=1e-300, max_eps=1.0)
    assert bool((r > 0).all())
    assert bool(bounded.verify(x, labels, r, method="ibp").all())
