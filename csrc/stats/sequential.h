// Sequential CERTIFY: the same guarantee as CERTIFY with far fewer samples when the answer is
// clear early (Horváth et al. 2022, "Boosting randomized smoothing with variance reduced
// classifiers", staged Clopper-Pearson with Bonferroni).
//
// Validity. The looks happen at a schedule fixed before any sample is drawn:
// n_1 < n_2 < ... < n_K = max_samples. Each look computes the one-sided Clopper-Pearson bound
// at level alpha / K. By the union bound, with probability >= 1 - alpha every one of the K
// lower bounds holds at once, so whatever rule decides when to stop (early certification,
// futility, a radius tolerance, a crash and resume), the reported bound holds with probability
// >= 1 - alpha. Re-checking a fixed-n bound at level alpha at every look would not: its false
// certificate rate grows with the number of looks (the tests measure it).
#pragma once

#include <cstdint>
#include <vector>

#include "sampling/noise_transforms.h"

namespace certify {

// The looks: n_1 = first, then n_{j+1} = max(n_j + 1, ceil(n_j * growth)), the last = max_samples.
// first >= 1, growth > 1, max_samples >= first.
std::vector<uint64_t> look_schedule(uint64_t first, double growth, uint64_t max_samples);

enum class Decision : int { kContinue = 0, kCertified = 1, kNotCertified = 2 };

struct Look {
  Decision decision;
  double p_lower;  // Clopper-Pearson lower bound at alpha_look, less tail_mass (as smoothing_bound)
  double radius;   // the certified radius at p_lower (0 when p_lower <= 1/2)
};

// "Is the input certified at radius `target`?" after k hits of the selected class in n samples,
// at a look with level alpha_look = alpha / K:
//   certified      when the certified radius at alpha_look reaches target;
//   not certified  when even the upper Clopper-Pearson bound at alpha_look gives a radius below
//                  target (futility: it only ever stops early with "not certified", so it cannot
//                  cause a false certificate), or at the last look;
//   continue       otherwise.
Look target_radius_look(NoiseKind kind, double scale, uint64_t k, uint64_t n, double alpha_look, double tail_mass,
                        double target, bool last);

// Budgeted sequential CERTIFY (no target radius): the certified radius at this look, and stop
// when the budget is unlikely to buy more than `tolerance` of radius: the radius the final look
// (n_max samples, level alpha_look) would give if the hit rate stayed at today's k / n is within
// `tolerance` of today's. The radius reported is certified at level alpha (union bound); the
// tolerance is a stopping rule, not a guarantee about the radius a full run would give. With
// every sample a hit the radius keeps growing with n (like log n), so such inputs use the budget.
Look budget_look(NoiseKind kind, double scale, uint64_t k, uint64_t n, uint64_t n_max, double alpha_look,
                 double tail_mass, double tolerance, bool last);

}  // namespace certify
