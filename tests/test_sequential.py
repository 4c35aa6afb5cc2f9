"""Sequential CERTIFY: the failure probability stays <= alpha whatever the stopping time.

The validity tests simulate the look loop itself (certify.smoothing.sequential.look_loop, the code
the model path runs) with a binomial sampler of known p_A, including p_A exactly at the threshold
of the target radius, where a false certificate is most likely, for both boundaries. The same
test, given a wrong boundary (a fixed-n Clopper-Pearson bound at alpha re-checked at every look;
an exact design at 3 alpha), must fail. The exact boundary's level is also computed independently
(an FFT recursion in numpy/scipy) and by brute force on small schedules.
"""

import itertools
import time

import numpy as np
import pytest
import torch
from conftest import threshold_model
from scipy import stats as sps

import certify
from certify._native import core
from certify.smoothing.sequential import (CERTIFIED, NOT_CERTIFIED, Schedule, budget_decider, look_loop,
                                          target_decider, target_test)


def binomial_draw(p: float, rng):
    """Class counts (class 0 = the chosen class, hit with probability p) for a 2-class sampler."""
    def draw(active, need, start):
        hits = rng.binomial(need, p)
        return np.stack([hits, need - hits], axis=1)
    return draw


def simulate(p, alpha, target, trials, looks, *, boundary="bonferroni", sigma=1.0, tolerance=0.0, seed=0,
             test=None):
    rng = np.random.default_rng(seed)
    noise = certify.Gaussian(sigma)
    if target is None:
        decide = budget_decider(noise, alpha / len(looks), 0.0, looks[-1], tolerance)
    else:
        decide = target_decider(test or target_test(noise, target, 0.0, looks, alpha, boundary))
    return look_loop(binomial_draw(p, rng), np.zeros(trials, dtype=np.int64), 2, looks, decide)


def too_many_failures(failures: int, trials: int, alpha: float) -> bool:
    """One-sided binomial test at level 0.001 of 'failure rate <= alpha'."""
    return sps.binomtest(failures, trials, alpha, alternative="greater").pvalue < 1e-3


LOOKS = Schedule(first_look=20, growth=2.0).looks(5_000)  # 20, 40, ..., 2560, 5000: 9 looks
DENSE = Schedule(first_look=20, growth=1.1).looks(5_000)  # 59 looks: the exact boundary's kind


def rejection_probability(critical, looks, p) -> float:
    """P(hits at look j >= critical[j] for some j) for Bernoulli(p) samples: an independent
    computation of the exact boundary's level (full FFT convolution of the survivors, no windows)."""
    from scipy.signal import fftconvolve

    dist, previous, crossed = np.array([1.0]), 0, 0.0
    for n, c in zip(looks, critical):
        dist = np.maximum(fftconvolve(dist, sps.binom.pmf(np.arange(n - previous + 1), n - previous, p))[:n + 1], 0)
        previous = n
        crossed += dist[c:].sum()
        dist[c:] = 0.0
    return crossed


@pytest.mark.slow
@pytest.mark.parametrize("alpha,trials,boundary", [(0.05, 4_000, "bonferroni"), (0.001, 60_000, "bonferroni"),
                                                   (0.05, 4_000, "exact"), (0.001, 25_000, "exact")])
def test_false_certificate_rate_at_the_threshold(alpha, trials, boundary):
    """p_A = Phi(r / sigma) exactly: certifying radius r is a false certificate (p_A is not above
    the threshold). The valid boundary keeps the rate <= alpha; a wrong one (re-checking a fixed-n
    bound at alpha at every look; the exact design at 3 alpha) does not, and the same test says so."""
    sigma, target = 1.0, 0.5
    p = float(sps.norm.cdf(target / sigma))
    looks = LOOKS if boundary == "bonferroni" else DENSE
    valid = simulate(p, alpha, target, trials, looks, boundary=boundary, sigma=sigma)
    false_valid = int((valid.decision == CERTIFIED).sum())
    assert not too_many_failures(false_valid, trials, alpha), (false_valid, trials * alpha)

    wrong_alpha = alpha * len(looks) if boundary == "bonferroni" else 3 * alpha  # bonferroni: alpha at each look
    wrong = simulate(p, wrong_alpha, target, trials, looks, boundary=boundary, sigma=sigma, seed=1)
    false_wrong = int((wrong.decision == CERTIFIED).sum())
    assert too_many_failures(false_wrong, trials, alpha), (false_wrong, trials * alpha)


@pytest.mark.parametrize("alpha", [0.05, 1e-3, 1e-6])
@pytest.mark.parametrize("sigma,target", [(1.0, 0.5), (0.25, 0.25), (0.5, 1.5)])
def test_exact_boundary_level_computed_independently(alpha, sigma, target):
    """The C++ design's level, recomputed by a plain FFT recursion at the null probability: <= alpha,
    and most of alpha is used (a boundary that spent nothing would also pass the first check)."""
    looks = Schedule(first_look=50, growth=1.1).looks(20_000, "exact")
    test = target_test(certify.Gaussian(sigma), target, 0.0, looks, alpha, "exact")
    p0 = 1.0 - test.complement
    assert p0 >= sps.norm.cdf(target / sigma) * (1 - 1e-9)  # the null is the threshold, rounded up
    assert sigma * sps.norm.ppf(p0) >= target  # ... where the radius reaches the target
    level = rejection_probability(test.critical, looks, p0)
    assert level <= alpha * (1 + 1e-6)
    assert level >= 0.9 * alpha
    # Below the null the level only falls (the rejection event is increasing in P(hit)).
    assert rejection_probability(test.critical, looks, p0 - 0.01) < level
    # One hit fewer at any look where that is possible spends more than alpha: the boundary is tight.
    j = int(np.flatnonzero(test.critical <= looks)[-1])
    loosened = test.critical.copy()
    loosened[j] -= 1
    assert rejection_probability(loosened, looks, p0) > level


def test_exact_boundary_level_by_enumeration():
    """Brute force over every Bernoulli sequence of a short schedule: the exact probability of
    crossing, summed path by path, is <= alpha."""
    looks = np.array([3, 6, 9, 12], dtype=np.int64)
    for alpha in (0.3, 0.1, 0.02):
        test = target_test(certify.Gaussian(1.0), 0.2, 0.0, looks, alpha, "exact")
        p0 = 1.0 - test.complement
        total = 0.0
        for path in itertools.product((0, 1), repeat=int(looks[-1])):
            hits = np.cumsum(path)[looks - 1]
            if (hits >= test.critical).any():
                k = sum(path)
                total += p0 ** k * (1 - p0) ** (len(path) - k)
        assert total <= alpha, (alpha, total, test.critical)


@pytest.mark.parametrize("boundary", ["bonferroni", "exact"])
def test_tail_mass_and_noises_move_the_null(boundary):
    """Each noise's threshold (Gaussian Phi(r / sigma), Laplace 1 - exp(-r / lambda) / 2, uniform
    1/2 + r / (2 lambda)), and the sampler's tail mass raises it: more hits needed."""
    looks = Schedule(first_look=100).looks(10_000, boundary)
    for noise, p_star in [(certify.Gaussian(0.5), sps.norm.cdf(1.0)), (certify.Laplace(0.5), 1 - np.exp(-1) / 2),
                          (certify.Uniform(1.0), 0.75)]:
        test = target_test(noise, 0.5, 0.0, looks, 1e-3, boundary)
        shifted = target_test(noise, 0.5, 1e-3, looks, 1e-3, boundary)
        assert (shifted.critical >= test.critical).all() and (shifted.critical > test.critical).any()
        assert (test.critical[-1] - 1) / looks[-1] > p_star  # the last look certifies only above p*
        assert 1 - core.target_complement(noise.kind, noise.scale, 0.5) >= p_star * (1 - 1e-12)


@pytest.mark.slow
def test_budgeted_radius_is_valid_at_every_stop():
    """Budgeted mode: a certificate is false when its radius exceeds the true radius
    sigma * Phi^-1(p_A). Stopping by the tolerance rule keeps the rate <= alpha."""
    alpha, trials, sigma = 0.05, 4_000, 1.0
    for p in (0.7, 0.95):
        true_radius = sigma * sps.norm.ppf(p)
        state = simulate(p, alpha, None, trials, LOOKS, sigma=sigma, tolerance=0.05, seed=2)
        false = int((state.radius > true_radius).sum())
        assert not too_many_failures(false, trials, alpha), (p, false)
        assert state.drawn.mean() < LOOKS[-1]  # the tolerance did stop some runs early


@pytest.mark.parametrize("boundary", ["bonferroni", "exact"])
def test_clear_inputs_stop_early_and_far_ones_are_refused_early(boundary):
    looks = Schedule().looks(100_000, boundary)
    sure = simulate(0.999, 0.001, 0.5, 200, looks, boundary=boundary, sigma=0.5)
    assert (sure.decision == CERTIFIED).all()
    assert sure.drawn.max() <= 400  # decided at the first looks, against 100,000 for fixed n
    hopeless = simulate(0.6, 0.001, 0.5, 200, looks, boundary=boundary, sigma=0.5)  # threshold 0.84
    assert (hopeless.decision == NOT_CERTIFIED).all()
    assert np.median(hopeless.drawn) <= 1_600  # futility stops it long before the budget


def test_exact_boundary_needs_fewer_samples_near_the_threshold():
    """The reason it is the default: at p_A = 0.85 (threshold 0.841, sigma = r = 0.5, alpha =
    0.001) it certifies with fewer samples on average than Bonferroni, on the same inputs."""
    means = {}
    for boundary in ("bonferroni", "exact"):
        state = simulate(0.85, 0.001, 0.5, 300, Schedule().looks(100_000, boundary), boundary=boundary, sigma=0.5,
                         seed=7)
        assert (state.decision == CERTIFIED).mean() > 0.97
        means[boundary] = state.drawn.mean()
    assert means["exact"] < 0.85 * means["bonferroni"], means


def test_look_decisions_match_their_definition():
    """The C++ decisions against their definition from the bounds they are built of."""
    rng = np.random.default_rng(3)
    looks = Schedule(first_look=100, growth=2.0).looks(50_000)
    alpha, sigma, target = 0.03, 0.5, 0.3
    test = target_test(certify.Gaussian(sigma), target, 0.0, looks, alpha, "bonferroni")
    alpha_look = alpha / len(looks)
    j = rng.integers(0, len(looks), 400)
    n = looks[j]
    k = (n * rng.uniform(0.4, 1.0, 400)).astype(np.int64)
    k[:40] = test.critical[j[:40]] - 1  # next to the boundary
    k[40:80] = test.critical[j[40:80]]
    d, p_lower, radius = test.decide(k, j)
    for i in range(400):
        p_i, r_i = core.smoothing_bounds(0, sigma, np.array([k[i]]), int(n[i]), alpha_look, 0.0)
        assert (p_lower[i], radius[i]) == (p_i[0], r_i[0])
        upper = core.clopper_pearson_upper(int(k[i]), int(n[i]), alpha_look)
        optimistic = sigma * sps.norm.ppf(upper) if upper > 0.5 else 0.0
        if p_i[0] > 0.5 and r_i[0] >= target:
            assert d[i] == CERTIFIED
        elif j[i] == len(looks) - 1 or optimistic < target * (1 - 1e-9):
            assert d[i] == NOT_CERTIFIED
        elif optimistic > target * (1 + 1e-9):
            assert d[i] == 0
    # The table is the fewest hits that certify: one fewer does not.
    for jj, c in enumerate(test.critical):
        p_c, r_c = core.smoothing_bounds(0, sigma, np.array([c - 1, c]), int(looks[jj]), alpha_look, 0.0)
        assert not (p_c[0] > 0.5 and r_c[0] >= target)
        assert c > looks[jj] or (p_c[1] > 0.5 and r_c[1] >= target)
    # Budgeted mode: the bound at alpha / K and the tolerance rule.
    last = rng.uniform(size=400) < 0.2
    d, p_lower, radius = core.budget_looks(0, sigma, k, n, last, alpha_look, 0.0, 50_000, 0.05)
    for i in range(400):
        p_i, r_i = core.smoothing_bounds(0, sigma, np.array([k[i]]), int(n[i]), alpha_look, 0.0)
        assert (p_lower[i], radius[i]) == (p_i[0], r_i[0])
        if last[i]:
            assert d[i] == (CERTIFIED if p_i[0] > 0.5 else NOT_CERTIFIED)


def test_bonferroni_table_is_the_fewest_certifying_hits_everywhere():
    """The Bonferroni table is searched from the last look's critical rate (a gallop, then bisection):
    over random noises, targets, levels, tail masses and schedules, c_j certifies and c_j - 1 does not."""
    rng = np.random.default_rng(11)
    for _ in range(60):
        kind, scale = int(rng.integers(0, 3)), float(rng.uniform(0.1, 2))
        target, alpha = float(rng.uniform(0, 2 * scale)), float(10 ** rng.uniform(-12, -0.5))
        tail, budget = float(rng.choice([0.0, 1e-6, 1e-2])), int(10 ** rng.uniform(1, 7))
        looks = core.look_schedule(min(int(rng.integers(1, 300)), budget), float(rng.choice([1.05, 1.5, 10.0])),
                                   budget)
        test = core.target_test(0, kind, scale, target, tail, looks, alpha)
        for n, c in zip(looks, test.critical):
            counts = np.array([max(c - 1, 0), min(c, n)])
            p, r = core.smoothing_bounds(kind, scale, counts, int(n), alpha / len(looks), tail)
            assert c > n or (p[1] > 0.5 and r[1] >= target)
            assert c == 0 or not (p[0] > 0.5 and r[0] >= target)


def test_hostile_schedules_and_levels_are_refused():
    """A schedule of a look per sample up to 10^9, or past 10^9 samples, is refused before anything
    is allocated; so is a level among subnormal numbers (the bounds' rounding no longer covers them)."""
    start = time.perf_counter()
    with pytest.raises(ValueError, match="10\\^4 looks"):
        core.look_schedule(1, 1.000000001, 10**9)
    with pytest.raises(ValueError, match="10\\^9 samples"):
        core.look_schedule(100, 2.0, 10**9 + 1)
    with pytest.raises(ValueError, match="10\\^4 looks"):
        core.target_test(0, 0, 1.0, 0.5, 0.0, np.arange(1, 10_002, dtype=np.int64), 0.01)
    with pytest.raises(ValueError, match="10\\^9"):
        core.budget_looks(0, 1.0, np.array([5]), np.array([10]), np.array([False]), 0.01, 0.0, 2**40, 0.1)
    with pytest.raises(ValueError, match="at most 1,000,000,000"):
        certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.5)).certify(torch.zeros(3), n=2**40, sequential=True)
    assert time.perf_counter() - start < 5
    # An unreachable target at 10^4 looks near 10^9 samples: one evaluation per look, not a search.
    looks = np.arange(10**9 - 9_999, 10**9 + 1, dtype=np.int64)
    start = time.perf_counter()
    test = core.target_test(0, 0, 1.0, 100.0, 0.0, looks, 0.01)
    assert (test.critical == looks + 1).all()
    assert time.perf_counter() - start < 30
    with pytest.raises(ValueError, match="1e-306"):
        core.clopper_pearson_lower(50, 100, 5e-324)
    with pytest.raises(ValueError, match="1e-300"):
        certify.stats.clopper_pearson_lower(50, 100, 1e-301)
    for bad, error in ((True, TypeError), (2.5, TypeError), (0, ValueError)):
        with pytest.raises(error, match="first_look"):
            Schedule(first_look=bad)
    for bad, error in ((True, TypeError), (1.0, ValueError), (float("nan"), ValueError)):
        with pytest.raises(error, match="growth"):
            Schedule(growth=bad)


def test_schedule():
    looks = Schedule(first_look=100, growth=1.5).looks(10_000)
    assert looks[0] == 100 and looks[-1] == 10_000
    assert (np.diff(looks) > 0).all()
    assert np.all(looks[1:-1] >= np.ceil(looks[:-2] * 1.5))
    assert list(Schedule(first_look=500).looks(300)) == [300]
    assert len(Schedule().looks(100_000, "exact")) > len(Schedule().looks(100_000, "bonferroni"))
    with pytest.raises(ValueError, match="growth"):
        Schedule(growth=1.0).looks(100)


# ---------------------------------------------------------------------------- on a model
def test_model_path_matches_fixed_certify_on_clear_inputs():
    """A threshold classifier: certified at r exactly when its margin is clearly beyond r."""
    model = threshold_model()
    smoothed = certify.Smoothed(model, 2, certify.Gaussian(0.5), input_shape=(3,))
    xs = torch.tensor([[2.0, 0, 0], [0.05, 0, 0], [-1.0, 0, 0], [0.9, 0, 0]])
    seq = smoothed.certify_batch(xs, n0=100, alpha=0.001, target_radius=0.5, max_samples=50_000, seed=4)
    # true radii |x0|: 2.0 (certified, class 1), 0.05 (not at 0.5), 1.0 for class 0 (certified), 0.9
    assert seq.certified.tolist() == [True, False, True, True]
    assert seq.prediction.tolist() == [1, -1, 0, 1]
    assert seq.radius.tolist() == [0.5, 0.0, 0.5, 0.5]
    assert seq.num_samples[0] < 1_000 and seq.num_samples.max() <= 50_100
    # Each input's result does not depend on the others beside it (its noise is its own).
    for i in range(len(xs)):
        alone = smoothed.certify(xs[i], n0=100, alpha=0.001, target_radius=0.5, max_samples=50_000, seed=4,
                                 input_index=i)
        assert (alone.certified, alone.num_samples, alone.p_lower) == (bool(seq.certified[i]),
                                                                       int(seq.num_samples[i]), seq.p_lower[i])


def test_budgeted_mode_returns_certified_radii():
    model = threshold_model()
    smoothed = certify.Smoothed(model, 2, certify.Gaussian(0.5), input_shape=(3,))
    xs = torch.tensor([[0.3, 0, 0], [3.0, 0, 0]])
    fixed = smoothed.certify_batch(xs, n0=100, n=20_000, alpha=0.001, seed=5)
    budget = smoothed.certify_batch(xs, n0=100, n=20_000, alpha=0.001, seed=5, sequential=True, tolerance=0.05)
    assert (budget.radius <= np.abs(xs[:, 0].numpy())).all()  # below the true radius
    assert budget.num_samples[0] < fixed.num_samples[0]  # p_A = 0.73: the radius settles early
    assert budget.num_samples[1] == fixed.num_samples[1]  # every sample a hit: the radius keeps growing
    assert budget.prediction.tolist() == fixed.prediction.tolist()


@pytest.mark.parametrize("kwargs,match", [
    ({"target_radius": -1.0}, "target_radius"),
    ({"target_radius": 0.5, "sequential": True}, "not both"),
    ({"sequential": True, "max_samples": 10}, "budget is n"),
    ({"target_radius": 0.5, "tolerance": 0.1}, "tolerance applies"),
    ({"target_radius": 0.5, "schedule": "fast"}, "Schedule"),
    ({"target_radius": True}, "target_radius must be a number"),
    ({"target_radius": "0.25"}, "target_radius must be a number"),
    ({"target_radius": 0.5, "alpha": 1e-310}, "alpha must be >= 1e-300"),
    ({"target_radius": 0.5, "max_samples": 10**9 + 1, "boundary": "bonferroni"}, "at most 1,000,000,000"),
    ({"sequential": True, "tolerance": float("nan")}, "tolerance must be finite"),
])
def test_bad_sequential_arguments(kwargs, match):
    smoothed = certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.5))
    with pytest.raises((ValueError, TypeError), match=match):
        smoothed.certify(torch.zeros(3), n=100, **kwargs)
    with pytest.raises(ValueError, match="native backend"):
        certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.5), backend="torch").certify(
            torch.zeros(3), n=100, target_radius=0.1)
