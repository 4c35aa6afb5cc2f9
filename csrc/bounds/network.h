// The layer graph of certify.bounds (built from Python's graph.py) and the bound engine's entry.
//
// Every value is stored flat per input: (B, size) row-major; convolution layers know their
// (C, H, W) shapes. Weights are float32 as in the model; the engine runs IBP, CROWN and
// CROWN-IBP with the same arithmetic and rounding allowances as certify/bounds/reference.py
// (see its docstring for the soundness argument), so sound=False results agree with it to
// float rounding and sound=True results hold in exact arithmetic.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "bounds/activations.h"

namespace certify {
namespace bounds {

enum class LayerKind { kInput, kLinear, kConv2d, kReLU, kReshape, kAffine, kAdd, kGather, kActivation };

struct ConvShape {
  int64_t c_in = 0, h_in = 0, w_in = 0, c_out = 0, h_out = 0, w_out = 0;
  int64_t kh = 0, kw = 0, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1, groups = 1;
  int64_t q() const { return (c_in / groups) * kh * kw; }  // one output's dot-product length
  int64_t p_out() const { return h_out * w_out; }
};

struct Layer {
  LayerKind kind;
  std::vector<int> inputs;
  int64_t size = 0;  // number of values per input
  // Linear: weight (out, in); Conv2d: weight (c_out, c_in / groups, kh, kw).
  std::vector<float> weight, abs_weight, bias, row_l1;
  int64_t in = 0, out = 0;
  ConvShape conv;
  // The node's (C, H, W) map where it has one (convolutional layers, their inputs and the
  // element-wise layers on them); map_h == 0 for flat values. Rows of coefficients on a node with a
  // map may be windowed (backward.h, struct Rows).
  int64_t map_c = 0, map_h = 0, map_w = 0;
  // Affine: y = s x + t with the reals s in [s_lo, s_hi], t in [t_lo, t_hi], each of `size`.
  std::vector<float> s_lo, s_hi, t_lo, t_hi;
  // Gather: y[j] = x[index[j]] (0 where index[j] < 0); multiplicity: the most j reading one x.
  std::vector<int64_t> index;
  int64_t multiplicity = 0;
  // Activation: the smooth function (activations.h).
  ActivationFn activation;
};

struct Network {
  std::vector<Layer> layers;  // topological order; layer 0 is the input
};

enum class Method { kIBP = 0, kCrownIBP = 1, kCrown = 2 };
enum class Norm { kLinf = 0, kL2 = 1 };
// The form of the coefficient rows on convolutional maps: the cost rule (kAuto), always dense, or
// windowed wherever a map allows (kWindowed: for tests, which then reach every edge case).
enum class RowForm { kAuto = 0, kDense = 1, kWindowed = 2 };

struct Query {
  int64_t batch = 0;
  Norm norm = Norm::kLinf;
  const float* centre = nullptr;   // (B, n_in)
  const float* eps = nullptr;      // (B,)
  const float* box_lower = nullptr;  // (B, n_in): the enclosing box (outward, domain-clipped)
  const float* box_upper = nullptr;
  Method method = Method::kCrown;
  bool sound = true;
  // spec rows: (B, rows, n_out); lower bounds of spec . f(x) are returned, (B, rows).
  const float* spec = nullptr;
  int64_t rows = 0;
  RowForm rows_form = RowForm::kAuto;
};

// Intermediate bounds of a batch of subproblems in one call (the domains of branch and bound):
// each has its own input set (as in Query), optionally its own starting boxes of every node (its
// parent's: supersets on it) and ReLU split constraints. The boxes of the nodes at or before
// keep_through are taken as given (split constraints clamped in); after it, IBP then CROWN on
// every ReLU input, each box the tighter of old and new, split constraints clamped in. Past
// `seconds` no more CROWN rows are computed (the boxes so far are sound).
struct DomainQuery : Query {  // the input sets, sound and rows_form as in Query; method and spec unused
  const float* const* node_lower = nullptr;  // per node (B, size), or null: IBP from the input
  const float* const* node_upper = nullptr;
  const int8_t* const* splits = nullptr;  // per node (B, size) in {-1, 0, +1}, or null per node
  int keep_through = -1;
  double seconds = 1e300;
};

// (lower, upper) of every node, (B, size) each.
std::vector<std::pair<std::vector<float>, std::vector<float>>> tighten_domains(const Network& net,
                                                                               const DomainQuery& query);

// Lower bounds of spec . f(x) over the query's input set, (B, rows), float32.
std::vector<float> compute_bounds(const Network& net, const Query& query);

// IBP bounds on the outputs, (B, n_out) each (the query's spec and method are not used).
void ibp_output(const Network& net, const Query& query, float* lower, float* upper);

}  // namespace bounds
}  // namespace certify
