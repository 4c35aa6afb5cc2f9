"""Sequential CERTIFY: the failure probability stays <= alpha whatever the stopping time.

The validity tests simulate the look loop itself (certify.smoothing.sequential.look_loop, the code
the model path runs) with a binomial sampler of known p_A, including p_A exactly at the threshold
of the target radius, where a false certificate is most likely. The same test, given the wrong
boundary (a fixed-n Clopper-Pearson bound at alpha re-checked at every look), must fail.
"""

import numpy as np
import pytest
import torch
from conftest import threshold_model
from scipy import stats as sps

import certify
from certify._native import core
from certify.smoothing.sequential import CERTIFIED, NOT_CERTIFIED, Schedule, look_loop


def binomial_draw(p: float, rng):
    """Class counts (class 0 = the chosen class, hit with probability p) for a 2-class sampler."""
    def draw(active, need, start):
        hits = rng.binomial(need, p)
        return np.stack([hits, need - hits], axis=1)
    return draw


def simulate(p, alpha, target, trials, looks, *, alpha_look=None, sigma=1.0, tolerance=0.0, seed=0):
    rng = np.random.default_rng(seed)
    return look_loop(binomial_draw(p, rng), np.zeros(trials, dtype=np.int64), 2, looks,
                     alpha / len(looks) if alpha_look is None else alpha_look, certify.Gaussian(sigma), 0.0,
                     target, tolerance)


def too_many_failures(failures: int, trials: int, alpha: float) -> bool:
    """One-sided binomial test at level 0.001 of 'failure rate <= alpha'."""
    return sps.binomtest(failures, trials, alpha, alternative="greater").pvalue < 1e-3


LOOKS = Schedule(first_look=20, growth=2.0).looks(5_000)  # 20, 40, ..., 2560, 5000: 9 looks


@pytest.mark.slow
@pytest.mark.parametrize("alpha,trials", [(0.05, 4_000), (0.001, 60_000)])
def test_false_certificate_rate_at_the_threshold(alpha, trials):
    """p_A = Phi(r / sigma) exactly: certifying radius r is a false certificate (p_A is not above
    the threshold). The valid boundary keeps the rate <= alpha; re-checking a fixed-n bound at
    alpha at every look does not, and the same test says so."""
    sigma, target = 1.0, 0.5
    p = float(sps.norm.cdf(target / sigma))
    valid = simulate(p, alpha, target, trials, LOOKS, sigma=sigma)
    false_valid = int((valid.decision == CERTIFIED).sum())
    assert not too_many_failures(false_valid, trials, alpha), (false_valid, trials * alpha)

    wrong = simulate(p, alpha, target, trials, LOOKS, alpha_look=alpha, sigma=sigma, seed=1)
    false_wrong = int((wrong.decision == CERTIFIED).sum())
    assert too_many_failures(false_wrong, trials, alpha), (false_wrong, trials * alpha)


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


def test_clear_inputs_stop_early_and_far_ones_are_refused_early():
    looks = Schedule().looks(100_000)
    sure = simulate(0.999, 0.001, 0.5, 200, looks)
    assert (sure.decision == CERTIFIED).all()
    assert sure.drawn.max() <= 400  # decided at the first looks, against 100,000 for fixed n
    hopeless = simulate(0.6, 0.001, 0.5, 200, looks)  # Phi(0.5) = 0.69 > 0.6: not certifiable
    assert (hopeless.decision == NOT_CERTIFIED).all()
    assert np.median(hopeless.drawn) <= 1_600  # futility stops it long before the budget


def test_look_decisions_match_their_definition():
    """The C++ decisions against their definition from the bounds they are built of."""
    rng = np.random.default_rng(3)
    n = rng.integers(1, 50_000, 400)
    k = (n * rng.uniform(0.4, 1.0, 400)).astype(np.int64)
    last = rng.uniform(size=400) < 0.2
    alpha_look, sigma, target = 1e-4, 0.5, 0.3
    d, p_lower, radius = core.sequential_looks(0, sigma, k, n, last, alpha_look, 0.0, target)
    for i in range(400):
        p_i, r_i = core.smoothing_bounds(0, sigma, np.array([k[i]]), int(n[i]), alpha_look, 0.0)
        assert (p_lower[i], radius[i]) == (p_i[0], r_i[0])
        upper = core.clopper_pearson_upper(int(k[i]), int(n[i]), alpha_look)
        optimistic = sigma * sps.norm.ppf(upper) if upper > 0.5 else 0.0
        if p_i[0] > 0.5 and r_i[0] >= target:
            assert d[i] == CERTIFIED
        elif last[i] or optimistic < target * (1 - 1e-9):
            assert d[i] == NOT_CERTIFIED
        elif optimistic > target * (1 + 1e-9):
            assert d[i] == 0


def test_schedule():
    looks = Schedule(first_look=100, growth=1.5).looks(10_000)
    assert looks[0] == 100 and looks[-1] == 10_000
    assert (np.diff(looks) > 0).all()
    assert np.all(looks[1:-1] >= np.ceil(looks[:-2] * 1.5))
    assert list(Schedule(first_look=500).looks(300)) == [300]
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
])
def test_bad_sequential_arguments(kwargs, match):
    smoothed = certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.5))
    with pytest.raises((ValueError, TypeError), match=match):
        smoothed.certify(torch.zeros(3), n=100, **kwargs)
    with pytest.raises(ValueError, match="native backend"):
        certify.Smoothed(threshold_model(), 2, certify.Gaussian(0.5), backend="torch").certify(
            torch.zeros(3), n=100, target_radius=0.1)
