// Float32 rounding constants and directed neighbours shared by the bound engine's steps. The
// soundness argument these serve (Higham's gamma_n bounds on sums and dot products, outward
// rounding of every concretised bound) is written out in certify/bounds/reference.py.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace certify {
namespace bounds {

constexpr double kU = 1.0 / 16777216.0;                // 2^-24, float32 unit roundoff
constexpr double kU64 = 1.1102230246251565404236e-16;  // 2^-53
constexpr float kUnderflow = 7.174648137343064e-43f;   // 2^-140 per term (Higham's eta is 2^-149)

inline double gamma(int64_t n) { return n * kU / (1 - n * kU); }
inline double gamma64(int64_t n) { return n * kU64 / (1 - n * kU64); }

// The neighbouring floats, inline (std::nextafter is an out-of-line libm call, and these run once
// or more per bound). Exact for finite values; +-inf and NaN are returned unchanged.
inline float next_up(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  // +1 in the bit pattern for positive values, -1 for negative ones (towards zero).
  uint32_t up = bits + 1 - ((bits >> 31) << 1);
  float r;
  std::memcpy(&r, &up, sizeof r);
  r = (v == 0.0f) ? 1.40129846e-45f : r;
  return (v < INFINITY) ? r : v;  // +inf and NaN stay
}
inline float next_down(float v) { return -next_up(-v); }
inline float f32_down(double v) { return next_down(static_cast<float>(v)); }
inline float f32_up(double v) { return next_up(static_cast<float>(v)); }

}  // namespace bounds
}  // namespace certify
