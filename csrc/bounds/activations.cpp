// Smooth activations (see activations.h and certify/bounds/activations.py).
#include "bounds/activations.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "bounds/rounding.h"

namespace certify {
namespace bounds {
namespace {

constexpr double kRel = 1.4551915228366852e-11;  // 2^-36
constexpr double kAbs = 9.332636185032189e-302;  // 2^-1000
constexpr int kBisectionSteps = 50;
constexpr double kX0Range = 64.0;
constexpr double kInf = std::numeric_limits<double>::infinity();

enum Curvature { kConvex = 1, kConcave = -1, kLinear = 0, kUnknown = 2 };

struct Piece {
  double start, end;
  int curvature;
};

// Brackets of the inflection points no double holds (checked with mpmath in the tests).
constexpr double kSiluInflection[2] = {2.39935, 2.39936};
constexpr double kGeluInflection[2] = {1.41421, 1.41422};

struct Table {
  Piece pieces[5];
  int count;
  double lipschitz;
  double limit_lo, limit_hi;  // f(-inf), f(+inf)
  bool has_minimum;
  double min_lo, min_hi, f_min;
};

Table symmetric(int outer, int inner, const double* bracket, double lipschitz, double min_lo, double min_hi,
                double f_min) {
  const double lo = bracket[0], hi = bracket[1];
  return Table{{{-kInf, -hi, outer}, {-hi, -lo, kUnknown}, {-lo, lo, inner}, {lo, hi, kUnknown}, {hi, kInf, outer}},
               5, lipschitz, 0.0, kInf, true, min_lo, min_hi, f_min};
}

Table table(const ActivationFn& fn) {
  switch (fn.kind) {
    case Smooth::kSigmoid:
      return Table{{{-kInf, 0.0, kConvex}, {0.0, kInf, kConcave}}, 2, 0.25, 0.0, 1.0, false, 0, 0, 0};
    case Smooth::kTanh:
      return Table{{{-kInf, 0.0, kConvex}, {0.0, kInf, kConcave}}, 2, 1.0, -1.0, 1.0, false, 0, 0, 0};
    case Smooth::kSoftplus:
      return Table{{{-kInf, kInf, kConvex}}, 1, 1.0, 0.0, kInf, false, 0, 0, 0};
    case Smooth::kElu:
      return Table{{{-kInf, 0.0, kConvex}, {0.0, kInf, kLinear}}, 2, std::max(1.0, fn.alpha), -fn.alpha, kInf, false,
                   0, 0, 0};
    case Smooth::kSilu:
      return symmetric(kConcave, kConvex, kSiluInflection, 1.3, -1.2784646, -1.2784645, -0.27846455);
    case Smooth::kGelu:
      return symmetric(kConcave, kConvex, kGeluInflection, 1.3, -0.75179153, -0.75179152, -0.16997121);
  }
  return Table{};
}

double sigmoid(double x) { return 1 / (1 + std::exp(-x)); }
double phi_cdf(double x) { return 0.5 * std::erfc(-x * std::sqrt(0.5)); }

double f(const ActivationFn& fn, double x) {
  switch (fn.kind) {
    case Smooth::kSigmoid:
      return sigmoid(x);
    case Smooth::kTanh:
      return std::tanh(x);
    case Smooth::kSoftplus:  // max(x, 0) + log(1 + e^-|x|)
      return std::max(x, 0.0) + std::log1p(std::exp(-std::fabs(x)));
    case Smooth::kElu:
      return x > 0 ? x : fn.alpha * std::expm1(std::min(x, 0.0));
    case Smooth::kSilu:
      return x * sigmoid(x);
    case Smooth::kGelu:
      return x * phi_cdf(x);
  }
  return 0;
}

double df(const ActivationFn& fn, double x) {
  switch (fn.kind) {
    case Smooth::kSigmoid:
      return sigmoid(x) * sigmoid(-x);
    case Smooth::kTanh: {
      const double c = std::cosh(x);
      return 1 / (c * c);
    }
    case Smooth::kSoftplus:
      return sigmoid(x);
    case Smooth::kElu:
      return x > 0 ? 1.0 : fn.alpha * std::exp(std::min(x, 0.0));
    case Smooth::kSilu:
      return sigmoid(x) * (1 + x * sigmoid(-x));
    case Smooth::kGelu:
      return phi_cdf(x) + x * std::exp(-0.5 * x * x) * (1 / std::sqrt(2 * M_PI));
  }
  return 0;
}

// f(x) with its limits at -+inf
double value(const ActivationFn& fn, const Table& T, double x) {
  if (x == -kInf) return T.limit_lo;
  if (x == kInf) return T.limit_hi;
  return f(fn, x);
}

double solve_derivative(const ActivationFn& fn, double a, double p, double q, bool increasing) {
  double lo = std::clamp(p, -kX0Range, kX0Range), hi = std::clamp(q, -kX0Range, kX0Range);
  for (int i = 0; i < kBisectionSteps; ++i) {
    const double mid = 0.5 * (lo + hi);
    const bool below = df(fn, mid) < a;
    if (increasing ? below : !below)
      lo = mid;
    else
      hi = mid;
  }
  return std::min(std::max(0.5 * (lo + hi), p), q);
}

// min and max of f(x) - a x over [l, u] (finite, l < u), the margin included when sound.
void intercepts(const ActivationFn& fn, const Table& T, double l, double u, double a, bool sound, double* out_lo,
                double* out_hi) {
  double lo = kInf, hi = -kInf, f_size = 0;
  auto g = [&](double x) {
    const double fx = f(fn, x);
    f_size = std::max(f_size, std::fabs(fx));
    return fx - a * x;
  };
  for (int k = 0; k < T.count; ++k) {
    const Piece& P = T.pieces[k];
    const double p = std::max(l, P.start), q = std::min(u, P.end);
    if (!(p <= q)) continue;
    double piece_lo, piece_hi;
    if (P.curvature == kUnknown) {
      const double centre = 0.5 * (p + q), gc = g(centre), spread = (T.lipschitz + std::fabs(a)) * (q - p) * 0.5;
      piece_lo = gc - spread;
      piece_hi = gc + spread;
    } else {
      const double gp = g(p), gq = g(q);
      piece_lo = std::min(gp, gq);
      piece_hi = std::max(gp, gq);
      if (P.curvature != kLinear) {
        const double x0 = solve_derivative(fn, a, p, q, P.curvature == kConvex);
        const double g0 = g(x0), d = df(fn, x0) - a;
        if (P.curvature == kConvex)
          piece_lo = g0 + std::min(d * (p - x0), d * (q - x0));
        else
          piece_hi = g0 + std::max(d * (p - x0), d * (q - x0));
      }
    }
    lo = std::min(lo, piece_lo);
    hi = std::max(hi, piece_hi);
  }
  lo -= fn.lower_margin;
  if (sound) {
    const double size = f_size + std::fabs(a) * std::max(std::fabs(l), std::fabs(u)) +
                        (T.lipschitz + std::fabs(a)) * (u - l);
    const double margin = 8 * kRel * size + kAbs;
    lo -= margin;
    hi += margin;
  }
  *out_lo = lo;
  *out_hi = hi;
}

}  // namespace

void activation_range(const ActivationFn& fn, float l, float u, bool sound, float* out_lo, float* out_hi) {
  const Table T = table(fn);
  const double fl = value(fn, T, l), fu = value(fn, T, u);
  double lo = fl, hi = fu;
  if (T.has_minimum) {
    hi = std::max(fl, fu);
    lo = u <= T.min_lo ? fu : (l >= T.min_hi ? fl : T.f_min);
  }
  if (!sound) {
    *out_lo = static_cast<float>(lo - fn.lower_margin);
    *out_hi = static_cast<float>(hi);
    return;
  }
  // the widening is relative to f's value as computed, before the margin (which can cancel it)
  *out_lo = f32_down(lo - (kRel * std::fabs(lo) + kAbs) - fn.lower_margin);
  *out_hi = f32_up(hi + (kRel * std::fabs(hi) + kAbs));
}

Lines activation_relaxation(const ActivationFn& fn, float l, float u, bool sound) {
  Lines lines;
  if (!(l < u) || !std::isfinite(l) || !std::isfinite(u)) {
    lines.a_l = lines.a_u = 0;
    activation_range(fn, l, u, sound, &lines.b_l, &lines.b_u);
    return lines;
  }
  const Table T = table(fn);
  const double l64 = l, u64 = u, mid = 0.5 * (l64 + u64);
  const double candidates[4] = {(f(fn, u64) - f(fn, l64)) / (u64 - l64), df(fn, l64), df(fn, mid), df(fn, u64)};
  double best_lo_at = 0, best_hi_at = 0, best_lo = 0, best_hi = 0;
  float slope_lo = 0, slope_hi = 0;
  for (int k = 0; k < 4; ++k) {
    const float a32 = static_cast<float>(candidates[k]);
    const double a = a32;
    double b_lo, b_hi;
    intercepts(fn, T, l64, u64, a, sound, &b_lo, &b_hi);
    const double at_lo = a * mid + b_lo, at_hi = a * mid + b_hi;
    if (k == 0 || at_lo > best_lo_at) {  // the tightest line at the midpoint (the least area)
      best_lo_at = at_lo;
      best_lo = b_lo;
      slope_lo = a32;
    }
    if (k == 0 || at_hi < best_hi_at) {
      best_hi_at = at_hi;
      best_hi = b_hi;
      slope_hi = a32;
    }
  }
  lines.a_l = slope_lo;
  lines.a_u = slope_hi;
  lines.b_l = sound ? f32_down(best_lo) : static_cast<float>(best_lo);
  lines.b_u = sound ? f32_up(best_hi) : static_cast<float>(best_hi);
  return lines;
}

}  // namespace bounds
}  // namespace certify
