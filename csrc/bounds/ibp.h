// Interval bound propagation (IBP) in the bound engine: a box per node, per input, in
// centre-radius form, sound in floating point (the argument is in certify/bounds/reference.py:
// _affine_forward). CROWN (backward.h) starts from these boxes.
#pragma once

#include <cstdint>
#include <vector>

#include "bounds/network.h"

namespace certify {
namespace bounds {

struct Box {
  std::vector<float> lo, hi;  // (B, size)
};

// Element-wise loops over this many values or more run on all threads (below it a parallel
// region costs more than it saves).
constexpr int64_t kParallelElements = 1 << 15;

// ReLU split decisions of a batch of subproblems: per node, (B, size) signs or none; +1: the
// node's value is >= 0 on the subproblem, -1: <= 0, 0: free.
using Splits = std::vector<const int8_t*>;

// c = (lo + hi) / 2 and r >= max(hi - c, c - lo), rounded up when sound.
void centre_radius(const float* lo, const float* hi, int64_t n, float* c, float* r, bool sound);

// The split constraints clamped into a node's box (a box of the constrained set).
void clamp_splits(Box& box, const int8_t* sign);

// Boxes of every node from `start` on; where a box exists, the tighter of old and new is kept,
// and split constraints are clamped in.
void ibp(const Network& net, std::vector<Box>& boxes, int start, int64_t batch, bool sound,
         const Splits* splits = nullptr);

}  // namespace bounds
}  // namespace certify
