// Binomial confidence bounds and tests, accurate for counts up to 10^9 and beyond.
//
// All of them rest on the regularized incomplete beta function I_x(a, b), evaluated by
// its continued fraction with a prefactor x^a (1-x)^b / B(a, b) computed by Loader's
// saddle-point method (C. Loader, "Fast and accurate computation of binomial
// probabilities", 2000; the method of R's dbinom), which keeps full relative precision
// where lgamma differences would lose 6 digits at a = 10^9.
#pragma once

#include <cstdint>

namespace certify {

// A point of [0, 1] as the pair (x, y = 1 - x), with the side that is exact.
// Probabilities near 1 lose their complement in double (1 - 1e-12 has 4 digits of its
// complement left), so each routine takes the exact side and computes the other.
struct UnitPoint {
  double x;
  double y;
  bool x_exact;  // true: x is exact (y = fl(1 - x) may not be); false: y is exact
  // The smaller side is the exact one: given x <= 1/2, x is; given x > 1/2, y = 1 - x is
  // computed exactly (Sterbenz), so y is. Computations take their precision from it.
  static UnitPoint from_x(double x) { const double y = 1.0 - x; return {x, y, x <= y}; }
  static UnitPoint from_y(double y) { const double x = 1.0 - y; return {x, y, x < y}; }
};

struct BetaTails {
  double lower;  // I_x(a, b)     = P(Beta(a, b) <= x)
  double upper;  // 1 - I_x(a, b) = P(Beta(a, b) > x)
};

// Both tails of the Beta(a, b) distribution at x, each with full relative precision.
// Requires a >= 1 and b >= 1 (all that binomial bounds need); throws otherwise.
BetaTails beta_tails(double a, double b, const UnitPoint& p);

// One-sided Clopper-Pearson bounds on a binomial proportion from k successes in n trials:
//   lower = Beta^{-1}(alpha; k, n - k + 1)      (0 when k = 0)
//   upper = Beta^{-1}(1 - alpha; k + 1, n - k)  (1 when k = n)
// so that P(lower > p) <= alpha and P(upper < p) <= alpha for every true p.
// The returned value is rounded outward (lower down, upper up) by a relative 1e-12 plus
// one ulp, which covers the solver's and the beta function's own error: in exact
// arithmetic it lies on the safe side of the exact quantile.
// `*complement`, when given, receives 1 - bound with full relative precision.
// alpha must lie in [kMinAlphaLook, 1): among subnormal numbers the relative rounding above no
// longer covers the error (a level 6 % above alpha was found at alpha = 2e-323). The public
// level floor is 1e-300 (certify._checks.MIN_ALPHA), which leaves room for alpha / K, K <= 10^4.
constexpr double kMinAlphaLook = 1e-306;
double clopper_pearson_lower(uint64_t k, uint64_t n, double alpha, double* complement = nullptr);
double clopper_pearson_upper(uint64_t k, uint64_t n, double alpha, double* complement = nullptr);

// P(X <= k) for X ~ Binomial(n, p).
double binomial_cdf(uint64_t k, uint64_t n, double p);

// Two-sided binomial test of H0: p = 1/2 with k successes in n trials (scipy's
// binomtest(k, n, 0.5).pvalue): min(1, 2 P(X <= min(k, n - k))). PREDICT abstains when
// this exceeds alpha (Cohen et al. 2019, Alg. PREDICT).
double sign_test_pvalue(uint64_t k, uint64_t n);

}  // namespace certify
