"""Sequential CERTIFY against fixed-n CERTIFY: samples used and wall time, same guarantee.

1. Simulated base classifiers with known p_A (sigma = 0.5, target radius r = 0.5, alpha = 0.001,
   so the threshold is Phi(1) = 0.841): mean and median samples per input (n0 = 100 included)
   for each boundary (exact: error spending, looks x1.1; bonferroni: Clopper-Pearson at alpha / K,
   looks x2), against n0 + n = 100,100 for fixed n, and how often each certifies. "floor": Wald's
   lower bound on the mean samples of any level-alpha test that certifies as often (Wald 1945:
   E[N] >= ((1 - b) log((1 - b) / alpha) + b log(b / (1 - alpha))) / KL(p_A || p0), b = the rate of
   not certifying), plus n0.
2. The digits demo model 'noise-0.25' on its 297 test digits at sigma = 0.25, r = 0.25: samples,
   the certified sets (fixed n certifies at r when its radius >= r), and whole-dataset wall time.
Run: python benchmarks/bench_sequential.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
from common import table
from scipy import stats as sps

import certify
from certify import models
from certify._native import core
from certify.smoothing.sequential import CERTIFIED, Schedule, look_loop, target_decider, target_test

N0, N, ALPHA = 100, 100_000, 0.001
BOUNDARIES = ("exact", "bonferroni")


def simulated(p: float, trials: int, sigma: float, target: float, boundary: str, seed: int = 0):
    rng = np.random.default_rng(seed)

    def draw(active, need, start):
        hits = rng.binomial(need, p)
        return np.stack([hits, need - hits], axis=1)

    noise = certify.Gaussian(sigma)
    looks = Schedule().looks(N, boundary)
    test = target_test(noise, target, 0.0, looks, ALPHA, boundary)
    state = look_loop(draw, np.zeros(trials, dtype=np.int64), 2, looks, target_decider(test))
    samples = state.drawn + N0
    # Fixed n: certified at r when the Clopper-Pearson radius from Binomial(N, p) hits reaches r.
    hits = rng.binomial(N, p, size=trials)
    _, radius = core.smoothing_bounds(0, sigma, hits, N, ALPHA, 0.0)
    return samples, float((state.decision == CERTIFIED).mean()), float((radius >= target).mean())


def wald_floor(p: float, p0: float, certify_rate: float) -> float:
    """Wald's lower bound on E[N] at p for a level-ALPHA test of P <= p0 that certifies with this rate."""
    if p <= p0:
        return float("nan")
    kl = p * math.log(p / p0) + (1 - p) * math.log((1 - p) / (1 - p0))
    b = min(max(1.0 - certify_rate, 1e-12), 1 - 1e-12)
    return ((1 - b) * math.log((1 - b) / ALPHA) + b * math.log(b / (1 - ALPHA))) / kl + N0


def fixed_n_half(p: float, p0: float) -> int:
    """The fixed n at which a one-shot Clopper-Pearson test at ALPHA certifies p half the time."""
    lo, hi = 1, 10**7
    while lo < hi:
        n = (lo + hi) // 2
        k = int(sps.binom.median(n, p))
        if core.clopper_pearson_lower(k, n, ALPHA) > p0:
            hi = n
        else:
            lo = n + 1
    return lo


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer simulated trials and 60 digits")
    args = parser.parse_args()
    trials = 500 if args.quick else 2_000
    p0 = float(sps.norm.cdf(1.0))
    rows = []
    for p in (0.6, 0.85, 0.9, 0.99, 0.999):
        for boundary in BOUNDARIES:
            samples, seq_rate, fixed_rate = simulated(p, trials, 0.5, 0.5, boundary)
            floor = wald_floor(p, p0, seq_rate)
            rows.append([p, boundary, f"{samples.mean():,.0f}", f"{np.median(samples):,.0f}",
                         f"{(N0 + N) / samples.mean():.1f}x", f"{seq_rate:.3f}", f"{fixed_rate:.3f}",
                         "-" if math.isnan(floor) else f"{floor:,.0f}"])
    print(f"simulated, sigma = 0.5, r = 0.5 (threshold p0 = {p0:.4f}), alpha = {ALPHA}, {trials} trials each; "
          f"looks: exact {len(Schedule().looks(N, 'exact'))} (x1.1), bonferroni "
          f"{len(Schedule().looks(N, 'bonferroni'))} (x2)")
    print(table(rows, ["p_A", "boundary", "mean samples", "median", "fewer than 100,100", "certified (seq)",
                       "certified (fixed n)", "floor (Wald)"]))
    print(f"fixed n at which a one-shot test at alpha certifies p_A = 0.85 half the time: {fixed_n_half(0.85, p0):,}")

    model = models.load("noise-0.25")
    _, _, test_x, _ = models.digits()
    if args.quick:
        test_x = test_x[:60]
    smoothed = certify.Smoothed(model, 10, certify.Gaussian(0.25), input_shape=(1, 8, 8))
    sequential = {}
    for boundary in BOUNDARIES:
        start = time.perf_counter()
        result = smoothed.certify_batch(test_x, n0=N0, alpha=ALPHA, batch_size=10_000, seed=0, target_radius=0.25,
                                        max_samples=N, boundary=boundary)
        sequential[boundary] = result, time.perf_counter() - start
    start = time.perf_counter()
    fixed = smoothed.certify_batch(test_x, n0=N0, n=N, alpha=ALPHA, batch_size=10_000, seed=0)
    fixed_time = time.perf_counter() - start
    fixed_certified = (fixed.prediction >= 0) & (fixed.radius >= 0.25)
    print(f"\ndigits demo model noise-0.25, {len(test_x)} test digits, sigma = 0.25, r = 0.25, alpha = {ALPHA}")
    lines = [[f"sequential, {b}", f"{seq.num_samples.mean():,.0f}", f"{np.median(seq.num_samples):,.0f}",
              int(seq.certified.sum()), f"{seconds:.1f}", f"{fixed.num_samples.mean() / seq.num_samples.mean():.1f}x"]
             for b, (seq, seconds) in sequential.items()]
    lines.append(["fixed n = 100,000", f"{fixed.num_samples.mean():,.0f}", f"{np.median(fixed.num_samples):,.0f}",
                  int(fixed_certified.sum()), f"{fixed_time:.1f}", "1x"])
    print(table(lines, ["procedure", "mean samples", "median samples", "certified at r", "wall s", "fewer"]))
    for b, (seq, seconds) in sequential.items():
        differ = np.flatnonzero(seq.certified != fixed_certified)
        print(f"{b}: wall time {fixed_time / seconds:.1f}x shorter than fixed n; certified sets differ on "
              f"{len(differ)} inputs" + (f" (fixed-n radii there: {np.round(fixed.radius[differ], 3).tolist()})"
                                         if len(differ) else ""))


if __name__ == "__main__":
    main()
