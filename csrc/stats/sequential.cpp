#include "stats/sequential.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "stats/binomial.h"
#include "stats/radius.h"

namespace certify {

std::vector<uint64_t> look_schedule(uint64_t first, double growth, uint64_t max_samples) {
  if (first < 1) throw std::invalid_argument("look_schedule: the first look needs >= 1 sample");
  if (!(growth > 1.0) || !std::isfinite(growth)) throw std::invalid_argument("look_schedule: growth must be > 1");
  if (max_samples < first) throw std::invalid_argument("look_schedule: max_samples must be >= the first look");
  std::vector<uint64_t> looks{first};
  while (looks.back() < max_samples) {
    const double next = std::ceil(static_cast<double>(looks.back()) * growth);
    const uint64_t step = next >= static_cast<double>(max_samples) ? max_samples : static_cast<uint64_t>(next);
    looks.push_back(std::min(max_samples, std::max(looks.back() + 1, step)));
  }
  return looks;
}

namespace {

// The radius an upper bound p_upper on the hit rate would give (no rounding needed: it only
// decides when to stop looking, never what is certified).
double optimistic_radius(NoiseKind kind, double scale, uint64_t k, uint64_t n, double alpha_look) {
  double q_upper;  // 1 - p_upper
  clopper_pearson_upper(k, n, alpha_look, &q_upper);
  switch (kind) {
    case NoiseKind::kGaussian: return gaussian_l2_radius(scale, q_upper);
    case NoiseKind::kLaplace: return laplace_l1_radius(scale, q_upper);
    case NoiseKind::kUniform: return uniform_l1_radius(scale, q_upper);
  }
  throw std::invalid_argument("unknown noise kind");
}

void check_counts(uint64_t k, uint64_t n) {
  if (n < 1 || k > n) throw std::invalid_argument("sequential look: need 0 <= k <= n and n >= 1");
}

}  // namespace

Look target_radius_look(NoiseKind kind, double scale, uint64_t k, uint64_t n, double alpha_look, double tail_mass,
                        double target, bool last) {
  check_counts(k, n);
  if (!(target >= 0.0) || !std::isfinite(target)) throw std::invalid_argument("target radius must be finite, >= 0");
  const SmoothingBound b = smoothing_bound(kind, scale, k, n, alpha_look, tail_mass);
  if (b.p_lower > 0.5 && b.radius >= target) return {Decision::kCertified, b.p_lower, b.radius};
  if (last || optimistic_radius(kind, scale, k, n, alpha_look) < target)
    return {Decision::kNotCertified, b.p_lower, b.radius};
  return {Decision::kContinue, b.p_lower, b.radius};
}

Look budget_look(NoiseKind kind, double scale, uint64_t k, uint64_t n, uint64_t n_max, double alpha_look,
                 double tail_mass, double tolerance, bool last) {
  check_counts(k, n);
  if (n_max < n) throw std::invalid_argument("budget_look: n_max must be >= n");
  if (!(tolerance >= 0.0)) throw std::invalid_argument("budget_look: tolerance must be >= 0");
  const SmoothingBound now = smoothing_bound(kind, scale, k, n, alpha_look, tail_mass);
  const Decision stop = now.p_lower > 0.5 ? Decision::kCertified : Decision::kNotCertified;
  if (last) return {stop, now.p_lower, now.radius};
  // Hits at the final look if the hit rate stayed at today's estimate k / n: the radius the
  // budget would most likely buy.
  const auto final_k = static_cast<uint64_t>(
      std::min(static_cast<double>(n_max), std::floor(static_cast<double>(k) / static_cast<double>(n) * n_max)));
  const SmoothingBound best = smoothing_bound(kind, scale, final_k, n_max, alpha_look, tail_mass);
  if (best.radius - now.radius <= tolerance) return {stop, now.p_lower, now.radius};
  return {Decision::kContinue, now.p_lower, now.radius};
}

}  // namespace certify
