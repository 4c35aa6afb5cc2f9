// Smooth activations in the bound engine: interval enclosures and linear relaxations that hold in
// exact arithmetic. The C++ twin of certify/bounds/activations.py, step for step (same pieces,
// candidates, bisection and margins): see its docstring for the soundness argument.
#pragma once

#include <cstdint>

namespace certify {
namespace bounds {

enum class Smooth { kSigmoid = 0, kTanh = 1, kSoftplus = 2, kElu = 3, kSilu = 4, kGelu = 5 };

struct ActivationFn {
  Smooth kind = Smooth::kSigmoid;
  double alpha = 1;         // ELU's
  double lower_margin = 0;  // the model may lie this far below f (torch's thresholded softplus)
};

// Lines a_l x + b_l <= f(x) <= a_u x + b_u for x in [l, u] (a point or an infinite interval:
// slope 0 and f's range).
struct Lines {
  float a_l, b_l, a_u, b_u;
};

// float32 bounds of f over [l, u] (any sign, infinite allowed).
void activation_range(const ActivationFn& fn, float l, float u, bool sound, float* lo, float* hi);

Lines activation_relaxation(const ActivationFn& fn, float l, float u, bool sound);

}  // namespace bounds
}  // namespace certify
