"""Noise-fill throughput: the fused C++ kernel (x + noise written straight into the batch buffer)
against the plain-PyTorch path (noise from torch's generator, scaled, added to the expanded input).

CIFAR-shaped inputs (3x32x32), batch 1,000, float32, this machine's threads.
Run: python benchmarks/bench_noise.py
"""

from __future__ import annotations

import numpy as np
import torch
from common import interleaved_medians, table

import certify
from certify import _core

BATCH, SHAPE = 1000, (3, 32, 32)


def main() -> None:
    torch.manual_seed(0)
    x = torch.rand(SHAPE)
    dim = x.numel()
    out = torch.empty((BATCH, dim))
    out_np, x_np = out.numpy(), x.reshape(-1).numpy()
    generator = torch.Generator().manual_seed(0)
    batch = x.unsqueeze(0).expand(BATCH, *SHAPE)
    noises = [certify.Gaussian(0.25), certify.Laplace(0.25), certify.Uniform(0.25)]
    rows = []
    for noise in noises:
        times = interleaved_medians({
            "native": lambda: _core.fill_noisy(x_np, out_np, noise.kind, noise.scale, 0, 0, 1, 0),
            "twin": lambda: batch + noise.sample_torch(batch.shape, generator, torch.float32),
        }, repeats=15, warmup=2)
        native, twin = times["native"], times["twin"]
        rows.append([
            type(noise).__name__, f"{BATCH * dim / native / 1e6:,.0f}", f"{BATCH * dim / twin / 1e6:,.0f}",
            f"{twin / native:.1f}x",
        ])
    print(f"noise fill, batch {BATCH} x {SHAPE}, float32, {certify.get_num_threads()} native threads, "
          f"{torch.get_num_threads()} torch threads")
    print(table(rows, ["noise", "native M/s", "torch M/s", "native / torch"]))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
