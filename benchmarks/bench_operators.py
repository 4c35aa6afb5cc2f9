"""How tight the bounds are, per supported operator: the README's operator table.

For each row of certify.bounds.graph.OPERATORS, a small probe network (a random layer, the operator,
a random linear head) is bounded at l_inf eps = 0.1 around 8 random inputs by each method; the
mean width of the bounds is divided by the mean width of the outputs found in the ball (4,000
uniform points and box vertices per input, and a signed-gradient attack up and down on every output:
an inner estimate of the true range, so the ratio is an upper estimate of the looseness; 1.00 is
exact). Prints the README table (graph.operator_table
with these ratios in the method columns).

    python benchmarks/bench_operators.py
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

import certify
from certify.bounds.graph import OPERATORS, operator_table

EPS, INPUTS, SAMPLES = 0.1, 8, 4000
METHODS = {"IBP": "ibp", "CROWN": "crown", "CROWN-IBP": "crown-ibp", "alpha-CROWN": "alpha-crown"}


class Probe(nn.Module):
    """stem -> op -> head, the stem a Linear (flat probes) or a Conv2d (map probes)."""

    def __init__(self, op, conv: bool, width: int):
        super().__init__()
        self.conv = conv
        self.stem = nn.Conv2d(2, 4, 3, padding=1) if conv else nn.Linear(8, 16)
        self.op = op
        self.head = nn.LazyLinear(4)
        self.width = width

    def forward(self, x):
        h = self.op(self.stem(x))
        return self.head(h.flatten(1))


class Fn(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def probes():
    flat = lambda op: (op, False)  # noqa: E731
    conv = lambda op: (op, True)  # noqa: E731
    bn = nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    return {
        "Linear": flat(nn.Linear(16, 16)),
        "Conv2d": conv(nn.Conv2d(4, 4, 3, padding=1)),
        "ReLU": flat(nn.ReLU()),
        "BatchNorm (eval)": conv(bn),
        "AvgPool2d": conv(nn.AvgPool2d(2)),
        "AdaptiveAvgPool2d / global mean": conv(nn.AdaptiveAvgPool2d((4, 4))),
        "MaxPool2d": conv(nn.MaxPool2d(2)),
        "max / min of two values": flat(Fn(lambda h: torch.cat([torch.maximum(h[:, :8], h[:, 8:]),
                                                                  torch.minimum(h[:, :8], h[:, 8:])], 1))),
        "LeakyReLU": flat(nn.LeakyReLU(0.1)),
        "HardTanh / ReLU6 / clamp": flat(nn.Hardtanh(-0.5, 0.5)),
        "Hardsigmoid": flat(nn.Hardsigmoid()),
        "Sigmoid": flat(nn.Sigmoid()),
        "Tanh": flat(nn.Tanh()),
        "Softplus": flat(nn.Softplus()),
        "ELU": flat(nn.ELU()),
        "SiLU": flat(nn.SiLU()),
        "GELU": flat(nn.GELU()),
        "ConvTranspose2d": conv(nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)),
        "Pad": conv(Fn(lambda h: F.pad(h, (1, 0, 0, 1), value=0.5))),
        "Slice / Split / Concat / permute": conv(Fn(lambda h: torch.cat([h[:, 2:], h[:, :2].flip(-1)], 1)[:, :, 1:5])),
        "Flatten / reshape": conv(nn.Flatten()),
        "Add / Sub of two values": flat(Fn(lambda h: h[:, :8] - h[:, 8:] + h[:, :8].flip(-1))),
        "Arithmetic with constants": flat(Fn(lambda h: (h * 2.0 + 1.0) / 3.0 - 0.5)),
        "Identity / Dropout (eval)": flat(nn.Dropout(0.5)),
    }


def sampled_width(model, x) -> float:
    """Mean over inputs and outputs of (max - min) of the outputs found in the ball: uniform points,
    box vertices, and for each output a signed-gradient ascent and descent (20 steps from 16 random
    starts): an inner estimate of the true range."""
    widths = []
    for i in range(len(x)):
        u = torch.rand(SAMPLES, *x.shape[1:]) * 2 - 1
        u[: SAMPLES // 4] = u[: SAMPLES // 4].sign()  # box vertices
        points = [x[i] + EPS * u]
        for k in range(4):
            for sign in (1.0, -1.0):
                p = (x[i] + EPS * (torch.rand(16, *x.shape[1:]) * 2 - 1)).requires_grad_(True)
                for _ in range(20):
                    (grad,) = torch.autograd.grad((sign * model(p)[:, k]).sum(), p)
                    p = torch.minimum(torch.maximum(p + EPS / 4 * grad.sign(), x[i] - EPS), x[i] + EPS)
                    p = p.detach().requires_grad_(True)
                points.append(p.detach())
        with torch.no_grad():
            out = model(torch.cat(points))
        widths.append(out.amax(0) - out.amin(0))
    return float(torch.stack(widths).mean())


def main() -> None:
    torch.manual_seed(0)
    ratios = {}
    for name, (op, conv) in probes().items():
        model = Probe(op, conv, 0)
        shape = (2, 6, 6) if conv else (8,)
        x = torch.rand(INPUTS, *shape)
        with torch.no_grad():
            model(x)  # materialises the lazy head
        model.eval()
        bounded = certify.BoundedModel(model, shape)
        reference = sampled_width(model, x)
        ratios[name] = {column: float(bounded.bounds(x, EPS, method=method).width.mean()) / reference
                        for column, method in METHODS.items()}
        print(f"# {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios[name].items()), flush=True)
    assert set(ratios) == {row[0] for row in OPERATORS}
    print()
    print(operator_table(ratios))


if __name__ == "__main__":
    main()
