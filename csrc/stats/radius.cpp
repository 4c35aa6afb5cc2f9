#include "stats/radius.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "stats/normal.h"

namespace certify {

namespace {

void check(double scale, double q, const char* who) {
  if (!(scale > 0.0) || !std::isfinite(scale))
    throw std::invalid_argument(std::string(who) + ": the noise scale must be finite and > 0");
  if (!(q >= 0.0 && q <= 1.0)) throw std::invalid_argument(std::string(who) + ": q must lie in [0, 1]");
}

// Rounds a computed radius down past its floating-point error: a relative 2^-40 (the
// formulas are accurate to a few ulps) and an absolute 2^-48 * scale (near p = 1/2 the
// radius is a difference of numbers of order 1).
double certified_down(double r, double scale) {
  const double down = r - std::fabs(r) * 0x1p-40 - scale * 0x1p-48;
  return down > 0.0 ? down : 0.0;
}

}  // namespace

double gaussian_l2_radius(double sigma, double q) {
  check(sigma, q, "gaussian_l2_radius");
  if (q >= 0.5) return 0.0;
  if (q == 0.0) return INFINITY;
  return certified_down(sigma * normal_upper_quantile(q), sigma);
}

double laplace_l1_radius(double scale, double q) {
  check(scale, q, "laplace_l1_radius");
  if (q >= 0.5) return 0.0;
  if (q == 0.0) return INFINITY;
  return certified_down(-scale * std::log(2.0 * q), scale);
}

double uniform_l1_radius(double half_width, double q) {
  check(half_width, q, "uniform_l1_radius");
  if (q >= 0.5) return 0.0;
  return certified_down(half_width * (1.0 - 2.0 * q), half_width);
}

}  // namespace certify

#include "stats/binomial.h"

namespace certify {

SmoothingBound smoothing_bound(NoiseKind kind, double scale, uint64_t k, uint64_t n, double alpha,
                               double tail_mass) {
  if (!(tail_mass >= 0.0 && tail_mass < 1.0))
    throw std::invalid_argument("smoothing_bound: tail_mass must lie in [0, 1)");
  double q;
  double p_lower = clopper_pearson_lower(k, n, alpha, &q);
  if (tail_mass > 0.0) {  // q + tail_mass, rounded up; p_lower = 1 - q, rounded down
    q = std::min(1.0, std::nextafter(q + tail_mass, INFINITY));
    p_lower = std::max(0.0, std::nextafter(1.0 - q, 0.0));
  }
  if (!(p_lower > 0.5)) return {p_lower, 0.0};
  switch (kind) {
    case NoiseKind::kGaussian: return {p_lower, gaussian_l2_radius(scale, q)};
    case NoiseKind::kLaplace: return {p_lower, laplace_l1_radius(scale, q)};
    case NoiseKind::kUniform: return {p_lower, uniform_l1_radius(scale, q)};
  }
  throw std::invalid_argument("smoothing_bound: unknown noise kind");
}

}  // namespace certify
