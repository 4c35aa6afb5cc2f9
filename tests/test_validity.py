"""End-to-end soundness of CERTIFY and PREDICT by simulation.

Base classifiers with known class probabilities under noise, and known true radii:
  - threshold f(x) = [x_0 > 0]: the smoothed classifier's boundary is the hyperplane x_0 = 0 for
    every noise, so the true radius of x is m = x_0 in every lp norm, and
    p_A = Phi(m / sigma) (Gaussian), 1 - exp(-m / lambda) / 2 (Laplace), (lambda + m) / (2 lambda)
    (uniform). At that p_A each radius formula gives exactly m.
  - linear f(x) = [w.x + b > 0] under Gaussian noise: p_A = Phi(|w.x + b| / (sigma |w|)), true radius
    |w.x + b| / |w|.
A certificate is wrong when it names the wrong class or a radius above the true one. Over many
independent trials (distinct input indices = independent noise) the wrong-certificate count must
pass a one-sided binomial test against alpha; the same check must flag a normal-approximation bound.
"""

import numpy as np
import pytest
import scipy.stats as st
import torch
from conftest import threshold_model

import certify
from certify.smoothing import smoothed as smoothed_module

ALPHA = 0.05
TRIALS = 3000


def true_class_one_input(noise, p_a, dim=3):
    """x with x_0 = the true radius m for which the threshold classifier has P(class 1) = p_a."""
    if isinstance(noise, certify.Gaussian):
        m = noise.sigma * st.norm.ppf(p_a)
    elif isinstance(noise, certify.Laplace):
        m = -noise.scale * np.log(2 * (1 - p_a))
    else:
        m = 2 * noise.half_width * (p_a - 0.5)
    x = torch.zeros(dim, dtype=torch.float64)
    x[0] = m
    x[1:] = torch.linspace(-1, 1, dim - 1, dtype=torch.float64)  # irrelevant coordinates
    return x, m


def wrong_certificates(results, true_class, true_radius):
    issued = results.prediction != certify.ABSTAIN
    wrong_class = issued & (results.prediction != true_class)
    too_large = issued & (results.prediction == true_class) & (results.radius > true_radius)
    return int((wrong_class | too_large).sum())


def binomial_test_pvalue(failures, trials, alpha):
    """One-sided: P(Bin(trials, alpha) >= failures)."""
    return st.binom.sf(failures - 1, trials, alpha)


def simulate(noise, p_a, n, backend="native"):
    x, m = true_class_one_input(noise, p_a)
    g = certify.Smoothed(threshold_model(), 2, noise, backend=backend)
    results = g.certify_batch(x.expand(TRIALS, -1), n0=20, n=n, alpha=ALPHA, batch_size=20_000, seed=11)
    return wrong_certificates(results, 1, m), results


NOISES = [certify.Gaussian(0.5), certify.Laplace(0.5), certify.Uniform(0.5)]


@pytest.mark.parametrize("noise", NOISES, ids=lambda z: type(z).__name__)
@pytest.mark.parametrize("p_a", [0.7, 0.95, 0.995])
def test_wrong_certificate_rate_is_at_most_alpha(noise, p_a):
    failures, results = simulate(noise, p_a, n=300)
    assert binomial_test_pvalue(failures, TRIALS, ALPHA) > 1e-3, (failures, TRIALS)
    # The procedure is not vacuous: it certifies most inputs at a useful radius.
    assert (results.prediction == 1).mean() > 0.8


def test_the_rate_test_catches_a_normal_approximation_bound(monkeypatch):
    def wald_bounds(noise, hits, n, alpha, tail_mass=0.0):
        phat = hits / n
        p_lower = phat - st.norm.isf(alpha) * np.sqrt(phat * (1 - phat) / n)
        return p_lower, np.where(p_lower > 0.5, noise.radius(np.clip(p_lower, 0, 1)), 0.0)

    monkeypatch.setattr(smoothed_module, "smoothing_bounds", wald_bounds)
    failures, _ = simulate(certify.Gaussian(0.5), 0.995, n=300)
    assert binomial_test_pvalue(failures, TRIALS, ALPHA) < 1e-6, failures


def test_linear_classifier_gaussian():
    torch.manual_seed(3)
    dim, sigma = 6, 0.4
    w = torch.randn(dim, dtype=torch.float64)
    b = 0.3

    def model(z):
        score = z @ w + b
        return torch.stack([-score, score], dim=1)

    g = certify.Smoothed(model, 2, certify.Gaussian(sigma))
    for x in torch.randn(3, dim, dtype=torch.float64) * 0.3:
        score = float(x @ w + b)
        true_class, true_radius = int(score > 0), abs(score) / float(w.norm())
        results = g.certify_batch(x.expand(TRIALS, -1), n0=20, n=200, alpha=ALPHA, batch_size=20_000, seed=5)
        failures = wrong_certificates(results, true_class, true_radius)
        assert binomial_test_pvalue(failures, TRIALS, ALPHA) > 1e-3, (failures, score)


def test_predict_wrong_class_rate_is_at_most_alpha():
    noise = certify.Gaussian(0.5)
    x, _ = true_class_one_input(noise, 0.56)
    g = certify.Smoothed(threshold_model(), 2, noise)
    trials = 1500
    answers = np.array([g.predict(x, n=100, alpha=ALPHA, seed=3, input_index=i) for i in range(trials)])
    wrong = int((answers == 0).sum())
    assert binomial_test_pvalue(wrong, trials, ALPHA) > 1e-3, wrong
    assert (answers == certify.ABSTAIN).any() and (answers == 1).any()


def test_native_and_torch_paths_agree_statistically():
    """Same procedure, different noise generators: the k_A counts share one binomial law."""
    noise = certify.Gaussian(0.5)
    x, _ = true_class_one_input(noise, 0.8)
    hits = {}
    for backend in ("native", "torch"):
        g = certify.Smoothed(threshold_model(), 2, noise, backend=backend)
        r = g.certify_batch(x.expand(400, -1), n0=20, n=500, alpha=0.001, batch_size=20_000, seed=1)
        assert (r.prediction == 1).mean() > 0.97  # n0 = 20 picks class 0 now and then: abstain
        hits[backend] = r.counts[:, 1].sum()
    total = 400 * 500
    p1, p2 = hits["native"] / total, hits["torch"] / total
    pooled = (hits["native"] + hits["torch"]) / (2 * total)
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * 2 / total)
    assert abs(z) < 4.5, (p1, p2)
    for p in (p1, p2):  # and both match the true p_A
        assert abs(p - 0.8) < 4.5 * np.sqrt(0.8 * 0.2 / total)
