"""End-to-end CERTIFY throughput: the native path (C++ noise fused into a reused batch buffer)
against the plain-PyTorch twin (certify.smoothing.reference), same model, same n, same process.

Also the native path's overhead outside the model's forward pass, as a share of its time.
Models on 3x32x32 inputs: a small MLP (3072-256-256-10) and a small CNN.
Run: python benchmarks/bench_certify.py [--n 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import interleaved_medians, table

import certify


class TimedModel(torch.nn.Module):
    """Accumulates the time spent in the wrapped model's forward pass."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.seconds = 0.0

    def forward(self, x):
        start = time.perf_counter()
        y = self.model(x)
        self.seconds += time.perf_counter() - start
        return y


def mlp():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 256), torch.nn.ReLU(),
                               torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))


def wide_mlp():
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 1024), torch.nn.ReLU(),
                               torch.nn.Linear(1024, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 10))


def cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(32 * 8 * 8, 100), torch.nn.ReLU(), torch.nn.Linear(100, 10),
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    x = torch.rand(3, 32, 32)
    rows = []
    models = (("MLP 3072-256-256-10", mlp), ("MLP 3072-1024-1024-10", wide_mlp), ("CNN 2xconv+2xfc", cnn))
    for name, build in models:
        model = TimedModel(build()).eval()
        native = certify.Smoothed(model, 10, certify.Gaussian(0.25), backend="native")
        twin = certify.Smoothed(model, 10, certify.Gaussian(0.25), backend="torch")
        forward = {"native": [], "twin": []}

        def run(g, key):
            model.seconds = 0.0
            g.certify(x, n0=100, n=args.n, batch_size=args.batch, seed=0)
            forward[key].append(model.seconds)

        seconds = interleaved_medians({"native": lambda: run(native, "native"), "twin": lambda: run(twin, "twin")},
                                      repeats=args.repeats)
        overhead = 1 - statistics.median(forward["native"]) / seconds["native"]
        samples = args.n + 100
        rows.append([name, f"{samples / seconds['native']:,.0f}", f"{samples / seconds['twin']:,.0f}",
                     f"{seconds['twin'] / seconds['native']:.2f}x", f"{100 * overhead:.1f} %"])
    print(f"CERTIFY one 3x32x32 input, n0=100, n={args.n:,}, batch {args.batch}, float32, "
          f"{torch.get_num_threads()} torch threads, {certify.get_num_threads()} native threads")
    print(table(rows, ["model", "native samples/s", "twin samples/s", "native / twin", "native overhead outside forward"]))


if __name__ == "__main__":
    main()
