"""Bound propagation on CUDA devices: the plain-PyTorch engine on a copy of the graph, with every
convolution an explicit GEMM (cuDNN's FFT / Winograd algorithms round outside the gamma_n terms)
and TF32 off. The GEMM convolutions are checked here on the CPU (forced), the device path on a GPU."""

import pytest
import torch
from bound_models import MODELS, build

import certify
from certify.bounds import reference


@pytest.fixture
def gemm_convolutions():
    reference.GEMM_CONVOLUTIONS[0] = True
    yield
    reference.GEMM_CONVOLUTIONS[0] = False


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", ["ibp", "crown"])
def test_gemm_convolutions_match_cudnn_style_ones(name, method, gemm_convolutions):
    model, shape = build(name)
    x = torch.rand(3, *shape)
    bounded = certify.BoundedModel(model, shape, engine="torch")
    reference.GEMM_CONVOLUTIONS[0] = False
    expected = bounded.bounds(x, 0.02, method=method)
    reference.GEMM_CONVOLUTIONS[0] = True
    got = bounded.bounds(x, 0.02, method=method)
    torch.testing.assert_close(got.lower, expected.lower, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.upper, expected.upper, rtol=1e-5, atol=1e-5)
    # and the GEMM path's bounds hold on sampled points
    with torch.no_grad():
        points = (x.unsqueeze(1) + 0.02 * (2 * torch.rand(3, 200, *shape) - 1)).reshape(-1, *shape)
        out = model(points.double() if next(model.parameters()).dtype == torch.float64 else points)
    out = out.reshape(3, 200, -1)
    assert bool((out >= got.lower.unsqueeze(1) - 1e-6).all()) and bool((out <= got.upper.unsqueeze(1) + 1e-6).all())


def test_graph_copies_to_a_device_exactly():
    model, shape = build(sorted(MODELS)[0])
    bounded = certify.BoundedModel(model, shape, engine="torch")
    copy = bounded.graph.to("cpu")
    assert copy is not bounded.graph and len(copy.nodes) == len(bounded.graph.nodes)
    x = torch.rand(2, *shape)
    torch.testing.assert_close(reference.TorchEngine(copy).ibp_output_box(reference.InputSet.make(
        x, torch.full((2,), 0.01, dtype=torch.float64), "linf"))[0],
        bounded._engine.ibp_output_box(reference.InputSet.make(x, torch.full((2,), 0.01, dtype=torch.float64),
                                                                "linf"))[0], rtol=0, atol=0)


def test_other_devices_are_refused():
    model, shape = build(sorted(MODELS)[0])
    with pytest.raises(ValueError, match="CPU and on CUDA devices"):
        certify.BoundedModel(model, shape).bounds(torch.zeros(1, *shape, device="meta"), 0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible (CI and the development "
                                                          "machine have none)")
@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("method", ["ibp", "crown", "crown-ibp"])
def test_cuda_bounds_match_cpu_and_hold(name, method):
    model, shape = build(name)
    x = torch.rand(4, *shape)
    labels = model(x).argmax(1)
    bounded = certify.BoundedModel(model, shape)
    cpu = bounded.bounds(x, 0.02, method=method)
    gpu = bounded.bounds(x.cuda(), 0.02, method=method)
    torch.testing.assert_close(gpu.lower.cpu(), cpu.lower, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu.upper.cpu(), cpu.upper, rtol=1e-4, atol=1e-4)
    assert bounded.verify(x.cuda(), labels.cuda(), 0.0, method=method).all()
