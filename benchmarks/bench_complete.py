"""Complete verification: how much of a test set CROWN, alpha-CROWN and branch and bound decide.

Two parts (python benchmarks/bench_complete.py [--milp N] [--scale] [--timeout S] [--inputs K]):

--milp N   ground truth: N small instances (ReLU MLPs of 2-3 layers, input- and ReLU-splitting
           sizes, natural and IBP-trained, eps from easy to hard as multiples of each input's CROWN
           radius), each decided by branch and bound and solved exactly by the MILP of
           tests/milp_oracle.py (scipy's HiGHS). Prints wrong answers (must be 0), instances within
           the MILP's tolerance of 0 (reported apart), and the decided fraction.
--scale    naturally trained MLPs with 2, 4 and 6 hidden layers of 256 units and a small CNN on
           scikit-learn's digits (8x8), at an eps where one CROWN pass verifies 20-40 % of the test
           inputs: the verified fraction of CROWN and alpha-CROWN (and their seconds per input),
           branch and bound's decided fraction and median time per input at --timeout seconds per
           input, and the price of soundness: CROWN's margins with the rounding terms over the
           same margins in plain float32, timed in the same process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import certify

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def mlp(sizes, seed):
    torch.manual_seed(seed)
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(nn.Flatten(), *layers[:-1])


def train(model, x, y, epochs=30, eps=0.0, seed=0):
    """Natural training, or IBP training at l_inf eps (certifiably trained networks)."""
    from certify import train as training

    training.fit(model, x, y, method="ibp" if eps > 0 else "natural", eps=eps or 0.1, epochs=epochs, lr=1e-2,
                 batch_size=64, seed=seed)
    return model.eval()


def teacher_data(dim, classes, count, seed):
    torch.manual_seed(seed)
    teacher = mlp([dim, 24, classes], seed + 1000)
    x = torch.rand(count, dim) * 2 - 1
    with torch.no_grad():
        y = teacher(x).argmax(1)
    return x, y


def milp_part(count: int, timeout: float) -> None:
    from milp_oracle import robust

    configs = [([8, 16, 16, 4], 0.0), ([8, 16, 16, 4], 0.1), ([24, 20, 20, 3], 0.0), ([16, 12, 12, 12, 3], 0.0)]
    factors = (1.0, 1.2, 1.6, 2.5)
    rows, times = [], []
    index = 0
    while len(rows) < count:
        sizes, ibp_eps = configs[index % len(configs)]
        x, y = teacher_data(sizes[0], sizes[-1], 512, seed=index)
        model = train(mlp(sizes, index), x, y, epochs=15, eps=ibp_eps, seed=index)
        bounded = certify.BoundedModel(model, (sizes[0],))
        xs = torch.rand(4, sizes[0]) * 2 - 1
        with torch.no_grad():
            labels = model(xs).argmax(1)
        radius = bounded.radius(xs, labels, method="crown", tol=1e-4).clamp(min=1e-3)
        factor = factors[(index // len(configs)) % len(factors)]
        eps = radius * factor
        for i, d in enumerate(bounded.decide(xs, labels, eps, timeout=timeout)):
            truth = robust(model, xs[i], int(labels[i]), float(eps[i]), time_limit=120)
            rows.append((d.status, truth))
            times.append(d.seconds)
            if d.status == "unknown":
                print(f"  unknown: network {sizes} (IBP-trained at {ibp_eps}), eps {factor} x CROWN radius, "
                      f"MILP says {truth}; {d.reason}", flush=True)
        index += 1
    rows = rows[:count]
    wrong = sum((s == "verified" and t == "not robust") or (s == "falsified" and t == "robust") for s, t in rows)
    near = sum(t == "within tol" for _, t in rows)
    decided = sum(s != "unknown" for s, _ in rows)
    print(f"MILP ground truth on {count} instances: wrong {wrong}, within the MILP's tolerance of 0 {near}, "
          f"decided {decided}/{count} = {decided / count:.1%} "
          f"(verified {sum(s == 'verified' for s, _ in rows)}, falsified {sum(s == 'falsified' for s, _ in rows)}), "
          f"median {statistics.median(times):.2f} s, max {max(times):.1f} s per instance at a {timeout:g} s budget")


def digits():
    from certify.models import digits as load

    train_x, train_y, test_x, test_y = load()
    return train_x, train_y, test_x, test_y


def scale_part(timeout: float, inputs: int) -> None:
    train_x, train_y, test_x, test_y = digits()
    models = {
        "MLP 2x256": mlp([64, 256, 256, 10], 0),
        "MLP 4x256": mlp([64] + [256] * 4 + [10], 1),
        "MLP 6x256": mlp([64] + [256] * 6 + [10], 2),
        "CNN": nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                             nn.ReLU(), nn.Flatten(), nn.Linear(128, 32), nn.ReLU(), nn.Linear(32, 10)),
    }
    x, y = test_x[:inputs], test_y[:inputs]
    print("| model | eps | CROWN verified (s/input) | alpha-CROWN verified (s/input) | BaB verified | BaB falsified | "
          "BaB unknown | BaB median s | sound / plain CROWN |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, model in models.items():
        model = train(model, train_x, train_y, epochs=20)
        bounded = certify.BoundedModel(model, (1, 8, 8))
        with torch.no_grad():
            keep = model(x).argmax(1) == y
        xs, ys = x[keep], y[keep]
        eps = _eps_for(bounded, xs, ys)
        count = len(xs)
        started = time.perf_counter()
        crown = float(bounded.verify(xs, ys, eps, method="crown", domain=(0, 1)).float().mean())
        crown_s = (time.perf_counter() - started) / count
        started = time.perf_counter()
        alpha = float(bounded.verify(xs, ys, eps, method="alpha-crown", domain=(0, 1)).float().mean())
        alpha_s = (time.perf_counter() - started) / count
        # the price of soundness: the same CROWN margins with the rounding terms and without
        timing = {}
        for sound in (True, False):
            started = time.perf_counter()
            bounded.margins(xs, ys, eps, method="crown", domain=(0, 1), sound=sound)
            timing[sound] = time.perf_counter() - started
        decisions = bounded.decide(xs, ys, eps, domain=(0, 1), timeout=timeout)
        share = {s: sum(d.status == s for d in decisions) / count for s in ("verified", "falsified", "unknown")}
        median = statistics.median(d.seconds for d in decisions)
        print(f"| {name} | {eps:.4f} | {crown:.2f} ({crown_s:.3f}) | {alpha:.2f} ({alpha_s:.2f}) | "
              f"{share['verified']:.2f} | {share['falsified']:.2f} | {share['unknown']:.2f} | {median:.2f} | "
              f"{timing[True] / timing[False]:.2f}x |", flush=True)


def _eps_for(bounded, xs, ys) -> float:
    """An eps at which CROWN verifies about 30 % of the inputs (the median of the 30th-percentile)."""
    radius = bounded.radius(xs, ys, method="crown", tol=1e-4, max_eps=0.5, domain=(0, 1))
    return float(torch.quantile(radius.double(), 0.7))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--milp", type=int, default=0, help="ground-truth instances (0: skip)")
    parser.add_argument("--scale", action="store_true", help="the MLP / CNN table on digits")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per input")
    parser.add_argument("--inputs", type=int, default=50, help="digits test inputs per model (--scale)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.milp:
        milp_part(args.milp, args.timeout)
    if args.scale:
        scale_part(args.timeout, args.inputs)
    if not args.milp and not args.scale:
        parser.print_help()


if __name__ == "__main__":
    main()
