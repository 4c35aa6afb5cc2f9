"""`certify bench`: the standard speed matrix on the user's own hardware.

Each entry times the native core against its plain-PyTorch twin in the same process, in turns
(A B A B ...), and reports medians and their ratio: absolute times drift between runs on a shared
machine, ratios taken this way much less. Entries:
- noise fill: 1,000 noisy copies of one input, native fused fill against `x + sigma * randn`;
- smoothing: CERTIFY samples per second on one input (n0 = 100, n = 10,000), native against twin;
- bounds: IBP, CROWN-IBP and CROWN time per input at batch 1 and 64, native against twin
  (CROWN at batch 64 is timed once: it is the slow entry).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time

import torch
from torch import nn

__all__ = ["interleaved_medians", "table", "run", "measure"]


def interleaved_medians(fns: dict, repeats: int = 7, warmup: int = 1) -> dict:
    """Median seconds of each function, run in turns (A B A B ...): drift in the machine's speed,
    which is large on shared 2-core machines, then hits all of them alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def table(rows: list[list], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def default_models() -> dict:
    """The digits demo CNN (random weights: timing needs no training) and an MLP 784-256-256-10."""
    from certify import models

    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                        nn.Linear(256, 10))
    return {"digits CNN": (models.architecture().eval(), (1, 8, 8)), "MLP 784-256-256-10": (mlp.eval(), (1, 28, 28))}


def measure(name: str, model, input_shape, repeats: int = 5, bounds: bool = True) -> list[dict]:
    """The matrix's entries for one model: [{model, entry, batch, native, twin, unit, speedup}]."""
    import certify
    from certify._native import core

    torch.manual_seed(0)
    x = torch.rand(1, *input_shape)
    with torch.no_grad():
        classes = int(model(x).shape[1])
    entries = []

    def add(entry, batch, native, twin, unit, per_forward=None):
        entries.append({"model": name, "entry": entry, "batch": batch, "native": native, "twin": twin, "unit": unit,
                        "speedup": twin / native if native > 0 else math.inf, "per_forward": per_forward})

    copies, sigma = 1000, 0.25
    buffer = torch.empty(copies, *input_shape)
    flat = x.reshape(1, -1).numpy()
    t = interleaved_medians({
        "native": lambda: core.fill_noisy(flat, buffer.reshape(copies, -1).numpy(), 0, sigma, 0, 0, 0, 0),
        "twin": lambda: x + sigma * torch.randn(copies, *input_shape),
    }, repeats=repeats * 4)
    values = copies * x.numel()
    add("noise fill (values/s)", copies, values / t["native"], values / t["twin"], "values/s")
    entries[-1]["speedup"] = t["twin"] / t["native"]

    n0, n = 100, 10_000
    smoothed = {b: certify.Smoothed(model, classes, certify.Gaussian(sigma), backend=b) for b in ("native", "torch")}
    t = interleaved_medians({b: (lambda s=s: s.certify(x[0], n0=n0, n=n, alpha=0.001, batch_size=1000))
                             for b, s in smoothed.items()}, repeats=max(1, repeats // 2))
    add("smoothing CERTIFY (samples/s)", 1000, (n0 + n) / t["native"], (n0 + n) / t["torch"], "samples/s")
    entries[-1]["speedup"] = t["torch"] / t["native"]

    if bounds:
        engines = {e: certify.BoundedModel(model, input_shape, engine=e) for e in ("native", "torch")}
        for batch in (1, 64):
            xs = torch.rand(batch, *input_shape)
            def forward(xs=xs):
                with torch.inference_mode():
                    for _ in range(10):
                        model(xs)

            for method in ("ibp", "crown-ibp", "crown"):
                slow = method == "crown" and batch == 64
                fns = {e: (lambda b=b: b.bounds(xs, 0.01, method=method)) for e, b in engines.items()}
                fns["forward x10"] = forward  # in turn with the bounds: the same drift hits both
                t = interleaved_medians(fns, repeats=1 if slow else repeats, warmup=0 if slow else 1)
                add(f"{method} (ms/input)", batch, 1e3 * t["native"] / batch, 1e3 * t["torch"] / batch, "ms/input",
                    per_forward=t["native"] / (t["forward x10"] / 10))
    return entries


def run(model_path=None, input_shape=None, device: str = "cpu", json_path=None, repeats: int = 5,
        trust_code: bool = False) -> dict:
    """Prints the matrix as a table; writes it as JSON when json_path is given."""
    import certify

    if device == "cuda":
        raise ValueError("certify was built without CUDA kernels (or no CUDA device is visible): "
                         "certify bench --device cuda needs both" if not certify.cuda_available() else
                         "the CUDA benchmark entries are not part of this version; run with --device cpu")
    if model_path is not None:
        from certify.formats.model_files import load_model

        loaded = load_model(model_path, trust_code=trust_code)
        shape = loaded.input_shape or _shape(input_shape)
        models = {str(model_path): (loaded.module, shape)}
    else:
        models = default_models()
    entries = []
    for name, (model, shape) in models.items():
        print(f"timing {name} ...", flush=True)
        try:
            entries += measure(name, model, shape, repeats)
        except certify.UnsupportedModelError as exc:  # smoothing still timed; bounds need a traceable model
            print(f"  bound propagation skipped: {exc}")
            entries += measure(name, model, shape, repeats, bounds=False)
    rows = [[e["model"], e["entry"], e["batch"], _fmt(e["native"]), _fmt(e["twin"]), f"{e['speedup']:.2f}x",
             "" if e["per_forward"] is None else f"{e['per_forward']:.1f}"] for e in entries]
    print(table(rows, ["model", "entry", "batch", "native", "plain PyTorch", "speed-up", "native / forward pass"]))
    result = {"machine": {"platform": platform.platform(), "cpu": platform.processor() or platform.machine(),
                          "torch": torch.__version__, "threads": torch.get_num_threads(),
                          "certify": certify.__version__},
              "entries": entries}
    if json_path is not None:
        from certify._files import write_text_atomic

        write_text_atomic(json_path, json.dumps(result, indent=1) + "\n")
        print(f"written to {json_path}")
    return result


def _shape(text):
    if text is None:
        raise ValueError("--input-shape is needed for a model that is not ONNX (e.g. --input-shape 1,28,28)")
    try:
        shape = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        raise ValueError(f"--input-shape must be comma-separated integers, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"--input-shape must be positive integers, got {text!r}")
    return shape


def _fmt(value: float) -> str:
    if value >= 1e5:
        return f"{value:,.0f}"
    return f"{value:.3g}"
