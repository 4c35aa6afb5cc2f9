#include "stats/binomial.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <stdexcept>
#include <string>

namespace certify {
namespace {

constexpr double kLnSqrt2Pi = 0.91893853320467274178032973640562;  // log(sqrt(2 pi))
constexpr double kLn2Pi = 1.8378770664093454835606594728112;       // log(2 pi)

// stirlerr(n) = log(n!) - log(sqrt(2 pi n) (n/e)^n), the error of Stirling's formula.
// Series in 1/n for n > 15 (Loader 2000, eq. 4: 1/12n - 1/360n^3 + 1/1260n^5 - ...);
// below, lgamma is exact enough (the terms are < 50, so the absolute error is ~1e-14).
double stirlerr(double n) {
  constexpr double s0 = 1.0 / 12, s1 = 1.0 / 360, s2 = 1.0 / 1260, s3 = 1.0 / 1680,
                   s4 = 1.0 / 1188;
  if (n <= 15.0) return std::lgamma(n + 1.0) - (n + 0.5) * std::log(n) + n - kLnSqrt2Pi;
  const double nn = n * n;
  if (n > 500) return (s0 - s1 / nn) / n;
  if (n > 80) return (s0 - (s1 - s2 / nn) / nn) / n;
  if (n > 35) return (s0 - (s1 - (s2 - s3 / nn) / nn) / nn) / n;
  return (s0 - (s1 - (s2 - (s3 - s4 / nn) / nn) / nn) / nn) / n;
}

// bd0(k, m) = k log(k/m) + m - k >= 0, the deviance term of Loader's method, with the
// difference d = k - m passed in, computed by the caller without cancellation.
// Near k = m the series k log(k/m) = 2k (v + v^3/3 + v^5/5 + ...), v = d / (k + m),
// avoids the cancellation of the closed form.
double bd0(double k, double m, double d) {
  if (std::fabs(d) < 0.1 * (k + m)) {
    double v = d / (k + m);
    double s = d * v;
    if (std::fabs(s) < DBL_MIN) return s;
    double ej = 2 * k * v;
    const double v2 = v * v;
    for (int j = 1; j < 1000; ++j) {
      ej *= v2;
      const double s1 = s + ej / (2 * j + 1);
      if (s1 == s) return s1;
      s = s1;
    }
    return s;
  }
  return k * std::log(k / m) - d;
}

double log_x_of(const UnitPoint& p) { return p.x_exact ? std::log(p.x) : std::log1p(-p.y); }
double log_y_of(const UnitPoint& p) { return p.x_exact ? std::log1p(-p.x) : std::log(p.y); }

// log of the Beta(a, b) density x^(a-1) y^(b-1) / B(a, b), for a, b >= 1.
// With K = a - 1, M = b - 1, N = K + M it equals (N + 1) times the binomial probability
// of K successes in N trials at success rate x, which Loader's formula gives as
//   stirlerr(N) - stirlerr(K) - stirlerr(M) - bd0(K, N x) - bd0(M, N y)
//   - log(2 pi K M / N) / 2.
// The two deviances share d = K - N x = -(M - N y), taken from the exact side of p.
double log_beta_density(double a, double b, const UnitPoint& p) {
  const double K = a - 1, M = b - 1, N = K + M;
  if (K == 0 && M == 0) return 0.0;
  if (K == 0) return std::log1p(N) + N * log_y_of(p);
  if (M == 0) return std::log1p(N) + N * log_x_of(p);
  const double d = p.x_exact ? K - N * p.x : (N * p.y - M);
  const double lc = stirlerr(N) - stirlerr(K) - stirlerr(M) - bd0(K, N * p.x, d) -
                    bd0(M, N * p.y, -d);
  const double lf = kLn2Pi + std::log(K) + std::log(M) - std::log(N);
  return std::log1p(N) + lc - 0.5 * lf;
}

// Continued fraction for I_x(a, b) = x^a y^b / (a B(a, b)) * cf(a, b, x)
// (DLMF 8.17.22), evaluated by the modified Lentz method. Converges fast for
// x < (a + 1) / (a + b + 2), in O(sqrt(max(a, b))) terms at worst.
double beta_continued_fraction(double a, double b, double x) {
  constexpr double kTiny = 1e-300;
  constexpr double kEps = 1e-16;
  const double qab = a + b, qap = a + 1, qam = a - 1;
  double c = 1.0;
  double d = 1.0 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1.0 / d;
  double h = d;
  for (long m = 1; m < 100000000; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1.0 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1.0 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1.0 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1.0) < kEps) return h;
  }
  throw std::runtime_error("incomplete beta continued fraction did not converge");
}

// P(Beta(a, b) > x) = P(Binomial(a + b - 1, x) <= a - 1) for integer a >= 1: the sum of
// a binomial probabilities, the largest (j = a - 1, below the mode when x is past the
// switch point) by Loader's formula and the rest by the ratio
// P(j - 1) / P(j) = j y / ((N - j + 1) x), stopping once the terms no longer count.
// Used where x is the exact side and small: relative error ~ a * 1e-16.
double binomial_head_sum(double a, double b, const UnitPoint& p) {
  const double N = a + b - 1;
  // P(j = a - 1) = density of Beta(a, b + 1) at x, over N + 1 (see log_beta_density).
  double term = std::exp(log_beta_density(a, b + 1, p)) / (N + 1);
  double sum = 0.0;
  const double ratio_scale = p.y / p.x;
  for (double j = a - 1; j >= 0; j -= 1) {
    sum += term;
    if (term < 1e-18 * sum) break;
    term *= j * ratio_scale / (N - j + 1);
  }
  return sum;
}

void check_unit_point(const UnitPoint& p) {
  if (!(p.x >= 0.0 && p.x <= 1.0 && p.y >= 0.0 && p.y <= 1.0))
    throw std::invalid_argument("beta_tails: x must lie in [0, 1]");
}

// A monotone scalar equation on (0, 1): log tail(t) = log target, solved by Newton
// steps on the log tail, safeguarded by bisection inside a shrinking bracket.
struct TailEquation {
  double a, b;
  bool t_is_x;      // t is the exact x (else the exact y)
  bool lower_tail;  // which tail of Beta(a, b) at the point must equal the target
  double log_target;

  UnitPoint point(double t) const { return t_is_x ? UnitPoint::from_x(t) : UnitPoint::from_y(t); }
  // Returns log tail(t) - log target and its derivative in t.
  void eval(double t, double* f, double* df) const {
    const UnitPoint p = point(t);
    const BetaTails tails = beta_tails(a, b, p);
    const double tail = lower_tail ? tails.lower : tails.upper;
    *f = (tail > 0 ? std::log(tail) : -INFINITY) - log_target;
    // d/dx I_x = density; dx/dt = +1 (t = x) or -1 (t = y); the upper tail flips again.
    const double sign = (t_is_x ? 1.0 : -1.0) * (lower_tail ? 1.0 : -1.0);
    *df = tail > 0 ? sign * std::exp(log_beta_density(a, b, p) - std::log(tail)) : 0.0;
  }
  // Increasing in t?
  bool increasing() const { return t_is_x == lower_tail; }
};

double solve_tail_equation(const TailEquation& eq, double t0) {
  double lo = 0.0, hi = 1.0;  // f(lo) and f(hi) bracket the root by monotonicity
  double t = std::min(std::max(t0, 1e-300), 1.0 - 1e-16);
  const bool inc = eq.increasing();
  for (int it = 0; it < 2000; ++it) {
    double f, df;
    eq.eval(t, &f, &df);
    if (f == 0.0) return t;
    // Shrink the bracket: for an increasing f, f < 0 means the root is above t.
    if ((f < 0) == inc) lo = t; else hi = t;
    double next;
    if (std::isfinite(f) && df != 0.0 && std::isfinite(df)) {
      next = t - f / df;
    } else {
      next = lo;  // force bisection below
    }
    if (!(next > lo && next < hi)) {
      // Bisect, geometrically when the bracket spans orders of magnitude.
      next = (lo > 0 && hi / lo > 16) ? std::sqrt(lo * hi) : (lo == 0 ? hi / 16 : 0.5 * (lo + hi));
      if (lo == 0 && hi < 1e-300) return 0.0;
    }
    if (std::fabs(next - t) <= 4e-16 * t || hi - lo <= 4e-16 * hi) return next;
    t = next;
  }
  throw std::runtime_error("Beta quantile solver did not converge");
}

// Beta quantile with the target tail: lower_tail -> I_x(a, b) = target, else
// 1 - I_x(a, b) = target. Iterates on the smaller side of (x, 1 - x) near the mean, and
// returns the exact side through *t_out / *t_is_x.
void beta_quantile(double a, double b, double target, bool lower_tail, double* t_out,
                   bool* t_is_x) {
  const double mean = a / (a + b);
  const double sd = std::sqrt(a * b / ((a + b) * (a + b) * (a + b + 1)));
  // Normal-approximation start: the tail's mass sits on the side of the mean it names.
  const double z = std::sqrt(-2.0 * std::log(std::min(target, 0.5)));
  const double x0 = lower_tail ? mean - z * sd : mean + z * sd;
  TailEquation eq{a, b, mean <= 0.5, lower_tail, std::log(target)};
  double t0 = eq.t_is_x ? x0 : 1.0 - x0;
  const double small = eq.t_is_x ? mean : 1.0 - mean;
  if (!(t0 > 0.0 && t0 < 1.0)) t0 = 0.5 * small;
  double t = solve_tail_equation(eq, t0);
  if (t > 0.5) {
    // The root lies on the other side of 1/2 than the mean (small a or b, extreme target):
    // solve again in the side that is small at the root, which carries its precision.
    eq.t_is_x = !eq.t_is_x;
    t = solve_tail_equation(eq, 1.0 - t);
  }
  *t_out = t;
  *t_is_x = eq.t_is_x;
}

void check_counts(uint64_t k, uint64_t n, double alpha, const char* who) {
  if (n == 0) throw std::invalid_argument(std::string(who) + ": n must be at least 1");
  if (k > n)
    throw std::invalid_argument(std::string(who) + ": k = " + std::to_string(k) +
                                " exceeds n = " + std::to_string(n));
  if (!(alpha >= kMinAlphaLook && alpha < 1.0))
    throw std::invalid_argument(std::string(who) + ": alpha must lie in [1e-306, 1)");
}

// Outward rounding of a bound given by its exact side t: move t by a relative 1e-12
// (the solver's and I_x's error are ~1e-14) and one ulp, in the direction `up`.
double widen(double t, bool up) {
  return up ? std::nextafter(t * (1.0 + 1e-12), INFINITY) : std::nextafter(t * (1.0 - 1e-12), 0.0);
}

// Turns the solved exact side into (bound, complement), with bound moved in the direction
// `bound_up` (false: the bound may only decrease) and the complement consistent with it.
double finish_bound(double t, bool t_is_x, bool bound_up, double* complement) {
  double bound, comp;
  if (t_is_x) {
    bound = std::min(1.0, widen(t, bound_up));
    comp = std::nextafter(1.0 - bound, bound_up ? 0.0 : INFINITY);
  } else {
    comp = std::min(1.0, widen(t, !bound_up));
    bound = std::nextafter(1.0 - comp, bound_up ? INFINITY : 0.0);
  }
  bound = std::min(1.0, std::max(0.0, bound));
  if (complement) *complement = std::min(1.0, std::max(0.0, comp));
  return bound;
}

}  // namespace

BetaTails beta_tails(double a, double b, const UnitPoint& p) {
  if (!(a >= 1.0 && b >= 1.0) || !std::isfinite(a) || !std::isfinite(b))
    throw std::invalid_argument("beta_tails: a and b must be finite and >= 1");
  check_unit_point(p);
  if (p.x == 0.0) return {0.0, 1.0};
  if (p.y == 0.0) return {1.0, 0.0};
  // x^a y^b / B(a, b) = x y * density(x).
  const double log_pref = log_beta_density(a, b, p) + log_x_of(p) + log_y_of(p);
  // The continued fraction converges fast below its switch point (a+1)/(a+b+2); above it,
  // the symmetric one in (b, a, y) does. But a fraction in the inexact side is
  // ill-conditioned when that side is ~1 under a huge exponent (y = fl(1 - x) with b >> a:
  // its terms cancel to ~1e-16 * b / a). There, for integer a, the tail past the switch is
  // a binomial sum of a < b / 10^4 terms in the exact side instead.
  const double x_switch = (a + 1.0) / (a + b + 2.0);
  if (p.x >= x_switch && p.x_exact && b > 1e4 * a && a == std::floor(a)) {
    const double upper = binomial_head_sum(a, b, p);
    return {1.0 - upper, upper};
  }
  if (p.x < x_switch && !p.x_exact && a > 1e4 * b && b == std::floor(b)) {
    const double lower = binomial_head_sum(b, a, UnitPoint{p.y, p.x, true});
    return {lower, 1.0 - lower};
  }
  if (p.x < x_switch) {
    const double lower = std::exp(log_pref) * beta_continued_fraction(a, b, p.x) / a;
    return {lower, 1.0 - lower};
  }
  const double upper = std::exp(log_pref) * beta_continued_fraction(b, a, p.y) / b;
  return {1.0 - upper, upper};
}

double clopper_pearson_lower(uint64_t k, uint64_t n, double alpha, double* complement) {
  check_counts(k, n, alpha, "clopper_pearson_lower");
  if (k == 0) {
    if (complement) *complement = 1.0;
    return 0.0;
  }
  double t;
  bool t_is_x;
  beta_quantile(static_cast<double>(k), static_cast<double>(n - k + 1), alpha, true, &t, &t_is_x);
  return finish_bound(t, t_is_x, /*bound_up=*/false, complement);
}

double clopper_pearson_upper(uint64_t k, uint64_t n, double alpha, double* complement) {
  check_counts(k, n, alpha, "clopper_pearson_upper");
  if (k == n) {
    if (complement) *complement = 0.0;
    return 1.0;
  }
  double t;
  bool t_is_x;
  beta_quantile(static_cast<double>(k + 1), static_cast<double>(n - k), alpha, false, &t, &t_is_x);
  return finish_bound(t, t_is_x, /*bound_up=*/true, complement);
}

double binomial_cdf(uint64_t k, uint64_t n, double p) {
  if (!(p >= 0.0 && p <= 1.0)) throw std::invalid_argument("binomial_cdf: p must lie in [0, 1]");
  if (k >= n) return 1.0;
  // P(X <= k) = I_{1-p}(n - k, k + 1); p is the exact side.
  return beta_tails(static_cast<double>(n - k), static_cast<double>(k + 1), UnitPoint::from_y(p)).lower;
}

double sign_test_pvalue(uint64_t k, uint64_t n) {
  if (k > n)
    throw std::invalid_argument("sign_test_pvalue: k = " + std::to_string(k) + " exceeds n = " +
                                std::to_string(n));
  const uint64_t j = std::min(k, n - k);
  if (2 * j == n) return 1.0;  // includes n = 0
  return std::min(1.0, 2.0 * binomial_cdf(j, n, 0.5));
}

}  // namespace certify
