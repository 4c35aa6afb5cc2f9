"""The CUDA kernels against the CPU kernels and the plain-PyTorch twins.

Without a GPU (CI, this project's machine) the device tests skip with the reason; what runs
everywhere is the dispatch: a launch without a device, or in a build without CUDA, is a clear
Python exception, never a crash or a silent CPU fallback.
"""

import numpy as np
import pytest
import torch
from conftest import threshold_model

import certify
from certify._native import core, require_native_device

needs_gpu = pytest.mark.skipif(not certify.cuda_available(),
                               reason="no CUDA device visible (CI and the development machine have none)")


def test_launch_without_a_device_is_a_clear_error():
    with pytest.raises(RuntimeError, match="certify CUDA|built without CUDA") as info:
        core.fill_noisy_cuda(1, 4, 2, 1, False, 0, 1.0, 0, 0, 0, 0, 0)
    assert "Traceback" not in str(info.value)
    with pytest.raises(ValueError, match="null device pointer"):
        core.fill_noisy_cuda(0, 4, 0, 1, False, 0, 1.0, 0, 0, 0, 0, 0)


def test_other_devices_are_refused_by_the_dispatch():
    with pytest.raises(ValueError, match="CPU and CUDA devices"):
        require_native_device(torch.empty(2, device="meta"), "x")
    require_native_device(torch.empty(2), "x")  # the CPU passes


# ---------------------------------------------------------------------------- on a GPU
def cuda_fill(x: torch.Tensor, rows: int, kind: int, scale: float, seed: int, index: int, stream: int, start: int):
    x = x.reshape(-1).contiguous().cuda()
    out = torch.empty(rows, x.numel(), dtype=x.dtype, device="cuda")
    core.fill_noisy_cuda(x.data_ptr(), x.numel(), out.data_ptr(), rows, x.dtype == torch.float64, kind, scale, seed,
                         index, stream, start, torch.cuda.current_stream().cuda_stream)
    return out.cpu()


@needs_gpu
@pytest.mark.parametrize("dim", [1, 3, 4, 5, 64, 257, 3072])
@pytest.mark.parametrize("kind", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_noise_matches_cpu_noise(dim, kind, dtype):
    x = torch.rand(dim, dtype=dtype)
    rows, seed, index, stream, start = 33, 2**40 + 7, 5, 1, 2**33 - 3  # sample indices across 2^32
    cpu = torch.empty(rows, dim, dtype=dtype)
    core.fill_noisy(x.numpy(), cpu.numpy(), kind, 0.5, seed, index, stream, start)
    gpu = cuda_fill(x, rows, kind, 0.5, seed, index, stream, start)
    tol = 1e-5 if dtype == torch.float32 else 1e-12  # the transforms round differently, nothing more
    torch.testing.assert_close(gpu, cpu, rtol=tol, atol=tol)


@needs_gpu
def test_smoothing_on_cuda_matches_cpu_on_separated_inputs():
    """Threshold model, inputs far from the boundary or on it: identical decisions and, where the
    counts agree (they do unless a noisy copy lands within float rounding of the boundary),
    identical certificates."""
    xs = torch.tensor([[2.0, 0.0], [-1.5, 0.3], [0.8, -0.2]])
    model = threshold_model()
    cpu = certify.Smoothed(model, 2, certify.Gaussian(0.5)).certify_batch(xs, n0=100, n=5_000, alpha=0.001, seed=3)
    gpu = certify.Smoothed(model, 2, certify.Gaussian(0.5)).certify_batch(xs.cuda(), n0=100, n=5_000, alpha=0.001,
                                                                          seed=3)
    assert gpu.prediction.tolist() == cpu.prediction.tolist()
    assert np.abs(gpu.counts - cpu.counts).max() <= 2
    seq = certify.Smoothed(model, 2, certify.Gaussian(0.5)).certify_batch(xs.cuda(), target_radius=0.5,
                                                                          max_samples=20_000, seed=3)
    assert seq.certified.tolist() == [True, True, True]
