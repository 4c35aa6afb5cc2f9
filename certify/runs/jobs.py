"""What one certification run computes per input: the rows of its run store and certificate.

A job turns a list of input indices into finished rows and depends on nothing else (not on which
inputs ran before, nor on how they are grouped), so a run that resumes, or that a scale-out
backend spreads over workers, produces the rows an uninterrupted single-process run would:
smoothing noise for input i is Philox stream i of the run's seed.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch

import certify
from certify.attack import pgd
from certify.formats.data_files import Dataset

__all__ = ["SmoothingJob", "BoundsJob", "NOISES", "SEQUENTIAL", "contiguous_runs", "num_classes_of", "sequential_method",
           "sequential_plan"]

NOISES = {"gaussian": certify.Gaussian, "laplace": certify.Laplace, "uniform": certify.Uniform}
# An audit's replay of a complete-mode row runs on the row's domain budget, with this many times
# the run's time per input as a backstop (an auditor's machine may be much slower).
REPLAY_SECONDS_FACTOR = 20


SEQUENTIAL = ("sequential-target", "sequential-budget")


def sequential_method(method: dict, input_shape, *, target_radius: float | None = None, max_samples: int | None = None,
                      boundary: str = "bonferroni", tolerance: float | None = None, first_look: int = 100,
                      growth: float | None = None) -> dict:
    """A fixed-n smoothing method (the CLI's) turned sequential: at a target radius (budget
    max_samples, default n) or budgeted (budget n, tolerance), with its look schedule and, at a
    target, the boundary's critical counts written out (sequential_plan) so the certificate states
    every number its decisions were taken on."""
    from certify.smoothing.sequential import Schedule

    common = {k: method[k] for k in ("family", "noise", "scale", "norm", "n0", "alpha", "batch_size", "seed", "backend")}
    if target_radius is not None:
        boundary = boundary or "exact"
        budget = max_samples or method["n"]
        settings = {**common, "procedure": "sequential-target", "max_samples": budget,
                    "target_radius": float(target_radius) + 0.0, "boundary": boundary}  # -0.0 -> 0.0
    else:
        boundary = "bonferroni"
        budget = method["n"]
        settings = {**common, "procedure": "sequential-budget", "n": budget, "tolerance": float(tolerance),
                    "boundary": boundary}
    settings["first_look"] = min(int(first_look), budget)  # the schedule starts at the budget when it is smaller
    settings["growth"] = Schedule(growth=growth).growth_for(boundary)
    settings.update(sequential_plan(settings, input_shape))
    return settings


def sequential_plan(method: dict, input_shape) -> dict:
    """{"looks": [...]} of a sequential method, and at a target radius {"critical": [...]}: what its
    parameters and the input size (the sampler's tail mass) give. The run records them; the
    certificate check recomputes them (ValueError for parameters the boundary cannot design for)."""
    from certify._native import core
    from certify.smoothing.sequential import Schedule, target_test

    noise = NOISES[method["noise"]](method["scale"])
    schedule = Schedule(method["first_look"], method["growth"])
    if method["procedure"] == "sequential-budget":
        return {"looks": schedule.looks(method["n"], "bonferroni").tolist()}
    looks = schedule.looks(method["max_samples"], method["boundary"])
    tail = noise.tail_mass(math.prod(input_shape), "native")
    if method["boundary"] == "exact" and method["max_samples"] > core.EXACT_MAX_SAMPLES:
        raise ValueError(f"the exact boundary designs for max_samples up to {core.EXACT_MAX_SAMPLES:,}; "
                         f"got {method['max_samples']:,}: use --boundary bonferroni")
    test = target_test(noise, method["target_radius"], tail, looks, method["alpha"], method["boundary"])
    return {"looks": looks.tolist(), "critical": test.critical.tolist()}


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
    """CERTIFY (Cohen et al. 2019) for each input, with the run's method parameters; or sequential
    CERTIFY (procedures in SEQUENTIAL), whose rows add the selected class and the hits at each look."""

    def __init__(self, module, num_classes: int, data: Dataset, method: dict):
        noise = NOISES[method["noise"]](method["scale"])
        self.smoothed = certify.Smoothed(module, num_classes, noise, input_shape=data.input_shape,
                                         backend=method["backend"])
        self.data = data
        self.method = method
        self.sequential = method["procedure"] in SEQUENTIAL
        if self.sequential:
            plan = sequential_plan(method, data.input_shape)
            if any(method.get(key) != value for key, value in plan.items()):
                raise ValueError("the method's looks or critical counts are not the ones its parameters give")
            from certify.smoothing.sequential import Schedule

            self.schedule = Schedule(method["first_look"], method["growth"])
            budget = method.get("max_samples", method.get("n"))
            # The most an input may draw (the progress line's ETA counts inputs instead: most stop early).
            self.samples_per_input = 0
            # Inputs stop at different looks; a chunk fills model batches across them until the last
            # one stops, and commits then.
            self.chunk = max(1, min(32, 64 * method["batch_size"] // (method["n0"] + min(budget, 10_000))))
        else:
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
                self.data.x[run[0]:run[-1] + 1], n0=m["n0"], n=m.get("n", m.get("max_samples")), alpha=m["alpha"],
                batch_size=m["batch_size"], seed=m["seed"], start_index=run[0], progress=tick, **self._sequential())
            seconds = (time.perf_counter() - start) / len(run)
            for j, (i, result) in enumerate(zip(run, results)):
                label = int(self.data.y[i])
                row = {
                    "index": i, "label": label, "prediction": result.prediction,
                    "correct": result.prediction == label, "radius": result.radius, "p_lower": result.p_lower,
                    "counts": [int(c) for c in result.counts], "num_samples": result.num_samples,
                    "seconds": seconds,
                }
                if self.sequential:
                    row["selected"] = int(results.selected[j])
                    row["look_hits"] = list(result.look_hits)
                    if m["procedure"] == "sequential-target":
                        row["certified"] = result.certified
                rows.append(row)
        return rows

    def _sequential(self) -> dict:
        """certify_batch's arguments for the sequential procedures."""
        m = self.method
        if m["procedure"] == "sequential-target":
            return {"target_radius": m["target_radius"], "max_samples": m["max_samples"], "boundary": m["boundary"],
                    "schedule": self.schedule}
        if m["procedure"] == "sequential-budget":
            return {"sequential": True, "tolerance": m["tolerance"], "schedule": self.schedule}
        return {}


class BoundsJob:
    """Bound propagation for each input: verified at eps (procedure 'verify', with a PGD attack at
    the same eps beside it) or the largest certified eps (procedure 'radius').

    method["inference"] (absent in older certificates: "exact"): "exact" verifies the exact network
    (real arithmetic on the float32 weights); "float32" the model's float32 forward pass, in any
    summation order (certify.bounds.float32). Under exact inference the float32 run can disagree
    with a verified input's label where logits tie to within float32 rounding, at the input itself
    or at a point the attack finds: each such point is re-run in float64 and, when the float64
    network classifies it as the label, recorded in the row's `float32_disagrees` ("input",
    "attack"; such an attack point does not count as `attacked`). A point misclassified in float64
    too, or under float32 inference any misclassified point in a verified ball, contradicts a bound:
    the job stops and issues no certificate."""

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
        self.inference = method.get("inference", "exact")
        if self.inference not in ("exact", "float32"):
            raise ValueError(f"inference must be 'exact' or 'float32', got {self.inference!r}")
        # Inputs per committed chunk: complete mode spends up to timeout_per_input on each.
        self.chunk = {"crown": 32, "alpha-crown": 16, "bab": 1}.get(method["method"], 128)
        self._module64 = None

    def certify(self, indices: list[int], progress=None, domain_budget: int | None = None) -> list[dict]:
        """Rows for `indices`, each input bounded, attacked and run through the model alone: a
        float32 forward pass or a GEMM in the engine can round differently for a batch of another
        size or composition, and a row must not depend on its neighbours (an audit re-certifies one
        input and must get the run's row).

        domain_budget (complete mode, audits): replay the search with this many domains as its
        budget instead of the clock (REPLAY_SECONDS_FACTOR x timeout_per_input at most): the search
        is deterministic given its budget, so a row decided within its `domains` is decided again
        on a faster or slower machine."""
        return [row for i in indices for row in self._certify_alone(i, domain_budget)]

    def _certify_alone(self, index: int, domain_budget: int | None = None) -> list[dict]:
        indices = [index]
        m = self.method
        domain = tuple(m["domain"]) if m["domain"] is not None else None
        x, labels = self.data.x[indices], self.data.y[indices]
        start = time.perf_counter()
        with torch.no_grad():
            prediction = self.module(x).argmax(dim=1)
        decision = None
        if m["method"] == "bab":  # complete mode: three-valued, the decision is not one margin bound
            if domain_budget is None:
                decision = self.bounded.decide(x, labels, m["eps"], m["norm"], domain=domain,
                                               timeout=m["timeout_per_input"])[0]
            else:
                from certify.verify import SearchSettings

                decision = self.bounded.decide(x, labels, m["eps"], m["norm"], domain=domain,
                                               timeout=REPLAY_SECONDS_FACTOR * m["timeout_per_input"],
                                               settings=SearchSettings(max_domains=domain_budget))[0]
            verified = torch.tensor([decision.status == "verified"])
            radius = [m["eps"] if decision.status == "verified" else 0.0]
            margin = None
        elif m["procedure"] == "verify":
            margins = self.bounded.margins(x, labels, m["eps"], m["norm"], m["method"], domain=domain,
                                           inference=self.inference)
            verified = (margins > 0).all(dim=1)
            radius = [m["eps"] if v else 0.0 for v in verified.tolist()]  # eps as asked, not rounded to float32
            margin = margins.amin(dim=1)
        else:
            # float64 bisection: each radius is exactly an eps that verify() certified, <= max_eps
            radius = self.bounded.radius(x, labels, m["norm"], m["method"], tol=m["tol"], max_eps=m["max_eps"],
                                         domain=domain, inference=self.inference).tolist()
            verified = torch.tensor([r > 0 for r in radius], dtype=torch.bool)
            margin = None
        seconds = (time.perf_counter() - start) / len(indices)
        attacked = where = None
        if m["attack"] is not None:
            a = m["attack"]
            attacked, where = pgd(self.module, x, labels, a["eps"], m["norm"], domain=domain, steps=a["steps"],
                                  restarts=a["restarts"], seed=a["seed"], indices=indices, points=True)
        disagrees = self._float32_only(indices, x, labels, prediction, verified, radius, attacked, where)
        rows = []
        for j, i in enumerate(indices):
            label = int(labels[j])
            row = {
                "index": i, "label": label, "prediction": int(prediction[j]), "correct": int(prediction[j]) == label,
                "verified": bool(verified[j]), "radius": float(radius[j]),
                "attacked": None if attacked is None else bool(attacked[j]), "seconds": seconds,
            }
            if margin is not None and math.isfinite(float(margin[j])):  # JSON has no infinities
                row["margin"] = float(margin[j])
            if disagrees[j]:
                row["float32_disagrees"] = disagrees[j]
            if decision is not None:
                row["status"], row["domains"] = decision.status, decision.domains
                if decision.counterexample is not None:  # float32 values, exact in JSON's float64
                    row["counterexample"] = decision.counterexample.flatten().double().tolist()
            rows.append(row)
        return rows

    def _float32_only(self, indices, x, labels, prediction, verified, radius, attacked, where) -> list[list[str]]:
        """Per input, where the float32 run misclassifies a point of a verified ball ("input", "attack")
        while the float64 network does not; clears `attacked` for such attack points. Raises on a point
        that contradicts a bound."""
        disagrees: list[list[str]] = [[] for _ in indices]
        attack_eps = self.method["attack"]["eps"] if attacked is not None else None
        suspects = []  # (j, what, point)
        for j in range(len(indices)):
            if not bool(verified[j]):
                continue
            if int(prediction[j]) != int(labels[j]):
                suspects.append((j, "input", x[j]))
            if attacked is not None and bool(attacked[j]) and attack_eps <= radius[j]:
                suspects.append((j, "attack", where[j]))
        if not suspects:
            return disagrees
        what = "the float32 forward pass" if self.inference == "float32" else "the float64 network"
        if self.inference == "exact":
            float64 = self._float64_predictions(torch.stack([p for _, _, p in suspects]))
            wrong = [(j, kind) for (j, kind, _), p64 in zip(suspects, float64.tolist()) if p64 != int(labels[j])]
        else:
            wrong = [(j, kind) for j, kind, _ in suspects]
        if wrong:
            bad = sorted({indices[j] for j, _ in wrong})
            raise RuntimeError(f"inputs {bad} were verified, yet {what} misclassifies a point of their ball "
                               f"({', '.join(sorted({kind for _, kind in wrong}))}): a bound is wrong. "
                               "Please report this as a bug in certify; no certificate is issued.")
        for j, kind, _ in suspects:  # exact inference: each a float32 rounding effect the float64 run resolves
            disagrees[j].append(kind)
            if kind == "attack":
                attacked[j] = False
        return disagrees

    def _float64_predictions(self, points: torch.Tensor) -> torch.Tensor:
        """argmax of a float64 copy of the model (float32 weights are exact in float64)."""
        if self._module64 is None:
            self._module64 = copy.deepcopy(self.module).double().eval()
        try:
            with torch.no_grad():
                return self._module64(points.double()).argmax(dim=1)
        except Exception as exc:  # noqa: BLE001 - whatever the model raises in float64
            raise RuntimeError("the float32 run misclassifies a point in a verified ball; telling a float32 rounding "
                               f"effect from a wrong bound needs the model in float64, which failed: {exc}") from exc


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

