"""Sequential CERTIFY: the guarantee of CERTIFY, decided with as few samples as the input needs.

The estimation samples are drawn in looks at a schedule fixed in advance, n_1 < ... < n_K =
max_samples (n_1 = first_look, then x growth). At each look the one-sided Clopper-Pearson bound is
taken at level alpha / K; by the union bound all K bounds hold together with probability >= 1 - alpha,
so stopping at any look, by any rule, keeps the failure probability <= alpha (Horváth et al. 2022,
staged Clopper-Pearson with Bonferroni; the decisions are csrc/stats/sequential.h). The class is
chosen from an independent first draw of n0 samples, as in CERTIFY.

Scheduling: inputs are certified together. Each round draws, for every input still running, the
samples up to its next look, laid end to end in full model batches; an input that stops frees its
share of the next round's batches. Sample s of input i is the same noise however the rounds fall
(Philox stream ESTIMATE), so the result for an input does not depend on which others ran beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from certify._native import core
from certify.noise import Noise
from certify.smoothing.results import ABSTAIN, SmoothingResults
from certify.smoothing.sampling import Progress, Stream, count_classes

__all__ = ["SequentialResult", "SequentialResults", "Schedule", "run_sequential", "look_loop", "CONTINUE",
           "CERTIFIED", "NOT_CERTIFIED"]

CONTINUE, CERTIFIED, NOT_CERTIFIED = 0, 1, 2


@dataclass(frozen=True)
class Schedule:
    """When to look: first_look samples, then x growth (at least one more), ending at max_samples."""

    first_look: int = 100
    growth: float = 2.0

    def looks(self, max_samples: int) -> np.ndarray:
        return core.look_schedule(min(self.first_look, max_samples), self.growth, max_samples)


@dataclass(frozen=True)
class SequentialResult:
    """Sequential CERTIFY at a target radius, for one input.

    certified: with probability >= 1 - alpha over the sampling (whatever the stopping time), the
        smoothed classifier predicts `prediction` on the whole ball of radius target_radius.
    prediction: the selected class when certified, else -1.
    radius: target_radius when certified, else 0.0.
    p_lower: the lower confidence bound (at alpha / number of looks, less the sampler's tail mass)
        on the selected class's probability at the look where sampling stopped.
    num_samples: samples drawn for this input (selection n0 + estimation).
    """

    prediction: int
    certified: bool
    radius: float
    target_radius: float
    norm: str
    p_lower: float
    num_samples: int
    alpha: float


@dataclass(frozen=True)
class SequentialResults:
    prediction: np.ndarray  # (B,) int64
    certified: np.ndarray  # (B,) bool
    radius: np.ndarray  # (B,) float64
    target_radius: float
    norm: str
    p_lower: np.ndarray  # (B,) float64
    num_samples: np.ndarray  # (B,) int64
    alpha: float

    def __len__(self) -> int:
        return len(self.prediction)

    def __getitem__(self, i: int) -> SequentialResult:
        return SequentialResult(int(self.prediction[i]), bool(self.certified[i]), float(self.radius[i]),
                                self.target_radius, self.norm, float(self.p_lower[i]), int(self.num_samples[i]),
                                self.alpha)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def run_sequential(model, xs, indices: np.ndarray, num_classes: int, noise: Noise, n0: int, max_samples: int,
                   alpha: float, batch_size: int, seed: int, schedule: Schedule, tail_mass: float, *,
                   target_radius: float | None = None, tolerance: float = 0.0,
                   progress: Progress | None = None):
    """Both modes on a model: target_radius given -> SequentialResults (certified at the target or
    not); None -> SmoothingResults of the budgeted mode (the radius at the stopping look)."""
    batch = len(xs)
    total = batch * (n0 + max_samples)
    drawn_so_far = [0]

    def tick():
        offset = drawn_so_far[0]
        return None if progress is None else (lambda done, _total: progress(offset + done, total))

    selection = count_classes(model, xs, indices, num_classes, noise, n0, Stream.SELECT, seed, batch_size, tick())
    drawn_so_far[0] = batch * n0
    chosen = selection.argmax(axis=1)

    def draw(active, need, start):
        counts = count_classes(model, xs[active], indices[active], num_classes, noise, need, Stream.ESTIMATE, seed,
                               batch_size, tick(), start=start)
        drawn_so_far[0] += int(need.sum())
        return counts

    looks = schedule.looks(max_samples)
    state = look_loop(draw, chosen, num_classes, looks, alpha / len(looks), noise, tail_mass, target_radius,
                      tolerance)
    num_samples = state.drawn + n0
    if target_radius is None:
        certified = state.p_lower > 0.5
        return SmoothingResults(prediction=np.where(certified, chosen, ABSTAIN).astype(np.int64),
                                radius=np.where(certified, state.radius, 0.0), norm=noise.norm, p_lower=state.p_lower,
                                counts=state.counts, num_samples=num_samples, alpha=alpha)
    certified = state.decision == CERTIFIED
    return SequentialResults(prediction=np.where(certified, chosen, ABSTAIN).astype(np.int64), certified=certified,
                             radius=np.where(certified, float(target_radius), 0.0), target_radius=float(target_radius),
                             norm=noise.norm, p_lower=state.p_lower, num_samples=num_samples, alpha=alpha)


@dataclass
class LoopState:
    counts: np.ndarray  # (B, num_classes) estimation counts
    drawn: np.ndarray  # (B,) estimation samples drawn
    decision: np.ndarray  # (B,) CERTIFIED / NOT_CERTIFIED
    p_lower: np.ndarray  # (B,) at the stopping look
    radius: np.ndarray  # (B,) certified radius at the stopping look


def look_loop(draw, chosen: np.ndarray, num_classes: int, looks: np.ndarray, alpha_look: float, noise: Noise,
              tail_mass: float, target_radius: float | None, tolerance: float) -> LoopState:
    """The rounds of sequential CERTIFY, independent of where samples come from:
    draw(active, need, start) returns the class counts (len(active), num_classes) of samples
    start .. start + need - 1 of each active input. alpha_look: the level of each look (alpha / K;
    the tests pass alpha itself to show that re-checking a fixed-n bound is not valid)."""
    batch = len(chosen)
    counts = np.zeros((batch, num_classes), dtype=np.int64)
    drawn = np.zeros(batch, dtype=np.int64)
    look = np.zeros(batch, dtype=np.int64)
    decision = np.zeros(batch, dtype=np.int32)
    p_lower = np.zeros(batch)
    radius = np.zeros(batch)
    active = np.arange(batch)
    while active.size:
        need = looks[look[active]] - drawn[active]
        counts[active] += draw(active, need, drawn[active].copy())
        drawn[active] += need
        hits = counts[active, chosen[active]]
        d, p, r = core.sequential_looks(
            noise.kind, noise.scale, np.ascontiguousarray(hits), np.ascontiguousarray(drawn[active]),
            np.ascontiguousarray(look[active] == len(looks) - 1), alpha_look, tail_mass,
            -1.0 if target_radius is None else float(target_radius), int(looks[-1]), float(tolerance),
        )
        p_lower[active], radius[active] = p, r
        stopped = d != CONTINUE
        decision[active[stopped]] = d[stopped]
        look[active[~stopped]] += 1
        active = active[~stopped]
    return LoopState(counts, drawn, decision, p_lower, radius)
