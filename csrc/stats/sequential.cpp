#include "stats/sequential.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "stats/binomial.h"
#include "stats/normal.h"
#include "stats/radius.h"

namespace certify {

namespace {

void check_budget(uint64_t max_samples) {
  if (max_samples > kSequentialMaxSamples)
    throw std::invalid_argument("sequential certification draws at most 10^9 samples per input");
}

}  // namespace

std::vector<uint64_t> look_schedule(uint64_t first, double growth, uint64_t max_samples) {
  if (first < 1) throw std::invalid_argument("look_schedule: the first look needs >= 1 sample");
  if (!(growth > 1.0) || !std::isfinite(growth)) throw std::invalid_argument("look_schedule: growth must be > 1");
  if (max_samples < first) throw std::invalid_argument("look_schedule: max_samples must be >= the first look");
  check_budget(max_samples);
  std::vector<uint64_t> looks{first};
  while (looks.back() < max_samples) {
    const double next = std::ceil(static_cast<double>(looks.back()) * growth);
    const uint64_t step = next >= static_cast<double>(max_samples) ? max_samples : static_cast<uint64_t>(next);
    looks.push_back(std::min(max_samples, std::max(looks.back() + 1, step)));
    if (looks.size() > kMaxLooks)
      throw std::invalid_argument("look_schedule: more than 10^4 looks; raise the first look or the growth");
  }
  return looks;
}

namespace {

const double kEMinusOne = std::expm1(1.0);  // the spending function ln(1 + (e - 1) t)

double radius_at(NoiseKind kind, double scale, double q) {
  switch (kind) {
    case NoiseKind::kGaussian: return gaussian_l2_radius(scale, q);
    case NoiseKind::kLaplace: return laplace_l1_radius(scale, q);
    case NoiseKind::kUniform: return uniform_l1_radius(scale, q);
  }
  throw std::invalid_argument("unknown noise kind");
}

// The radius an upper bound p_upper on the hit rate would give (no rounding needed: it only
// decides when to stop looking, never what is certified).
double optimistic_radius(NoiseKind kind, double scale, uint64_t k, uint64_t n, double alpha_look) {
  double q_upper;  // 1 - p_upper
  clopper_pearson_upper(k, n, alpha_look, &q_upper);
  return radius_at(kind, scale, q_upper);
}

void check_counts(uint64_t k, uint64_t n) {
  if (n < 1 || k > n) throw std::invalid_argument("sequential look: need 0 <= k <= n and n >= 1");
}

// Bin(d, p) on the window where it exceeds 1e-45 of its mode, normalised by the window's own sum
// (so each kept value is >= its true probability), and `lost` >= the true mass outside the window.
struct Increment {
  uint64_t first = 0;
  std::vector<double> pmf;
  double lost = 0.0;
};

Increment binomial_window(uint64_t d, double p, double q) {
  Increment inc;
  const double ratio = p / q;  // pmf(k + 1) / pmf(k) = (d - k) / (k + 1) * p / q
  const auto mode = static_cast<uint64_t>(std::min(static_cast<double>(d), std::floor((d + 1.0) * p)));
  constexpr double kCut = 1e-45;
  std::vector<double> up{1.0}, down;  // up: mode, mode + 1, ...; down: mode - 1, mode - 2, ...
  double tail_up = 0.0, tail_down = 0.0;
  for (uint64_t k = mode; k < d; ++k) {
    const double step = static_cast<double>(d - k) / static_cast<double>(k + 1) * ratio;
    const double next = up.back() * step;
    if (next < kCut) {  // log-concave: later ratios are smaller, so the tail is below a geometric sum
      tail_up = step < 1.0 ? next / (1.0 - step) : INFINITY;
      break;
    }
    up.push_back(next);
  }
  for (uint64_t k = mode; k > 0; --k) {
    const double step = static_cast<double>(k) / static_cast<double>(d - k + 1) / ratio;  // pmf(k-1)/pmf(k)
    const double next = (down.empty() ? 1.0 : down.back()) * step;
    if (next < kCut) {
      tail_down = step < 1.0 ? next / (1.0 - step) : INFINITY;
      break;
    }
    down.push_back(next);
  }
  double sum = 0.0;
  for (double v : up) sum += v;
  for (double v : down) sum += v;
  inc.first = mode - down.size();
  inc.pmf.assign(down.rbegin(), down.rend());
  inc.pmf.insert(inc.pmf.end(), up.begin(), up.end());
  for (double& v : inc.pmf) v /= sum;
  inc.lost = (tail_up + tail_down) / sum;
  return inc;
}

}  // namespace

double target_complement(NoiseKind kind, double scale, double target) {
  if (!(target >= 0.0) || !std::isfinite(target)) throw std::invalid_argument("target radius must be finite, >= 0");
  if (!(scale > 0.0) || !std::isfinite(scale)) throw std::invalid_argument("the noise scale must be finite and > 0");
  double q;  // the complement where the radius equals target, before rounding
  switch (kind) {
    case NoiseKind::kGaussian: q = normal_upper_tail(target / scale); break;  // radius sigma Phi^-1(1 - q)
    case NoiseKind::kLaplace: q = 0.5 * std::exp(-target / scale); break;     // -lambda log(2q)
    case NoiseKind::kUniform: q = 0.5 - target / (2.0 * scale); break;        // 2 lambda (1/2 - q)
    default: throw std::invalid_argument("unknown noise kind");
  }
  // Shrunk until the sound (rounded-down) radius reaches the target: the exact radius, which falls
  // as q grows, then exceeds it for every smaller q too.
  q = std::min(q, 0.5);
  for (int i = 0; i < 30 && q > 0.0; ++i) {
    q *= 1.0 - std::ldexp(1.0, -30 + i);
    if (q < 0.5 && radius_at(kind, scale, q) >= target) return q;
  }
  return 0.0;
}

std::vector<uint64_t> exact_critical_counts(double q_null, const std::vector<uint64_t>& looks, double alpha) {
  if (!(alpha > 0.0 && alpha < 1.0)) throw std::invalid_argument("exact boundary: alpha must lie in (0, 1)");
  if (looks.empty() || looks.size() > kMaxLooks) throw std::invalid_argument("exact boundary: 1 to 10^4 looks");
  for (size_t j = 0; j < looks.size(); ++j)
    if (looks[j] < 1 || (j > 0 && looks[j] <= looks[j - 1]))
      throw std::invalid_argument("exact boundary: the looks must increase from >= 1");
  if (looks.back() > kExactMaxSamples)
    throw std::invalid_argument("the exact boundary designs for max_samples up to 10^7; use the Bonferroni boundary");
  std::vector<uint64_t> critical(looks.size());
  if (!(q_null > 0.0)) {  // nothing certifies the target
    for (size_t j = 0; j < looks.size(); ++j) critical[j] = looks[j] + 1;
    return critical;
  }
  const double q = std::min(q_null, 1.0) * (1.0 - 1e-12);
  const double p = 1.0 - q;
  const double budget = alpha * (1.0 - 1e-6);
  const double n_last = static_cast<double>(looks.back());
  std::vector<double> dist{1.0}, next;  // dist[i] = P(hits = lo + i, not yet crossed) (upper bounds)
  uint64_t lo = 0, previous = 0;
  double spent = 0.0;
  for (size_t j = 0; j < looks.size(); ++j) {
    const Increment inc = binomial_window(looks[j] - previous, p, q);
    previous = looks[j];
    spent += inc.lost;  // paths no longer followed: counted as crossing
    next.assign(dist.empty() ? 0 : dist.size() + inc.pmf.size() - 1, 0.0);
    for (size_t a = 0; a < dist.size(); ++a) {
      const double mass = dist[a];
      if (mass == 0.0) continue;
      double* out = next.data() + a;
      for (size_t b = 0; b < inc.pmf.size(); ++b) out[b] += mass * inc.pmf[b];
    }
    lo += inc.first;
    dist.swap(next);
    // Drop the lowest survivors while their total stays below 1e-40 (counted as spent).
    size_t cut = 0;
    double dropped = 0.0;
    while (cut < dist.size() && dropped + dist[cut] < 1e-40) dropped += dist[cut++];
    if (cut > 0) {
      spent += dropped;
      dist.erase(dist.begin(), dist.begin() + static_cast<std::ptrdiff_t>(cut));
      lo += cut;
    }
    // The boundary: the fewest hits whose survivors' upper tail fits what this look may spend.
    const double t = static_cast<double>(looks[j]) / n_last;
    const double allowance = budget * std::log1p(kEMinusOne * t) - spent;
    uint64_t c = lo + dist.size();  // above every survivor: certifies only what was counted as spent
    double tail = 0.0;
    while (c > lo && tail + dist[c - 1 - lo] <= allowance) tail += dist[--c - lo];
    if (allowance < 0.0) c = looks[j] + 1;
    if (c <= looks[j]) {
      spent += tail;
      dist.resize(c - lo);
    }
    critical[j] = std::min<uint64_t>(c, looks[j] + 1);
  }
  return critical;
}

Look TargetTest::look(uint64_t k, size_t j) const {
  if (j >= looks.size()) throw std::invalid_argument("sequential look: look index past the schedule");
  const uint64_t n = looks[j];
  check_counts(k, n);
  const double alpha_look = alpha / static_cast<double>(looks.size());
  Look out{Decision::kContinue, 0.0, 0.0};
  if (boundary == Boundary::kBonferroni) {
    const SmoothingBound b = smoothing_bound(kind, scale, k, n, alpha_look, tail_mass);
    out.p_lower = b.p_lower;
    out.radius = b.radius;
  }
  if (k >= critical[j]) {
    out.decision = Decision::kCertified;
    if (boundary == Boundary::kExact) {
      out.p_lower = std::nextafter(1.0 - complement, 0.0);
      out.radius = radius_at(kind, scale, complement);
    }
    return out;
  }
  bool reachable = false;  // can some later look still reach its critical count?
  for (size_t later = j + 1; later < looks.size() && !reachable; ++later)
    reachable = k + (looks[later] - n) >= critical[later];
  if (!reachable || optimistic_radius(kind, scale, k, n, alpha_look) < target) out.decision = Decision::kNotCertified;
  return out;
}

TargetTest make_target_test(Boundary boundary, NoiseKind kind, double scale, double target, double tail_mass,
                            const std::vector<uint64_t>& looks, double alpha) {
  if (!(tail_mass >= 0.0 && tail_mass < 1.0)) throw std::invalid_argument("tail_mass must lie in [0, 1)");
  if (!(alpha > 0.0 && alpha < 1.0)) throw std::invalid_argument("alpha must lie in (0, 1)");
  TargetTest test{boundary, kind, scale, target, alpha, tail_mass, looks, {}, target_complement(kind, scale, target)};
  if (looks.empty() || looks.size() > kMaxLooks) throw std::invalid_argument("sequential test: 1 to 10^4 looks");
  check_budget(looks.back());
  if (boundary == Boundary::kExact) {
    // Certified when P_sampler(hit) > 1 - q_null; then P_ideal(hit) > 1 - q_null - tail_mass >= 1 - q0.
    const double q_null = test.complement > tail_mass ? std::nextafter(test.complement - tail_mass, 0.0) : 0.0;
    test.critical = exact_critical_counts(q_null, looks, alpha);
    return test;
  }
  const double alpha_look = alpha / static_cast<double>(looks.size());
  test.critical.resize(looks.size());
  for (size_t j = 0; j < looks.size(); ++j) {
    const uint64_t n = looks[j];
    auto certifies = [&](uint64_t k) {
      if (k > n) return true;  // n + 1: "no count certifies"
      const SmoothingBound b = smoothing_bound(kind, scale, k, n, alpha_look, tail_mass);
      return b.p_lower > 0.5 && b.radius >= target;
    };
    // The answer lies in [lo, hi] with certifies(hi) and (lo = 0 or not certifies(lo - 1)). The
    // last look's critical rate, scaled to this look, is a close guess: gallop from it to a bracket
    // (a few Clopper-Pearson evaluations instead of log2 n, which matters at 10^9 samples).
    uint64_t lo = 0, hi = n + 1;
    if (!certifies(n)) {  // not even n hits of n certify: one evaluation settles the look
      test.critical[j] = n + 1;
      continue;
    }
    hi = n;
    if (j > 0 && test.critical[j - 1] <= looks[j - 1]) {
      const double rate = static_cast<double>(test.critical[j - 1]) / static_cast<double>(looks[j - 1]);
      const auto guess = std::min<uint64_t>(n + 1, static_cast<uint64_t>(std::ceil(rate * static_cast<double>(n))));
      if (certifies(guess)) {
        hi = guess;
        for (uint64_t step = 1; hi > 0; step *= 2) {
          const uint64_t below = hi > step ? hi - step : 0;
          if (!certifies(below)) { lo = below + 1; break; }
          hi = below;
        }
      } else {
        lo = guess + 1;
        for (uint64_t step = 1; lo <= n; step *= 2) {
          const uint64_t above = std::min<uint64_t>(n + 1, lo + step - 1);
          if (certifies(above)) { hi = above; break; }
          lo = above + 1;
        }
      }
    }
    while (lo < hi) {
      const uint64_t mid = lo + (hi - lo) / 2;
      if (certifies(mid)) hi = mid; else lo = mid + 1;
    }
    test.critical[j] = hi;
  }
  return test;
}

Look budget_look(NoiseKind kind, double scale, uint64_t k, uint64_t n, uint64_t n_max, double alpha_look,
                 double tail_mass, double tolerance, bool last) {
  check_counts(k, n);
  if (n_max < n) throw std::invalid_argument("budget_look: n_max must be >= n");
  check_budget(n_max);
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
