// From Philox words to noise coordinates (host and device).
//
// Each Philox block (4 words of 32 bits) gives 4 coordinates of one noisy copy:
//   Gaussian: two Box-Muller pairs, z = sqrt(-2 ln u1) * (cos 2*pi*u2, sin 2*pi*u2) with
//             u1 in (0, 1] (never 0, so ln is finite) and u2 in [0, 1).
//             u1 >= 2^-33, so |z| <= sqrt(66 ln 2) = 6.76: the tail beyond is cut, a mass of
//             P(|Z| > 6.76) = 1.4e-11 per coordinate, far below any alpha in use.
//   Laplace:  the top bit is the sign, the low 31 bits give v in (0, 1] and -ln v ~ Exp(1);
//             a symmetric exponential with scale b is Laplace(0, b).
//   Uniform:  u in (0, 1), centred and scaled: lambda * (2u - 1), an open interval inside
//             [-lambda, lambda].
#pragma once

#include <cmath>
#include <cstdint>

#include "common/philox.h"

namespace certify {

enum class NoiseKind : int { kGaussian = 0, kLaplace = 1, kUniform = 2 };

constexpr double kTwoPow32Inv = 2.3283064365386962890625e-10;  // 2^-32
constexpr double kTwoPow33Inv = 1.16415321826934814453125e-10;  // 2^-33
constexpr double kTwoPow31Inv = 4.656612873077392578125e-10;   // 2^-31
constexpr double kTwoPi = 6.283185307179586476925286766559;

// u in (0, 1]: w * 2^-32 + 2^-33.
template <typename T>
CERTIFY_HOST_DEVICE T uniform_open_closed(uint32_t w) {
  return static_cast<T>(w) * static_cast<T>(kTwoPow32Inv) + static_cast<T>(kTwoPow33Inv);
}

// u in [0, 1).
template <typename T>
CERTIFY_HOST_DEVICE T uniform_closed_open(uint32_t w) {
  return static_cast<T>(w >> 8) * static_cast<T>(1.0 / 16777216.0);
}

// u in (0, 1), symmetric about 1/2: ((w >> 8) + 1/2) * 2^-24.
template <typename T>
CERTIFY_HOST_DEVICE T uniform_open(uint32_t w) {
  return (static_cast<T>(w >> 8) + static_cast<T>(0.5)) * static_cast<T>(1.0 / 16777216.0);
}

// (cos 2 pi u, sin 2 pi u) for u in [0, 1) turns, float: the quadrant q = round(4u) splits off
// exactly (v = u - q/4 in [-1/8, 1/8] is exact), then Taylor polynomials on |x| <= pi/4
// (truncation < 2e-9, below float's 6e-8) and a rotation by q quarter turns. Branch-free,
// so it vectorises, and it needs no general range reduction, unlike sinf / cosf.
// Double precision uses the library functions.
CERTIFY_HOST_DEVICE void cos_sin_turns(float u, float* c, float* s) {
  const float q = std::floor(4.0f * u + 0.5f);
  const float x = (u - 0.25f * q) * static_cast<float>(kTwoPi);
  const float x2 = x * x;
  const float sp = x * (1.0f + x2 * (-1.0f / 6 + x2 * (1.0f / 120 + x2 * (-1.0f / 5040 + x2 * (1.0f / 362880)))));
  const float cp = 1.0f + x2 * (-0.5f + x2 * (1.0f / 24 + x2 * (-1.0f / 720 + x2 * (1.0f / 40320 + x2 * (-1.0f / 3628800)))));
  const int quarter = static_cast<int>(q) & 3;
  const float cc = (quarter & 1) ? sp : cp, ss = (quarter & 1) ? cp : sp;
  *c = (quarter == 1 || quarter == 2) ? -cc : cc;
  *s = (quarter >= 2) ? -ss : ss;
}

CERTIFY_HOST_DEVICE void cos_sin_turns(double u, double* c, double* s) {
  *c = std::cos(kTwoPi * u);
  *s = std::sin(kTwoPi * u);
}

// Box-Muller: one pair of standard normals from two words.
template <typename T>
CERTIFY_HOST_DEVICE void box_muller(uint32_t w_radius, uint32_t w_angle, T* z0, T* z1) {
  const T r = std::sqrt(static_cast<T>(-2) * std::log(uniform_open_closed<T>(w_radius)));
  T c, s;
  cos_sin_turns(uniform_closed_open<T>(w_angle), &c, &s);
  *z0 = r * c;
  *z1 = r * s;
}

// Laplace(0, 1) from one word.
template <typename T>
CERTIFY_HOST_DEVICE T standard_laplace(uint32_t w) {
  const T v = static_cast<T>(w & 0x7FFFFFFFu) * static_cast<T>(kTwoPow31Inv) +
              static_cast<T>(kTwoPow32Inv);
  const T e = -std::log(v);
  return (w & 0x80000000u) ? -e : e;
}

// Uniform on (-1, 1) from one word.
template <typename T>
CERTIFY_HOST_DEVICE T standard_uniform(uint32_t w) {
  return static_cast<T>(2) * uniform_open<T>(w) - static_cast<T>(1);
}

}  // namespace certify
