"""Bound propagation speed and tightness: the C++ engine against the plain-PyTorch twin.

Models of the anchor table in REFERENCES.md (auto_LiRPA 0.7.1 on this machine): an MLP
784-256-256-10 and a CNN (Conv 1->16 k4 s2 p1, Conv 16->32 k4 s2 p1, Linear 1568->100,
Linear 100->10), l_inf eps = 0.01, float32, batch 1 and 64. Each method's time is also printed as
a multiple of the model's own forward pass at the same batch, measured in turn with it (a figure
that survives this noisy machine better than milliseconds), against the twin, against plain
(unsound) bounds and, on the CNN, against the engine with its CROWN rows kept dense (no windows).
Also the mean margin lower bound per method, sound and not.
Run: python benchmarks/bench_bounds.py [--quick]
"""

from __future__ import annotations

import argparse
import os

import torch
from common import interleaved_medians, table
from torch import nn

import certify


def mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def cnn():
    return nn.Sequential(nn.Conv2d(1, 16, 4, 2, 1), nn.ReLU(), nn.Conv2d(16, 32, 4, 2, 1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(1568, 100), nn.ReLU(), nn.Linear(100, 10))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5
    torch.manual_seed(0)
    speed_rows, tight_rows = [], []
    for name, build in (("MLP 784-256-256-10", mlp), ("CNN 2 conv + 2 fc", cnn)):
        model = build().eval()
        native = certify.BoundedModel(model, (1, 28, 28), engine="native")
        dense = certify.BoundedModel(model, (1, 28, 28), engine="native")
        dense._engine.rows_form = "dense"  # CROWN rows never in window form (the engine before windows)
        twin = certify.BoundedModel(model, (1, 28, 28), engine="torch")
        convolutional = any(isinstance(m, nn.Conv2d) for m in model.modules())
        for batch in (1, 64):
            x = torch.rand(batch, 1, 28, 28)
            for method in ("ibp", "crown-ibp", "crown"):
                slow = method == "crown" and batch == 64

                def forward():
                    with torch.inference_mode():
                        model(x)

                fns = {
                    # the forward pass, in turn with the bounds so that drift hits both alike
                    "forward": lambda: [forward() for _ in range(10)],
                    "native": lambda: native.bounds(x, 0.01, method=method),
                    "twin": lambda: twin.bounds(x, 0.01, method=method),
                    "plain": lambda: native.bounds(x, 0.01, method=method, sound=False),
                }
                if convolutional and method != "ibp":
                    fns["dense"] = lambda: dense.bounds(x, 0.01, method=method)
                t = interleaved_medians(fns, repeats=1 if slow else repeats, warmup=0 if slow else 1)
                forward_s = t["forward"] / 10
                speed_rows.append([
                    name, batch, method, f"{1e3 * t['native']:.2f}", f"{t['native'] / forward_s:.1f}",
                    f"{t['twin'] / t['native']:.1f}x", f"{t['native'] / t['plain']:.2f}x",
                    f"{t['dense'] / t['native']:.1f}x" if "dense" in t else "",
                ])
        x = torch.rand(64, 1, 28, 28)
        with torch.no_grad():
            labels = model(x).argmax(1)
        row = [name]
        for method in ("ibp", "crown-ibp", "crown"):
            for sound in (True, False):
                row.append(f"{native.margins(x, labels, 0.01, method=method, sound=sound).mean().item():.4f}")
        tight_rows.append(row)
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    print(f"time per call, l_inf eps 0.01, sound unless noted; {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY {policy}")
    print(table(speed_rows, ["model", "batch", "method", "native ms", "native / forward pass", "twin / native",
                             "sound / plain", "dense rows / auto rows"]))
    print("\nmean margin lower bound (64 random inputs, predicted labels): higher is tighter")
    print(table(tight_rows, ["model", "IBP sound", "IBP plain", "CROWN-IBP sound", "CROWN-IBP plain",
                             "CROWN sound", "CROWN plain"]))


if __name__ == "__main__":
    main()
