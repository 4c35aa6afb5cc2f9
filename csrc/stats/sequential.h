// Sequential CERTIFY: the guarantee of CERTIFY with far fewer samples when the answer is clear
// early. The estimation samples come in looks at a schedule fixed before any sample is drawn,
// n_1 < n_2 < ... < n_K = max_samples; whatever rule decides when to stop at a look (early
// certification, futility, a radius tolerance, a crash and resume), a certificate is false with
// probability <= alpha. Re-checking a fixed-n bound at level alpha at every look would not keep
// that promise (its false certificate rate grows with the number of looks; the tests measure it).
//
// Two boundaries, one interface (TargetTest: a table of critical hit counts per look):
//
//   Bonferroni (Horvath et al. 2022, staged Clopper-Pearson): each look takes the one-sided
//     Clopper-Pearson bound at alpha / K. By the union bound all K bounds hold together with
//     probability >= 1 - alpha. It is also a confidence sequence (a lower bound on p_A valid at
//     every look at once), which the budgeted mode needs.
//
//   Exact (group-sequential error spending, Lan & DeMets 1983, with the level computed exactly):
//     the null hypothesis "P(hit) <= p0", p0 the probability at which the certified radius just
//     reaches the target, is rejected at look j when the hits reach c_j. The c_j are chosen look
//     by look, smallest first, so that the probability under p0 of crossing at look j without
//     having crossed before is at most alpha * s(n_j / n_K) - (what earlier looks spent), with
//     the Pocock-type spending function s(t) = ln(1 + (e - 1) t) (s(1) = 1). That probability
//     is computed by recursion over the distribution of the hit count (a convolution of binomial
//     increments, survivors only), not bounded by a union: successive looks share most of their
//     samples, so the union bound over-counts, and the exact level buys a lower boundary at
//     every look. Crossing some c_j is an increasing event of the Bernoulli sequence, so its
//     probability grows with P(hit): the level holds for every P(hit) <= p0, not only at p0.
//     Stopping early at a look for any reason only removes chances to cross, so the level holds
//     for every stopping rule on the schedule. The rounding of the recursion is covered by
//     designing at alpha (1 - 1e-6) (see exact_critical_counts).
#pragma once

#include <cstdint>
#include <vector>

#include "sampling/noise_transforms.h"

namespace certify {

// The looks: n_1 = first, then n_{j+1} = max(n_j + 1, ceil(n_j * growth)), the last = max_samples.
// first >= 1, growth > 1, max_samples >= first.
// At most kMaxLooks looks (a longer schedule is refused: a tiny growth from a small first look
// would otherwise make a look per sample, and every design and check costs time per look).
constexpr size_t kMaxLooks = 10'000;
// At most this many estimation samples per input in sequential certification: a Clopper-Pearson
// evaluation costs ~0.2 ms at 10^9 samples and grows beyond (20 ms at 2^48), and designing or
// checking a schedule of 10^4 looks takes tens of them per look.
constexpr uint64_t kSequentialMaxSamples = 1'000'000'000;

std::vector<uint64_t> look_schedule(uint64_t first, double growth, uint64_t max_samples);

enum class Decision : int { kContinue = 0, kCertified = 1, kNotCertified = 2 };
enum class Boundary : int { kBonferroni = 0, kExact = 1 };

struct Look {
  Decision decision;
  double p_lower;  // a lower bound on the ideal smoothed classifier's P(hit) (see TargetTest::look)
  double radius;   // the certified radius at p_lower (0 when p_lower <= 1/2)
};

// The largest q0 in (0, 1/2] such that every P(hit) > 1 - q0 of the ideal noise certifies
// `target` (checked with the sound radius functions of stats/radius.h); 0 when no probability does.
double target_complement(NoiseKind kind, double scale, double target);

// The exact boundary's critical hit counts for the null P(hit) <= 1 - q_null at the looks, level
// alpha: c_j in [0, n_j + 1] (n_j + 1: no hit count certifies at look j). The recursion runs at
// P(hit) = 1 - q_null (1 - 1e-12) (above the null: the level only grows with P(hit)); binomial
// increments are kept where their mass is above 1e-45 of the mode (log-concave tails beyond are
// bounded geometrically and counted as spent), survivors below 1e-40 are dropped and counted as
// spent. All values are sums of products of non-negative numbers, each with a relative error below
// (steps + window) u per look, under 1e-8 in all for the schedules allowed (max_samples <= 10^7,
// K <= 10^4), so designing at alpha (1 - 1e-6) keeps the exact level <= alpha.
std::vector<uint64_t> exact_critical_counts(double q_null, const std::vector<uint64_t>& looks, double alpha);

// "Is the input certified at radius `target`?" after each look, for either boundary.
struct TargetTest {
  Boundary boundary;
  NoiseKind kind;
  double scale, target, alpha, tail_mass;
  std::vector<uint64_t> looks;
  std::vector<uint64_t> critical;  // certified at look j exactly when the hits reach critical[j]
  double complement;               // q0 of target_complement (exact boundary; 0 unless it exists)

  // At look j with k hits of the selected class in looks[j] samples:
  //   certified      when k >= critical[j];
  //   not certified  at the last look, when no later look can reach its critical count, or when
  //                  even the upper Clopper-Pearson bound at alpha / K gives a radius below the
  //                  target (futility only ever says no: it cannot cause a false certificate);
  //   continue       otherwise.
  // p_lower: Bonferroni, the Clopper-Pearson bound at alpha / K less tail_mass; exact, 1 - q0
  // (rounded down) when certified (the test rejected P(hit) <= 1 - q0 + tail_mass), else 0.
  Look look(uint64_t k, size_t j) const;
};

// The test's table: Bonferroni c_j = the fewest hits whose Clopper-Pearson bound at alpha / K
// (less tail_mass) certifies target (its exact value grows with k, so every larger count does
// too); exact c_j = exact_critical_counts(q0 - tail_mass, looks, alpha).
TargetTest make_target_test(Boundary boundary, NoiseKind kind, double scale, double target, double tail_mass,
                            const std::vector<uint64_t>& looks, double alpha);

// Budgeted sequential CERTIFY (no target radius; Bonferroni's confidence sequence): the certified
// radius at this look, and stop when the budget is unlikely to buy more than `tolerance` of radius:
// the radius the final look (n_max samples, level alpha_look) would give if the hit rate stayed at
// today's k / n is within `tolerance` of today's. The radius reported is certified at level alpha
// (union bound); the tolerance is a stopping rule, not a guarantee about the radius a full run
// would give. With every sample a hit the radius keeps growing with n (like log n), so such inputs
// use the budget.
Look budget_look(NoiseKind kind, double scale, uint64_t k, uint64_t n, uint64_t n_max, double alpha_look,
                 double tail_mass, double tolerance, bool last);

// Largest max_samples the exact boundary designs for (its recursion's time grows like n_K).
constexpr uint64_t kExactMaxSamples = 10'000'000;

}  // namespace certify
