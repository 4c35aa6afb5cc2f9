"""Sequential CERTIFY against fixed-n CERTIFY: samples used and wall time, same guarantee.

1. Simulated base classifiers with known p_A (sigma = 0.5, target radius r = 0.5, alpha = 0.001,
   so the threshold is Phi(1) = 0.841): mean and median samples per input (n0 = 100 included)
   of the sequential test, against n0 + n = 100,100 for fixed n, and how often each certifies.
2. The digits demo model 'noise-0.25' on its 297 test digits at sigma = 0.25, r = 0.25: samples,
   the certified sets (fixed n certifies at r when its radius >= r), and whole-dataset wall time.
Run: python benchmarks/bench_sequential.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from common import table
from scipy import stats as sps

import certify
from certify import models
from certify._native import core
from certify.smoothing.sequential import CERTIFIED, Schedule, look_loop

N0, N, ALPHA = 100, 100_000, 0.001


def simulated(p: float, trials: int, sigma: float, target: float, schedule: Schedule, seed: int = 0):
    rng = np.random.default_rng(seed)

    def draw(active, need, start):
        hits = rng.binomial(need, p)
        return np.stack([hits, need - hits], axis=1)

    looks = schedule.looks(N)
    state = look_loop(draw, np.zeros(trials, dtype=np.int64), 2, looks, ALPHA / len(looks), certify.Gaussian(sigma),
                      0.0, target, 0.0)
    samples = state.drawn + N0
    # Fixed n: certified at r when the Clopper-Pearson radius from Binomial(N, p) hits reaches r.
    hits = rng.binomial(N, p, size=trials)
    _, radius = core.smoothing_bounds(0, sigma, hits, N, ALPHA, 0.0)
    return samples, float((state.decision == CERTIFIED).mean()), float((radius >= target).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer simulated trials and 60 digits")
    args = parser.parse_args()
    trials = 500 if args.quick else 2_000
    schedule = Schedule()
    rows = []
    for p in (0.6, 0.85, 0.9, 0.99, 0.999):
        samples, seq_rate, fixed_rate = simulated(p, trials, 0.5, 0.5, schedule)
        rows.append([p, f"{samples.mean():,.0f}", f"{np.median(samples):,.0f}", f"{(N0 + N) / samples.mean():.0f}x",
                     f"{seq_rate:.3f}", f"{fixed_rate:.3f}"])
    print(f"simulated, sigma = 0.5, r = 0.5 (threshold p = {sps.norm.cdf(1.0):.3f}), alpha = {ALPHA}, "
          f"looks {list(schedule.looks(N))}, {trials} trials each")
    print(table(rows, ["p_A", "mean samples", "median samples", "fewer than 100,100", "certified (seq)",
                       "certified (fixed n)"]))

    model = models.load("noise-0.25")
    _, _, test_x, _ = models.digits()
    if args.quick:
        test_x = test_x[:60]
    smoothed = certify.Smoothed(model, 10, certify.Gaussian(0.25), input_shape=(1, 8, 8))
    start = time.perf_counter()
    seq = smoothed.certify_batch(test_x, n0=N0, alpha=ALPHA, batch_size=10_000, seed=0, target_radius=0.25,
                                 max_samples=N)
    seq_time = time.perf_counter() - start
    start = time.perf_counter()
    fixed = smoothed.certify_batch(test_x, n0=N0, n=N, alpha=ALPHA, batch_size=10_000, seed=0)
    fixed_time = time.perf_counter() - start
    fixed_certified = (fixed.prediction >= 0) & (fixed.radius >= 0.25)
    differ = np.flatnonzero(seq.certified != fixed_certified)
    print(f"\ndigits demo model noise-0.25, {len(test_x)} test digits, sigma = 0.25, r = 0.25, alpha = {ALPHA}")
    print(table([
        ["sequential", f"{seq.num_samples.mean():,.0f}", f"{np.median(seq.num_samples):,.0f}",
         int(seq.certified.sum()), f"{seq_time:.1f}"],
        ["fixed n = 100,000", f"{fixed.num_samples.mean():,.0f}", f"{np.median(fixed.num_samples):,.0f}",
         int(fixed_certified.sum()), f"{fixed_time:.1f}"],
    ], ["procedure", "mean samples", "median samples", "certified at r", "wall s"]))
    print(f"samples: {fixed.num_samples.mean() / seq.num_samples.mean():.1f}x fewer; wall time "
          f"{fixed_time / seq_time:.1f}x shorter; certified sets differ on {len(differ)} inputs"
          + (f" (fixed-n radii there: {np.round(fixed.radius[differ], 3).tolist()})" if len(differ) else ""))


if __name__ == "__main__":
    main()
