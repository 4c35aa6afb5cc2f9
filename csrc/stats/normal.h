// The standard normal distribution: upper tail and its inverse, to full double precision.
#pragma once

namespace certify {

// Q(z) = P(Z > z) = erfc(z / sqrt 2) / 2.
double normal_upper_tail(double z);

// The z with Q(z) = q, for q in (0, 1): Phi^{-1}(1 - q), without forming 1 - q.
// Abramowitz & Stegun 26.2.23 as a start (error < 4.5e-4), then Halley steps on Q,
// which converge cubically to the precision of erfc.
double normal_upper_quantile(double q);

}  // namespace certify
