"""CUDA benchmarks (needs a GPU; prints why not and exits 0 without one).

1. Noise fill: 4,096 noisy copies of a 3x32x32 input (and 1x224x224x3), the fused Philox kernel
   against `x + sigma * torch.randn` on the same GPU, and its bandwidth as a fraction of the
   device's measured copy bandwidth (a device-to-device clone of a 1 GiB buffer; target >= 70 %).
2. CERTIFY samples per second of a CIFAR-sized ResNet-20 on one input (n = 20,000, batch 1,000),
   native CUDA path against the plain-PyTorch twin on the same GPU (target >= 1.2x).
3. Sound CROWN on the CNN of bench_bounds.py at batch 64 on the GPU (the plain-PyTorch engine with
   GEMM convolutions and TF32 off) against the C++ engine on the CPU.
Run: python benchmarks/bench_cuda.py
"""

from __future__ import annotations

import sys
import time

import torch
from common import table
from torch import nn

import certify
from certify._native import core


def timed(fn, repeats: int = 10) -> float:
    """Median seconds of fn on the GPU (CUDA events, after a warm-up)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return sorted(times)[len(times) // 2]


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))) + self.skip(x))


def resnet20() -> nn.Module:
    layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(3):
            layers.append(Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


def main() -> int:
    if not certify.cuda_available():
        why = "certify was built without CUDA" if not core.built_with_cuda() else "no CUDA device is visible"
        print(f"bench_cuda: skipped ({why}); run it on a machine with an NVIDIA GPU")
        return 0
    torch.backends.cudnn.benchmark = True
    rows = []
    big = torch.empty(1 << 28, device="cuda")  # 1 GiB
    copy_bandwidth = 2 * big.numel() * 4 / timed(lambda: big.clone())  # read + write
    big = None  # free the GiB before the timings below
    for shape in ((3, 32, 32), (3, 224, 224)):
        x = torch.rand(shape, device="cuda")
        copies = 4096 if shape[1] == 32 else 256
        out = torch.empty(copies, x.numel(), device="cuda")
        stream = torch.cuda.current_stream().cuda_stream

        def native():
            core.fill_noisy_cuda(x.data_ptr(), x.numel(), out.data_ptr(), copies, False, 0, 0.25, 0, 0, 1, 0, stream)

        t_native = timed(native)
        t_torch = timed(lambda: x + 0.25 * torch.randn(copies, *shape, device="cuda"))
        bandwidth = copies * x.numel() * 4 / t_native  # bytes written (the input is read from cache)
        rows.append([f"noise fill {shape}", f"{copies * x.numel() / t_native / 1e9:.1f} G/s",
                     f"{copies * x.numel() / t_torch / 1e9:.1f} G/s", f"{t_torch / t_native:.2f}x",
                     f"{bandwidth / copy_bandwidth:.0%} of copy bandwidth"])

    model = resnet20().cuda().eval()
    x = torch.rand(3, 32, 32, device="cuda")
    n = 20_000
    native = certify.Smoothed(model, 10, certify.Gaussian(0.25))
    twin = certify.Smoothed(model, 10, certify.Gaussian(0.25), backend="torch")
    t_native = timed(lambda: native.certify(x, n0=100, n=n, batch_size=1_000), repeats=3)
    t_twin = timed(lambda: twin.certify(x, n0=100, n=n, batch_size=1_000), repeats=3)
    rows.append(["CERTIFY ResNet-20, samples/s", f"{(n + 100) / t_native:,.0f}", f"{(n + 100) / t_twin:,.0f}",
                 f"{t_twin / t_native:.2f}x", ""])
    # CROWN on the CNN of bench_bounds.py at batch 64: the GPU path (the twin on the device with
    # GEMM convolutions, TF32 off) against the C++ engine on the CPU.
    cnn = nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                        nn.Linear(1568, 100), nn.ReLU(), nn.Linear(100, 10)).eval()
    bounded = certify.BoundedModel(cnn, (1, 28, 28))
    xs = torch.rand(64, 1, 28, 28)
    t_gpu = timed(lambda: bounded.bounds(xs.cuda(), 0.01, method="crown"), repeats=3)
    start = time.perf_counter()
    bounded.bounds(xs, 0.01, method="crown")
    t_cpu = time.perf_counter() - start
    rows.append(["CROWN CNN batch 64 (sound), s", f"{t_gpu:.3f} (GPU)", f"{t_cpu:.3f} (C++ on CPU)",
                 f"{t_cpu / t_gpu:.2f}x", "the GPU path is the twin itself"])
    print(f"device: {torch.cuda.get_device_name()}, measured copy bandwidth {copy_bandwidth / 1e9:.0f} GB/s")
    print(table(rows, ["entry", "native", "plain PyTorch", "speed-up", "note"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
