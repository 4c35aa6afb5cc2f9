"""Binomial bounds, tests and radii of the C++ core against scipy, mpmath (40 digits) and exact coverage."""

import math

import mpmath
import numpy as np
import pytest
import scipy.stats as st

import certify
from certify import _core, stats

mpmath.mp.dps = 40

COUNTS = [1, 2, 10, 37, 100, 1000, 12_345, 10**5, 10**6, 10**7, 10**8, 10**9]
ALPHAS = [0.5, 0.05, 1e-3, 1e-6, 1e-12]


def k_grid(n):
    ks = {0, 1, 2, 3, 5, n // 1000, n // 100, n // 10, n // 3, n // 2, n - n // 10, n - n // 100, n - 5, n - 1, n}
    ks |= set(np.random.default_rng(n).integers(0, n + 1, 4).tolist())
    return sorted(k for k in ks if 0 <= k <= n)


MAX_TERMS = 3000


def binomial_tail_exact(n, x, k, at_least):
    """P(Bin(n, x) >= k) (at_least) or P(Bin(n, x) <= k), as an exact 40-digit sum over the
    shorter side; None when both sides have more than MAX_TERMS terms."""
    x = mpmath.mpf(x)

    def pmf(j):
        return mpmath.binomial(n, j) * x**j * (1 - x) ** (n - j)

    lo_terms = k if at_least else k + 1  # terms j < k (at_least) or j <= k
    hi_terms = n + 1 - lo_terms
    if min(lo_terms, hi_terms) > MAX_TERMS:
        return None
    if lo_terms <= hi_terms:
        head = mpmath.fsum(pmf(j) for j in range(lo_terms))
        return 1 - head if at_least else head
    tail = mpmath.fsum(pmf(j) for j in range(lo_terms, n + 1))
    return tail if at_least else 1 - tail


# Integer a, b: P(Beta(a, b) <= x) = P(Bin(a + b - 1, x) >= a).
def lower_tail(a, b, x):
    return binomial_tail_exact(a + b - 1, x, a, at_least=True)


def upper_tail(a, b, x):
    return binomial_tail_exact(a + b - 1, x, a - 1, at_least=False)


def rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


@pytest.mark.parametrize("n", COUNTS)
def test_clopper_pearson_matches_scipy_to_1e10(n):
    """Relative 1e-10 against scipy; where scipy itself is off (tiny k at n >= 10^7 for the upper
    bound), mpmath decides: our bound must then be the one whose tail equals alpha."""
    for k in k_grid(n):
        for alpha in ALPHAS:
            lo = stats.clopper_pearson_lower(k, n, alpha)
            hi = stats.clopper_pearson_upper(k, n, alpha)
            want_lo = st.beta.ppf(alpha, k, n - k + 1) if k > 0 else 0.0
            want_hi = st.beta.isf(alpha, k + 1, n - k) if k < n else 1.0
            if rel(lo, want_lo) > 1e-10:
                ours, theirs = lower_tail(k, n - k + 1, lo), lower_tail(k, n - k + 1, want_lo)
                assert ours is not None, (n, k, alpha, lo, want_lo)
                assert abs(ours / alpha - 1) < 1e-9 and abs(ours - alpha) < abs(theirs - alpha), (n, k, alpha)
            if rel(hi, want_hi) > 1e-10:
                ours, theirs = upper_tail(k + 1, n - k, hi), upper_tail(k + 1, n - k, want_hi)
                assert ours is not None, (n, k, alpha, hi, want_hi)
                assert abs(ours / alpha - 1) < 1e-9 and abs(ours - alpha) < abs(theirs - alpha), (n, k, alpha)


@pytest.mark.parametrize("n", [1, 10, 100, 1000, 10**4, 10**6, 10**9])
def test_bounds_are_rounded_outward_in_exact_arithmetic(n):
    """P(Beta <= lower) <= alpha and P(Beta > upper) <= alpha, as exact 40-digit binomial sums
    (every k up to n = 1000; beyond, the k whose sums are short: the extreme counts)."""
    checked = 0
    for k in k_grid(n):
        for alpha in (0.05, 1e-3):
            if k > 0:
                tail = lower_tail(k, n - k + 1, stats.clopper_pearson_lower(k, n, alpha))
                if tail is not None:
                    assert tail <= alpha, (n, k, alpha)
                    checked += 1
            if k < n:
                tail = upper_tail(k + 1, n - k, stats.clopper_pearson_upper(k, n, alpha))
                if tail is not None:
                    assert tail <= alpha, (n, k, alpha)
                    checked += 1
    assert checked >= 4


def coverage_failure(bound_of_k, n, p):
    """P_{K ~ Bin(n, p)}(bound(K) > p): the probability that the lower bound is wrong."""
    ks = np.arange(n + 1)
    wrong = bound_of_k > p
    return float(st.binom.pmf(ks[wrong], n, p).sum())


def worst_case_ps(bounds, n):
    """Coverage jumps at the bound values: the worst p sit just below them, plus a plain grid."""
    near = bounds[(bounds > 0) & (bounds < 1)]
    picks = near[np.linspace(0, len(near) - 1, min(40, len(near))).astype(int)] * (1 - 1e-9)
    return np.concatenate([picks, np.linspace(0.001, 0.999, 41)])


@pytest.mark.parametrize("n", [10, 37, 100, 1000, 10_000, 100_000])
@pytest.mark.parametrize("alpha", [0.05, 0.001])
def test_exact_coverage_of_the_lower_bound(n, alpha):
    bounds = stats.clopper_pearson_lower(np.arange(n + 1), n, alpha)
    for p in worst_case_ps(bounds, n):
        assert coverage_failure(bounds, n, p) <= alpha * (1 + 1e-9), (n, alpha, p)


def wald_lower(k, n, alpha):
    phat = k / n
    return phat - st.norm.isf(alpha) * np.sqrt(phat * (1 - phat) / n)


def test_coverage_check_catches_a_normal_approximation_bound():
    n, alpha = 100, 0.05
    bounds = wald_lower(np.arange(n + 1), n, alpha)
    worst = max(coverage_failure(bounds, n, p) for p in worst_case_ps(bounds, n))
    assert worst > 2 * alpha


def test_beta_tails_against_exact_values():
    cases = [(1, 1), (1, 7), (3, 2), (50, 60), (1000, 3), (2, 999), (5, 10**9), (10**9, 4)]
    for a, b in cases:
        mean = a / (a + b)
        sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        for z in (-8, -3, -1, 1, 3, 8):
            x = mean + z * sd
            if not 0 < x < 1:
                continue
            cdf, sf = lower_tail(a, b, x), upper_tail(a, b, x)
            # The smaller tail carries the information: it must be accurate relatively.
            if cdf < 0.5:
                assert rel(_core.beta_cdf(a, b, x), float(cdf)) < 1e-11, (a, b, x)
            else:
                assert rel(_core.beta_sf(a, b, x), float(sf)) < 1e-11, (a, b, x)
    # Non-integer parameters, where mpmath's hypergeometric series converges.
    for a, b, x in [(2.5, 4.25, 0.1), (2.5, 4.25, 0.7), (7.5, 1.5, 0.99)]:
        want = mpmath.betainc(a, b, 0, x, regularized=True)
        assert rel(_core.beta_cdf(a, b, x), float(want)) < 1e-12
    # Large balanced parameters: scipy (Boost) as the reference.
    from scipy.special import betainc

    for x in (0.498, 0.4995, 0.5, 0.501):
        assert rel(_core.beta_cdf(10**6, 10**6 + 17, x), betainc(10**6, 10**6 + 17, x)) < 1e-9


def test_sign_test_matches_scipy():
    for n in [1, 2, 5, 20, 101, 1000, 54_321, 10**6]:
        for k in {0, 1, n // 4, n // 2, (n + 1) // 2, n - 1, n}:
            want = st.binomtest(k, n, 0.5).pvalue
            assert rel(float(stats.sign_test_pvalue(k, n)), want) < 1e-10, (k, n)
    assert stats.sign_test_pvalue(0, 0) == 1.0


def test_binomial_cdf_against_exact_sums():
    # scipy's binom.cdf(1, 10**9, 1e-8) is off by 5e-8; the exact sum is the reference.
    for n, p in [(10, 0.3), (1000, 0.01), (10**6, 0.5), (10**9, 1e-8)]:
        for k in [0, 1, int(n * p), int(n * p) + 3, n - 1]:
            want = binomial_tail_exact(n, p, k, at_least=False)
            if want is None:
                want = st.binom.cdf(k, n, p)
            assert rel(float(stats.binomial_cdf(k, n, p)), float(want)) < 1e-10, (k, n, p)


def test_normal_quantile_matches_scipy():
    q = np.array([0.9999, 0.7, 0.5, 0.3, 0.1, 1e-3, 1e-8, 1e-20, 1e-100, 1e-300])
    np.testing.assert_allclose(stats.normal_upper_quantile(q), st.norm.isf(q), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize(
    "noise,exact",
    [
        (certify.Gaussian(0.5), lambda q: 0.5 * -mpmath.sqrt(2) * mpmath.erfinv(2 * q - 1)),
        (certify.Laplace(0.5), lambda q: -0.5 * mpmath.log(2 * q)),
        (certify.Uniform(0.5), lambda q: 0.5 * (1 - 2 * q)),
    ],
    ids=["gaussian", "laplace", "uniform"],
)
def test_radii_formulas_and_rounding(noise, exact):
    for p in [0.5, 0.5 + 1e-12, 0.51, 0.6, 0.9, 0.99, 0.999999, 1 - 1e-12]:
        q = 1 - p
        got = float(noise.radius(p))
        want = float(exact(mpmath.mpf(q))) if p > 0.5 else 0.0
        # Rounded down (certified in exact arithmetic), and by no more than it needs.
        assert got <= max(want, 0.0)
        assert want - got <= 1e-10 * max(want, 1e-3), (p, got, want)
    assert float(noise.radius(0.3)) == 0.0


def test_radius_formulas_in_closed_form():
    p = np.array([0.6, 0.8, 0.95])
    np.testing.assert_allclose(certify.Gaussian(0.25).radius(p), 0.25 * st.norm.ppf(p), rtol=1e-12)
    np.testing.assert_allclose(certify.Laplace(2.0).radius(p), -2.0 * np.log(2 * (1 - p)), rtol=1e-12)
    np.testing.assert_allclose(certify.Uniform(0.1).radius(p), 2 * 0.1 * (p - 0.5), rtol=1e-12)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="k must lie"):
        stats.clopper_pearson_lower(11, 10, 0.05)
    with pytest.raises(ValueError, match="n must be"):
        stats.clopper_pearson_lower(0, 0, 0.05)
    with pytest.raises(ValueError, match="alpha"):
        stats.clopper_pearson_upper(1, 10, 1.0)
    with pytest.raises(TypeError, match="integer"):
        stats.clopper_pearson_lower(1.5, 10, 0.05)
    with pytest.raises(ValueError, match="exceeds"):
        _core.clopper_pearson_lower(11, 10, 0.05)  # the C++ contract, too
    with pytest.raises(ValueError, match="p_lower"):
        certify.Gaussian(1.0).radius(1.5)


def test_normal_quantile_in_the_far_tail():
    for q in [1e-250, 1e-290, 1e-300, 1e-310, 5e-324]:
        got = float(stats.normal_upper_quantile(q))
        back = mpmath.erfc(mpmath.mpf(got) / mpmath.sqrt(2)) / 2  # Q(got) in 40 digits
        assert abs(back / q - 1) < 1e-10, (q, got)
