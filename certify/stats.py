"""Binomial confidence bounds and tests from the C++ core, with argument checks.

All functions accept scalars or NumPy arrays (broadcast together).
"""

from __future__ import annotations

import numpy as np

from certify import _checks
from certify._native import core

__all__ = [
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "binomial_cdf",
    "sign_test_pvalue",
    "normal_upper_quantile",
]


def _counts(k, n):
    k = np.asarray(k)
    n = np.asarray(n)
    for name, v in (("k", k), ("n", n)):
        if not np.issubdtype(v.dtype, np.integer):
            raise TypeError(f"{name} must be integer counts, got dtype {v.dtype}")
    if np.any(n < 1):
        raise ValueError("n must be >= 1")
    if np.any((k < 0) | (k > n)):
        raise ValueError("k must lie in [0, n]")
    return k.astype(np.uint64), n.astype(np.uint64)


def clopper_pearson_lower(k, n, alpha):
    """One-sided lower confidence bound on p at level 1 - alpha: Beta^{-1}(alpha; k, n - k + 1).

    P(bound > p) <= alpha for every true p; 0 when k = 0. Rounded down past its numerical error.
    """
    k, n = _counts(k, n)
    return core.clopper_pearson_lower(k, n, _checks.probability_level("alpha", alpha))


def clopper_pearson_upper(k, n, alpha):
    """One-sided upper confidence bound at level 1 - alpha: Beta^{-1}(1 - alpha; k + 1, n - k); 1 when k = n."""
    k, n = _counts(k, n)
    return core.clopper_pearson_upper(k, n, _checks.probability_level("alpha", alpha))


def binomial_cdf(k, n, p):
    """P(X <= k) for X ~ Binomial(n, p)."""
    k, n = _counts(k, n)
    p = np.asarray(p, dtype=np.float64)
    if np.any((p < 0) | (p > 1)):
        raise ValueError("p must lie in [0, 1]")
    return core.binomial_cdf(k, n, p)


def sign_test_pvalue(k, n):
    """Two-sided binomial test of p = 1/2 (scipy's binomtest(k, n, 0.5).pvalue); PREDICT's abstain rule."""
    k = np.asarray(k)
    n = np.asarray(n)
    if np.any(n < 0) or np.any((k < 0) | (k > n)):
        raise ValueError("need 0 <= k <= n")
    return core.sign_test_pvalue(k.astype(np.uint64), n.astype(np.uint64))


def normal_upper_quantile(q):
    """The z with P(Z > z) = q, i.e. Phi^{-1}(1 - q), accurate also for q near 0."""
    q = np.asarray(q, dtype=np.float64)
    if np.any((q <= 0) | (q >= 1)):
        raise ValueError("q must lie in (0, 1)")
    return core.normal_upper_quantile(q)
