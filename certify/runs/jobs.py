"""What one certification run computes per input: the rows of its run store and certificate.

A job turns a list of input indices into finished rows and depends on nothing else (not on which
inputs ran before, nor on how they are grouped), so a run that resumes, or that a scale-out
backend spreads over workers, produces the rows an uninterrupted single-process run would:
smoothing noise for input i is Philox stream i of the run's seed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

import certify
from certify.attack import pgd
from certify.formats.data_files import Dataset

__all__ = ["SmoothingJob", "BoundsJob", "NOISES", "contiguous_runs", "num_classes_of"]

NOISES = {"gaussian": certify.Gaussian, "laplace": certify.Laplace, "uniform": certify.Uniform}


def contiguous_runs(indices: list[int]) -> list[list[int]]:
    """[3, 4, 5, 9, 10] -> [[3, 4, 5], [9, 10]]: the pieces certify_batch(start_index=) can take."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and runs[-1][-1] + 1 == i:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


class SmoothingJob:
    """CERTIFY (Cohen et al. 2019) for each input, with the run's method parameters."""

    def __init__(self, module, num_classes: int, data: Dataset, method: dict):
        noise = NOISES[method["noise"]](method["scale"])
        self.smoothed = certify.Smoothed(module, num_classes, noise, input_shape=data.input_shape,
                                         backend=method["backend"])
        self.data = data
        self.method = method
        self.samples_per_input = method["n0"] + method["n"]
        # Enough inputs per call to fill a few model batches (small n), at least one.
        self.chunk = max(1, min(64, 4 * method["batch_size"] // self.samples_per_input))

    def certify(self, indices: list[int], progress: Callable[[int], None] | None = None) -> list[dict]:
        """Rows for `indices`; progress(samples) is told of samples as they are drawn."""
        m = self.method
        rows = []
        for run in contiguous_runs(indices):
            start = time.perf_counter()
            seen = [0]

            def tick(done, _total):
                if progress is not None:
                    progress(done - seen[0])
                seen[0] = done

            results = self.smoothed.certify_batch(
                self.data.x[run[0]:run[-1] + 1], n0=m["n0"], n=m["n"], alpha=m["alpha"],
                batch_size=m["batch_size"], seed=m["seed"], start_index=run[0], progress=tick,
            )
            seconds = (time.perf_counter() - start) / len(run)
            for i, result in zip(run, results):
                label = int(self.data.y[i])
                rows.append({
                    "index": i, "label": label, "prediction": result.prediction,
                    "correct": result.prediction == label, "radius": result.radius, "p_lower": result.p_lower,
                    "counts": [int(c) for c in result.counts], "num_samples": result.num_samples,
                    "seconds": seconds,
                })
        return rows


class BoundsJob:
    """Bound propagation for each input: verified at eps (procedure 'verify', with a PGD attack at
    the same eps beside it) or the largest certified eps (procedure 'radius')."""

    samples_per_input = 0

    def __init__(self, module, data: Dataset, method: dict):
        if method["domain"] is not None:  # checked here, before a run folder exists
            lo, hi = method["domain"]
            if not lo <= hi:
                raise ValueError(f"the domain must be LO HI with LO <= HI, got {lo} {hi}")
            outside = ((data.x < lo) | (data.x > hi)).flatten(1).any(dim=1).nonzero().flatten()
            if len(outside):
                raise ValueError(f"input {int(outside[0])} (and {len(outside) - 1} more) lies outside the domain "
                                 f"[{lo}, {hi}]")
        self.module = module
        self.bounded = certify.BoundedModel(module, data.input_shape)
        self.data = data
        self.method = method
        self.chunk = 32 if method["method"] == "crown" else 128

    def certify(self, indices: list[int], progress=None) -> list[dict]:
        m = self.method
        domain = tuple(m["domain"]) if m["domain"] is not None else None
        x, labels = self.data.x[indices], self.data.y[indices]
        start = time.perf_counter()
        with torch.no_grad():
            prediction = self.module(x).argmax(dim=1)
        if m["procedure"] == "verify":
            margins = self.bounded.margins(x, labels, m["eps"], m["norm"], m["method"], domain=domain)
            verified = (margins > 0).all(dim=1)
            radius = [m["eps"] if v else 0.0 for v in verified.tolist()]  # eps as asked, not rounded to float32
            margin = margins.amin(dim=1)
        else:
            radius = self.bounded.radius(x, labels, m["norm"], m["method"], tol=m["tol"], max_eps=m["max_eps"],
                                         domain=domain)
            verified = radius > 0
            margin = None
        seconds = (time.perf_counter() - start) / len(indices)
        attacked = None
        if m["attack"] is not None:
            a = m["attack"]
            attacked = pgd(self.module, x, labels, a["eps"], m["norm"], domain=domain, steps=a["steps"],
                           restarts=a["restarts"], seed=a["seed"], indices=indices)
            if m["procedure"] == "verify" and bool((attacked & verified).any()):
                bad = [indices[i] for i in (attacked & verified).nonzero().flatten().tolist()]
                raise RuntimeError(f"inputs {bad} were verified and also attacked successfully: a bound is wrong. "
                                   "Please report this as a bug in certify; no certificate is issued.")
        rows = []
        for j, i in enumerate(indices):
            label = int(labels[j])
            row = {
                "index": i, "label": label, "prediction": int(prediction[j]), "correct": int(prediction[j]) == label,
                "verified": bool(verified[j]), "radius": float(radius[j]),  # radius mode: the float32 eps verify() certified
                "attacked": None if attacked is None else bool(attacked[j]), "seconds": seconds,
            }
            if margin is not None and math.isfinite(float(margin[j])):  # JSON has no infinities
                row["margin"] = float(margin[j])
            rows.append(row)
        return rows


def num_classes_of(module, data: Dataset) -> int:
    """The model's output width on the data's first input; a clear error for a mismatched shape."""
    probe = data.x[:2]
    with torch.no_grad():
        try:
            out = module(probe)
        except Exception as exc:  # noqa: BLE001 - whatever the model raises for the wrong shape
            raise ValueError(f"the model does not run on the data's inputs of shape {data.input_shape}: "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != len(probe):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model must return logits of shape (batch, classes); it returned {shape}")
    if int(data.y.max()) >= out.shape[1]:
        raise ValueError(f"the data has label {int(data.y.max())} but the model has {out.shape[1]} outputs")
    return int(out.shape[1])

