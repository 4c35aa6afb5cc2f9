// Certified radii of randomized smoothing from a lower bound p on the top class's
// probability under noise (p > 1/2; each returns 0 otherwise).
//
// Each takes the complement q = 1 - p, which holds p's precision near 1.
// Results are rounded down (relative 2^-40), so the radius is certified in exact
// arithmetic, not only in the double computation.
#pragma once

#include <cstdint>

namespace certify {

// Gaussian noise N(0, sigma^2 I), l2 radius sigma * Phi^{-1}(p)
// (Cohen, Rosenfeld, Kolter 2019, Thm. 1 with p_B = 1 - p_A).
double gaussian_l2_radius(double sigma, double q);

// Laplace noise with scale lambda per coordinate, l1 radius -lambda * log(2 (1 - p))
// (Yang et al. 2020, "Randomized smoothing of all shapes and sizes", Table 1).
double laplace_l1_radius(double scale, double q);

// Uniform noise on [-lambda, lambda]^d, l1 radius 2 lambda (p - 1/2)
// (Yang et al. 2020, Table 1).
double uniform_l1_radius(double half_width, double q);

}  // namespace certify

#include "sampling/noise_transforms.h"

namespace certify {

// CERTIFY's last step (Cohen et al. 2019, Alg. CERTIFY): from k_A hits of the selected
// class in n samples, p_lower = one-sided Clopper-Pearson lower bound at level alpha, less
// `tail_mass`, and the radius of `kind` at that bound (0 when p_lower <= 1/2: abstain).
//
// tail_mass is the probability, under the ideal noise, of the draws the sampler cannot produce
// (its tails are cut where the uniforms stop, e.g. |z| <= 6.76 for Box-Muller on 2^-33). Coupling
// the sampler with the ideal noise, P_ideal(f = A) >= P_sampler(f = A) - tail_mass, so the
// subtracted bound is a lower bound for the ideal smoothed classifier.
struct SmoothingBound {
  double p_lower;
  double radius;
};
SmoothingBound smoothing_bound(NoiseKind kind, double scale, uint64_t k, uint64_t n, double alpha,
                               double tail_mass);

}  // namespace certify
