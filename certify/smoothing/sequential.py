"""Sequential CERTIFY: the guarantee of CERTIFY, decided with as few samples as the input needs.

The estimation samples are drawn in looks at a schedule fixed in advance, n_1 < ... < n_K =
max_samples (n_1 = first_look, then x growth); the class is chosen from an independent first draw
of n0 samples, as in CERTIFY. Two boundaries decide a target radius (csrc/stats/sequential.h has
the arguments; both are a table of critical hit counts per look, `TargetTest.critical`):

- "exact" (the default): a group-sequential test of "P(hit) <= p0", p0 the probability at which
  the radius reaches the target, with error spending alpha ln(1 + (e - 1) n_j / n_K) (Pocock type,
  Lan & DeMets 1983) and its level computed exactly by recursion over the hit count's
  distribution. Default looks: 100, then x1.1.
- "bonferroni": the one-sided Clopper-Pearson bound at alpha / K at each look (Horváth et al. 2022);
  a confidence sequence, which the budgeted mode (no target) uses. Default looks: 100, then x2.

Either way a false certificate has probability <= alpha whatever the stopping time on the schedule.

Scheduling: inputs are certified together. Each round draws, for every input still running, the
samples up to its next look, laid end to end in full model batches; an input that stops frees its
share of the next round's batches. Sample s of input i is the same noise however the rounds fall
(Philox stream ESTIMATE), so the result for an input does not depend on which others ran beside it.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np

from certify import _checks
from certify._native import core
from certify.noise import Noise
from certify.smoothing.results import ABSTAIN, SmoothingResults
from certify.smoothing.sampling import Progress, Stream, count_classes

__all__ = ["SequentialResult", "SequentialResults", "Schedule", "BOUNDARIES", "target_test", "run_sequential",
           "look_loop", "target_decider", "budget_decider", "CONTINUE", "CERTIFIED", "NOT_CERTIFIED"]

CONTINUE, CERTIFIED, NOT_CERTIFIED = 0, 1, 2
BOUNDARIES = ("exact", "bonferroni")
BOUNDARY_CODES = {"bonferroni": 0, "exact": 1}
# Looks every x1.1 cost the exact boundary nothing (its level is computed for the schedule as it
# is) and catch the crossing sooner; Bonferroni pays log K for K looks, so it looks every x2.
DEFAULT_GROWTH = {"exact": 1.1, "bonferroni": 2.0}


@dataclass(frozen=True)
class Schedule:
    """When to look: first_look samples, then x growth (at least one more), ending at max_samples.
    growth None: the boundary's default (x1.1 for "exact", x2 for "bonferroni")."""

    first_look: int = 100
    growth: float | None = None

    def __post_init__(self):
        _checks.positive_int("first_look", self.first_look)
        if self.growth is not None:
            if isinstance(self.growth, bool) or not isinstance(self.growth, numbers.Real):
                raise TypeError(f"growth must be a number > 1, got {type(self.growth).__name__}")
            if not (math.isfinite(self.growth) and self.growth > 1):
                raise ValueError(f"growth must be finite and > 1, got {self.growth}")

    def growth_for(self, boundary: str) -> float:
        return DEFAULT_GROWTH[boundary] if self.growth is None else float(self.growth)

    def looks(self, max_samples: int, boundary: str = "bonferroni") -> np.ndarray:
        return core.look_schedule(min(self.first_look, max_samples), self.growth_for(boundary), max_samples)


def target_test(noise: Noise, target_radius: float, tail_mass: float, looks, alpha: float, boundary: str):
    """The test at a target radius (core.TargetTest: .critical, .looks, .decide(k, j)); cached, since
    the exact boundary's design is a recursion over the schedule (milliseconds at 10^5 samples)."""
    if boundary not in BOUNDARY_CODES:
        raise ValueError(f"boundary must be one of {BOUNDARIES}, got {boundary!r}")
    return _target_test(BOUNDARY_CODES[boundary], noise.kind, float(noise.scale), float(target_radius),
                        float(tail_mass), tuple(int(n) for n in looks), float(alpha))


@functools.lru_cache(maxsize=32)
def _target_test(boundary, kind, scale, target, tail_mass, looks, alpha):
    return core.target_test(boundary, kind, scale, target, tail_mass, np.array(looks, dtype=np.int64), alpha)


@dataclass(frozen=True)
class SequentialResult:
    """Sequential CERTIFY at a target radius, for one input.

    certified: with probability >= 1 - alpha over the sampling (whatever the stopping time), the
        smoothed classifier predicts `prediction` on the whole ball of radius target_radius.
    prediction: the selected class when certified, else -1.
    radius: target_radius when certified, else 0.0.
    p_lower: a lower bound on the selected class's probability at the stopping look, valid with the
        same alpha: Bonferroni, the Clopper-Pearson bound at alpha / K (less the sampler's tail
        mass); exact, the probability p0 at which the radius reaches the target when certified
        (the test showed P > p0), else 0.
    num_samples: samples drawn for this input (selection n0 + estimation).
    selected: the class the n0 draw chose; counts: class counts of the estimation samples;
    look_hits: hits of `selected` at each look made (the last is where it stopped).
    """

    prediction: int
    certified: bool
    radius: float
    target_radius: float
    norm: str
    p_lower: float
    num_samples: int
    alpha: float
    selected: int = -1
    counts: np.ndarray | None = None
    look_hits: tuple = ()
    boundary: str = "exact"


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
    selected: np.ndarray  # (B,) int64
    counts: np.ndarray  # (B, num_classes) int64
    look_hits: np.ndarray  # (B, K) int64, -1 after the look an input stopped at
    looks: np.ndarray  # (K,) the schedule
    boundary: str

    def __len__(self) -> int:
        return len(self.prediction)

    def __getitem__(self, i: int) -> SequentialResult:
        return SequentialResult(int(self.prediction[i]), bool(self.certified[i]), float(self.radius[i]),
                                self.target_radius, self.norm, float(self.p_lower[i]), int(self.num_samples[i]),
                                self.alpha, int(self.selected[i]), self.counts[i].copy(),
                                made_looks(self.look_hits[i]), self.boundary)

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def made_looks(hits_row: np.ndarray) -> tuple:
    """The hits at the looks an input made (the row of LoopState.look_hits up to its first -1)."""
    return tuple(int(h) for h in hits_row if h >= 0)


def target_decider(test):
    """decide(hits, drawn, look, last) for look_loop from a core.TargetTest."""
    return lambda hits, drawn, look, last: test.decide(hits, look)


def budget_decider(noise: Noise, alpha_look: float, tail_mass: float, n_max: int, tolerance: float):
    """decide(hits, drawn, look, last) of the budgeted mode (Bonferroni's bound at alpha_look)."""
    return lambda hits, drawn, look, last: core.budget_looks(noise.kind, noise.scale, hits, drawn, last, alpha_look,
                                                             tail_mass, int(n_max), float(tolerance))


def run_sequential(model, xs, indices: np.ndarray, num_classes: int, noise: Noise, n0: int, max_samples: int,
                   alpha: float, batch_size: int, seed: int, schedule: Schedule, tail_mass: float, *,
                   target_radius: float | None = None, tolerance: float = 0.0, boundary: str = "exact",
                   progress: Progress | None = None):
    """Both modes on a model: target_radius given -> SequentialResults (certified at the target or
    not); None -> SmoothingResults of the budgeted mode (the radius at the stopping look;
    Bonferroni's confidence sequence)."""
    batch = len(xs)
    total = batch * (n0 + max_samples)
    drawn_so_far = [0]

    def tick():
        offset = drawn_so_far[0]
        return None if progress is None else (lambda done, _total: progress(offset + done, total))

    if target_radius is None:
        boundary = "bonferroni"
    looks = schedule.looks(max_samples, boundary)
    if target_radius is not None:
        decide = target_decider(target_test(noise, target_radius, tail_mass, looks, alpha, boundary))
    else:
        decide = budget_decider(noise, alpha / len(looks), tail_mass, max_samples, tolerance)

    selection = count_classes(model, xs, indices, num_classes, noise, n0, Stream.SELECT, seed, batch_size, tick())
    drawn_so_far[0] = batch * n0
    chosen = selection.argmax(axis=1)

    def draw(active, need, start):
        counts = count_classes(model, xs[active], indices[active], num_classes, noise, need, Stream.ESTIMATE, seed,
                               batch_size, tick(), start=start)
        drawn_so_far[0] += int(need.sum())
        return counts

    state = look_loop(draw, chosen, num_classes, looks, decide)
    num_samples = state.drawn + n0
    if target_radius is None:
        certified = state.p_lower > 0.5
        return SmoothingResults(prediction=np.where(certified, chosen, ABSTAIN).astype(np.int64),
                                radius=np.where(certified, state.radius, 0.0), norm=noise.norm, p_lower=state.p_lower,
                                counts=state.counts, num_samples=num_samples, alpha=alpha, selected=chosen,
                                look_hits=state.look_hits, looks=looks)
    certified = state.decision == CERTIFIED
    return SequentialResults(prediction=np.where(certified, chosen, ABSTAIN).astype(np.int64), certified=certified,
                             radius=np.where(certified, float(target_radius), 0.0), target_radius=float(target_radius),
                             norm=noise.norm, p_lower=state.p_lower, num_samples=num_samples, alpha=alpha,
                             selected=chosen.astype(np.int64), counts=state.counts, look_hits=state.look_hits,
                             looks=looks, boundary=boundary)


@dataclass
class LoopState:
    counts: np.ndarray  # (B, num_classes) estimation counts
    drawn: np.ndarray  # (B,) estimation samples drawn
    decision: np.ndarray  # (B,) CERTIFIED / NOT_CERTIFIED
    p_lower: np.ndarray  # (B,) at the stopping look
    radius: np.ndarray  # (B,) certified radius at the stopping look
    look_hits: np.ndarray  # (B, K) hits of the chosen class at each look made, -1 after the stop


def look_loop(draw, chosen: np.ndarray, num_classes: int, looks: np.ndarray, decide) -> LoopState:
    """The rounds of sequential CERTIFY, independent of where samples come from:
    draw(active, need, start) returns the class counts (len(active), num_classes) of samples
    start .. start + need - 1 of each active input; decide(hits, drawn, look, last) returns
    (decision, p_lower, radius) per active input (target_decider, budget_decider; the tests also
    pass deliberately wrong boundaries)."""
    batch = len(chosen)
    counts = np.zeros((batch, num_classes), dtype=np.int64)
    drawn = np.zeros(batch, dtype=np.int64)
    look = np.zeros(batch, dtype=np.int64)
    decision = np.zeros(batch, dtype=np.int32)
    p_lower = np.zeros(batch)
    radius = np.zeros(batch)
    look_hits = np.full((batch, len(looks)), -1, dtype=np.int64)
    active = np.arange(batch)
    while active.size:
        need = looks[look[active]] - drawn[active]
        counts[active] += draw(active, need, drawn[active].copy())
        drawn[active] += need
        hits = np.ascontiguousarray(counts[active, chosen[active]])
        look_hits[active, look[active]] = hits
        d, p, r = decide(hits, np.ascontiguousarray(drawn[active]), np.ascontiguousarray(look[active]),
                         np.ascontiguousarray(look[active] == len(looks) - 1))
        p_lower[active], radius[active] = p, r
        stopped = d != CONTINUE
        decision[active[stopped]] = d[stopped]
        look[active[~stopped]] += 1
        active = active[~stopped]
    return LoopState(counts, drawn, decision, p_lower, radius, look_hits)
