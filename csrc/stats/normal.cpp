#include "stats/normal.h"

#include <cmath>
#include <stdexcept>

namespace certify {

namespace {
constexpr double kInvSqrt2 = 0.70710678118654752440084436210485;
constexpr double kInvSqrt2Pi = 0.39894228040143267793994605993438;
// For q below ~1e-280, phi(z) underflows before Halley's steps converge. There, Newton on
// log Q(z) = -z^2/2 - log(z sqrt(2 pi)) + log(1 - 1/z^2 + 3/z^4 - 15/z^6 + 105/z^8)
// (the asymptotic series of Mills' ratio, A&S 26.2.12; at z > 35 its truncation is < 1e-14).
double far_tail_quantile(double q) {
  const double target = std::log(q);
  double z = std::sqrt(-2.0 * target);
  for (int it = 0; it < 50; ++it) {
    const double w = 1.0 / (z * z);
    const double series = 1.0 - w * (1.0 - w * (3.0 - w * (15.0 - w * 105.0)));
    const double f = -0.5 * z * z - std::log(z) - 0.91893853320467274178 + std::log(series) - target;
    const double step = f / (z + 1.0 / z);  // -f / f'(z), with f' ~ -(z + 1/z)
    z += step;
    if (std::fabs(step) <= 1e-16 * z) break;
  }
  return z;
}

}  // namespace

double normal_upper_tail(double z) { return 0.5 * std::erfc(z * kInvSqrt2); }

double normal_upper_quantile(double q) {
  if (!(q > 0.0 && q < 1.0)) throw std::invalid_argument("normal_upper_quantile: q must lie in (0, 1)");
  if (q > 0.5) return -normal_upper_quantile(1.0 - q);  // 1 - q is exact here (Sterbenz)
  if (q == 0.5) return 0.0;
  if (q < 1e-280) return far_tail_quantile(q);
  // Abramowitz & Stegun 26.2.23.
  const double t = std::sqrt(-2.0 * std::log(q));
  double z = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) /
                     (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t);
  // Halley on f(z) = Q(z) - q: f' = -phi(z), f'' = z phi(z), so with u = (Q(z) - q) / phi(z)
  // the step is z <- z + u / (1 - z u / 2).
  for (int it = 0; it < 8; ++it) {
    const double phi = kInvSqrt2Pi * std::exp(-0.5 * z * z);
    if (phi == 0.0) break;
    const double u = (normal_upper_tail(z) - q) / phi;
    const double step = u / (1.0 - 0.5 * z * u);
    z += step;
    if (std::fabs(step) <= 1e-16 * std::fabs(z)) break;
  }
  return z;
}

}  // namespace certify
